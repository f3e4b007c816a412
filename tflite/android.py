"""What an Android app needs next to a `.tflite`: the labels and an I/O specification.

`write_artifacts("out/m_int8.tflite", labels=[...])` writes `out/m_int8.labels.txt` (one
class name a line, line i = class index i) and `out/m_int8.json` (a classifier's shown;
a segmenter's output is a class map or logits, a detector's four outputs are listed
under "outputs"):

    {"input": {"shape": [1, 256, 256, 3], "dtype": "uint8", "layout": "NHWC",
               "quantization": {"scale": 1.0, "zero_point": 0},
               "pixel_format": "RGB, 0..255 per channel, no mean/std ..."},
     "output": {"shape": [1, 10], "dtype": "uint8", "quantization": {...}, ...}, ...}
"""

import hashlib
import json
import os

from keras_mobilevit import fileio
from tflite import analyze, detection


def read_labels(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def _pixel_format(dtype, quant, pixel_range):
    if pixel_range is None:
        return "as the model's own preprocessing expects (no preprocessing inside the model)"
    lo, hi = pixel_range
    text = (f"RGB, {lo:g}..{hi:g} per channel (raw pixels, no mean/std normalization: "
            "the model rescales inside)")
    if quant and dtype in ("uint8", "int8"):
        text += (f"; feed bytes as q = round(pixel / {quant['scale']:.6g}) + "
                 f"{quant['zero_point']}" + (" (i.e. unchanged)" if dtype == "uint8" and
                                             abs(quant["scale"] - 1) < 1e-6 and
                                             quant["zero_point"] == 0 else ""))
    return text


_LABEL = "i = line i of the labels file"
_PREPROCESSING = {
    "classification": "resize the shorter side, center-crop to {h}x{w}, keep RGB order",
    "segmentation": "resize to {h}x{w} (no crop), keep RGB order; the class map is at that size",
    "detection": "resize to {h}x{w} (no crop), keep RGB order; boxes are fractions of it",
}


def _task_outputs(graph, outputs):
    """(task, number of classes) of a graph, with a "meaning" added to each output."""
    if detection.postprocess_op(graph) is not None:
        for out, meaning in zip(outputs, detection.OUTPUT_MEANINGS):
            out["meaning"] = meaning
        return "detection", detection.op_attributes(graph)["num_classes"]
    if len(outputs) != 1:
        raise ValueError(f"expected one output (or a detector's four); the model has "
                         f"{len(outputs)}")
    out, (h, w) = outputs[0], graph.inputs[0].shape[1:3]
    if tuple(out["shape"]) == (1, h, w):  # ARG_MAX inside: its input has the classes
        out["meaning"] = f"class index per pixel (argmax inside the model), value {_LABEL}"
        argmax = next(op for op in graph.ops if op.name == "ARG_MAX")
        return "segmentation", argmax.inputs[0].shape[-1]
    if len(out["shape"]) == 4:
        out["meaning"] = f"per-pixel class logits at the input size, channel {_LABEL}"
        return "segmentation", out["shape"][-1]
    out["meaning"] = f"class probabilities (softmax), index {_LABEL}"
    return "classification", out["shape"][-1]


def model_spec(tflite_model, *, labels=None, quantization=None, calibration=None,
               pixel_range=(0.0, 255.0)):
    """The I/O specification of a `.tflite` (classifier, segmenter or detector) as a
    JSON-ready dict."""
    graph = analyze.load(tflite_model)
    io = analyze.io_spec(graph)
    if len(io["inputs"]) != 1:
        raise ValueError(f"expected one image input; the model has {len(io['inputs'])}")
    inp, outs = io["inputs"][0], io["outputs"]
    task, num_classes = _task_outputs(graph, outs)
    h, w = inp["shape"][1:3]
    inp.update(
        layout="NHWC (batch, height, width, channels)",
        pixel_format=_pixel_format(inp["dtype"], inp.get("quantization"), pixel_range),
        preprocessing=_PREPROCESSING[task].format(h=h, w=w),
    )
    for out in outs:
        q = out.get("quantization")
        if q:
            out["dequantize"] = f"value = {q['scale']:.6g} * (q - {q['zero_point']})"
    if labels is not None and len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for a model with {num_classes} classes")
    custom = [op.custom_name for op in analyze.allowed_custom_ops(graph)]
    return {
        "task": task,
        "quantization": quantization,
        "calibration": calibration,
        "size_bytes": graph.size_bytes,
        "sha256": hashlib.sha256(graph.content).hexdigest(),
        "runtime": "LiteRT (TensorFlow Lite) builtin ops only; no Flex / select TF ops"
                   + "".join(f"; custom op {name}, which LiteRT registers by default"
                             for name in dict.fromkeys(custom)),
        "num_classes": num_classes,
        "input": inp,
        **({"outputs": outs} if task == "detection" else {"output": outs[0]}),
        "op_counts": graph.op_counts(),
    }


def write_artifacts(tflite_path, *, labels=None, **spec_kwargs):
    """Write `<stem>.labels.txt` and `<stem>.json` beside `tflite_path`; return the spec.

    Without `labels`, the labels file holds `class_0 ... class_{N-1}`.
    """
    spec = model_spec(tflite_path, labels=labels, **spec_kwargs)
    stem = os.path.splitext(tflite_path)[0]
    labels = labels or [f"class_{i}" for i in range(spec["num_classes"])]
    fileio.write_text_atomic(stem + ".labels.txt", "\n".join(labels) + "\n")
    spec["labels_file"] = os.path.basename(stem + ".labels.txt")
    spec["model_file"] = os.path.basename(tflite_path)
    fileio.write_text_atomic(stem + ".json", json.dumps(spec, indent=2))
    return spec
