"""Make the QAT twin of a float keras_mobilevit model, and calibrate its activation ranges.

`make_qat_model` swaps every layer for its twin in `qat_layers` (same weights, BatchNorm
and the input Preprocess folded into the convs) and, given images, sets the ranges from
them: the range between percentiles of each tensor's values (`ranges="percentile"`, the
default), the range that quantizes them with the least squared error (`"mse"`;
`tflite.range_search`), or their min/max (`"minmax"`): post-training
quantization ranges, which QAT fine-tuning (`fit`) then refines. `tflite.convert`
turns the result into an int8 `.tflite`.

Example:
    >>> float_model = keras_mobilevit.create_model("mobilevitv3_xs", classes=10)
    >>> qat_model = make_qat_model(float_model, calibration_data=images)  # PTQ ranges
    >>> qat_model.compile(...); qat_model.fit(...)                          # QAT
    >>> qat_model.save("qat.keras")
    >>> tflite_bytes = tflite.convert.convert(qat_model, "int8", images)
"""

import keras

from keras_mobilevit import detection as kmv_detection
from keras_mobilevit import layers as kmv_layers  # (imports and registers every model layer)
from keras_mobilevit import postprocess as kmv_postprocess
from tflite import calibration, compat, folding, range_search
from tflite.qat_layers import (PIXEL_RANGE, FakeQuant, QBilinearResize, QConvAct, QDense,
                               QLayerNorm, QLinearSelfAttention, QMultiHeadSelfAttention,
                               QPatchResize, QPreprocess, QSSDPrediction, UnsupportedLayerError)

# Layers that only move data (or are the identity at inference): int8 passes through.
_PASSTHROUGH = (keras.layers.InputLayer, keras.layers.Identity, keras.layers.Dropout,
                keras.layers.SpatialDropout2D, kmv_layers.Unfold, kmv_layers.Fold,
                kmv_detection.SSDHeadOutput)
# Layers whose output needs its own int8 range: kept, followed by a FakeQuant.
_RANGED = (keras.layers.Add, keras.layers.Concatenate, keras.layers.GlobalAveragePooling2D,
           keras.layers.ReLU)
# Layers after the network, kept in float: never in an int8 graph (tflite/tasks.py
# exports a detector up to its raw outputs and ends it in TFLite_Detection_PostProcess).
_FLOAT_TAIL = (kmv_postprocess.SSDPostprocess,)
# A detector's outputs: each level's box regressions (class logits) concatenated over
# the six levels. No int8 range of their own: the int8 graph concatenates them in float
# (`rewrite.float_islands`, `tflite.detection.float_tail`), each level with its own
# scale, because one scale for all levels cost the boxes up to a pixel (a level's box
# values span +-40 where another's span +-6; `python -m tflite.quant_error`).
_FLOAT_CONCATS = ("box_regressions", "class_logits")
# How calibration chooses each activation range (`range_search.METHODS`): the best one
# measured (`python -m tflite.benchmark --ptq-ranges ...`, BENCHMARKS.md). int8 PTQ of
# the trained runs with minmax / percentile / mse ranges: default task top-1 88.07 /
# 88.23 / 88.20% (float 88.27%; agreement 97.9 / 99.0 / 98.8%); segmentation mIoU
# 18.61 / 18.71 / 18.82% (float 18.90%); detection mAP 19.23 / 19.39 / 19.07% (float
# 19.46%), confident float detections found within a pixel 37.6 / 50.9 / 46.8%.
# "percentile" loses the least over the three (0.29 points in all, mse 0.54, minmax
# 0.71). It costs a second calibration pass (a histogram of every activation).
DEFAULT_RANGES = "percentile"


def _check_supported(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise UnsupportedLayerError(
                f"QAT needs a flat functional model; layer '{layer.name}' is a nested model"
            )
        known = _PASSTHROUGH + _RANGED + _FLOAT_TAIL
        if type(layer) not in _TWINS and not isinstance(layer, known):
            supported = sorted(c.__name__ for c in known + tuple(_TWINS))
            raise UnsupportedLayerError(
                f"QAT has no quantized version of layer '{layer.name}' "
                f"({type(layer).__name__}); supported layers: {', '.join(supported)}"
            )


def _twin_conv(layer, momentum):
    return QConvAct(layer.filters, layer.kernel_size, layer.strides, layer.dilation_rate,
                    layer.depthwise, layer.activation, use_bias=layer.norm is not None,
                    momentum=momentum, name=layer.name)


def _twin_dense(layer, momentum):
    activation = keras.activations.serialize(layer.activation)
    return QDense(layer.units, activation, layer.use_bias, momentum=momentum, name=layer.name)


_TWINS = {
    kmv_layers.PatchResize: lambda l, m: QPatchResize(l.patch_size, l.align_corners,
                                                      momentum=m, name=l.name),
    kmv_layers.Preprocess: lambda l, m: QPreprocess(
        momentum=m, scale=l.scale, reverse_channels=l.reverse_channels, name=l.name),
    kmv_layers.BilinearResize: lambda l, m: QBilinearResize(l.scale, l.align_corners, momentum=m,
                                                            name=l.name, dtype=l.dtype_policy),
    kmv_layers.ConvNormAct: _twin_conv,
    keras.layers.Dense: _twin_dense,
    kmv_layers.LayerNorm: lambda l, m: QLayerNorm(l.epsilon, l.axes, momentum=m, name=l.name),
    kmv_layers.MultiHeadSelfAttention: lambda l, m: QMultiHeadSelfAttention(
        l.num_heads, attention_dropout=l.attention_dropout, momentum=m, name=l.name),
    kmv_layers.LinearSelfAttention: lambda l, m: QLinearSelfAttention(
        attention_dropout=l.attention_dropout, momentum=m, name=l.name),
}


def make_qat_model(model, calibration_data=None, *, momentum=0.99, num_calibration_samples=256,
                   batch_size=16, ranges=DEFAULT_RANGES):
    """A QAT twin of a trained float keras_mobilevit model, with the same weights.

    Args:
        model: a flat functional model of keras_mobilevit layers (`create_model(...)`),
            with trained weights.
        calibration_data: images (see `calibrate`) to set the initial activation
            ranges. Without it the ranges start from the first training batch.
        momentum: of the moving min/max during training.
        ranges: how calibration chooses each range (see `calibrate`).

    Returns:
        A `keras.Model` (serializable; save it as `.keras`) whose float output matches
        the input model up to int8 rounding. Fine-tune it with `fit`, then convert it
        with `tflite.convert.convert(qat_model, "int8", ...)`.

    Raises:
        UnsupportedLayerError: naming the first layer that has no quantized version.
    """
    _check_supported(model)
    preprocess, stem = folding.fold_target(model)
    predictions = _ssd_predictions(model)

    def clone(layer):
        if layer is preprocess:
            # Scale and flip move into the stem conv; the input keeps a pixel range
            # so the int8 input is exactly the uint8 pixel value.
            return FakeQuant(fixed_range=PIXEL_RANGE, name=layer.name)
        if layer.name in predictions.values():  # its SSDHeadOutput's twin computes it
            return keras.layers.Identity(name=layer.name)
        if layer.name in predictions:
            dense = model.get_layer(predictions[layer.name])
            return QSSDPrediction(dense.units, layer.num_classes, dense.name,
                                  momentum=momentum, name=layer.name)
        for cls, twin in _TWINS.items():
            if type(layer) is cls:
                return twin(layer, momentum)
        return layer.__class__.from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if isinstance(layer, _RANGED) and layer.name not in _FLOAT_CONCATS:
            out = FakeQuant(momentum=momentum, name=f"{layer.name}.fq")(out)
        return out

    qat = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in qat.layers:
        if not hasattr(layer, "load_float"):
            continue
        source = model.get_layer(getattr(layer, "weights_from", layer.name))
        if stem is not None and source is stem:
            layer.load_float(source, preprocess=preprocess)
        else:
            layer.load_float(source)
    if calibration_data is not None:
        calibrate(qat, calibration_data, num_calibration_samples, batch_size, ranges)
    return qat


def _ssd_predictions(model):
    """{SSDHeadOutput name: name of the Dense it splits} of an SSDLite model ({} for
    other models): each pair becomes one `QSSDPrediction` in the twin."""
    pairs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            for consumer in compat.outbound_layers(layer):
                if isinstance(consumer, kmv_detection.SSDHeadOutput):
                    pairs[consumer.name] = layer.name
    return pairs


def fake_quant_layers(model):
    """Every FakeQuant in `model`, nested ones included."""
    return [layer for layer in compat.flatten_layers(model) if isinstance(layer, FakeQuant)]


def calibrate(qat_model, data, num_samples=256, batch_size=16, ranges=DEFAULT_RANGES):
    """Set every moving activation range from `data` (post-training quantization ranges;
    QAT then refines them).

    `data`: images as `calibration.representative_samples` accepts them (numpy
    array, tf.data.Dataset of images or (image, label) pairs, any iterable).
    `ranges`: "minmax" (each tensor's min/max over `data`), or "percentile" / "mse":
    a second pass over `data` takes a histogram of each tensor between its min and max,
    and `range_search.choose_range` picks the range from it (`range_search.METHODS`).
    """
    if ranges not in range_search.METHODS:
        raise ValueError(f"ranges must be one of {', '.join(range_search.METHODS)}, "
                         f"got {ranges!r}")
    images = calibration.representative_samples(
        data, tuple(qat_model.inputs[0].shape[1:]), num_samples, pixel_range=None)
    quants = [q for q in fake_quant_layers(qat_model) if q.fixed_range is None]
    for q in quants:
        q.observed.assign(0.0)
        q.calibrating = True
    try:
        _run(qat_model, images, batch_size)
    finally:
        for q in quants:
            q.calibrating = False
    if ranges != "minmax":
        _search_ranges(qat_model, images, quants, batch_size, ranges)
    return qat_model


def _run(model, images, batch_size):
    for start in range(0, len(images), batch_size):
        model(images[start:start + batch_size], training=False)


def _search_ranges(qat_model, images, quants, batch_size, method):
    """Histograms of every fake-quant's input over `images`, between its min/max range
    (the activations downstream quantized with the min/max ranges, as the first pass
    left them), then the range `method` picks from each."""
    for q in quants:
        q.histogram = range_search.Histogram(float(q.range_min.numpy()),
                                             float(q.range_max.numpy()))
    try:
        _run(qat_model, images, batch_size)
        for q in quants:
            if q.histogram.total == 0:  # a branch these images never take: min/max stays
                continue
            lo, hi = range_search.choose_range(q.histogram, method, symmetric=q.symmetric)
            q.range_min.assign(lo)
            q.range_max.assign(hi)
    finally:
        for q in quants:
            q.histogram = None


def load_keras_model(path):
    """Load a `.keras` file of a float or a QAT model (this module registers the layers of
    both; `safe_mode` stays on: no Lambda layers or pickled code)."""
    return keras.models.load_model(path, compile=False, safe_mode=True)


load_qat_model = load_keras_model  # the name tflite/qat_train.py documents
