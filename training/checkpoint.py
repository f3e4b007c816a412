"""Crash-safe training state: periodic checkpoints that a rerun resumes from.

A checkpoint is one `.weights.h5` file holding the model weights and the whole
optimizer state (moments, EMA averages, step counter); the global step is in its name
and in `latest.json`. Every file is written under a temporary name and renamed into
place (`os.replace` is atomic), and `latest.json` is replaced only after the weights
file is complete, so a SIGKILL at any moment leaves the previous checkpoint usable.

Keras' BackupAndRestore is not used: it overwrites one weights file in place (a kill
mid-write corrupts it), writes its metadata as a second non-atomic step, and resumes
from the start of the interrupted epoch rather than from the saved step.

Example:
    >>> manager = CheckpointManager("runs/x/checkpoints")
    >>> step = manager.restore(model)          # 0 when there is nothing to resume
    >>> model.fit(..., callbacks=[CSVLogger(...),          # before: see CheckpointCallback
    ...                           CheckpointCallback(manager, step, 500, steps_per_epoch)])
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras

from keras_mobilevit.fileio import atomic_path, write_text_atomic

LATEST = "latest.json"


class CheckpointManager:
    """Saves and restores `ckpt-<step>.weights.h5` files in `directory`, keeping `keep`.

    Under a multi-worker strategy every worker calls `save` (reading variables may need
    all of them) but only the chief (`write=True`) keeps files; the others write to a
    scratch folder that is deleted.
    """

    def __init__(self, directory, keep=2, write=True):
        self.directory = Path(directory)
        self.keep = keep
        self.write = write

    def checkpoints(self):
        """[(step, path)] listed in latest.json, newest first."""
        try:
            entries = json.loads((self.directory / LATEST).read_text())["checkpoints"]
        except FileNotFoundError:
            return []
        return [(e["step"], self.directory / e["file"]) for e in entries]

    def restore(self, model):
        """Loads the newest readable checkpoint into `model` (compiled); returns its step."""
        for step, path in self.checkpoints():
            try:
                if not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(path)
                return step
            except (OSError, ValueError) as error:  # missing or unreadable: try older
                print(f"Skipping unreadable checkpoint {path}: {error}")
        return 0

    def save(self, model, step):
        """Writes the checkpoint of `step` and drops those beyond `keep`."""
        name = f"ckpt-{step:09d}.weights.h5"
        if not self.write:
            scratch = tempfile.mkdtemp()
            try:
                model.save_weights(os.path.join(scratch, name))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / name) as tmp:
            model.save_weights(tmp)
        kept = [(step, self.directory / name)]
        kept += [(s, p) for s, p in self.checkpoints() if s != step][: self.keep - 1]
        write_text_atomic(self.directory / LATEST, json.dumps(
            {"checkpoints": [{"step": s, "file": p.name} for s, p in kept]}, indent=1))
        for path in self.directory.glob("ckpt-*.weights.h5"):
            if path not in {p for _, p in kept}:
                path.unlink(missing_ok=True)


class CheckpointCallback(keras.callbacks.Callback):
    """Saves every `every_steps` training steps and at the end of every epoch.

    The step that ends an epoch is saved only at the epoch's end, and the callback must
    come after the one writing the history row (CSVLogger): a checkpoint then never
    marks an epoch as done before its validation and history row are written, so a
    SIGKILL in between cannot make the rerun skip that row.
    """

    def __init__(self, manager, initial_step, every_steps, steps_per_epoch):
        super().__init__()
        self.manager = manager
        self.step = initial_step
        self.saved_step = initial_step
        self.every_steps = every_steps
        self.steps_per_epoch = steps_per_epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        epoch_end = self.step % self.steps_per_epoch == 0  # saved in on_epoch_end
        if self.every_steps and self.step % self.every_steps == 0 and not epoch_end:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save()

    def _save(self):
        if self.step != self.saved_step:
            self.manager.save(self.model, self.step)
            self.saved_step = self.step
