"""The 16 MobileViT variants as data: one table per family, one row per variant.

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
    """What one family does differently inside the MobileViT block (and nothing else).

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
    """

    name: str
    attention: str
    local_depthwise: bool
    fusion: str
    resize: str
    bgr: bool
    head_expansion: bool
    classifier_dropout: float


FAMILIES = {
    "v1": Family("v1", "mha", False, "input_global_3x3", "unfold", True, True, 0.1),
    "v3_v1": Family("v3_v1", "mha", True, "local_global_1x1_add", "unfold", True, True, 0.1),
    "v2": Family("v2", "linear", True, "none", "input", False, False, 0.0),
    "v3_v2": Family("v3_v2", "linear", True, "global_local_1x1_add", "input", False, False, 0.0),
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

    @property
    def head_channels(self):
        """Channels of the final feature map (after the v1-style 1x1 expansion)."""
        last = self.stages[-1].out
        return min(4 * last, 960) if self.family.head_expansion else last


def _v1_style(name, family, expansion, dropout, widths):
    """widths: (s2, s4, (s8, d8), (s16, d16), (s32, d32)); ffn = 2 * d everywhere."""
    s2, s4, *vit = widths
    stages = (Stage(s2, 1), Stage(s4, 3)) + tuple(
        Stage(out, 1, dim, 2 * dim, depth) for (out, dim), depth in zip(vit, (2, 4, 3))
    )
    return Spec(name, FAMILIES[family], 16, expansion, stages, dropout)


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

# Registry order: v1, v2, v3 (v1-based), v3 (v2-based), as in the papers.
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


def get_family(name):
    """'v1', 'v2', 'v3_v1' or 'v3_v2' for a registered variant name."""
    return get_spec(name).family.name


def hidden_channels(in_channels, expansion):
    """Hidden width of an inverted residual block, as the official code rounds it."""
    return make_divisible(int(round(in_channels * expansion)), 8)
