"""Fold a model's input `Preprocess` (pixel rescale, RGB->BGR flip) into the stem conv.

Both the float graphs (`fold_preprocessing`) and the QAT twin (`qat_layers.QConvAct`)
fold it the same way (`folded_kernel`): the stem conv then reads raw pixels, so the
`.tflite` has no MUL over the full-size input and no REVERSE_V2 (which XNNPACK does not
take, splitting the delegated graph), and int8 input is the uint8 pixel itself.

Example:
    >>> preprocess, stem = folding.fold_target(model)   # (None, None): nothing to fold
    >>> float_model = folding.fold_preprocessing(model)
"""

import keras

from keras_mobilevit import layers as kmv_layers
from tflite import compat


def fold_target(model):
    """(the model's Preprocess layer, the ConvNormAct that alone consumes it), or
    (None, None) when there is no such pair."""
    for layer in model.layers:
        if isinstance(layer, kmv_layers.Preprocess):
            consumers = compat.outbound_layers(layer)
            if len(consumers) == 1 and isinstance(consumers[0], kmv_layers.ConvNormAct):
                return layer, consumers[0]
    return None, None


def folded_kernel(kernel, preprocess):
    """`kernel` [k, k, C_in, ...] of the conv after `preprocess`, taking raw pixels instead.

    Exact up to float rounding: the stem's zero padding is zero in both pixel scales."""
    kernel = kernel * preprocess.scale
    return kernel[:, :, ::-1, :] if preprocess.reverse_channels else kernel


def fold_preprocessing(model):
    """A copy of `model` with its Preprocess folded into the stem conv's kernel (an
    Identity in its place); models without a Preprocess feeding a conv come back as is."""
    preprocess, stem = fold_target(model)
    if preprocess is None:
        return model

    def clone(layer):
        if layer is preprocess:
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in folded.layers:
        if layer.name != preprocess.name:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    folded.get_layer(stem.name).conv.kernel.assign(folded_kernel(stem.conv.kernel.numpy(),
                                                                 preprocess))
    return folded
