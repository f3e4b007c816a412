"""Registered, serializable layers that MobileViT is built from (keras.ops only).

Every tensor stays rank <= 4 (GPU delegates and NPUs reject rank-5 tensors), so the
patch unfold is written as two rank-4 transposes instead of one rank-6 permute.
Layer names in the built models are the official PyTorch state_dict prefixes, which
is how `keras_mobilevit.weights` maps checkpoints onto layers.

Example:
    >>> x = keras.Input((32, 32, 16))
    >>> y = ConvNormAct(24, 3, strides=2)(x)          # [B, 16, 16, 24]
"""

import keras
import numpy as np
from keras import ops

_register = keras.saving.register_keras_serializable(package="keras_mobilevit")

BN_EPSILON = 1e-5  # PyTorch's BatchNorm/LayerNorm/GroupNorm default (Keras: 1e-3)
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 == Keras momentum 0.9


def torch_padding(kernel_size, strides, dilation_rate=1):
    """(explicit pad per side, Keras padding) reproducing PyTorch's symmetric padding.

    Stride 1 with an odd kernel: "same" is exactly PyTorch's padding. Strided convs pad
    (k - 1) // 2 * dilation on every side explicitly, then run "valid".
    """
    pad = (kernel_size - 1) // 2 * dilation_rate if strides > 1 else 0
    return pad, "valid" if strides > 1 or kernel_size == 1 else "same"


@_register
class ConvNormAct(keras.layers.Layer):
    """Conv (no bias) -> optional BatchNorm -> optional swish or ReLU, padded like PyTorch.

    Strided convs pad (k - 1) // 2 * dilation on every side, as PyTorch does; Keras'
    "same" would pad (0, 1) on even inputs and shift every feature map by a pixel.

    Args:
        filters: output channels (ignored for depthwise convs, which keep C).
        kernel_size: square kernel size.
        strides: 1 or 2.
        dilation_rate: dilation of the kernel (for output strides 16 and 8).
        depthwise: a depthwise conv (groups == channels).
        use_norm: add BatchNorm(eps=1e-5).
        activation: "swish" (the backbones), "relu" (the segmentation heads) or None.
    """

    def __init__(self, filters, kernel_size=1, strides=1, dilation_rate=1,
                 depthwise=False, use_norm=True, activation="swish", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.depthwise = depthwise
        self.use_norm = use_norm
        if activation not in ("swish", "relu", None):
            raise ValueError(f"`activation` must be 'swish', 'relu' or None; got {activation!r}.")
        self.activation = activation
        self.pad, padding = torch_padding(kernel_size, strides, dilation_rate)
        common = dict(kernel_size=kernel_size, strides=strides, padding=padding,
                      dilation_rate=dilation_rate, use_bias=False, dtype=self.dtype_policy)
        if depthwise:
            self.conv = keras.layers.DepthwiseConv2D(name="conv", **common)
        else:
            self.conv = keras.layers.Conv2D(filters, name="conv", **common)
        self.norm = (keras.layers.BatchNormalization(
            epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="norm", dtype=self.dtype_policy)
            if use_norm else None)

    def build(self, input_shape):
        padded = list(input_shape)
        for axis in (1, 2):
            if padded[axis] is not None:
                padded[axis] += 2 * self.pad
        self.conv.build(tuple(padded))
        if self.norm is not None:
            self.norm.build(self.conv.compute_output_shape(tuple(padded)))

    def call(self, x, training=None):
        if self.pad:
            p = self.pad
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x, training=training)
        if self.activation == "swish":
            x = ops.silu(x)
        elif self.activation == "relu":
            x = ops.relu(x)
        return x

    def compute_output_shape(self, input_shape):
        padded = list(input_shape)
        for axis in (1, 2):
            if padded[axis] is not None:
                padded[axis] += 2 * self.pad
        return self.conv.compute_output_shape(tuple(padded))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "dilation_rate": self.dilation_rate, "depthwise": self.depthwise,
                "use_norm": self.use_norm, "activation": self.activation}


@_register
class Preprocess(keras.layers.Layer):
    """RGB pixels in [0, 255] -> what the network was trained on: [0, 1], RGB or BGR."""

    def __init__(self, scale=1.0 / 255.0, reverse_channels=False, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.reverse_channels = reverse_channels

    def call(self, x):
        x = ops.cast(x, self.compute_dtype) * self.scale
        if self.reverse_channels:
            x = ops.flip(x, axis=-1)  # RGB -> BGR (the OpenCV-trained v1 / v3-v1 weights)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale,
                "reverse_channels": self.reverse_channels}


def torch_source_index(out_len, in_len, align_corners, xp=ops):
    """Where output pixel i samples the input, as torch's bilinear F.interpolate computes
    it: (i0, i1, weight of i1) per output pixel, each [out_len].

    `xp` is `keras.ops` (symbolic lengths) or `numpy` (static lengths, for constant
    matrices); the rule is written once for both.
    """
    i = xp.arange(out_len) * 1.0
    in_f, out_f = in_len * 1.0, out_len * 1.0
    if align_corners:
        src = i * (in_f - 1.0) / xp.maximum(out_f - 1.0, 1.0)
    else:  # half-pixel centres, clamped at 0 (torch does not clamp the upper end)
        src = xp.maximum((i + 0.5) * in_f / out_f - 0.5, 0.0)
    i0 = xp.floor(src)
    i1 = xp.minimum(i0 + 1, in_len - 1)
    return i0, i1, src - i0


def resize_matrix(in_len, out_len, align_corners):
    """[out_len, in_len] float32 numpy matrix of torch's bilinear weights along one axis."""
    i0, i1, frac = torch_source_index(out_len, in_len, align_corners, xp=np)
    m = np.zeros((out_len, in_len), "float32")
    rows = np.arange(out_len)
    np.add.at(m, (rows, i0.astype(int)), 1.0 - frac)
    np.add.at(m, (rows, i1.astype(int)), frac)
    return m


def interpolation_matrix(in_len, out_len, align_corners, dtype="float32"):
    """[out_len, in_len] tensor of torch's bilinear weights along one axis, for lengths
    that may be symbolic: bit-identical to the constant `resize_matrix` of the same
    lengths (computed in float64 and rounded in the same order as numpy's), so a graph
    traced with unknown sizes computes what the static graph computes.

    Example:
        >>> m = interpolation_matrix(ops.shape(x)[1], 2 * ops.shape(x)[1], False)
        >>> y = ops.einsum("oh,bhwc->bowc", m, x)
    """
    in_len, out_len = ops.cast(in_len, "int32"), ops.cast(out_len, "int32")
    i0, i1, frac = torch_source_index(ops.cast(out_len, "float64"),
                                      ops.cast(in_len, "float64"), align_corners)
    frac = frac[:, None]
    # numpy's add.at into a float32 matrix: row = f32(1 - frac) at i0, then
    # f32(row + frac) at i1 (the sum taken in float64)
    first = ops.cast(ops.cast(1.0 - frac, "float32"), "float64") * ops.one_hot(
        ops.cast(i0, "int32"), in_len, dtype="float64")
    m = first + frac * ops.one_hot(ops.cast(i1, "int32"), in_len, dtype="float64")
    return ops.cast(ops.cast(m, "float32"), dtype)


def _resize_axis(x, out_len, axis, align_corners):
    """Bilinear resampling along one axis (1 or 2) with a symbolic length (gathers)."""
    in_len = ops.shape(x)[axis]
    i0, i1, w = torch_source_index(ops.cast(out_len, "float32"), ops.cast(in_len, "float32"),
                                   align_corners)
    i0, i1 = ops.cast(i0, "int32"), ops.cast(i1, "int32")
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    w = ops.cast(ops.reshape(w, shape), x.dtype)
    return ops.take(x, i0, axis=axis) * (1.0 - w) + ops.take(x, i1, axis=axis) * w


def resize_bilinear(x, size, align_corners=False):
    """Resize [B, H, W, C] to `size` = (out_h, out_w) exactly as torch's bilinear
    `F.interpolate(x, size, mode="bilinear", align_corners=...)` does.

    Static sizes become at most two matmuls with constant [out, in] matrices (exported
    graphs then hold matmuls, which XNNPACK and GPU delegates take, instead of GATHER
    ops; an axis whose size does not change costs nothing); symbolic sizes use gathers.

    Example:
        >>> y = resize_bilinear(x, (512, 512), align_corners=True)   # [B, 512, 512, C]
    """
    h, w = x.shape[1], x.shape[2]
    out_h, out_w = size
    static = all(isinstance(n, int) for n in (h, w, out_h, out_w))
    if static:
        if out_h != h:  # [out_h, h] x [B, h, W, C]
            m = ops.convert_to_tensor(resize_matrix(h, out_h, align_corners), dtype=x.dtype)
            x = ops.einsum("oh,bhwc->bowc", m, x)
        if out_w != w:
            m = ops.convert_to_tensor(resize_matrix(w, out_w, align_corners), dtype=x.dtype)
            x = ops.einsum("ow,bhwc->bhoc", m, x)
        return x
    x = _resize_axis(x, out_h, 1, align_corners)
    return _resize_axis(x, out_w, 2, align_corners)


def _spatial_size(x):
    """[H, W] of [B, H, W, C]: Python ints where static, scalar tensors where not."""
    return [x.shape[i] if x.shape[i] is not None else ops.shape(x)[i] for i in (1, 2)]


def _resized_shape(input_shape, rule):
    """Output shape of a resize layer: the `like` input's H, W for [x, like] inputs, else
    `rule(n)` of each known spatial size."""
    if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
        x, like = input_shape
        return (x[0], like[1], like[2], x[3])
    up = lambda n: None if n is None else rule(n)  # noqa: E731
    return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])


def needs_resize(x, like=None, multiple=2):
    """False when static shapes show the resize is the identity (the usual case)."""
    h, w = x.shape[1], x.shape[2]
    if like is not None:
        return not (h is not None and h == like.shape[1] and w is not None and w == like.shape[2])
    return not (h is not None and w is not None and h % multiple == 0 and w % multiple == 0)


@_register
class PatchResize(keras.layers.Layer):
    """Bilinear resize [B, H, W, C] to the next multiple of the patch size, or to the
    spatial size of a second input (`layer([x, like])`).

    Static shapes that need no resize cost nothing (the layer returns its input when
    traced), so exported graphs at 256x256 contain no resize ops at all. With dynamic
    shapes the resize always runs, and it is exactly the identity when no resize is
    needed.
    """

    def __init__(self, patch_size=2, align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.align_corners = align_corners

    def call(self, inputs):
        x, like = inputs if isinstance(inputs, (list, tuple)) else (inputs, None)
        if not needs_resize(x, like, self.patch_size):
            return x
        p = self.patch_size  # else: round up to a multiple of the patch size
        size = _spatial_size(like) if like is not None else [
            -(-n // p) * p for n in _spatial_size(x)]
        return resize_bilinear(x, size, self.align_corners)

    def _matrix(self, in_len, out_len):
        """[out_len, in_len] bilinear weights along one axis (`resize_matrix`), as a tensor."""
        return ops.convert_to_tensor(resize_matrix(in_len, out_len, self.align_corners),
                                     dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return _resized_shape(input_shape, lambda n: -(-n // self.patch_size) * self.patch_size)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size,
                "align_corners": self.align_corners}


@_register
class BilinearResize(keras.layers.Layer):
    """torch's bilinear resize (`resize_bilinear`) as a layer: `layer([x, like])` resizes
    x to the spatial size of `like`; `layer(x)` with `scale` multiplies H and W by it
    (nn.Upsample(scale_factor=scale)).

    Example:
        >>> y = BilinearResize(align_corners=True)([logits, image])   # image's H, W
        >>> y = BilinearResize(scale=16)(logits)                       # 16 H, 16 W
    """

    def __init__(self, scale=None, align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.align_corners = align_corners

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            x, size = inputs[0], _spatial_size(inputs[1])
        else:
            x, size = inputs, [n * self.scale for n in _spatial_size(inputs)]
        return resize_bilinear(ops.cast(x, self.compute_dtype), size, self.align_corners)

    def compute_output_shape(self, input_shape):
        return _resized_shape(input_shape, lambda n: n * self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale,
                "align_corners": self.align_corners}


@_register
class Unfold(keras.layers.Layer):
    """[B, H, W, C] -> the pixels at each of the P = 4 positions of a 2x2 patch.

    Output [B * P, N, C] (`merge_batch=True`, v1: attention runs across the N patches
    for each pixel position) or [B, P, N, C] (v2). P index = ph * 2 + pw and
    N index = nh * (W / 2) + nw, as in the official code. H and W must be even.
    """

    def __init__(self, merge_batch=True, **kwargs):
        super().__init__(**kwargs)
        self.merge_batch = merge_batch

    def call(self, x):
        _, h, w, c = ops.shape(x)
        nh, nw = h // 2, w // 2
        x = ops.reshape(x, (-1, nh, 2, nw * 2 * c))          # [B, nh, ph, nw*pw*C]
        x = ops.transpose(x, (0, 2, 1, 3))                   # [B, ph, nh, nw*pw*C]
        x = ops.reshape(x, (-1, nh * nw, 2, c))              # [B*ph, N, pw, C]
        x = ops.transpose(x, (0, 2, 1, 3))                   # [B*ph, pw, N, C]
        shape = (-1, nh * nw, c) if self.merge_batch else (-1, 4, nh * nw, c)
        return ops.reshape(x, shape)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        n = None if h is None or w is None else (h // 2) * (w // 2)
        if self.merge_batch:
            return (None if b is None else 4 * b, n, c)
        return (b, 4, n, c)

    def get_config(self):
        return {**super().get_config(), "merge_batch": self.merge_batch}


@_register
class Fold(keras.layers.Layer):
    """Inverse of Unfold: `Fold()([patches, like])` -> [B, H, W, C] with H, W of `like`."""

    def call(self, inputs):
        x, like = inputs
        _, h, w, _ = ops.shape(like)
        c = ops.shape(x)[-1]
        nh, nw = h // 2, w // 2
        x = ops.reshape(x, (-1, 2, nh * nw, c))              # [B*ph, pw, N, C]
        x = ops.transpose(x, (0, 2, 1, 3))                   # [B*ph, N, pw, C]
        x = ops.reshape(x, (-1, 2, nh, nw * 2 * c))          # [B, ph, nh, nw*pw*C]
        x = ops.transpose(x, (0, 2, 1, 3))                   # [B, nh, ph, nw*pw*C]
        return ops.reshape(x, (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        x, like = input_shape
        return (like[0], like[1], like[2], x[-1])


@_register
class LayerNorm(keras.layers.Layer):
    """LayerNorm over the last axis, eps 1e-5, written out so int8 graphs stay integer
    (Keras' LayerNormalization leaves float NEG ops in a full-int8 TFLite graph).

    With `axes="all"` it normalises over every non-batch axis jointly: the v2
    "layer_norm_2d" (GroupNorm with one group) over [P, N, d], with a per-channel affine.
    """

    def __init__(self, epsilon=BN_EPSILON, axes="last", **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.axes = axes

    def build(self, input_shape):
        dim = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")

    def call(self, x):
        dtype = keras.backend.standardize_dtype(x.dtype)
        if dtype in ("float16", "bfloat16"):  # statistics in float32 under mixed precision
            x = ops.cast(x, "float32")
        axes = -1 if self.axes == "last" else tuple(range(1, len(x.shape)))
        mean = ops.mean(x, axis=axes, keepdims=True)
        centered = x - mean
        # centered * centered, not square(): the converter would fuse square(x - mean)
        # into SQUARED_DIFFERENCE, whose int8 kernel aborts LiteRT 2.3 at allocation.
        var = ops.mean(centered * centered, axis=axes, keepdims=True)
        gamma, beta = ops.cast(self.gamma, x.dtype), ops.cast(self.beta, x.dtype)
        return ops.cast(centered * ops.rsqrt(var + self.epsilon) * gamma + beta, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "axes": self.axes}


@_register
class MultiHeadSelfAttention(keras.layers.Layer):
    """v1 attention on [B', N, d]: qkv Dense -> softmax(q k^T / sqrt(hd)) v -> out Dense.

    The qkv projection's output channels are ordered [q | k | v], each [head0 | head1
    | ...], as in the official checkpoints.
    """

    def __init__(self, num_heads=4, attention_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.dropout = keras.layers.Dropout(attention_dropout)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.qkv_proj = keras.layers.Dense(3 * dim, name="qkv_proj", dtype=self.dtype_policy)
        self.out_proj = keras.layers.Dense(dim, name="out_proj", dtype=self.dtype_policy)
        self.qkv_proj.build(input_shape)
        self.out_proj.build(input_shape)

    def call(self, x, training=None):
        _, n, dim = ops.shape(x)
        h = self.num_heads
        hd = dim // h
        qkv = ops.reshape(self.qkv_proj(x), (-1, n, 3 * h, hd))   # [B', N, 3h, hd]
        qkv = ops.transpose(qkv, (0, 2, 1, 3))                    # [B', 3h, N, hd]
        q, k, v = qkv[:, :h], qkv[:, h:2 * h], qkv[:, 2 * h:]      # [B', h, N, hd] each
        q = q * (hd ** -0.5)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))   # [B', h, N, N]
        # a single patch (tiny inputs) attends to itself with weight 1
        attn = ops.ones_like(scores) if scores.shape[-1] == 1 else ops.softmax(scores, axis=-1)
        attn = self.dropout(attn, training=training)              # [B', h, N, N]
        out = ops.transpose(ops.matmul(attn, v), (0, 2, 1, 3))    # [B', N, h, hd]
        return self.out_proj(ops.reshape(out, (-1, n, dim)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "attention_dropout": self.attention_dropout}


@_register
class LinearSelfAttention(keras.layers.Layer):
    """v2 separable self-attention on [B, P, N, d], O(N) in the number of patches.

    qkv (one Dense, d -> 1 + 2d) gives a 1-channel query, keys and values; the query is
    softmaxed over the N patches, the keys pooled with it into one context vector per
    pixel position, which gates relu(values).
    """

    def __init__(self, attention_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.attention_dropout = attention_dropout
        self.dropout = keras.layers.Dropout(attention_dropout)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.qkv_proj = keras.layers.Dense(1 + 2 * dim, name="qkv_proj", dtype=self.dtype_policy)
        self.out_proj = keras.layers.Dense(dim, name="out_proj", dtype=self.dtype_policy)
        self.qkv_proj.build(input_shape)
        self.out_proj.build(input_shape)

    def call(self, x, training=None):
        dim = x.shape[-1]
        qkv = self.qkv_proj(x)                                    # [B, P, N, 1 + 2d]
        q, k, v = qkv[..., :1], qkv[..., 1:1 + dim], qkv[..., 1 + dim:]
        # softmax over the N patches (a single patch, at tiny inputs, gets weight 1)
        scores = ops.ones_like(q) if q.shape[2] == 1 else ops.softmax(q, axis=2)
        scores = self.dropout(scores, training=training)
        context = ops.sum(k * scores, axis=2, keepdims=True)      # [B, P, 1, d]
        return self.out_proj(ops.relu(v) * context)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "attention_dropout": self.attention_dropout}


__all__ = ["ConvNormAct", "Preprocess", "PatchResize", "BilinearResize", "resize_bilinear",
           "resize_matrix", "torch_source_index", "Unfold", "Fold", "LayerNorm",
           "MultiHeadSelfAttention", "LinearSelfAttention", "BN_EPSILON", "BN_MOMENTUM"]
