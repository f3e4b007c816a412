"""The output-directory policy of a run: what it claims, locks, deletes, compares and records.

- A run writes only into a new or empty folder, or into the folder of an earlier run,
  recognised by its marker file `.keras_mobilevit-run`; any other non-empty folder is
  refused and nothing in it is touched.
- While a run is alive it holds an OS lock (`fcntl.flock`) on that marker file: a second
  run into the same folder is refused. The OS drops the lock when the process ends, even
  by SIGKILL, so a killed run leaves no stale lock.
- `--restart` deletes only the files a run writes (`RUN_FILES`) and the temporaries of
  those files that a killed run left; everything else in the folder stays.
- A rerun resumes from the checkpoints, and refuses when a compared setting changed.

Example:
    >>> with claim("runs/x"):
    ...     prepare("runs/x", config, restart=False)
    >>> read_config("runs/x")["model"]
    'mobilevitv3_xxs'
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
from pathlib import Path

from keras_mobilevit.fileio import TEMP_PREFIX, folder_problem, write_text_atomic
from training import checkpoint
from training.config import TrainConfig
from training.options import compared_keys

MARKER = ".keras_mobilevit-run"
CONFIG, LABELS = "config.json", "labels.txt"
RUN_FILES = (CONFIG, LABELS, "history.csv", "curves.png", "summary.json", "model.keras",
             "predictions.png", "checkpoints", "logs")  # predictions.png: segmentation/detection
# Temporaries of our writers (keras_mobilevit.fileio): ".tmp-<pid>-<file>".
_OUR_TEMPORARY = re.compile(re.escape(TEMP_PREFIX) + r"\d+-(" + "|".join(
    [re.escape(name) for name in RUN_FILES] + [r"ckpt-\d+\.weights\.h5",
                                               re.escape(checkpoint.LATEST)]) + r")")


class RunDirError(Exception):
    """The output directory cannot be used; the message says why and what to do."""


@contextlib.contextmanager
def claim(out):
    """Holds the lock of run folder `out` (created if new) for the block.

    Raises RunDirError when `out` is a foreign non-empty folder or a live run holds it.
    """
    out = check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / MARKER, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise RunDirError(
                f"--output-dir {out} is in use by a training run that is still running "
                f"({owner or 'its marker names no process'}): wait for it to end, or "
                "choose another --output-dir.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"training/train.py run, pid {os.getpid()}\n".encode(), 0)
        yield out
    finally:
        os.close(fd)  # releases the lock


def check_folder(out):
    """`out` as a Path if a run may use it (reads only); else RunDirError saying why.

    Usable: a new folder whose nearest existing parent is a folder, an empty folder, or
    the folder of an earlier run (its marker). train.py checks an explicit --output-dir
    with this before anything is built, and `claim` again when it takes the folder.
    """
    out = Path(out)
    if folder_problem(out):
        raise RunDirError(f"--output-dir {out}: {folder_problem(out)}.")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise RunDirError(
            f"--output-dir {out} is not empty and holds no training run (no {MARKER} "
            "file): choose a new or empty folder; nothing in it was changed. (A run "
            "folder of an older version: create the marker with "
            f"`touch {out / MARKER}`.)")
    return out


def prepare(out, config, restart=False, chief=True):
    """Readies claimed folder `out` for `config`: --restart, the resume check, config.json.

    Under a multi-worker strategy only the chief (`chief=True`) writes.
    """
    out = Path(out)
    if restart and chief:
        remove_run_files(out)
    if (out / CONFIG).exists() and (out / "checkpoints" / checkpoint.LATEST).exists():
        changed = changed_settings(read_config(out), config.to_json())
        if changed:
            raise RunDirError(
                f"{out} holds a run made with other settings ({', '.join(changed)}). "
                "Pass --restart to discard it, or choose another --output-dir.")
    if chief:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        write_text_atomic(out / CONFIG, json.dumps(config.to_json(), indent=1))
        write_text_atomic(out / LABELS, "".join(f"{name}\n" for name in config.class_names))


def remove_run_files(out):
    """Deletes what a run writes in `out` (RUN_FILES and their temporaries), nothing else."""
    remove_stale_temporaries(out)
    for name in RUN_FILES:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def remove_stale_temporaries(out):
    """Deletes the temporaries of run files that a killed run of ours left in `out`."""
    for folder in (Path(out), Path(out) / "checkpoints"):
        if folder.is_dir():
            for path in folder.iterdir():
                if _OUR_TEMPORARY.fullmatch(path.name) and path.is_file():
                    path.unlink(missing_ok=True)


def changed_settings(previous, current):
    """The compared config.json keys whose values differ, sorted ("recipe.lr", ...)."""
    previous, current = _flat(previous), _flat(current)
    keys = compared_keys(TrainConfig)
    return sorted(k for k in keys if k in previous and previous.get(k) != current.get(k))


def _flat(config):
    """{"recipe": {"lr": 1}} -> {"recipe.lr": 1}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def read_config(run_dir):
    """The config.json of run folder `run_dir`, as a dict (FileNotFoundError if none)."""
    return json.loads((Path(run_dir) / CONFIG).read_text(encoding="utf-8"))
