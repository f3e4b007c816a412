"""Fault tolerance: a run that dies mid-epoch resumes from its last checkpoint.

The in-process test passes a tiny CNN as `train.main(build_model=...)` (the model hook) and
interrupts training with an exception; the others SIGKILL a real process, with the
tiny CNN (fast) and with MobileViT on the bundled data (slow, compares the metrics).
"""

import json
import os
import signal
import subprocess
import time

import keras
import pytest

import training_utils
from training_utils import Crash, run_until
from training import checkpoint
from training import train

TINY_ARGS = ["--image-size", "16", "--batch-size", "4", "--epochs", "3",
             "--steps-per-epoch", "4", "--checkpoint-every", "2", "--no-multi-scale",
             "--warmup-steps", "2", "--ema-momentum", "0.5"]


def _run(folder, out, monkeypatch, crash_at=None):
    """train.main on the tiny folder, raising Crash after `crash_at` training steps."""
    return run_until(["--image-folder", folder, "--output-dir", out, *TINY_ARGS],
                     monkeypatch, crash_at, build_model=training_utils.tiny_cnn)


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
    with pytest.raises(SystemExit, match=r"other settings \(recipe\.ema_momentum\)"):
        train.main(["--image-folder", str(folder), "--output-dir", str(out),
                    *TINY_ARGS[:-1], "0.9"], build_model=training_utils.tiny_cnn)


@pytest.mark.parametrize("dies", ["after", "before"])
def test_kill_right_after_an_epoch_end_checkpoint_keeps_the_history_row(
        tmp_path, monkeypatch, dies):
    """The epoch's last step is a checkpoint step (4 of 4, every 2): a kill right after
    that checkpoint must not lose the epoch's row (issue 11, item 6); a kill between the
    row and the checkpoint must not leave the row twice (the rerun redoes the epoch)."""
    folder = training_utils.make_image_folder(tmp_path / "images", per_class=10)
    out = tmp_path / "run"
    original = checkpoint.CheckpointManager.save

    def save_then_die(self, model, step):
        if step == 4 and dies == "before":
            raise Crash
        original(self, model, step)
        if step == 4:
            raise Crash

    monkeypatch.setattr(checkpoint.CheckpointManager, "save", save_then_die)
    with pytest.raises(Crash):
        _run(folder, out, monkeypatch)
    assert [row["epoch"] for row in _history(out)] == [0]  # the row came first
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["checkpoints"][0]["step"] == (4 if dies == "after" else 2)
    monkeypatch.setattr(checkpoint.CheckpointManager, "save", original)
    _run(folder, out, monkeypatch)
    assert [row["epoch"] for row in _history(out)] == [0, 1, 2]
    reference = tmp_path / "reference"
    _run(folder, reference, monkeypatch)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if "logs" not in p.parts}
    assert files == {p.relative_to(reference).as_posix() for p in reference.rglob("*")
                     if "logs" not in p.parts}


def _history(out):
    from training import reporting
    return reporting.read_history(out / "history.csv")


def test_cli_rejects_unknown_dataset_quickly():
    start = time.perf_counter()
    result = training_utils.run_script("train.py", "--dataset", "not_a_dataset")
    assert result.returncode != 0
    assert "Unknown TFDS dataset 'not_a_dataset'" in result.stderr
    assert time.perf_counter() - start < 60


def _wait_for_checkpoint(out, process, total, timeout=600):
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if latest.exists():
            step = json.loads(latest.read_text())["checkpoints"][0]["step"]
            if 0 < step < total:
                return step
        time.sleep(0.05)
    raise AssertionError("no mid-run checkpoint appeared")


def _kill_after_checkpoint(script, args, out, total, while_alive=None):
    """Starts the script, SIGKILLs it once a mid-run checkpoint exists; returns its step.

    while_alive: called before the kill, while the run is still training.
    """
    process = subprocess.Popen(
        training_utils.script_command(script, *args, "--output-dir", out),
        env=training_utils.script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        step = _wait_for_checkpoint(out, process, total)
        if while_alive:
            while_alive()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    if while_alive:  # it kept training meanwhile: the checkpoint it left
        step = json.loads((out / "checkpoints" / "latest.json").read_text())[
            "checkpoints"][0]["step"]
    return step


def test_sigkill_and_rerun_resumes_tiny_model(tmp_path):
    folder = training_utils.make_image_folder(tmp_path / "images", per_class=10)
    args = ["--image-folder", folder, "--image-size", "16", "--batch-size", "4",
            "--epochs", "2", "--steps-per-epoch", "400", "--checkpoint-every", "20"]
    out = tmp_path / "run"

    def second_run_is_refused():  # README: "A second run into the folder of a run ..."
        with pytest.raises(SystemExit, match="in use by a training run that is still"):
            train.main([*map(str, args), "--output-dir", str(out)],
                       build_model=training_utils.tiny_cnn)

    step = _kill_after_checkpoint("tiny", args, out, total=800,
                                  while_alive=second_run_is_refused)
    resumed = training_utils.run_script("tiny", *args, "--output-dir", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from step {step} of 800" in resumed.stdout
    assert [row["epoch"] for row in _history(out)] == [0, 1]
    assert json.loads((out / "summary.json").read_text())["resumed"]
    assert not list(out.rglob(".tmp-*"))


@pytest.mark.slow
def test_sigkill_and_rerun_resumes(tmp_path):
    """Real model, real SIGKILL mid-epoch; the rerun resumes and ends like an
    uninterrupted run (the bundled data: 2 epochs of 100 steps, 3,000 held-out images)."""
    args = ["--data-dir", tmp_path / "tfds", "--image-size", "32", "--batch-size", "32",
            "--epochs", "2", "--steps-per-epoch", "100", "--checkpoint-every", "40",
            "--warmup-steps", "20"]
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    step = _kill_after_checkpoint("train.py", args, killed, total=200)

    resumed = training_utils.run_script("train.py", *args, "--output-dir", killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from step {step} of 200" in resumed.stdout
    full = training_utils.run_script("train.py", *args, "--output-dir", reference)
    assert full.returncode == 0, full.stderr[-3000:]

    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((reference / "summary.json").read_text())
    assert [row["epoch"] for row in _history(killed)] == [0, 1]
    assert a["resumed"] and not b["resumed"] and a["steps"] == b["steps"] == 200
    # The same amount of training gives comparable (not identical: the shuffle is
    # reseeded on resume) held-out accuracy; a restart from scratch would lag far behind.
    assert b["metrics"]["accuracy"] > 0.5
    assert abs(a["metrics"]["accuracy"] - b["metrics"]["accuracy"]) < 0.08
    assert not list(killed.rglob(".tmp-*"))  # the rerun cleared the kill's temporaries
