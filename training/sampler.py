"""The multi-scale variable-batch sampler of MobileViT v1 / v3, for tf.data.

Every batch has one resolution drawn from a few scales around the base size; its batch
size is scaled so each batch holds about as many pixels as a base-size batch (cvnets'
`VariableBatchSampler`: 160..320 px in 5 scales for base 256, sizes divisible by 32).

tf.data has no sampler that varies the batch size, so this draws a scale per step,
tags that many images with it, crops them to that size and batches them with
`group_by_window`.

Example:
    >>> image_batch_pairs(256, 128)
    [(160, 327), (192, 227), (256, 128), (288, 101), (320, 81)]
    >>> batches = multi_scale_batches(examples, image_batch_pairs(64, 32), transform)
"""

import functools

import numpy as np
import tensorflow as tf

from keras_mobilevit.architectures import make_divisible

MIN_SCALE, MAX_SCALE, NUM_SCALES = 160 / 256, 320 / 256, 5


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


def multi_scale_batches(examples, pairs, transform, replicas=1, seed=0,
                        batch_transform=None):
    """Batches of (images [b, s, s, 3], labels) with (s, b) varying between steps.

    Args:
        examples: unbatched dataset of (image, label); `image` is what `transform` takes.
        pairs: [(size, batch)] from `image_batch_pairs`; `batch` is per replica.
        transform: `(image, size) -> float32 [size, size, 3]`, e.g. a random crop.
        replicas: local replicas fed from this dataset. Each scale is drawn for
            `replicas` consecutive batches, which tf.distribute hands to the replicas of
            one step, so a step has a single resolution (Keras needs equal shapes).
        seed: the scale sequence depends only on it, so every worker of a multi-worker
            run uses the same resolution at the same step.
        batch_transform: optional `(images, labels) -> (images, labels)` on each batch.

    `transform` and `batch_transform` run with a static size and batch size (one branch
    of a `tf.switch_case` per scale): some Keras augmentation layers fail on unknown
    image sizes.
    """
    sizes = [s for s, _ in pairs]
    batch_sizes = tf.constant([b for _, b in pairs], tf.int64)
    group_sizes = batch_sizes * replicas

    # One scale per step, uniform like cvnets' random.choice, repeated per image.
    keys = tf.data.Dataset.random(seed=seed).map(lambda r: tf.cast(r % len(pairs), tf.int32))
    keys = keys.flat_map(
        lambda key: tf.data.Dataset.from_tensors(key).repeat(tf.gather(group_sizes, key)))

    def resize(key, example):
        image, label = example
        branches = [functools.partial(transform, image, size) for size in sizes]
        return key, tf.switch_case(key, branches), label

    # deterministic: a step's images must stay together for group_by_window.
    batches = tf.data.Dataset.zip((keys, examples)).map(
        resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = batches.group_by_window(
        key_func=lambda key, image, label: tf.cast(key, tf.int64),
        reduce_func=lambda key, window: window.batch(tf.gather(batch_sizes, key)),
        window_size_func=lambda key: tf.gather(group_sizes, key))
    if batch_transform is None:
        return batches.map(lambda keys, images, labels: (images, labels))

    def transform_batch(keys, images, labels):  # keys: [b], all the same
        def branch(size, batch):
            images_ = tf.ensure_shape(images, [batch, size, size, 3])
            labels_ = tf.ensure_shape(labels, [batch, *labels.shape[1:]])
            return batch_transform(images_, labels_)
        return tf.switch_case(keys[0], [functools.partial(branch, s, b) for s, b in pairs])

    # deterministic: the pipeline's options allow reordering (for throughput), but the
    # order of the scales is what keeps replicas and workers on one resolution per step
    # (a reordered batch gave MultiWorkerMirroredStrategy "Shape mismatch in the
    # collective": [7, 24, 24, 3] on one worker, [4, 32, 32, 3] on the other).
    return batches.map(transform_batch, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
