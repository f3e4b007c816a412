"""Train a MobileViT classifier with the official recipes: `python training/train.py`.

With no arguments it trains MobileViTv3-XXS on the Fashion-MNIST subset that ships in
training/datasets (offline, about 10 minutes on 2 CPU cores) and writes the model,
history, curves and TensorBoard logs to runs/<model>-<dataset>/. Rerunning the same
command after a crash or kill resumes from the last checkpoint.

Examples:
    python training/train.py
    python training/train.py --dataset tf_flowers --data-dir ~/tensorflow_datasets \\
        --weights imagenet --image-size 256 --epochs 30 --batch-size 64
    python training/train.py --image-folder ~/photos --model mobilevitv2_050
    python training/train.py --dataset imagenet2012 --manual-dir ~/imagenet \\
        --model mobilevitv3_s --strategy mirrored --mixed-precision float16
    python training/train.py --qat --from runs/mobilevitv3_xxs-fashion_mnist_subset/model.keras
"""

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_mobilevit import segmentation as kmv_segmentation  # noqa: E402

from training import data, distribute, loop, options, reporting, rundir, tasks  # noqa: E402
from training.config import TrainConfig, resolve  # noqa: E402
from training.recipes import Recipe  # noqa: E402
from training.segdet.factory import SegDetOptions  # noqa: E402

# Plugins add a mode to this command without `training` importing them: a package
# declares `<name> = module:function` under this entry-point group; `load_plugin(name)`
# finds it. Today: `--qat` runs `qat = tflite.qat_train:main` (setup.py) with the argv,
# and that calls `main(argv, build_model=...)` back with its QAT model factory.
PLUGIN_GROUP = "keras_mobilevit.training_plugins"
# --weights NAME per task: official checkpoints (ImageNet classifiers, DeepLabV3 on
# PASCAL VOC / ADE20k, SSDLite on COCO).
NAMED_WEIGHTS = {"classification": ("imagenet",),
                 "segmentation": tuple(kmv_segmentation.NAMED_WEIGHTS),
                 "detection": ("coco",)}


def build_parser():
    """The command line, derived from the `TrainConfig` tree (training/config.py)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        epilog="Examples:\n" + __doc__.split("Examples:\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_flags(parser, TrainConfig)
    return parser


def parse_args(argv=None):
    """(TrainConfig before `resolve`, {recipe field: value or None}) from the command line.

    Every value is checked here, before anything is built or written: a bad one is a
    one-line argparse error with exit code 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    config = TrainConfig(**options.collect(args, TrainConfig),
                         segdet=SegDetOptions(**options.collect(args, SegDetOptions)))
    if config.output_dir:  # the default folder is known once the dataset is: claim checks it
        try:
            rundir.check_folder(config.output_dir)
        except rundir.RunDirError as error:
            parser.error(str(error).rstrip("."))
    if config.from_model and not Path(config.from_model).is_file():
        parser.error(f"--from {config.from_model}: no such file")
    named = NAMED_WEIGHTS[config.task]
    if config.weights not in (None, *named) and not Path(config.weights).is_file():
        parser.error(f"--weights {config.weights}: not {' or '.join(map(repr, named))} "
                     "and no such file")
    backbone = config.segdet.backbone_weights
    if backbone not in (None, "imagenet") and not Path(backbone).is_file():
        parser.error(f"--backbone-weights {backbone}: not 'imagenet' and no such file")
    if config.dataset and config.image_folder:
        parser.error("pass either --dataset or --image-folder, not both")
    return config, options.collect(args, Recipe)


def load_plugin(name):
    """The function of training plugin `name` (entry point group PLUGIN_GROUP)."""
    found = importlib.metadata.entry_points(group=PLUGIN_GROUP, name=name)
    if not found:
        raise SystemExit(
            f"error: --{name} needs the '{name}' training plugin, which is not installed: "
            "pip install -e '.[tflite]' registers it (entry point group "
            f"{PLUGIN_GROUP}); or run python -m tflite.qat_train with the same flags.")
    entry = next(iter(found))
    try:
        return entry.load()
    except ImportError as error:
        raise SystemExit(f"error: the '{name}' training plugin ({entry.value}) cannot be "
                         f"imported ({error}): pip install -e '.[tflite]'.") from None


def main(argv=None, build_model=None):
    """Runs `python training/train.py ARGV`; returns the run's summary (None off-chief).

    build_model: `config -> uncompiled keras.Model`, used instead of the task's model
        factory (how QAT fine-tuning, tflite/qat_train.py, plugs in).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config, recipe_overrides = parse_args(argv)
    if config.qat and build_model is None:  # the same run, with the plugin's model
        return load_plugin("qat")(argv)
    if importlib.util.find_spec("tensorboard") is None:  # fail now, not after an epoch
        raise SystemExit("error: TensorBoard is not installed: pip install -e '.[train]' "
                         "(or pip install tensorboard)")
    # The strategy first: it configures devices, which reading any data would fix.
    strategy = distribute.make_strategy(config.strategy, config.cpu_devices, config.tpu)
    chief = distribute.is_chief(strategy)
    task = tasks.get_task(config.task)
    try:
        source = task.open_source(config)
        config = resolve(config, recipe_overrides, source)
    except data.DataError as error:
        raise SystemExit(f"error: {error}") from None
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(f"mixed_{config.mixed_precision}")
    out = Path(config.output_dir or Path("runs") / (
        f"{task.run_prefix}{config.model}-{config.dataset.replace('/', '_')}"))
    try:  # built before the folder is touched: bad values for the model are argument errors
        model = loop.build(config, task, strategy, build_model)
    except ValueError as error:  # e.g. --image-size 16; kmv.CheckpointError (--weights)
        print(f"{Path(sys.argv[0]).name}: error: the model cannot be built from these "
              f"arguments: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        with rundir.claim(out) if chief else contextlib.nullcontext():
            rundir.prepare(out, config, config.restart, chief)
            print(describe(config, source, strategy, out))
            summary = loop.train(config, task, source, strategy, out, chief, model)
    except rundir.RunDirError as error:
        raise SystemExit(f"error: {error}") from None
    if chief:
        print(reporting.format_summary(summary))
        return summary
    return None


def describe(config, source, strategy, out):
    """The one-line description printed before training."""
    recipe = config.recipe
    return (f"{config.model} on {config.dataset}: {config.num_classes} classes, "
            f"{source.num_examples(source.train_split)} train ({source.train_split}) / "
            f"{source.num_examples(source.eval_split)} held-out ({source.eval_split}) "
            f"images; recipe {recipe.name}, "
            f"{recipe.epochs} epochs x {config.steps_per_epoch} steps, batch "
            f"{recipe.batch_size}, {recipe.image_size} px"
            f"{' (multi-scale)' if recipe.multi_scale else ''}, "
            f"{strategy.num_replicas_in_sync} replica(s); output in {out}")


if __name__ == "__main__":
    main()
