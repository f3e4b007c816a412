"""Helpers for the segmentation/detection tests: a tiny scene folder, crashing
train.main after some steps, stand-in SSD detector and segmenter (a few convs), anchors."""

import json

import keras
import numpy as np

from training.datasets.fashion_scenes import make_scenes
from training_utils import Crash, run_until


def tiny_detector(size=32, classes=4, anchors=48, seed=1):
    """Pixels [0, 255] (size x size) -> box_regressions (1, A, 4), class_logits (1, A, C)
    (background + C - 1 classes; logits of std ~2, so many anchors score high) on a
    4x4 grid, `anchors` // 16 anchors a cell."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(16, 3, strides=size // 8, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)  # 4x4
    per_cell = anchors // 16
    boxes = keras.layers.Reshape((anchors, 4))(keras.layers.Conv2D(per_cell * 4, 1)(x))
    logits = keras.layers.Conv2D(per_cell * classes, 1,
                                 kernel_initializer=keras.initializers.RandomNormal(0, 2))(x)
    logits = keras.layers.Reshape((anchors, classes))(logits)
    return keras.Model(inp, {"box_regressions": boxes, "class_logits": logits})


def tiny_two_level_detector(size=32, classes=4, seed=1):
    """Like `tiny_detector`, with two levels whose box regressions span very different
    ranges and are concatenated, as SSDLite's six levels are (4x4x3 + 2x2x3 = 60
    anchors). Each level's boxes end in an int8 fake-quant of their own range (as the
    QAT twin's `QSSDPrediction` does): +-0.08 on the 4x4 level, +-5 on the 2x2 one."""
    from tflite.qat_layers import FakeQuant

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(16, 3, strides=size // 8, padding="same", activation="relu")(x)
    fine = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)  # 4x4
    coarse = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(fine)
    boxes, logits = [], []
    for level, spread, bound in ((fine, 0.3, 0.08), (coarse, 30.0, 5.0)):
        rows = level.shape[1] * level.shape[2] * 3
        init = keras.initializers.RandomNormal(0, spread)
        y = keras.layers.Conv2D(12, 1, kernel_initializer=init)(level)
        y = FakeQuant(fixed_range=(-bound, bound))(y)
        boxes.append(keras.layers.Reshape((rows, 4))(y))
        logits.append(keras.layers.Reshape((rows, classes))(keras.layers.Conv2D(
            3 * classes, 1, kernel_initializer=keras.initializers.RandomNormal(0, 2))(level)))
    return keras.Model(inp, {"box_regressions": keras.layers.Concatenate(1)(boxes),
                             "class_logits": keras.layers.Concatenate(1)(logits)})


def tiny_segmenter(size=64, classes=5, align_corners=False, seed=2, name="tiny_segmenter"):
    """Pixels [0, 255] -> stride-16 logits (std ~1) -> bilinear resize to the input
    (keras_mobilevit's PatchResize, torch's rule as constant matmuls), the way
    keras_mobilevit's DeepLabV3 ends."""
    from keras_mobilevit import layers as kmv_layers

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(x)
    for _ in range(4):
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    logits = keras.layers.Conv2D(classes, 1,
                                 kernel_initializer=keras.initializers.RandomNormal(0, 3))(x)
    out = kmv_layers.PatchResize(align_corners=align_corners)([logits, inp])
    return keras.Model(inp, out, name=name)


def tiny_anchors(count=48, seed=0):
    """`count` random normalized anchors, cx, cy, w, h."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, (count, 2))
    sizes = rng.uniform(0.1, 0.5, (count, 2))
    return np.concatenate([centres, sizes], 1).astype("float32")


def scene_folder(root, count=12, size=48):
    """Exported Fashion-MNIST scenes: images/, masks/, labels.txt and annotations.json."""
    make_scenes.export(root, "train", count, size=size)
    (root / "labels.txt").write_text("\n".join(["background"] + make_scenes.CLASS_NAMES))
    return root


def crash_and_resume(task, image_size, tmp_path, monkeypatch, capsys):
    """`train.py --task TASK` on a tiny scene folder, crashed after 3 of 4 steps and run
    again: checks the resume, returns (run folder, summary)."""
    out = tmp_path / "run"
    args = ["--task", task, "--image-folder", scene_folder(tmp_path / "scenes"),
            "--output-dir", out, "--image-size", image_size, "--batch-size", 2,
            "--epochs", 2, "--steps-per-epoch", 2, "--checkpoint-every", 1,
            "--warmup-steps", 1]
    try:
        run_until(args, monkeypatch, crash_at=3)
    except Crash:
        pass
    else:
        raise AssertionError("the first run did not crash")
    # the crash comes before step 3's checkpoint: resume at 2, train the last 2 steps
    assert run_until(args, monkeypatch) == 2
    assert "Resuming from step 2 of 4" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task and summary["resumed"]
    for name in ("model.keras", "history.csv", "curves.png", "predictions.png",
                 "labels.txt", "config.json", "summary.json"):
        assert (out / name).is_file(), name
    assert (out / "labels.txt").read_text().splitlines()[:2] == ["background", "T-shirt/top"]
    return out, summary
