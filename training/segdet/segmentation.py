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

from training.segdet import figures, joint_augment, sources
from training.segdet.sources import IGNORE_INDEX

FIGURE = "predictions.png"  # in the run folder


@dataclasses.dataclass(frozen=True)
class SegmentationSettings:
    """What the segmentation pipelines need (cvnets VOC recipe values by default)."""

    image_size: int = 512            # crop size (train) and eval size
    batch_size: int = 16             # global
    scale_min: float = 0.5           # random resize: short side = size x [min, max]
    scale_max: float = 2.0
    photometric: bool = True
    cache: str = "auto"              # "auto" (small bundled data) | "yes" | "no"
    aux_output: bool = False         # the model also returns "aux_logits": masks twice

    def targets(self, mask):
        """The masks as the model's outputs take them (a dict with an aux head)."""
        return {"logits": mask, "aux_logits": mask} if self.aux_output else mask


def train_dataset(source, settings, input_context=None, seed=0):
    """Endless per-replica batches: resize, crop, flip, photometric distortion."""
    size = settings.image_size

    def augment(example):
        image, mask = joint_augment.random_resize(
            example["image"], example["mask"], size, (settings.scale_min, settings.scale_max))
        image, mask = joint_augment.random_crop(image, mask, size)
        image, mask = joint_augment.flip_mask(image, mask)
        if settings.photometric:
            image = joint_augment.photometric(image)
        return tf.ensure_shape(image, [size, size, 3]), settings.targets(tf.cast(mask, tf.int32))

    return sources.training_batches(source, settings, augment, input_context, seed)


def eval_dataset(source, settings, split=None, batch_size=None):
    """Every example once, resized to S x S, in full batches (blank, all-ignore padding)."""
    size = settings.image_size

    def resize(example):
        image = joint_augment.resize_image(example["image"], [size, size])
        mask = joint_augment.resize_mask(example["mask"], [size, size])
        return tf.ensure_shape(image, [size, size, 3]), tf.cast(mask, tf.int32)

    blank = (tf.zeros([size, size, 3]), tf.fill([size, size], IGNORE_INDEX))
    ds = sources.eval_batches(source, split or source.eval_split, settings, resize,
                              batch_size or settings.batch_size, blank)
    return ds.map(lambda images, masks: (images, settings.targets(masks)))


@keras.saving.register_keras_serializable(package="keras_mobilevit_training")
class SegmentationLoss(keras.losses.Loss):
    """Mean pixel cross-entropy over the pixels whose label is not `ignore_index`,
    times `weight` (0.4 for the auxiliary head's, as cvnets weighs it).

    Logits [B, h, w, C] of another size than the masks [B, H, W] (an auxiliary head
    at stride 16) are resized bilinearly to the masks first, as cvnets does.
    """

    def __init__(self, ignore_index=IGNORE_INDEX, weight=1.0, name="segmentation_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index, self.weight = ignore_index, weight

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        y_pred = tf.cast(y_pred, tf.float32)
        if y_pred.shape[1:3] != y_true.shape[1:3] or None in y_pred.shape[1:3]:
            y_pred = tf.image.resize(y_pred, tf.shape(y_true)[1:3], method="bilinear")
        valid = tf.not_equal(y_true, self.ignore_index)
        pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.where(valid, y_true, 0), logits=y_pred)  # [B, H, W]
        valid = tf.cast(valid, tf.float32)
        mean = tf.reduce_sum(pixel_loss * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)
        return self.weight * mean

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index,
                "weight": self.weight}


def mean_iou(num_classes, ignore_index=IGNORE_INDEX, name="mean_iou"):
    """Keras' MeanIoU on logits (argmax taken), pixels labelled `ignore_index` skipped."""
    return keras.metrics.MeanIoU(num_classes=num_classes, name=name, ignore_class=ignore_index,
                                 sparse_y_true=True, sparse_y_pred=False)


def save_figure(model, dataset, class_names, path, count=6):
    """PNG of the first `count` held-out images: image | true mask | predicted mask.

    `model` returns the logits (the saved model); `dataset` is an `eval_dataset`.
    """
    images, masks = next(iter(dataset.unbatch().batch(count)))
    if isinstance(masks, dict):
        masks = masks["logits"]
    predicted = np.argmax(model.predict(images, verbose=0), axis=-1)
    figures.save_mask_figure(path, images.numpy(), masks.numpy(), predicted, class_names)


def finish(model, config, source, out):
    """After training: the held-out figure (`predictions.png`); mIoU comes from evaluate."""
    settings = config.pipeline_settings()
    save_figure(model, eval_dataset(source, settings), config.class_names,
                out / FIGURE)
    return {}
