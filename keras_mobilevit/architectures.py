"""The MobileViT variants and their DeepLabV3 heads as data: one row per family, per
variant and per head code version.

Every number here comes from the official configs (apple/ml-cvnets cvnets-v0.1 and
v0.2, micronDLA/MobileViTv3) and is pinned by the exact parameter counts in the tests.

Example:
    >>> spec = get_spec("mobilevitv3_xs")
    >>> spec.family.name, spec.stages[2].out, spec.stages[2].dim
    ('v3_v1', 96, 96)
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Family:
    """What one family does differently: inside the MobileViT block, in how it reaches
output stride 16 / 8, and which DeepLabV3 head its official code builds.

    Attributes:
        name: "v1", "v2", "v3_v1" (v3 built on v1) or "v3_v2" (v3 built on v2).
        attention: "mha" (v1-style multi-head attention over [B*P, N, d]) or
            "linear" (v2's separable self-attention over [B, P, N, d]).
        local_depthwise: local 3x3 conv is depthwise (v2, v3) or a full conv (v1).
        fusion: how local, global and input features are combined:
            "input_global_3x3": v1, 3x3 conv on concat(input, global);
            "local_global_1x1_add": v3(v1), 1x1 conv on concat(local, global) + input;
            "none": v2, the projected global features are the output;
            "global_local_1x1_add": v3(v2), 1x1 conv on concat(global, local) + input.
        resize: what happens when a map is not a multiple of the patch size:
            "unfold" (v1: resize the local features up, bilinear, align_corners=False,
            and back after folding) or "input" (v2: resize the block input up with
            align_corners=True and never back).
        bgr: the official weights were trained on BGR pixels (OpenCV loader).
        head_expansion: v1-style nets end with a 1x1 conv to min(4*C, 960) channels.
        classifier_dropout: dropout before the classifier (training only).
        block_dilation: whether the MobileViT block's local 3x3 conv takes the stage's
            dilation at output stride 16 / 8. The v2-style blocks (v2, v3(v2)) take it;
            the v1-style ones (v1, v3(v1)) never do, in cvnets v0.1 and v0.2 alike (the
            running dilation is computed, and only reaches the next stage's inverted
            residual), so "output stride 16" there just removes layer_5's stride (only
            the inverted residual of layer_5 is dilated, by 2, at output stride 8).
        seg_head: the key of the DeepLabV3 head its official code builds (`SEG_HEADS`);
            the v1-S backbone also has a DeepLabV3 retrained under cvnets v0.2 (the
            "v0.2" head, output stride 8), which `segmentation.DeepLabV3` builds on request.
    """

    name: str
    attention: str
    local_depthwise: bool
    fusion: str
    resize: str
    bgr: bool
    head_expansion: bool
    classifier_dropout: float
    block_dilation: bool
    seg_head: str


FAMILIES = {family.name: family for family in [
    #      name     attention local_dw fusion                  resize    bgr    head_exp drop  block_dil seg_head
    Family("v1",    "mha",    False,   "input_global_3x3",     "unfold", True,  True,    0.1,  False,    "v0.1"),
    Family("v3_v1", "mha",    True,    "local_global_1x1_add", "unfold", True,  True,    0.1,  False,    "v0.1"),
    Family("v2",    "linear", True,    "none",                 "input",  False, False,   0.0,  True,     "v0.2"),
    Family("v3_v2", "linear", True,    "global_local_1x1_add", "input",  False, False,   0.0,  True,     "v0.2"),
]}


@dataclasses.dataclass(frozen=True)
class SegHead:
    """The DeepLabV3 head as one official code version builds it (on out_l5, without
    the v1-style 1x1 expansion; ReLU inside the head, the backbone keeps Swish).

    ASPP = 1x1 conv + three 3x3 atrous convs + image pooling (global average -> 1x1
    conv -> broadcast), `aspp_channels` each, concatenated, 1x1 projection, dropout.

    Attributes:
        code: "cvnets-v0.1" (v1, v3 XXS/XS/S) or "cvnets-v0.2" (v2, v3 0.5/0.75/1.0,
            and the v1-S retrained there at output stride 8).
        aspp_channels: width of every ASPP branch and of its projection.
        aspp_spatial_dropout: the ASPP dropout drops whole channels (Dropout2d, v0.2)
            or single activations (Dropout, v0.1); rate 0.1 in both.
        classifier_dropout: Dropout2d before the classifier (v0.1 only).
        classifier: official key prefix of the 1x1 classifier conv (with bias).
        aux_head: an auxiliary head on out_l4 (3x3 conv to max(C4 // 4, 128) + BN + ReLU,
            Dropout2d 0.1, 1x1 conv), trained with weight 0.4 and unused at inference.
        align_corners: of the final bilinear upsampling (x output_stride in the model).
        opencv_images: the code's data pipeline reads images with OpenCV, so its weights
            take BGR pixels (v0.1); v0.2 reads them with PIL (RGB), also for the v1-S
            backbone fine-tuned there (the "voc-v0.2" DeepLabV3 weights).
    """

    code: str
    aspp_channels: int
    aspp_spatial_dropout: bool
    classifier_dropout: float
    classifier: str
    aux_head: bool
    align_corners: bool
    opencv_images: bool
    aspp_dropout: float = 0.1
    aux_dropout: float = 0.1


SEG_HEADS = {
    # VOC configs: v0.1 config/segmentation/deeplabv3_mobilevit_*.yaml (MobileViTv3-v1 the
    # same); v0.2 config/segmentation/{pascal_voc,ade20k}/deeplabv3_mobilevitv2.yaml
    # (MobileViTv3-v2 .../deeplabv3_mobilevitv3.yaml the same) and
    # config/segmentation/pascal_voc/deeplabv3_mobilevit.yaml (v1-S retrained).
    "v0.1": SegHead("cvnets-v0.1", 256, False, 0.1, "seg_head.classifier.classifier",
                    aux_head=False, align_corners=False, opencv_images=True),
    "v0.2": SegHead("cvnets-v0.2", 512, True, 0.0, "seg_head.classifier",
                    aux_head=True, align_corners=True, opencv_images=False),
}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One of the five stages (strides 2, 4, 8, 16, 32 counting the stem).

    `blocks` inverted-residual blocks (the first one carries the stride); stages with
    `dim` then add one MobileViT block with `depth` transformer layers of width `dim`
    and hidden width `ffn`.
    """

    out: int
    blocks: int = 1
    dim: int = 0
    ffn: int = 0
    depth: int = 0


@dataclasses.dataclass(frozen=True)
class Spec:
    """A full variant: family, stem width, MV2 expansion, stages, transformer dropout."""

    name: str
    family: Family
    stem: int
    expansion: int
    stages: tuple
    dropout: float = 0.0  # inside transformer layers (v1 style only)
    heads: int = 4  # v1-style attention heads
    segmentation: bool = True  # the official code has a DeepLabV3 config for it

    @property
    def head_channels(self):
        """Channels of the final feature map (after the v1-style 1x1 expansion)."""
        last = self.stages[-1].out
        return min(4 * last, 960) if self.family.head_expansion else last


def _v1_style(name, family, expansion, dropout, widths, depths=(2, 4, 3), segmentation=True):
    """widths: (s2, s4, (s8, d8), (s16, d16), (s32, d32)); ffn = 2 * d everywhere;
    depths: transformer layers in the MobileViT blocks of stages 3, 4, 5."""
    s2, s4, *vit = widths
    stages = (Stage(s2, 1), Stage(s4, 3)) + tuple(
        Stage(out, 1, dim, 2 * dim, depth) for (out, dim), depth in zip(vit, depths)
    )
    return Spec(name, FAMILIES[family], 16, expansion, stages, dropout,
                segmentation=segmentation)


def make_divisible(v, divisor=8, min_value=None):
    """The official channel rounding (round to nearest, never below 90% of v)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _v2_style(name, family, width):
    """v2 widths are a formula of the width multiplier (cvnets config/mobilevit_v2.py)."""
    stem = make_divisible(min(64, max(16, 32 * width)), 8, 16)
    outs = [make_divisible(64 * width, 16)] + [make_divisible(c * width) for c in (128, 256, 384, 512)]
    dims = [make_divisible(c * width) for c in (128, 192, 256)]
    stages = (Stage(outs[0], 1), Stage(outs[1], 2)) + tuple(
        Stage(out, 1, dim, int((2 * dim) // 16 * 16), depth)
        for out, dim, depth in zip(outs[2:], dims, (2, 4, 3))
    )
    return Spec(name, FAMILIES[family], stem, 2, stages)


_V2_WIDTHS = (("050", 0.5), ("075", 0.75), ("100", 1.0), ("125", 1.25),
               ("150", 1.5), ("175", 1.75), ("200", 2.0))

# The v3 "L2" classifiers (MobileViTv3-v1 modes *_v3_fast): the v3 XXS/XS/S rows with 2
# instead of 4 transformer layers in layer 4; no segmentation config upstream.
_L2 = dict(depths=(2, 2, 3), segmentation=False)

# Registry order: v1, v2, v3 (v1-based), v3 (v2-based), as in the papers, then v3 L2.
SPECS = {spec.name: spec for spec in [
    #          name               family   exp  drop   s2  s4   (s8, d)     (s16, d)    (s32, d)
    _v1_style("mobilevit_xxs",    "v1",    2,   0.05, (16, 24,  (48, 64),   (64, 80),   (80, 96))),
    _v1_style("mobilevit_xs",     "v1",    4,   0.1,  (32, 48,  (64, 96),   (80, 120),  (96, 144))),
    _v1_style("mobilevit_s",      "v1",    4,   0.1,  (32, 64,  (96, 144),  (128, 192), (160, 240))),
    *(_v2_style(f"mobilevitv2_{tag}", "v2", width) for tag, width in _V2_WIDTHS),
    _v1_style("mobilevitv3_xxs",  "v3_v1", 2,   0.05, (16, 24,  (64, 64),   (80, 80),   (128, 96))),
    _v1_style("mobilevitv3_xs",   "v3_v1", 4,   0.1,  (32, 48,  (96, 96),   (160, 120), (160, 144))),
    _v1_style("mobilevitv3_s",    "v3_v1", 4,   0.1,  (32, 64,  (128, 144), (256, 192), (320, 240))),
    *(_v2_style(f"mobilevitv3_{tag}", "v3_v2", width) for tag, width in _V2_WIDTHS[:3]),
    _v1_style("mobilevitv3_xxs_l2", "v3_v1", 2, 0.05, (16, 24, (64, 64),   (80, 80),   (128, 96)), **_L2),
    _v1_style("mobilevitv3_xs_l2",  "v3_v1", 4, 0.1,  (32, 48, (96, 96),   (160, 120), (160, 144)), **_L2),
    _v1_style("mobilevitv3_s_l2",   "v3_v1", 4, 0.1,  (32, 64, (128, 144), (256, 192), (320, 240)), **_L2),
]}


def list_models():
    """Names of all registered variants, e.g. ['mobilevit_xxs', ..., 'mobilevitv3_100']."""
    return list(SPECS)


def get_spec(name):
    """The Spec of a variant; a clear error lists the valid names."""
    if name not in SPECS:
        raise ValueError(
            f"Unknown MobileViT model {name!r}. Valid names: {', '.join(SPECS)}."
        )
    return SPECS[name]


def segmentation_models():
    """Variants with an official DeepLabV3 config (all but the v3 L2 classifiers)."""
    return [name for name, spec in SPECS.items() if spec.segmentation]


def get_family(name):
    """'v1', 'v2', 'v3_v1' or 'v3_v2' for a registered variant name."""
    return get_spec(name).family.name


def hidden_channels(in_channels, expansion):
    """Hidden width of an inverted residual block, as the official code rounds it."""
    return make_divisible(int(round(in_channels * expansion)), 8)
