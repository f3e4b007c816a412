"""tflite/compat.py: every private TensorFlow / Keras / LiteRT API the project uses still
works on the installed versions; when one breaks, the error names it and the versions.

A failure here after an upgrade means: update tflite/compat.py (and its `VERIFIED`
versions) or pin the verified version."""

import keras
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from tflite import compat, convert, interpreter  # noqa: E402


def _model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    block = keras.Sequential([keras.layers.Dense(4, name="inner")], name="block")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(block(x))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_every_private_api_is_recorded_with_verified_versions():
    installed = compat.installed_versions()
    assert set(installed) == {"tensorflow", "keras", "ai-edge-litert"}
    for api, versions in compat.VERIFIED.items():
        assert versions and set(versions) <= set(installed), api


def test_keras_layer_graph_apis():
    model = _model()
    names = {layer.name for layer in compat.flatten_layers(model)}
    assert {"conv", "block", "inner", "pool", "head"} <= names  # nested "inner" too
    assert [layer.name for layer in compat.outbound_layers(model.get_layer("conv"))] == ["block"]


def test_converter_calibration_and_quantizer_apis():
    """calibrate_only + mlir_quantize, through a real int8 conversion."""
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    content = convert.convert(_model(), "int8", pixels, ptq="converter")
    plan = compat.execution_plan(interpreter.ready(content))
    assert plan and all(isinstance(name, str) and isinstance(out, list) for name, out in plan)
    assert interpreter.has_delegate(interpreter.ready(content))


def test_a_broken_private_api_names_itself_and_the_versions():
    class Upgraded:  # what a Keras without `_flatten_layers` would hand us
        pass

    with pytest.raises(compat.PrivateAPIError) as info:
        compat.flatten_layers(Upgraded())
    message = str(info.value)
    assert "keras.layers.Layer._flatten_layers" in message
    assert "verified on keras 3.15.1" in message
    assert f"installed: keras {compat.installed_versions()['keras']}" in message
    with pytest.raises(compat.PrivateAPIError, match="_experimental_calibrate_only"):
        compat.calibrate_only(Upgraded())
    with pytest.raises(compat.PrivateAPIError, match="ai-edge-litert 2.3.0"):
        compat.execution_plan(Upgraded())
