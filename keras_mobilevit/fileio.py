"""Atomic file writes: a file either appears whole under its name or not at all.

Every file the project writes for a user (downloads, converted weights, checkpoints,
`.keras`, `.tflite`, reports) goes through here, so a SIGKILL or a full disk never
leaves a half-written file under the final name. The temporary file sits beside the
target (same filesystem, so `os.replace` is atomic) and keeps the target's suffix
(Keras checks ".keras" / ".weights.h5").

Example:
    >>> with atomic_path("out/model.keras") as tmp:
    ...     model.save(tmp)
    >>> write_text_atomic("out/config.json", "{}")
    >>> folder_problem("notes.txt/out")          # checked before a long run, not after
    'notes.txt is a file, not a folder'
"""

import contextlib
import os
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # every temporary starts with this, then the writer's pid


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`, renamed over `path` if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path, data):
    """Writes `data` (bytes) to `path` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text_atomic(path, text):
    """Writes `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def folder_problem(path):
    """Why `path` cannot be (made) a folder, or None: it or an ancestor is a file."""
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.is_dir():
        return None
    return f"{path} is a file, not a folder" if existing == Path(os.path.abspath(path)) \
        else f"{existing} is a file, not a folder"


def output_file_problem(path):
    """Why file `path` cannot be written later, or None: it is a folder, or its folder
    does not exist or is a file. (Checked before a long run, so that it does not fail at
    its end.)"""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    parent = path.parent
    if not parent.is_dir():
        return f"the folder {parent} does not exist" if not parent.exists() \
            else f"{parent} is a file, not a folder"
    return None
