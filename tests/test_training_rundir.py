"""The run folder: argument checks, what --restart deletes, the lock, labels, plugins.

The README's promises about a run's folder (`PROMISES`) are checked word for word
against README.md, and each is exercised by a test here or in test_training_resume.py:
"second" by test_a_live_run_holds_the_folder_and_a_dead_one_does_not,
test_sigkill_and_rerun_resumes_tiny_model (refused while alive, resumed after SIGKILL)
and test_resume_after_a_crash_mid_epoch (a finished run rerun); "killed" by
test_kill_right_after_an_epoch_end_checkpoint_keeps_the_history_row (the same files as
an uninterrupted run) and the SIGKILL tests.
"""

import ast
import json
import re
from pathlib import Path

import pytest

import training_utils
from keras_mobilevit.fileio import TEMP_PREFIX
from training import checkpoint, config, options, rundir, train

REPO = Path(__file__).resolve().parents[1]
PROMISES = {
    "deletes": "`--restart` deletes only the files a run writes (`config.json`, "
               "`labels.txt`, `history.csv`, `curves.png`, `summary.json`, `model.keras`, "
               "`predictions.png`, `checkpoints/`, `logs/` and their `.tmp-<pid>-` "
               "temporaries)",
    "foreign": "A folder that is not empty and has no `.keras_mobilevit-run` marker is "
               "refused, and nothing in it is touched.",
    "second": "A second run into the folder of a run that is still alive is refused (an OS "
              "lock on the marker, which the OS drops when a run dies, even by SIGKILL); a "
              "second run after the first has ended resumes it, or, when the first "
              "finished, writes the same artifacts again.",
    "killed": "A killed run keeps its last checkpoint (every `--checkpoint-every` steps and "
              "at each epoch end, after that epoch's `history.csv` row), and rerunning the "
              "same command resumes from it and ends with the same files as an "
              "uninterrupted run.",
    "arguments": "Bad arguments (`--epochs 0`, `--batch-size -1`, an `--output-dir` that "
                 "is a file, ...) stop the command with a one-line error and exit code 2 "
                 "before anything is built or written; a model they cannot make "
                 "(`--image-size 16`) stops it with exit code 2 before the folder is "
                 "touched.",
}
TINY = ["--image-size", "16", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch",
        "2", "--no-multi-scale", "--warmup-steps", "0"]


def test_readme_states_the_promises():
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    for key, sentence in PROMISES.items():
        assert sentence in readme, key


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--epochs", "-1"],
                                 ["--steps-per-epoch", "-3"], ["--batch-size", "0"],
                                 ["--batch-size", "-1"], ["--image-size", "0"],
                                 ["--checkpoint-every", "-5"], ["--epochs", "two"],
                                 ["--output-dir", "FILE"], ["--output-dir", "FILE/run"],
                                 ["--from", "missing.keras"],
                                 ["--task", "segmentation", "--epochs", "0"],
                                 ["--task", "detection", "--batch-size", "-1"],
                                 ["--task", "detection", "--output-dir", "FILE"]])
def test_bad_arguments_exit_2_before_anything_is_written(bad, tmp_path, capsys):
    assert PROMISES["arguments"]
    (tmp_path / "file").write_text("mine")
    bad = [arg.replace("FILE", str(tmp_path / "file")) for arg in bad]
    out = tmp_path / "out"
    argv = ["--output-dir", str(out), *bad] if "--output-dir" not in bad else bad
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in error and bad[-2] in error
    assert not out.exists() and (tmp_path / "file").read_text() == "mine"


def test_a_model_the_arguments_cannot_build_is_an_argument_error_before_restart(
        tmp_path, capsys):
    """`--image-size 16` (MobileViT needs 32) was a ValueError traceback after the folder
    was claimed, config.json written and, with --restart, the earlier run deleted."""
    assert PROMISES["arguments"]
    folder = training_utils.make_image_folder(tmp_path / "images", per_class=4)
    out = tmp_path / "run"
    train.main(["--image-folder", str(folder), "--output-dir", str(out), *TINY],
               build_model=training_utils.tiny_cnn)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
              if p.is_file()}
    for target in (out, tmp_path / "new"):
        with pytest.raises(SystemExit) as exit_info:
            train.main(["--image-folder", str(folder), "--output-dir", str(target), *TINY,
                        "--restart"])  # TINY's --image-size 16, the real model
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert "error: the model cannot be built" in error and "at least 32 pixels" in error
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file()} == before
    assert not (tmp_path / "new").exists()


def _user_folder(root):
    """A folder of the user's own files that happen to share names with run files."""
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "mine.txt").write_text("keep")
    (root / "history.csv").write_text("my,own\n1,2\n")
    (root / ".tmp-notes").write_text("keep")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("extra", [["--restart"], ["--restart", "--epochs", "0"], [],
                                   ["--task", "segmentation", "--restart"]])
def test_a_folder_that_is_not_a_run_is_refused_untouched(tmp_path, extra, capsys):
    """Issue 11 item 1: `--restart` deleted the user's logs/, history.csv and .tmp-*
    files (even when a later flag was bad); without it, .tmp-* files went."""
    assert PROMISES["foreign"]
    folder = training_utils.make_image_folder(tmp_path / "images", per_class=4)
    out = tmp_path / "mine"
    before = _user_folder(out)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--image-folder", str(folder), "--output-dir", str(out), *TINY, *extra],
                   build_model=training_utils.tiny_cnn)
    assert exit_info.value.code == 2  # an argument error, before the data is even opened
    error = capsys.readouterr().err
    assert ("--epochs" in error) if "--epochs" in extra else ("holds no training run" in error)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert (out / "history.csv").read_text() == "my,own\n1,2\n"


def test_restart_deletes_only_run_files_and_labels_are_saved(tmp_path):
    assert PROMISES["deletes"]
    folder = training_utils.make_image_folder(tmp_path / "images", per_class=4)
    out = tmp_path / "run"
    args = ["--image-folder", str(folder), "--output-dir", str(out), *TINY]
    train.main(args, build_model=training_utils.tiny_cnn)
    assert (out / "labels.txt").read_text() == "cat\ndog\n"
    assert json.loads((out / "config.json").read_text())["class_names"] == ["cat", "dog"]
    mine = [out / "notes.txt", out / ".tmp-notes", out / ".tmp-12-notes.txt",
            out / "checkpoints" / ".tmp-mine"]
    stale = [out / ".tmp-999-model.keras", out / "checkpoints" / ".tmp-999-latest.json",
             out / "checkpoints" / ".tmp-999-ckpt-000000002.weights.h5"]

    def plant():
        for path in mine:
            path.write_text("keep")
        for path in stale:
            path.write_text("killed mid-write")

    plant()  # a rerun clears our stale temporaries only, never a foreign `.tmp-*`
    train.main(args, build_model=training_utils.tiny_cnn)
    assert [p.read_text() for p in mine] == ["keep"] * len(mine)
    assert not any(p.exists() for p in stale)
    plant()
    (out / "history.csv").write_text("epoch,loss\n5,1.0\n")  # the old run's files go
    (out / "predictions.png").write_bytes(b"a segmentation run's figure")
    train.main([*args, "--restart"], build_model=training_utils.tiny_cnn)
    assert not (out / "predictions.png").exists()
    mine.remove(out / "checkpoints" / ".tmp-mine")  # inside checkpoints/: deleted with it
    assert [p.read_text() for p in mine] == ["keep"] * len(mine)
    assert not any(p.exists() for p in stale)
    assert "5,1.0" not in (out / "history.csv").read_text()


def test_the_readme_names_exactly_the_files_restart_deletes():
    """The file list of the "deletes" promise is `rundir.RUN_FILES`, which holds every
    file a run of any task writes (segmentation / detection: predictions.png)."""
    from training.segdet import detection, segmentation

    listed = re.findall(r"`([^`]+)`", PROMISES["deletes"].split("(", 1)[1])
    assert [name.rstrip("/") for name in listed[:-1]] == list(rundir.RUN_FILES)
    assert listed[-1] == f"{TEMP_PREFIX}<pid>-"
    assert segmentation.FIGURE in rundir.RUN_FILES and detection.FIGURE in rundir.RUN_FILES
    readme = " ".join((REPO / "training" / "README.md").read_text(encoding="utf-8").split())
    for name in rundir.RUN_FILES:  # and the run-folder table documents each of them
        assert f"`{name}" in readme, name


def test_a_live_run_holds_the_folder_and_a_dead_one_does_not(tmp_path):
    assert PROMISES["second"]
    out = tmp_path / "run"
    with rundir.claim(out):
        with pytest.raises(rundir.RunDirError, match="still running"):
            with rundir.claim(out):
                pass
    with rundir.claim(out):  # released on exit; the kill case: test_training_resume
        pass


def test_class_names_of_the_data():
    class Source:
        class_names = ["0", "1", "2"]

    assert config.class_names(Source()) == ["class_0", "class_1", "class_2"]
    Source.class_names = ["T-shirt/top", "Trouser"]
    assert config.class_names(Source()) == ["T-shirt/top", "Trouser"]


def test_bundled_dataset_gives_the_fashion_mnist_names(tmp_path):
    from training import data

    source = data.open_source(data_dir=str(tmp_path / "tfds"))
    assert config.class_names(source) == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
        "Sneaker", "Bag", "Ankle boot"]


def test_every_flag_is_a_config_field_and_a_config_json_key():
    parser = train.build_parser()
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    fields = set(config.TrainConfig.__dataclass_fields__) | set(
        config.recipes.Recipe.__dataclass_fields__) | set(
        config.SegDetOptions.__dataclass_fields__)
    assert dests <= fields
    assert "lr" in dests and "task" in dests and "restart" in dests
    assert "recipe.lr" in options.compared_keys(config.TrainConfig)
    assert "output_dir" not in options.compared_keys(config.TrainConfig)


def test_training_never_imports_tflite():
    for path in sorted((REPO / "training").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "tflite" for n in names), path


def test_plugins_are_found_by_entry_point(tmp_path, monkeypatch):
    (tmp_path / "fake_plugin.py").write_text("def main(argv):\n    return ['ran', *argv]\n")
    info = tmp_path / "fake_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{train.PLUGIN_GROUP}]\nfake = fake_plugin:main\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert train.load_plugin("fake")(["--x"]) == ["ran", "--x"]
    with pytest.raises(SystemExit, match="not installed: pip install -e '.\\[tflite\\]'"):
        train.load_plugin("no_such_plugin")

    calls = []
    monkeypatch.setattr(train, "load_plugin", lambda name: lambda argv: calls.append(
        (name, argv)))
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    train.main(["--qat", "--from", str(model)])
    assert calls == [("qat", ["--qat", "--from", str(model)])]


def test_setup_py_registers_the_qat_plugin():
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    assert f'"{train.PLUGIN_GROUP}": ["qat = tflite.qat_train:main"]' in setup


def test_checkpoint_skips_the_epoch_end_step_until_the_epoch_ends():
    saved = []

    class Manager:
        def save(self, model, step):
            saved.append(step)

    callback = checkpoint.CheckpointCallback(Manager(), 0, every_steps=2, steps_per_epoch=4)
    for batch in range(4):
        callback.on_train_batch_end(batch)
    assert saved == [2]  # step 4 ends the epoch: saved after its history row
    callback.on_epoch_end(0)
    assert saved == [2, 4]


@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--image-size", "-1"],
                                 ["--crop-fraction", "0"]])
def test_evaluate_rejects_bad_numbers_with_exit_2(bad, capsys):
    from training import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["model.keras", *bad])
    assert exit_info.value.code == 2 and bad[0] in capsys.readouterr().err


@pytest.mark.parametrize("command, flag", [("evaluate", "--json"),
                                           ("benchmark", "--markdown"),
                                           ("benchmark", "--json")])
@pytest.mark.parametrize("target", ["missing/out.txt", "folder"])
def test_report_paths_are_checked_before_the_long_part(command, flag, target, tmp_path, capsys):
    """Siblings of issue 11 item 5: a --json / --markdown path in a missing folder (or
    naming a folder) failed with a traceback after the whole evaluation or benchmark."""
    import importlib

    (tmp_path / "folder").mkdir()
    module = importlib.import_module(f"training.{command}")
    argv = (["--model", "mobilevitv3_xxs"] if command == "evaluate" else []) + [
        flag, str(tmp_path / target)]
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
