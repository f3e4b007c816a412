"""Keras model -> `.tflite`: float32, float16, dynamic-range int8, full-integer int8.

Every mode converts with builtin ops only (never Flex / SELECT_TF_OPS) and a fixed
batch of 1. Full-integer int8 takes uint8 (or int8) input and output; when the model
takes raw pixels (preprocessing inside, the default for keras_mobilevit), the input
quantization is pinned to scale 1 so an app feeds camera bytes unchanged.

Example:
    >>> from tflite import convert
    >>> tfl = convert.convert(model, "int8", representative_data=images)  # images: (N, H, W, 3)
    >>> open("model_int8.tflite", "wb").write(tfl)

Command line (see `python -m tflite.convert --help`):
    python -m tflite.convert model.keras --quant int8 --calib training -o out/

Every file written by the command line carries TFLite metadata and the class names
(`tflite.android.write_artifacts`): MediaPipe Tasks' ImageClassifier, ImageSegmenter
(`--seg-output logits`) and ObjectDetector run it as is.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import warnings

import keras
import tensorflow as tf

import keras_mobilevit
from keras_mobilevit import fileio
from tflite import (analyze, android, calibration, compat, data, detection, folding, labels,
                    metadata, qat, range_search, range_ties, rewrite, segmentation, tasks)
from tflite.calibration import RAW_PIXELS
from tflite.qat import load_keras_model

MODES = ("float32", "float16", "dynamic", "int8")
# Ops an int8 model keeps in float by default, each between a DEQUANTIZE and a QUANTIZE:
# LiteRT's XNNPACK delegate has no int8 SOFTMAX or RSQRT, and the builtin int8 kernels
# it falls back to are slower than the float ones it delegates (see tflite/README.md).
KEEP_FLOAT = ("SOFTMAX", "RSQRT")


class ConversionError(RuntimeError):
    """The TFLite converter could not convert the model with builtin ops only."""


class NotFullyQuantizableError(ConversionError):
    """Full-integer conversion left float ops in the graph; `.ops` lists them."""

    def __init__(self, ops):
        self.ops = ops
        lines = "\n".join(f"  {op}" for op in ops)
        super().__init__(
            f"the model cannot be fully quantized to int8: {len(ops)} op(s) have no "
            f"integer kernel or no quantization range:\n{lines}"
        )


def model_input_shape(model, input_size=None):
    """(H, W, C) of a single-input image model; `input_size` fills unknown H, W."""
    shape = tuple(model.inputs[0].shape[1:])
    if input_size is not None:
        shape = (int(input_size[0]), int(input_size[1]), shape[-1])
    if any(s is None for s in shape):
        raise ValueError(f"the model's input shape {shape} is not fixed: pass input_size=(H, W)")
    return shape


def _export_saved_model(model, input_shape, directory, pin_range, head=None):
    """Write `model` (batch 1, float pixels in) as a SavedModel; `head` (a `tasks.Head`)
    ends the graph (segmentation argmax, detection post-processing op)."""
    head = head or tasks.Head("classification")

    def serve(pixels):
        if pin_range is not None:
            # A fake-quant range on the input fixes its int8 scale and zero point, so
            # raw uint8 pixels map onto the model input exactly (scale 1, zero point 0).
            pixels = keras.quantizers.fake_quant_with_min_max_vars(
                pixels, pin_range[0], pin_range[1], num_bits=8
            )
        return head.outputs(model(pixels, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", serve, input_signature=[tf.TensorSpec((1, *input_shape), tf.float32, "pixels")]
    )
    archive.write_out(directory, verbose=False)


def _converter(saved_model_dir, mode):
    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv


def _run_converter(conv):
    try:
        with _quiet_stderr():
            return conv.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises ConverterError and a few others
        raise ConversionError(_condense(str(e))) from None


def _condense(message):
    """Keep the converter's error lines (op names and locations), drop its stack dumps."""
    lines = [ln.strip() for ln in message.splitlines() if "error:" in ln or "Some ops" in ln]
    ops = sorted(set(re.findall(r"'(tf\.\w+|tfl\.\w+)' op", message)))
    head = f"ops involved: {', '.join(ops)}\n" if ops else ""
    if "neither a custom op nor a flex op" in message:
        head = (f"TensorFlow op(s) with no TFLite builtin kernel: {', '.join(ops)} "
                "(this project never enables Flex / SELECT_TF_OPS)\n")
    return head + ("\n".join(dict.fromkeys(lines)) or message.strip()[:2000])


@contextlib.contextmanager
def _quiet_stderr():
    """The converter prints MLIR diagnostics to fd 2; keep them out of the user's console
    unless TFLITE_CONVERT_VERBOSE is set (the exception carries the useful part)."""
    if os.environ.get("TFLITE_CONVERT_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def convert(
    model,
    mode="float32",
    representative_data=None,
    *,
    io_dtype="uint8",
    pixel_range=RAW_PIXELS,
    num_calibration_samples=100,
    input_size=None,
    keep_float=KEEP_FLOAT,
    allow_float_ops=False,
    ptq="auto",
    output=None,
    ranges=qat.DEFAULT_RANGES,
    task="auto",
    **task_options,
):
    """Convert a Keras model (or a `.keras` path) to `.tflite` bytes.

    Args:
        model: `keras.Model` or path to a `.keras` file.
        mode: "float32", "float16", "dynamic" (int8 weights, float activations) or
            "int8" (full integer, calibrated on `representative_data`).
        representative_data: images for calibration (see
            `calibration.representative_samples`);
            required for "int8", also for QAT models (tensors without a fake-quant range).
        io_dtype: "uint8" or "int8", the input/output type of an "int8" model.
        pixel_range: the input value range the model expects; (0, 255) pins the int8
            input to scale 1 so raw pixels go in unchanged. None leaves it calibrated.
        num_calibration_samples: at most this many images are used for calibration.
        input_size: (H, W) for models whose input size is not fixed.
        keep_float: for "int8", TFLite op names to keep in float (default: SOFTMAX and
            RSQRT, for speed under LiteRT); () for an integer-only graph.
        allow_float_ops: for "int8", return a graph with other float fallbacks instead
            of raising `NotFullyQuantizableError` (for diagnosis only).
        ptq: for "int8" of a float model (no fake-quant layers): "auto" (default) takes
            the int8 ranges from the model's QAT twin calibrated on
            `representative_data` (`qat.make_qat_model`: the fast int8 graph, see
            tflite/README.md), or, for a model with layers QAT does not cover, the
            converter's own calibration, with a warning; "converter" always takes the
            converter's own (the slow graph, for comparison).
        output: None (the model's own output), "logits" or "probabilities": the latter
            adds a softmax to a logits model (`with_output`).
        ranges: how the QAT twin's calibration (`ptq="auto"`) chooses each activation
            range: "percentile" (default), "mse" or "minmax" (`qat.calibrate`).
        task: what the graph ends in: "auto" (read from the model's outputs) or one of
            `tasks.TASKS`: a classifier's own output; a segmenter's class map or logits
            at the input size; a detector's TFLite_Detection_PostProcess (its outputs
            stay float32 in an int8 model). See tflite/tasks.py.
        task_options: `segmentation_output` ("class" or "logits"), `postprocess` (a
            `detection.PostprocessSpec`), `anchors`: see `tasks.resolve`.

    Returns:
        The flatbuffer as bytes, checked to hold builtin ops only (and the custom ops
        LiteRT registers by default, `analyze.ALLOWED_CUSTOM_OPS`).

    Example:
        >>> convert(deeplab, "int8", images, segmentation_output="logits")
        >>> convert(ssdlite, "int8", images)        # ends in TFLite_Detection_PostProcess
    """
    _check_options(mode, ptq, io_dtype, ranges)
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_model(model)
    input_shape = model_input_shape(model, input_size)
    model, head = tasks.resolve(model, task, input_size=input_shape[:2], **task_options)
    if mode != "int8":
        content = _convert_float(with_output(folding.fold_preprocessing(model), output),
                                 input_shape, mode, head)
    else:
        samples = calibration.representative_samples(
            representative_data, input_shape, num_calibration_samples, pixel_range)
        if ptq == "auto":
            model = _ptq_twin(model, samples, ranges)
        model = with_output(model, output)  # after the twin: QAT has no Softmax layer
        content = _convert_int8(model, input_shape, samples, pixel_range, io_dtype, head)
    content = head.finish(content)
    bad = analyze.non_builtin_ops(content)
    if bad:
        raise ConversionError("non-builtin ops in the converted graph: " + "; ".join(map(str, bad)))
    if mode == "int8":
        content = _finish_int8(content, keep_float, allow_float_ops, head)
    return content


def output_kind(model):
    """"probabilities" if the model's last layer ends in a softmax or sigmoid, else "logits"."""
    layer = model.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return "probabilities"
    activation = getattr(layer, "activation", None)  # a function, or a name (QAT layers)
    name = getattr(activation, "__name__", activation)
    return "probabilities" if name in ("softmax", "sigmoid") else "logits"


def with_output(model, output):
    """`model` with the `output` ("logits" or "probabilities"; None keeps it) it is asked
    for: a softmax added to a logits model; a probabilities model asked for logits is
    refused (the softmax is part of what it was trained as)."""
    if output is None or output == output_kind(model):
        return model
    if output not in metadata.OUTPUTS:
        raise ValueError(f"output must be one of {metadata.OUTPUTS}, got {output!r}")
    if output == "logits":
        raise ValueError(
            f"output='logits' contradicts the model: its last layer "
            f"{model.layers[-1].name!r} ends in a softmax/sigmoid, so it outputs "
            "probabilities; convert it without --output (or build it with "
            "classifier_activation=None for logits)")
    probabilities = keras.layers.Softmax(name="probabilities")(model.outputs[0])
    return keras.Model(model.inputs, probabilities, name=model.name)


def _check_options(mode, ptq, io_dtype, ranges):
    if ranges not in range_search.METHODS:
        raise ValueError(f"ranges must be one of {range_search.METHODS}, got {ranges!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if ptq not in ("auto", "converter"):
        raise ValueError(f"ptq must be 'auto' or 'converter', got {ptq!r}")
    if io_dtype not in ("uint8", "int8"):
        raise ValueError(f"io_dtype must be 'uint8' or 'int8', got {io_dtype!r}")


def _convert_float(model, input_shape, mode, head):
    with tempfile.TemporaryDirectory() as tmp:
        with _quiet_stderr(), range_ties.identity_steps_tied(model):  # a QAT model, too
            _export_saved_model(model, input_shape, tmp, None, head)
        return _run_converter(_converter(tmp, mode))


def _convert_int8(model, input_shape, samples, pixel_range, io_dtype, head):
    """Calibrated, then quantized by the converter's quantizer; the input range pinned to
    `pixel_range` (a QAT model's ranges tied around identity LayerNorm steps)."""
    with tempfile.TemporaryDirectory() as tmp:
        with _quiet_stderr(), range_ties.identity_steps_tied(model):
            _export_saved_model(model, input_shape, tmp, pixel_range, head)
        return quantize_calibrated(calibrate_tflite(tmp, samples), io_dtype,
                                   head.output_dtype(io_dtype))


def _finish_int8(content, keep_float, allow_float_ops, head):
    """Refuse ops the quantizer could not make integer (QUANTIZE/DEQUANTIZE only bridge
    them), move `keep_float` ops and the head's float ops to float islands, refuse what
    LiteRT cannot load."""
    blocking = [op for op in analyze.float_ops(content)
                if op.name not in ("QUANTIZE", "DEQUANTIZE")
                and op.custom_name not in analyze.ALLOWED_CUSTOM_OPS]  # float by design
    if blocking and not allow_float_ops:
        raise NotFullyQuantizableError(blocking)
    content = rewrite.float_islands(content, keep_float, ops=head.float_ops(content))
    _check_rescales(content)
    return content


def _check_rescales(content):
    """Refuse an int8 graph that LiteRT would abort on when the app loads it."""
    bad = analyze.unrepresentable_rescales(content)
    if bad:
        lines = [f"{op} (input scales {', '.join(f'{t.scale[0]:.3g}' for t in op.inputs)}, "
                 f"output scale {op.outputs[0].scale[0]:.3g}: rescale {m:.3g}, must be < 1)"
                 for op, m in bad]
        raise ConversionError(
            "the int8 graph has ops that LiteRT cannot run (loading it would abort the app): "
            + "; ".join(lines) + ". Their calibrated output range is almost empty: calibrate "
            "on more representative images, or use ptq='auto' (the default) for a float "
            "keras_mobilevit model.")


def ptq_twin(model, representative_data, ranges=qat.DEFAULT_RANGES, *,
             num_calibration_samples=100, pixel_range=RAW_PIXELS, input_size=None):
    """The Keras int8 model `convert(model, "int8", representative_data, ptq="auto")`
    quantizes: the QAT twin of a float model calibrated as `convert` calibrates it (a QAT
    model as it is). Its fake-quant outputs are what the int8 `.tflite` should give.

    Example:
        >>> twin = ptq_twin(float_model, images, ranges="mse")
        >>> twin.predict(images)        # ~ the int8 .tflite's outputs
    """
    samples = calibration.representative_samples(
        representative_data, model_input_shape(model, input_size), num_calibration_samples,
        pixel_range)
    return _ptq_twin(model, samples, ranges)


def _ptq_twin(model, samples, ranges=qat.DEFAULT_RANGES):
    """The calibrated QAT twin of a float model (its fake-quant ranges become the int8
    scales); QAT models and models QAT cannot cover are returned as they are."""
    if qat.fake_quant_layers(model):
        return model  # a QAT model: its own ranges
    try:
        # batches of at most 16 images of 256x256 pixels: a 512x512 segmenter's
        # attention maps at batch 16 took 8 GB
        h, w = (n or 256 for n in model.inputs[0].shape[1:3])
        return qat.make_qat_model(model, calibration_data=samples,
                                  num_calibration_samples=len(samples), ranges=ranges,
                                  batch_size=max(1, min(16, 16 * 256 * 256 // (h * w))))
    except qat.UnsupportedLayerError as e:
        warnings.warn(f"int8 ranges from the converter's own calibration (slower int8 graph): "
                      f"{e}", stacklevel=3)
        return model


def calibrate_tflite(saved_model_dir, samples):
    """A float `.tflite` carrying min/max statistics from `samples` (and the fake-quant
    ranges of a QAT model), ready for `quantize_calibrated`."""
    conv = _converter(saved_model_dir, "float32")
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s[None]] for s in samples)
    # The converter's own two steps (as its quantization debugger runs them), so that
    # ops without an int8 kernel are left float and can be named, not just refused.
    return _run_converter(compat.calibrate_only(conv))


def quantize_calibrated(calibrated, io_dtype="uint8", output_dtype=None):
    """Full-integer int8 model from a calibrated one (the converter's own quantizer);
    outputs of `output_dtype` (default `io_dtype`; "float32" for a detector's
    post-processing outputs).

    Ops it cannot quantize stay float, bridged by QUANTIZE / DEQUANTIZE."""
    try:
        with _quiet_stderr():
            content = compat.mlir_quantize(calibrated, io_dtype, output_dtype)
    except compat.PrivateAPIError:
        raise
    except Exception as e:  # noqa: BLE001  (the quantizer raises several error types)
        raise ConversionError(_condense(str(e))) from None
    return content


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser():
    parser = argparse.ArgumentParser(prog="python -m tflite.convert", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .keras file, a classifier variant name (see "
                        "keras_mobilevit.list_models()), or deeplabv3:<backbone> / ssdlite:<backbone>")
    parser.add_argument("-o", "--output-dir", dest="output_dir", default="build/tflite",
                        help="output folder (default: build/tflite)")
    parser.add_argument("--output", default=None, choices=metadata.OUTPUTS,
                        help="what the model outputs: by default what it computes (its last "
                        "activation; the spec and metadata say which); 'probabilities' adds a "
                        "softmax to a logits model")
    parser.add_argument("--quant", nargs="+", default=["float32", "int8"], choices=MODES + ("all",))
    parser.add_argument("--calib", default="training",
                        help="'training' (default: the training split through the eval transform "
                        "of the run that trained the model: its config.json must be next to the "
                        ".keras), 'random' (noise, latency only) or images in a .npz/.npy")
    parser.add_argument("--num-calib", type=_positive_int, default=100,
                        help="calibration images (default 100)")
    parser.add_argument("--io-dtype", default="uint8", choices=("uint8", "int8"))
    parser.add_argument("--strict-int8", action="store_true",
                        help="no float op at all (slower: int8 SOFTMAX/RSQRT run outside XNNPACK)")
    parser.add_argument("--ptq", default="auto", choices=("auto", "converter"),
                        help="int8 ranges of a float model: 'auto' (its calibrated QAT twin, the "
                        "fast graph) or 'converter' (the converter's own calibration, slower)")
    parser.add_argument("--ranges", default=qat.DEFAULT_RANGES, choices=range_search.METHODS,
                        help="how --ptq auto chooses each activation range from the calibration "
                        f"images (default {qat.DEFAULT_RANGES}; percentile: the 0.01th and "
                        "99.99th percentiles; mse: least expected squared int8 error; minmax: "
                        "the observed min/max, one pass, faster)")
    parser.add_argument("--weights", default=None, help="weights for a variant name (file path)")
    parser.add_argument("--classes", type=_positive_int, default=None,
                        help="classes of a model built by name (default: 1000 for a classifier, "
                        "21 for deeplabv3:, 81 with background for ssdlite:)")
    parser.add_argument("--input-size", type=_positive_int, default=None,
                        help="square input size (default: the model's)")
    parser.add_argument("--labels", default=None,
                        help="labels file, one class per line (default: the run folder's "
                        "labels.txt or dataset class names; ImageNet's for --weights imagenet); "
                        "a detector's: its object classes, a first 'background' line is dropped")
    parser.add_argument("--name", default=None, help="file name stem (default: the model's name)")
    parser.add_argument("--seg-output", default="class", choices=segmentation.OUTPUTS,
                        help="segmentation: 'class' (uint8 class index per pixel, argmax in "
                        "the model; default) or 'logits' (per-pixel logits)")
    parser.add_argument("--nms", default=None, choices=detection.NMS_MODES,
                        help="detection: the post-processing op's NMS (default: regular, per "
                        "class as the official code)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="detection: keep scores >= this (default: the model's official one)")
    parser.add_argument("--max-detections", type=_positive_int, default=None,
                        help="detection: output rows (default: the official per-image cap, else 100)")
    return parser


# `<builder>:<backbone>` names on the command line: (builder, default input size)
BUILDERS = {"deeplabv3": (keras_mobilevit.DeepLabV3, 512), "ssdlite": (keras_mobilevit.SSDLite, 320)}


def _build_model(args):
    """The Keras model named on the command line: a `.keras` path, a classifier variant
    name or `<builder>:<backbone>` (`BUILDERS`)."""
    if args.model.endswith(".keras"):
        return load_keras_model(args.model)
    builder, _, backbone = args.model.rpartition(":")
    classes = {"classes": args.classes} if args.classes else {}
    if builder:
        if builder not in BUILDERS:
            raise ValueError(f"unknown model builder {builder!r} in {args.model!r}: use one of "
                             f"{', '.join(f'{b}:<backbone>' for b in BUILDERS)}")
        build, size = BUILDERS[builder]
        size = args.input_size or size
        return build(backbone, weights=args.weights, input_shape=(size, size, 3), **classes)
    size = args.input_size or 256
    return keras_mobilevit.create_model(
        args.model, weights=args.weights, input_shape=(size, size, 3), **classes)


def _task_options(args, model):
    """`convert`'s task options from the command line, for the model's task."""
    task = tasks.task_of(model)
    if task == "segmentation":
        return {"segmentation_output": args.seg_output}
    overrides = {key: value for key, value in (
        ("nms", args.nms), ("score_threshold", args.score_threshold),
        ("max_detections", args.max_detections)) if value is not None}
    if task == "detection" and overrides:
        return {"postprocess": tasks.detection_spec(model, **overrides)}
    return {}


def _check_output_folder(parser, path):
    """Stop with an argument error when `path` cannot become the output folder (a file,
    or under one); reads only: the folder is created once every check has passed."""
    problem = fileio.folder_problem(path)
    if problem:
        parser.error(f"-o/--output-dir {path}: {problem}: name a folder")


def _output_folder(parser, path):
    """Create the output folder, or stop with an argument error (before any conversion)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        parser.error(f"-o/--output-dir {path}: cannot create the folder ({e.strerror})")


def _run_dir(args):
    """The training run folder of a `.keras` model (its config.json beside it), or None."""
    folder = os.path.dirname(os.path.abspath(args.model))
    if args.model.endswith(".keras") and os.path.exists(os.path.join(folder, "config.json")):
        return folder
    return None


def _labels(parser, args, model):
    """The class names (`labels.class_names`), checked against the model's outputs before
    anything is converted."""
    try:
        return labels.class_names(tasks.label_count(model), labels_file=args.labels,
                                  run_dir=_run_dir(args), weights=args.weights,
                                  background=tasks.task_of(model) == "detection")
    except (OSError, UnicodeDecodeError, labels.LabelsError) as e:
        parser.error(f"--labels {args.labels}: {e}" if args.labels else str(e))


def _calibration(parser, args, input_shape):
    """The checked calibration images for int8 (an argument error when they do not fit)."""
    try:
        images = calibration.calibration_data(args.calib, input_shape, args.num_calib,
                                              _run_dir(args))
        return calibration.representative_samples(images, input_shape, args.num_calib)
    except (calibration.CalibrationSourceError, calibration.RepresentativeDatasetError) as e:
        parser.error(f"--calib {args.calib}: {e}")


def _input_size(args, model):
    """(H, W) from --input-size; else the training run's image size for a model whose
    input size is not fixed (e.g. trained multi-scale); else None (the model's own)."""
    if args.input_size:
        return (args.input_size, args.input_size)
    run_dir = _run_dir(args)
    if run_dir and None in tuple(model.inputs[0].shape[1:3]):
        trained = data.run_config(run_dir)["pipeline"]["image_size"]
        return (trained, trained)
    return None


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    _check_output_folder(parser, args.output_dir)
    try:
        model = _build_model(args)
    except ValueError as e:
        parser.error(str(e))
    size = _input_size(args, model)
    input_shape = model_input_shape(model, size)
    modes = MODES if "all" in args.quant else tuple(dict.fromkeys(args.quant))
    samples = _calibration(parser, args, input_shape) if "int8" in modes else None
    names = _labels(parser, args, model)
    stem = args.name or model.name
    options = _task_options(args, model)
    _output_folder(parser, args.output_dir)
    for mode in modes:
        content = convert(model, mode, samples, io_dtype=args.io_dtype, input_size=size,
                          num_calibration_samples=args.num_calib, output=args.output,
                          keep_float=() if args.strict_int8 else KEEP_FLOAT, ptq=args.ptq,
                          ranges=args.ranges, **options)
        path = os.path.join(args.output_dir, f"{stem}_{mode}.tflite")
        fileio.write_bytes_atomic(path, content)  # a killed run never leaves a truncated model
        spec = android.write_artifacts(
            path, labels=names, quantization=mode,
            calibration=args.calib if mode == "int8" else None, name=stem,
            version=keras_mobilevit.__version__,
            description=f"{model.name}, {mode}, {len(names.names)} classes")
        print(f"{path}: {spec['size_bytes'] / 1e6:.2f} MB, "
              f"{spec['output_kind'] or spec['task']}, labels from "
              f"{spec['labels_source']}; input {json.dumps(spec['input'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
