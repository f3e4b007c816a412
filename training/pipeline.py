"""tf.data input pipelines: training (sharded, cached, shuffled, augmented, batched,
prefetched) and evaluation (resize + center crop).

Training batches are per replica: `train_dataset` is meant for
`strategy.distribute_datasets_from_function`, so each worker reads only its own part
of the data and every replica gets its own batch (and, with the multi-scale sampler,
its own resolution, like cvnets' per-GPU sampler).

Example:
    >>> settings = PipelineSettings(image_size=32, batch_size=128)
    >>> ds = train_dataset(source, settings)            # (float32 [128, 32, 32, 3], one-hot)
    >>> ds = eval_dataset(source, settings)
"""

import dataclasses
import functools

import tensorflow as tf

from training import augment, sampler

CACHE_LIMIT_BYTES = 2 << 30  # cache encoded images in memory below 2 GiB per worker
SHUFFLE_BUFFER = 16384


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """What the pipelines need from the training configuration."""

    image_size: int
    batch_size: int                 # global batch (per-replica = batch / replicas)
    interpolation: str = "bilinear"
    antialias: bool = False
    crop_scale_min: float = 0.08
    eval_crop_fraction: float = 256 / 288
    multi_scale: bool = False
    randaugment: bool = False
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cache: str = "auto"             # "auto" | "yes" | "no"

    @classmethod
    def from_recipe(cls, recipe, cache="auto"):
        """The settings of a `recipes.Recipe` (the one Recipe -> pipeline mapping)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dataclasses.asdict(recipe).items() if k in names}
        return cls(**values, cache=cache)

    def scale_pairs(self, per_replica_batch):
        """[(size, batch)] of the multi-scale sampler for one replica."""
        return sampler.image_batch_pairs(self.image_size, per_replica_batch)


def _cache(source, split, settings, num_shards):
    if settings.cache == "auto":
        return source.size_bytes(split) / num_shards < CACHE_LIMIT_BYTES
    return settings.cache == "yes"


def train_dataset(source, settings, input_context=None, seed=0):
    """Endless per-replica batches (float32 images in [0, 255], one-hot labels)."""
    ctx = input_context or tf.distribute.InputContext()
    split, num_classes = source.train_split, len(source.class_names)
    shards = ctx.num_input_pipelines
    ds = source.read(split, shards, ctx.input_pipeline_id, shuffle=True)
    if _cache(source, split, settings, shards):
        ds = ds.cache()
    ds = ds.shuffle(min(SHUFFLE_BUFFER, source.num_examples(split) // shards + 1)).repeat()

    augmenter = augment.Augmenter(
        randaugment=settings.randaugment, random_erasing=settings.random_erasing,
        mixup_alpha=settings.mixup_alpha, cutmix_alpha=settings.cutmix_alpha)
    crop = functools.partial(
        augment.random_resized_crop, scale=(settings.crop_scale_min, 1.0),
        interpolation=settings.interpolation, antialias=settings.antialias)

    def transform(image, size):  # size: a Python int, so shapes stay static
        return augmenter.per_image(crop(image, size))

    def finish(images, labels):
        return augmenter.per_batch(images, tf.one_hot(labels, num_classes))

    batch = ctx.get_per_replica_batch_size(settings.batch_size)
    if settings.multi_scale:
        local_replicas = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        ds = sampler.multi_scale_batches(ds, settings.scale_pairs(batch), transform,
                                         replicas=local_replicas, seed=seed,
                                         batch_transform=finish)
    else:
        ds = ds.map(lambda image, label: (transform(image, settings.image_size), label),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch, drop_remainder=True)
        ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = False  # take whichever image is ready first
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_transform(settings):
    """The eval transform, `encoded image -> float32 [size, size, 3]` in [0, 255]: resize
    the short side to size / eval_crop_fraction, center crop (used by tflite/ too)."""
    return functools.partial(
        augment.center_crop, size=settings.image_size,
        crop_fraction=settings.eval_crop_fraction, interpolation=settings.interpolation,
        antialias=settings.antialias)


def eval_dataset(source, settings, split=None, batch_size=None):
    """Full batches of (float32 [B, size, size, 3], one-hot, weight), every example once.

    The split is padded with blank examples of weight 0 up to a whole number of
    batches, and the real ones weigh (padded count / real count), so top-1 and the
    (per-example mean) loss are exact while every batch splits evenly over replicas:
    Keras averages the first batch over replicas to build the model, and a replica
    left with an empty batch fails. Not sharded here: under a multi-worker strategy
    Keras shards it by element.
    """
    split = split or source.eval_split
    batch_size = batch_size or settings.batch_size
    num_classes, size = len(source.class_names), settings.image_size
    count = source.num_examples(split)
    padded = -(-count // batch_size) * batch_size
    center = eval_transform(settings)
    ds = source.read(split)
    if _cache(source, split, settings, 1):
        ds = ds.cache()
    ds = ds.map(lambda image, label: (center(image), tf.one_hot(label, num_classes),
                                      tf.constant(padded / count, tf.float32)),
                num_parallel_calls=tf.data.AUTOTUNE)
    blank = (tf.zeros([size, size, 3]), tf.zeros([num_classes]), tf.constant(0.0))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padded - count))
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
