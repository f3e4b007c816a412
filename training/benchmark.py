"""Throughput of the input pipeline alone and of full training steps, with peak memory.

Each variant runs in a fresh process (so its peak resident memory is its own) and
reports images/s over timed batches after a warm-up. Data: the bundled Fashion-MNIST
subset (small PNGs) and a folder of synthetic 500x375 JPEGs, generated on the fly, for
ImageNet-like decoding and resizing.

Examples:
    python training/benchmark.py                        # all variants -> a Markdown table
    python training/benchmark.py --only pipeline --markdown BENCHMARKS-training.md
"""

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow, Keras and the training modules are imported inside the functions that run
# in each measured child process (deliberately deferred): the orchestrating parent
# stays light and every child's peak memory counts only what its variant loads.


@dataclasses.dataclass(frozen=True)
class Variant:
    """One measurement: what to time, on which data, with which pipeline settings."""

    name: str
    kind: str                 # "pipeline" (tf.data only) or "train" (tf.data + fit steps)
    data: str                 # "bundled" or "jpeg"
    image_size: int
    batch_size: int
    recipe: str = "v1"        # v1: crop + flip; v2: + RandAugment, erasing, MixUp/CutMix
    multi_scale: bool = False
    cache: str = "auto"
    model: str = "mobilevitv3_xxs"
    batches: int = 50         # timed batches (after `warmup` untimed ones)
    warmup: int = 5


VARIANTS = [
    Variant("bundled 32px v1 (default run)", "pipeline", "bundled", 32, 128),
    Variant("bundled 32px v1, no cache", "pipeline", "bundled", 32, 128, cache="no"),
    Variant("bundled 32px v1 multi-scale", "pipeline", "bundled", 32, 128, multi_scale=True),
    Variant("bundled 32px v2 augment", "pipeline", "bundled", 32, 128, recipe="v2"),
    Variant("JPEG 256px v1", "pipeline", "jpeg", 256, 64, batches=20),
    Variant("JPEG 256px v1 multi-scale", "pipeline", "jpeg", 256, 64, multi_scale=True,
            batches=20),
    Variant("JPEG 256px v2 augment", "pipeline", "jpeg", 256, 64, recipe="v2", batches=20),
    Variant("train bundled 32px v1 (default run)", "train", "bundled", 32, 128, batches=30),
    Variant("train bundled 32px v1 multi-scale", "train", "bundled", 32, 128,
            multi_scale=True, batches=30, warmup=15),
    Variant("train bundled 32px v2 recipe, mobilevitv3_050", "train", "bundled", 32, 128,
            recipe="v2", model="mobilevitv3_050", batches=30),
    Variant("train JPEG 256px v1", "train", "jpeg", 256, 16, batches=10, warmup=3),
]


def synthetic_jpegs(root, count=256, classes=4, size=(375, 500)):
    """Smooth random photos-like JPEGs in root/<class>/ (about 20-40 KB each)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = Path(root) / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, (size[0] // 25, size[1] // 25, 3)).astype("float32")
        image = tf.image.resize(coarse, size, method="bicubic")
        image += rng.normal(0, 8, (*size, 3))
        image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
        (folder / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image, quality=90).numpy())
    return root


def _recipe(variant):
    """The variant's recipe, with its size, batch and multi-scale choice."""
    from training import recipes

    return dataclasses.replace(
        recipes.get_recipe(variant.model, variant.recipe), image_size=variant.image_size,
        batch_size=variant.batch_size, multi_scale=variant.multi_scale)


def measure(variant, jpeg_dir, data_dir):
    """Runs one variant in this process; returns its numbers."""
    import keras
    import tensorflow as tf

    from training import data, models, pipeline, sampler, tasks
    from training.config import TrainConfig

    keras.utils.set_random_seed(0)
    source = (data.open_source(image_folder=jpeg_dir, check_images=False)
              if variant.data == "jpeg" else data.open_source(data_dir=data_dir))
    config = TrainConfig(model=variant.model, recipe=_recipe(variant), cache=variant.cache,
                         num_classes=len(source.class_names), total_steps=10_000)
    ds = pipeline.train_dataset(source, config.pipeline_settings())
    result = dict(dataclasses.asdict(variant))
    if variant.kind == "pipeline":
        iterator = iter(ds)
        for _ in range(variant.warmup):
            next(iterator)
        start, images = time.perf_counter(), 0
        for _ in range(variant.batches):
            images += int(next(iterator)[0].shape[0])
        result["images_per_sec"] = images / (time.perf_counter() - start)
    else:
        model = models.build_classifier(config)
        task = tasks.CLASSIFICATION
        models.compile_model(model, config, task.make_loss(config), task.make_metrics(config))
        model.fit(ds, steps_per_epoch=variant.warmup, verbose=0)  # tracing, warm caches
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=variant.batches, verbose=0)
        per_step = variant.batch_size
        if variant.multi_scale:
            per_step = sampler.mean_batch_size(
                sampler.image_batch_pairs(variant.image_size, variant.batch_size))
        result["images_per_sec"] = per_step * variant.batches / (time.perf_counter() - start)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["tf"] = tf.__version__
    return result


def _child(variant, jpeg_dir, data_dir, queue):
    try:
        queue.put(measure(variant, jpeg_dir, data_dir))
    except Exception as error:  # noqa: BLE001 - report, keep benchmarking the other variants
        queue.put(dict(dataclasses.asdict(variant), error=repr(error)))


def markdown(results, command):
    """The results as the Markdown section written to BENCHMARKS(-training).md."""
    load = os.getloadavg()[0]
    lines = [
        "## Training input pipeline and training steps",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}),"
        f" no GPU; TensorFlow {results[0].get('tf', '?')}; 1-minute load average at the "
        f"end {load:.1f} (shared machine: numbers are lower bounds).",
        "",
        "| variant | measures | images/s | peak RSS (MiB) |",
        "|---|---|---:|---:|",
    ]
    for r in results:
        what = "tf.data only" if r["kind"] == "pipeline" else f"fit steps, {r['model']}"
        rate = f"{r['images_per_sec']:.0f}" if "images_per_sec" in r else r.get("error", "")
        peak = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else ""
        lines.append(f"| {r['name']} (batch {r['batch_size']}) | {what} | {rate} | {peak} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("pipeline", "train"), help="run one kind only")
    parser.add_argument("--data-dir", help="TFDS data directory for the bundled dataset")
    parser.add_argument("--markdown", metavar="PATH", help="write the table here")
    parser.add_argument("--json", metavar="PATH", help="write raw results here")
    args = parser.parse_args(argv)
    for flag, path in (("--markdown", args.markdown), ("--json", args.json)):
        if path and (Path(path).is_dir() or not Path(path).parent.is_dir()):
            # (keras_mobilevit.fileio.output_file_problem, without importing Keras here)
            parser.error(f"{flag} {path}: not a file in an existing folder (checked now, "
                         "not after minutes of measuring)")
    variants = [v for v in VARIANTS if not args.only or v.kind == args.only]
    context = multiprocessing.get_context("spawn")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_dir = synthetic_jpegs(Path(tmp) / "jpeg")
        for variant in variants:
            queue = context.Queue()
            process = context.Process(target=_child,
                                      args=(variant, jpeg_dir, args.data_dir, queue))
            process.start()
            result = queue.get()
            process.join()
            results.append(result)
            print(json.dumps({k: result.get(k) for k in (
                "name", "images_per_sec", "peak_rss_mib", "error")}), flush=True)
    command = "python training/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(results, command.strip())
    print(table)
    from keras_mobilevit.fileio import write_text_atomic  # measured: the parent may import

    if args.markdown:
        write_text_atomic(args.markdown, table)
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
