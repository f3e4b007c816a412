"""TFLite metadata inside a `.tflite`: what MediaPipe Tasks and the Android Task Library read.

The metadata says what the input image is (RGB, its size, the mean/std that turn 0..255
pixels into what a float graph expects), what the output means (logits or
probabilities) and carries the labels file, so an app needs nothing but the model file.
It is built with MediaPipe's generated schema bindings and put into the file the way
tflite-support's `MetadataPopulator` does: the metadata flatbuffer in a model buffer
named by a `TFLITE_METADATA` entry, the associated files appended as a zip archive.
(MediaPipe's own populator cannot be used: it needs a compiled module its wheel lacks.)

One function per task builds `(ModelMetadataT, files)` from shared parts (`image_input`,
`_tensor`, `label_file`, `model_metadata`): `classifier` (ImageClassifier), `segmenter`
(ImageSegmenter) and `detector` (ObjectDetector on the four TFLite_Detection_PostProcess
outputs: boxes with BoundingBoxProperties, classes with a TENSOR_VALUE_LABELS labels
file, scores, count, under the names MediaPipe looks them up by).

Example:
    >>> from tflite import metadata
    >>> metadata.write("m_int8.tflite", ["cat", "dog"], output="logits",
    ...                name="mobilevitv3_xs", description="pets, int8")
    >>> meta, files = metadata.read("m_int8.tflite")
    >>> files["labels.txt"].decode().split()
    ['cat', 'dog']
"""

import io
import zipfile

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as model_fb
from mediapipe.tasks.metadata import image_segmenter_metadata_schema_py_generated as fb_segmenter
from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

from keras_mobilevit import fileio
from tflite import analyze, detection
from tflite.labels import check_labels

METADATA_NAME = "TFLITE_METADATA"  # the model's Metadata entry that readers look up
METADATA_IDENTIFIER = b"M001"  # metadata_schema.fbs's file_identifier
LABELS_FILE = "labels.txt"
OUTPUTS = ("logits", "probabilities")
_MEANINGS = {"logits": "logits (no softmax: rank them, or softmax them for probabilities)",
             "probabilities": "probabilities (softmax)"}
# What an app adds to a 0..255 pixel to feed an 8-bit input tensor of this type.
_BYTE_OFFSET = {"uint8": 0, "int8": -128}
# Ops whose output is a probability (per class); any other last op gives logits.
_PROBABILITY_OPS = ("SOFTMAX", "LOGISTIC")
_PROBABILITY_STATS = fb.StatsT(max=[1.0], min=[0.0])
# Ops between the last computing op and the graph output that do not change the meaning.
_PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE")
# Minimum metadata parser versions of the schema features written here (the rest of the
# schema we use dates from 1.0.0); see MediaPipe's metadata_version.cc.
_FEATURE_VERSIONS = {"subgraph_process_units": "1.1.0", "tensor_groups": "1.2.0",
                     "custom_metadata": "1.5.0"}
_CONTENT_TYPES = {fb.FeaturePropertiesT: fb.ContentProperties.FeatureProperties,
                  fb.ImagePropertiesT: fb.ContentProperties.ImageProperties,
                  fb.BoundingBoxPropertiesT: fb.ContentProperties.BoundingBoxProperties}
# The detector outputs' metadata names: MediaPipe's ObjectDetector finds the outputs by
# them (detection_postprocessing_graph.cc), in the op's order (boxes, classes, scores, count).
DETECTOR_OUTPUTS = ("location", "category", "score", "number of detections")
# Where left, top, right, bottom sit in the op's (ymin, xmin, ymax, xmax) boxes.
_BOX_INDEX = [1, 0, 3, 2]


class MetadataError(ValueError):
    """Metadata cannot describe this model as asked; the message says why and what to do."""


def graph_output_kind(tflite_model):
    """"probabilities" if the graph's (first) output comes out of a SOFTMAX or LOGISTIC
    (through quantize / reshape steps), else "logits"."""
    graph = analyze.load(tflite_model)
    producers = {t.index: op for op in graph.ops for t in op.outputs}
    op = producers.get(graph.outputs[0].index)
    while op is not None and op.name in _PASS_THROUGH and op.inputs:
        op = producers.get(op.inputs[0].index)
    return "probabilities" if op is not None and op.name in _PROBABILITY_OPS else "logits"


def image_input(graph, pixel_range=(0.0, 255.0)):
    """TensorMetadata of an RGB image input taking 0..255 pixels mapped onto `pixel_range`.

    A float input gets NormalizationOptions (`(pixel - mean) / std` lands in
    `pixel_range`); an 8-bit input takes camera bytes unchanged (int8: minus 128), so its
    quantization must map 0..255 onto `pixel_range` exactly."""
    tensor = _image_tensor(graph)
    if pixel_range is None:
        raise MetadataError("pixel_range=None: the metadata needs the value range the model "
                            "expects for 0..255 pixels, e.g. (0, 255) or (-1, 1)")
    lo, hi = (float(v) for v in pixel_range)
    _, height, width, _ = tensor.shape
    return _tensor("image",
                   f"RGB image, {width}x{height}, pixels 0..255 (model range [{lo:g}, {hi:g}])",
                   fb.ImagePropertiesT(colorSpace=fb.ColorSpaceType.RGB),
                   processUnits=_pixel_units(tensor, lo, hi), stats=fb.StatsT(max=[hi], min=[lo]))


def _tensor(name, description, properties, *, dims=None, **fields):
    """TensorMetadataT whose content has `properties` (Feature-, Image- or
    BoundingBoxPropertiesT); `dims` (min, max) the dimensions one content object spans
    (None: all but the batch); `fields`: further TensorMetadataT fields."""
    content = fb.ContentT(contentPropertiesType=_CONTENT_TYPES[type(properties)],
                          contentProperties=properties)
    if dims is not None:
        content.range = fb.ValueRangeT(min=dims[0], max=dims[1])
    return fb.TensorMetadataT(name=name, description=description, content=content, **fields)


def _image_tensor(graph):
    """The input tensor, refused unless it is one fixed-size (1, H, W, 3) image."""
    tensor = graph.inputs[0]
    if len(tensor.shape) != 4 or tensor.shape[-1] != 3:
        raise MetadataError(f"the input {tensor.name!r} has shape {tensor.shape}; image "
                            "metadata needs one NHWC RGB image input (1, H, W, 3)")
    signature = graph.model.subgraphs[0].tensors[tensor.index].shapeSignature
    if signature is not None and any(int(s) < 0 for s in signature):
        raise MetadataError(
            f"the input {tensor.name!r} has no fixed size (shape signature "
            f"{[int(s) for s in signature]}): convert with a fixed input size "
            "(convert(..., input_size=(H, W)) or --input-size) before adding metadata")
    return tensor


def _pixel_units(tensor, lo, hi):
    """The NormalizationOptions a float input needs (None for 8-bit inputs, after checking
    that their quantization takes camera bytes as values in [lo, hi])."""
    step = (hi - lo) / 255.0  # model input = lo + pixel * step
    if tensor.dtype == "float32":
        return [fb.ProcessUnitT(optionsType=fb.ProcessUnitOptions.NormalizationOptions,
                                options=fb.NormalizationOptionsT(mean=[(0.0 - lo) / step],
                                                                 std=[1.0 / step]))]
    if tensor.dtype not in _BYTE_OFFSET:
        raise MetadataError(f"the input {tensor.name!r} is {tensor.dtype}: image metadata "
                            "describes float32, uint8 or int8 images")
    # The app feeds q = pixel + offset; the model reads scale * (q - zero_point).
    offset = _BYTE_OFFSET[tensor.dtype]
    scale, zero = (tensor.scale[0], tensor.zero_point[0]) if tensor.scale else (1.0, 0)
    if not (np.isclose(scale, step, rtol=1e-3)
            and np.isclose(scale * (offset - zero), lo, atol=1e-3 * abs(step))):
        raise MetadataError(
            f"the {tensor.dtype} input {tensor.name!r} has scale {scale:.6g}, zero point "
            f"{zero}: it does not take raw 0..255 pixels (as q = pixel + {offset}) as values "
            f"in [{lo:g}, {hi:g}], so an app feeding camera bytes would feed it wrong values; "
            "convert with the model's pixel_range pinned (convert's default for raw-pixel "
            "models)")
    return None


def label_file(kind=fb.AssociatedFileType.TENSOR_AXIS_LABELS):
    """The labels file's entry: TENSOR_AXIS_LABELS maps output index i to line i
    (TENSOR_VALUE_LABELS, for a detector's class tensor, maps value i to line i)."""
    return fb.AssociatedFileT(name=LABELS_FILE, type=kind,
                              description="Class names, line i naming class i")


def classifier(tflite_model, labels, *, output=None, pixel_range=(0.0, 255.0), **general):
    """`(ModelMetadataT, {file name: bytes})` for an image classifier `.tflite`.

    `output` ("logits" or "probabilities") must agree with the graph's last op; None takes
    the graph's (`graph_output_kind`). `general`: name, description, version, author."""
    graph, output, labels = _one_image_model(tflite_model, labels, output)
    out = _tensor(output, f"Class {_MEANINGS[output]}", fb.FeaturePropertiesT(),
                  stats=_PROBABILITY_STATS if output == "probabilities" else None,
                  associatedFiles=[label_file()])
    subgraph = fb.SubGraphMetadataT(inputTensorMetadata=[image_input(graph, pixel_range)],
                                    outputTensorMetadata=[out])
    return model_metadata(subgraph, **general), _label_bytes(labels)


def segmenter(tflite_model, labels, *, output=None, pixel_range=(0.0, 255.0), **general):
    """Metadata for a semantic segmenter `.tflite` (output (1, H, W, classes)) that
    MediaPipe's ImageSegmenter reads: a category mask and, from logits through the
    softmax it is told to apply, per-class confidence masks. Arguments as `classifier`."""
    graph, output, labels = _one_image_model(tflite_model, labels, output)
    if len(graph.outputs[0].shape) != 4:
        raise MetadataError(f"a segmenter's output is (1, H, W, classes); this model's is "
                            f"{graph.outputs[0].shape}")
    out = _tensor("segmentation_masks", f"Per-pixel class {_MEANINGS[output]}",
                  fb.ImagePropertiesT(colorSpace=fb.ColorSpaceType.GRAYSCALE),
                  associatedFiles=[label_file()])
    activation = fb_segmenter.Activation.SOFTMAX if output == "logits" else fb_segmenter.Activation.NONE
    options = _pack(fb_segmenter.ImageSegmenterOptionsT(activation=activation), b"V001")
    subgraph = fb.SubGraphMetadataT(
        inputTensorMetadata=[image_input(graph, pixel_range)], outputTensorMetadata=[out],
        customMetadata=[fb.CustomMetadataT(name="SEGMENTER_METADATA", data=list(options))])
    return model_metadata(subgraph, **general), _label_bytes(labels)


def detector(tflite_model, labels, *, pixel_range=(0.0, 255.0), **general):
    """Metadata for a detector `.tflite` ending in TFLite_Detection_PostProcess
    (`tflite.detection`) that MediaPipe's ObjectDetector reads: boxes (ymin, xmin, ymax,
    xmax as fractions of the input: BoundingBoxProperties with the index of left, top,
    right, bottom), classes (value i = line i of the labels file, TENSOR_VALUE_LABELS:
    the op's class index has no background, so neither have the labels), scores, count.
    `labels`: the foreground class names, one per op class; `general` as `classifier`."""
    graph = analyze.load(tflite_model)
    op = detection.postprocess_op(graph)
    if op is None:
        raise MetadataError(f"detector metadata describes a model ending in {detection.OP_NAME}; "
                            "this one has no such op (a classifier or segmenter? use "
                            "task='classifier' or 'segmenter')")
    if [t.index for t in graph.outputs] != [t.index for t in op.outputs]:
        raise MetadataError(f"the model's outputs are not the {detection.OP_NAME} outputs in "
                            "the order boxes, classes, scores, count (convert with "
                            "tflite.convert, which orders them: detection.order_outputs)")
    classes = int(detection.op_attributes(graph)["num_classes"])
    labels = check_labels(labels, classes, f"the labels of a detector with {classes} object "
                          "classes (no background line: the op's class 0 is the first object)")
    # (metadata name, description) of each output
    location, category, score, count = zip(DETECTOR_OUTPUTS, detection.OUTPUT_MEANINGS)
    box = fb.BoundingBoxPropertiesT(index=_BOX_INDEX, type=fb.BoundingBoxType.BOUNDARIES,
                                    coordinateType=fb.CoordinateType.RATIO)
    # Content.range (min, max) = (2, 2) for the per-detection values, as metadata_schema.fbs
    # documents it for a detector's (1, D, 4) boxes and (1, D) scores.
    outputs = [
        _tensor(*location, box, dims=(2, 2)),
        _tensor(*category, fb.FeaturePropertiesT(), dims=(2, 2),
                associatedFiles=[label_file(fb.AssociatedFileType.TENSOR_VALUE_LABELS)]),
        _tensor(*score, fb.FeaturePropertiesT(), dims=(2, 2), stats=_PROBABILITY_STATS),
        _tensor(*count, fb.FeaturePropertiesT()),
    ]
    subgraph = fb.SubGraphMetadataT(inputTensorMetadata=[image_input(graph, pixel_range)],
                                    outputTensorMetadata=outputs)
    return model_metadata(subgraph, **general), _label_bytes(labels)


def _one_image_model(tflite_model, labels, output):
    """(graph, checked output kind, checked labels) of a one-input, one-output model."""
    graph = analyze.load(tflite_model)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise MetadataError(f"expected one image input and one output; this model has "
                            f"{len(graph.inputs)} input(s) and {len(graph.outputs)} output(s)")
    actual = graph_output_kind(graph)
    output = output or actual
    if output not in OUTPUTS:
        raise MetadataError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output != actual:
        raise MetadataError(
            f"output={output!r} contradicts the model, whose graph ends in "
            f"{'a softmax/sigmoid' if actual == 'probabilities' else 'no softmax'} ({actual}); "
            + ("convert with output='probabilities' (--output probabilities) to add a softmax"
               if actual == "logits" else "pass output='probabilities'"))
    return graph, output, check_labels(labels, graph.outputs[0].shape[-1])


def _label_bytes(labels):
    return {LABELS_FILE: ("\n".join(labels) + "\n").encode("utf-8")}


def model_metadata(subgraph, *, name="", description="", version="", author=""):
    """The root ModelMetadataT around one SubGraphMetadataT, with its min parser version."""
    meta = fb.ModelMetadataT(name=name or None, description=description or None,
                             version=version or None, author=author or None,
                             subgraphMetadata=[subgraph])
    meta.minParserVersion = min_parser_version(meta)
    return meta


def min_parser_version(meta):
    """The oldest metadata parser that understands every field used (semantic version)."""
    needed = ["1.0.0"]
    for sg in meta.subgraphMetadata or []:
        if sg.inputProcessUnits or sg.outputProcessUnits:
            needed.append(_FEATURE_VERSIONS["subgraph_process_units"])
        if sg.inputTensorGroups or sg.outputTensorGroups:
            needed.append(_FEATURE_VERSIONS["tensor_groups"])
        if sg.customMetadata:
            needed.append(_FEATURE_VERSIONS["custom_metadata"])
    return max(needed, key=lambda v: tuple(int(p) for p in v.split(".")))


def _pack(table, identifier=METADATA_IDENTIFIER):
    """Flatbuffer bytes of an object-API table (metadata: file identifier "M001")."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(table.Pack(builder), file_identifier=identifier)
    return bytes(builder.Output())


def populate(tflite_model, meta, files):
    """`.tflite` bytes carrying `meta` and `files` ({name: bytes}), replacing any metadata
    and associated files the model had (as tflite-support's MetadataPopulator stores them)."""
    graph = analyze.load(tflite_model)
    model = graph.model  # parsed flatbuffer only: an appended zip is dropped
    blob = model_fb.BufferT()
    blob.data = np.frombuffer(_pack(meta), np.uint8)
    entry = next((m for m in model.metadata or [] if _text(m.name) == METADATA_NAME), None)
    if entry is None:
        entry = model_fb.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers)
        model.buffers.append(blob)
        model.metadata = [*(model.metadata or []), entry]
    else:
        model.buffers[entry.buffer] = blob
    missing = _recorded_files(meta) - set(files)
    if missing:
        raise MetadataError(f"the metadata names files that were not given: {sorted(missing)}")
    content = io.BytesIO(analyze.pack(model))
    if files:
        # Appended after the flatbuffer: readers locate the zip by its end-of-archive record.
        with zipfile.ZipFile(content, "a") as archive:
            for file_name, data in files.items():
                archive.writestr(file_name, data)
    return content.getvalue()


def write(path, labels, task="classifier", **kwargs):
    """Put `task`'s metadata (a `TASKS` key, arguments as that function)
    into the `.tflite` at `path`, atomically; returns the ModelMetadataT."""
    if task not in TASKS:
        raise MetadataError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    meta, files = TASKS[task](path, labels, **kwargs)
    fileio.write_bytes_atomic(path, populate(path, meta, files))
    return meta


def read(tflite_model):
    """`(ModelMetadataT or None, {file name: bytes})` of a `.tflite` (path or bytes)."""
    graph = analyze.load(tflite_model)
    model = graph.model
    entry = next((m for m in model.metadata or [] if _text(m.name) == METADATA_NAME), None)
    meta = None
    if entry is not None:
        data = bytes(np.asarray(model.buffers[entry.buffer].data, np.uint8))
        if not fb.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0):
            raise MetadataError("the TFLITE_METADATA buffer is not a metadata flatbuffer")
        meta = fb.ModelMetadataT.InitFromPackedBuf(bytearray(data), 0)
    files = {}
    if zipfile.is_zipfile(io.BytesIO(graph.content)):
        with zipfile.ZipFile(io.BytesIO(graph.content)) as archive:
            files = {n: archive.read(n) for n in archive.namelist()}
    return meta, files


def _recorded_files(meta):
    """Names of the associated files the metadata refers to (at any level)."""
    tables = [meta, *(meta.subgraphMetadata or [])]
    for sg in meta.subgraphMetadata or []:
        tables += (sg.inputTensorMetadata or []) + (sg.outputTensorMetadata or [])
    return {_text(f.name) for t in tables for f in (t.associatedFiles or [])}


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


TASKS = {"classifier": classifier, "segmenter": segmenter, "detector": detector}
