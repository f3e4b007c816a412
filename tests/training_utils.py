"""Helpers for the training tests: tiny image folders and running the CLI scripts."""

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


def script_env(**extra):
    """Environment for a training subprocess: quiet TF, the repository importable."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_script(script, *args, timeout=600, **popen_kwargs):
    """Runs training/<script> with `args`; returns the CompletedProcess (text output)."""
    return subprocess.run(
        [sys.executable, str(REPO / "training" / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=script_env(), cwd=REPO,
        **popen_kwargs)
