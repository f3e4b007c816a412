"""The QAT layers: serializable Keras 3 twins of keras_mobilevit's layers with int8 fake-quant.

tensorflow-model-optimization cannot quantize Keras 3 models, so QAT here is a set of
twin layers built on `keras.quantizers.fake_quant_with_min_max_vars` (which lowers to
`tf.quantization.fake_quant_*`, whose ranges the TFLite converter turns into int8
scales):

- conv / depthwise conv with BatchNorm folded in, per-channel symmetric int8 weights;
- Dense with per-tensor symmetric int8 weights (per-channel Dense fails conversion);
- moving min/max fake-quant on every activation the int8 graph holds: conv and Dense
  outputs, swish, attention q/k/v, scores, softmax, attention output, every
  intermediate of LayerNorm / GroupNorm, residual adds, concatenations, pooling.
- the constants the int8 graph holds as int8 (LayerNorm's gamma and beta, the patch
  resize's interpolation matrices) on the grid the converter puts them on, and swish's
  sigmoid in the LOGISTIC's fixed 1/256 steps: the twin computes what the `.tflite`
  computes, up to the rounding of LiteRT's kernels and the int32 biases.

The quantization is also shaped for speed under LiteRT: the right-hand operands of
the attention matmuls (keys and values) are quantized symmetrically, because XNNPACK
only takes an int8 BATCH_MATMUL whose second input has zero point 0 (otherwise it
falls back to a builtin kernel that is 30x slower); the input rescale and RGB->BGR flip
are folded into the stem conv (`folding`), so raw uint8 pixels go straight into the
first conv. Building the twin of a whole model: `tflite.qat.make_qat_model`.

Example:
    >>> fq = FakeQuant(symmetric=True)
    >>> y = fq(x, training=True)   # observes the range, then fake-quantizes
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_mobilevit import detection as kmv_detection
from keras_mobilevit import layers as kmv_layers
from tflite import folding

_register = keras.saving.register_keras_serializable(package="keras_mobilevit_qat")
_fake_quant = keras.quantizers.fake_quant_with_min_max_vars

# Smallest range an activation (width) or a weight tensor (max |w|) gets: an all-zero
# tensor (e.g. a zero-initialized branch) must still give the converter a usable scale;
# scales near the float32 limit make it fail or crash.
MIN_ACTIVATION_RANGE = 1e-4
MIN_WEIGHT_RANGE = 1e-6

# TFLite's int8 softmax / logistic output: scale 1/256, zero point -128, i.e. [0, 255/256].
UNIT_RANGE = (0.0, 255.0 / 256.0)
PIXEL_RANGE = (0.0, 255.0)


class UnsupportedLayerError(ValueError):
    """The model holds a layer that QAT has no quantized version of."""


class Diagnosis:
    """Switches for `tflite.quant_error` only (never serialized): `float_weights` makes
    `quantize_weights` the identity in the graphs traced while it is set."""
    float_weights = False


def quantize_weights(w, axis=None):
    """Symmetric int8 fake-quant of a weight tensor, per channel along `axis` or per tensor."""
    if Diagnosis.float_weights:
        return w
    if axis is None:
        m = ops.max(ops.abs(w))
    else:
        axes = tuple(i for i in range(len(w.shape)) if i != axis % len(w.shape))
        m = ops.max(ops.abs(w), axis=axes)
    m = ops.stop_gradient(ops.maximum(m, MIN_WEIGHT_RANGE))
    return _fake_quant(w, -m, m, num_bits=8, narrow_range=True, axis=axis)


def quantize_constant(w):
    """`w` on the int8 grid the converter gives a constant operand of an elementwise op
    (LayerNorm's gamma and beta): per tensor, asymmetric, over [min(0, min w), max(0,
    max w)]. The int8 graph computes with that, not with `w` (off by up to half a
    step, 0.2% of the largest value)."""
    if Diagnosis.float_weights:
        return w
    lo = ops.stop_gradient(ops.minimum(ops.min(w), 0.0))
    hi = ops.stop_gradient(ops.maximum(ops.maximum(ops.max(w), 0.0), lo + MIN_WEIGHT_RANGE))
    return _fake_quant(w, lo, hi, num_bits=8)


def quantized_rows(matrix):
    """A constant [out, in] numpy matrix on the grid of the int8 weights the converter
    makes of it (a FULLY_CONNECTED's: per output row, symmetric, narrow range):
    `quantize_weights(matrix, axis=0)` run eagerly, even while a graph is traced, so
    that the exported graph holds a plain constant."""
    with tf.init_scope():
        rows = quantize_weights(ops.convert_to_tensor(np.asarray(matrix, np.float32)), axis=0)
        return ops.convert_to_numpy(rows)


def _round_significant(v, bits=6):
    """`v` rounded away from 0 to `bits` significant binary digits (0 stays 0): the
    range only ever widens, so nothing the moving range holds gets clipped."""
    step = ops.power(2.0, ops.floor(ops.log2(ops.maximum(ops.abs(v), 1e-30))) - (bits - 1))
    return ops.sign(v) * ops.ceil(ops.abs(v) / step) * step


@_register
class FakeQuant(keras.layers.Layer):
    """int8 fake quantization of an activation with a moving min/max range.

    Training updates the range as an exponential moving average of batch min/max
    (`momentum`); `calibrate()` sets it to the min/max over a dataset. `symmetric`
    keeps the range centred on 0 (zero point 0 in int8); `fixed_range` never moves.
    """

    def __init__(self, symmetric=False, fixed_range=None, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.symmetric = symmetric
        self.fixed_range = tuple(fixed_range) if fixed_range is not None else None
        self.momentum = momentum
        self.calibrating = False  # set by calibrate(); never serialized
        self.bypass = False  # float pass-through, for `tflite.quant_error`; never serialized
        self.histogram = None  # a range_search.Histogram while calibrate() fills it
        # The range does not depend on the input shape: create it now, so the layer is
        # complete even inside a parent whose symbolic call skips `call`.
        if self.fixed_range is None:
            self._create_range()
        self.built = True

    def _create_range(self):
        self.range_min = self.add_weight(name="range_min", shape=(), initializer="zeros",
                                         trainable=False)
        self.range_max = self.add_weight(name="range_max", shape=(), initializer="zeros",
                                         trainable=False)
        self.observed = self.add_weight(name="observed", shape=(), initializer="zeros",
                                        trainable=False)

    def call(self, x, training=None):
        if self.bypass:
            return x
        if self.fixed_range is not None:
            return _fake_quant(x, *self.fixed_range, num_bits=8)
        if training or self.calibrating:
            self._observe(x)
        elif self.histogram is not None:  # calibrate()'s second pass, run eagerly
            self.histogram.add(ops.convert_to_numpy(x))
        return _fake_quant(x, *self.quantization_range(), num_bits=8)

    def quantization_range(self):
        """The range the fake-quant (and the int8 graph) uses: the moving range with
        its ends rounded outward to 6 significant bits (at most 3% wider).

        Why: a concat or a resize takes one int8 scale for all its tensors, and a range
        observed on another fake-quant's output comes out a hair off that one's (e.g.
        0.0472410 vs 0.0472467 per step); the converter refused such near-equal scales.
        Rounded, they are equal, or a whole grid step apart."""
        hi = _round_significant(self.range_max)
        if self.symmetric:  # keep the zero point exactly 0 (see `_observe`)
            return -hi * (128.0 / 127.0), hi
        return _round_significant(self.range_min), hi

    def _observe(self, x):
        lo = ops.minimum(ops.min(x), 0.0)  # the int8 range must hold 0 exactly
        hi = ops.maximum(ops.max(x), 0.0)
        if self.symmetric:
            # [-128, 127] steps of hi / 127: the zero point is exactly 0 (a plain [-m, m]
            # puts it at 127.5, which float rounding sends to -1 or 0).
            hi = ops.maximum(ops.maximum(-lo, hi), MIN_ACTIVATION_RANGE)
            lo = -hi * (128.0 / 127.0)
        hi = ops.maximum(hi, lo + MIN_ACTIVATION_RANGE)
        seen = self.observed > 0
        if self.calibrating:
            lo = ops.where(seen, ops.minimum(self.range_min, lo), lo)
            hi = ops.where(seen, ops.maximum(self.range_max, hi), hi)
        else:
            m = self.momentum
            lo = ops.where(seen, m * self.range_min + (1 - m) * lo, lo)
            hi = ops.where(seen, m * self.range_max + (1 - m) * hi, hi)
        self.range_min.assign(ops.stop_gradient(lo))
        self.range_max.assign(ops.stop_gradient(hi))
        self.observed.assign(1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "symmetric": self.symmetric,
                "fixed_range": self.fixed_range, "momentum": self.momentum}


def _swish(x, fq_pre, fq_sigmoid, fq_act, training):
    """swish as the int8 graph computes it: LOGISTIC, whose int8 output has LiteRT's
    fixed 1/256 step (`fq_sigmoid`: rounded, and capped at 255/256), then MUL. With an
    exact sigmoid the twin drifted off the `.tflite` from the first layer on (3.4% of
    the stem's int8 outputs a step or more apart; 0.08% with it)."""
    x = fq_pre(x, training=training)
    return fq_act(x * fq_sigmoid(ops.sigmoid(x), training=training), training=training)


def _sigmoid_quant(activation):
    """The fixed-range fake-quant of a swish's sigmoid (None for other activations)."""
    if activation in ("swish", "silu"):
        return FakeQuant(fixed_range=UNIT_RANGE, name="fq_sigmoid")
    return None


@_register
class QConvAct(keras.layers.Layer):
    """`ConvNormAct` for QAT: BatchNorm folded into the kernel and a bias, per-channel
    int8 weights, fake-quant after the conv (after its relu) and after swish."""

    def __init__(self, filters, kernel_size=1, strides=1, dilation_rate=1, depthwise=False,
                 activation="swish", use_bias=True, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.depthwise = filters, kernel_size, depthwise
        self.strides, self.dilation_rate = strides, dilation_rate
        self.activation, self.use_bias, self.momentum = activation, use_bias, momentum
        self.pad, self.padding = kmv_layers.torch_padding(kernel_size, strides, dilation_rate)
        self.fq_out = FakeQuant(momentum=momentum, name="fq_out")
        if activation not in ("swish", "relu", None):  # ConvNormAct's choices
            raise UnsupportedLayerError(f"QAT supports ConvNormAct activation swish, relu or "
                                        f"None, not {activation!r}")
        # swish is LOGISTIC + MUL in the int8 graph (two ranges); relu is fused into the
        # conv, whose output range then starts at 0 (one range)
        self.fq_act = FakeQuant(momentum=momentum, name="fq_act") if activation == "swish" else None
        self.fq_sigmoid = _sigmoid_quant(activation)

    def build(self, input_shape):
        channels = input_shape[-1]
        k = self.kernel_size
        shape = (k, k, channels, 1) if self.depthwise else (k, k, channels, self.filters)
        out = channels if self.depthwise else self.filters
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="glorot_uniform")
        self.bias = (self.add_weight(name="bias", shape=(out,), initializer="zeros")
                     if self.use_bias else None)

    def call(self, x, training=None):
        if self.pad:
            p = self.pad
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        if self.depthwise:
            w = quantize_weights(self.kernel, axis=2)
            x = ops.depthwise_conv(x, w, strides=self.strides, padding=self.padding,
                                   dilation_rate=self.dilation_rate)
        else:
            w = quantize_weights(self.kernel, axis=3)
            x = ops.conv(x, w, strides=self.strides, padding=self.padding,
                         dilation_rate=self.dilation_rate)
        if self.bias is not None:
            x = x + self.bias
        if self.activation == "swish":
            return _swish(x, self.fq_out, self.fq_sigmoid, self.fq_act, training)
        if self.activation == "relu":
            x = ops.relu(x)
        return self.fq_out(x, training=training)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1:3]
        span = self.dilation_rate * (self.kernel_size - 1) + 1

        def size(n):
            if n is None or self.padding == "same":  # "same" only at stride 1: size kept
                return n
            return (n + 2 * self.pad - span) // self.strides + 1

        out = input_shape[-1] if self.depthwise else self.filters
        return (input_shape[0], size(h), size(w), out)

    def load_float(self, layer, preprocess=None):
        """Fold `layer`'s (a ConvNormAct) BatchNorm into this layer's kernel and bias,
        and the `preprocess` layer before it, if given (see `folding`)."""
        kernel = np.array(layer.conv.kernel.numpy(), dtype="float32")
        out = kernel.shape[2] if self.depthwise else kernel.shape[3]
        scale, shift = np.ones(out, "float32"), np.zeros(out, "float32")
        if layer.norm is not None:  # Keras BatchNormalization: gamma and beta always there
            bn = layer.norm
            scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            shift = bn.beta.numpy() - bn.moving_mean.numpy() * scale
        kernel = kernel * (scale[None, None, :, None] if self.depthwise else scale)
        self.kernel.assign(folding.folded_kernel(kernel, preprocess) if preprocess else kernel)
        if self.bias is not None:
            self.bias.assign(shift)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "dilation_rate": self.dilation_rate, "depthwise": self.depthwise,
                "activation": self.activation, "use_bias": self.use_bias,
                "momentum": self.momentum}


def _dense(x, kernel, bias):
    y = ops.matmul(x, quantize_weights(kernel))
    return y + bias if bias is not None else y


@_register
class QDense(keras.layers.Layer):
    """`keras.layers.Dense` for QAT: per-tensor int8 weights, fake-quant on the output
    (before and after the activation: None, "silu"/"swish" or "softmax")."""

    def __init__(self, units, activation=None, use_bias=True, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        if activation not in (None, "linear", "silu", "swish", "softmax"):
            raise UnsupportedLayerError(
                f"QAT supports Dense with activation None, silu or softmax, not {activation!r}"
            )
        self.units = units
        self.activation = None if activation == "linear" else activation
        self.use_bias = use_bias
        self.momentum = momentum
        self.fq_out = FakeQuant(momentum=momentum, name="fq_out")
        self.fq_act = None
        if self.activation in ("silu", "swish"):
            self.fq_act = FakeQuant(momentum=momentum, name="fq_act")
        elif self.activation == "softmax":
            self.fq_act = FakeQuant(fixed_range=UNIT_RANGE, name="fq_act")
        self.fq_sigmoid = _sigmoid_quant(self.activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform")
        self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
                     if self.use_bias else None)

    def call(self, x, training=None):
        y = _dense(x, self.kernel, self.bias)
        if self.activation in ("silu", "swish"):
            return _swish(y, self.fq_out, self.fq_sigmoid, self.fq_act, training)
        y = self.fq_out(y, training=training)
        if self.activation == "softmax":
            y = self.fq_act(ops.softmax(y, axis=-1), training=training)
        return y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def load_float(self, layer):
        self.kernel.assign(layer.kernel.numpy())
        if self.bias is not None:
            self.bias.assign(layer.bias.numpy())

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "momentum": self.momentum}


@_register
class QSSDPrediction(keras.layers.Layer):
    """An SSD head's prediction (1x1 conv as Dense, `weights_from`) and its
    `SSDHeadOutput` in one twin layer: box and class channels computed apart, each with
    its own int8 weight scale and output range.

    The float layers compute one [B, H, W, anchors * (4 + C)] tensor and split it; an int8
    graph would give box regressions and class logits one scale, set by the wider of the
    two (a global level's logits reach +-60 where its box values stay within +-5), and
    the decoded boxes lose pixels. Same math: the kernel's box columns (4 of every 4 + C)
    and class columns are sliced from the float kernel.

    Example:
        >>> boxes, logits = QSSDPrediction(6 * 15, 11, "ssd_heads.0.loc_cls_layer.pw_conv")(x)
        >>> boxes.shape, logits.shape        # ([B, H*W*6, 4], [B, H*W*6, 11])
    """

    def __init__(self, units, num_classes, weights_from, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.units, self.num_classes = units, num_classes
        self.weights_from, self.momentum = weights_from, momentum
        self.fq_box = FakeQuant(momentum=momentum, name="fq_box")
        self.fq_cls = FakeQuant(momentum=momentum, name="fq_cls")
        # column j of the float kernel is anchor j // (4 + C), value j % (4 + C): box first
        per_anchor = kmv_detection.COORDINATES + num_classes
        column = np.arange(units) % per_anchor
        self._box_columns = np.flatnonzero(column < kmv_detection.COORDINATES)
        self._cls_columns = np.flatnonzero(column >= kmv_detection.COORDINATES)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def _part(self, x, columns, fq, width, training):
        kernel, bias = ops.take(self.kernel, columns, axis=1), ops.take(self.bias, columns)
        y = fq(_dense(x, kernel, bias), training=training)   # [B, H, W, anchors * width]
        return ops.reshape(y, (ops.shape(y)[0], -1, width))  # rows (y, x, anchor)

    def call(self, x, training=None):
        return (self._part(x, self._box_columns, self.fq_box, kmv_detection.COORDINATES,
                           training),
                self._part(x, self._cls_columns, self.fq_cls, self.num_classes, training))

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[:3]
        rows = None if None in (height, width) else (
            height * width * self.units // (kmv_detection.COORDINATES + self.num_classes))
        return (batch, rows, kmv_detection.COORDINATES), (batch, rows, self.num_classes)

    def load_float(self, layer):
        """From the float prediction Dense (`weights_from`), not the SSDHeadOutput."""
        self.kernel.assign(layer.kernel.numpy())
        self.bias.assign(layer.bias.numpy())

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_classes": self.num_classes,
                "weights_from": self.weights_from, "momentum": self.momentum}


@_register
class QLayerNorm(keras.layers.Layer):
    """`LayerNorm` (last axis, or all non-batch axes for v2's GroupNorm(1)) for QAT:
    every intermediate of the int8 graph gets a fake-quant range."""

    # No fake-quant on `var + eps`: the default int8 graph computes it in float (the
    # RSQRT float island takes its epsilon ADD along, see rewrite.float_islands), and
    # quantizing it rounded a flat token's variance (var + eps < half a step) to 0:
    # rsqrt(0) = inf made the ranges infinite and the gradients NaN. (--strict-int8
    # calibrates that ADD on the representative data instead.)
    _STEPS = ("mean", "centered", "squared", "var", "inv_std", "normed", "scaled", "out")

    def __init__(self, epsilon=kmv_layers.BN_EPSILON, axes="last", momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.axes = axes
        self.momentum = momentum
        self.fq = {s: FakeQuant(momentum=momentum, name=f"fq_{s}") for s in self._STEPS}

    def build(self, input_shape):
        dim = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")

    def call(self, x, training=None):
        fq = {s: (lambda t, s=s: self.fq[s](t, training=training)) for s in self._STEPS}
        axes = -1 if self.axes == "last" else tuple(range(1, len(x.shape)))
        mean = fq["mean"](ops.mean(x, axis=axes, keepdims=True))
        centered = fq["centered"](x - mean)
        squared = fq["squared"](centered * centered)
        var = fq["var"](ops.mean(squared, axis=axes, keepdims=True))
        # A token flatter than half a step of var's range rounds to var = 0, and
        # rsqrt(0 + eps) multiplied its centred values by ~300 (eps 1e-5): trained
        # segmenters have such flat background tokens, and the error grew layer by layer
        # to ranges of 1e26. One step is the smallest variance int8 can tell from 0: the
        # floor (an int8 MAXIMUM with a constant in the exported graph) bounds them.
        lo, hi = self.fq["var"].quantization_range()
        var = ops.maximum(var, (hi - lo) / 255.0)
        inv_std = fq["inv_std"](ops.rsqrt(var + self.epsilon))  # var >= 0: finite
        normed = fq["normed"](centered * inv_std)
        # gamma and beta as the int8 graph holds them (`quantize_constant`)
        scaled = fq["scaled"](normed * quantize_constant(self.gamma))
        return fq["out"](scaled + quantize_constant(self.beta))

    def compute_output_shape(self, input_shape):
        return input_shape

    def load_float(self, layer):
        self.gamma.assign(layer.gamma.numpy())
        self.beta.assign(layer.beta.numpy())

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "axes": self.axes,
                "momentum": self.momentum}


class _QAttention(keras.layers.Layer):
    """Shared parts of the attention twins: qkv and out projections, dropout."""

    def __init__(self, attention_dropout=0.0, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.attention_dropout = attention_dropout
        self.momentum = momentum
        self.dropout = keras.layers.Dropout(attention_dropout)

    def _fq(self, name, **kwargs):
        return FakeQuant(momentum=self.momentum, name=name, **kwargs)

    def _build_projections(self, dim, qkv_units):
        self.qkv_kernel = self.add_weight(name="qkv_kernel", shape=(dim, qkv_units))
        self.qkv_bias = self.add_weight(name="qkv_bias", shape=(qkv_units,), initializer="zeros")
        self.out_kernel = self.add_weight(name="out_kernel", shape=(dim, dim))
        self.out_bias = self.add_weight(name="out_bias", shape=(dim,), initializer="zeros")

    def load_float(self, layer):
        self.qkv_kernel.assign(layer.qkv_proj.kernel.numpy())
        self.qkv_bias.assign(layer.qkv_proj.bias.numpy())
        self.out_kernel.assign(layer.out_proj.kernel.numpy())
        self.out_bias.assign(layer.out_proj.bias.numpy())

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "attention_dropout": self.attention_dropout,
                "momentum": self.momentum}


@_register
class QMultiHeadSelfAttention(_QAttention):
    """v1 `MultiHeadSelfAttention` for QAT. Keys and values are quantized symmetrically
    so that XNNPACK runs both int8 batched matmuls (see the module docstring)."""

    def __init__(self, num_heads=4, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.fq_qkv = self._fq("fq_qkv")
        self.fq_q = self._fq("fq_q")
        self.fq_k = self._fq("fq_k", symmetric=True)
        self.fq_v = self._fq("fq_v", symmetric=True)
        self.fq_scores = self._fq("fq_scores")
        self.fq_attn = self._fq("fq_attn", fixed_range=UNIT_RANGE)
        self.fq_context = self._fq("fq_context")
        self.fq_out = self._fq("fq_out")

    def build(self, input_shape):
        dim = input_shape[-1]
        self._build_projections(dim, 3 * dim)

    def call(self, x, training=None):
        n, dim = ops.shape(x)[1], x.shape[-1]  # N may be dynamic (unknown batch shapes)
        h = self.num_heads
        hd = dim // h
        qkv = self.fq_qkv(_dense(x, self.qkv_kernel, self.qkv_bias), training=training)
        qkv = ops.transpose(ops.reshape(qkv, (-1, n, 3 * h, hd)), (0, 2, 1, 3))  # [B', 3h, N, hd]
        q = self.fq_q(qkv[:, :h] * (hd ** -0.5), training=training)
        k = self.fq_k(qkv[:, h:2 * h], training=training)
        v = self.fq_v(qkv[:, 2 * h:], training=training)
        scores = self.fq_scores(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), training=training)
        # a single patch (tiny inputs) attends to itself with weight 1, as in the float layer
        attn = ops.ones_like(scores) if scores.shape[-1] == 1 else ops.softmax(scores, axis=-1)
        attn = self.fq_attn(attn, training=training)
        attn = self.dropout(attn, training=training)
        context = self.fq_context(ops.matmul(attn, v), training=training)  # [B', h, N, hd]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (-1, n, dim))
        return self.fq_out(_dense(context, self.out_kernel, self.out_bias), training=training)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@_register
class QLinearSelfAttention(_QAttention):
    """v2 `LinearSelfAttention` (separable attention) for QAT, written for the int8 graph.

    Same math as the float layer, in the order that LiteRT's XNNPACK runs in int8:
    - q, k and v come from three Dense ops on the slices of the float layer's qkv
      kernel, and the ReLU of v is that Dense's fused activation: a ReLU on a slice of
      one qkv output stayed a standalone int8 RELU, which XNNPACK does not take (20% of
      mobilevitv2_050's int8 time, and a split of the delegated graph each time);
    - the context is one batched matmul, softmax(q)ᵀ [B, P, 1, N] @ k [B, P, N, d],
      with k symmetric (XNNPACK's int8 BATCH_MATMUL needs zero point 0 on its right
      operand), instead of a full-size MUL and a SUM over N.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fq_q = self._fq("fq_q")
        self.fq_k = self._fq("fq_k", symmetric=True)
        self.fq_values = self._fq("fq_values")
        self.fq_scores = self._fq("fq_scores", fixed_range=UNIT_RANGE)
        self.fq_context = self._fq("fq_context")
        self.fq_gated = self._fq("fq_gated")
        self.fq_out = self._fq("fq_out")

    def build(self, input_shape):
        dim = input_shape[-1]
        self._build_projections(dim, 1 + 2 * dim)

    def call(self, x, training=None):
        d = x.shape[-1]
        w, b = self.qkv_kernel, self.qkv_bias  # columns [q | k | v]: 1, d, d
        q = self.fq_q(_dense(x, w[:, :1], b[:1]), training=training)                 # [B, P, N, 1]
        k = self.fq_k(_dense(x, w[:, 1:1 + d], b[1:1 + d]), training=training)       # [B, P, N, d]
        values = self.fq_values(ops.relu(_dense(x, w[:, 1 + d:], b[1 + d:])), training=training)
        # softmax over the N patches, as a row: [B, P, 1, N] (a single patch gets weight 1)
        q = ops.transpose(q, (0, 1, 3, 2))
        scores = ops.ones_like(q) if q.shape[-1] == 1 else ops.softmax(q, axis=-1)
        scores = self.dropout(self.fq_scores(scores, training=training), training=training)
        context = self.fq_context(ops.matmul(scores, k), training=training)          # [B, P, 1, d]
        gated = self.fq_gated(values * context, training=training)
        return self.fq_out(_dense(gated, self.out_kernel, self.out_bias), training=training)


@_register
class QPreprocess(kmv_layers.Preprocess):
    """`Preprocess` for QAT when it cannot be folded into a following conv: pixel-range
    input, then a fake-quant on the rescaled (and flipped) output."""

    def __init__(self, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.fq_in = FakeQuant(fixed_range=PIXEL_RANGE, name="fq_in")
        self.fq_out = FakeQuant(momentum=momentum, name="fq_out")

    def call(self, x, training=None):
        return self.fq_out(super().call(self.fq_in(x)), training=training)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


@_register
class QPatchResize(kmv_layers.PatchResize):
    """`PatchResize` for QAT: the same bilinear resampling (PyTorch's, half-pixel or
    align-corners) written as two matmuls with constant interpolation matrices, one per
    resized axis, each followed by a fake-quant.

    Why not one RESIZE_BILINEAR: int8 needs the same scale on its input and output, but
    the converter fixes the input's scale from the fake-quant before it and the output's
    from the ones after it, and refused the graph when they differed (even in the last
    float bit), at random with the ranges. A matmul has its own output scale. Resizes
    only happen for maps that are not a multiple of the patch size (e.g. 1x1 -> 2x2 ->
    1x1 at stage 5 of a 32x32 input), so the matmuls are tiny.
    """

    def __init__(self, patch_size=2, align_corners=False, momentum=0.99, **kwargs):
        super().__init__(patch_size, align_corners, **kwargs)
        self.momentum = momentum
        self.fq_h = FakeQuant(momentum=momentum, name="fq_h")
        self.fq_w = FakeQuant(momentum=momentum, name="fq_w")

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}

    def call(self, inputs, training=None):
        x, like = inputs if isinstance(inputs, (list, tuple)) else (inputs, None)
        if not kmv_layers.needs_resize(x, like, self.patch_size):
            return x  # nothing to resize: no op in the graph
        h, w = x.shape[1], x.shape[2]
        if like is not None:
            out_h, out_w = like.shape[1], like.shape[2]
        else:
            p = self.patch_size
            out_h, out_w = (-(-h // p) * p if h else None), (-(-w // p) * p if w else None)
        if None in (h, w, out_h, out_w):
            return self._dynamic(x, like, training)  # e.g. training on unknown sizes
        if (h, w) == (1, 1):  # 1x1 -> any size: the bilinear resize repeats the pixel
            ones = ops.ones((1, out_h, out_w, 1), dtype=x.dtype)
            return self.fq_w(x * ones, training=training)
        if (out_h, out_w) == (1, 1) and not self.align_corners and h == w == 2:
            # 2x2 -> 1x1 with half-pixel centres: the mean of the four
            return self.fq_w(ops.mean(x, axis=(1, 2), keepdims=True), training=training)
        if out_h != h:  # [out_h, h] x [B, h, W, C]
            x = self.fq_h(ops.einsum("oh,bhwc->bowc", self._matrix(h, out_h), x),
                          training=training)
        if out_w != w:
            x = self.fq_w(ops.einsum("ow,bhwc->bhoc", self._matrix(w, out_w), x),
                          training=training)
        return x

    def _matrix(self, in_len, out_len):
        """The interpolation matrix on its int8 grid (`quantized_rows`): the exported
        matmul's weights, which the float matrix missed by up to half a step
        (0.4% of a row's largest weight)."""
        matrix = kmv_layers.resize_matrix(in_len, out_len, self.align_corners)
        return ops.convert_to_tensor(quantized_rows(matrix), dtype=self.compute_dtype)

    def _dynamic(self, x, like, training):
        """Sizes known only at run time (multi-scale training): the static graph's ops
        for the sizes met at run time, chosen by `tf.cond`, so the fake-quants see
        what the exported graph at that size holds: a 1x1 map repeated and a 2x2 -> 1x1
        mean each take fq_w only; otherwise the same matmul with the same
        interpolation matrix (`interpolation_matrix`: bit-identical to the static
        graph's constant) one axis at a time, only along an axis whose size changes (no
        extra quantization where the exported graph has no resize)."""
        shape = ops.shape(like if like is not None else x)
        in_h, in_w = ops.shape(x)[1], ops.shape(x)[2]
        p = self.patch_size
        out_h, out_w = ((shape[1], shape[2]) if like is not None else
                        ((in_h + p - 1) // p * p, (in_w + p - 1) // p * p))

        def resize(t, size, axis, fq):  # the static graph's matmul, bit for bit
            m = quantize_weights(kmv_layers.interpolation_matrix(
                ops.shape(t)[axis], size, self.align_corners, t.dtype), axis=0)
            equation = "oh,bhwc->bowc" if axis == 1 else "ow,bhwc->bhoc"
            return fq(ops.einsum(equation, m, t), training=training)

        def per_axis():
            y = tf.cond(tf.not_equal(out_h, in_h),
                        lambda: resize(x, out_h, 1, self.fq_h), lambda: x)
            return tf.cond(tf.not_equal(out_w, in_w),
                           lambda: resize(y, out_w, 2, self.fq_w), lambda: y)

        def repeat():  # the static graph's `x * ones`
            return self.fq_w(x * tf.ones(tf.stack([1, out_h, out_w, 1]), x.dtype),
                             training=training)

        def mean():
            return self.fq_w(tf.reduce_mean(x, axis=(1, 2), keepdims=True), training=training)

        is_pixel = (in_h == 1) & (in_w == 1) & ((out_h != 1) | (out_w != 1))
        is_mean = tf.constant(not self.align_corners) & (in_h == 2) & (in_w == 2) & (
            out_h == 1) & (out_w == 1)
        return tf.cond(is_pixel, repeat, lambda: tf.cond(is_mean, mean, per_axis))




@_register
class QBilinearResize(kmv_layers.BilinearResize):
    """`BilinearResize` for QAT.

    A 1x1 map repeated over a larger one (DeepLabV3's image-pooling branch) is a
    broadcast multiply with its own range, as in `QPatchResize`. Any other resize is the
    float one with no fake-quant behind it: the segmentation head's final upsampling,
    which the exported graph replaces by an int8 RESIZE_BILINEAR (tflite/segmentation.py)
    whose output keeps its input's scale (the converter refuses a resize whose scales
    differ).
    """

    def __init__(self, scale=None, align_corners=False, momentum=0.99, **kwargs):
        super().__init__(scale, align_corners, **kwargs)
        self.momentum = momentum
        self.fq_out = FakeQuant(momentum=momentum, name="fq_out")

    def call(self, inputs, training=None):
        pair = isinstance(inputs, (list, tuple))
        x = inputs[0] if pair else inputs
        out = self.compute_output_shape(
            [tuple(t.shape) for t in inputs] if pair else tuple(x.shape))
        if tuple(x.shape[1:3]) == (1, 1) and None not in out[1:3]:
            ones = ops.ones((1, out[1], out[2], 1), dtype=x.dtype)
            return self.fq_out(x * ones, training=training)
        return super().call(inputs)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}
