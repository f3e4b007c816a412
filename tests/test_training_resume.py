"""Fault tolerance: a run that dies mid-epoch resumes from its last checkpoint.

The in-process test swaps `train.build_model` (the model hook) for a tiny CNN and
interrupts training with an exception; the slow test SIGKILLs the real script.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

import training_utils
from training import callbacks as cb
from training import data, train

TINY_ARGS = ["--image-size", "16", "--batch-size", "4", "--epochs", "3",
             "--steps-per-epoch", "4", "--checkpoint-every", "2", "--no-multi-scale",
             "--warmup-steps", "2", "--ema-momentum", "0.5"]


def tiny_cnn(config):
    size = config["recipe"]["image_size"]
    return keras.Sequential([
        keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, strides=2), keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(config["num_classes"])])


class Crash(Exception):
    pass


def _run(folder, out, monkeypatch, crash_at=None):
    """train.main on the tiny folder, raising Crash after `crash_at` training steps."""
    monkeypatch.setattr(train, "build_model", tiny_cnn)
    steps = {"n": 0}
    original = cb.EpochStats.on_train_batch_end

    def counting(self, batch, logs=None):
        original(self, batch, logs)
        steps["n"] += 1
        if steps["n"] == crash_at:
            raise Crash

    monkeypatch.setattr(cb.EpochStats, "on_train_batch_end", counting)
    train.main(["--image-folder", str(folder), "--output-dir", str(out), *TINY_ARGS])
    return steps["n"]


def test_resume_after_a_crash_mid_epoch(tmp_path, monkeypatch, capsys):
    folder = training_utils.make_image_folder(tmp_path / "images", per_class=10)
    out = tmp_path / "run"
    with pytest.raises(Crash):
        _run(folder, out, monkeypatch, crash_at=7)  # epoch 2, step 3 of 4
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["checkpoints"][0]["step"] == 6  # every 2 steps (the crash came at 7)

    steps = _run(folder, out, monkeypatch)
    assert "Resuming from step 6 of 12" in capsys.readouterr().out
    assert steps == 6  # only what was left: 2 to finish epoch 2, then 4 for epoch 3
    history = [json.dumps(row) for row in _history(out)]
    assert [json.loads(r)["epoch"] for r in history] == [0, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] and summary["ema"] and summary["steps"] == 12
    assert keras.models.load_model(out / "model.keras").output_shape == (None, 2)

    # A finished run rerun: nothing to train, the same artifacts are written again.
    assert _run(folder, out, monkeypatch) == 0
    # Other settings in the same folder are refused.
    with pytest.raises(SystemExit, match="other settings"):
        train.main(["--image-folder", str(folder), "--output-dir", str(out),
                    *TINY_ARGS[:-1], "0.9"])


def _history(out):
    from training import reporting
    return reporting.read_history(out / "history.csv")


def test_cli_rejects_unknown_dataset_quickly():
    start = time.perf_counter()
    result = training_utils.run_script("train.py", "--dataset", "not_a_dataset")
    assert result.returncode != 0
    assert "Unknown TFDS dataset 'not_a_dataset'" in result.stderr
    assert time.perf_counter() - start < 60


def _wait_for_checkpoint(out, process, timeout=300):
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if latest.exists():
            step = json.loads(latest.read_text())["checkpoints"][0]["step"]
            if 0 < step < 12:
                return step
        time.sleep(0.2)
    raise AssertionError("no mid-run checkpoint appeared")


@pytest.mark.slow
def test_sigkill_and_rerun_resumes(tmp_path):
    """Real model, real SIGKILL; the rerun resumes and ends like an uninterrupted run."""
    folder = training_utils.make_image_folder(tmp_path / "images", per_class=10)
    args = ["--image-folder", folder, "--model", "mobilevitv3_xxs", *TINY_ARGS,
            "--image-size", "32"]
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    command = [sys.executable, str(training_utils.REPO / "training" / "train.py"),
               *map(str, args), "--output-dir", str(killed)]
    process = subprocess.Popen(command, env=training_utils.script_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        step = _wait_for_checkpoint(killed, process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL

    resumed = training_utils.run_script("train.py", *args, "--output-dir", killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from step {step} of 12" in resumed.stdout
    full = training_utils.run_script("train.py", *args, "--output-dir", reference)
    assert full.returncode == 0, full.stderr[-3000:]

    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((reference / "summary.json").read_text())
    assert [row["epoch"] for row in _history(killed)] == [0, 1, 2]
    assert a["resumed"] and not b["resumed"]
    # Same amount of training: comparable (not identical: the shuffle differs) results.
    assert abs(a["metrics"]["loss"] - b["metrics"]["loss"]) < 0.5 * b["metrics"]["loss"]
    assert not list(killed.rglob(".tmp-*"))  # the rerun cleared the kill's temporaries
    assert data.open_source(image_folder=folder).num_examples("train") > 0
