"""Segmentation training parts: the loss with ignore index and aux weight, mean IoU,
joint augmentations, the mask-folder and TFDS sources with their errors, pipelines."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from segdet_utils import crash_and_resume
from training import models, recipes
from training.data import DataError
from training.datasets.fashion_scenes import make_scenes
from training.segdet import factory, figures, joint_augment, segmentation, sources


def _ce(labels, logits):
    logits = logits - logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]


def test_loss_is_the_mean_over_pixels_not_ignored():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (2, 6, 6))
    labels[0, :2] = 255
    logits = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    valid = labels != 255
    expected = _ce(np.where(valid, labels, 0), logits)[valid].mean()
    loss = segmentation.SegmentationLoss()
    np.testing.assert_allclose(float(loss(labels, logits)), expected, rtol=1e-5)
    changed = logits.copy()
    changed[0, :2] += 100 * rng.normal(size=(2, 6, 4))  # only ignored pixels change
    np.testing.assert_allclose(float(loss(labels, changed)), expected, rtol=1e-5)


def test_low_resolution_logits_are_resized_to_the_masks():
    labels = np.zeros((1, 8, 8), np.int64)
    labels[:, :, 4:] = 1
    low = np.zeros((1, 4, 4, 2), np.float32)
    low[:, :, :2, 0], low[:, :, 2:, 1] = 5, 5
    full = np.zeros((1, 8, 8, 2), np.float32)
    full[:, :, :4, 0], full[:, :, 4:, 1] = 5, 5
    loss = segmentation.SegmentationLoss()
    # bilinear upsampling blurs only the two columns at the class boundary
    assert float(loss(labels, low)) < float(loss(labels, full)) + 0.5
    assert float(loss(labels, low)) < 0.3


def test_aux_head_loss_weighs_04():
    labels = np.zeros((1, 4, 4), np.int64)
    logits = np.random.default_rng(1).normal(size=(1, 4, 4, 3)).astype(np.float32)
    full = float(segmentation.SegmentationLoss()(labels, logits))
    np.testing.assert_allclose(float(segmentation.SegmentationLoss(weight=0.4)(labels, logits)),
                               0.4 * full, rtol=1e-6)
    with_aux = types.SimpleNamespace(model="mobilevitv2_050", weights=None,
                                     segdet=factory.SegDetOptions())
    losses = factory.segmentation_loss(with_aux)
    assert set(losses) == {"logits", "aux_logits"}
    assert (losses["logits"].weight, losses["aux_logits"].weight) == (1.0, 0.4)
    without = types.SimpleNamespace(model="mobilevitv3_xxs", weights=None,
                                    segdet=factory.SegDetOptions())
    assert isinstance(factory.segmentation_loss(without), segmentation.SegmentationLoss)


def test_mean_iou_skips_ignored_pixels():
    truth = np.array([[[0, 0, 1, 1, 255, 255]]])
    predicted = np.array([[[0, 1, 1, 1, 0, 1]]])  # the last two are ignored
    metric = segmentation.mean_iou(num_classes=2)
    metric.update_state(truth, tf.one_hot(predicted, 2))
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3
    np.testing.assert_allclose(float(metric.result()), (1 / 2 + 2 / 3) / 2, rtol=1e-6)


def _coded_pair(height=40, width=52, seed=0):
    """An image whose red channel is 20 x its mask value (so alignment is checkable)."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 8, (height, width)).astype(np.uint8)
    image = np.stack([mask * 20, rng.integers(0, 255, mask.shape),
                      np.full(mask.shape, 7)], -1).astype(np.uint8)
    return tf.constant(image), tf.constant(mask)


@pytest.mark.parametrize("seed", range(4))
def test_crop_and_flip_move_image_and_mask_together(seed):
    tf.random.set_seed(seed)
    image, mask = _coded_pair(seed=seed)
    image, mask = joint_augment.random_crop(image, mask, 48)  # pads the 40 rows to 48
    image, mask = joint_augment.flip_mask(image, mask)
    image, mask = image.numpy(), mask.numpy()
    assert image.shape == (48, 48, 3) and mask.shape == (48, 48)
    real = mask != 255
    np.testing.assert_array_equal(image[..., 0][real], mask[real].astype(np.float32) * 20)
    assert real.sum() == 40 * 48 and (image[~real] == 0).all()  # padding: black, ignored


def test_random_resize_keeps_mask_values_and_alignment():
    tf.random.set_seed(1)
    mask = tf.constant(np.kron(np.arange(16).reshape(4, 4) % 8, np.ones((16, 16))).astype(np.uint8))
    image = tf.stack([mask * 20] * 3, -1)
    for _ in range(3):
        big_image, big_mask = joint_augment.random_resize(image, mask, 64, (0.5, 2.0))
        big_image, big_mask = big_image.numpy(), big_mask.numpy().astype(np.int64)
        assert big_image.shape[:2] == big_mask.shape
        assert set(np.unique(big_mask)) <= set(range(8))
        # pixels next to a block edge may be blended; all others agree exactly
        edge = np.zeros(big_mask.shape, bool)
        for axis in (0, 1):
            step = np.diff(big_mask, axis=axis) != 0
            lead = [(0, 1), (0, 0)] if axis == 0 else [(0, 0), (0, 1)]
            trail = [(1, 0), (0, 0)] if axis == 0 else [(0, 0), (1, 0)]
            edge |= np.pad(step, lead) | np.pad(step, trail)
        interior = ~edge
        np.testing.assert_allclose(big_image[..., 0][interior], big_mask[interior] * 20.0, atol=1)


def test_photometric_keeps_shape_and_range():
    image = tf.random.uniform((20, 30, 3), 0, 255)
    out = joint_augment.photometric(image, probability=1.0)
    assert out.shape == (20, 30, 3)
    assert 0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255


def _mask_folder(root, count=4, size=24, labels=("background", "a", "b")):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            root / "images" / f"im{k}.png")
        mask = rng.integers(0, len(labels), (size, size)).astype(np.uint8)
        mask[0] = 255
        Image.fromarray(mask, mode="L").save(root / "masks" / f"im{k}.png")
    if labels:
        (root / "labels.txt").write_text("\n".join(labels) + "\n")
    return root


def test_mask_folder_reads_pairs(tmp_path):
    source = sources.open_scene_source("segmentation", image_folder=_mask_folder(tmp_path, 12))
    assert source.class_names == ["background", "a", "b"]
    assert source.num_examples(source.train_split) + source.num_examples(source.eval_split) == 12
    settings = segmentation.SegmentationSettings(image_size=16, batch_size=4, photometric=False)
    images, masks = next(iter(segmentation.train_dataset(source, settings)))
    assert images.shape == (4, 16, 16, 3) and masks.dtype == tf.int32
    assert set(np.unique(masks.numpy())) <= {0, 1, 2, 255}


@pytest.mark.parametrize("problem,message", [
    ("value", "values [7] but only 3 classes"),
    ("size", "20x20 but its image"),
    ("rgb", "mode RGB"),
    ("no_labels", "no labels.txt"),
    ("missing_mask", "have no mask"),
    ("empty", "holds no image/mask pairs"),
])
def test_mask_folder_errors(tmp_path, problem, message):
    root = _mask_folder(tmp_path / "data")
    mask_path = root / "masks" / "im1.png"
    if problem == "value":
        mask = np.asarray(Image.open(mask_path)).copy()
        mask[3, 3] = 7
        Image.fromarray(mask, mode="L").save(mask_path)
    elif problem == "size":
        Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(mask_path)
    elif problem == "rgb":
        Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(mask_path)
    elif problem == "no_labels":
        (root / "labels.txt").unlink()
    elif problem == "missing_mask":
        mask_path.unlink()
    elif problem == "empty":
        root = tmp_path / "empty"
        root.mkdir()
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sources.open_scene_source("segmentation", image_folder=root)


def test_voc_devkit_layout_reads_palette_masks(tmp_path):
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / folder).mkdir(parents=True)
    for name, value in (("a", 15), ("b", 3)):
        Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(tmp_path / f"JPEGImages/{name}.jpg")
        mask = Image.fromarray(np.full((10, 12), value, np.uint8), mode="P")
        mask.putpalette(list(figures.palette(256).reshape(-1)))
        mask.save(tmp_path / f"SegmentationClass/{name}.png")
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("a\n")
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("b\n")
    source = sources.open_scene_source("segmentation", image_folder=tmp_path)
    assert (source.train_split, source.eval_split) == ("train", "val")
    assert len(source.class_names) == 21 and source.class_names[15] == "person"
    example = next(iter(source.read("train")))
    assert set(np.unique(example["mask"].numpy())) == {15}  # indices, not palette colours


def test_tfds_voc_without_masks_fails_fast(tmp_path):
    with pytest.raises(DataError, match="no segmentation masks.*VOCdevkit"):
        sources.open_scene_source("segmentation", dataset="voc/2012", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="not prepared.*--download"):
        sources.open_scene_source("detection", dataset="voc/2012", data_dir=str(tmp_path))


def test_eval_pads_with_ignored_masks(tmp_path):
    make_scenes.export(tmp_path, "test", 5, size=48)
    (tmp_path / "labels.txt").write_text("\n".join(["background"] + make_scenes.CLASS_NAMES))
    source = sources.open_scene_source("segmentation", image_folder=tmp_path)
    settings = segmentation.SegmentationSettings(image_size=32, batch_size=4)
    batches = list(segmentation.eval_dataset(source, settings, split="train"))
    real = source.num_examples("train")
    masks = np.concatenate([m.numpy() for _, m in batches])
    assert len(masks) == -(-real // 4) * 4 and (masks[real:] == 255).all()


def test_mask_figure_is_written(tmp_path):
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[:, 2:5, 2:5] = 3
    masks[0, 0] = 255
    path = tmp_path / "masks.png"
    figures.save_mask_figure(path, np.zeros((2, 8, 8, 3)), masks, masks, ["bg", "a", "b", "c"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.slow  # minutes on 2 cores (a whole crash + resume run); `pytest -m slow` runs it
def test_train_segmentation_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    """`train.py --task segmentation` on a tiny scene folder: crash, resume, artifacts."""
    out, summary = crash_and_resume("segmentation", 64, tmp_path, monkeypatch, capsys)
    assert 0 <= summary["metrics"]["mean_iou"] <= 1
    assert models.load_model(out / "model.keras").output_shape == (None, 64, 64, 11)


def test_head_learns_at_the_multiplied_rate():
    """One AdamW step moves every weight by about lr (Adam's first step is sign-like);
    the layers named seg_head* move 10x as far, as cvnets' DeepLabV3 head does."""
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="layer_1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="seg_head.classifier")(hidden))
    optimizer = recipes.LayerLrAdamW(lr_multipliers={"seg_head": 10.0}, learning_rate=1e-3,
                                     weight_decay=0.0)
    model.compile(optimizer=optimizer, loss="mse")
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    model.train_on_batch(x, np.ones((8, 2), np.float32))
    moved = [np.abs(a - b).max() for a, b in zip(model.get_weights(), before)]
    np.testing.assert_allclose(moved[:2], 1e-3, rtol=0.05)   # layer_1 kernel, bias
    np.testing.assert_allclose(moved[2:], 1e-2, rtol=0.05)   # seg_head kernel, bias
    assert factory.segmentation_lr_multipliers(types.SimpleNamespace(
        segdet=factory.SegDetOptions(), dataset="voc", image_folder=None)) == {"seg_head": 10.0}
    assert factory.segmentation_lr_multipliers(types.SimpleNamespace(
        segdet=factory.SegDetOptions(), dataset="fashion_scenes", image_folder=None)) == {}


def test_backbone_from_a_classifier_trained_here(tmp_path):
    """--backbone-weights run/model.keras: the classifier's backbone layers go over by
    name; the DeepLabV3 head stays new."""
    import keras_mobilevit as kmv

    classifier = kmv.create_model("mobilevitv3_xxs", input_shape=(32, 32, 3), classes=10)
    classifier.save(tmp_path / "model.keras")
    config = types.SimpleNamespace(
        model="mobilevitv3_xxs", num_classes=3, weights=None, from_model=None,
        recipe=types.SimpleNamespace(image_size=64),
        segdet=factory.SegDetOptions(backbone_weights=str(tmp_path / "model.keras")))
    segmenter = factory.build_segmenter(config)
    names = {layer.name for layer in segmenter.layers}
    shared = [layer.name for layer in classifier.layers if layer.weights and layer.name in names
              and [w.shape for w in layer.weights]
              == [w.shape for w in segmenter.get_layer(layer.name).weights]]
    assert len(shared) > 20 and not any(name.startswith("seg_head") for name in shared)
    for name in shared:
        for a, b in zip(classifier.get_layer(name).get_weights(),
                        segmenter.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_the_v1_s_retrained_weights_train_with_their_own_head():
    """--weights voc-v0.2 (mobilevit_s under cvnets v0.2): train.py accepts the name and
    trains with that checkpoint's head (aux head, aux loss); plain v1 keeps the v0.1 head."""
    from training import train

    def config(model, weights):
        return types.SimpleNamespace(model=model, weights=weights)

    assert "voc-v0.2" in train.NAMED_WEIGHTS["segmentation"]
    assert factory.has_aux_head(config("mobilevit_s", "voc-v0.2"))
    assert not factory.has_aux_head(config("mobilevit_s", None))
    assert not factory.has_aux_head(config("mobilevit_s", "voc"))
    assert factory.has_aux_head(config("mobilevitv2_050", "ade20k"))
    parsed, _ = train.parse_args(["--task", "segmentation", "--model", "mobilevit_s",
                                  "--weights", "voc-v0.2"])
    assert parsed.weights == "voc-v0.2" and parsed.segdet.output_stride is None
