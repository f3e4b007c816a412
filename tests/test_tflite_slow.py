"""Every registered variant converts to a full-integer int8 `.tflite` through QAT
(ranges calibrated on noise pixels): builtin ops only, uint8 I/O, integer kernels apart
from the float islands, every attention matmul in XNNPACK. `pytest -m slow`; about a
minute or two per variant on 2 cores."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import keras_mobilevit as kmv  # noqa: E402
from tflite import analyze, benchmark, convert, qat  # noqa: E402

FLOAT_ISLAND_OPS = {"DEQUANTIZE", "QUANTIZE", "SOFTMAX", "RSQRT", "ADD"}


@pytest.mark.slow
@pytest.mark.parametrize("name", kmv.list_models())
def test_every_variant_converts_to_int8(name, tmp_path):
    size = 64  # stage 5 is 2x2: every block and the v1 / v2 resize paths are exercised
    model = kmv.create_model(name, input_shape=(size, size, 3), classes=10)
    images = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
    content = convert.convert(qat.make_qat_model(model, images, batch_size=4), "int8", images)
    graph = analyze.load(content)
    assert analyze.non_builtin_ops(graph) == []
    assert graph.inputs[0].dtype == "uint8" and graph.outputs[0].dtype == "uint8"
    assert {op.name for op in analyze.float_ops(graph)} <= FLOAT_ISLAND_OPS
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(content)
    delegated = benchmark.isolated("delegated_ops", model=str(path))
    assert all(op.index in delegated for op in graph.ops if op.name == "BATCH_MATMUL")
