"""SSDLite on any MobileViT backbone, as the official cvnets / MobileViTv3 code builds it.

Levels: backbone stride 16 and 32 maps, three separable stride-2 extra layers (strides
64, 128, 256) and a global-pooling level; per level an optional 1x1 projection and a
separable 3x3 prediction conv giving anchors x (4 box + classes) channels. Layer names
are the official state_dict prefixes ("extra_layers.os_64.dw_conv", "ssd_heads.0.proj_layer";
the backbone keeps its classification names, the checkpoints' "encoder." prefix is
stripped on loading), so official detection checkpoints load by name.

Example:
    >>> model = SSDLite("mobilevitv3_xs", weights="path/to/coco-ssd.pt")
    >>> out = model.predict(images_uint8)        # [N, 320, 320, 3] RGB
    >>> out["boxes"][0, :out["num_detections"][0]]    # x1, y1, x2, y2 in [0, 1]
"""

import numbers

import keras
from keras import ops

from keras_mobilevit import anchors as anchor_lib
from keras_mobilevit import architectures
from keras_mobilevit import layers as L
from keras_mobilevit import models
from keras_mobilevit import weights as W
from keras_mobilevit.postprocess import POSTPROCESS, PostprocessConfig, SSDPostprocess

PROJ_CHANNELS = (512, 256, 256, 128, 128, 64)  # model.detection.ssd.proj_channels
BACKBONE_LEVELS = {16: "s16", 32: "s32"}  # output stride -> backbone feature level
DEFAULT_INPUT_SHAPE = (320, 320, 3)
COORDINATES = 4
# v1 and v3 XXS/XS/S come from the cvnets v0.1 code base, v2 and v3 0.5-1.0 from v0.2.
CODE_BASE = {"v1": "v0.1", "v3_v1": "v0.1", "v2": "v0.2", "v3_v2": "v0.2"}


def level_name(stride):
    """'os_64' / 'os_-1': the official name of a level."""
    return f"os_{stride}"


def feature_layer_name(stride):
    """Name of the layer whose output is a level's feature map ('features_os_global')."""
    return f"features_os_{'global' if stride == -1 else stride}"


def postprocess_config(backbone):
    """The official post-processing settings of a backbone's detector."""
    return POSTPROCESS[CODE_BASE[architectures.get_family(backbone)]]


@keras.saving.register_keras_serializable(package="keras_mobilevit")
class SSDHeadOutput(keras.layers.Layer):
    """[B, H, W, anchors * (4 + C)] -> ([B, H*W*anchors, 4], [B, H*W*anchors, C]).

    Rows are row-major over (y, x), then anchor, as the official NCHW permute + view gives.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def call(self, x):
        x = ops.reshape(x, (ops.shape(x)[0], -1, COORDINATES + self.num_classes))
        return x[..., :COORDINATES], x[..., COORDINATES:]

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        rows = None if None in (height, width) else (
            height * width * channels // (COORDINATES + self.num_classes))
        return (batch, rows, COORDINATES), (batch, rows, self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def _conv_relu(x, filters, kernel_size, strides=1, use_norm=True, name=None):
    """ConvLayer(use_act=True) of the official head: conv (+ BN) + ReLU."""
    x = L.ConvNormAct(filters, kernel_size, strides=strides, use_norm=use_norm, activation=None,
                      name=name)(x)
    return keras.layers.ReLU(name=f"{name}.act")(x)


def _extra_levels(features, spec=anchor_lib.SSD_ANCHORS):
    """Backbone maps -> the six SSD feature maps, in output-stride order."""
    levels = []
    for stride, channels in zip(spec.output_strides, PROJ_CHANNELS):
        name = f"extra_layers.{level_name(stride)}"
        if stride in BACKBONE_LEVELS:
            x = features[BACKBONE_LEVELS[stride]]
        elif stride == -1:  # AdaptiveAvgPool2d(1) -> 1x1 conv (no norm) + ReLU
            x = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.0")(levels[-1])
            x = L.ConvNormAct(channels, 1, use_norm=False, activation=None, name=f"{name}.1")(x)
        else:  # SeparableConv: depthwise 3x3 stride 2 + BN, then 1x1 + BN + ReLU
            _check_downsampling(levels[-1], stride)
            x = L.ConvNormAct(levels[-1].shape[-1], 3, strides=2, depthwise=True,
                              activation=None, name=f"{name}.dw_conv")(levels[-1])
            x = L.ConvNormAct(channels, 1, activation=None, name=f"{name}.pw_conv")(x)
        act = keras.layers.Identity if stride in BACKBONE_LEVELS else keras.layers.ReLU
        levels.append(act(name=feature_layer_name(stride))(x))
    return levels


def _check_downsampling(x, stride):
    """A stride-2 extra level needs a map of at least 2x2 to reduce (else no new grid)."""
    height, width = x.shape[1:3]
    if height is None or width is None:
        raise ValueError("SSDLite needs a fixed input size (the anchors depend on it): pass "
                         "input_shape=(height, width, 3), e.g. (320, 320, 3).")
    if min(height, width) < 2:
        raise ValueError(
            f"The input is too small for the SSD anchor grid: the stride-{stride // 2} level "
            f"is only {height}x{width}, so the stride-{stride} level has nothing to "
            f"downsample. Use an input of at least 129x129 pixels (the official size is "
            f"320x320).")


def _head(x, index, stride, num_anchors, num_classes, proj_channels):
    """One SSDHead: optional 1x1 projection, then the separable (or 1x1) prediction conv."""
    name = f"ssd_heads.{index}"
    spatial = stride != -1  # the global level predicts with a plain 1x1 conv
    if spatial and proj_channels != x.shape[-1]:
        x = _conv_relu(x, proj_channels, 1, name=f"{name}.proj_layer")
    out = num_anchors * (COORDINATES + num_classes)
    if spatial:
        x = L.ConvNormAct(x.shape[-1], 3, depthwise=True, activation=None,
                          name=f"{name}.loc_cls_layer.dw_conv")(x)
        x = keras.layers.Dense(out, name=f"{name}.loc_cls_layer.pw_conv")(x)  # 1x1 conv + bias
    else:
        x = keras.layers.Dense(out, name=f"{name}.loc_cls_layer")(x)
    return SSDHeadOutput(num_classes, name=f"{name}.output")(x)


def _validate(backbone, weights, backbone_weights, classes, input_shape):
    architectures.get_spec(backbone)
    if not (weights in (None, "coco") or W.is_weights_path(weights)):
        raise ValueError(f"`weights` must be None, 'coco', or the path of an existing official "
                         f".pt detection checkpoint or Keras .weights.h5 file; got {weights!r}.")
    if weights is not None and backbone_weights is not None:
        raise ValueError("Pass either `weights` (the whole detector) or `backbone_weights` "
                         "(ImageNet backbone only, new heads), not both.")
    if weights == "coco" and classes != 81:
        raise ValueError(f"The COCO checkpoints have 81 classes (80 + background); got "
                         f"classes={classes}. Build with weights=None or backbone_weights=... "
                         f"to train a detector for your own classes.")
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"`classes` counts the background class (index 0), so it must be an "
                         f"integer >= 2; got {classes!r}.")
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3 or not all(
            isinstance(s, numbers.Integral) for s in shape):
        raise ValueError(f"SSDLite needs a fixed input_shape=(height, width, 3) (the anchors "
                         f"depend on it); got {input_shape!r}.")


def _load_detection_weights(model, weights, backbone):
    """Strictly load "coco", an official .pt detection checkpoint, or Keras .weights.h5."""
    if weights != "coco" and str(weights).endswith(".h5"):
        model.load_weights(weights)
        return
    state, source = W.task_state_dict(weights, f"ssdlite_{backbone}", ("coco",), "ssd_heads.",
                                      W.max_checkpoint_bytes(model))
    W.assign_state_dict(model, state, source=source)


def SSDLite(backbone="mobilevitv3_xs", weights=None, classes=81, input_shape=DEFAULT_INPUT_SHAPE,
            include_preprocessing=True, backbone_weights=None, postprocess=True, name=None):
    """SSDLite detector with the official heads, anchors and post-processing.

    Args:
        backbone: any name from `keras_mobilevit.list_models()`.
        weights: None, "coco", or an official detection checkpoint (.pt, read without torch;
            strict) or a Keras .weights.h5 file.
        classes: classes including background at index 0 (COCO: 81).
        input_shape: fixed (height, width, 3); anchors are generated for it.
        include_preprocessing: the model takes RGB pixels in [0, 255] (see
            `keras_mobilevit.MobileViT`); False: [0, 1] input in the weights' channel order.
        backbone_weights: None, "imagenet" or a classification checkpoint for the backbone.
        postprocess: True for the official post-processing of this backbone's code base,
            False for raw outputs only (e.g. for TFLite_Detection_PostProcess), or a
            `PostprocessConfig`.
        name: model name (default "ssdlite_<backbone>").

    Returns:
        A functional model returning a dict: box_regressions [N, A, 4] and class_logits
        [N, A, classes] (official anchor order, A = 3232 at 320x320), and with
        post-processing boxes [N, D, 4] (x1, y1, x2, y2 normalised), scores [N, D],
        classes [N, D] int32 and num_detections [N] int32 (rows past it are zero padding).

    Example:
        >>> model = SSDLite("mobilevitv2_050", weights="coco-ssd-mobilevitv2-0.5.pt")
        >>> raw = SSDLite("mobilevitv3_xs", postprocess=False, include_preprocessing=False)
        >>> anchors = model_anchors(raw)                   # [3232, 4] cx, cy, w, h
    """
    _validate(backbone, weights, backbone_weights, classes, input_shape)
    features = models.create_backbone(
        backbone, weights=backbone_weights, input_shape=tuple(int(s) for s in input_shape),
        include_preprocessing=include_preprocessing, levels=tuple(BACKBONE_LEVELS.values()))
    spec = anchor_lib.SSD_ANCHORS
    levels = _extra_levels(features.output, spec)
    heads = [_head(x, i, stride, n, classes, proj)
             for i, (x, stride, n, proj) in enumerate(zip(
                 levels, spec.output_strides, spec.anchors_per_location(), PROJ_CHANNELS))]
    outputs = {
        "box_regressions": keras.layers.Concatenate(axis=1, name="box_regressions")(
            [box for box, _ in heads]),
        "class_logits": keras.layers.Concatenate(axis=1, name="class_logits")(
            [logits for _, logits in heads]),
    }
    if postprocess is not False:
        config = postprocess_config(backbone) if postprocess is True else postprocess
        if not isinstance(config, PostprocessConfig):
            raise ValueError(f"`postprocess` must be True, False or a PostprocessConfig; got "
                             f"{postprocess!r}.")
        outputs.update(SSDPostprocess([x.shape[1:3] for x in levels], config,
                                      name="postprocess")(
            [outputs["box_regressions"], outputs["class_logits"]]))
    model = keras.Model(features.input, outputs, name=name or f"ssdlite_{backbone}")
    if weights is not None:
        _load_detection_weights(model, weights, backbone)
    return model


def model_anchors(model):
    """The anchors [A, 4] (cx, cy, w, h, normalised, float32) of a built SSDLite model, in
    the order of its box_regressions / class_logits rows.

    Example:
        >>> anchors = model_anchors(SSDLite("mobilevitv3_xs", postprocess=False))
    """
    strides = anchor_lib.SSD_ANCHORS.output_strides
    sizes = [model.get_layer(feature_layer_name(s)).output.shape[1:3] for s in strides]
    return anchor_lib.generate_anchors(sizes)

