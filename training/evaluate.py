"""Top-1 / top-5 accuracy and loss of a model on a dataset split.

Evaluates a `.keras` file written by train.py (its run's config.json, when present,
supplies the dataset, split, image size and resize settings), or a variant built by
name with `--weights` (the official ImageNet weights, a .pt or a .weights.h5).

Examples:
    python training/evaluate.py runs/mobilevitv3_xxs-fashion_mnist_subset/model.keras
    python training/evaluate.py --model mobilevitv3_xs --weights imagenet \\
        --dataset imagenet2012 --manual-dir ~/imagenet --split validation
    python training/evaluate.py model.keras --image-folder ~/photos --split val --json out.json

The eval transform is the official one by default: resize the short side to
size / 0.889 (288 for 256) and center-crop, bilinear for the v1 recipe (v1, v3 XXS/XS/S)
and bicubic for the v2 recipe (v2, v3 0.5/0.75/1.0).
"""

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_mobilevit as kmv  # noqa: E402
from keras_mobilevit.fileio import output_file_problem, write_text_atomic  # noqa: E402
from training import data, models, options, pipeline, recipes, rundir  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_path", nargs="?", metavar="MODEL.keras",
                        help="a saved model (else build --model with --weights)")
    parser.add_argument("--model", choices=kmv.list_models(), metavar="NAME",
                        help="variant to build when no MODEL.keras is given")
    parser.add_argument("--weights", default="imagenet",
                        help="weights for --model: imagenet (default), .pt or .weights.h5")
    parser.add_argument("--dataset", help="TFDS name (default: the run's dataset, else the "
                        "bundled fashion_mnist_subset)")
    parser.add_argument("--image-folder", metavar="PATH", help="folder of class sub-folders")
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--manual-dir", help="manually downloaded files (ImageNet tars)")
    parser.add_argument("--download", action="store_true", help="allow TFDS downloads")
    parser.add_argument("--split", help="split to evaluate (default: the held-out split)")
    parser.add_argument("--image-size", type=options.checked(int, options.positive),
                        help="default: the run's, else 256")
    parser.add_argument("--crop-fraction", type=options.checked(float, options.positive),
                        help="short side resized to size / fraction, then center crop "
                        "(default: the run's, else 256/288)")
    parser.add_argument("--interpolation", choices=("bilinear", "bicubic"),
                        help="default: the run's, else the model family's recipe")
    parser.add_argument("--batch-size", type=options.checked(int, options.positive), default=64)
    parser.add_argument("--json", metavar="PATH", help="also write the metrics here")
    args = parser.parse_args(argv)
    if not args.model_path and not args.model:
        parser.error("give a MODEL.keras or --model NAME")
    if args.json and output_file_problem(args.json):  # not after the evaluation
        parser.error(f"--json {args.json}: {output_file_problem(args.json)}")
    return args


def run_config(model_path):
    """The config.json of the training run that wrote `model_path`, or {}."""
    folder = Path(model_path).parent if model_path else None
    return rundir.read_config(folder) if folder and (folder / rundir.CONFIG).exists() else {}


def evaluate(model, source, split, settings, batch_size=64, verbose="auto"):
    """{"accuracy", "top5", "loss", "examples"} of `model` (logits or probabilities)."""
    from_logits = getattr(model.layers[-1], "activation", None) is not keras.activations.softmax
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=from_logits),
                  weighted_metrics=recipes.make_metrics(len(source.class_names)))
    ds = pipeline.eval_dataset(source, settings, split=split, batch_size=batch_size)
    metrics = model.evaluate(ds, return_dict=True, verbose=verbose)
    return dict(metrics, examples=source.num_examples(split))


def main(argv=None):
    args = parse_args(argv)
    config = run_config(args.model_path)
    recipe = config.get("recipe", {})
    defaults = recipes.get_recipe(args.model or config.get("model") or "mobilevitv3_xxs")
    if args.dataset or args.image_folder:
        dataset, folder, split = args.dataset, args.image_folder, args.split
    else:  # the run's own data and held-out split
        folder = config.get("image_folder")
        dataset = None if folder else config.get("dataset")
        split = args.split or config.get("eval_split")
    try:
        source = data.open_source(dataset, folder, args.data_dir, args.manual_dir,
                                  args.download, eval_split=split)
    except data.DataError as error:
        raise SystemExit(f"error: {error}") from None
    split = args.split or source.eval_split
    size = args.image_size or recipe.get("image_size", 256)
    settings = pipeline.PipelineSettings(
        image_size=size, batch_size=args.batch_size,
        interpolation=args.interpolation or recipe.get("interpolation", defaults.interpolation),
        antialias=recipe.get("antialias", defaults.antialias),
        eval_crop_fraction=args.crop_fraction or recipe.get(
            "eval_crop_fraction", defaults.eval_crop_fraction))
    if args.model_path:
        model = models.load_model(args.model_path)
        name = args.model_path
    else:
        try:
            model = kmv.create_model(args.model, weights=args.weights,
                                     input_shape=(size, size, 3), classes=len(source.class_names))
        except (kmv.CheckpointError, ValueError) as error:  # e.g. 1000 classes vs the data's
            raise SystemExit(f"error: {error}\n({source.name} has "
                             f"{len(source.class_names)} classes)") from None
        name = f"{args.model} ({args.weights})"
    metrics = evaluate(model, source, split, settings, args.batch_size)
    print(f"{name} on {source.name} [{split}, {metrics['examples']} images, {size} px]: "
          f"top-1 {100 * metrics['accuracy']:.2f}%"
          + (f", top-5 {100 * metrics['top5']:.2f}%" if "top5" in metrics else "")
          + f", loss {metrics['loss']:.4f}")
    if args.json:
        write_text_atomic(args.json, json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
