"""SSD detection training parts: input pipelines with anchor targets, the SSD loss
(smooth-L1 + cross-entropy with 3:1 hard-negative mining), COCO mAP with pycocotools
and the held-out box figure.

Targets: each image's boxes are matched to the model's anchors (IoU >= 0.5, and every
box to its best anchor) and encoded with the SSD box coder, both keras_mobilevit's
(`box_coder.match`), through `match_anchors`, the one place that calls them.
Batches are (float32 images [B, S, S, 3] in [0, 255], float32 targets [B, A, 5]):
4 encoded box offsets and the class (0 = background) per anchor. The model trains on
its raw outputs joined as [B, A, 4 + C] (`training_model`): box regressions first,
then class logits, the order of the official head's channels.

Example:
    >>> settings = DetectionSettings(image_size=320, batch_size=32)
    >>> train_ds = train_dataset(source, settings)   # anchors of SSDLite(settings.model)
    >>> trainer = training_model(detector)                    # shares the detector's weights
    >>> trainer.compile(optimizer, loss=SSDLoss())
    >>> coco_metrics(truths, predictions, sizes)              # {"mAP": ..., "mAP50": ...}
"""

import contextlib
import dataclasses
import functools
import io

import keras
import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_mobilevit import box_coder
from keras_mobilevit.detection import SSDLite, model_anchors
from training.segdet import figures, joint_augment, sources

FIGURE = "predictions.png"  # in the run folder
MAX_BOXES = 100  # per image in eval batches (padded)


@dataclasses.dataclass(frozen=True)
class DetectionSettings:
    """What the detection pipelines need (cvnets SSDLite COCO recipe values by default)."""

    image_size: int = 320
    batch_size: int = 32             # global
    model: str = "mobilevitv3_xs"    # the backbone: the anchors depend on its feature maps
    iou_threshold: float = 0.5       # anchor matching
    photometric: bool = True
    ssd_crop: bool = True            # SSD random crop (off: the whole image)
    cache: str = "auto"              # "auto" (small bundled data) | "yes" | "no"


def match_anchors(boxes, labels, anchors, iou_threshold=0.5):
    """Training targets of one image: float32 [A, 5] (encoded offsets, class).

    boxes: float32 [n, 4] normalized (ymin, xmin, ymax, xmax); labels: int32 [n] in 1..K;
    anchors: float32 [A, 4] normalized (cx, cy, w, h), the model's. The matching and the
    encoding are keras_mobilevit's (`box_coder.match`: the official SSD matcher).
    """
    ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(boxes, [-1, 4]), axis=-1)
    offsets, classes = box_coder.match(tf.stack([xmin, ymin, xmax, ymax], axis=-1), labels,
                                       anchors, iou_threshold=iou_threshold)
    return tf.concat([offsets, tf.cast(classes, tf.float32)[:, None]], axis=-1)


@functools.cache
def anchors_for(model_name, image_size):
    """The SSDLite anchors [A, 4] (cx, cy, w, h) at this input size, read off a built model."""
    raw = SSDLite(model_name, classes=2, input_shape=(image_size, image_size, 3),
                  postprocess=False)
    return model_anchors(raw)


def train_dataset(source, settings, input_context=None, seed=0, anchors=None):
    """Endless per-replica batches: SSD crop, photometric, flip, resize, anchor targets
    (crop and photometric as `settings` say).

    anchors: [A, 4] (cx, cy, w, h); default: those of SSDLite(settings.model) at S x S.
    """
    size, anchors = settings.image_size, _anchors(settings, anchors)

    def augment(example):
        image, boxes, labels = example["image"], example["boxes"], example["labels"]
        if settings.ssd_crop:
            image, boxes, labels = joint_augment.ssd_crop(image, boxes, labels)
        if settings.photometric:
            image = joint_augment.photometric(image)
        image, boxes = joint_augment.flip_boxes(image, boxes)
        image = joint_augment.resize_image(image, [size, size])
        targets = match_anchors(boxes, labels, anchors, settings.iou_threshold)
        return tf.ensure_shape(image, [size, size, 3]), targets

    return sources.training_batches(source, settings, augment, input_context, seed)


def eval_dataset(source, settings, split=None, batch_size=None, with_truth=False, anchors=None):
    """Every example once, resized to S x S, in full batches (blank padding images).

    Yields (images, targets [B, A, 5]) for the validation loss, or with `with_truth`
    (images, boxes [B, MAX_BOXES, 4] normalized yxyx, labels [B, MAX_BOXES] (0 = pad)).
    Blank padding images have no boxes, so they add nothing to the loss (no positives,
    hence no mined negatives) and are cut off before the mAP.
    """
    size = settings.image_size
    anchors = None if with_truth else _anchors(settings, anchors)

    def prepare(example):
        image = tf.ensure_shape(joint_augment.resize_image(example["image"], [size, size]),
                                [size, size, 3])
        boxes, labels = example["boxes"][:MAX_BOXES], example["labels"][:MAX_BOXES]
        if with_truth:
            pad = MAX_BOXES - tf.shape(labels)[0]
            return (image, tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), [MAX_BOXES, 4]),
                    tf.ensure_shape(tf.pad(labels, [[0, pad]]), [MAX_BOXES]))
        return image, match_anchors(boxes, labels, anchors, settings.iou_threshold)

    return sources.eval_batches(source, split or source.eval_split, settings, prepare,
                                batch_size or settings.batch_size)


def _anchors(settings, anchors):
    if anchors is None:
        anchors = anchors_for(settings.model, settings.image_size)
    return tf.constant(anchors, tf.float32)


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
    """Per image (boxes pixel xyxy, labels, scores) from SSDLite's post-processed outputs
    (boxes x1, y1, x2, y2 normalized; classes 1..K; the first num_detections rows).

    images: a float32 batch, or a dataset of (images, ...) batches (one predict call).
    """
    return detections(detector.predict(images, verbose=0), detector.input_shape[1])


def detections(outputs, size):
    """`predict_boxes`'s rows from SSDLite's outputs already predicted on size x size."""
    return [(np.asarray(outputs["boxes"][k][:n]) * size, np.asarray(outputs["classes"][k][:n]),
             np.asarray(outputs["scores"][k][:n]))
            for k, n in enumerate(np.asarray(outputs["num_detections"]).astype(int))]


def held_out_predictions(detector, dataset, count, keep_images=6):
    """(truths, predictions, first images) over a `with_truth` eval dataset of `count`
    real images: per image (pixel xyxy boxes, labels[, scores]); one predict call, so
    the detector sees one static batch shape."""
    size = detector.input_shape[1]
    predictions = predict_boxes(detector, dataset.map(lambda images, boxes, labels: images))
    truths, images = [], []
    for batch, boxes, labels in dataset.as_numpy_iterator():
        truths += [(yxyx_to_pixel_xyxy(b[lab > 0], size), lab[lab > 0])
                   for b, lab in zip(boxes, labels)]
        images += list(batch[:max(0, keep_images - len(images))])
    return truths[:count], predictions[:count], np.asarray(images[:count])


def finish(detector, config, source, out, figure_images=6):
    """After training: COCO mAP of the saved detector (its post-processing) on the
    held-out split, and the figure of its first images (`predictions.png`)."""
    count = source.num_examples(source.eval_split)
    dataset = eval_dataset(source, config.pipeline_settings(), with_truth=True)
    print(f"COCO evaluation (pycocotools) of {count} {source.eval_split} images ...")
    truths, predictions, images = held_out_predictions(detector, dataset, count,
                                                       figure_images)
    size = detector.input_shape[1]
    metrics = coco_metrics(truths, predictions, [(size, size)] * count)
    shown = len(images)
    figures.save_box_figure(out / FIGURE, images, truths[:shown], predictions[:shown],
                            config.class_names)
    return metrics
