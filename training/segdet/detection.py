"""SSD detection training parts: input pipelines with anchor targets, the SSD loss
(smooth-L1 + cross-entropy with 3:1 hard-negative mining), COCO mAP with pycocotools
and the held-out box figure.

Targets: each image's boxes are matched to the model's anchors (IoU >= 0.5, and every
box to its best anchor) and encoded with the SSD box coder, both from
`keras_mobilevit.detection` through `match_anchors`, the one place that calls them.
Batches are (float32 images [B, S, S, 3] in [0, 255], float32 targets [B, A, 5]):
4 encoded box offsets and the class (0 = background) per anchor. The model trains on
its raw outputs joined as [B, A, 4 + C] (`training_model`): box regressions first,
then class logits, the order of the official head's channels.

Example:
    >>> settings = DetectionSettings(image_size=320, batch_size=32)
    >>> train_ds = train_dataset(source, settings, anchors)   # anchors [A, 4] cx, cy, w, h
    >>> trainer = training_model(detector)                    # shares the detector's weights
    >>> trainer.compile(optimizer, loss=SSDLoss())
    >>> coco_metrics(truths, predictions, sizes)              # {"mAP": ..., "mAP50": ...}
"""

import contextlib
import dataclasses
import io

import keras
import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from training.segdet import figures, joint_augment

SHUFFLE_BUFFER = 4096
MAX_BOXES = 100  # per image in eval batches (padded)


@dataclasses.dataclass(frozen=True)
class DetectionSettings:
    """What the detection pipelines need (cvnets SSDLite COCO recipe values by default)."""

    image_size: int = 320
    batch_size: int = 32             # global
    iou_threshold: float = 0.5       # anchor matching
    photometric: bool = True
    cache: str = "auto"              # "auto" (small bundled data) | "yes" | "no"


def match_anchors(boxes, labels, anchors, iou_threshold=0.5):
    """Training targets of one image: float32 [A, 5] (encoded offsets, class).

    boxes: float32 [n, 4] normalized (ymin, xmin, ymax, xmax); labels: int32 [n] in 1..K;
    anchors: float32 [A, 4] normalized (cx, cy, w, h), the model's.
    TODO(phase 2): call keras_mobilevit.detection's matcher and box coder here instead
    of `_provisional_match` once they are merged; nothing else changes.
    """
    offsets, classes = _provisional_match(boxes, labels, anchors, iou_threshold)
    return tf.concat([offsets, tf.cast(classes, tf.float32)[:, None]], axis=-1)


def _provisional_match(boxes, labels, anchors, iou_threshold, variances=(0.1, 0.2)):
    """TODO(phase 2): stand-in for keras_mobilevit.detection's matcher + encoder (cvnets'
    SSDMatcher: best box per anchor above the threshold, each box forced onto its best
    anchor; offsets ((c - c_a) / wh_a / 0.1, log(wh / wh_a) / 0.2))."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    cx, cy, w, h = tf.unstack(anchors, axis=-1)
    inter_w = tf.maximum(tf.minimum(xmax[:, None], (cx + w / 2)[None])
                         - tf.maximum(xmin[:, None], (cx - w / 2)[None]), 0.0)
    inter_h = tf.maximum(tf.minimum(ymax[:, None], (cy + h / 2)[None])
                         - tf.maximum(ymin[:, None], (cy - h / 2)[None]), 0.0)
    inter = inter_w * inter_h
    union = ((xmax - xmin) * (ymax - ymin))[:, None] + (w * h)[None] - inter
    iou = inter / tf.maximum(union, 1e-9)  # [n, A]
    num_boxes = tf.shape(boxes)[0]
    if_any = tf.maximum(num_boxes, 1)
    iou = tf.concat([iou, tf.zeros([1 - tf.minimum(num_boxes, 1), tf.shape(anchors)[0]])], 0)
    best_box = tf.argmax(iou, axis=0, output_type=tf.int32)  # [A]
    best_iou = tf.reduce_max(iou, axis=0)
    best_anchor = tf.argmax(iou[:num_boxes], axis=1, output_type=tf.int32)  # [n]
    best_box = tf.tensor_scatter_nd_update(best_box, best_anchor[:, None], tf.range(num_boxes))
    best_iou = tf.tensor_scatter_nd_update(best_iou, best_anchor[:, None],
                                           tf.fill([num_boxes], 2.0))
    labels = tf.concat([labels, tf.zeros([if_any - num_boxes], labels.dtype)], 0)
    boxes = tf.concat([boxes, tf.tile([[0.0, 0.0, 1.0, 1.0]], [if_any - num_boxes, 1])], 0)
    classes = tf.where(best_iou >= iou_threshold, tf.gather(labels, best_box), 0)
    ymin, xmin, ymax, xmax = tf.unstack(tf.gather(boxes, best_box), axis=-1)
    offsets = tf.stack([((xmin + xmax) / 2 - cx) / w / variances[0],
                        ((ymin + ymax) / 2 - cy) / h / variances[0],
                        tf.math.log(tf.maximum(xmax - xmin, 1e-6) / w) / variances[1],
                        tf.math.log(tf.maximum(ymax - ymin, 1e-6) / h) / variances[1]], -1)
    return offsets, classes


def train_dataset(source, settings, anchors, input_context=None, seed=0):
    """Endless per-replica batches: SSD crop, photometric, flip, resize, anchor targets."""
    ctx = input_context or tf.distribute.InputContext()
    split, shards, size = source.train_split, ctx.num_input_pipelines, settings.image_size
    ds = source.read(split, shards, ctx.input_pipeline_id, shuffle=True)
    ds = _maybe_cache(ds, source, split, settings)
    ds = ds.shuffle(min(SHUFFLE_BUFFER, source.num_examples(split) // shards + 1),
                    seed=seed).repeat()
    anchors = tf.constant(anchors, tf.float32)

    def augment(example):
        image, boxes, labels = joint_augment.ssd_crop(
            example["image"], example["boxes"], example["labels"])
        if settings.photometric:
            image = joint_augment.photometric(image)
        image, boxes = joint_augment.flip_boxes(image, boxes)
        image = joint_augment.resize_image(image, [size, size])
        targets = match_anchors(boxes, labels, anchors, settings.iou_threshold)
        return tf.ensure_shape(image, [size, size, 3]), targets

    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(ctx.get_per_replica_batch_size(settings.batch_size), drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = False
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_dataset(source, settings, anchors, split=None, batch_size=None, with_truth=False):
    """Every example once, resized to S x S, in full batches (blank padding images).

    Yields (images, targets [B, A, 5]) for the validation loss, or with `with_truth`
    (images, boxes [B, MAX_BOXES, 4] normalized yxyx, labels [B, MAX_BOXES] (0 = pad)).
    Blank padding images have no boxes, so they add nothing to the loss (no positives,
    hence no mined negatives); `with_truth` batches keep their real count in `.count`.
    """
    split = split or source.eval_split
    batch_size = batch_size or settings.batch_size
    size, count = settings.image_size, source.num_examples(split)
    ds = _maybe_cache(source.read(split), source, split, settings)
    anchors = tf.constant(anchors, tf.float32)

    def prepare(example):
        image = tf.ensure_shape(joint_augment.resize_image(example["image"], [size, size]),
                                [size, size, 3])
        boxes, labels = example["boxes"][:MAX_BOXES], example["labels"][:MAX_BOXES]
        if with_truth:
            pad = MAX_BOXES - tf.shape(labels)[0]
            return (image, tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), [MAX_BOXES, 4]),
                    tf.ensure_shape(tf.pad(labels, [[0, pad]]), [MAX_BOXES]))
        return image, match_anchors(boxes, labels, anchors, settings.iou_threshold)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    blank = ds.element_spec
    padding = tf.data.Dataset.from_tensors(
        tuple(tf.zeros(s.shape, s.dtype) for s in blank)).repeat(-count % batch_size)
    ds = ds.concatenate(padding)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _maybe_cache(ds, source, split, settings):
    if settings.cache == "yes" or (settings.cache == "auto" and source.cacheable(split)):
        return ds.cache()
    return ds


@keras.saving.register_keras_serializable(package="keras_mobilevit_training")
class SSDLoss(keras.losses.Loss):
    """SSD's multibox loss on [B, A, 4 + C] predictions and [B, A, 5] targets.

    Smooth-L1 (beta 1) on the positives' box offsets plus cross-entropy on the
    positives and the hardest negatives (`neg_pos_ratio` per positive, per image,
    ranked by their background loss), both summed and divided by the batch's number
    of positives (cvnets' SSDLoss).
    """

    def __init__(self, neg_pos_ratio=3, name="ssd_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.neg_pos_ratio = neg_pos_ratio

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        offsets, logits = y_pred[..., :4], y_pred[..., 4:]
        target_offsets, classes = y_true[..., :4], tf.cast(y_true[..., 4], tf.int32)
        positive = classes > 0                                          # [B, A]
        background_loss = -tf.nn.log_softmax(logits)[..., 0]
        num_negatives = self.neg_pos_ratio * tf.reduce_sum(
            tf.cast(positive, tf.int32), axis=1, keepdims=True)         # [B, 1]
        ranked = tf.where(positive, -np.inf, background_loss)
        rank = tf.argsort(tf.argsort(ranked, axis=1, direction="DESCENDING"), axis=1)
        chosen = positive | (rank < num_negatives)
        class_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes,
                                                                    logits=logits)
        class_loss = tf.reduce_sum(tf.where(chosen, class_loss, 0.0))
        box_loss = tf.reduce_sum(tf.where(
            positive[..., None], _smooth_l1(offsets - target_offsets), 0.0))
        num_positives = tf.maximum(tf.reduce_sum(tf.cast(positive, tf.float32)), 1.0)
        return (class_loss + box_loss) / num_positives

    def get_config(self):
        return {**super().get_config(), "neg_pos_ratio": self.neg_pos_ratio}


def _smooth_l1(x, beta=1.0):
    x = tf.abs(x)
    return tf.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def training_model(detector):
    """A model on the detector's weights returning its raw outputs as [B, A, 4 + C]."""
    outputs = detector.output
    joined = keras.layers.Concatenate(axis=-1, name="ssd_raw_outputs", dtype="float32")(
        [outputs["box_regressions"], outputs["class_logits"]])
    return keras.Model(detector.input, joined, name=f"{detector.name}_train")


def coco_metrics(truths, predictions, image_sizes):
    """{"mAP": AP@[.5:.95], "mAP50": AP@.5} by pycocotools' COCOeval (bbox, 100 dets).

    truths: per image (boxes [n, 4] pixel xyxy, labels [n] >= 1); predictions: per
    image (boxes [m, 4] pixel xyxy, labels [m] >= 1, scores [m]); image_sizes: per
    image (height, width).
    """
    categories = sorted({int(c) for _, labels in truths for c in labels}
                        | {int(c) for _, labels, _ in predictions for c in labels})
    images, annotations, detections = [], [], []
    for image_id, ((height, width), (boxes, labels)) in enumerate(zip(image_sizes, truths)):
        images.append(dict(id=image_id, height=int(height), width=int(width)))
        for box, label in zip(_xywh(boxes), labels):
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=int(label), bbox=box,
                                    area=box[2] * box[3], iscrowd=0))
    for image_id, (boxes, labels, scores) in enumerate(predictions):
        detections += [dict(image_id=image_id, category_id=int(label), bbox=box,
                            score=float(score))
                       for box, label, score in zip(_xywh(boxes), labels, scores)]
    if not annotations or not detections:
        return {"mAP": 0.0, "mAP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = dict(images=images, annotations=annotations,
                             categories=[dict(id=c) for c in categories])
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"mAP": float(evaluator.stats[0]), "mAP50": float(evaluator.stats[1])}


def _xywh(boxes):
    """Pixel xyxy [n, 4] -> COCO [[x, y, w, h]] as Python floats."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes.tolist()]


def yxyx_to_pixel_xyxy(boxes, size):
    """Normalized (ymin, xmin, ymax, xmax) -> pixel (x0, y0, x1, y1) on a size x size image."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * size
    return boxes[:, [1, 0, 3, 2]]


def predict_boxes(detector, images):
    """Per image (boxes pixel xyxy, labels, scores) from the detector's post-processed
    outputs. TODO(phase 2): read the box format of keras_mobilevit.SSDLite's outputs."""
    outputs = detector.predict(images, verbose=0)
    size = images.shape[1]
    found = []
    for k in range(len(images)):
        n = int(outputs["num_detections"][k])
        found.append((np.asarray(outputs["boxes"][k][:n]) * size,
                      np.asarray(outputs["classes"][k][:n]),
                      np.asarray(outputs["scores"][k][:n])))
    return found


def evaluate(detector, dataset, count):
    """COCO mAP of `detector` on a `with_truth` eval dataset of `count` real images."""
    truths, predictions = [], []
    for images, boxes, labels in dataset:
        size = images.shape[1]
        predictions += predict_boxes(detector, images)
        for b, lab in zip(boxes.numpy(), labels.numpy()):
            truths.append((yxyx_to_pixel_xyxy(b[lab > 0], size), lab[lab > 0]))
    truths, predictions = truths[:count], predictions[:count]
    sizes = [(images.shape[1], images.shape[2])] * count
    return coco_metrics(truths, predictions, sizes)


def save_figure(detector, dataset, class_names, path, count=6):
    """PNG of the first `count` held-out images: true boxes | predicted boxes."""
    images, boxes, labels = next(iter(dataset.unbatch().batch(count)))
    size = images.shape[1]
    truths = [(yxyx_to_pixel_xyxy(b[lab > 0], size), lab[lab > 0])
              for b, lab in zip(boxes.numpy(), labels.numpy())]
    figures.save_box_figure(path, images.numpy(), truths, predict_boxes(detector, images),
                            class_names)
