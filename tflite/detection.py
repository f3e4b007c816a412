"""End an SSD graph in LiteRT's `TFLite_Detection_PostProcess`, the detection output
Android detectors and MediaPipe's ObjectDetector read.

The op is a custom op that LiteRT registers by default (no custom resolver in the
app). It takes box encodings (1, A, 4) in (y, x, h, w) order, class scores (1, A, C)
(after softmax; column 0 is background when C = `num_classes` + 1) and a constant
anchor tensor (A, 4) in (y, x, h, w) order, decodes the boxes with scales 10/10/5/5
(= 1 / the variances 0.1/0.1/0.2/0.2) and runs NMS. Its four float32 outputs, in
this order after `order_outputs`:

    boxes   (1, D, 4)  ymin, xmin, ymax, xmax, normalized to the input
    classes (1, D)     class index without background (the official label - 1)
    scores  (1, D)     class probability
    count   (1,)       number of valid rows

TensorFlow has no such op: the converter builds it from a `tf.function` whose
`experimental_implements` names it and carries its attributes (the route of the
TensorFlow Object Detection API's TFLite export); the function body is a placeholder.

How it relates to the official post-processing (`keras_mobilevit.postprocess`):
regular NMS (`use_regular_nms`, the default) is per class, as the official code; the op
keeps a score `>=` the threshold (official: `>`), runs NMS over every candidate of a
class and keeps up to `detections_per_class` (official v0.2: NMS over the best 400
candidates only), and always returns the best `max_detections` of the image by score
(official v0.1: no cap, ordered by class). "fast" NMS (one class-agnostic NMS over each
anchor's best class) is quicker and differs from the official results more.

Example:
    >>> spec = PostprocessSpec.from_config(POSTPROCESS["v0.2"], classes=81)
    >>> boxes, classes, scores, count = detection_outputs(regressions, logits, anchors, spec)
"""

import dataclasses

import numpy as np
from flatbuffers import flexbuffers

from tflite import analyze

OP_NAME = "TFLite_Detection_PostProcess"
OUTPUT_NAMES = ("boxes", "classes", "scores", "count")
OUTPUT_MEANINGS = (
    "boxes (1, D, 4): ymin, xmin, ymax, xmax as fractions of the input (not clipped)",
    "classes (1, D): class index without the background, value i = line i of the labels file",
    "scores (1, D): class probability (softmax)",
    "count (1,): number of valid rows in the three others",
)
# TensorFlow Object Detection API names of the four outputs, which apps look up.
TENSOR_NAMES = (OP_NAME, f"{OP_NAME}:1", f"{OP_NAME}:2", f"{OP_NAME}:3")
CENTER_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
DEFAULT_MAX_DETECTIONS = 100
NMS_MODES = ("regular", "fast")


@dataclasses.dataclass(frozen=True)
class PostprocessSpec:
    """The attributes of one `TFLite_Detection_PostProcess` op.

    Attributes:
        num_classes: foreground classes (the class scores have one more column, the
            background, at index 0).
        score_threshold: candidates need a score >= this.
        iou_threshold: NMS suppresses boxes above this IoU with a better one.
        max_detections: rows of the outputs.
        detections_per_class: regular NMS keeps at most this many per class.
        nms: "regular" (per class, as the official code) or "fast" (class-agnostic).
        center_variance, size_variance: the box coder's variances.
    """

    num_classes: int
    score_threshold: float
    iou_threshold: float
    max_detections: int = DEFAULT_MAX_DETECTIONS
    detections_per_class: int = DEFAULT_MAX_DETECTIONS
    nms: str = "regular"
    center_variance: float = CENTER_VARIANCE
    size_variance: float = SIZE_VARIANCE

    def __post_init__(self):
        if self.nms not in NMS_MODES:
            raise ValueError(f"nms must be one of {NMS_MODES}, got {self.nms!r}")
        if self.num_classes < 1 or self.max_detections < 1 or self.detections_per_class < 1:
            raise ValueError(f"num_classes, max_detections and detections_per_class must be "
                             f"positive: {self}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")

    @classmethod
    def from_config(cls, config, classes, max_detections=None, **overrides):
        """The op's closest match to an official post-processing config.

        Args:
            config: a `keras_mobilevit.postprocess.PostprocessConfig` (or an object
                with its fields: score_threshold, nms_iou_threshold, pre_nms_top_k,
                max_per_class, max_detections).
            classes: class-score columns, background included (COCO: 81).
            max_detections: output rows; default the config's per-image cap, else 100
                (the op needs a fixed number; v0.1 has no cap).
        """
        rows = max_detections or config.max_detections or DEFAULT_MAX_DETECTIONS
        per_class = config.max_per_class or config.pre_nms_top_k or rows
        return cls(num_classes=classes - 1, score_threshold=float(config.score_threshold),
                   iou_threshold=float(config.nms_iou_threshold), max_detections=int(rows),
                   detections_per_class=int(min(per_class, rows)), **overrides)

    @property
    def scales(self):
        """(y, x, h, w) scales of the op: the inverse variances."""
        c, s = 1.0 / self.center_variance, 1.0 / self.size_variance
        return c, c, s, s

    def attributes(self):
        y, x, h, w = self.scales
        return {
            "max_detections": self.max_detections,
            "max_classes_per_detection": 1,
            "detections_per_class": self.detections_per_class,
            "use_regular_nms": self.nms == "regular",
            "nms_score_threshold": self.score_threshold,
            "nms_iou_threshold": self.iou_threshold,
            "num_classes": self.num_classes,
            "y_scale": y, "x_scale": x, "h_scale": h, "w_scale": w,
        }

    def implements_signature(self):
        """The `experimental_implements` string the converter turns into the op: a
        NameAttrList in protobuf text format."""
        def value(v):
            if isinstance(v, bool):
                return f"b: {str(v).lower()}"
            if isinstance(v, int):
                return f"i: {v}"
            return f"f: {float(v)!r}"

        attrs = " ".join(f'attr {{ key: "{k}" value {{ {value(v)} }} }}'
                         for k, v in self.attributes().items())
        return f'name: "{OP_NAME}" {attrs}'


def anchors_yxhw(anchors_cxcywh):
    """(A, 4) anchors cx, cy, w, h (keras_mobilevit's order) -> the op's y, x, h, w."""
    anchors = np.asarray(anchors_cxcywh, np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be (A, 4) cx, cy, w, h; got shape {anchors.shape}")
    return np.ascontiguousarray(anchors[:, [1, 0, 3, 2]])


def detection_outputs(box_regressions, class_logits, anchors_cxcywh, spec):
    """TensorFlow ops ending a detector in `TFLite_Detection_PostProcess` (call inside the
    exported function).

    Args:
        box_regressions: (1, A, 4) encodings in cx, cy, w, h order (official SSD).
        class_logits: (1, A, C) logits, background at column 0.
        anchors_cxcywh: (A, 4) normalized anchors of the same rows.
        spec: a `PostprocessSpec`.

    Returns:
        The op's four outputs (boxes, classes, scores, count), placeholders in
        TensorFlow: only the converted `.tflite` computes them.
    """
    import tensorflow as tf

    anchors = anchors_yxhw(anchors_cxcywh)
    num_anchors, num_classes = class_logits.shape[1], class_logits.shape[2]
    if box_regressions.shape[1] != num_anchors or len(anchors) != num_anchors:
        raise ValueError(f"{box_regressions.shape[1]} box rows, {num_anchors} class rows and "
                         f"{len(anchors)} anchors: they must be equal")
    if num_classes != spec.num_classes + 1:
        raise ValueError(f"class_logits has {num_classes} columns; the op expects "
                         f"num_classes + 1 = {spec.num_classes + 1} (background first)")
    scores = tf.nn.softmax(class_logits, axis=-1)
    encodings = tf.gather(box_regressions, [1, 0, 3, 2], axis=-1)  # -> y, x, h, w

    @tf.function(experimental_implements=spec.implements_signature())
    def postprocess(encodings, scores, anchors):  # noqa: ARG001  (the converter replaces it)
        placeholder = tf.constant(0.0)
        return placeholder, placeholder, placeholder, placeholder

    return postprocess(encodings, scores, tf.constant(anchors))


def postprocess_op(model):
    """The graph's one `TFLite_Detection_PostProcess` op (an `analyze.Op`), or None."""
    found = [op for op in analyze.load(model).ops if op.custom_name == OP_NAME]
    if len(found) > 1:
        raise ValueError(f"{len(found)} {OP_NAME} ops in one graph; expected one")
    return found[0] if found else None


# Ops between the levels' int8 outputs and the op's box / score inputs.
_TAIL_PATH = ("DEQUANTIZE", "QUANTIZE", "GATHER", "SOFTMAX")


def float_tail(model):
    """Indices of the ops that make the op's box and score inputs from the levels' int8
    outputs (the concatenations over the levels, the box reorder, the softmax), for
    `rewrite.float_islands(ops=...)`: in float, each level's values keep their own int8
    scale, where an int8 concatenation gave all six levels one (the boxes lost up to a
    pixel, `python -m tflite.quant_error`); the op takes float inputs anyway."""
    graph = analyze.load(model)
    op = postprocess_op(graph)
    if op is None:
        return set()
    producer = {t.index: o for o in graph.ops for t in o.outputs}
    picked, pending = set(), [t.index for t in op.inputs[:2]]  # encodings, scores
    while pending:
        source = producer.get(pending.pop())
        if source is None or source.name not in _TAIL_PATH + ("CONCATENATION",):
            continue
        if source.name not in ("DEQUANTIZE", "QUANTIZE"):
            picked.add(source.index)
        if source.name != "CONCATENATION":  # the levels' outputs: where the tail starts
            pending.extend(t.index for t in source.inputs if not t.is_constant)
    return picked


def _op_and_attributes(graph):
    op = postprocess_op(graph)
    if op is None:
        raise ValueError(f"no {OP_NAME} op in the graph")
    raw = graph.model.subgraphs[0].operators[op.index].customOptions
    return op, flexbuffers.Loads(bytes(bytearray(raw)))


def op_attributes(model):
    """The attributes of the graph's `TFLite_Detection_PostProcess` op (its flexbuffer
    custom options: num_classes, max_detections, nms_score_threshold, ...)."""
    return _op_and_attributes(analyze.load(model))[1]


def order_outputs(content):
    """`.tflite` bytes whose outputs are the op's, in the order apps expect (boxes,
    classes, scores, count), named as the Object Detection API names them, with their
    shapes written in.

    The converter lists the outputs in an order of its own and leaves their shapes
    unknown until the op runs; MediaPipe's ObjectDetector and the usual Android code
    read them by position, metadata writers and the .json spec read the shapes.
    """
    graph = analyze.load(content)
    op, attributes = _op_and_attributes(graph)
    model, wanted = graph.model, [t.index for t in op.outputs]
    sg = model.subgraphs[0]
    if sorted(wanted) != sorted(int(t) for t in sg.outputs):
        raise ValueError(f"the graph's outputs are not exactly the {OP_NAME} outputs")
    sg.outputs = wanted
    rows = int(attributes["max_detections"])
    for index, name, shape in zip(wanted, TENSOR_NAMES, ([1, rows, 4], [1, rows], [1, rows], [1])):
        sg.tensors[index].name = name
        sg.tensors[index].shape = shape
        sg.tensors[index].shapeSignature = None
    for signature in model.signatureDefs or []:
        by_tensor = {int(t.tensorIndex): t for t in signature.outputs}
        signature.outputs = [by_tensor[i] for i in wanted]
        for t, name in zip(signature.outputs, OUTPUT_NAMES):
            t.name = name
    return analyze.pack(model)
