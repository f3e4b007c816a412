"""tflite/edge_quantizer.py: Google's ai-edge-quantizer on our float32 `.tflite`.

Needs the optional `bench` extra (ai-edge-quantizer); without it only the clear
"not installed" error is checked.
"""

import keras
import numpy as np
import pytest

from tflite import analyze, benchmark, convert, edge_quantizer


def _float_file(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    path = tmp_path / "tiny_float32.tflite"
    path.write_bytes(convert.convert(model, "float32"))
    return str(path)


@pytest.mark.skipif(edge_quantizer.available(), reason="ai-edge-quantizer is installed")
def test_missing_quantizer_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match="pip install 'ai-edge-quantizer"):
        edge_quantizer.quantize(b"", np.zeros((1, 16, 16, 3)))


@pytest.mark.skipif(not edge_quantizer.available(), reason="needs the bench extra")
def test_static_int8_of_a_float_file(tmp_path):
    path = _float_file(tmp_path)
    pixels = np.random.default_rng(0).uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    content = edge_quantizer.quantize(path, pixels)
    graph = analyze.load(content)
    assert graph.inputs[0].dtype == "int8" and analyze.non_builtin_ops(graph) == []
    assert [op for op in analyze.float_ops(graph)] == []  # weights and activations int8
    quantized = tmp_path / "tiny_aeq.tflite"
    quantized.write_bytes(content)
    want = benchmark.isolated("predict_tflite", path=path, images=pixels)
    got = benchmark.isolated("predict_tflite", path=str(quantized), images=pixels)
    # The float model's outputs up to int8 rounding (errors of a few output steps).
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99
    assert np.abs(got - want).max() < 0.1 * (want.max() - want.min())
    with pytest.raises(ValueError, match="non-empty"):
        edge_quantizer.quantize(path, pixels[:0])
