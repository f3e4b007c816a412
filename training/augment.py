"""Decoding and augmentation inside tf.data.

Images leave every function as float32 [H, W, 3] RGB in [0, 255] (the models rescale
internally); labels as one-hot float32. Grey or RGBA inputs become RGB when decoded.

Keras core layers do the flip, RandomErasing, MixUp, CutMix and RandAugment's ops
(`RandAugment` below only avoids computing the ops it does not apply). Neither Keras
nor tf.data has RandomResizedCrop, so it is written here from
`tf.image.sample_distorted_bounding_box` (as TF's official ImageNet pipelines do); for
JPEGs it decodes only the crop window (`decode_and_crop_jpeg`), which is much cheaper
than decoding the whole photo.

Example:
    >>> image = random_resized_crop(encoded_jpeg, 256, interpolation="bicubic")
    >>> augmenter = Augmenter(randaugment=True, random_erasing=0.25,
    ...                       mixup_alpha=0.2, cutmix_alpha=1.0)
    >>> image = augmenter.per_image(image)                  # flip, RandAugment, erasing
    >>> images, labels = augmenter.per_batch(images, one_hot_labels)  # MixUp / CutMix
"""

import functools

import keras
import tensorflow as tf

ASPECT_RATIOS = (3 / 4, 4 / 3)
# torchvision's RandAugment default (2 ops, magnitude 9 of 31 bins) in Keras' 0..1 scale.
RANDAUGMENT_OPS, RANDAUGMENT_FACTOR = 2, 0.3


def decode(image):
    """Encoded bytes (JPEG/PNG/GIF/BMP) or a decoded uint8 tensor -> uint8 [H, W, 3]."""
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    elif image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    image.set_shape([None, None, 3])
    return image


def _resize(image, size, interpolation, antialias):
    """uint8/float [h, w, 3] -> float32 [size..., 3] in [0, 255] (bicubic overshoots)."""
    image = tf.image.resize(image, size, method=interpolation, antialias=antialias)
    return tf.clip_by_value(image, 0.0, 255.0)


def _crop_window(image_shape, scale):
    """(offset_y, offset_x, height, width) of a RandomResizedCrop window.

    Falls back to the whole image after 10 failed attempts (torchvision: a center crop).
    """
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        image_shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        min_object_covered=0.0, aspect_ratio_range=ASPECT_RATIOS, area_range=scale,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return begin[0], begin[1], size[0], size[1]


def random_resized_crop(image, size, scale=(0.08, 1.0), interpolation="bilinear",
                        antialias=False):
    """Random area/aspect crop resized to `size` x `size`: float32 [size, size, 3].

    `image` is encoded bytes (JPEGs decode only the window) or a uint8 tensor.
    """
    size = tf.stack([size, size])
    if image.dtype == tf.string:
        def crop_jpeg():
            y, x, h, w = _crop_window(tf.image.extract_jpeg_shape(image), scale)
            return tf.image.decode_and_crop_jpeg(image, tf.stack([y, x, h, w]), channels=3)

        def crop_other():
            decoded = decode(image)
            y, x, h, w = _crop_window(tf.shape(decoded), scale)
            return decoded[y:y + h, x:x + w]

        crop = tf.cond(tf.io.is_jpeg(image), crop_jpeg, crop_other)
    else:
        decoded = decode(image)
        y, x, h, w = _crop_window(tf.shape(decoded), scale)
        crop = decoded[y:y + h, x:x + w]
    crop.set_shape([None, None, 3])
    return _resize(crop, size, interpolation, antialias)


def center_crop(image, size, crop_fraction=256 / 288, interpolation="bilinear",
                antialias=False):
    """Eval transform: short side to size / crop_fraction, central size x size crop."""
    image = decode(image)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    resized = tf.cast(tf.math.ceil(shape * (size / crop_fraction) / tf.reduce_min(shape)),
                      tf.int32)
    resized = tf.maximum(resized, size)
    image = _resize(image, resized, interpolation, antialias)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    crop = image[top:top + size, left:left + size]
    # Static [size, size, 3] (the slice bounds are tensors): graphs traced on eval batches
    # then see the model's fixed shapes, as an exported model does. With unknown H, W,
    # shape-dependent layers take their dynamic path (e.g. a QAT patch resize).
    return tf.ensure_shape(crop, (size, size, 3)) if isinstance(size, int) else crop


class RandAugment:
    """RandAugment from Keras' own op layers, running only the ops drawn for an image.

    `keras.layers.RandAugment` computes all 11 ops for each of its `num_ops` steps and
    keeps one with `where`: about 8 images/s at 256 px on 2 CPU cores (BENCHMARKS).
    The ops, ranges and order here are Keras' (as it builds them in RandAugment);
    `tf.switch_case` runs just the drawn one, about 10 times less work.
    """

    def __init__(self, num_ops=RANDAUGMENT_OPS, factor=RANDAUGMENT_FACTOR,
                 interpolation="bilinear"):
        layers, value_range = keras.layers, (0, 255)
        span = (0.0, factor)  # what keras.layers.RandAugment(factor=...) hands its ops
        kwargs = dict(dtype="float32")  # float16 under a mixed policy otherwise
        self.num_ops = num_ops
        self.ops = [
            layers.RandomShear(span, span, interpolation=interpolation, **kwargs),
            layers.RandomTranslation(span, span, interpolation=interpolation, **kwargs),
            layers.RandomRotation(span, interpolation=interpolation, **kwargs),
            layers.RandomBrightness(span, value_range=value_range, **kwargs),
            layers.RandomColorDegeneration(span, value_range=value_range, **kwargs),
            layers.RandomContrast(span, value_range=value_range, **kwargs),
            layers.RandomSharpness(span, value_range=value_range, **kwargs),
            layers.RandomPosterization(max(1, int(8 * factor)), value_range=value_range,
                                       **kwargs),
            layers.Solarization(span, span, value_range=value_range, **kwargs),
            layers.AutoContrast(value_range=value_range, **kwargs),
            layers.Equalization(value_range=value_range, **kwargs),
        ]

    def __call__(self, image):
        """float32 [H, W, 3] in [0, 255] -> the same, `num_ops` random ops applied."""
        for _ in range(self.num_ops):
            index = tf.random.uniform([], 0, len(self.ops), tf.int32)
            image = tf.switch_case(index, [functools.partial(op, image) for op in self.ops])
            image = tf.clip_by_value(image, 0.0, 255.0)  # some ops round just past 255
        return image


class Augmenter:
    """The recipe's augmentations after the crop, built once and reused by tf.data.

    `per_image` runs on one float image (flip, RandAugment, RandomErasing: timm's
    order), `per_batch` on a batch with one-hot labels (MixUp or CutMix, one of them
    per batch when both are on, like timm's Mixup with switch probability 0.5). Both
    need static image sizes (Keras' erasing and CutMix fail on unknown ones).
    """

    def __init__(self, flip=True, randaugment=False, random_erasing=0.0, mixup_alpha=0.0,
                 cutmix_alpha=0.0):
        # dtype float32: under a mixed-precision policy the layers would output float16.
        def layer(cls, **kwargs):
            return cls(dtype="float32", **kwargs)

        self.flip = layer(keras.layers.RandomFlip, mode="horizontal") if flip else None
        self.randaugment = RandAugment() if randaugment else None
        # Keras draws each image's erasing probability from `factor`: fix it.
        self.erasing = layer(
            keras.layers.RandomErasing, factor=(random_erasing, random_erasing),
            value_range=(0, 255)) if random_erasing else None
        self.mixup = layer(keras.layers.MixUp, alpha=mixup_alpha) if mixup_alpha else None
        self.cutmix = layer(
            keras.layers.CutMix, factor=cutmix_alpha) if cutmix_alpha else None

    def per_image(self, image):
        """float32 [H, W, 3] -> float32 [H, W, 3]."""
        if self.flip is not None:
            image = self.flip(image)
        if self.randaugment is not None:
            image = self.randaugment(image)
        if self.erasing is not None:
            image = self.erasing(image)
        return image

    def per_batch(self, images, labels):
        """float32 [B, H, W, 3], one-hot [B, C] -> the same, mixed."""
        mixers = [m for m in (self.mixup, self.cutmix) if m is not None]
        if not mixers:
            return images, labels

        def mix(layer):
            return lambda: tuple(layer({"images": images, "labels": labels}).values())

        if len(mixers) == 1:
            mixed = mix(mixers[0])()
        else:
            mixed = tf.cond(tf.random.uniform([]) < 0.5, mix(self.mixup), mix(self.cutmix))
        return tf.clip_by_value(mixed[0], 0.0, 255.0), mixed[1]  # mixing rounds past 255
