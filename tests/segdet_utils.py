"""Helpers for the segmentation/detection training tests: a tiny scene folder, crashing
train.main after some steps."""

import json

from training_utils import Crash, run_until
from training.datasets.fashion_scenes import make_scenes


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
