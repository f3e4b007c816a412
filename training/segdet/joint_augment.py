"""Augmentations that move pixels and their labels together, inside tf.data.

The official recipes (cvnets): segmentation draws a random resize (0.5-2x), a random
crop (padding the mask with the ignore index), a horizontal flip and a photometric
distortion; detection an SSD crop (a window that covers at least a random fraction of
some box; boxes whose centre leaves the window are dropped), photometric distortion,
horizontal flip and a resize to the input size. Each geometric op below changes the
image and its mask or boxes with the same random draw.

Images are uint8 or float32 [H, W, 3] RGB in [0, 255] and leave as float32; masks
uint8 [H, W]; boxes float32 [n, 4] normalized (ymin, xmin, ymax, xmax) with int32
labels [n].

Example:
    >>> image, mask = random_resize(image, mask, size=512, scale=(0.5, 2.0))
    >>> image, mask = random_crop(image, mask, size=512)
    >>> image, mask = flip_mask(image, mask)
    >>> image, boxes, labels = ssd_crop(image, boxes, labels)
    >>> image = photometric(image)
"""

import tensorflow as tf

from training.segdet.sources import IGNORE_INDEX

# SSD's min_object_covered choices (cvnets SSDCroping's IoU choices; 0 = any window).
SSD_MIN_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
MIN_BOX_SIDE = 1e-3  # normalized; thinner boxes after a crop are dropped


def resize_mask(mask, size):
    """Nearest-neighbour resize of uint8 [H, W] to `size` (a [2] tensor or pair)."""
    return tf.image.resize(mask[..., None], size, method="nearest")[..., 0]


def resize_image(image, size):
    """Bilinear resize to `size`: float32 [size..., 3] in [0, 255]."""
    return tf.clip_by_value(tf.image.resize(tf.cast(image, tf.float32), size), 0.0, 255.0)


def random_resize(image, mask, size, scale=(0.5, 2.0)):
    """Scales image and mask so the short side is `size` times a random factor in `scale`."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    factor = tf.random.uniform([], *scale) * size / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), 1)
    return resize_image(image, new), resize_mask(mask, new)


def random_crop(image, mask, size):
    """A random size x size window; smaller inputs are padded (image 0, mask ignore)."""
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)[:2]
    pad = tf.maximum(size - shape, 0)
    image = tf.pad(image, [[0, pad[0]], [0, pad[1]], [0, 0]])
    mask = tf.pad(mask, [[0, pad[0]], [0, pad[1]]], constant_values=IGNORE_INDEX)
    joint = tf.concat([image, tf.cast(mask, tf.float32)[..., None]], axis=-1)
    joint = tf.image.random_crop(joint, [size, size, 4])
    return joint[..., :3], tf.cast(joint[..., 3], tf.uint8)


def flip_mask(image, mask):
    """Horizontal flip of both, with probability 0.5."""
    flip = tf.random.uniform([]) < 0.5
    return (tf.cond(flip, lambda: image[:, ::-1], lambda: image),
            tf.cond(flip, lambda: mask[:, ::-1], lambda: mask))


def flip_boxes(image, boxes):
    """Horizontal flip of the image and its normalized boxes, with probability 0.5."""
    def flipped():
        ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
        return image[:, ::-1], tf.stack([ymin, 1 - xmax, ymax, 1 - xmin], axis=-1)

    return tf.cond(tf.random.uniform([]) < 0.5, flipped, lambda: (image, boxes))


def ssd_crop(image, boxes, labels, max_attempts=50):
    """SSD's random crop: a window (0.3-1 of each side, aspect 0.5-2) covering at least
    a random fraction (0, 0.1, ..., 0.9) of some box; the whole image after
    `max_attempts` misses. Keeps boxes whose centre is inside, clipped to the window."""
    covered = tf.gather(SSD_MIN_COVERED,
                        tf.random.uniform([], 0, len(SSD_MIN_COVERED), tf.int32))
    begin, extent, window = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=boxes[None], min_object_covered=covered,
        aspect_ratio_range=(0.5, 2.0), area_range=(0.09, 1.0), max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, extent)
    top, left, bottom, right = tf.unstack(window[0, 0])
    centre_y = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_x = (boxes[:, 1] + boxes[:, 3]) / 2
    inside = ((centre_y > top) & (centre_y < bottom) & (centre_x > left) & (centre_x < right))
    scale = tf.stack([bottom - top, right - left] * 2)
    moved = (boxes - tf.stack([top, left] * 2)) / scale
    moved = tf.clip_by_value(moved, 0.0, 1.0)
    big = ((moved[:, 2] - moved[:, 0]) > MIN_BOX_SIDE) & ((moved[:, 3] - moved[:, 1]) > MIN_BOX_SIDE)
    keep = inside & big
    return image, tf.boolean_mask(moved, keep), tf.boolean_mask(labels, keep)


def photometric(image, probability=0.5):
    """SSD/cvnets photometric distortion: brightness (+-32), contrast, saturation (each
    0.5-1.5x) and hue (+-18 degrees), each applied with `probability`, in random order
    of contrast before or after the colour changes (as SSD does)."""
    image = tf.cast(image, tf.float32) / 255.0

    def maybe(op):
        return lambda x: tf.cond(tf.random.uniform([]) < probability, lambda: op(x), lambda: x)

    brightness = maybe(lambda x: tf.image.random_brightness(x, 32 / 255))
    contrast = maybe(lambda x: tf.image.random_contrast(x, 0.5, 1.5))
    saturation = maybe(lambda x: tf.image.random_saturation(x, 0.5, 1.5))
    hue = maybe(lambda x: tf.image.random_hue(x, 18 / 360))
    image = brightness(image)
    image = tf.cond(tf.random.uniform([]) < 0.5,
                    lambda: hue(saturation(tf.clip_by_value(contrast(image), 0.0, 1.0))),
                    lambda: contrast(hue(saturation(tf.clip_by_value(image, 0.0, 1.0)))))
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0
