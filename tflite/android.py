"""What an Android app needs with a `.tflite`: metadata inside it, the labels and an I/O spec.

`write_artifacts("out/m_int8.tflite", labels=names)` puts TFLite metadata into the model
(`tflite.metadata`: image input, output meaning, the labels file packed in; what
MediaPipe Tasks' ImageClassifier reads), then writes `out/m_int8.labels.txt` (one class
name a line, line i = output index i) and `out/m_int8.json`:

    {"input": {"shape": [1, 256, 256, 3], "dtype": "uint8", "layout": "NHWC",
               "quantization": {"scale": 1.0, "zero_point": 0},
               "pixel_format": "RGB, 0..255 per channel, no mean/std ..."},
     "output": {"shape": [1, 10], "dtype": "uint8", "meaning": "class logits ...", ...},
     "labels_source": "runs/x/labels.txt", ...}
"""

import hashlib
import json
import os

from keras_mobilevit import fileio
from tflite import analyze, detection, labels as class_labels, metadata

_MEANING = {"logits": "class logits (no softmax: the largest is the top-1; apply a softmax "
                      "for probabilities)",
            "probabilities": "class probabilities (softmax in the model)"}


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
    kind = metadata.graph_output_kind(graph)  # what the graph computes, not what we assume
    out["meaning"] = f"{_MEANING[kind]}; index {_LABEL}"
    return "classification", out["shape"][-1]


def model_spec(tflite_model, *, labels=None, quantization=None, calibration=None,
               pixel_range=(0.0, 255.0)):
    """The I/O specification of a `.tflite` (classifier, segmenter or detector) as a
    JSON-ready dict; `labels` a list of class names or a `labels.ClassNames` (its source
    is recorded)."""
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
    kind = metadata.graph_output_kind(graph) if task == "classification" else None
    for out in outs:
        q = out.get("quantization")
        if q:
            value = {"probabilities": "p", "logits": "logit"}.get(kind, "value")
            out["dequantize"] = f"{value} = {q['scale']:.6g} * (q - {q['zero_point']})"
    given = getattr(labels, "names", labels)
    if given is not None and len(given) != num_classes:
        raise ValueError(f"{len(given)} labels for a model with {num_classes} classes")
    names = _class_names(labels, num_classes)
    meta, _ = metadata.read(graph)
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
        "metadata": _metadata_note(meta, inp["dtype"]),
        "num_classes": num_classes,
        "output_kind": kind,
        "labels_source": names.source,
        "input": inp,
        **({"outputs": outs} if task == "detection" else {"output": outs[0]}),
        "op_counts": graph.op_counts(),
    }


def _metadata_note(meta, input_dtype):
    if meta is None:
        return None
    note = "TFLite metadata inside the file: input normalization, output meaning, labels"
    outputs = [t.name for t in meta.subgraphMetadata[0].outputTensorMetadata or []]
    if len(outputs) > 1:  # a detector's, named as MediaPipe's ObjectDetector reads them
        note += f"; outputs {', '.join(name.decode() for name in outputs)}"
    if input_dtype not in ("uint8", "float32"):  # MediaPipe's image tasks refuse int8 input
        note += "; MediaPipe Tasks needs uint8 or float32 input (convert with --io-dtype uint8)"
    return note


def _class_names(labels, num_classes):
    if labels is None:
        return class_labels.class_names(num_classes)
    if not isinstance(labels, class_labels.ClassNames):
        labels = class_labels.ClassNames(list(labels), "given by the caller")
    class_labels.check_labels(labels.names, num_classes, labels.source)
    return labels


def write_artifacts(tflite_path, *, labels=None, name="", description="", version="",
                    **spec_kwargs):
    """Put metadata into the `.tflite` at `tflite_path` (classifiers, segmenters with a
    logits output and detectors: what MediaPipe's ImageClassifier / ImageSegmenter /
    ObjectDetector read), then write `<stem>.labels.txt` and `<stem>.json` beside it;
    return the spec. Without `labels`, the labels are `class_0 ... class_{N-1}` and the
    spec's `labels_source` says so (a detector's: its object classes, no background)."""
    graph = analyze.load(tflite_path)
    task, num_classes = _task_outputs(graph, analyze.io_spec(graph)["outputs"])
    names = _class_names(labels, num_classes)
    meta_task = {"classification": "classifier", "segmentation": "segmenter",
                 "detection": "detector"}[task]
    if meta_task == "segmenter" and len(graph.outputs[0].shape) != 4:
        meta_task = None  # a uint8 class map: MediaPipe's segmenter reads masks or logits
    if meta_task:
        metadata.write(tflite_path, names.names, task=meta_task, name=name, version=version,
                       description=description or f"image {meta_task}, labels: {names.source}",
                       pixel_range=spec_kwargs.get("pixel_range", (0.0, 255.0)))
    spec = model_spec(tflite_path, labels=names, **spec_kwargs)
    stem = os.path.splitext(tflite_path)[0]
    fileio.write_text_atomic(stem + ".labels.txt", "\n".join(names.names) + "\n")
    spec["labels_file"] = os.path.basename(stem + ".labels.txt")
    spec["model_file"] = os.path.basename(tflite_path)
    fileio.write_text_atomic(stem + ".json", json.dumps(spec, indent=2))
    return spec
