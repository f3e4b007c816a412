"""The multi-scale variable-batch sampler of MobileViT v1 / v3, for tf.data.

Every batch has one resolution drawn from a few scales around the base size; its batch
size is scaled so each batch holds about as many pixels as a base-size batch (cvnets'
`VariableBatchSampler`: 160..320 px in 5 scales for base 256, sizes divisible by 32).

tf.data has no sampler that varies the batch size, so this draws a scale per image
(with probability proportional to that scale's batch size, which makes every scale
equally likely per batch, as in cvnets) and groups images of one scale into batches of
that scale's size with `group_by_window`.

Example:
    >>> image_batch_pairs(256, 128)
    [(160, 327), (192, 227), (256, 128), (288, 101), (320, 81)]
    >>> batches = multi_scale_batches(examples, image_batch_pairs(64, 32), transform)
"""

import numpy as np
import tensorflow as tf

MIN_SCALE, MAX_SCALE, NUM_SCALES = 160 / 256, 320 / 256, 5


def make_divisible(value, divisor):
    """Rounds to the nearest multiple of `divisor`, never more than 10% down (cvnets)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def image_batch_pairs(base_size, batch_size, min_size=None, max_size=None,
                      num_scales=NUM_SCALES, divisor=None):
    """[(size, batch)] with size * size * batch ~ base_size * base_size * batch_size.

    Defaults follow cvnets (160..320 for base 256), scaled to `base_size`; sizes are
    divisible by 32, or by 8 for small bases (below 128 px) so that several scales exist.
    """
    min_size = min_size or round(base_size * MIN_SCALE)
    max_size = max_size or round(base_size * MAX_SCALE)
    divisor = divisor or (32 if base_size >= 128 else 8)
    sizes = set(np.linspace(min_size, max_size, num_scales).tolist()) | {base_size}
    sizes = sorted({make_divisible(s, divisor) for s in sizes})
    pixels = base_size * base_size * batch_size
    return [(s, max(1, int(pixels / (s * s)))) for s in sizes]


def mean_batch_size(pairs):
    """Expected images per batch when every scale is equally likely per batch."""
    return float(np.mean([batch for _, batch in pairs]))


def multi_scale_batches(examples, pairs, transform):
    """Batches of (images [b, s, s, 3], labels [b]) with (s, b) varying between batches.

    Args:
        examples: unbatched dataset of (image, label); `image` is what `transform` takes.
        pairs: [(size, batch)] from `image_batch_pairs`.
        transform: `(image, size) -> float32 [size, size, 3]`, e.g. a random crop;
            `size` is a scalar int32 tensor.
    """
    sizes = tf.constant([s for s, _ in pairs], tf.int32)
    batch_sizes = tf.constant([b for _, b in pairs], tf.int64)
    # P(scale k) proportional to b_k: every scale then fills the same number of batches.
    logits = tf.math.log(tf.cast(batch_sizes, tf.float32))[None]

    def assign_scale(image, label):
        key = tf.random.categorical(logits, 1, dtype=tf.int64)[0, 0]
        return key, transform(image, tf.gather(sizes, key)), label

    def batch_window(key, window):
        return window.batch(tf.gather(batch_sizes, key), drop_remainder=True)

    batches = examples.map(assign_scale, num_parallel_calls=tf.data.AUTOTUNE)
    batches = batches.group_by_window(
        key_func=lambda key, image, label: key,
        reduce_func=batch_window,
        window_size_func=lambda key: tf.gather(batch_sizes, key))
    return batches.map(lambda key, images, labels: (images, labels))
