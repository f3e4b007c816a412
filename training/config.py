"""The typed training configuration: one dataclass tree for the CLI, config.json and pipeline.

`TrainConfig` holds every setting of a run; its fields are declared with
`options.option`, so each one is also a `training/train.py` flag (training/options.py),
an entry of the run's `config.json` (`to_json`) and, when it changes between a run and
its resumption, a refusal (`options.compared_keys`). The nested `recipes.Recipe` section holds
the hyper-parameters (its flags override the official recipe), and the pipeline settings
are derived from it (`pipeline_settings`). A new option is one new field here (or in
the section it belongs to).

`resolve` fills in what depends on the data: the recipe of the model's family, the short
preset of the bundled dataset, the class names and the step counts.

Example:
    >>> config = resolve(TrainConfig(model="mobilevitv3_xxs"), {"epochs": 3}, source)
    >>> config.recipe.epochs, config.num_classes, config.pipeline_settings().image_size
    (3, 10, 32)
"""

import dataclasses

import keras_mobilevit as kmv
from training import distribute, pipeline, recipes, sampler, tasks
from training.options import derived, non_negative, option, positive

DEFAULT_MODEL = "mobilevitv3_xxs"

# The bundled Fashion-MNIST subset (28x28 grey, 10k train images) with the ImageNet
# recipe's values scaled to a ~10-minute CPU run. Explicit flags still win.
# No multi-scale: around a 32 px base its smallest scale would be 24 px.
QUICK_PRESET = dict(image_size=32, epochs=24, batch_size=128, warmup_steps=150,
                    multi_scale=False, crop_scale_min=0.7, eval_crop_fraction=1.0)


def _model_help():
    return f"variant to train (default {DEFAULT_MODEL}); one of " + ", ".join(kmv.list_models())


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (flags: `python training/train.py --help`)."""

    GROUP = "run"

    # model
    task: str = option("classification", "what to train", group="model",
                       choices=tuple(tasks.TASKS))
    model: str = option(DEFAULT_MODEL, _model_help(), group="model",
                        choices=kmv.list_models(), metavar="NAME")
    weights: str | None = option(
        None, "start from 'imagenet' or an official .pt checkpoint (new classifier unless "
        "the dataset has 1000 classes), or a Keras .weights.h5 of the same model and "
        "classes", group="model")
    from_model: str | None = option(
        None, "continue from / fine-tune a saved .keras model (a new classifier if the "
        "number of classes differs)", flag="--from", group="model", metavar="PATH.keras")
    dropout: float | None = option(None, "classifier dropout (default: the variant's)",
                                   group="model", check=non_negative)
    qat: bool = option(
        False, "quantization-aware fine-tuning of the --from model for an int8 .tflite "
        "(the 'qat' training plugin, tflite/qat_train.py: its fine-tuning defaults, "
        "output <from folder>-qat; convert with python -m tflite.convert)", group="model")

    # data
    dataset: str | None = option(
        None, "TFDS name, e.g. tf_flowers, imagenette/320px-v2, imagenet2012 (default: "
        "the bundled fashion_mnist_subset)", group="data")
    image_folder: str | None = option(
        None, "folder of class sub-folders: PATH/<class>/* or PATH/<split>/<class>/*",
        group="data", metavar="PATH")
    data_dir: str | None = option(
        None, "TFDS data directory (default: TFDS' own, ~/tensorflow_datasets or "
        "$TFDS_DATA_DIR)", group="data", compare=False)
    manual_dir: str | None = option(
        None, "folder with manually downloaded files (e.g. ImageNet's tars); prepares the "
        "dataset from them", group="data", compare=False)
    download: bool = option(False, "allow TFDS to download and prepare the dataset (needs "
                            "internet); without it nothing is downloaded", group="data",
                            compare=False)
    train_split: str | None = option(
        None, "default: 'train' (TFDS slicing like 'train[:80%%]' works for TFDS "
        "datasets)", group="data")
    eval_split: str | None = option(
        None, "held-out split (default: validation or test; else the last 10%% of train "
        "is held out)", group="data")
    skip_image_check: bool = option(False, "do not decode every file of --image-folder "
                                    "before training", group="data", compare=False)
    cache: str = option("auto", "keep encoded images in memory (auto: below 2 GiB per "
                        "worker)", group="data", choices=("auto", "yes", "no"), compare=False)

    # recipe (the hyper-parameters; flags override the recipe's values)
    recipe: recipes.Recipe = None
    steps_per_epoch: int | None = option(
        None, "override the number of steps per epoch (for quick runs)",
        group=recipes.Recipe.GROUP, check=positive)

    # run
    output_dir: str | None = option(None, "default: runs/<model>-<dataset>", compare=False)
    restart: bool = option(False, "discard the earlier run in --output-dir (only the "
                           "files a run writes) and start over", compare=False)
    checkpoint_every: int = option(
        500, "checkpoint every STEPS steps and at each epoch end (default 500; 0: epoch "
        "ends only)", metavar="STEPS", check=non_negative, compare=False)
    strategy: str = option(
        "default", "tf.distribute strategy: default (one device), one_device, mirrored "
        "(all local GPUs), multi_worker ($TF_CONFIG), tpu", choices=distribute.STRATEGIES,
        compare=False)
    cpu_devices: int = option(1, "split the CPU into N logical devices (to try --strategy "
                              "mirrored without GPUs)", metavar="N", check=positive,
                              compare=False)
    tpu: str = option("", "TPU name or address for --strategy tpu", compare=False)
    mixed_precision: str = option("none", "float16 for GPUs, bfloat16 for TPUs/recent CPUs",
                                  choices=("none", "float16", "bfloat16"))
    seed: int = option(0)

    # derived from the data and the recipe by `resolve`
    num_classes: int | None = derived()
    class_names: tuple | None = derived()
    total_steps: int | None = derived()
    images_per_step: float | None = option(None, flag=False, compare=False)

    def pipeline_settings(self):
        """The input pipelines' settings (derived from the recipe, never set apart)."""
        return pipeline.PipelineSettings.from_recipe(self.recipe, self.cache)

    def to_json(self):
        """The dict written as config.json (with the derived pipeline settings)."""
        values = dataclasses.asdict(self)
        values["class_names"] = list(self.class_names or ())
        values["pipeline"] = dataclasses.asdict(self.pipeline_settings())
        return values


def resolve(config, recipe_overrides, source):
    """`config` completed for `source`: recipe <- bundled preset <- explicit flags.

    recipe_overrides: {recipe field: value} given on the command line (None: not given);
        "name" picks the recipe ("auto": from the model's family).
    """
    explicit = {k: v for k, v in recipe_overrides.items() if v is not None}
    base = recipes.get_recipe(config.model, explicit.pop("name", "auto"))
    values = dataclasses.asdict(base)
    bundled = not config.dataset and not config.image_folder
    if bundled:
        values.update(QUICK_PRESET)
    values.update(explicit)
    if values["clipnorm"] == 0:
        values["clipnorm"] = None
    recipe = recipes.Recipe(**values)

    images_per_step = recipe.batch_size
    if recipe.multi_scale:  # scales are equally likely per batch
        images_per_step = sampler.mean_batch_size(
            sampler.image_batch_pairs(recipe.image_size, recipe.batch_size))
    steps_per_epoch = config.steps_per_epoch or recipes.steps_for(
        source.num_examples(source.train_split), images_per_step)
    total_steps = steps_per_epoch * recipe.epochs
    if "warmup_steps" not in explicit and not bundled:
        recipe = dataclasses.replace(
            recipe, warmup_steps=min(recipe.warmup_steps, total_steps // 10))
    if "ema_momentum" not in explicit:
        recipe = dataclasses.replace(recipe, ema_momentum=recipes.effective_ema_momentum(
            recipe.ema_momentum, total_steps))
    return dataclasses.replace(
        config, dataset=source.name, train_split=source.train_split,
        eval_split=source.eval_split, recipe=recipe, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, images_per_step=images_per_step,
        num_classes=len(source.class_names), class_names=tuple(class_names(source)))


def class_names(source):
    """The dataset's class names; `class_<i>` only where it has none (bare indices)."""
    names = [str(name) for name in source.class_names]
    if all(name == str(i) for i, name in enumerate(names)):
        return [f"class_{i}" for i in range(len(names))]
    return names
