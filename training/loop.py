"""The training loop: build, resume, fit epoch by epoch, evaluate, save the artifacts.

Everything task-specific (model, loss, metrics, datasets) comes from the run's
`tasks.Task`; the output folder has been claimed and prepared (training/rundir.py).

Example:
    >>> task, strategy = tasks.get_task(config.task), tf.distribute.get_strategy()
    >>> model = build(config, task, strategy)       # before the folder is claimed
    >>> summary = train(config, task, source, strategy, Path("runs/x"), chief=True,
    ...                 model=model)
"""

import functools
import json
import time

import keras
import tensorflow as tf

from keras_mobilevit.fileio import atomic_path, write_text_atomic
from training import callbacks as cb
from training import checkpoint, models, reporting


def build(config, task, strategy, build_model=None):
    """The compiled model of the run, in `strategy`'s scope (ValueError: the arguments
    cannot make it, e.g. an image size the model cannot take).

    build_model: `config -> uncompiled keras.Model`, instead of `task.build_model`.
    """
    with strategy.scope():
        model = (build_model or task.build_model)(config)
        models.compile_model(model, config, task.make_loss(config), task.make_metrics(config),
                             task.lr_multipliers(config))
    return model


def train(config, task, source, strategy, out, chief, model, verbose="auto"):
    """Trains `model` (`build`; resuming if `out` has checkpoints), evaluates, saves;
    returns the summary."""
    start = time.time()
    manager = checkpoint.CheckpointManager(out / "checkpoints", write=chief)
    with strategy.scope():
        step = manager.restore(model)
    resumed = step > 0
    if resumed:
        print(f"Resuming from step {step} of {config.total_steps} ({manager.directory})")
    if chief:
        reporting.trim_history(out / "history.csv", step // config.steps_per_epoch)
    eval_ds = task.eval_dataset(source, config.pipeline_settings())
    stats = cb.EpochStats(config.images_per_step)
    callbacks = _callbacks(config, out, chief, manager, step, stats)
    _fit(model, config, task, source, strategy, eval_ds, step, callbacks,
         verbose if chief else 0)

    ema = model.optimizer.use_ema
    print("Evaluating the " + ("EMA" if ema else "final") + " weights on "
          f"{source.eval_split} ...")
    metrics = model.evaluate(eval_ds, return_dict=True, verbose=verbose if chief else 0)
    export = task.export_model(model)
    if chief:
        metrics.update(task.finish(export, config, source, out))
    history = reporting.read_history(out / "history.csv") if chief else []
    summary = dict(
        task=config.task, model=config.model, dataset=config.dataset, eval_split=source.eval_split,
        eval_examples=source.num_examples(source.eval_split), metrics=metrics, ema=ema,
        raw_accuracy=history[-1].get("val_accuracy") if history else None,
        images_per_sec=stats.images_per_sec(),
        wall_seconds=time.time() - start, resumed=resumed, steps=config.total_steps,
        model_path=str(out / "model.keras"), history_path=str(out / "history.csv"),
        plot_path=str(out / "curves.png"), log_dir=str(out / "logs"),
        summary_path=str(out / "summary.json"))
    if (out / "predictions.png").exists():  # segmentation / detection: held-out figure
        summary["predictions_path"] = str(out / "predictions.png")
    if chief:
        save_artifacts(export, summary, out)
    return summary


def _callbacks(config, out, chief, manager, step, stats):
    """Epoch stats, history and logs (chief only), then checkpoints.

    The checkpoint callback comes after CSVLogger: an epoch's row is written before the
    checkpoint that marks the epoch done (see checkpoint.CheckpointCallback).
    """
    callbacks = [stats]
    if chief:
        callbacks += [keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
                      keras.callbacks.TensorBoard(str(out / "logs"), write_graph=False)]
    return callbacks + [checkpoint.CheckpointCallback(
        manager, step, config.checkpoint_every, config.steps_per_epoch)]


def _fit(model, config, task, source, strategy, eval_ds, step, callbacks, verbose):
    """Fits from global `step` to the end; a resumed partial epoch is its own fit call."""
    steps_per_epoch, epochs = config.steps_per_epoch, config.recipe.epochs
    settings = config.pipeline_settings()
    ema, trained = model.optimizer.use_ema, False
    while step < config.total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        end_epoch = epoch + 1 if offset else epochs  # finish a resumed epoch on its own
        seed = config.seed + step  # a new shuffle after every resume
        tf.random.set_seed(seed)
        train_ds = strategy.distribute_datasets_from_function(
            functools.partial(task.train_dataset, source, settings, seed=seed))
        extra = [cb.KeepTrainingWeights()] if ema and end_epoch < epochs else []
        model.fit(train_ds, initial_epoch=epoch, epochs=end_epoch,
                  steps_per_epoch=steps_per_epoch - offset, validation_data=eval_ds,
                  callbacks=callbacks + extra, shuffle=False, verbose=verbose)
        step, trained = end_epoch * steps_per_epoch, True
    if ema and not trained:  # nothing left to train: swap in the EMA weights as fit does
        model.optimizer.finalize_variable_values(model.trainable_variables)


def save_artifacts(export, summary, out):
    """model.keras (`task.export_model`'s functional copy: weights, no optimizer), curves,
    summary."""
    with atomic_path(out / "model.keras") as tmp:
        export.save(tmp)
    reporting.plot_history(out / "history.csv", out / "curves.png")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
