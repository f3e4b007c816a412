"""What differs between training tasks, written once per task: model, loss, metrics, data.

The training loop (training/loop.py) asks the run's `Task` for these and knows nothing
else about the task. Classification is the only task so far; a new one (segmentation,
detection) adds a `Task` to `TASKS` and, for its own settings, a config section
(a dataclass of `options.option` fields) to `config.TrainConfig`: its flags, its
`config.json` entries and its resume check then follow from that one declaration.

Example:
    >>> task = get_task("classification")
    >>> model = task.build_model(config)
    >>> model.compile(loss=task.make_loss(config), weighted_metrics=task.make_metrics(config))
"""

import dataclasses
from typing import Callable

from training import data, models, pipeline, recipes


@dataclasses.dataclass(frozen=True)
class Task:
    """A training task: each callable takes the run's `config.TrainConfig`."""

    name: str
    build_model: Callable          # config -> uncompiled keras.Model
    make_loss: Callable            # config -> keras loss
    make_metrics: Callable         # config -> [keras metric] (compiled as weighted_metrics)
    open_source: Callable          # config -> data source (class_names, splits, read)
    train_dataset: Callable = pipeline.train_dataset  # (source, settings, ctx, seed) -> ds
    eval_dataset: Callable = pipeline.eval_dataset    # (source, settings) -> ds


def open_classification_source(config):
    """The TFDS dataset or image folder of `config` (raises data.DataError)."""
    return data.open_source(
        config.dataset, config.image_folder, config.data_dir, config.manual_dir,
        config.download, config.train_split, config.eval_split,
        check_images=not config.skip_image_check)


CLASSIFICATION = Task(
    name="classification",
    build_model=models.build_classifier,
    make_loss=lambda config: recipes.make_loss(config.recipe.label_smoothing),
    make_metrics=lambda config: recipes.make_metrics(config.num_classes),
    open_source=open_classification_source)

TASKS = {task.name: task for task in (CLASSIFICATION,)}


def get_task(name):
    """The registered `Task` called `name`."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}: one of {', '.join(TASKS)}.")
    return TASKS[name]
