"""Semantic segmentation training parts: input pipelines, the loss (cross-entropy with
ignore index 255, plus the auxiliary head's at weight 0.4), mean IoU and the held-out
mask figure.

Batches are (float32 images [B, S, S, 3] in [0, 255], int32 masks [B, S, S]); the model
rescales internally. Eval images and masks are resized to S x S (bilinear / nearest),
so the mIoU is measured at the training resolution; partial last batches are filled
with blank images whose masks are all ignore, so they count for nothing.

Example:
    >>> settings = SegmentationSettings(image_size=512, batch_size=16)
    >>> train_ds = train_dataset(source, settings)      # joint augmentations
    >>> loss = SegmentationLoss()                        # logits [B, h, w, C] at any h, w
    >>> miou = mean_iou(num_classes=21)
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from training.segdet import figures, joint_augment
from training.segdet.sources import IGNORE_INDEX

SHUFFLE_BUFFER = 4096


@dataclasses.dataclass(frozen=True)
class SegmentationSettings:
    """What the segmentation pipelines need (cvnets VOC recipe values by default)."""

    image_size: int = 512            # crop size (train) and eval size
    batch_size: int = 16             # global
    scale_min: float = 0.5           # random resize: short side = size x [min, max]
    scale_max: float = 2.0
    photometric: bool = True
    cache: str = "auto"              # "auto" (small bundled data) | "yes" | "no"


def train_dataset(source, settings, input_context=None, seed=0):
    """Endless per-replica batches: resize, crop, flip, photometric distortion."""
    ctx = input_context or tf.distribute.InputContext()
    split, shards = source.train_split, ctx.num_input_pipelines
    ds = source.read(split, shards, ctx.input_pipeline_id, shuffle=True)
    ds = _maybe_cache(ds, source, split, settings)
    ds = ds.shuffle(min(SHUFFLE_BUFFER, source.num_examples(split) // shards + 1),
                    seed=seed).repeat()
    size = settings.image_size

    def augment(example):
        image, mask = joint_augment.random_resize(
            example["image"], example["mask"], size, (settings.scale_min, settings.scale_max))
        image, mask = joint_augment.random_crop(image, mask, size)
        image, mask = joint_augment.flip_mask(image, mask)
        if settings.photometric:
            image = joint_augment.photometric(image)
        return tf.ensure_shape(image, [size, size, 3]), tf.cast(mask, tf.int32)

    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(ctx.get_per_replica_batch_size(settings.batch_size), drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = False
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_dataset(source, settings, split=None, batch_size=None):
    """Every example once, resized to S x S, in full batches (blank, all-ignore padding)."""
    split = split or source.eval_split
    batch_size = batch_size or settings.batch_size
    size = settings.image_size
    count = source.num_examples(split)
    ds = _maybe_cache(source.read(split), source, split, settings)

    def resize(example):
        image = joint_augment.resize_image(example["image"], [size, size])
        mask = joint_augment.resize_mask(example["mask"], [size, size])
        return tf.ensure_shape(image, [size, size, 3]), tf.cast(mask, tf.int32)

    ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
    blank = (tf.zeros([size, size, 3]), tf.fill([size, size], IGNORE_INDEX))
    padding = -count % batch_size
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _maybe_cache(ds, source, split, settings):
    if settings.cache == "yes" or (settings.cache == "auto" and source.cacheable(split)):
        return ds.cache()
    return ds


@keras.saving.register_keras_serializable(package="keras_mobilevit_training")
class SegmentationLoss(keras.losses.Loss):
    """Mean pixel cross-entropy over the pixels whose label is not `ignore_index`.

    Logits [B, h, w, C] of another size than the masks [B, H, W] (an auxiliary head
    at stride 16) are resized bilinearly to the masks first, as cvnets does.
    """

    def __init__(self, ignore_index=IGNORE_INDEX, name="segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        y_pred = tf.cast(y_pred, tf.float32)
        if y_pred.shape[1:3] != y_true.shape[1:3] or None in y_pred.shape[1:3]:
            y_pred = tf.image.resize(y_pred, tf.shape(y_true)[1:3], method="bilinear")
        valid = tf.not_equal(y_true, self.ignore_index)
        pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.where(valid, y_true, 0), logits=y_pred)  # [B, H, W]
        valid = tf.cast(valid, tf.float32)
        return tf.reduce_sum(pixel_loss * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index}


def mean_iou(num_classes, ignore_index=IGNORE_INDEX, name="mean_iou"):
    """Keras' MeanIoU on logits (argmax taken), pixels labelled `ignore_index` skipped."""
    return keras.metrics.MeanIoU(num_classes=num_classes, name=name, ignore_class=ignore_index,
                                 sparse_y_true=True, sparse_y_pred=False)


def losses_for(output_names, aux_weight=0.4):
    """(loss, loss_weights) for a model's outputs: one loss, or the main output's at 1
    and every output named "aux..." at `aux_weight` (cvnets' aux loss weight)."""
    if len(output_names) == 1:
        return SegmentationLoss(), None
    losses = {name: SegmentationLoss() for name in output_names}
    weights = {name: aux_weight if "aux" in name else 1.0 for name in output_names}
    return losses, weights


def save_figure(model, dataset, class_names, path, count=6):
    """PNG of the first `count` held-out images: image | true mask | predicted mask."""
    images, masks = next(iter(dataset.unbatch().batch(count)))
    logits = model.predict(images, verbose=0)
    if isinstance(logits, dict):  # a training-mode dict: the main output
        logits = next(v for k, v in logits.items() if "aux" not in k)
    predicted = np.argmax(np.asarray(logits), axis=-1)
    figures.save_mask_figure(path, images.numpy(), masks.numpy(), predicted, class_names)
