"""One generic builder for every MobileViT variant, plus the public entry points.

Layer names are the official PyTorch state_dict prefixes ("layer_3.1.conv_proj"), so a
model reads like the official code and checkpoints map onto it by name.

Example:
    >>> model = create_model("mobilevitv3_xs", weights=None)
    >>> backbone = create_backbone("mobilevitv3_xs", output_stride=16)
    >>> sorted(backbone.output)            # {'s2': ..., 's4': ..., ..., 's32': ...}
"""

import keras

from keras_mobilevit import architectures
from keras_mobilevit import layers as L
from keras_mobilevit import weights as W

MIN_INPUT_SIZE = 32
FEATURE_LEVELS = ("s2", "s4", "s8", "s16", "s32")

# Official key names differ between the v1 (cvnets-v0.1) and v2 (v0.2) code bases.
_BLOCK_NAMES = {
    "mha": dict(local=("local_rep.conv_3x3", "local_rep.conv_1x1"),
                attn="pre_norm_mha", ffn=("pre_norm_ffn.1", "pre_norm_ffn.4")),
    "linear": dict(local=("local_rep.0", "local_rep.1"),
                   attn="pre_norm_attn", ffn=("pre_norm_ffn.1", "pre_norm_ffn.3")),
}


def _inverted_residual(x, out, stride, expansion, dilation, name):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 project (+ x)."""
    in_channels = x.shape[-1]
    hidden = architectures.hidden_channels(in_channels, expansion)
    y = x
    if expansion != 1:
        y = L.ConvNormAct(hidden, 1, name=f"{name}.block.exp_1x1")(y)
    y = L.ConvNormAct(hidden, 3, strides=stride, dilation_rate=dilation, depthwise=True,
                      name=f"{name}.block.conv_3x3")(y)
    y = L.ConvNormAct(out, 1, activation=None, name=f"{name}.block.red_1x1")(y)
    if stride == 1 and in_channels == out:
        y = keras.layers.Add(name=f"{name}.add")([x, y])
    return y


def _transformer_layer(x, spec, stage, name):
    """Pre-norm transformer layer: x + attn(norm(x)); x + ffn(norm(x)).

    v1 style works on [B*P, N, d] with multi-head attention and LayerNorm; v2 style on
    [B, P, N, d] with separable attention and GroupNorm(1) ("layer_norm_2d").
    """
    kind = spec.family.attention
    names = _BLOCK_NAMES[kind]
    norm_axes = "last" if kind == "mha" else "all"
    y = L.LayerNorm(axes=norm_axes, name=f"{name}.{names['attn']}.0")(x)
    if kind == "mha":
        y = L.MultiHeadSelfAttention(spec.heads, name=f"{name}.{names['attn']}.1")(y)
    else:
        y = L.LinearSelfAttention(name=f"{name}.{names['attn']}.1")(y)
    if spec.dropout:
        y = keras.layers.Dropout(spec.dropout, name=f"{name}.attn_dropout")(y)
    x = keras.layers.Add(name=f"{name}.attn_add")([x, y])
    y = L.LayerNorm(axes=norm_axes, name=f"{name}.pre_norm_ffn.0")(x)
    y = keras.layers.Dense(stage.ffn, activation="silu", name=f"{name}.{names['ffn'][0]}")(y)
    y = keras.layers.Dense(stage.dim, name=f"{name}.{names['ffn'][1]}")(y)
    if spec.dropout:
        y = keras.layers.Dropout(spec.dropout, name=f"{name}.ffn_dropout")(y)
    return keras.layers.Add(name=f"{name}.ffn_add")([x, y])


def _mobilevit_block(x, spec, stage, dilation, name):
    """Local conv features -> transformer over 2x2-patch pixels -> fold -> fusion."""
    family = spec.family
    names = _BLOCK_NAMES[family.attention]
    channels = x.shape[-1]
    if family.resize == "input":  # v2: resize the block input, never back
        x = L.PatchResize(align_corners=True, name=f"{name}.resize_input")(x)
    local = L.ConvNormAct(channels, 3, dilation_rate=dilation, depthwise=family.local_depthwise,
                          name=f"{name}.{names['local'][0]}")(x)
    local = L.ConvNormAct(stage.dim, 1, use_norm=False, activation=None,
                          name=f"{name}.{names['local'][1]}")(local)

    g = local
    if family.resize == "unfold":  # v1: resize up to a multiple of 2, and back after fold
        g = L.PatchResize(align_corners=False, name=f"{name}.resize_unfold")(g)
    patches = L.Unfold(merge_batch=family.attention == "mha", name=f"{name}.unfold")(g)
    for i in range(stage.depth):
        patches = _transformer_layer(patches, spec, stage, f"{name}.global_rep.{i}")
    patches = L.LayerNorm(axes="last" if family.attention == "mha" else "all",
                          name=f"{name}.global_rep.{stage.depth}")(patches)
    folded = L.Fold(name=f"{name}.fold")([patches, g])
    if family.resize == "unfold":
        folded = L.PatchResize(name=f"{name}.resize_fold")([folded, local])

    # The one place where the families differ in how features are combined.
    cat = lambda a, b: keras.layers.Concatenate(name=f"{name}.concat")([a, b])  # noqa: E731
    if family.fusion == "none":  # v2
        return L.ConvNormAct(channels, 1, activation=None, name=f"{name}.conv_proj")(folded)
    if family.fusion == "global_local_1x1_add":  # v3 (v2-based): global first
        out = L.ConvNormAct(channels, 1, activation=None, name=f"{name}.conv_proj")(
            cat(folded, local))
        return keras.layers.Add(name=f"{name}.add")([out, x])
    glob = L.ConvNormAct(channels, 1, name=f"{name}.conv_proj")(folded)
    if family.fusion == "input_global_3x3":  # v1
        return L.ConvNormAct(channels, 3, name=f"{name}.fusion")(cat(x, glob))
    # "local_global_1x1_add": v3 (v1-based): local first, d + C -> C, plus the input
    out = L.ConvNormAct(channels, 1, name=f"{name}.fusion")(cat(local, glob))
    return keras.layers.Add(name=f"{name}.add")([out, x])


def _validate(spec, weights, input_shape, input_tensor, include_top, classes, pooling,
              output_stride):
    if not (weights in (None, "imagenet") or W.is_weights_path(weights)):
        raise ValueError(
            f"`weights` must be None, 'imagenet', or the path of an existing .weights.h5 "
            f"or official PyTorch .pt file; got {weights!r}."
        )
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            f"ImageNet weights come with a 1000-class classifier; got classes={classes}. "
            f"For a new head, build with include_top=False, pooling='avg' and add your "
            f"own Dense layer."
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'; got {pooling!r}.")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"`output_stride` must be 8, 16 or 32; got {output_stride!r}.")
    shape = input_shape
    if shape is None and input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
    if shape is not None:
        shape = tuple(shape)
        if len(shape) != 3 or shape[-1] != 3:
            raise ValueError(
                f"MobileViT takes RGB images as (height, width, 3) (channels last); got "
                f"input shape {shape}. Convert greyscale images to 3 channels first."
            )
        small = [s for s in shape[:2] if s is not None and s < MIN_INPUT_SIZE]
        if small:
            raise ValueError(
                f"Input size {shape[:2]} is too small: {spec.name} downsamples by 32, "
                f"so height and width must be at least {MIN_INPUT_SIZE} pixels."
            )


def _image_input(input_tensor, input_shape):
    """The model's input: a new keras.Input, or the given (Keras) tensor."""
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="image")
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return keras.Input(tensor=input_tensor, shape=input_shape, name="image")


def _stages(x, spec, output_stride):
    """Stem and the five stages; each stage ends in an Identity named features_s<stride>.

    Output stride 16 (8) removes the stride of stage 5 (4 and 5) and doubles a running
    dilation instead, as the official `_make_mit_layer` does: a stage's inverted residual
    gets the dilation from before the stage, its MobileViT block the new one, but only
    in the families whose code passes it on (`Family.block_dilation`).
    """
    x = L.ConvNormAct(spec.stem, 3, strides=2, name="conv_1")(x)
    dilation = 1
    for index, stage in enumerate(spec.stages, start=1):
        stride = 1 if index == 1 else 2
        prev_dilation = dilation
        if 2 ** index > output_stride:
            dilation, stride = dilation * 2, 1
        for block in range(stage.blocks):
            x = _inverted_residual(x, stage.out, stride if block == 0 else 1, spec.expansion,
                                   prev_dilation, name=f"layer_{index}.{block}")
        if stage.dim:
            block_dilation = dilation if spec.family.block_dilation else 1
            x = _mobilevit_block(x, spec, stage, block_dilation,
                                 name=f"layer_{index}.{stage.blocks}")
        x = keras.layers.Identity(name=f"features_s{2 ** index}")(x)
    return x


def _top(x, spec, include_top, pooling, classes, classifier_activation, dropout):
    """Global pooling + dropout + classifier, or just the optional pooling."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
        rate = spec.family.classifier_dropout if dropout is None else dropout
        if rate:
            x = keras.layers.Dropout(rate, name="classifier_dropout")(x)
        head = "classifier.fc" if spec.family.head_expansion else "classifier.1"
        # float32 logits even under mixed precision (a float16 softmax/loss loses accuracy)
        return keras.layers.Dense(classes, activation=classifier_activation, name=head,
                                  dtype="float32")(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="global_pool")(x)
    return x


def MobileViT(
    model_name,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
    output_stride=32,
    dropout=None,
):
    """Build any registered MobileViT variant (see `list_models()`).

    Args:
        model_name: a name from `list_models()`, e.g. "mobilevitv3_xs".
        include_top: end with global pooling + the classifier.
        weights: None, "imagenet", a Keras `.weights.h5` file, or an official PyTorch
            `.pt` checkpoint (read without torch; loading is strict).
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: (H, W, 3); defaults to (256, 256, 3) with the top and
            (None, None, 3) without it. Any size >= 32 works, as in the official code.
        pooling: None, "avg" or "max" on the final feature map when include_top=False.
        classes: classifier width.
        classifier_activation: "softmax" (default), None for logits, or any activation.
        include_preprocessing: the model takes RGB pixels in [0, 255] and does what the
            official weights need (scale to [0, 1], flip to BGR for v1 and v3 XXS/XS/S).
            False: the input goes to the network unchanged, as the PyTorch model sees it.
        name: model name (default: the variant name).
        output_stride: 32, 16 or 8; 16 and 8 keep the resolution of the last stage(s)
            the way the family's official code does it (for DeepLabV3; see `_stages`).
        dropout: classifier dropout (default: the official value for the family).

    Example:
        >>> model = MobileViT("mobilevitv3_xs", weights="imagenet")
        >>> probs = model.predict(images_uint8)      # [N, 256, 256, 3] RGB
    """
    spec = architectures.get_spec(model_name)
    if input_shape is None and input_tensor is None:
        input_shape = (256, 256, 3) if include_top else (None, None, 3)
    _validate(spec, weights, input_shape, input_tensor, include_top, classes, pooling,
              output_stride)
    inputs = _image_input(input_tensor, input_shape)
    x = inputs
    if include_preprocessing:
        x = L.Preprocess(reverse_channels=spec.family.bgr, name="preprocess")(x)
    x = _stages(x, spec, output_stride)
    if spec.family.head_expansion:
        x = L.ConvNormAct(spec.head_channels, 1, name="conv_1x1_exp")(x)
    x = _top(x, spec, include_top, pooling, classes, classifier_activation, dropout)

    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
        inputs = inputs[0] if len(inputs) == 1 else inputs
    model = keras.Model(inputs, x, name=name or spec.name)
    if weights is not None:
        W.load_weights(model, weights, spec.name)
    return model


def preprocess_input(x, model_name):
    """RGB pixels in [0, 255] -> the input a model built with include_preprocessing=False
    (or the official PyTorch network, in NHWC) expects: [0, 1], flipped to BGR for the
    v1 and v3 XXS/XS/S weights. Models built with include_preprocessing=True (the
    default) do this themselves: do not apply it twice.

    Example:
        >>> x = preprocess_input(images_uint8, "mobilevitv3_xs")
    """
    spec = architectures.get_spec(model_name)
    x = keras.ops.cast(x, "float32") / 255.0
    return keras.ops.flip(x, axis=-1) if spec.family.bgr else x


def create_model(name, **kwargs):
    """Build a variant by registry name; the keyword arguments are those of `MobileViT`.

    Example:
        >>> model = create_model("mobilevitv2_050", weights=None, classes=10,
        ...                      input_shape=(64, 64, 3), classifier_activation=None)
    """
    return MobileViT(name, **kwargs)


def get_feature_extractor(model, levels=FEATURE_LEVELS):
    """A model with the same input whose outputs are a dict of stage feature maps.

    Levels are "s2" ... "s32" (stride relative to the input); the v1-style final 1x1
    expansion is available as "s32_exp".
    """
    outputs = {}
    for level in levels:
        layer = "conv_1x1_exp" if level == "s32_exp" else f"features_{level}"
        try:
            outputs[level] = model.get_layer(layer).output
        except ValueError:
            raise ValueError(
                f"{model.name} has no feature level {level!r}; valid levels are "
                f"{FEATURE_LEVELS} (and 's32_exp' for v1 and v3 XXS/XS/S)."
            ) from None
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def create_backbone(name, output_stride=32, weights=None, input_shape=(None, None, 3),
                    input_tensor=None, include_preprocessing=True, levels=FEATURE_LEVELS):
    """Multi-scale backbone for segmentation and detection.

    Returns a model mapping images to {"s2": [B, H/2, W/2, C2], ..., "s32": ...};
    with output_stride=16 (8) the last (two) stages keep their resolution, with the
    dilations the family's official code uses for DeepLabV3 (see `MobileViT`).

    Example:
        >>> backbone = create_backbone("mobilevitv3_s", output_stride=16, weights="imagenet")
        >>> feats = backbone(images)      # feats["s32"]: [B, H/16, W/16, 320]
    """
    model = MobileViT(name, include_top=False, weights=weights, input_shape=input_shape,
                      input_tensor=input_tensor, include_preprocessing=include_preprocessing,
                      output_stride=output_stride)
    return get_feature_extractor(model, levels)


def _public(model_name, function_name):
    """A keras.applications-style builder bound to one variant."""

    def builder(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax",
                include_preprocessing=True, name=None):
        return MobileViT(model_name, include_top=include_top, weights=weights,
                         input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                         classes=classes, classifier_activation=classifier_activation,
                         include_preprocessing=include_preprocessing, name=name)

    builder.__name__ = builder.__qualname__ = function_name
    builder.__doc__ = (f"Build {model_name} (arguments as `keras_mobilevit.MobileViT`).\n\n"
                       f"Example:\n    >>> model = keras_mobilevit.{function_name}"
                       f"(weights='imagenet')\n")
    return builder


MobileViTv1XXS = _public("mobilevit_xxs", "MobileViTv1XXS")
MobileViTv1XS = _public("mobilevit_xs", "MobileViTv1XS")
MobileViTv1S = _public("mobilevit_s", "MobileViTv1S")
MobileViTv2_050 = _public("mobilevitv2_050", "MobileViTv2_050")
MobileViTv2_075 = _public("mobilevitv2_075", "MobileViTv2_075")
MobileViTv2_100 = _public("mobilevitv2_100", "MobileViTv2_100")
MobileViTv2_125 = _public("mobilevitv2_125", "MobileViTv2_125")
MobileViTv2_150 = _public("mobilevitv2_150", "MobileViTv2_150")
MobileViTv2_175 = _public("mobilevitv2_175", "MobileViTv2_175")
MobileViTv2_200 = _public("mobilevitv2_200", "MobileViTv2_200")
MobileViTv3XXS = _public("mobilevitv3_xxs", "MobileViTv3XXS")
MobileViTv3XS = _public("mobilevitv3_xs", "MobileViTv3XS")
MobileViTv3S = _public("mobilevitv3_s", "MobileViTv3S")
MobileViTv3_050 = _public("mobilevitv3_050", "MobileViTv3_050")
MobileViTv3_075 = _public("mobilevitv3_075", "MobileViTv3_075")
MobileViTv3_100 = _public("mobilevitv3_100", "MobileViTv3_100")
MobileViTv3XXS_L2 = _public("mobilevitv3_xxs_l2", "MobileViTv3XXS_L2")
MobileViTv3XS_L2 = _public("mobilevitv3_xs_l2", "MobileViTv3XS_L2")
MobileViTv3S_L2 = _public("mobilevitv3_s_l2", "MobileViTv3S_L2")
