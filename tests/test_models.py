"""One suite over every registered variant: build, heads, pooling, shapes, serialization,
and golden parity against the official PyTorch implementation."""

import json

import keras
import numpy as np
import pytest

import keras_mobilevit as kmv
from keras_mobilevit import architectures
from conftest import fixtures_dir

MODELS = kmv.list_models()
PUBLIC = {
    "mobilevit_xxs": "MobileViTv1XXS", "mobilevit_xs": "MobileViTv1XS", "mobilevit_s": "MobileViTv1S",
    "mobilevitv2_050": "MobileViTv2_050", "mobilevitv2_075": "MobileViTv2_075",
    "mobilevitv2_100": "MobileViTv2_100", "mobilevitv2_125": "MobileViTv2_125",
    "mobilevitv2_150": "MobileViTv2_150", "mobilevitv2_175": "MobileViTv2_175",
    "mobilevitv2_200": "MobileViTv2_200", "mobilevitv3_xxs": "MobileViTv3XXS",
    "mobilevitv3_xs": "MobileViTv3XS", "mobilevitv3_s": "MobileViTv3S",
    "mobilevitv3_050": "MobileViTv3_050", "mobilevitv3_075": "MobileViTv3_075",
    "mobilevitv3_100": "MobileViTv3_100", "mobilevitv3_xxs_l2": "MobileViTv3XXS_L2",
    "mobilevitv3_xs_l2": "MobileViTv3XS_L2", "mobilevitv3_s_l2": "MobileViTv3S_L2",
}
# Official parameter counts (sum of torch parameters, classifier included). The first 16 are
# the golden fixtures' (../shared/fixtures/manifest.json, also checked against it below).
# The v3 L2 ones (MobileViTv3-v1 modes *_v3_fast: layer 4 with 2 transformer layers, all
# else as v3 XXS/XS/S) are the v3 counts minus two v1-style transformer layers of width d
# and FFN 2d in layer 4: 2 * (4d + 3d^2 + 3d + d^2 + d + 2d^2 + 2d + 2d^2 + d) for d = 80,
# 120, 192 -- the same numbers as our builder's.
PARAMS = {
    "mobilevit_xxs": 1272024, "mobilevit_xs": 2317848, "mobilevit_s": 5578632,
    "mobilevitv2_050": 1370593, "mobilevitv2_075": 2866009, "mobilevitv2_100": 4901841,
    "mobilevitv2_125": 7478089, "mobilevitv2_150": 10594753, "mobilevitv2_175": 14251833,
    "mobilevitv2_200": 18449329, "mobilevitv3_xxs": 1249448, "mobilevitv3_xs": 2490360,
    "mobilevitv3_s": 5763912, "mobilevitv3_050": 1429985, "mobilevitv3_075": 2999641,
    "mobilevitv3_100": 5139409, "mobilevitv3_xxs_l2": 1145288, "mobilevitv3_xs_l2": 2257320,
    "mobilevitv3_s_l2": 5169864,
}
# Fixture names (official naming) in the registry's order, e.g. mobilevit_xxs -> mobilevit_v1_xxs
# (the v3 L2 classifiers have no fixtures).
FIXTURE_NAME = dict(zip(MODELS, [
    "mobilevit_v1_xxs", "mobilevit_v1_xs", "mobilevit_v1_s", "mobilevit_v2_050", "mobilevit_v2_075",
    "mobilevit_v2_100", "mobilevit_v2_125", "mobilevit_v2_150", "mobilevit_v2_175",
    "mobilevit_v2_200", "mobilevit_v3_xxs", "mobilevit_v3_xs", "mobilevit_v3_s",
    "mobilevit_v3_050", "mobilevit_v3_075", "mobilevit_v3_100"]))
GOLDEN = [m for m in FIXTURE_NAME if (fixtures_dir() / f"{FIXTURE_NAME[m]}.npz").exists()] or MODELS[:1]
TOL = 2e-4  # logits have std ~3; a structural bug shows as O(1)


@pytest.fixture(scope="session")
def manifest(fixtures_path):
    return json.loads((fixtures_path / "manifest.json").read_text())


def _images(n=2, h=64, w=64, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (n, h, w, 3)).astype("float32")


def _stage_shapes(model):
    feats = kmv.get_feature_extractor(model).output
    return {k: [1, v.shape[3], v.shape[1], v.shape[2]] for k, v in feats.items()}


def test_registry_names_and_public_builders():
    assert MODELS == list(PUBLIC)
    for name, fn in PUBLIC.items():
        assert callable(getattr(kmv, fn)), fn
    with pytest.raises(ValueError, match="Valid names: mobilevit_xxs, mobilevit_xs"):
        kmv.create_model("mobilevit_xxxl")


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count(name):
    assert _trainable(getattr(kmv, PUBLIC[name])()) == PARAMS[name]


@pytest.mark.parametrize("name", list(FIXTURE_NAME))
def test_stage_shapes_and_counts_match_fixtures(name, manifest):
    variant = manifest["variants"][FIXTURE_NAME[name]]
    assert PARAMS[name] == manifest["param_counts"][FIXTURE_NAME[name]] == variant["param_count"]
    for size in (256, 224):
        model = getattr(kmv, PUBLIC[name])(input_shape=(size, size, 3))
        expected = {k: v for k, v in variant[f"stage_shapes_nchw_{size}"].items()
                    if k in kmv.models.FEATURE_LEVELS}
        assert _stage_shapes(model) == expected


@pytest.mark.parametrize("name", MODELS)
def test_top_custom_input_shape_and_keras_roundtrip(name, tmp_path):
    # 96 x 80: 80 is not a multiple of 32, so the resize paths are exercised too.
    model = kmv.create_model(name, input_shape=(96, 80, 3), classes=7,
                             classifier_activation=None)
    x = _images(2, 96, 80)
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 7) and np.isfinite(y).all()
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    for layer in model.layers:  # Keras core layers, or ours registered: safe_mode loads them
        cls = type(layer)
        assert cls.__module__.startswith("keras.src.") or keras.saving.get_registered_object(
            keras.saving.get_registered_name(cls)) is cls, cls
        assert "get_config" in vars(cls) or cls.__module__.startswith("keras.src.") or not vars(
            cls).get("__init__"), f"{cls.__name__} must implement get_config"
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), y)


@pytest.mark.parametrize("name", MODELS)
def test_no_top_and_pooling(name):
    spec = architectures.get_spec(name)
    x = _images(1, 64, 96)
    features = kmv.create_model(name, include_top=False)  # (None, None, 3) input
    # 96 / 32 = 3: v1-style blocks resize 3 -> 4 -> 3; v2-style resize the input to 4 for good.
    width = 3 if spec.family.resize == "unfold" else 4
    assert features(x).shape == (1, 2, width, spec.head_channels)
    for pooling in ("avg", "max"):
        pooled = kmv.create_model(name, include_top=False, pooling=pooling,
                                  input_shape=(64, 96, 3))
        assert pooled(x).shape == (1, spec.head_channels)
    assert not any(layer.name.startswith("classifier") for layer in pooled.layers)


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_parity_through_weights_argument(name, fixtures_path):
    """Stage features and logits at 256 and 224 match the official code (max abs <= 2e-4)."""
    golden = np.load(fixtures_path / f"{FIXTURE_NAME[name]}.npz")
    pt = str(fixtures_path / f"{FIXTURE_NAME[name]}.pt")
    model = kmv.create_model(name, weights=pt, include_preprocessing=False,
                             classifier_activation=None)
    levels = kmv.models.FEATURE_LEVELS + (("s32_exp",) if "features_s32_exp" in golden else ())
    outputs = kmv.get_feature_extractor(model, levels)(golden["input_nhwc"])
    for level in levels:
        np.testing.assert_allclose(np.asarray(outputs[level]), golden[f"features_{level}"],
                                   rtol=0, atol=TOL, err_msg=level)
    np.testing.assert_allclose(model.predict(golden["input_nhwc"], verbose=0), golden["logits"],
                               rtol=0, atol=TOL)
    model_224 = kmv.create_model(name, weights=pt, include_preprocessing=False,
                                 classifier_activation=None, input_shape=(224, 224, 3))
    np.testing.assert_allclose(model_224.predict(golden["input_nhwc_224"], verbose=0),
                               golden["logits_224"], rtol=0, atol=TOL)


@pytest.mark.parametrize("name", GOLDEN)
def test_builtin_preprocessing_matches_official_input(name, fixtures_path):
    """RGB pixels in [0, 255] -> [0, 1] (+ BGR flip for v1-style weights) inside the model."""
    golden = np.load(fixtures_path / f"{FIXTURE_NAME[name]}.npz")
    pt = str(fixtures_path / f"{FIXTURE_NAME[name]}.pt")
    model = kmv.create_model(name, weights=pt, classifier_activation=None)
    network_input = golden["input_nhwc"]  # what the PyTorch network saw
    bgr = architectures.get_spec(name).family.bgr
    rgb_pixels = (network_input[..., ::-1] if bgr else network_input) * 255.0
    np.testing.assert_allclose(model.predict(rgb_pixels, verbose=0), golden["logits"],
                               rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(kmv.preprocess_input(rgb_pixels, name)),
                               network_input, atol=1e-6)


def test_dynamic_input_size_matches_static(fixtures_path):
    """(None, None, 3) models resize exactly as the static ones at 224 (7 -> 8 -> 7)."""
    for name in ("mobilevitv3_xxs", "mobilevitv3_050"):
        pt = str(fixtures_path / f"{FIXTURE_NAME[name]}.pt")
        golden = np.load(fixtures_path / f"{FIXTURE_NAME[name]}.npz")
        model = kmv.create_model(name, weights=pt, include_preprocessing=False,
                                 classifier_activation=None, input_shape=(None, None, 3))
        np.testing.assert_allclose(model.predict(golden["input_nhwc_224"], verbose=0),
                                   golden["logits_224"], rtol=0, atol=TOL)
        np.testing.assert_allclose(model.predict(golden["input_nhwc"], verbose=0),
                                   golden["logits"], rtol=0, atol=TOL)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_backbone_output_strides(output_stride):
    backbone = kmv.create_backbone("mobilevitv3_xs", output_stride=output_stride)
    feats = backbone(_images(1, 128, 128))
    assert sorted(feats) == sorted(kmv.models.FEATURE_LEVELS)
    expected = {"s2": 64, "s4": 32, "s8": 16, "s16": 128 // min(16, output_stride),
                "s32": 128 // output_stride}
    assert {k: v.shape[1] for k, v in feats.items()} == expected
    assert feats["s32"].shape[-1] == 160


def test_input_tensor():
    inputs = keras.Input((64, 64, 3), name="camera")
    model = kmv.MobileViTv2_050(input_tensor=inputs, classes=3)
    assert model.inputs[0] is inputs
    assert model(_images(1)).shape == (1, 3)


def test_mixed_precision_trains_with_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = kmv.create_model("mobilevitv3_xxs", input_shape=(32, 32, 3), classes=4,
                                 classifier_activation=None)
        norm = model.get_layer("layer_3.1.global_rep.0.pre_norm_mha.0")
        assert norm.compute_dtype == "float16" and model.output.dtype == "float32"
        model.compile(optimizer="adam",
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        history = model.fit(_images(4, 32, 32), np.eye(4, dtype="float32"), verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("align_corners", [False, True])
def test_interpolation_matrix_is_the_static_matrix_bit_for_bit(align_corners):
    """The matrix built from symbolic lengths (dynamic-shape graphs, QAT at unknown
    sizes) equals the numpy constant of static graphs exactly: a last-bit difference
    becomes a whole int8 step after a fake-quant."""
    import tensorflow as tf

    from keras_mobilevit import layers as kmv_layers

    @tf.function(input_signature=[tf.TensorSpec((), tf.int32)] * 2)
    def traced(n_in, n_out):  # lengths unknown when traced
        return kmv_layers.interpolation_matrix(n_in, n_out, align_corners)

    for n_in in (1, 2, 3, 5, 7, 12, 32):
        for n_out in (1, 2, 3, 4, 6, 10, 13, 64, 100):
            want = kmv_layers.resize_matrix(n_in, n_out, align_corners)
            for got in (kmv_layers.interpolation_matrix(n_in, n_out, align_corners),
                        traced(n_in, n_out)):
                np.testing.assert_array_equal(np.asarray(got), want,
                                              err_msg=f"{n_in} -> {n_out}")
