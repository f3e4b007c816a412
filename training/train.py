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
import dataclasses
import functools
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mobilevit as kmv  # noqa: E402
from training import callbacks as cb  # noqa: E402
from training import checkpoint, data, distribute, pipeline, recipes, reporting, sampler  # noqa: E402,E501

DEFAULT_MODEL = "mobilevitv3_xxs"

# The bundled Fashion-MNIST subset (28x28 grey, 10k train images) with the ImageNet
# recipe's values scaled to a ~10-minute CPU run. Explicit flags still win.
# No multi-scale: around a 32 px base its smallest scale would be 24 px.
QUICK_PRESET = dict(image_size=32, epochs=24, batch_size=128, warmup_steps=150,
                    multi_scale=False, crop_scale_min=0.7, eval_crop_fraction=1.0)

# Config entries not compared on resume: derived from the recipe (and --cache, which
# may change), or paths (the data may move). Flags outside the config (strategy, paths,
# checkpointing) may change too.
NOT_COMPARED = {"pipeline", "images_per_step", "data_dir"}


def parse_args(argv=None):
    """The command line; every recipe value has a flag that overrides it."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        epilog="Examples:\n" + __doc__.split("Examples:\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bool_flag = argparse.BooleanOptionalAction

    g = parser.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, choices=kmv.list_models(),
                   metavar="NAME", help=f"variant to train (default {DEFAULT_MODEL}); one of "
                   + ", ".join(kmv.list_models()))
    g.add_argument("--weights", help="start from 'imagenet' or an official .pt checkpoint "
                   "(new classifier unless the dataset has 1000 classes), or a Keras "
                   ".weights.h5 of the same model and classes")
    g.add_argument("--from", dest="from_model", metavar="PATH.keras",
                   help="continue from / fine-tune a saved .keras model (a new classifier "
                   "if the number of classes differs)")
    g.add_argument("--dropout", type=float, help="classifier dropout (default: the variant's)")
    g.add_argument("--qat", action="store_true",
                   help="quantization-aware fine-tuning of the --from model for an int8 "
                        ".tflite (tflite/qat_train.py: its fine-tuning defaults, output "
                        "<from folder>-qat; convert with python -m tflite.convert)")

    g = parser.add_argument_group("data")
    g.add_argument("--dataset", help="TFDS name, e.g. tf_flowers, imagenette/320px-v2, "
                   "imagenet2012 (default: the bundled fashion_mnist_subset)")
    g.add_argument("--image-folder", metavar="PATH",
                   help="folder of class sub-folders: PATH/<class>/* or PATH/<split>/<class>/*")
    g.add_argument("--data-dir", help="TFDS data directory (default: TFDS' own, "
                   "~/tensorflow_datasets or $TFDS_DATA_DIR)")
    g.add_argument("--manual-dir", help="folder with manually downloaded files "
                   "(e.g. ImageNet's tars); prepares the dataset from them")
    g.add_argument("--download", action="store_true", help="allow TFDS to download and "
                   "prepare the dataset (needs internet); without it nothing is downloaded")
    g.add_argument("--train-split", help="default: 'train' (TFDS slicing like "
                   "'train[:80%%]' works for TFDS datasets)")
    g.add_argument("--eval-split", help="held-out split (default: validation or test; "
                   "else the last 10%% of train is held out)")
    g.add_argument("--skip-image-check", action="store_true",
                   help="do not decode every file of --image-folder before training")
    g.add_argument("--cache", choices=("auto", "yes", "no"), default="auto",
                   help="keep encoded images in memory (auto: below 2 GiB per worker)")

    g = parser.add_argument_group("recipe (defaults: the official ImageNet recipe of the "
                                  "model's family; the bundled dataset uses a short preset)")
    g.add_argument("--recipe", choices=("auto", "v1", "v2"), default="auto",
                   help="v1: MobileViT v1 / v3 XXS-S; v2: MobileViT v2 / v3 0.5-1.0")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch size (all replicas)")
    g.add_argument("--image-size", type=int, help="training/eval resolution (the "
                   "multi-scale sampler varies around it)")
    g.add_argument("--steps-per-epoch", type=int,
                   help="override the number of steps per epoch (for quick runs)")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr", type=float, help="final learning rate of the cosine")
    g.add_argument("--warmup-init-lr", type=float, help="learning rate at step 0")
    g.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: the "
                   "recipe's, at most a tenth of the run)")
    g.add_argument("--weight-decay", type=float, help="decoupled (AdamW) weight decay")
    g.add_argument("--decay-norm-and-bias", action=bool_flag,
                   help="also decay norm scales/offsets and biases")
    g.add_argument("--clipnorm", type=float, help="clip the global gradient norm (0: off)")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--ema-momentum", type=float, help="EMA of the weights, Keras "
                   "semantics (0.9995 = cvnets' 0.0005; 0: off). Default: the recipe's, "
                   "averaging over at most a tenth of the run")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic"))
    g.add_argument("--antialias", action=bool_flag, help="antialias when resizing down")
    g.add_argument("--multi-scale", action=bool_flag,
                   help="multi-scale variable-batch sampler (v1 recipe)")
    g.add_argument("--randaugment", action=bool_flag)
    g.add_argument("--random-erasing", type=float, help="probability per image")
    g.add_argument("--mixup", dest="mixup_alpha", type=float, help="MixUp alpha (0: off)")
    g.add_argument("--cutmix", dest="cutmix_alpha", type=float, help="CutMix alpha (0: off)")
    g.add_argument("--crop-scale-min", type=float,
                   help="RandomResizedCrop keeps between this fraction and all of the area")
    g.add_argument("--eval-crop-fraction", type=float,
                   help="eval: resize the short side to size / fraction, center crop")

    g = parser.add_argument_group("run")
    g.add_argument("--output-dir", help="default: runs/<model>-<dataset>")
    g.add_argument("--restart", action="store_true",
                   help="discard the checkpoints in --output-dir and start over")
    g.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS",
                   help="checkpoint every STEPS steps and at each epoch end (default 500)")
    g.add_argument("--strategy", choices=distribute.STRATEGIES, default="default",
                   help="tf.distribute strategy: default (one device), one_device, "
                   "mirrored (all local GPUs), multi_worker ($TF_CONFIG), tpu")
    g.add_argument("--cpu-devices", type=int, default=1, metavar="N",
                   help="split the CPU into N logical devices (to try --strategy mirrored "
                   "without GPUs)")
    g.add_argument("--tpu", default="", help="TPU name or address for --strategy tpu")
    g.add_argument("--mixed-precision", choices=("none", "float16", "bfloat16"),
                   default="none", help="float16 for GPUs, bfloat16 for TPUs/recent CPUs")
    g.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def resolve_config(args, source):
    """The full training configuration: recipe <- bundled preset <- command line."""
    recipe = recipes.get_recipe(args.model, args.recipe)
    values = dataclasses.asdict(recipe)
    bundled = not args.dataset and not args.image_folder
    if bundled:
        values.update(QUICK_PRESET)
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(recipes.Recipe)
                if getattr(args, f.name, None) is not None}
    values.update(explicit)
    if values["clipnorm"] == 0:
        values["clipnorm"] = None
    recipe = recipes.Recipe(**values)

    settings = pipeline.PipelineSettings(
        image_size=recipe.image_size, batch_size=recipe.batch_size,
        interpolation=recipe.interpolation, antialias=recipe.antialias,
        crop_scale_min=recipe.crop_scale_min, eval_crop_fraction=recipe.eval_crop_fraction,
        multi_scale=recipe.multi_scale, randaugment=recipe.randaugment,
        random_erasing=recipe.random_erasing, mixup_alpha=recipe.mixup_alpha,
        cutmix_alpha=recipe.cutmix_alpha, cache=args.cache)
    images_per_step = recipe.batch_size
    if recipe.multi_scale:  # scales are equally likely per batch
        images_per_step = sampler.mean_batch_size(
            sampler.image_batch_pairs(recipe.image_size, recipe.batch_size))
    steps_per_epoch = args.steps_per_epoch or recipes.steps_for(
        source.num_examples(source.train_split), images_per_step)
    total_steps = steps_per_epoch * recipe.epochs
    if "warmup_steps" not in explicit and not bundled:
        recipe = dataclasses.replace(
            recipe, warmup_steps=min(recipe.warmup_steps, total_steps // 10))
    if "ema_momentum" not in explicit:
        recipe = dataclasses.replace(recipe, ema_momentum=recipes.effective_ema_momentum(
            recipe.ema_momentum, total_steps))

    return dict(
        model=args.model, dataset=source.name, image_folder=args.image_folder,
        data_dir=args.data_dir,
        train_split=source.train_split, eval_split=source.eval_split,
        num_classes=len(source.class_names), weights=args.weights,
        from_model=args.from_model, dropout=args.dropout, seed=args.seed,
        mixed_precision=args.mixed_precision, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, images_per_step=images_per_step,
        recipe=dataclasses.asdict(recipe), pipeline=dataclasses.asdict(settings))


def build_model(config):
    """The network to train, uncompiled: new, from `--weights`, or from `--from`.

    This is the one place that makes the model: swap it to train something else, e.g.
    a quantization-aware version of the float model.
    """
    num_classes, recipe = config["num_classes"], config["recipe"]
    size = recipe["image_size"]
    input_shape = (None, None, 3) if recipe["multi_scale"] else (size, size, 3)
    name, weights, dropout = config["model"], config["weights"], config["dropout"]
    if config["from_model"]:
        model = keras.models.load_model(config["from_model"], compile=False)
        if model.output_shape[-1] == num_classes:
            return model
        features = model.layers[-1].input  # the classifier's input
        return _with_head(model.input, features, num_classes, dropout, model.name)
    if weights is None or str(weights).endswith(".h5") or num_classes == 1000:
        return kmv.create_model(name, weights=weights, input_shape=input_shape,
                                classes=num_classes, classifier_activation=None,
                                dropout=dropout)
    backbone = kmv.create_model(name, include_top=False, pooling="avg", weights=weights,
                                input_shape=input_shape)
    if dropout is None:
        dropout = kmv.architectures.get_spec(name).family.classifier_dropout
    return _with_head(backbone.input, backbone.output, num_classes, dropout, name)


def _with_head(inputs, features, num_classes, dropout, name):
    """inputs -> features [B, C] -> dropout -> new Dense classifier (float32 logits)."""
    x = keras.layers.Dropout(dropout or 0.0, name="head_dropout")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head")(x)
    return keras.Model(inputs, logits, name=name)


def compile_model(model, config):
    """AdamW + warm-up/cosine + EMA, label-smoothed cross-entropy, top-1/top-5."""
    recipe = recipes.Recipe(**config["recipe"])
    schedule = recipes.make_schedule(recipe.lr, recipe.min_lr, recipe.warmup_init_lr,
                                     recipe.warmup_steps, config["total_steps"])
    optimizer = recipes.make_optimizer(recipe, schedule, model, recipe.ema_momentum)
    model.compile(optimizer=optimizer, loss=recipes.make_loss(recipe.label_smoothing),
                  weighted_metrics=recipes.make_metrics(config["num_classes"]))
    # Built here, not in the first step: that step would be traced twice (~3x slower).
    optimizer.build(model.trainable_variables)


def prepare_output_dir(out, config, restart, chief):
    """Creates `out`; refuses to resume a run made with different settings."""
    config_path = out / "config.json"
    if restart and chief:
        for path in (out / "checkpoints", out / "history.csv", out / "logs"):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    if config_path.exists() and (out / "checkpoints" / checkpoint.LATEST).exists():
        previous, current = _flat(json.loads(config_path.read_text())), _flat(config)
        changed = sorted(k for k in set(previous) | set(current)
                         if k.split(".")[0] not in NOT_COMPARED
                         and previous.get(k) != current.get(k))
        if changed:
            raise SystemExit(
                f"error: {out} holds a run made with other settings ({', '.join(changed)}"
                "). Pass --restart to discard it, or choose another --output-dir.")
    if chief:
        for path in (out, out / "checkpoints"):
            path.mkdir(parents=True, exist_ok=True)
            checkpoint.remove_stale_temporaries(path)
        checkpoint.write_text_atomic(config_path, json.dumps(config, indent=1))


def _flat(config):
    """{"recipe": {"lr": 1}} -> {"recipe.lr": 1}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def train(config, source, strategy, out, chief, checkpoint_every=500, verbose="auto"):
    """Trains (resuming if `out` has checkpoints), evaluates, saves; returns the summary."""
    start = time.time()
    settings = pipeline.PipelineSettings(**config["pipeline"])
    steps_per_epoch, total_steps = config["steps_per_epoch"], config["total_steps"]
    epochs = config["recipe"]["epochs"]
    manager = checkpoint.CheckpointManager(out / "checkpoints", write=chief)
    with strategy.scope():
        model = build_model(config)
        compile_model(model, config)
        step = manager.restore(model)
    resumed = step > 0
    if resumed:
        print(f"Resuming from step {step} of {total_steps} ({manager.directory})")
    history_path, log_dir = out / "history.csv", out / "logs"
    if chief:
        reporting.trim_history(history_path, step // steps_per_epoch)

    eval_ds = pipeline.eval_dataset(source, settings)
    stats = cb.EpochStats(config["images_per_step"])
    callbacks = [stats, checkpoint.CheckpointCallback(manager, step, checkpoint_every)]
    if chief:
        callbacks += [keras.callbacks.CSVLogger(str(history_path), append=True),
                      keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]
    verbose = verbose if chief else 0
    ema, trained = model.optimizer.use_ema, False
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        end_epoch = epoch + 1 if offset else epochs  # finish a resumed epoch on its own
        seed = config["seed"] + step  # a new shuffle after every resume
        tf.random.set_seed(seed)
        train_ds = strategy.distribute_datasets_from_function(
            functools.partial(pipeline.train_dataset, source, settings, seed=seed))
        extra = [cb.KeepTrainingWeights()] if ema and end_epoch < epochs else []
        model.fit(train_ds, initial_epoch=epoch, epochs=end_epoch,
                  steps_per_epoch=steps_per_epoch - offset, validation_data=eval_ds,
                  callbacks=callbacks + extra, shuffle=False, verbose=verbose)
        step, trained = end_epoch * steps_per_epoch, True
    if ema and not trained:  # nothing left to train: swap in the EMA weights as fit does
        model.optimizer.finalize_variable_values(model.trainable_variables)

    print("Evaluating the " + ("EMA" if ema else "final") + " weights on "
          f"{source.eval_split} ...")
    metrics = model.evaluate(eval_ds, return_dict=True, verbose=verbose)
    history = reporting.read_history(history_path) if chief else []
    summary = dict(
        model=config["model"], dataset=config["dataset"], eval_split=source.eval_split,
        eval_examples=source.num_examples(source.eval_split), metrics=metrics, ema=ema,
        raw_accuracy=history[-1].get("val_accuracy") if history else None,
        images_per_sec=stats.images_per_sec(),
        wall_seconds=time.time() - start, resumed=resumed, steps=total_steps,
        model_path=str(out / "model.keras"), history_path=str(history_path),
        plot_path=str(out / "curves.png"), log_dir=str(log_dir),
        summary_path=str(out / "summary.json"))
    if chief:
        # A plain functional copy: the .keras file holds the weights, not the optimizer.
        export = keras.Model(model.inputs, model.outputs, name=model.name)
        with checkpoint.atomic_path(out / "model.keras") as tmp:
            export.save(tmp)
        reporting.plot_history(history_path, out / "curves.png")
        checkpoint.write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.qat:  # the same run, with the QAT twin of --from as the model (tflite/qat_train.py)
        from tflite import qat_train

        return qat_train.main([arg for arg in argv if arg != "--qat"])
    if importlib.util.find_spec("tensorboard") is None:  # fail now, not after an epoch
        raise SystemExit("error: TensorBoard is not installed: pip install -e '.[train]' "
                         "(or pip install tensorboard)")
    strategy = distribute.make_strategy(args.strategy, args.cpu_devices, args.tpu)
    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(f"mixed_{args.mixed_precision}")
    try:
        source = data.open_source(
            args.dataset, args.image_folder, args.data_dir, args.manual_dir, args.download,
            args.train_split, args.eval_split, check_images=not args.skip_image_check)
    except data.DataError as error:
        raise SystemExit(f"error: {error}") from None
    config = resolve_config(args, source)
    out = Path(args.output_dir or Path("runs") / f"{args.model}-{source.name.replace('/', '_')}")
    prepare_output_dir(out, config, args.restart, chief)
    recipe = config["recipe"]
    print(f"{args.model} on {source.name}: {len(source.class_names)} classes, "
          f"{source.num_examples(source.train_split)} train ({source.train_split}) / "
          f"{source.num_examples(source.eval_split)} held-out ({source.eval_split}) images; "
          f"recipe {recipe['name']}, {recipe['epochs']} epochs x {config['steps_per_epoch']} "
          f"steps, batch {recipe['batch_size']}, {recipe['image_size']} px"
          f"{' (multi-scale)' if recipe['multi_scale'] else ''}, "
          f"{strategy.num_replicas_in_sync} replica(s); output in {out}")
    summary = train(config, source, strategy, out, chief, args.checkpoint_every)
    if chief:
        print(reporting.format_summary(summary))


if __name__ == "__main__":
    main()
