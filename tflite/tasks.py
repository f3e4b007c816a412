"""What a converted model computes after its network, per task: classification (the
model's own output), segmentation (a class map or logits at the input size) or
detection (TFLite_Detection_PostProcess).

`resolve(model)` splits a Keras model into the network that is converted (and
quantized: its QAT twin is built from it) and a `Head` that ends the exported graph:

    trunk, head = tasks.resolve(model)            # the task read from the model's outputs
    serve = lambda pixels: head.outputs(trunk(pixels))

Example:
    >>> trunk, head = resolve(deeplab, segmentation_output="logits")
    >>> head.task, head.output_dtype("uint8")
    ('segmentation', 'uint8')
"""

import dataclasses

import keras

from tflite import detection, segmentation

TASKS = ("classification", "segmentation", "detection")
DETECTION_OUTPUTS = ("box_regressions", "class_logits")


@dataclasses.dataclass(frozen=True)
class Head:
    """The end of an exported graph.

    Attributes:
        task: one of TASKS.
        segmentation_output: "class" or "logits" (segmentation).
        align_corners: the final bilinear resize's mode; None: no resize (segmentation).
        size: (H, W) of the input (segmentation).
        spec: the post-processing op's attributes (detection).
        anchors: (A, 4) cx, cy, w, h normalized anchors (detection).
    """

    task: str
    segmentation_output: str = "class"
    align_corners: bool = None
    size: tuple = None
    spec: detection.PostprocessSpec = None
    anchors: object = None

    def outputs(self, raw):
        """TensorFlow ops from the trunk's outputs to the graph's outputs."""
        if self.task == "segmentation":
            return segmentation.segmentation_outputs(raw, self.size, self.align_corners,
                                                     self.segmentation_output)
        if self.task == "detection":
            return detection.detection_outputs(raw["box_regressions"], raw["class_logits"],
                                               self.anchors, self.spec)
        return raw

    def output_dtype(self, io_dtype):
        """The output type of a full-integer model: the op's float32 outputs for
        detection, else `io_dtype` (a class map is uint8 either way)."""
        return "float32" if self.task == "detection" else io_dtype

    @property
    def custom_ops(self):
        """The custom ops this graph may hold (LiteRT registers them by default)."""
        return (detection.OP_NAME,) if self.task == "detection" else ()

    def float_ops(self, content):
        """Indices of the ops of an int8 graph that compute in float (detection: the
        tail before the post-processing op, `detection.float_tail`)."""
        return detection.float_tail(content) if self.task == "detection" else set()

    def finish(self, content):
        """Edit the converted flatbuffer (detection: outputs in the order apps read)."""
        return detection.order_outputs(content) if self.task == "detection" else content


def task_of(model):
    """The task a Keras model's outputs say it does."""
    outputs = model.output if isinstance(model.output, dict) else {}
    if all(name in outputs for name in DETECTION_OUTPUTS):
        return "detection"
    out, inp = model.outputs[0].shape, model.inputs[0].shape
    if len(model.outputs) == 1 and len(out) == 4 and len(inp) == 4:
        return "segmentation"
    return "classification"


def label_count(model):
    """How many labels the model's classes take (a detector's without the background)."""
    if task_of(model) == "detection":
        return model.output["class_logits"].shape[-1] - 1
    return model.outputs[0].shape[-1]


def resolve(model, task="auto", *, segmentation_output="class", postprocess=None,
            anchors=None, input_size=None):
    """(trunk model, Head) for converting `model`.

    Args:
        model: a Keras classifier, segmenter (per-pixel logits at the input size, or a
            model ending in a bilinear resize to its input) or SSD detector (outputs
            `box_regressions` and `class_logits`; further post-processing outputs are
            dropped: the graph ends in TFLite_Detection_PostProcess instead).
        task: "auto" (from the outputs, `task_of`) or one of TASKS.
        segmentation_output: "class" (uint8 class index per pixel) or "logits".
        postprocess: a `detection.PostprocessSpec` (default: from the model, see
            `detection_spec`).
        anchors: (A, 4) cx, cy, w, h anchors (default: keras_mobilevit's, from the model).
        input_size: (H, W) when the model's input size is not fixed.
    """
    task = task_of(model) if task == "auto" else task
    if task not in TASKS:
        raise ValueError(f"task must be 'auto' or one of {TASKS}, got {task!r}")
    if task == "segmentation":
        if segmentation_output not in segmentation.OUTPUTS:
            raise ValueError(f"segmentation_output must be one of {segmentation.OUTPUTS}, "
                             f"got {segmentation_output!r}")
        trunk, align_corners = segmentation.split_upsampling(model)
        size = tuple(input_size or model.inputs[0].shape[1:3])
        return trunk, Head(task, segmentation_output, align_corners, size)
    if task == "detection":
        trunk = detection_trunk(model)
        spec = postprocess or detection_spec(model)
        anchors = model_anchors(model) if anchors is None else anchors
        return trunk, Head(task, spec=spec, anchors=anchors)
    return model, Head(task)


def detection_trunk(model):
    """The detector up to its raw outputs (box_regressions, class_logits)."""
    outputs = model.output if isinstance(model.output, dict) else {}
    missing = [name for name in DETECTION_OUTPUTS if name not in outputs]
    if missing:
        raise ValueError(f"a detector for TFLite must output {DETECTION_OUTPUTS}; "
                         f"{model.name} lacks {missing}")
    if set(outputs) == set(DETECTION_OUTPUTS):
        return model
    return keras.Model(model.inputs[0], {name: outputs[name] for name in DETECTION_OUTPUTS},
                       name=f"{model.name}_raw")


def model_anchors(model):
    """keras_mobilevit's anchors for an SSDLite model (or its QAT twin)."""
    from keras_mobilevit import detection as kmv_detection

    return kmv_detection.model_anchors(model)


def detection_spec(model, **overrides):
    """The op's attributes matching the model's own post-processing: its
    `SSDPostprocess` layer's settings, else the official ones of its backbone."""
    classes = model.output["class_logits"].shape[-1]
    # keras_mobilevit's SSDPostprocess layer (its config has the official fields)
    layers = [layer for layer in model.layers
              if hasattr(getattr(layer, "config", None), "nms_iou_threshold")]
    if layers:
        config = layers[0].config
    elif model.name.startswith("ssdlite_"):
        from keras_mobilevit import detection as kmv_detection

        config = kmv_detection.postprocess_config(model.name[len("ssdlite_"):])
    else:
        raise ValueError(f"cannot tell the post-processing settings of {model.name!r}: pass "
                         "postprocess=detection.PostprocessSpec(...)")
    return detection.PostprocessSpec.from_config(config, classes, **overrides)
