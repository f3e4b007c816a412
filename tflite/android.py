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
from tflite import analyze, labels as class_labels, metadata

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


def model_spec(tflite_model, *, labels=None, quantization=None, calibration=None,
               pixel_range=(0.0, 255.0)):
    """The I/O specification of a `.tflite` as a JSON-ready dict; `labels` a list of class
    names or a `labels.ClassNames` (its source is recorded)."""
    graph = analyze.load(tflite_model)
    io = analyze.io_spec(graph)
    if len(io["inputs"]) != 1 or len(io["outputs"]) != 1:
        raise ValueError("expected an image classifier with one input and one output")
    inp, out = io["inputs"][0], io["outputs"][0]
    h, w = inp["shape"][1:3]
    inp.update(
        layout="NHWC (batch, height, width, channels)",
        pixel_format=_pixel_format(inp["dtype"], inp.get("quantization"), pixel_range),
        preprocessing=f"resize the shorter side, center-crop to {h}x{w}, keep RGB order",
    )
    kind = metadata.graph_output_kind(graph)  # what the graph computes, not what we assume
    out["meaning"] = f"{_MEANING[kind]}; index i = line i of the labels file"
    q = out.get("quantization")
    if q:
        out["dequantize"] = (f"{'p' if kind == 'probabilities' else 'logit'} = "
                             f"{q['scale']:.6g} * (q - {q['zero_point']})")
    num_classes = out["shape"][-1]
    names = _class_names(labels, num_classes)
    meta, _ = metadata.read(graph)
    return {
        "quantization": quantization,
        "calibration": calibration,
        "size_bytes": graph.size_bytes,
        "sha256": hashlib.sha256(graph.content).hexdigest(),
        "runtime": "LiteRT (TensorFlow Lite) builtin ops only; no Flex / select TF ops",
        "metadata": _metadata_note(meta, inp["dtype"]),
        "num_classes": num_classes,
        "output_kind": kind,
        "labels_source": names.source,
        "input": inp,
        "output": out,
        "op_counts": graph.op_counts(),
    }


def _metadata_note(meta, input_dtype):
    if meta is None:
        return None
    note = "TFLite metadata inside the file: input normalization, output meaning, labels"
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
    """Put metadata into the `.tflite` at `tflite_path`, then write `<stem>.labels.txt`
    and `<stem>.json` beside it; return the spec. Without `labels`, the labels are
    `class_0 ... class_{N-1}` and the spec's `labels_source` says so."""
    num_classes = analyze.load(tflite_path).outputs[0].shape[-1]
    names = _class_names(labels, num_classes)
    metadata.write(tflite_path, names.names, name=name, version=version,
                   description=description or f"image classifier, labels: {names.source}",
                   pixel_range=spec_kwargs.get("pixel_range", (0.0, 255.0)))
    spec = model_spec(tflite_path, labels=names, **spec_kwargs)
    stem = os.path.splitext(tflite_path)[0]
    fileio.write_text_atomic(stem + ".labels.txt", "\n".join(names.names) + "\n")
    spec["labels_file"] = os.path.basename(stem + ".labels.txt")
    spec["model_file"] = os.path.basename(tflite_path)
    fileio.write_text_atomic(stem + ".json", json.dumps(spec, indent=2))
    return spec
