"""What differs between training tasks, written once per task: model, loss, metrics, data.

The training loop (training/loop.py) asks the run's `Task` for these and knows nothing
else about the task. Classification, segmentation and detection (their parts: training/segdet/); a new
task adds a `Task` to `TASKS` and, for its own settings, a config section (a dataclass
of `options.option` fields) to `config.TrainConfig`: its flags, its `config.json`
entries and its resume check then follow from that one declaration.

Example:
    >>> task = get_task("classification")
    >>> model = task.build_model(config)
    >>> model.compile(loss=task.make_loss(config), weighted_metrics=task.make_metrics(config))
"""

import dataclasses
from typing import Callable

import keras

from training import data, models, pipeline, recipes
from training.segdet import detection, factory, segmentation, sources


@dataclasses.dataclass(frozen=True)
class Task:
    """A training task: each callable takes the run's `config.TrainConfig`."""

    name: str
    build_model: Callable          # (config, transform=None) -> uncompiled keras.Model
    make_loss: Callable            # config -> keras loss
    make_metrics: Callable         # config -> [keras metric] (compiled as weighted_metrics)
    open_source: Callable          # config -> data source (class_names, splits, read)
    train_dataset: Callable = pipeline.train_dataset  # (source, settings, ctx, seed) -> ds
    eval_dataset: Callable = pipeline.eval_dataset    # (source, settings) -> ds
    pipeline_settings: Callable = (  # config -> the settings the datasets take
        lambda config: pipeline.PipelineSettings.from_recipe(config.recipe, config.cache))
    recipe: Callable = recipes.get_recipe              # (model name, recipe name) -> Recipe
    quick_preset: dict = dataclasses.field(default_factory=dict)  # bundled data's recipe
    export_model: Callable = (  # trained model -> what model.keras holds
        lambda model: keras.Model(model.inputs, model.outputs, name=model.name))
    finish: Callable = lambda model, config, source, out: {}  # -> extra held-out metrics
    lr_multipliers: Callable = lambda config: {}  # -> {layer-name prefix: lr factor}
    run_prefix: str = ""           # runs/<prefix><model>-<dataset>


def open_classification_source(config):
    """The TFDS dataset or image folder of `config` (raises data.DataError)."""
    return data.open_source(
        config.dataset, config.image_folder, config.data_dir, config.manual_dir,
        config.download, config.train_split, config.eval_split,
        check_images=not config.skip_image_check)


def open_scene_source(config):
    """The segmentation/detection source of `config` (raises data.DataError)."""
    return sources.open_scene_source(
        config.task, config.dataset, config.image_folder, config.data_dir, config.manual_dir,
        config.download, config.train_split, config.eval_split)


CLASSIFICATION = Task(
    name="classification",
    build_model=models.build_classifier,
    make_loss=lambda config: recipes.make_loss(config.recipe.label_smoothing),
    make_metrics=lambda config: recipes.make_metrics(config.num_classes),
    open_source=open_classification_source,
    quick_preset=recipes.QUICK_PRESET)

def _scene_task(name, module, **specific):
    """A task on scene data (training/segdet/): its source, pipelines, figure, export."""
    return Task(name=name, open_source=open_scene_source,
                train_dataset=module.train_dataset, eval_dataset=module.eval_dataset,
                finish=module.finish, export_model=factory.export_model, **specific)


SEGMENTATION = _scene_task(
    "segmentation", segmentation, build_model=factory.build_segmenter,
    make_loss=factory.segmentation_loss, make_metrics=factory.segmentation_metrics,
    pipeline_settings=factory.segmentation_settings, recipe=factory.segmentation_recipe,
    quick_preset=factory.SEGMENTATION_QUICK,
    lr_multipliers=factory.segmentation_lr_multipliers, run_prefix="deeplabv3_")

DETECTION = _scene_task(
    "detection", detection, build_model=factory.build_detector,
    make_loss=lambda config: detection.SSDLoss(), make_metrics=lambda config: [],
    pipeline_settings=factory.detection_settings, recipe=factory.detection_recipe,
    quick_preset=factory.DETECTION_QUICK, run_prefix="ssdlite_")

TASKS = {task.name: task for task in (CLASSIFICATION, SEGMENTATION, DETECTION)}


def get_task(name):
    """The registered `Task` called `name`."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}: one of {', '.join(TASKS)}.")
    return TASKS[name]
