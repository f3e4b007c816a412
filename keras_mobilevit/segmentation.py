"""DeepLabV3 semantic segmentation on every MobileViT backbone, as the official code builds it.

The backbone is `models.MobileViT` at output stride 16 (or 8) without its classifier and
without the v1-style 1x1 expansion; the head (ASPP, classifier, auxiliary head) follows the
code version of the backbone's family (`architectures.SEG_HEADS`: cvnets v0.1 for v1 and
v3 XXS/XS/S, cvnets v0.2 for v2 and v3 0.5/0.75/1.0), or the one asked for (`head=`; the
v1-S DeepLabV3 retrained under cvnets v0.2: `weights="voc-v0.2"`). Layer names are the official
state_dict keys without their `encoder.` prefix ("layer_3.1.conv_proj",
"seg_head.aspp.aspp_layer.convs.1"), so official checkpoints load through
`weights.assign_state_dict`, strictly.

Example:
    >>> model = DeepLabV3("mobilevitv3_xs", weights="voc")
    >>> logits = model.predict(images_uint8)          # [N, H, W, 21], RGB in [0, 255]
    >>> masks = logits.argmax(-1)
    >>> v1_s = DeepLabV3("mobilevit_s", weights="voc-v0.2")  # 79.44 mIoU, output stride 8
"""

import keras

from keras_mobilevit import architectures, models
from keras_mobilevit import layers as L
from keras_mobilevit import weights as W

# Named weights -> (classes, output stride, head) of the official config they were trained
# with; head: a key of architectures.SEG_HEADS, None for the backbone family's. "voc-v0.2":
# the v1-S retrained under cvnets v0.2 (config/segmentation/pascal_voc/deeplabv3_mobilevit.yaml).
NAMED_WEIGHTS = {"voc": (21, 16, None), "ade20k": (150, 8, None), "voc-v0.2": (21, 8, "v0.2")}
RATES_AT_STRIDE_16 = (6, 12, 18)
UPSAMPLE_MODES = ("input", "official", None)
_ASPP = "seg_head.aspp.aspp_layer"
_AUX = "seg_head.aux_head"


def _default_rates(output_stride):
    """(6, 12, 18) at output stride 16, scaled with the stride ((12, 24, 36) at 8)."""
    return tuple(rate * 16 // output_stride for rate in RATES_AT_STRIDE_16)


def _aspp(x, head, rates):
    """ASPP on out_l5 -> [B, h, w, aspp_channels] (the official `aspp_layer` output)."""
    c = head.aspp_channels
    branches = [L.ConvNormAct(c, 1, activation="relu", name=f"{_ASPP}.convs.0")(x)]
    branches += [L.ConvNormAct(c, 3, dilation_rate=rate, activation="relu",
                               name=f"{_ASPP}.convs.{i}")(x) for i, rate in enumerate(rates, 1)]
    # image pooling: global mean -> 1x1 conv -> bilinear "resize" of a 1x1 map (a broadcast)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{_ASPP}.convs.4.pool")(x)
    pooled = L.ConvNormAct(c, 1, activation="relu", name=f"{_ASPP}.convs.4.aspp_pool.conv_1x1")(
        pooled)
    branches.append(L.BilinearResize(name=f"{_ASPP}.convs.4.resize")([pooled, x]))
    y = keras.layers.Concatenate(name=f"{_ASPP}.concat")(branches)  # [B, h, w, 5c]
    y = L.ConvNormAct(c, 1, activation="relu", name=f"{_ASPP}.project")(y)
    dropout = keras.layers.SpatialDropout2D if head.aspp_spatial_dropout else keras.layers.Dropout
    return dropout(head.aspp_dropout, name=f"{_ASPP}.dropout")(y)


def _classifier(x, head, classes):
    """(Dropout2d ->) 1x1 conv with bias = a Dense on the channels; float32 logits."""
    if head.classifier_dropout:
        x = keras.layers.SpatialDropout2D(head.classifier_dropout,
                                          name="seg_head.classifier.classifier_dropout")(x)
    return keras.layers.Dense(classes, name=head.classifier, dtype="float32")(x)


def _aux_head(x, head, classes):
    """3x3 conv to max(C4 // 4, 128) + BN + ReLU -> Dropout2d -> 1x1 conv, on out_l4."""
    y = L.ConvNormAct(max(x.shape[-1] // 4, 128), 3, activation="relu", name=f"{_AUX}.0")(x)
    y = keras.layers.SpatialDropout2D(head.aux_dropout, name=f"{_AUX}.1")(y)
    return keras.layers.Dense(classes, name=f"{_AUX}.2", dtype="float32")(y)


def _upsample(lowres, image, mode, output_stride, head):
    """Low-resolution logits -> what the model returns (see `DeepLabV3`, `upsample`)."""
    if mode is None:
        return lowres
    resize = L.BilinearResize(scale=output_stride if mode == "official" else None,
                              align_corners=head.align_corners, name="seg_head.upsample",
                              dtype="float32")
    return resize(lowres) if mode == "official" else resize([lowres, image])


def _check_arguments(spec, weights, backbone_weights, output_stride, upsample, atrous_rates):
    if not spec.segmentation:
        raise ValueError(
            f"{spec.name} has no official segmentation config; DeepLabV3 backbones are: "
            f"{', '.join(architectures.segmentation_models())}.")
    names = ", ".join(repr(n) for n in NAMED_WEIGHTS)
    if weights == "imagenet":
        raise ValueError("'imagenet' weights are classification weights: pass them as "
                         f"backbone_weights='imagenet' (weights= takes {names} or a "
                         "segmentation checkpoint).")
    if not (weights is None or weights in NAMED_WEIGHTS or W.is_weights_path(weights)):
        raise ValueError(f"`weights` must be None, {names}, or the path of an existing "
                         f"official DeepLabV3 .pt checkpoint or Keras .weights.h5; got {weights!r}.")
    if weights is not None and backbone_weights is not None:
        raise ValueError("Pass either `weights` (the whole segmentation model) or "
                         "`backbone_weights` (the classification backbone only), not both.")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"`output_stride` must be 8, 16 or 32; got {output_stride!r}.")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"`upsample` must be 'input', 'official' or None; got {upsample!r}.")
    if atrous_rates is not None and (len(atrous_rates) != 3 or not all(
            isinstance(r, int) and r > 0 for r in atrous_rates)):
        raise ValueError(f"`atrous_rates` must be three positive integers (the official "
                         f"ASPP has three atrous branches); got {atrous_rates!r}.")


def _resolve_head(spec, weights, head):
    """The SegHead: `head` (a key of SEG_HEADS or a SegHead), else the named weights',
    else the family's; named weights refuse a head of another code version."""
    heads = architectures.SEG_HEADS
    named = NAMED_WEIGHTS[weights][2] if weights in NAMED_WEIGHTS else None
    trained = heads[named or spec.family.seg_head]
    if head is None:
        return trained
    if not (head in heads if isinstance(head, str) else isinstance(head, architectures.SegHead)):
        raise ValueError(f"`head` must be None, one of {list(heads)} (architectures.SEG_HEADS) "
                         f"or an architectures.SegHead; got {head!r}.")
    head = heads[head] if isinstance(head, str) else head
    if weights in NAMED_WEIGHTS and head.code != trained.code:
        hint = " (the v1-S retrained under cvnets v0.2 is weights='voc-v0.2')" if (
            spec.name == "mobilevit_s" and weights == "voc") else ""
        raise ValueError(f"The {weights!r} weights of {spec.name} come with the {trained.code} "
                         f"head; got a {head.code} head{hint}.")
    return head


def seg_head(backbone, weights=None, head=None):
    """The `architectures.SegHead` that `DeepLabV3(backbone, weights, head=head)` builds.

    Example:
        >>> seg_head("mobilevit_s", "voc-v0.2").aux_head     # the v0.2 head
        True
    """
    return _resolve_head(architectures.get_spec(backbone), weights, head)


def _segmentation_state_dict(weights, spec, encoder, head):
    """The official state_dict for named weights or a .pt path, or None (.h5, None).

    A .pt may hold at most what the model could need (`W.max_checkpoint_bytes` of the
    `encoder` plus `_head_params`, the classifier inside its allowance)."""
    if weights is None or (weights not in NAMED_WEIGHTS and str(weights).endswith(".h5")):
        return None, None
    return W.task_state_dict(weights, f"deeplabv3_{spec.name}", tuple(NAMED_WEIGHTS), "seg_head.",
                             W.max_checkpoint_bytes(encoder, _head_params(encoder, head)))


def _head_params(encoder, head):
    """Weights of the ASPP and aux head on `encoder` (without the classifiers, whose size
    depends on the checkpoint's classes): 1x1 + three 3x3 + pool 1x1 convs on out_l5, a
    1x1 projection of the five branches, a 3x3 conv on out_l4; norms included."""
    c5 = encoder.get_layer("features_s32").output.shape[-1]
    c4 = encoder.get_layer("features_s16").output.shape[-1]
    c = head.aspp_channels
    aspp = (1 + 27 + 1) * c5 * c + 5 * c * c + 6 * 4 * c
    aux = max(c4 // 4, 128) * (9 * c4 + 4) if head.aux_head else 0
    return aspp + aux


def _resolve_classes(classes, weights, state_dict, head):
    """classes: given, else the checkpoint's, else the dataset's (21 without weights)."""
    found = None
    if state_dict is not None:
        found = state_dict[f"{head.classifier}.block.conv.weight"].shape[0] if (
            f"{head.classifier}.block.conv.weight" in state_dict) else None
    if classes is None:
        return found or NAMED_WEIGHTS.get(weights, NAMED_WEIGHTS["voc"])[0]
    if found is not None and classes != found:
        raise ValueError(f"The checkpoint has a {found}-class classifier; got classes={classes}. "
                         f"To train a new head, load the checkpoint's backbone with "
                         f"backbone_weights= (classification) or build with classes={found}.")
    if not (isinstance(classes, int) and classes > 0):
        raise ValueError(f"`classes` must be a positive integer; got {classes!r}.")
    return classes


def _encoder(spec, head, input_tensor, input_shape, include_preprocessing, backbone_weights,
             output_stride):
    """The backbone without its top, after the pixel preprocessing of the head's code
    version: BGR only where the family was trained on it and the code reads images with
    OpenCV (v0.1); the v1-S retrained under v0.2 takes RGB, as the PIL pipeline fed it."""
    image = models._image_input(input_tensor, (None, None, 3) if (
        input_shape is None and input_tensor is None) else input_shape)
    x = image
    if include_preprocessing:
        x = L.Preprocess(reverse_channels=spec.family.bgr and head.opencv_images,
                         name="preprocess")(x)
    return models.MobileViT(spec.name, include_top=False, weights=backbone_weights,
                            input_tensor=x, include_preprocessing=False,
                            output_stride=output_stride)


def DeepLabV3(
    backbone="mobilevitv3_xs",
    weights=None,
    classes=None,
    output_stride=None,
    input_shape=(512, 512, 3),
    include_preprocessing=True,
    backbone_weights=None,
    input_tensor=None,
    atrous_rates=None,
    upsample="input",
    aux_output=False,
    name=None,
    head=None,
):
    """DeepLabV3 with a MobileViT backbone, the head exactly as the official config builds it.

    Heads per code version (`architectures.SEG_HEADS`): cvnets v0.1 (v1, v3 XXS/XS/S):
    ASPP 256 wide, Dropout 0.1, Dropout2d 0.1 before the classifier, no aux head, final
    upsampling with align_corners=False, BGR input, and "output stride 16" only removes
    layer_5's stride (no dilation). cvnets v0.2 (v2, v3 0.5/0.75/1.0): ASPP 512 wide,
    Dropout2d 0.1, an aux head on out_l4, align_corners=True, RGB input, layer_5's local
    depthwise 3x3 dilated by 2. ReLU in the head, Swish in the backbone; ASPP rates
    6/12/18 at stride 16, scaled with the stride. The v1-S DeepLabV3 retrained under
    cvnets v0.2 (`weights="voc-v0.2"`, 79.44 mIoU) is the v1 backbone (its blocks take no
    dilation there either) with the v0.2 head at output stride 8 (rates 12/24/36, the aux
    head on out_l4 at stride 8) and RGB input.

    Output: float32 per-pixel logits [N, H, W, classes] at the input resolution. The
    classifier runs at stride `output_stride` (h = the backbone's map size, e.g. 24x32
    for 375x500); the last layer ("seg_head.upsample") resizes those logits bilinearly
    straight to (H, W) with the head's align_corners. At sizes that are multiples of
    the stride this equals the official model's x16 upsampling; elsewhere it is what
    official v0.2 evaluation does (`model(x, orig_size=(H, W))`), whereas the official
    forward pass returns 16 h x 16 w (375x500 -> 384x512) and v0.1 evaluation then
    resizes that to (H, W) with nearest neighbours. `upsample="official"` returns exactly
    the official x`output_stride` output, `upsample=None` the low-resolution logits.

    Args:
        backbone: a name from `architectures.segmentation_models()` (every variant but
            the v3 L2 classifiers).
        weights: None, "voc" or "ade20k" (official checkpoints, via
            `weights.pretrained_state_dict`), "voc-v0.2" (mobilevit_s only: the v1-S
            retrained under cvnets v0.2), the path of an official DeepLabV3 `.pt` (keys
            "encoder.*", "seg_head.*"; read without torch, loaded strictly), or a Keras
            `.weights.h5` of this same model.
        classes: number of classes; default: the checkpoint's, else 21 (150 for "ade20k").
        output_stride: 8, 16 or 32; default 16 (8 for "ade20k" and "voc-v0.2", as their
            official configs).
        input_shape: (H, W, 3), None entries for any size (>= 32).
        include_preprocessing: the model takes RGB pixels in [0, 255] (see `MobileViT`);
            False: it takes what the PyTorch network takes ([0, 1], BGR for the v0.1 head
            on v1-style backbones).
        backbone_weights: None, "imagenet" or a classification checkpoint path for the
            backbone only (to train the head from scratch).
        input_tensor: optional Keras tensor to use as the image input.
        atrous_rates: the three ASPP rates; default (6, 12, 18) * 16 / output_stride.
        upsample: "input" (default), "official" (x output_stride) or None (low-res logits).
        aux_output: False: the model returns the logits tensor. True (for training): a dict
            {"logits": ..., "aux_logits": [N, H/s, W/s, classes]} (s = min(16,
            output_stride); "aux_logits" only with the v0.2 head, not upsampled, as the
            official training loss takes them; weight 0.4). Either way a checkpoint's
            aux-head weights are checked on loading.
        name: model name (default "deeplabv3_<backbone>").
        head: None (the head of the named weights, else the backbone family's), "v0.1",
            "v0.2" (`architectures.SEG_HEADS`), or an `architectures.SegHead` (say, the
            v0.2 head 256 wide: `dataclasses.replace(SEG_HEADS["v0.2"], aspp_channels=256)`).
            Named weights refuse a head of another code version.

    Example:
        >>> model = DeepLabV3("mobilevitv3_050", weights="deeplabv3.pt",
        ...                   include_preprocessing=False)        # input as torch sees it
        >>> lowres = get_endpoints(model)(x)["logits_lowres"]   # [N, H/16, W/16, 21]
        >>> scratch = DeepLabV3("mobilevit_s", head="v0.2", output_stride=8,
        ...                     backbone_weights="imagenet")   # the v0.2 v1-S config
    """
    spec = architectures.get_spec(backbone)
    output_stride = output_stride or NAMED_WEIGHTS.get(weights, NAMED_WEIGHTS["voc"])[1]
    _check_arguments(spec, weights, backbone_weights, output_stride, upsample, atrous_rates)
    head = _resolve_head(spec, weights, head)
    encoder = _encoder(spec, head, input_tensor, input_shape, include_preprocessing,
                       backbone_weights, output_stride)
    state_dict, source = _segmentation_state_dict(weights, spec, encoder, head)
    classes = _resolve_classes(classes, weights, state_dict, head)
    image = encoder.input
    lowres = _classifier(_aspp(encoder.get_layer("features_s32").output, head,
                               atrous_rates or _default_rates(output_stride)), head, classes)
    outputs = {"logits": _upsample(lowres, image, upsample, output_stride, head)}
    if head.aux_head:
        outputs["aux_logits"] = _aux_head(encoder.get_layer("features_s16").output, head, classes)
    name = name or f"deeplabv3_{spec.name}"
    # The v1-style conv_1x1_exp is built (a classification checkpoint has it) but is not
    # on the path to these outputs, so the model does not contain it.
    full = keras.Model(encoder.input, outputs, name=name)
    if state_dict is not None:
        W.assign_state_dict(full, state_dict, source=source)
    model = full if aux_output else keras.Model(encoder.input, outputs["logits"], name=name)
    if weights is not None and state_dict is None:  # a Keras .weights.h5 of this model
        model.load_weights(weights)
    return model


def get_endpoints(model):
    """A model with the same input returning a dict of DeepLabV3 intermediate outputs:
    "s8", "s16" (out_l4), "s32" (out_l5, stride 16 at output stride 16), "aspp" (ASPP
    projection), "logits_lowres" (classifier output), "aux_logits" (models built with
    aux_output=True on a v0.2 family) and "logits" (the model's output).

    Example:
        >>> ends = get_endpoints(DeepLabV3("mobilevitv2_050", aux_output=True))(images)
    """
    present = {layer.name for layer in model.layers}
    classifier = next((head.classifier for head in architectures.SEG_HEADS.values()
                       if head.classifier in present), None)
    if classifier is None:
        raise ValueError(f"{model.name} is not a DeepLabV3 model (no classifier layer).")
    layer_names = {"s8": "features_s8", "s16": "features_s16", "s32": "features_s32",
                   "aspp": f"{_ASPP}.project", "logits_lowres": classifier,
                   "aux_logits": f"{_AUX}.2"}
    outputs = {key: model.get_layer(layer).output for key, layer in layer_names.items()
               if layer in present}
    main = model.output["logits"] if isinstance(model.output, dict) else model.output
    return keras.Model(model.input, {**outputs, "logits": main}, name=f"{model.name}_endpoints")
