"""The v2-style int8 graph (separable attention, GroupNorm) and calibration's range choice.

One mobilevitv2_050 at 64x64 (random weights) goes through its QAT twin to int8 once:
its separable attention must leave no standalone RELU or SUM and one symmetric int8
BATCH_MATMUL per attention, and every op but the uint8 input / output conversions must
run in XNNPACK (tflite/README.md, "Where the int8 time went").
"""

import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import keras_mobilevit as kmv  # noqa: E402
from tflite import analyze, compat, convert, qat, qat_layers, range_search, workers  # noqa: E402

SIZE = 64


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def float_model():
    keras.utils.set_random_seed(0)
    return kmv.create_model("mobilevitv2_050", input_shape=(SIZE, SIZE, 3), classes=10,
                            classifier_activation=None)


@pytest.fixture(scope="module")
def qat_model(float_model):
    return qat.make_qat_model(float_model, calibration_data=_pixels(8), batch_size=8)


@pytest.fixture(scope="module")
def int8_path(qat_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("v2") / "int8.tflite"
    path.write_bytes(convert.convert(qat_model, "int8", _pixels(8)))
    return str(path)


def test_qat_separable_attention_computes_the_float_layer():
    x = np.random.default_rng(1).normal(0, 1, (2, 4, 16, 8)).astype("float32")  # [B, P, N, d]
    float_layer = kmv.layers.LinearSelfAttention()
    y_float = np.asarray(float_layer(x))
    twin = qat_layers.QLinearSelfAttention()
    twin(x)
    twin.load_float(float_layer)
    quants = [q for q in compat.flatten_layers(twin) if isinstance(q, qat_layers.FakeQuant)
              and q.fixed_range is None]
    for q in quants:
        q.calibrating = True
    twin(x)  # ranges: min/max of each step on x
    for q in quants:
        q.calibrating = False
    y_twin = np.asarray(twin(x))
    # the same math up to int8 rounding of each step (a wrong split of q / k / v, or a
    # context over the wrong axis, is off by the size of the output itself)
    assert np.abs(y_twin - y_float).max() < 0.05 * np.ptp(y_float)


def test_separable_attention_runs_in_xnnpack_in_int8(float_model, int8_path):
    graph = analyze.load(int8_path)
    counts = graph.op_counts()
    assert "RELU" not in counts and "SUM" not in counts  # fused into the FC / a matmul
    attentions = [layer for layer in float_model.layers
                  if isinstance(layer, kmv.layers.LinearSelfAttention)]
    matmuls = [op for op in graph.ops if op.name == "BATCH_MATMUL"]
    assert len(matmuls) == len(attentions)  # one context matmul per attention
    assert all(op.inputs[1].zero_point == (0,) for op in matmuls)
    delegated = workers.isolated("delegated_ops", model=int8_path)
    assert all(op.index in delegated for op in matmuls)
    assert graph.ops[0].name == "QUANTIZE" and graph.ops[0].index not in delegated  # uint8 in


def test_mse_ranges_are_searched_within_the_min_max_ones(float_model):
    """Also for near-constant tensors (spread < 1e-4, the narrowest range): the floor
    width is taken inside the min/max range, not moved past its end."""
    images = _pixels(8, seed=2)
    minmax = qat.make_qat_model(float_model, images, batch_size=8, ranges="minmax")
    mse = qat.make_qat_model(float_model, images, batch_size=8, ranges="mse")
    pairs = [(a, b) for a, b in zip(qat.fake_quant_layers(minmax), qat.fake_quant_layers(mse))
             if a.fixed_range is None]
    lo = np.array([[a.range_min.numpy(), b.range_min.numpy()] for a, b in pairs])
    hi = np.array([[a.range_max.numpy(), b.range_max.numpy()] for a, b in pairs])
    # within float noise of the first pass (the two models' min/max passes are separate runs)
    slack = 1e-5 * np.maximum(np.abs(lo[:, 0]), np.abs(hi[:, 0])) + 1e-7
    assert np.all(lo[:, 1] >= lo[:, 0] - slack) and np.all(hi[:, 1] <= hi[:, 0] + slack)
    assert np.mean(hi[:, 1] < 0.99 * hi[:, 0]) > 0.2  # the search does clip outliers
    assert all(b.histogram is None for _, b in pairs)  # no histogram left behind


def test_unknown_range_method_is_refused(float_model):
    with pytest.raises(ValueError, match="ranges must be one of minmax, percentile, mse"):
        qat.make_qat_model(float_model, _pixels(2), ranges="kl")
    with pytest.raises(ValueError, match="ranges must be one of"):
        convert.convert(float_model, "int8", _pixels(2), ranges="max")
    assert range_search.METHODS == ("minmax", "percentile", "mse")
