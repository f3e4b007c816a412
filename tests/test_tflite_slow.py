"""Every registered variant converts to a full-integer int8 `.tflite` through QAT
(ranges calibrated on noise pixels): builtin ops only, uint8 I/O, integer kernels apart
from the float islands, every attention matmul in XNNPACK. `pytest -m slow`; about a
minute or two per variant on 2 cores."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import keras  # noqa: E402

import keras_mobilevit as kmv  # noqa: E402
from tflite import analyze, data, workers  # noqa: E402

FLOAT_ISLAND_OPS = {"DEQUANTIZE", "QUANTIZE", "SOFTMAX", "RSQRT", "ADD"}


@pytest.mark.slow
@pytest.mark.parametrize("name", kmv.list_models())
def test_every_variant_converts_to_int8(name, tmp_path):
    size = 64  # stage 5 is 2x2: every block and the v1 / v2 resize paths are exercised
    keras_path = tmp_path / f"{name}.keras"
    kmv.create_model(name, input_shape=(size, size, 3), classes=10).save(keras_path)
    images = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
    # QAT twin (ranges calibrated on `images`) -> int8, in a process of its own: a dozen
    # int8 conversions in one process crashed TensorFlow's converter (SIGSEGV).
    path = workers.convert_isolated(keras_path, tmp_path / f"{name}.tflite", "int8", images)
    graph = analyze.load(path)
    assert analyze.non_builtin_ops(graph) == []
    assert graph.inputs[0].dtype == "uint8" and graph.outputs[0].dtype == "uint8"
    assert {op.name for op in analyze.float_ops(graph)} <= FLOAT_ISLAND_OPS
    delegated = workers.isolated("delegated_ops", model=str(path))
    assert all(op.index in delegated for op in graph.ops if op.name == "BATCH_MATMUL")


@pytest.mark.slow
def test_untrained_mobilevitv3_050_converts_at_256(tmp_path):
    """Regression: these random weights (LayerNorms at gamma = 1, beta = 0) calibrated on
    the default dataset made the converter fail on layer_4.1's fusion concat with "same
    scale constraint" until `range_ties.identity_steps_tied` (the benchmark's latency run)."""
    keras.utils.set_random_seed(0)
    keras_path = tmp_path / "mobilevitv3_050.keras"
    kmv.create_model("mobilevitv3_050", weights=None, input_shape=(256, 256, 3)).save(keras_path)
    images = data.calibration_images(data.default_config(256), 32)
    path = workers.convert_isolated(keras_path, tmp_path / "int8.tflite", "int8", images)
    assert analyze.non_builtin_ops(analyze.load(path)) == []
