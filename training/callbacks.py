"""Keras callbacks that Keras does not ship.

Example:
    >>> stats = EpochStats(images_per_step=128)
    >>> model.fit(ds, callbacks=[stats, keras.callbacks.CSVLogger("history.csv")])
    >>> stats.images_per_sec()                 # training images/s, validation excluded
"""

import time

import keras


class EpochStats(keras.callbacks.Callback):
    """Adds `lr` and `images_per_sec` to each epoch's logs (put it before CSVLogger).

    Time runs from the start of the epoch to the start of validation, so the rate is
    that of the training steps alone (the first epoch also includes tracing).
    """

    def __init__(self, images_per_step):
        super().__init__()
        self.images_per_step = images_per_step
        self.epochs = []  # (images, seconds, first epoch of a fit call) per epoch

    def images_per_sec(self):
        """Training images/s, leaving out first epochs (tracing) when there are others."""
        warm = [(i, s) for i, s, first in self.epochs if not first] or [
            (i, s) for i, s, _ in self.epochs]
        seconds = sum(s for _, s in warm)
        return sum(i for i, _ in warm) / seconds if seconds else None

    def on_train_begin(self, logs=None):
        self._first = True

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps, self._train_end = time.perf_counter(), 0, None

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = (self._train_end or time.perf_counter()) - self._start
        images = self._steps * self.images_per_step
        self.epochs.append((images, seconds, self._first))
        self._first = False
        if logs is not None:
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logs["images_per_sec"] = images / max(seconds, 1e-9)


class KeepTrainingWeights(keras.callbacks.Callback):
    """Undoes the EMA swap that `fit` makes when it returns.

    With `use_ema`, Keras copies the EMA averages into the model at the end of every
    `fit`. That is right at the end of training, wrong when training continues in
    another `fit` call (after a mid-epoch resume): this restores the raw weights.
    """

    def on_epoch_end(self, epoch, logs=None):
        self._weights = [v.numpy() for v in self.model.trainable_variables]

    def on_train_end(self, logs=None):
        for variable, value in zip(self.model.trainable_variables, self._weights):
            variable.assign(value)
