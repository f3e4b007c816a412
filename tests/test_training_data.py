"""Input pipeline: decoding, augmentation paths, the multi-scale sampler, data errors."""

import time

import numpy as np
import pytest
import tensorflow as tf

import training_utils
from training import augment, data, pipeline, recipes, sampler


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return training_utils.make_image_folder(tmp_path_factory.mktemp("images"), per_class=12)


@pytest.fixture(scope="module")
def source(folder):
    return data.open_source(image_folder=folder)


def _encoded(fmt, channels=3):
    image = np.random.default_rng(0).integers(0, 256, (30, 44, channels), dtype=np.uint8)
    if fmt == "raw":
        return tf.constant(image)
    return tf.io.encode_jpeg(image) if fmt == "jpeg" else tf.io.encode_png(image)


def _check_images(images, size):
    assert images.dtype == tf.float32
    assert tuple(images.shape[-3:]) == (size, size, 3)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0


@pytest.mark.parametrize("fmt,channels", [("jpeg", 3), ("png", 3), ("png", 1), ("raw", 1)])
@pytest.mark.parametrize("interpolation,antialias", [("bilinear", False), ("bicubic", True)])
def test_random_resized_crop_and_center_crop(fmt, channels, interpolation, antialias):
    encoded = _encoded(fmt, channels)
    crop = augment.random_resized_crop(encoded, 24, scale=(0.08, 1.0),
                                       interpolation=interpolation, antialias=antialias)
    _check_images(crop, 24)
    center = augment.center_crop(encoded, 24, crop_fraction=0.875, interpolation=interpolation)
    _check_images(center, 24)


def test_center_crop_keeps_the_middle():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 10:50] = 255  # a bright middle band; the crop of the short side sees only it
    center = augment.center_crop(tf.constant(image), 40, crop_fraction=1.0)
    assert float(tf.reduce_min(center)) > 250


def test_augmenter_paths_keep_shapes_ranges_and_label_mass():
    images = tf.random.uniform((6, 16, 16, 3), 0, 255)
    labels = tf.one_hot([0, 1, 2, 3, 4, 0], 5)
    augmenter = augment.Augmenter(randaugment=True, random_erasing=1.0, mixup_alpha=0.2,
                                  cutmix_alpha=1.0)
    for image in images:
        _check_images(augmenter.per_image(image), 16)
    out_images, out_labels = augmenter.per_batch(images, labels)
    _check_images(out_images, 16)
    assert out_labels.shape == (6, 5) and out_labels.dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(out_labels, -1), 1.0, atol=1e-5)


@pytest.mark.parametrize("recipe", ["v1", "v1_multi_scale", "v2", "v2_multi_scale"])
def test_train_dataset_batches(source, recipe):
    settings = pipeline.PipelineSettings(
        image_size=16, batch_size=4, multi_scale=recipe.endswith("multi_scale"),
        **(dict(interpolation="bicubic", antialias=True, randaugment=True,
                random_erasing=0.25, mixup_alpha=0.2, cutmix_alpha=1.0)
           if recipe.startswith("v2") else {}))
    pairs = settings.scale_pairs(4)
    for images, labels in pipeline.train_dataset(source, settings).take(6):
        size, batch = images.shape[1], images.shape[0]
        if settings.multi_scale:
            assert (size, batch) in pairs
        else:
            assert (size, batch) == (16, 4)
        _check_images(images, size)
        assert labels.shape == (batch, 2)
        np.testing.assert_allclose(tf.reduce_sum(labels, -1), 1.0, atol=1e-5)


def test_eval_dataset_sees_each_example_once_in_full_batches(source):
    settings = pipeline.PipelineSettings(image_size=16, batch_size=5)
    ds = pipeline.eval_dataset(source, settings)
    # Static shapes: a graph traced on eval batches sees the model's fixed input size
    # (shape-dependent layers, e.g. QAT patch resizes, take their static path).
    assert tuple(ds.element_spec[0].shape) == (5, 16, 16, 3)
    batches = list(ds)
    count = source.num_examples(source.eval_split)
    padded = 5 * len(batches)
    assert padded - 5 < count <= padded
    weights = np.concatenate([w.numpy() for _, _, w in batches])
    assert np.sum(weights > 0) == count and np.sum(weights) == pytest.approx(padded)
    for images, labels, _ in batches:
        assert images.shape[0] == 5
        _check_images(images, 16)
        assert set(np.unique(labels)) <= {0.0, 1.0}


def test_padded_eval_metrics_are_exact(tmp_path):
    import keras

    # One image per class held out, batches of 5: three blank padding examples.
    source = data.open_source(image_folder=training_utils.make_image_folder(
        tmp_path, per_class=1, splits=("train", "val")))
    settings = pipeline.PipelineSettings(image_size=16, batch_size=5)
    # Always predicts class 1: right for half the real images; the padding's all-zero
    # label reads as class 0, so padding counted as examples would lower the accuracy.
    model = keras.Sequential([
        keras.Input((16, 16, 3)), keras.layers.Flatten(),
        keras.layers.Dense(2, kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant([0.0, 1.0]))])
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  weighted_metrics=recipes.make_metrics(2))
    metrics = model.evaluate(pipeline.eval_dataset(source, settings), return_dict=True,
                             verbose=0)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["loss"] == pytest.approx(-np.log(np.exp(0.0) / (1 + np.e)) / 2
                                            - np.log(np.e / (1 + np.e)) / 2)


def test_image_batch_pairs_match_cvnets():
    # cvnets' VariableBatchSampler for base 256, batch 128: 160..320 px in 5 scales.
    assert sampler.image_batch_pairs(256, 128) == [
        (160, 327), (192, 227), (256, 128), (288, 101), (320, 81)]
    for size, batch in sampler.image_batch_pairs(64, 32):
        assert size % 8 == 0 and abs(size * size * batch / (64 * 64 * 32) - 1) < 0.1


def test_multi_scale_batches_use_every_scale():
    pairs = [(8, 12), (12, 6), (16, 3)]
    examples = tf.data.Dataset.range(10**6).map(lambda i: (tf.zeros([4, 4, 3], tf.uint8), i))

    def transform(image, size):
        return tf.image.resize(image, tf.stack([size, size]))

    seen = {}
    for images, labels in sampler.multi_scale_batches(examples, pairs, transform).take(150):
        key = (images.shape[1], images.shape[0])
        assert key in pairs and labels.shape == (images.shape[0],)
        seen[key] = seen.get(key, 0) + 1
    assert set(seen) == set(pairs)
    assert min(seen.values()) > 150 / len(pairs) / 2  # each scale about equally often


def test_multi_scale_steps_share_one_scale_across_replicas_and_workers():
    pairs = [(8, 6), (12, 3), (16, 2)]

    def scales(seed, offset):
        # Another worker reads other examples: only the seed fixes the scale sequence.
        examples = tf.data.Dataset.range(offset, 10**6).map(
            lambda i: (tf.zeros([4, 4, 3], tf.uint8), i))
        batches = sampler.multi_scale_batches(
            examples, pairs, lambda image, size: tf.image.resize(image, tf.stack([size, size])),
            replicas=2, seed=seed)
        return [(images.shape[1], images.shape[0]) for images, _ in batches.take(40)]

    worker_0, worker_1 = scales(seed=3, offset=0), scales(seed=3, offset=500)
    assert worker_0 == worker_1
    assert all(worker_0[i] == worker_0[i + 1] for i in range(0, 40, 2))  # per step
    assert len(set(worker_0)) > 1


def test_multi_scale_order_survives_a_non_deterministic_pipeline():
    # The training pipeline lets tf.data reorder (options.deterministic = False) and its
    # per-batch augmentation takes longer for some batches than others: the scale order
    # must still be the seed's, or workers disagree on a step's shape.
    pairs = [(8, 6), (12, 3), (16, 2)]
    rng = np.random.default_rng(0)

    def slow_identity(images):
        time.sleep(float(rng.uniform(0, 0.01)))
        return images

    def batch_transform(images, labels):
        slowed = tf.numpy_function(slow_identity, [images], tf.float32, stateful=True)
        return tf.ensure_shape(slowed, images.shape), labels

    def scales(transform_batches):
        examples = tf.data.Dataset.range(10**6).map(
            lambda i: (tf.zeros([4, 4, 3], tf.uint8), i))
        batches = sampler.multi_scale_batches(
            examples, pairs, lambda image, size: tf.image.resize(image, tf.stack([size, size])),
            seed=5, batch_transform=batch_transform if transform_batches else None)
        options = tf.data.Options()
        options.deterministic = False
        return [(images.shape[1], images.shape[0])
                for images, _ in batches.with_options(options).take(60)]

    assert scales(True) == scales(False)


def test_bundled_dataset_opens_offline(tmp_path):
    source = data.open_source(data_dir=tmp_path)
    assert (source.train_split, source.eval_split) == ("train", "test")
    assert source.num_examples("train") == 10000 and source.num_examples("test") == 3000
    assert len(source.class_names) == 10
    image, label = next(iter(source.read("test")))
    assert image.dtype == tf.string and 0 <= int(label) < 10


def _fails_fast(pattern, **kwargs):
    start = time.perf_counter()
    with pytest.raises(data.DataError, match=pattern):
        data.open_source(**kwargs)
    assert time.perf_counter() - start < 10  # no download retry loop


def test_unknown_dataset_fails_fast_with_suggestion():
    _fails_fast(r"Unknown TFDS dataset 'tf_flowerz'\. Did you mean: tf_flowers", dataset="tf_flowerz")


def test_unprepared_dataset_fails_fast_without_download(tmp_path):
    _fails_fast(r"not prepared.*--download", dataset="tf_flowers", data_dir=tmp_path)
    _fails_fast(r"not prepared.*--manual-dir", dataset="imagenet2012", data_dir=tmp_path)


def test_bad_folders_and_splits(tmp_path, source):
    _fails_fast("is not a directory", image_folder=tmp_path / "missing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    _fails_fast("no usable images", image_folder=tmp_path / "empty")
    with pytest.raises(data.DataError, match="has no split 'nope'"):
        source.choose_splits(eval_split="nope")


def test_corrupt_image_is_named(tmp_path):
    root = training_utils.make_image_folder(tmp_path / "images", per_class=3)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = root / "cat" / "truncated.png"
    truncated.write_bytes((root / "cat" / "cat_0.png").read_bytes()[:60])
    with pytest.raises(data.DataError, match="2 of 8 image files") as error:
        data.open_source(image_folder=root)
    assert "broken.jpg" in str(error.value) and "truncated.png" in str(error.value)
    data.open_source(image_folder=root, check_images=False)  # the check can be skipped


def test_folder_layouts(tmp_path):
    flat = data.open_source(image_folder=training_utils.make_image_folder(
        tmp_path / "flat", per_class=40))
    assert (flat.train_split, flat.eval_split) == ("train", "validation")
    assert flat.num_examples("train") + flat.num_examples("validation") == 80
    assert 0 < flat.num_examples("validation") < 20
    split = data.open_source(image_folder=training_utils.make_image_folder(
        tmp_path / "split", per_class=3, splits=("train", "val")))
    assert (split.train_split, split.eval_split) == ("train", "val")
    assert split.class_names == ["cat", "dog"] and split.num_examples("val") == 6
