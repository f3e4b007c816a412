"""Helpers for the training tests: tiny image folders, a tiny model, running the scripts."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `training` lives at the repository root, beside the package
    sys.path.insert(0, str(REPO))


def make_image_folder(root, classes=("cat", "dog"), per_class=8, size=(20, 28),
                      splits=None, formats=("png", "jpg")):
    """Writes small random images as root/[<split>/]<class>/<i>.<fmt>; returns root."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    root = Path(root)
    for split in splits or [None]:
        base = root / split if split else root
        for label, name in enumerate(classes):
            folder = base / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                # A class-dependent brightness, so a model could tell the classes apart.
                image = rng.integers(0, 100, (*size, 3)) + 100 * label
                image = tf.constant(np.clip(image, 0, 255).astype(np.uint8))
                fmt = formats[i % len(formats)]
                encoded = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image)
                (folder / f"{name}_{i}.{fmt}").write_bytes(encoded.numpy())
    return root


def tiny_cnn(config):
    """Stands in for `train.build_model`: a few-parameter CNN that traces in a second.

    Any input size (the multi-scale sampler varies it); pixels in [0, 255] like MobileViT.
    """
    import keras

    return keras.Sequential([
        keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, strides=2), keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(config.num_classes)],
        name="tiny_cnn")


def script_env(**extra):
    """Environment for a training subprocess: quiet TF, the repository importable."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def script_command(script, *args):
    """The command line of training/<script>, or of tests/tiny_train.py (`"tiny"`)."""
    path = REPO / "tests" / "tiny_train.py" if script == "tiny" else REPO / "training" / script
    return [sys.executable, str(path), *map(str, args)]


def run_script(script, *args, timeout=900):
    """Runs `script_command(script, *args)`; returns the CompletedProcess (text output)."""
    return subprocess.run(script_command(script, *args), capture_output=True, text=True,
                          timeout=timeout, env=script_env(), cwd=REPO)


class Crash(Exception):
    """Raised by `run_until` to stop a run the way a crash would."""


def run_until(args, monkeypatch, crash_at=None, **main_kwargs):
    """train.main(args, **main_kwargs), raising `Crash` after `crash_at` training steps;
    returns the number of steps run."""
    from training import callbacks, train

    steps = {"n": 0}
    original = callbacks.EpochStats.on_train_batch_end

    def counting(self, batch, logs=None):
        original(self, batch, logs)
        steps["n"] += 1
        if steps["n"] == crash_at:
            raise Crash

    monkeypatch.setattr(callbacks.EpochStats, "on_train_batch_end", counting)
    train.main([str(a) for a in args], **main_kwargs)
    return steps["n"]
