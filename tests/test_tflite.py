"""tflite/: conversion, QAT, int8 graph checks, Android artifacts, benchmark helpers.

One real variant (mobilevitv3_xxs at 32x32, logits out) is converted once per session
to float32 and to int8 through QAT (ranges calibrated, no training): builtin ops only,
uint8 I/O with raw-pixel input scale, integer kernels except the listed float islands,
float parity. Error paths use tiny models. All 16 variants: tests/test_tflite_slow.py.
"""

import json
import re

import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import keras_mobilevit as kmv  # noqa: E402
from tflite import (analyze, android, bounds, calibration, compat, convert,  # noqa: E402
                    interpreter, latency, op_profile, qat, qat_layers, range_ties, rewrite, workers)

SIZE = 32
# What each float op left in the default int8 graph is there for (see tflite/README.md).
FLOAT_ISLAND_OPS = {"DEQUANTIZE", "QUANTIZE", "SOFTMAX", "RSQRT", "ADD"}


def _pixels(n, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def float_model():
    keras.utils.set_random_seed(0)
    model = kmv.create_model("mobilevitv3_xxs", input_shape=(SIZE, SIZE, 3), classes=10,
                             classifier_activation=None)
    # Non-trivial BatchNorm statistics, so that folding them is actually tested.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        norm = getattr(layer, "norm", None)
        if norm is not None:
            norm.moving_mean.assign(rng.normal(0, 0.2, norm.moving_mean.shape))
            norm.moving_variance.assign(rng.uniform(0.5, 2.0, norm.moving_variance.shape))
    return model


@pytest.fixture(scope="module")
def qat_model(float_model):
    return qat.make_qat_model(float_model, calibration_data=_pixels(16), batch_size=8)


@pytest.fixture(scope="module")
def float_tflite(float_model):
    return convert.convert(float_model, "float32")


@pytest.fixture(scope="module")
def calibrated(qat_model, tmp_path_factory):
    """The QAT model's calibrated float graph, quantized per test with other options."""
    folder = str(tmp_path_factory.mktemp("saved_model"))
    convert._export_saved_model(qat_model, (SIZE, SIZE, 3), folder, calibration.RAW_PIXELS)
    return convert.calibrate_tflite(folder, _pixels(16))


@pytest.fixture(scope="module")
def int8_tflite(calibrated):
    """What `convert.convert(qat_model, "int8", ...)` returns (same steps, shared work)."""
    return rewrite.float_islands(convert.quantize_calibrated(calibrated), convert.KEEP_FLOAT)


def _predict(path, images):
    # LiteRT in its own process, as the benchmark runs it (see workers.isolated).
    return workers.isolated("predict_tflite", path=path, images=images)


@pytest.fixture(scope="module")
def save(tmp_path_factory):
    """Write `.tflite` bytes to a file (the interpreters and the memory probe read files)."""
    folder = tmp_path_factory.mktemp("tflite")
    paths = {}

    def _save(content):
        if content not in paths:
            paths[content] = str(folder / f"model_{len(paths)}.tflite")
            with open(paths[content], "wb") as f:
                f.write(content)
        return paths[content]

    return _save


def test_float32_builtin_batch1_and_matches_keras(float_model, float_tflite, save):
    graph = analyze.load(float_tflite)
    assert analyze.non_builtin_ops(graph) == []
    assert graph.inputs[0].shape == (1, SIZE, SIZE, 3) and graph.inputs[0].dtype == "float32"
    assert "SHAPE" not in graph.op_counts()  # no dynamic-batch shape arithmetic
    x = _pixels(3, seed=1)
    np.testing.assert_allclose(_predict(save(float_tflite), x),
                               float_model.predict(x, verbose=0), rtol=0, atol=1e-4)


def test_float32_folds_preprocessing_and_runs_all_in_xnnpack(float_tflite, save):
    graph = analyze.load(float_tflite)
    # The rescale and RGB->BGR flip live in the stem kernel: the input goes straight into
    # the stem's PAD/CONV_2D, and no REVERSE_V2 (which XNNPACK does not take) is left.
    assert "REVERSE_V2" not in graph.op_counts()
    first = graph.ops[0]
    assert first.name in ("PAD", "CONV_2D") and first.inputs[0].index == graph.inputs[0].index
    # Every op runs in XNNPACK, the patch resizes of stage 5 (1x1 -> 2x2 at 32x32) too:
    # static-size resizes are constant matmuls, not GATHERs.
    delegated = workers.isolated("delegated_ops", model=save(float_tflite))
    assert [str(op) for op in graph.ops if op.index not in delegated] == []


def test_int8_ptq_of_a_float_model_goes_through_its_qat_twin(float_model, qat_model):
    twin = convert._ptq_twin(float_model, _pixels(8))
    assert twin is not float_model and qat.fake_quant_layers(twin)
    assert convert._ptq_twin(qat_model, _pixels(8)) is qat_model  # keeps its own ranges
    plain = _tiny()
    with pytest.warns(UserWarning, match="converter's own calibration.*Conv2D"):
        assert convert._ptq_twin(plain, _pixels(4, 8)) is plain


def test_the_twin_computes_the_stem_as_the_int8_graph_does(qat_model, int8_tflite):
    """The twin's fake-quant outputs are the int8 graph's values: at the stem (conv, then
    swish as LOGISTIC, whose int8 output has a fixed 1/256 step, then MUL) 0.9% of the
    int8 values are a step apart here (LiteRT's fixed-point LOGISTIC and MUL rounding);
    with an exact sigmoid in the twin 6.6% were. Deeper layers drift further: one step
    of float vs fixed-point rounding grows layer by layer, so only the stem is held."""
    images = np.round(_pixels(4))
    stem = keras.Model(qat_model.inputs, qat_model.get_layer("conv_1").output)
    want = stem.predict(images, verbose=0)
    it = interpreter.ready(int8_tflite, experimental_preserve_all_tensors=True,
                           experimental_op_resolver_type=interpreter.WITHOUT_DELEGATES)
    (tensor,) = [t for t in it.get_tensor_details()
                 if re.search(r"/conv_1(_\d+)?/mul$", t["name"].split(";")[0])]
    scale, zero = tensor["quantization"]
    got = []
    for image in images:
        it.set_tensor(it.get_input_details()[0]["index"], image[None].astype(np.uint8))
        it.invoke()
        got.append(it.get_tensor(tensor["index"])[0].astype(np.float32) - zero)
    steps_apart = np.abs(np.stack(got) - want / scale)
    assert np.mean(steps_apart >= 0.5) < 0.02, np.mean(steps_apart >= 0.5)


def test_the_twin_computes_layernorm_and_resizes_with_the_int8_graphs_constants(save):
    """LayerNorm's gamma and beta (int8 constants of a MUL and an ADD) and the patch
    resize's interpolation matrices (int8 FULLY_CONNECTED weights, per row) enter the
    twin as the int8 graph holds them: with the float values the twin multiplied by a
    gamma up to 0.2% off and resized with weights up to 0.4% off (0.25 where the graph
    has 42/127 of 0.75)."""
    keras.utils.set_random_seed(0)  # the Dense weights: the share below depends on them
    inputs = keras.Input((3, 3, 3))
    x = kmv.layers.PatchResize(2, name="resize")(inputs)     # 3x3 -> 4x4
    # no bias: the twin adds a float bias where the graph adds an int32 one (not emulated)
    x = keras.layers.Dense(8, use_bias=False, name="dense")(x)
    x = kmv.layers.LayerNorm(name="norm")(x)
    x = kmv.layers.PatchResize(2, name="resize_back")([x, inputs])  # 4x4 -> 3x3
    model = keras.Model(inputs, x)
    rng, norm = np.random.default_rng(1), model.get_layer("norm")
    norm.gamma.assign(rng.uniform(0.5, 1.5, norm.gamma.shape))  # trained-looking: off
    norm.beta.assign(rng.normal(0, 0.2, norm.beta.shape))       # the int8 grid
    twin = qat.make_qat_model(model, calibration_data=_pixels(8, 3), batch_size=8)
    content = convert.convert(twin, "int8", _pixels(8, 3), task="classification")
    graph, it = analyze.load(content), interpreter.ready(content)
    # What it is for: the twin computes the int8 graph's values. 0.2% of them a step
    # apart here (rounding of LiteRT's kernels: ties, requantization); 24% with the float
    # gamma, beta and matrices. (Over Dense seeds 0-7: 0.1-9.2% against 24-35%.)
    images = np.round(_pixels(64, 3, seed=2))
    steps_apart = np.abs(_predict(save(content), images) - twin.predict(images, verbose=0))
    assert np.mean(steps_apart >= 0.5 * graph.outputs[0].scale[0]) < 0.05

    def constants(op_name, layer_name):
        return [t for op in graph.ops if op.name == op_name for t in op.inputs
                if t.is_constant and t.dtype == "int8" and f"/{layer_name}_1/" in (t.name or "")]

    def dequantized(t):
        q = it.get_tensor(t.index).astype(np.float64)
        scale, zero = np.asarray(t.scale), np.asarray(t.zero_point)
        if scale.size > 1:  # per row (axis 0)
            scale, zero = scale[:, None], zero[:, None]
        return (q - zero) * scale

    twin_norm = twin.get_layer("norm")
    (gamma,), (beta,) = constants("MUL", "norm"), constants("ADD", "norm")
    for graph_value, variable in ((gamma, twin_norm.gamma), (beta, twin_norm.beta)):
        want = keras.ops.convert_to_numpy(qat_layers.quantize_constant(variable))
        np.testing.assert_allclose(dequantized(graph_value), want, rtol=0, atol=1e-7)
        assert not np.allclose(variable.numpy(), want, rtol=0, atol=1e-5)  # a change
    resizes = [op.inputs[1] for op in graph.ops  # the matmuls' weights
               if op.name == "FULLY_CONNECTED" and "resize" in (op.outputs[0].name or "")]
    assert {t.shape for t in resizes} == {(4, 3), (3, 4)}
    for t in resizes:
        out_len, in_len = t.shape
        want = qat_layers.quantized_rows(kmv.layers.resize_matrix(in_len, out_len, False))
        np.testing.assert_allclose(dequantized(t), want, rtol=0, atol=1e-7)


def test_float_bounds_cut_swish_and_norm_statistics(float_tflite, save):
    graph = analyze.load(float_tflite)
    counts = graph.op_counts()
    no_swish, removed = bounds.without(float_tflite, swish=True)
    assert removed == 2 * counts["LOGISTIC"]  # every sigmoid in MobileViT is half a swish
    linear, removed_both = bounds.without(float_tflite, swish=True, norms=True)
    assert removed_both == removed + 7 * counts["RSQRT"]
    left = analyze.load(linear).op_counts()
    assert "LOGISTIC" not in left and "RSQRT" not in left
    assert left["CONV_2D"] == counts["CONV_2D"] and left["BATCH_MATMUL"] == counts["BATCH_MATMUL"]
    assert np.isfinite(_predict(save(linear), _pixels(1))).all()


@pytest.mark.parametrize("cut", [{"swish": True}, {"swish": True, "norms": True},
                                 {"swish": True, "softmax": True}], ids=str)
def test_int8_bounds_cut_op_families_and_their_float_islands(int8_tflite, save, cut):
    """The int8 lower bounds (`--int8-bounds`): each cut family leaves no op behind (its
    DEQUANTIZE / QUANTIZE island edges and variance floor included), every conv and
    matmul stays, and every op left runs in XNNPACK if its kind did in the int8 graph:
    the tensors it now reads carry the scales it needs (without that, XNNPACK refuses
    the PAD and CONCATENATION after a cut swish and the model fails to load; with it
    forced on a cut norm's input, the RESHAPE above it)."""
    counts = analyze.load(int8_tflite).op_counts()
    cut_graph, removed = bounds.without(int8_tflite, **cut)
    left = analyze.load(cut_graph).op_counts()
    assert "LOGISTIC" not in left and removed >= 2 * counts["LOGISTIC"]
    for family, ops in (("norms", ("RSQRT", "MAXIMUM")), ("softmax", ("SOFTMAX",))):
        if cut.get(family):
            assert counts[ops[0]] and not any(op in left for op in ops)
    if cut.get("norms") or cut.get("softmax"):  # the float islands' edges went with them
        assert left.get("DEQUANTIZE", 0) < counts["DEQUANTIZE"]
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
        assert left[op] == counts[op]
    outside = _undelegated(int8_tflite)
    assert _undelegated(cut_graph) <= outside, "ops pushed out of XNNPACK by the cut"
    assert np.isfinite(_predict(save(cut_graph), _pixels(1))).all()


def _undelegated(content):
    """The kinds of op XNNPACK leaves to LiteRT's own kernels in `content`."""
    ops, taken = analyze.load(content).ops, interpreter.delegated_ops(content)
    return {op.name for op in ops if op.index not in taken}


def test_qat_model_matches_float_model(float_model, qat_model):
    x = _pixels(8, seed=2)
    y_float = float_model.predict(x, verbose=0)
    y_qat = qat_model.predict(x, verbose=0)
    # int8 rounding only: small against the spread of the logits
    assert np.abs(y_qat - y_float).max() < 0.1 * np.ptp(y_float)
    assert not any(isinstance(l, keras.layers.BatchNormalization)
                   for l in compat.flatten_layers(qat_model))


@pytest.mark.parametrize("size", [64, 32, 48])
def test_qat_dynamic_shapes_compute_the_static_graph(size):
    """With H, W unknown (multi-scale training, or a dataset without static shapes) the
    QAT twin must compute what the static, exported graph computes: at 64 every patch
    resize is the identity (no fake-quant); at 32 stage 5 is 1x1, repeated to 2x2 and
    averaged back (one fake-quant each); at 48 a 3x3 map is resized along both axes,
    with the static graph's interpolation matrices bit for bit (with seed 0, a gather
    resize, equal in exact math, moved 28 logits by one int8 step)."""
    keras.utils.set_random_seed(0)
    model = kmv.create_model("mobilevitv3_xxs", input_shape=(None, None, 3), classes=10,
                             classifier_activation=None)
    # Calibrated eagerly (the static graph at `size`): a fake-quant the static graph
    # does not use keeps its empty range, so using it by mistake changes the output.
    twin = qat.make_qat_model(model, calibration_data=_pixels(8, size), batch_size=8)
    x = _pixels(4, size, seed=6)
    dynamic = tf.function(lambda t: twin(t, training=False),
                          input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_array_equal(dynamic(x).numpy(), twin(x, training=False).numpy())


def test_conversion_ties_the_ranges_around_identity_layernorm_steps(qat_model):
    """gamma = 1 / beta = 0 (an untrained LayerNorm): the converter folds `* 1` and `+ 0`,
    and fake-quants left back to back with different ranges made its quantizer fail on
    the fusion concat ("same scale constraint", mobilevitv3_050 at 256; the real case is
    in tests/test_tflite_slow.py). Inside `identity_steps_tied` each takes the range of
    the one before it; afterwards the model's own ranges are back."""
    norms = [l for l in compat.flatten_layers(qat_model) if isinstance(l, qat_layers.QLayerNorm)]
    fixture_state = [(v, v.numpy()) for n in norms for v in n.weights]  # shared fixture
    trained = norms[0]  # a LayerNorm with trained-looking weights keeps its ranges
    trained.gamma.assign(trained.gamma * 1.01)

    def ranges(norm):
        return {s: [float(v) for v in norm.fq[s].quantization_range()]
                for s in ("normed", "scaled", "out")}

    for norm in norms:  # ranges one rounding step apart, as calibration gave
        for k, step in (("scaled", 1), ("out", 2)):
            hi = float(norm.fq["normed"].range_max.numpy())
            norm.fq[k].range_max.assign(hi + step * 2.0 ** (np.floor(np.log2(hi)) - 5))
    before = {n.name: ranges(n) for n in norms}
    try:
        with range_ties.identity_steps_tied(qat_model):
            for norm in norms[1:]:
                r = ranges(norm)
                assert r["normed"] == r["scaled"] == r["out"] != before[norm.name]["out"]
            assert ranges(trained)["scaled"] == before[trained.name]["scaled"]
            assert ranges(trained)["out"] == ranges(trained)["scaled"]  # beta is still 0
        assert {n.name: ranges(n) for n in norms} == before
    finally:
        for variable, value in fixture_state:
            variable.assign(value)


def test_qat_keras_file_round_trips(qat_model, tmp_path):
    path = tmp_path / "qat.keras"
    qat_model.save(path)
    loaded = qat.load_qat_model(path)
    x = _pixels(2, seed=3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat_model.predict(x, verbose=0))
    ranges = {q.name: (float(q.range_min.numpy()), float(q.range_max.numpy()))
              for q in qat.fake_quant_layers(qat_model)
              if q.fixed_range is None and q.observed.numpy() > 0}  # some resize ones idle
    assert ranges and all(lo < hi for lo, hi in ranges.values())


@pytest.mark.parametrize("axes", ["last", "all"])
def test_qat_layernorm_of_a_flat_token_stays_finite(axes):
    # A flat token (variance 0, e.g. a blank image region) beside high-variance ones:
    # quantizing var + eps rounded it to 0 and rsqrt gave inf, then NaN in training.
    x = np.random.default_rng(0).normal(0, 10, (2, 4, 8)).astype("float32")
    if axes == "last":
        x[0, 0] = 3.0  # one flat token
    else:
        x[0] = 3.0  # GroupNorm(1) of v2: a flat image
    x = tf.constant(x)
    norm = qat_layers.QLayerNorm(axes=axes)
    norm(x, training=True)  # observe ranges
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = norm(x, training=True)
        loss = tf.reduce_sum(y * tf.range(8, dtype="float32"))
    grads = tape.gradient(loss, [x, *norm.trainable_weights])
    assert np.isfinite(y.numpy()).all() and all(np.isfinite(g.numpy()).all() for g in grads)
    assert np.isfinite(norm(x, training=False).numpy()).all()  # inference, as exported
    assert all(np.isfinite(q.range_max.numpy()) for q in norm.fq.values())


def test_int8_io_builtin_and_integer_kernels(int8_tflite):
    graph = analyze.load(int8_tflite)
    assert analyze.non_builtin_ops(graph) == []
    inp, out = graph.inputs[0], graph.outputs[0]
    assert inp.dtype == "uint8" and out.dtype == "uint8"
    assert inp.scale == (1.0,) and inp.zero_point == (0,)  # raw camera pixels go in as-is
    floats = analyze.float_ops(graph)
    assert {op.name for op in floats} <= FLOAT_ISLAND_OPS, [str(op) for op in floats]
    for op in graph.ops:  # every weighted kernel is integer
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
            assert [t.dtype for t in op.inputs[:2]] in (["int8", "int8"],), str(op)


def test_strict_int8_has_no_float_op(calibrated):
    strict = convert.quantize_calibrated(calibrated, "int8")
    graph = analyze.load(strict)
    assert analyze.float_ops(graph) == []
    assert graph.inputs[0].dtype == "int8" and graph.inputs[0].zero_point == (-128,)


def test_float_islands_keep_int8_results(calibrated, int8_tflite, save):
    strict = convert.quantize_calibrated(calibrated, "uint8")
    x = _pixels(4, seed=4)
    a = _predict(save(strict), x)
    b = _predict(save(int8_tflite), x)
    spread = np.ptp(a)
    assert np.abs(a - b).max() <= 0.1 * spread  # float softmax / rsqrt: a few int8 steps
    assert rewrite.float_islands(strict, ()) == strict


def test_int8_close_to_float(float_model, int8_tflite, save):
    x = _pixels(8, seed=5)
    y_float = float_model.predict(x, verbose=0)
    y_int8 = _predict(save(int8_tflite), x)
    assert np.abs(y_int8 - y_float).max() < 0.15 * np.ptp(y_float)


def test_xnnpack_takes_the_attention_matmuls(int8_tflite, save):
    graph = analyze.load(int8_tflite)
    delegated = workers.isolated("delegated_ops", model=save(int8_tflite))
    matmuls = [op for op in graph.ops if op.name == "BATCH_MATMUL"]
    assert matmuls and all(op.index in delegated for op in matmuls)
    assert all(op.inputs[1].zero_point == (0,) for op in matmuls)  # what XNNPACK requires


def test_android_artifacts(int8_tflite, tmp_path):
    path = tmp_path / "m_int8.tflite"
    path.write_bytes(int8_tflite)
    labels = [f"c{i}" for i in range(10)]
    spec = android.write_artifacts(str(path), labels=labels, quantization="int8")
    assert (tmp_path / "m_int8.labels.txt").read_text().split() == labels
    written = json.loads((tmp_path / "m_int8.json").read_text())
    assert written == spec
    assert spec["input"]["shape"] == [1, SIZE, SIZE, 3] and spec["input"]["dtype"] == "uint8"
    assert spec["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert "RGB" in spec["input"]["pixel_format"]
    assert spec["output"]["quantization"]["scale"] > 0
    with pytest.raises(ValueError, match="labels"):
        android.model_spec(str(path), labels=["just one"])


def test_op_profile_times_every_op(int8_tflite, save):
    rows = workers.isolated("op_profile", model=save(int8_tflite))
    assert len(rows) == len(analyze.load(int8_tflite).ops)
    assert all(r["ms"] > 0 for r in rows)
    assert "BATCH_MATMUL" in op_profile.report(rows)


def test_latency_and_memory(float_tflite, int8_tflite, save):
    paths = {"float32": save(float_tflite), "int8": save(int8_tflite)}
    lat = workers.isolated("latency", paths=paths, threads=1, warmup=1, runs=4, rounds=2)
    assert set(lat) == set(paths) and all(v["p90_ms"] >= v["p50_ms"] > 0 for v in lat.values())
    mem = latency.peak_memory(paths["int8"])
    assert 0 < mem["model_rss_bytes"] < mem["peak_rss_bytes"] < 2**31


def test_a_model_the_interpreter_dies_on_is_reported_and_the_rest_timed(float_tflite, save,
                                                                       tmp_path):
    # A truncated file makes the worker fail like a model LiteRT aborts on (that one dies
    # of SIGABRT): the other models are still timed together, the bad one is named.
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(float_tflite[:1000])
    paths = {"float32": save(float_tflite), "float32 copy": save(float_tflite + b""),
             "broken": str(broken)}
    failures = {}
    stats = workers.timed_apart(paths, (1, 2), 1, 4, failures)
    assert set(stats) == {"float32", "float32 copy"} and set(failures) == {"broken"}
    assert all(set(by_threads) == {1, 2} for by_threads in stats.values())
    assert "broken.tflite" in failures["broken"] and "not a valid Flatbuffer" in failures["broken"]


def _with_add_output_scale(content, factor):
    """`content` with the output scale of its first int8 ADD multiplied by `factor`."""
    graph = analyze.load(content)
    add = next(op for op in graph.ops if op.name == "ADD" and op.outputs[0].dtype == "int8")
    tensor = graph.model.subgraphs[0].tensors[add.outputs[0].index]
    tensor.quantization.scale = [tensor.quantization.scale[0] * factor]
    return analyze.pack(graph.model), add


def test_int8_add_that_litert_cannot_load_is_refused(int8_tflite, save):
    # An output range a million times narrower than the inputs' (the converter's own PTQ
    # gave one to mobilevitv3_050): LiteRT aborts the whole process loading it.
    assert analyze.unrepresentable_rescales(int8_tflite) == []
    broken, add = _with_add_output_scale(int8_tflite, 1e-7)
    [(op, multiplier)] = analyze.unrepresentable_rescales(broken)
    assert op.index == add.index and multiplier >= 1
    with pytest.raises(Exception) as died:  # what the app would do: load it
        workers.isolated("invoke", path=save(broken), retry=False)
    assert "SIGABRT" in workers.failure_reason(died.value)
    with pytest.raises(convert.ConversionError, match=f"#{add.index} ADD.*must be < 1"):
        convert._check_rescales(broken)
    convert._check_rescales(int8_tflite)


# --- bad input gets a clear error --------------------------------------------------


def _tiny(layer=None):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    if layer is not None:
        x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))


@keras.saving.register_keras_serializable(package="tests")
class _Sin(keras.layers.Layer):
    def call(self, x):
        return keras.ops.sin(x)


def test_not_fully_quantizable_names_the_op():
    with pytest.raises(convert.NotFullyQuantizableError, match="SIN") as info:
        convert.convert(_tiny(_Sin()), "int8", _pixels(4, 8))
    assert info.value.ops and info.value.ops[0].name == "SIN"


@pytest.mark.parametrize("data, message", [
    (None, "needs a representative dataset"),
    (np.zeros((0, 8, 8, 3), "float32"), "empty"),
    (np.zeros((4, 8, 9, 3), "float32"), "shape"),
    (_pixels(4, 8) / 255.0, "raw"),
    (np.full((4, 8, 8, 3), np.nan, "float32"), "NaN"),
    # issue 11 item 7: these converted silently (int8 agreement 0.86 -> 0.61)
    (_pixels(4, 8) * 257.0, r"outside the model's pixel range \[0, 255\]"),  # 16-bit
    (_pixels(4, 8) - 128.0, r"outside the model's pixel range \[0, 255\]"),  # int8-shifted
    # an all-black set was refused as "normalized"; it is refused for what it is
    (np.zeros((4, 8, 8, 3), "float32"), "every value of the 4 representative images is 0"),
])
def test_bad_representative_dataset(data, message):
    with pytest.raises(calibration.RepresentativeDatasetError, match=message):
        convert.convert(_tiny(), "int8", data)


def test_dark_raw_pixels_are_not_mistaken_for_normalized_ones():
    dark = np.clip(_pixels(4, 8) / 8.0, 0, 255)  # a dim scene: pixels up to ~32
    assert calibration.representative_samples(dark, (8, 8, 3), 4).shape == (4, 8, 8, 3)


def test_representative_dataset_from_tf_data():
    ds = tf.data.Dataset.from_tensor_slices((_pixels(6, 8), np.arange(6))).batch(4)
    samples = calibration.representative_samples(ds, (8, 8, 3), num_samples=5)
    assert samples.shape == (5, 8, 8, 3)


def test_corrupt_tflite_bytes_raise_only_tflite_file_error():
    """Issue 11 item 10: byte-mutated files that pass the flatbuffer verifier made
    `analyze.load` raise UnicodeDecodeError / IndexError. A bounded fuzz: every mutation
    of a small model either loads or raises TFLiteFileError."""
    content = convert.convert(_tiny(), "float32")
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(300):
        mutated = bytearray(content)
        if case % 10 == 0:  # truncated
            mutated = mutated[: rng.integers(8, len(content))]
        else:  # a few bytes set to random values (names, indices, offsets, codes)
            for i in rng.integers(8, len(content), rng.integers(1, 4)):
                mutated[i] = rng.integers(0, 256)
        try:
            analyze.load(bytes(mutated))
            outcomes["loaded"] += 1
        except analyze.TFLiteFileError:
            outcomes["refused"] += 1
    assert outcomes["loaded"] and outcomes["refused"]


def test_invalid_utf8_tensor_name_is_a_tflite_file_error():
    content = convert.convert(_tiny(), "float32")
    name = analyze.load(content).inputs[0].name.encode()
    at = content.index(name)
    mutated = content[:at] + b"\xff" + content[at + 1:]
    with pytest.raises(analyze.TFLiteFileError, match="corrupt .tflite.*UnicodeDecodeError"):
        analyze.load(mutated)


def test_truncated_tflite(float_tflite, tmp_path):
    path = tmp_path / "cut.tflite"
    path.write_bytes(float_tflite[: len(float_tflite) // 2])
    with pytest.raises(analyze.TFLiteFileError, match="truncated or corrupt"):
        analyze.load(str(path))
    with pytest.raises(analyze.TFLiteFileError, match="not a .tflite"):
        analyze.load(b"\x00" * 16)


def test_qat_rejects_unsupported_layer():
    model = _tiny(keras.layers.LayerNormalization(name="keras_norm"))
    with pytest.raises(qat.UnsupportedLayerError, match="'conv2d.*Conv2D|keras_norm"):
        qat.make_qat_model(model)


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        convert.convert(_tiny(), "int4")


def test_convert_command_line(tmp_path):
    model_path = tmp_path / "tiny.keras"
    _tiny().save(model_path)
    out = tmp_path / "out"
    assert convert.main([str(model_path), "--quant", "float32", "int8", "--calib", "random",
                         "--num-calib", "4", "-o", str(out), "--name", "tiny"]) == 0
    for mode in ("float32", "int8"):
        assert analyze.non_builtin_ops(str(out / f"tiny_{mode}.tflite")) == []
        spec = json.loads((out / f"tiny_{mode}.json").read_text())
        assert spec["model_file"] == f"tiny_{mode}.tflite" and spec["num_classes"] == 2
        assert (out / f"tiny_{mode}.labels.txt").read_text().split() == ["class_0", "class_1"]
    assert spec["input"]["dtype"] == "uint8" and spec["calibration"] == "random"


def _convert_cli_error(capsys, *argv):
    """Run `python -m tflite.convert ARGV`, expecting an argument error: its message."""
    with pytest.raises(SystemExit) as info:
        convert.main([str(a) for a in argv])
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def tiny_keras(tmp_path):
    path = tmp_path / "tiny.keras"
    _tiny().save(path)
    return path


@pytest.mark.parametrize("output", ["taken", "taken/out"])
def test_convert_cli_output_naming_a_file_is_an_argument_error(tiny_keras, tmp_path, capsys,
                                                               output):
    # issue 11 item 5: a FileExistsError traceback
    (tmp_path / "taken").write_text("mine")
    err = _convert_cli_error(capsys, tiny_keras, "--quant", "float32", "-o", tmp_path / output)
    assert ", not a folder: name a folder" in err and (tmp_path / "taken").read_text() == "mine"


def test_convert_cli_checks_labels_before_converting(tiny_keras, tmp_path, capsys):
    # issue 11 item 10: the count was checked after converting, leaving an orphan .tflite
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    out = tmp_path / "out"
    err = _convert_cli_error(capsys, tiny_keras, "--quant", "float32", "-o", out,
                             "--labels", tmp_path / "labels.txt")
    assert "3 class names for a model with 2 outputs" in err
    assert not out.exists()  # not even the folder: every check comes before any write


def _damaged_calibration_files(folder):
    """{name: why numpy or zipfile cannot give an image array from it}."""
    (folder / "cut.npz").write_bytes(b"PK\x03\x04 the first bytes of a zip, then nothing")
    np.savez(folder / "none.npz")
    np.savez(folder / "two.npz", a=_pixels(2), b=_pixels(2))
    np.savez(folder / "objects.npz", images=np.array([object()], dtype=object))
    np.save(folder / "objects.npy", np.array([object()], dtype=object))
    (folder / "junk.npy").write_bytes(b"\x93NUMPY junk")
    return {"cut.npz": "BadZipFile", "none.npz": "holds 0 arrays", "two.npz": "holds 2 arrays",
            "objects.npz": "allow_pickle", "objects.npy": "allow_pickle",
            "junk.npy": "cannot read calibration images"}


def test_convert_cli_damaged_calibration_file_is_an_argument_error(tiny_keras, tmp_path,
                                                                   capsys):
    """A damaged --calib file was a BadZipFile / IndexError / ValueError traceback."""
    for name, why in _damaged_calibration_files(tmp_path).items():
        err = _convert_cli_error(capsys, tiny_keras, "--quant", "int8", "--calib",
                                 tmp_path / name, "-o", tmp_path / "out")
        error = err.strip().splitlines()[-1]  # the one line after argparse's usage
        assert error.startswith(f"python -m tflite.convert: error: --calib {tmp_path / name}: ")
        assert why in error, err
    assert not (tmp_path / "out").exists()


def test_convert_cli_num_calib_0_is_an_argument_error(tiny_keras, tmp_path, capsys):
    # issue 11 item 10: "the representative dataset is empty"
    err = _convert_cli_error(capsys, tiny_keras, "--calib", "random", "--num-calib", "0",
                             "-o", tmp_path / "out")
    assert "--num-calib: must be at least 1, got 0" in err
    assert not (tmp_path / "out").exists()


def test_convert_cli_refuses_training_calibration_without_the_training_run(tmp_path, capsys,
                                                                           tiny_keras):
    """Issue 11 item 7: a variant name (ImageNet weights) or a .keras without its run's
    config.json was calibrated on the bundled grey 32x32 Fashion-MNIST by default."""
    for model in ("mobilevitv3_xxs", tiny_keras):
        err = _convert_cli_error(capsys, model, "--input-size", 32, "--quant", "int8",
                                 "-o", tmp_path / "out")
        assert "--calib training takes the images the model was trained on" in err
        assert "--calib IMAGES.npz" in err
    assert not (tmp_path / "out").exists()


def test_convert_cli_refuses_training_calibration_of_imagenet_weights(tmp_path, capsys,
                                                                      fixtures_path):
    """The issue's command: `python -m tflite.convert mobilevitv3_xxs --weights X.pt` with
    the default --calib training (was: calibrated on grey 32x32 Fashion-MNIST)."""
    err = _convert_cli_error(capsys, "mobilevitv3_xxs", "--weights",
                             fixtures_path / "mobilevit_v3_xxs.pt", "--input-size", 64,
                             "-o", tmp_path / "out")
    assert "--calib training takes the images the model was trained on" in err
    assert not (tmp_path / "out").exists()


def test_convert_cli_refuses_a_training_run_of_another_image_size(tiny_keras, tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(
        {"dataset": "fashion_mnist_subset", "pipeline": {"image_size": 32}}))
    err = _convert_cli_error(capsys, tiny_keras, "--quant", "int8", "-o", tmp_path / "out")
    assert "used 32x32 images but the model takes 8x8" in err


def test_train_py_finds_the_qat_plugin_through_its_entry_point():
    """`train.py --qat` in a fresh process: `training` imports nothing of `tflite`; the
    QAT command is found through the `keras_mobilevit.training_plugins` entry point
    (here it stops at its own first check). The whole chain is the slow test below."""
    import training_utils

    result = training_utils.run_script("train.py", "--qat")
    assert result.returncode != 0
    assert "--from PATH.keras (the trained float model) is required" in result.stderr


def test_train_py_qat_at_another_image_size_is_an_argument_error():
    """QAT fine-tunes at the float model's own input size; another --image-size gave a
    calibration traceback deep in the run."""
    import types

    from tflite import qat_train

    config = types.SimpleNamespace(recipe=types.SimpleNamespace(image_size=32),
                                   from_model="runs/x/model.keras")
    with pytest.raises(SystemExit, match=r"runs/x/model.keras takes 8x8 images, but this run "
                       r"trains at --image-size 32: pass --image-size 8"):
        qat_train._check_image_size(_tiny(), config)
    config.recipe.image_size = 8
    qat_train._check_image_size(_tiny(), config)  # the model's own size: accepted


@pytest.mark.slow  # ~3.5 min on 2 cores: tracing the QAT training step and its evaluation
def test_train_py_qat_fine_tunes_saves_and_converts(tmp_path):
    """`python training/train.py --qat --from model.keras`: the issue's whole QAT chain
    (fine-tune with the training pipeline, save, reload with safe_mode, convert)."""
    import training_utils

    folder = training_utils.make_image_folder(tmp_path / "images", per_class=4, size=(SIZE, SIZE))
    float_model = kmv.create_model("mobilevitv3_xxs", input_shape=(SIZE, SIZE, 3), classes=2,
                                   classifier_activation=None)
    (tmp_path / "float").mkdir()
    float_model.save(tmp_path / "float" / "model.keras")
    result = training_utils.run_script(
        "train.py", "--qat", "--from", tmp_path / "float" / "model.keras",
        "--image-folder", folder, "--image-size", SIZE, "--batch-size", 4, "--epochs", 1,
        "--steps-per-epoch", 2, "--lr", 1e-3)
    assert result.returncode == 0, result.stderr[-3000:]
    path = tmp_path / "float-qat" / "model.keras"  # the default output folder
    trained = keras.models.load_model(path, compile=False, safe_mode=True)
    fake_quants = qat.fake_quant_layers(trained)
    assert fake_quants and not any(isinstance(l, keras.layers.BatchNormalization)
                                   for l in compat.flatten_layers(trained))
    twin = qat.make_qat_model(float_model, calibration_data=_pixels(8), batch_size=8)
    changed = [w.path for w, v in zip(twin.trainable_weights, trained.trainable_weights)
               if not np.array_equal(w.numpy(), v.numpy())]
    assert changed, "QAT fine-tuning left every weight unchanged"
    content = convert.convert(path, "int8", _pixels(8))
    graph = analyze.load(content)
    assert graph.inputs[0].dtype == "uint8" and analyze.non_builtin_ops(graph) == []


def test_qat_layernorm_bounds_a_token_whose_variance_rounds_to_zero():
    """One token with a single off value (var 1.56) among tokens of var ~10^4: its var
    is under half an int8 step of var's range. rsqrt(0 + eps) made its normed value
    ~1500 (float: 3.9), and a trained segmenter's twin grew such errors to 1e26; the
    floor of one step keeps it within the float output's own bounds."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 100, (1, 8, 16)).astype("float32")
    x[0, 0] = 0.0
    x[0, 0, 3] = 5.0  # the flat token, one value off
    norm = kmv.layers.LayerNorm()
    y_float = norm(x).numpy()
    twin = qat_layers.QLayerNorm(norm.epsilon, norm.axes)
    twin.build(x.shape)
    twin.load_float(norm)
    for q in twin.fq.values():  # calibrate on x itself
        q.calibrating = True
    twin(x)
    for q in twin.fq.values():
        q.calibrating = False
    y_twin = twin(x, training=False).numpy()
    assert np.abs(y_twin).max() <= 1.05 * np.abs(y_float).max()
    assert np.abs(y_twin[0, 1:] - y_float[0, 1:]).max() < 0.1  # the other tokens: rounding
