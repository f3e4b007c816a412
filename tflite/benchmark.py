"""Run the LiteRT benchmark: latency, file size, peak memory and top-1 of `.tflite` models.

Models run under LiteRT (`ai_edge_litert`, XNNPACK on); top-1 is on a held-out split;
ONNX Runtime is the reference for float32 latency.

Parts, any of them in one run:

- accuracy (`--float-run RUN_DIR [--qat-run RUN_DIR]`): the float model a training run
  wrote (RUN_DIR/model.keras, RUN_DIR/config.json), converted to float32, PTQ int8 and
  QAT int8 `.tflite`, evaluated on the run's held-out split with its eval transform:
  top-1, agreement with the float Keras model, latency at the trained size.
- task accuracy (`--seg-run RUN_DIR [--seg-qat-run RUN_DIR]`, `--det-run ...`): the
  same for a trained DeepLabV3 / SSDLite run (`task_accuracy_benchmark`): held-out mean
  IoU and pixel agreement with the Keras argmax, or COCO mAP@[.5:.95] / mAP@.5 and the
  share of the Keras detections above 0.5 score the `.tflite` finds within a pixel.
- latency (`--latency-models mobilevitv3_xs ...`): each variant at `--size` (256) with
  random weights (latency does not depend on weight values), float32 vs PTQ int8
  under LiteRT, and, for the v1/v2 variants timm has, ONNX Runtime running timm's
  export of the same model (`--baseline-python`, see `baseline_onnx.py`).
  LiteRT work runs in processes that never import TensorFlow (`tflite.workers`).

Ratios are always measured side by side in the same run: int8 vs float32 in interleaved
rounds in one process, LiteRT vs ONNX Runtime in alternating single runs of two timing
processes, so that machine load hits both alike.

    python -m tflite.benchmark --float-run runs/mobilevitv3_xxs-fashion_mnist_subset \\
        --qat-run runs/mobilevitv3_xxs-qat --latency-models mobilevitv3_xs mobilevit_xs \\
        --baseline-python /work/venv-baseline2/bin/python --benchmarks-md BENCHMARKS.md
    python -m tflite.benchmark --seg-run runs/deeplabv3_mobilevitv3_xxs-fashion_scenes \\
        --benchmarks-md BENCHMARKS.md
    python -m tflite.benchmark --render tflite/results/2026-12-02/benchmark.json \\
        --benchmarks-md BENCHMARKS.md   # BENCHMARKS.md's LiteRT section from a stored run

This module is the orchestration and its configuration (`TARGETS`, `BOUNDS`); the
measuring is in `latency`, the process isolation in `workers`, the writing in
`benchmark_report`.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile

import keras
import numpy as np

import keras_mobilevit as kmv
from keras_mobilevit import fileio
from training import rundir
from tflite import (analyze, benchmark_report, bounds, compat, data, edge_quantizer, latency,
                    qat, range_search, task_accuracy)
from tflite import convert as convert_lib
from tflite.workers import (TimingServer, WorkerError, convert_isolated, interleaved, isolated,
                            timed_apart)

# What a run is judged against; they travel in the report, which `benchmark_report`
# renders against them. Issue 4's acceptance targets (also for stored runs from before
# targets were stored), then issue 15's.
ISSUE_4_TARGETS = {
    "qat_top1_gap_points": 1.0,  # QAT int8 top-1 at most this many points below float
    "int8_size_vs_float32": 0.3,  # int8 PTQ file size / float32
    "int8_p50_vs_float32": 0.7,  # int8 PTQ p50 latency / float32, 1 thread
    "float32_vs_onnxruntime": 0.8,  # LiteRT float32 p50 / ONNX Runtime on timm's export
    "reference": {"model": "mobilevitv3_xs", "size": 256},  # the model the issue names
}
TARGETS = {
    **ISSUE_4_TARGETS,
    # int8 PTQ p50 / float32 per model (1 thread); our int8 / ONNX Runtime float32 (the
    # fastest of timm's exports); int8 2-thread speed-up over 1 thread.
    "int8_p50_vs_float32_by_model": {"mobilevitv2_050": 0.5, "mobilevitv3_050": 0.5,
                                     "mobilevitv3_xs": 0.4, "mobilevit_xs": 0.4},
    "int8_vs_onnxruntime": 0.4,
    "int8_thread_speedup": 1.7,
    # int8 PTQ of the trained default model: top-1 at most this many points below float,
    # and the share of images where it gives the float model's class.
    "ptq_top1_gap_points": 0.5,
    "ptq_agreement": 0.98,
}
# `--tasks`: the segmentation and detection models the issues name, with their targets
# (int8 PTQ / float32, side by side, 1 thread).
TASK_MODELS = {
    "segmentation": {"builder": "DeepLabV3", "backbone": "mobilevitv3_xs", "size": 512,
                     "targets": {"int8_size_vs_float32": 0.3, "int8_p50_vs_float32": 0.6}},
    "detection": {"builder": "SSDLite", "backbone": "mobilevitv3_xs", "size": 320,
                  "targets": {"int8_p50_vs_float32": 0.6}},
}
# `--seg-run` / `--det-run`: a trained run's held-out accuracy (issues 12, 13): int8 QAT
# at most this many mIoU / mAP points below the float Keras model; int8 detections
# matching this share of the confident Keras ones (same class, within a pixel).
TASK_ACCURACY_TARGETS = {"segmentation": {"qat_gap_points": 1.0},
                         "detection": {"qat_gap_points": 1.0, "int8_detections_matched": 0.95}}
TASK_RUN_FLAGS = {"segmentation": "seg", "detection": "det"}  # --seg-run, --det-qat-run, ...
# Calibration images of a random-weight task model (its ranges only set the int8 speed;
# at 512x512 each image costs seconds of calibration).
TASK_CALIBRATION = 16
# `--float-bounds` / `--int8-bounds`: the float32 / int8 PTQ graph with op families cut
# out (see tflite/bounds.py): {label of the file cut: {bound label: what is cut}}.
BOUNDS = {"float32": {"float32 bound: no swish": {"swish": True},
                      "float32 bound: no swish, no norm statistics": {"swish": True, "norms": True}},
          "int8 PTQ": {"int8 bound: no swish": {"swish": True},
                       "int8 bound: no swish, no norm statistics": {"swish": True, "norms": True},
                       "int8 bound: no swish, no softmax": {"swish": True, "softmax": True}}}
# timm has every v1 and v2 variant under the same names (no v3): the ONNX reference.
TIMM_PREFIXES = ("mobilevit_", "mobilevitv2_")


def machine_info():
    """Where the numbers come from: CPU, cores, load, runtime versions."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    versions = compat.installed_versions()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "interpreter": f"ai_edge_litert {versions['ai-edge-litert']} Interpreter, "
                       "default XNNPACK delegate",
        "converter": f"tensorflow {versions['tensorflow']}",
    }


def _file_row(label, path, float_path):
    size = os.path.getsize(path)
    return {"file": os.path.basename(path), "size_bytes": size,
            "size_vs_float32": size / os.path.getsize(float_path),
            "float_ops": [str(op) for op in analyze.float_ops(path)]
            if not label.startswith("float32") else None}


def ptq_label(ranges):
    """The row of int8 PTQ with activation ranges chosen by `ranges`: "int8 PTQ" for the
    default method, "int8 PTQ (mse ranges)" for another."""
    return "int8 PTQ" if ranges == qat.DEFAULT_RANGES else f"int8 PTQ ({ranges} ranges)"


def _convert_variants(keras_path, stem, calib, naive_ptq, ptq_name="int8", peer=False,
                      ptq_ranges=()):
    """{label: .tflite path} of float32, int8 PTQ (`<stem>_<ptq_name>.tflite`), int8 PTQ
    with each other method of `ptq_ranges` (`ptq_label`), (`naive_ptq`) the converter's
    own PTQ, and (`peer`) ai-edge-quantizer's static int8 of the float32 file (same
    `calib`); and {label: reason} of the int8 conversions refused (the rest are still
    measured)."""
    paths = {"float32": convert_isolated(keras_path, f"{stem}_float32.tflite", "float32")}
    refused = {}
    _convert_or_refuse(paths, refused, "int8 PTQ", keras_path, f"{stem}_{ptq_name}.tflite",
                       "int8", calib)
    for ranges in dict.fromkeys(ptq_ranges):
        if ranges != qat.DEFAULT_RANGES:
            _convert_or_refuse(paths, refused, ptq_label(ranges), keras_path,
                               f"{stem}_{ptq_name}_{ranges}.tflite", "int8", calib,
                               ranges=ranges)
    if naive_ptq:  # e.g. a graph LiteRT could not load (convert says so)
        _convert_or_refuse(paths, refused, "int8 PTQ (converter only)", keras_path,
                           f"{stem}_int8_naive.tflite", "int8", calib, ptq="converter")
    if peer:  # quantizes the float32 file, as an app developer would start from it
        label, out = "int8 ai-edge-quantizer", f"{stem}_int8_aeq.tflite"
        try:
            content = edge_quantizer.quantize(paths["float32"], calib)
        except ImportError as e:  # an optional dependency: the row says how to get it
            refused[label] = str(e)
        else:
            fileio.write_bytes_atomic(out, content)
            paths[label] = out
    return paths, refused


def accuracy_benchmark(float_run, qat_run, workdir, threads, warmup, runs, eval_limit=None,
                       naive_ptq=False, peer=False, ptq_ranges=()):
    """float32 / PTQ int8 / QAT int8 of one trained model: top-1, agreement, latency."""
    float_path = os.path.join(float_run, "model.keras")
    float_model = qat.load_keras_model(float_path)
    config = data.run_config(float_run)
    images, labels = data.images(config, "eval", eval_limit)
    calib = data.calibration_images(config)
    reference = np.argmax(float_model.predict(images, batch_size=64, verbose=0), axis=-1)
    name = float_model.name
    paths, refused = _convert_variants(float_path, os.path.join(workdir, name), calib, naive_ptq,
                                       ptq_name="int8_ptq", peer=peer, ptq_ranges=ptq_ranges)
    _add_qat(paths, refused, qat_run, os.path.join(workdir, name), calib)
    rows = _measured_rows(paths, threads, warmup, runs)
    for label, path in paths.items():
        pred = np.argmax(isolated("predict_tflite", path=path, images=images), axis=-1)
        rows[label].update(top1=float(np.mean(pred == labels)),
                           agreement_with_float_keras=float(np.mean(pred == reference)))
    rows.update({label: {"error": reason} for label, reason in refused.items()})
    return {"model": name, "input_shape": list(float_model.inputs[0].shape[1:]),
            "eval_examples": int(len(labels)),
            "float_keras_top1": float(np.mean(reference == labels)),
            "float_run": float_run, "qat_run": qat_run, "results": rows}


def _add_qat(paths, refused, qat_run, stem, calib):
    """Adds "int8 QAT" to `paths` (or why not to `refused`): the QAT run's model.keras as
    int8 (no run: nothing)."""
    if qat_run:
        _convert_or_refuse(paths, refused, "int8 QAT", os.path.join(qat_run, "model.keras"),
                           f"{stem}_int8_qat.tflite", "int8", calib)


def _convert_or_refuse(paths, refused, label, keras_path, out, *args, **kwargs):
    """`convert_isolated` into `paths[label]`, or the reason `convert` refused it into
    `refused[label]` (e.g. a quantizer error on one graph)."""
    try:
        paths[label] = convert_isolated(keras_path, out, *args, **kwargs)
    except WorkerError as e:
        refused[label] = "conversion refused: " + " ".join(str(e).split())  # one line


def _thread_counts(threads):
    """The thread counts a benchmark times: 1, and `threads` if more."""
    return [1] + ([threads] if threads > 1 else [])


def _measured_rows(paths, threads, warmup, runs):
    """{label: file size, float ops, latency at 1 and `threads` threads, peak memory}."""
    counts = _thread_counts(threads)
    lat = isolated("latency_by_threads", paths=paths, thread_counts=counts, warmup=warmup,
                   runs=runs)
    return {label: {**_file_row(label, path, paths["float32"]),
                    **{f"latency_{t}_thread": lat[label][t] for t in counts},
                    **latency.peak_memory(path)} for label, path in paths.items()}


def task_accuracy_benchmark(float_run, qat_run, workdir, threads, warmup, runs,
                            eval_limit=None, num_calib=100, ptq_ranges=()):
    """float32 / int8 PTQ (one row per method of `ptq_ranges`) / int8 QAT `.tflite` of a
    trained segmentation or detection run (its config.json says which) on its held-out
    split, beside the float Keras model: mean IoU and pixel agreement, or COCO mAP and
    the share of confident Keras detections matched (see `task_accuracy`), a detector's
    int8 rows also against the int8 Keras model each was converted from (the calibrated
    QAT twin, or the QAT run's model: what conversion itself changed); size, latency,
    peak memory. int8 is calibrated on the first `num_calib` training images (`convert`
    takes at most 100)."""
    float_path = os.path.join(float_run, "model.keras")
    config = data.run_config(float_run)
    task = config.get("task", "classification")
    images, truth = data.task_examples(config, eval_limit)  # refuses a classification run
    float_model = qat.load_keras_model(float_path)
    keras_metrics, score = task_accuracy.scorer(task, float_model, images, truth,
                                                config["num_classes"])
    calib = data.calibration_images(config, num_calib)
    name = float_model.name
    paths, refused = _convert_variants(float_path, os.path.join(workdir, name), calib,
                                       naive_ptq=False, ptq_name="int8_ptq",
                                       ptq_ranges=ptq_ranges)
    _add_qat(paths, refused, qat_run, os.path.join(workdir, name), calib)
    rows = _measured_rows(paths, threads, warmup, runs)
    sources = {ptq_label(r): r for r in (qat.DEFAULT_RANGES, *ptq_ranges)}
    for label, path in paths.items():
        outputs = isolated("predict_outputs", path=path, images=images)
        rows[label].update(score(outputs))
        if task == "detection" and (label in sources or label == "int8 QAT"):
            # the int8 Keras model this file was converted from, as `convert` makes it
            int8_keras = (qat.load_keras_model(os.path.join(qat_run, "model.keras"))
                          if label == "int8 QAT" else
                          convert_lib.ptq_twin(float_model, calib, sources[label]))
            if qat.fake_quant_layers(int8_keras):  # else no int8 Keras model exists
                rows[label].update(task_accuracy.detection_agreement(int8_keras, images,
                                                                     outputs))
    rows.update({label: {"error": reason} for label, reason in refused.items()})
    return {"task": task, "model": name, "input_shape": list(images.shape[1:]),
            "eval_examples": len(images), "calibration_images": len(calib),
            "float_keras": keras_metrics,
            "float_run": float_run, "qat_run": qat_run,
            "targets": TASK_ACCURACY_TARGETS[task], "results": rows}


def onnx_comparison(python, timm_name, litert_paths, size, warmup, runs,
                    exporters=("torchscript", "dynamo")):
    """LiteRT vs ONNX Runtime on each of timm's export paths of the same model
    (`baseline_onnx.EXPORTERS`), 1 thread each, in timing processes asked in turn (see
    `workers.TimingServer`): every model gets the same timing method and the same load.

    `litert_paths`: {label: .tflite}: "float32", "int8 PTQ" and any `--float-bounds` /
    `--int8-bounds` models. Ratios are against the fastest export (a user picks the
    faster file)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline_onnx.py")
    servers = {}
    try:
        for label, path in litert_paths.items():
            servers[label] = TimingServer.litert(path)
        for exporter in exporters:
            servers[f"onnxruntime {exporter}"] = TimingServer(
                [python, script, "--serve", "--models", timm_name, "--size", str(size),
                 "--threads", "1", "--exporters", exporter])
        infos = {label: server.info for label, server in servers.items()}
        stats = interleaved(servers, warmup, runs)
    finally:
        for server in servers.values():
            server.close()
    exports = {e: {"size_bytes": infos[f"onnxruntime {e}"]["size_bytes"],
                   "latency_1_thread": stats.pop(f"onnxruntime {e}")} for e in exporters}
    fastest = min(exports, key=lambda e: exports[e]["latency_1_thread"]["p50_ms"])
    reference = exports[fastest]["latency_1_thread"]

    def vs(label):
        return stats[label]["p50_ms"] / reference["p50_ms"]

    info = infos[f"onnxruntime {fastest}"]
    result = {"timm_model": timm_name, "runtime": info["runtime"],
              "exported_from": info["exported_from"], "exports": exports,
              "fastest_export": fastest, "size_bytes": exports[fastest]["size_bytes"],
              "onnxruntime_1_thread": reference,
              "litert_float32_1_thread": stats["float32"],
              "litert_float32_vs_onnxruntime": vs("float32"),
              "bounds": {label: {"litert_1_thread": s, "vs_onnxruntime": vs(label)}
                         for label, s in stats.items() if " bound: " in label}}
    if "int8 PTQ" in stats:
        result.update(litert_int8_1_thread=stats["int8 PTQ"],
                      litert_int8_vs_onnxruntime=vs("int8 PTQ"))
    return result


def _bound_models(paths, which):
    """{label: path} of the `BOUNDS` models cut out of `paths[which]` ("float32" or
    "int8 PTQ"), written beside it."""
    with open(paths[which], "rb") as f:
        content = f.read()
    stem = paths[which][:-len(".tflite")]
    cut_paths = {}
    for i, (label, cut) in enumerate(BOUNDS[which].items()):
        cut_paths[label] = f"{stem}_bound{i}.tflite"
        fileio.write_bytes_atomic(cut_paths[label], bounds.without(content, **cut)[0])
    return cut_paths


def _time_and_size(paths, failures, thread_counts, timing, keep_failed):
    """{label: latency per thread count, file size, float ops, memory, or "error"}."""
    results = {label: {} for label in [*paths, *failures]}
    alive = {k: v for k, v in paths.items() if k not in failures}
    # every thread count in the same interleaved rounds: speed-ups side by side
    for label, by_threads in timed_apart(alive, thread_counts, *timing, failures).items():
        for t, stats in by_threads.items():
            results[label][f"latency_{t}_thread"] = stats
    for label, row in results.items():
        path = paths.get(label)
        if path is not None:
            row.update(_file_row(label, path, paths["float32"]))
        if label not in failures:
            row.update(latency.peak_memory(path))
            continue
        row["error"] = failures[label]
        if path is not None and keep_failed:  # the file the interpreter died on
            os.makedirs(keep_failed, exist_ok=True)
            shutil.copy(path, keep_failed)
    return results


# images of the calibration set that set a random model's BatchNorm statistics (`settled`)
SETTLING_IMAGES = 16
SETTLED_ON = f"{SETTLING_IMAGES} calibration images"


def latency_benchmark(name, size, workdir, threads, warmup, runs, calib, baseline_python=None,
                      naive_ptq=False, float_bounds=False, seed=0, keep_failed=None,
                      peer=False, int8_bounds=False):
    """float32 vs PTQ int8 of one variant at `size` (random weights from `seed`, BatchNorm
    statistics from the calibration images: `settled`) under LiteRT; and LiteRT float32
    vs ONNX Runtime on timm's export (`onnx_comparison`). With `float_bounds`, also the
    `BOUNDS` models of float32 (lower bounds for float32 graph changes), with
    `int8_bounds` those of int8 PTQ (lower bounds for int8 graph changes). A model the
    interpreter dies on, or whose conversion `convert` refuses (the converter's own PTQ,
    `naive_ptq`), gets an "error" row instead of numbers (the others are still timed
    together); a file the interpreter died on is copied to `keep_failed` for a bug
    report."""
    stem = _saved_random_model(
        lambda: kmv.create_model(name, weights=None, input_shape=(size, size, 3)), seed,
        calib, workdir, size)
    paths, failures = _convert_variants(stem + ".keras", stem, calib[:32], naive_ptq, peer=peer)
    for wanted, which in ((float_bounds, "float32"), (int8_bounds, "int8 PTQ")):
        if wanted and which in paths:
            paths.update(_bound_models(paths, which))
    thread_counts = _thread_counts(threads)
    result = {"model": name, "size": size, "seed": seed,
              "batchnorm_statistics": SETTLED_ON,
              "results": _time_and_size(paths, failures, thread_counts, (warmup, runs),
                                        keep_failed)}
    if baseline_python and name.startswith(TIMM_PREFIXES) and "float32" not in failures:
        compared = {label: p for label, p in paths.items()
                    if label.startswith(("float32", "int8 bound")) or label == "int8 PTQ"}
        compared = {label: p for label, p in compared.items() if label not in failures}
        result["onnxruntime"] = onnx_comparison(baseline_python, name, compared, size, warmup,
                                                runs)
    return result


def _saved_random_model(build, seed, calib, workdir, size):
    """`build()` with random weights from `seed` and BatchNorm statistics settled on
    `calib` (`settled`), saved once as WORKDIR/<model name>_<size>.keras so that every
    conversion starts from the same weights. Returns the path without ".keras"."""
    keras.utils.set_random_seed(seed)
    model = settled(build(), calib[:SETTLING_IMAGES])
    stem = os.path.join(workdir, f"{model.name}_{size}")
    model.save(stem + ".keras")
    return stem


def settled(model, images):
    """`model` (random weights) with each BatchNorm's moving statistics set to those of
    its input on `images` (one pass in training mode with momentum 0): every norm then
    outputs unit variance, as in a trained network. Returns `model`.

    Why: with fresh statistics (mean 0, variance 1) a random MobileViT's activations
    shrink ~10x per conv block, to ~1e-5 by stage 3 of mobilevitv3_050 at 256x256; its
    int8 ranges collapse to their floor there, and the ops whose scales then differ by
    1e5 fall out of XNNPACK (a residual ADD, LayerNorm MULs, requantizes): an int8 graph
    no trained model has (8% slower there). float32 time does not depend on the values.

    Example:
        >>> settled(kmv.create_model("mobilevitv3_050"), calibration_images[:16])
    """
    norms = [layer for layer in compat.flatten_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        model(images, training=True)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
    return model


def task_benchmark(task, workdir, threads, warmup, runs, calib, qat_model=None, seed=0,
                   keep_failed=None):
    """float32 vs int8 PTQ (vs int8 QAT of the `qat_model` .keras) of a `TASK_MODELS`
    model with random weights from `seed` (BatchNorm statistics from `calib`: `settled`):
    size, p50/p90 at 1 and `threads` threads, peak memory."""
    spec = TASK_MODELS[task]
    size = spec["size"]
    stem = _saved_random_model(
        lambda: getattr(kmv, spec["builder"])(spec["backbone"], input_shape=(size, size, 3)),
        seed, calib, workdir, size)
    paths, failures = _convert_variants(stem + ".keras", stem, calib, naive_ptq=False)
    if qat_model:
        paths["int8 QAT"] = convert_isolated(qat_model, f"{stem}_int8_qat.tflite", "int8", calib)
    thread_counts = _thread_counts(threads)
    return {"task": task, "model": os.path.basename(stem), "size": size, "seed": seed,
            "batchnorm_statistics": SETTLED_ON, "qat_model": qat_model, "targets": spec["targets"],
            "results": _time_and_size(paths, failures, thread_counts, (warmup, runs), keep_failed)}


def _calibration_count(text):
    count = int(text)
    if not 1 <= count <= 100:
        raise argparse.ArgumentTypeError(f"{count}: give 1 to 100 (convert calibrates on "
                                         "at most 100 images)")
    return count


def _at_least(low):
    """An argparse `type`: an int >= `low`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = "int"
    return parse


def _check_arguments(parser, args):
    """Argument errors that argparse cannot see, raised before anything is measured or
    written (the parts run for minutes each and the report is written after each)."""
    unknown = [name for name in args.latency_models if name not in kmv.list_models()]
    if unknown:
        parser.error(f"--latency-models {' '.join(unknown)}: not a variant; one of "
                     + ", ".join(kmv.list_models()))
    if args.qat_run and not args.float_run:
        parser.error("--qat-run needs --float-run (the float model it is measured against)")
    if args.qat_run and _run_task(parser, "--qat-run", args.qat_run) != "classification":
        parser.error(f"--qat-run {args.qat_run} is not a classification run")
    for flag, path in (("--seg-qat-model", args.seg_qat_model),
                       ("--det-qat-model", args.det_qat_model)):
        if path and not os.path.isfile(path):
            parser.error(f"{flag} {path}: no such file")
    if args.benchmarks_md and not os.path.isfile(args.benchmarks_md):
        parser.error(f"--benchmarks-md {args.benchmarks_md}: no such file (it updates the "
                     "LiteRT section of an existing BENCHMARKS.md)")
    problem = args.out and fileio.folder_problem(args.out)
    if problem:
        parser.error(f"--out {args.out}: {problem}")


def _parser():
    parser = argparse.ArgumentParser(prog="python -m tflite.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--float-run", help="training run folder of the float model")
    parser.add_argument("--qat-run", help="training run folder of the QAT model")
    parser.add_argument("--eval-limit", type=_at_least(1), default=None,
                        help="evaluate on the first N held-out images")
    parser.add_argument("--latency-models", nargs="*", default=[], help="variants to time at --size")
    parser.add_argument("--size", type=_at_least(kmv.models.MIN_INPUT_SIZE), default=256)
    parser.add_argument("--threads", type=_at_least(1), default=os.cpu_count() or 1,
                        help="N for the N-thread runs")
    parser.add_argument("--warmup", type=_at_least(0), default=10)
    parser.add_argument("--runs", type=_at_least(1), default=50)
    parser.add_argument("--naive-ptq", action="store_true", help="also the converter's own PTQ (slow graph)")
    parser.add_argument("--edge-quantizer", action="store_true",
                        help="also Google's ai-edge-quantizer static int8 of the float32 file, "
                        "same calibration images (needs: pip install -e .[bench])")
    parser.add_argument("--float-bounds", action="store_true",
                        help="also time float32 with swish / norm statistics cut out (lower bounds)")
    parser.add_argument("--int8-bounds", action="store_true",
                        help="also time int8 PTQ with swish / norm statistics / softmax cut "
                        "out (lower bounds for int8 graph changes)")
    parser.add_argument("--seed", type=int, default=0, help="random weights of the latency models")
    parser.add_argument("--baseline-python", help="python of the venv with torch, timm, onnxruntime")
    parser.add_argument("--out", default=None,
                        help="folder for benchmark.json, BENCHMARKS-tflite.md and the plot "
                        "(default: tflite/results/<today>)")
    parser.add_argument("--benchmarks-md", default=None,
                        help="also write the report into this BENCHMARKS.md's LiteRT section")
    parser.add_argument("--tasks", nargs="*", default=[], choices=tuple(TASK_MODELS),
                        help="also DeepLabV3-MobileViTv3-XS at 512 / SSDLite-MobileViTv3-XS "
                        "at 320 with random weights: float32 vs int8 PTQ")
    parser.add_argument("--seg-qat-model", help="a QAT DeepLabV3 .keras (same architecture "
                        "and size): adds its int8 QAT row")
    parser.add_argument("--det-qat-model", help="a QAT SSDLite .keras: adds its int8 QAT row")
    parser.add_argument("--seg-run", help="a trained segmentation run folder (train.py "
                        "--task segmentation): float32 / int8 PTQ / int8 QAT held-out mIoU")
    parser.add_argument("--seg-qat-run", help="the QAT run of --seg-run: adds its int8 QAT row")
    parser.add_argument("--det-run", help="a trained detection run folder (train.py --task "
                        "detection): float32 / int8 PTQ / int8 QAT held-out COCO mAP")
    parser.add_argument("--det-qat-run", help="the QAT run of --det-run: adds its int8 QAT row")
    parser.add_argument("--ptq-ranges", nargs="+", default=[], choices=range_search.METHODS,
                        help="also int8 PTQ with activation ranges chosen by these methods "
                        "(rows 'int8 PTQ (<method> ranges)') for --float-run, --seg-run and "
                        f"--det-run; 'int8 PTQ' uses the default, {qat.DEFAULT_RANGES!r}")
    parser.add_argument("--num-calib", type=_calibration_count, default=100,
                        help="calibration images (training split) of the --seg-run / "
                        "--det-run int8 files (default 100, convert's maximum)")
    parser.add_argument("--render", metavar="BENCHMARK_JSON",
                        help="measure nothing: render a stored benchmark.json (with "
                        "--benchmarks-md: into that file)")
    return parser


def _render(args):
    with open(args.render, encoding="utf-8") as f:
        report = json.load(f)
    report.setdefault("targets", ISSUE_4_TARGETS)  # runs before the targets were stored
    if args.benchmarks_md:
        benchmark_report.update_section(args.benchmarks_md, report, args.render)
    print(benchmark_report.markdown(report))
    return 0


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.render:
        return _render(args)
    _check_arguments(parser, args)
    task_runs = _task_runs(parser, args)
    out = args.out or os.path.join("tflite", "results", datetime.date.today().isoformat())
    command = " ".join(argv if argv is not None else sys.argv[1:])
    report = {"machine": machine_info(), "command": "python -m tflite.benchmark " + command,
              "targets": TARGETS, "complete": False}
    with tempfile.TemporaryDirectory() as workdir:
        # The report is written after every part, so a crash late in a long run keeps
        # what was measured before it ("complete": false until the end).
        if args.float_run:
            report["accuracy"] = accuracy_benchmark(
                args.float_run, args.qat_run, workdir, args.threads, args.warmup, args.runs,
                args.eval_limit, args.naive_ptq, args.edge_quantizer, args.ptq_ranges)
            benchmark_report.save(report, out)
        if args.latency_models:
            calib = _latency_calibration(args.size)
            report["latency"] = []
            for name in args.latency_models:
                report["latency"].append(latency_benchmark(
                    name, args.size, workdir, args.threads, args.warmup, args.runs, calib,
                    args.baseline_python, args.naive_ptq, args.float_bounds, args.seed,
                    keep_failed=os.path.join(out, "failed"), peer=args.edge_quantizer,
                    int8_bounds=args.int8_bounds))
                benchmark_report.save(report, out)
        for task in args.tasks:
            report.setdefault("tasks", []).append(_task_part(task, args, workdir, out))
            benchmark_report.save(report, out)
        for run, qat_run in task_runs:
            report.setdefault("task_accuracy", []).append(task_accuracy_benchmark(
                run, qat_run, workdir, args.threads, args.warmup, args.runs, args.eval_limit,
                args.num_calib, args.ptq_ranges))
            benchmark_report.save(report, out)
    report["complete"] = True
    benchmark_report.save(report, out)
    if "accuracy" in report:
        benchmark_report.plot(report, os.path.join(out, "accuracy_vs_latency.png"))
    if args.benchmarks_md:
        benchmark_report.update_section(args.benchmarks_md, report,
                                        os.path.join(out, "benchmark.json"))
    print(benchmark_report.markdown(report))
    return 0


def _run_task(parser, flag, run):
    """The "task" of the run folder given to `flag` (an argument error if it has none)."""
    path = os.path.join(run, rundir.CONFIG)
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(run, "model.keras")):
        parser.error(f"{flag} {run}: not a training run folder (it needs {rundir.CONFIG} "
                     "and model.keras, as train.py writes them)")
    return data.run_config(run).get("task", "classification")


def _task_runs(parser, args):
    """[(float run, QAT run or None)] of --seg-run / --det-run, each checked to be a run
    of its task (a segmentation or detection run given to --float-run is refused)."""
    if args.float_run:
        task = _run_task(parser, "--float-run", args.float_run)
        if task in TASK_RUN_FLAGS:
            parser.error(f"--float-run {args.float_run} is a {task} run: pass it as "
                         f"--{TASK_RUN_FLAGS[task]}-run (--float-run takes classification runs)")
    runs = []
    for task, short in TASK_RUN_FLAGS.items():
        run, qat_run = getattr(args, f"{short}_run"), getattr(args, f"{short}_qat_run")
        if qat_run and not run:
            parser.error(f"--{short}-qat-run needs --{short}-run (the float model it is "
                         "measured against)")
        for flag, folder in ((f"--{short}-run", run), (f"--{short}-qat-run", qat_run)):
            found = folder and _run_task(parser, flag, folder)
            if found and found != task:
                parser.error(f"{flag} {folder} is a {found} run, not a {task} run")
        if run:
            runs.append((run, qat_run))
    return runs


def _task_part(task, args, workdir, out):
    """`task_benchmark` of one `--tasks` entry, with its QAT model from the arguments."""
    qat_model = {"segmentation": args.seg_qat_model, "detection": args.det_qat_model}[task]
    calib = _latency_calibration(TASK_MODELS[task]["size"], TASK_CALIBRATION)
    return task_benchmark(task, workdir, args.threads, args.warmup, args.runs, calib, qat_model,
                          args.seed, os.path.join(out, "failed"))


def _latency_calibration(size, count=32):
    """Calibration images at `size`: the default dataset's train split through the eval
    transform (activation ranges only set how fast int8 runs here, weights are random)."""
    return data.calibration_images(data.default_config(size), count)


if __name__ == "__main__":
    sys.exit(main())
