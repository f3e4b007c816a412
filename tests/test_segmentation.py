"""DeepLabV3: golden parity with the official PyTorch code on the segdet fixtures
(../shared/fixtures/segdet, README.md there; the v1-S retrained under cvnets v0.2 on
tests/fixtures, README.md there), parameter counts, the output-stride mechanism of each code
version, every backbone's output shape, serialization and the clear errors."""

import dataclasses
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_mobilevit as kmv
from keras_mobilevit import architectures, segmentation
from keras_mobilevit import weights as W
from keras_mobilevit.torch_reader import load_torch_state_dict

TOL = 2e-4  # logits have std ~3; a structural bug shows as O(1)
# fixture -> (backbone, official parameter count with the aux head where the config has one)
VARIANTS = {
    "deeplabv3_mobilevit_v1_xxs": ("mobilevit_xxs", 1854853),  # cvnets v0.1, VOC, no aux head
    "deeplabv3_mobilevit_v2_050": ("mobilevitv2_050", 6466467),  # cvnets v0.2, VOC, aux head
}
SIZES = ("", "_375x500")  # 512x512 and 375x500 inputs
# The v1-S DeepLabV3 retrained under cvnets v0.2 (weights="voc-v0.2"): official parameter
# count of config/segmentation/pascal_voc/deeplabv3_mobilevit.yaml (mobilevit_s, output stride
# 8, ASPP 512, aux head of 150421; 8537269 without it, the model zoo's "8.5 M"), and its
# fixture: that config on mobilevit_xxs with a 64-wide ASPP (tests/fixtures/README.md).
V1_S_V02_PARAMS = 8687690
V1_V02 = Path(__file__).parent / "fixtures" / "deeplabv3_mobilevit_v1_xxs_v02"
V1_V02_HEAD = dataclasses.replace(architectures.SEG_HEADS["v0.2"], aspp_channels=64)
V1_V02_PARAMS = 1172570  # the fixture's official count, aux head included
V1_V02_SIZES = ("", "_300x404")  # 320x320 and 300x404 inputs, uint8 RGB


@pytest.fixture(scope="module")
def segdet(fixtures_path):
    path = fixtures_path / "segdet"
    if not path.is_dir():
        pytest.fail(f"segdet fixtures missing: expected {path} (see ../shared/fixtures/segdet).",
                    pytrace=False)
    return path


@pytest.fixture(scope="module", params=list(VARIANTS))
def golden(request, segdet):
    """One model per fixture (built once), its endpoints on both fixture inputs, and the
    official x16 output of a model built with upsample="official"."""
    variant = request.param
    backbone, _ = VARIANTS[variant]
    npz = np.load(segdet / f"{variant}.npz")
    pt = str(segdet / f"{variant}.pt")
    model = kmv.DeepLabV3(backbone, weights=pt, include_preprocessing=False, aux_output=True,
                          input_shape=(None, None, 3))
    official = kmv.DeepLabV3(backbone, weights=pt, include_preprocessing=False,
                             upsample="official", input_shape=(None, None, 3))
    ends = segmentation.get_endpoints(model)
    outputs = {}
    for size in SIZES:
        x = npz[f"input_nhwc{size}"]
        outputs[size] = {k: np.asarray(v) for k, v in ends(x).items()}
        outputs[size]["official"] = np.asarray(official(x))
    manifest = json.loads((segdet / "manifest-segdet.json").read_text())["variants"][variant]
    return dict(variant=variant, model=model, npz=npz, outputs=outputs, manifest=manifest)


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL, err_msg=what)


def test_parameter_count_equals_official(golden):
    count = sum(int(np.prod(w.shape)) for w in golden["model"].trainable_weights)
    assert count == VARIANTS[golden["variant"]][1] == golden["manifest"]["param_count"]


@pytest.mark.parametrize("size", SIZES)
def test_lowres_aux_aspp_and_features_match_official(golden, size):
    out, npz = golden["outputs"][size], golden["npz"]
    pairs = {"seg_logits_lowres": "logits_lowres", "aspp_out": "aspp",
             "features_out_l4": "s16", "features_out_l5": "s32", "aux_logits": "aux_logits"}
    has_aux = golden["manifest"]["aux_head_params"] > 0
    assert ("aux_logits" in out) == has_aux == (f"aux_logits{size}" in npz)
    for theirs, ours in pairs.items():
        if f"{theirs}{size}" in npz:
            _close(out[ours], npz[f"{theirs}{size}"], f"{theirs}{size}")


@pytest.mark.parametrize("size", SIZES)
def test_upsampled_rows_match_official(golden, size):
    """upsample="official" is the official x16 output (384x512 for 375x500); the default
    output has the input size and equals it where the size is a multiple of 16."""
    out, npz = golden["outputs"][size], golden["npz"]
    rows = npz[f"seg_logits_fullres{size}_rows0to15"]
    h, w = npz[f"input_nhwc{size}"].shape[1:3]
    assert out["official"].shape == (2, -(-h // 16) * 16, -(-w // 16) * 16, 21)
    _close(out["official"][:, :16], rows, "official x16 rows 0-15")
    assert out["logits"].shape == (2, h, w, 21)
    if h % 16 == 0 and w % 16 == 0:
        _close(out["logits"][:, :16], rows, "input-size rows 0-15")


def test_classification_checkpoint_as_weights_says_backbone_weights(fixtures_path):
    pt = str(fixtures_path / "mobilevit_v1_xxs.pt")
    with pytest.raises(ValueError, match="backbone_weights="):
        kmv.DeepLabV3("mobilevit_xxs", weights=pt)


def test_backbone_weights_load_classification_checkpoint(fixtures_path):
    """The backbone of a DeepLabV3 at output stride 32 is the classifier's, bit for bit."""
    golden = np.load(fixtures_path / "mobilevit_v1_xxs.npz")
    model = kmv.DeepLabV3("mobilevit_xxs", backbone_weights=str(fixtures_path / "mobilevit_v1_xxs.pt"),
                          output_stride=32, include_preprocessing=False, input_shape=(256, 256, 3))
    ends = segmentation.get_endpoints(model)(golden["input_nhwc"])
    for level in ("s8", "s16", "s32"):
        _close(np.asarray(ends[level]), golden[f"features_{level}"], level)
    assert not any(layer.name == "conv_1x1_exp" for layer in model.layers)  # removed, as upstream


def test_named_weights_go_through_pretrained_state_dict(segdet, monkeypatch):
    calls = []
    state_dict = load_torch_state_dict(str(segdet / "deeplabv3_mobilevit_v2_050.pt"))

    def fake(name, dataset):
        calls.append((name, dataset))
        return state_dict

    monkeypatch.setattr(W, "pretrained_state_dict", fake, raising=False)
    model = kmv.DeepLabV3("mobilevitv2_050", weights="voc", input_shape=(64, 64, 3))
    assert calls == [("deeplabv3_mobilevitv2_050", "voc")]
    assert model.output.shape == (None, 64, 64, 21)
    kernel = model.get_layer("seg_head.classifier").kernel
    np.testing.assert_array_equal(np.asarray(kernel),
                                  state_dict["seg_head.classifier.block.conv.weight"][:, :, 0, 0].T)


def _dilations(model):
    return {layer.name: layer.dilation_rate for layer in model.layers
            if isinstance(layer, kmv.layers.ConvNormAct) and layer.dilation_rate != 1
            and not layer.name.startswith("seg_head.")}


@pytest.mark.parametrize("backbone, output_stride, expected", [
    # cvnets v0.1 (v1, v3 XXS/XS/S): the block never receives the dilation it computes
    ("mobilevit_xxs", 16, {}),
    ("mobilevitv3_xxs", 8, {"layer_5.0.block.conv_3x3": 2}),
    # cvnets v0.2 (v2, v3 0.5/0.75/1.0): the block's local depthwise 3x3 is dilated
    ("mobilevitv2_050", 16, {"layer_5.1.local_rep.0": 2}),
    ("mobilevitv3_050", 8, {"layer_4.1.local_rep.0": 2, "layer_5.0.block.conv_3x3": 2,
                            "layer_5.1.local_rep.0": 4}),
])
def test_output_stride_mechanism_per_code_version(backbone, output_stride, expected):
    model = kmv.DeepLabV3(backbone, output_stride=output_stride, input_shape=(64, 64, 3),
                          aux_output=True)
    assert _dilations(model) == expected
    ends = segmentation.get_endpoints(model)
    assert ends.output["logits_lowres"].shape[1:3] == (64 // output_stride,) * 2
    assert ends.output["s16"].shape[1:3] == (64 // min(16, output_stride),) * 2


@pytest.mark.parametrize("backbone", architectures.segmentation_models())
def test_every_backbone_builds_at_512(backbone):
    model = kmv.DeepLabV3(backbone=backbone, classes=21, input_shape=(512, 512, 3),
                          include_preprocessing=False)
    assert model.output.shape == (None, 512, 512, 21)
    head = architectures.SEG_HEADS[architectures.get_spec(backbone).family.seg_head]
    aspp = model.get_layer("seg_head.aspp.aspp_layer.project")
    assert aspp.filters == head.aspp_channels
    assert [model.get_layer(f"seg_head.aspp.aspp_layer.convs.{i}").dilation_rate
            for i in (1, 2, 3)] == [6, 12, 18]


def test_forward_at_512():
    model = kmv.DeepLabV3("mobilevitv3_xxs", classes=21, input_shape=(512, 512, 3),
                          include_preprocessing=False)
    y = model.predict(np.random.RandomState(0).rand(1, 512, 512, 3).astype("float32"), verbose=0)
    assert y.shape == (1, 512, 512, 21) and np.isfinite(y).all()


@pytest.mark.parametrize("backbone, aux_output", [("mobilevitv3_xxs", False),
                                                  ("mobilevitv3_050", True)])
def test_keras_roundtrip_safe_mode(backbone, aux_output, tmp_path):
    x = np.random.RandomState(0).uniform(0, 255, (1, 64, 80, 3)).astype("float32")
    model = kmv.DeepLabV3(backbone, classes=5, input_shape=(64, 80, 3), aux_output=aux_output)
    path = tmp_path / f"{backbone}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    y, z = model(x), loaded(x)
    if aux_output:  # v0.2 family: the training outputs
        assert sorted(y) == sorted(z) == ["aux_logits", "logits"]
        np.testing.assert_array_equal(np.asarray(z["aux_logits"]), np.asarray(y["aux_logits"]))
        # stride 16 of 64x80 is 4x5; v2-style blocks round the 5 up to 6 for good, as upstream
        assert y["aux_logits"].shape == (1, 4, 6, 5)
        y, z = y["logits"], z["logits"]
    np.testing.assert_array_equal(np.asarray(z), np.asarray(y))
    assert y.shape == (1, 64, 80, 5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_static_shape_upsampling_matches_official(variant, segdet):
    """The static-shape path (constant matrices) of the x16 upsampling, both align_corners."""
    npz = np.load(segdet / f"{variant}.npz")
    head = architectures.SEG_HEADS[architectures.get_spec(VARIANTS[variant][0]).family.seg_head]
    for size in SIZES:
        lowres = keras.Input(npz[f"seg_logits_lowres{size}"].shape[1:])
        up = keras.Model(lowres, kmv.layers.BilinearResize(16, head.align_corners)(lowres))
        _close(np.asarray(up(npz[f"seg_logits_lowres{size}"]))[:, :16],
               npz[f"seg_logits_fullres{size}_rows0to15"], size)


@pytest.mark.parametrize("kwargs, message", [
    (dict(output_stride=12), "`output_stride` must be 8, 16 or 32; got 12"),
    (dict(weights="imagenet"), "backbone_weights='imagenet'"),
    (dict(weights="cityscapes"), "`weights` must be None, 'voc', 'ade20k'"),
    (dict(backbone="mobilevitv3_xs_l2"), "no official segmentation config"),
    (dict(upsample="x16"), "`upsample` must be"),
    (dict(atrous_rates=(6, 12)), "three positive integers"),
    (dict(weights="voc", backbone_weights="imagenet"), "not both"),
])
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kmv.DeepLabV3(**{"input_shape": (64, 64, 3), **kwargs})


def test_classes_must_match_the_checkpoint(segdet):
    with pytest.raises(ValueError, match="21-class classifier; got classes=3"):
        kmv.DeepLabV3("mobilevit_xxs", weights=str(segdet / "deeplabv3_mobilevit_v1_xxs.pt"),
                      classes=3, input_shape=(64, 64, 3))


# ---------------------------------------------- v1-S retrained under cvnets v0.2 ("voc-v0.2")


@pytest.fixture(scope="module")
def golden_v1_v02():
    """The fixture's model on its inputs: with the preprocessing (uint8 RGB in, as the
    published weights take it) for the endpoints, without it for the official x8 output."""
    npz, pt = np.load(f"{V1_V02}.npz"), f"{V1_V02}.pt"
    common = dict(weights=pt, head=V1_V02_HEAD, output_stride=8, input_shape=(None, None, 3))
    model = kmv.DeepLabV3("mobilevit_xxs", aux_output=True, **common)
    official = kmv.DeepLabV3("mobilevit_xxs", include_preprocessing=False, upsample="official",
                             **common)
    ends = segmentation.get_endpoints(model)
    outputs = {}
    for size in V1_V02_SIZES:
        pixels = npz[f"input_uint8{size}"]
        outputs[size] = {k: np.asarray(v) for k, v in ends(pixels.astype("float32")).items()}
        outputs[size]["official"] = np.asarray(official(pixels.astype("float32") / 255))
    manifest = json.loads(Path(f"{V1_V02}.json").read_text())
    return dict(model=model, npz=npz, outputs=outputs, manifest=manifest)


def test_v1_v02_parameter_counts_equal_official(golden_v1_v02):
    manifest = golden_v1_v02["manifest"]
    count = sum(int(np.prod(w.shape)) for w in golden_v1_v02["model"].trainable_weights)
    assert count == V1_V02_PARAMS == manifest["param_count"]
    full = kmv.DeepLabV3("mobilevit_s", head="v0.2", output_stride=8, aux_output=True,
                         input_shape=(64, 64, 3))
    count = sum(int(np.prod(w.shape)) for w in full.trainable_weights)
    assert count == V1_S_V02_PARAMS == manifest["published_config_param_count"]


@pytest.mark.parametrize("size", V1_V02_SIZES)
def test_v1_v02_lowres_aux_aspp_and_features_match_official(golden_v1_v02, size):
    """Stride-8 logits, aux logits (out_l4 at stride 8), ASPP and backbone channels, from
    RGB pixels: a BGR flip (the v0.1 convention) would be off by O(1)."""
    out, npz = golden_v1_v02["outputs"][size], golden_v1_v02["npz"]
    _close(out["logits_lowres"], npz[f"seg_logits_lowres{size}"], "seg_logits_lowres")
    _close(out["aux_logits"], npz[f"aux_logits{size}"], "aux_logits")
    _close(out["aspp"][..., :16], npz[f"aspp_out{size}_ch0to15"], "aspp_out")
    _close(out["s16"][..., :8], npz[f"features_out_l4{size}_ch0to7"], "features_out_l4")
    _close(out["s32"][..., :8], npz[f"features_out_l5{size}_ch0to7"], "features_out_l5")


@pytest.mark.parametrize("size", V1_V02_SIZES)
def test_v1_v02_upsampled_rows_match_official(golden_v1_v02, size):
    """upsample="official" is the official x8 output (align_corners=True; 300x404 ->
    304x408); the default output has the input size and equals it at 320x320."""
    out, npz = golden_v1_v02["outputs"][size], golden_v1_v02["npz"]
    assert out["official"].shape == tuple(npz[f"seg_logits_fullres{size}_shape"])
    _close(out["official"][:, :4], npz[f"seg_logits_fullres{size}_rows0to3"], "official rows")
    h, w = npz[f"input_uint8{size}"].shape[1:3]
    assert out["logits"].shape == (1, h, w, 21)
    if h % 8 == 0 and w % 8 == 0:
        _close(out["logits"][:, :4], npz[f"seg_logits_fullres{size}_rows0to3"], "input-size rows")


def test_v1_v02_output_stride_8_dilates_only_what_the_official_code_does(golden_v1_v02):
    """At output stride 8 the official v0.2 code dilates layer_5's inverted residual by 2
    and nothing else in the backbone (the v1 block takes no dilation); ASPP 12/24/36."""
    official = {name.removeprefix("encoder.").removesuffix(".block.conv"): dilation[0]
                for name, _, _, dilation, _ in golden_v1_v02["manifest"]["dilated_convs"]
                if name.startswith("encoder.")}
    assert _dilations(golden_v1_v02["model"]) == official == {"layer_5.0.block.conv_3x3": 2}
    assert golden_v1_v02["manifest"]["head"]["aspp_rates"] == [12, 24, 36] == [
        golden_v1_v02["model"].get_layer(f"seg_head.aspp.aspp_layer.convs.{i}").dilation_rate
        for i in (1, 2, 3)]


def test_voc_v02_weights_are_the_retrained_v1_config(monkeypatch):
    """weights="voc-v0.2": the registry entry, output stride 8, the v0.2 head, RGB input."""
    calls = []
    state_dict = load_torch_state_dict(f"{V1_V02}.pt")
    monkeypatch.setattr(W, "pretrained_state_dict",
                        lambda name, dataset: calls.append((name, dataset)) or state_dict)
    model = kmv.DeepLabV3("mobilevit_xxs", weights="voc-v0.2", head=V1_V02_HEAD,
                          input_shape=(320, 320, 3))
    assert calls == [("deeplabv3_mobilevit_xxs", "voc-v0.2")]
    npz = np.load(f"{V1_V02}.npz")
    lowres = segmentation.get_endpoints(model)(npz["input_uint8"].astype("float32"))
    _close(np.asarray(lowres["logits_lowres"]), npz["seg_logits_lowres"], "seg_logits_lowres")
    assert ("deeplabv3_mobilevit_s", "voc-v0.2") in W.REGISTRY


@pytest.mark.parametrize("backbone, head, bgr", [
    ("mobilevit_xxs", None, True), ("mobilevitv3_xxs", None, True),  # v0.1: OpenCV, BGR
    ("mobilevit_xxs", "v0.2", False), ("mobilevitv2_050", None, False),  # v0.2: PIL, RGB
])
def test_channel_order_follows_the_head_code_version(backbone, head, bgr):
    model = kmv.DeepLabV3(backbone, head=head, input_shape=(64, 64, 3))
    assert model.get_layer("preprocess").reverse_channels is bgr


@pytest.mark.parametrize("kwargs, message", [
    (dict(head="v0.3"), "`head` must be None, one of ['v0.1', 'v0.2']"),
    (dict(backbone="mobilevit_s", weights="voc", head="v0.2"),
     "The 'voc' weights of mobilevit_s come with the cvnets-v0.1 head; got a cvnets-v0.2 head "
     "(the v1-S retrained under cvnets v0.2 is weights='voc-v0.2')"),
    (dict(backbone="mobilevit_s", weights="voc-v0.2", head="v0.1"),
     "The 'voc-v0.2' weights of mobilevit_s come with the cvnets-v0.2 head; got a cvnets-v0.1"),
])
def test_head_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        kmv.DeepLabV3(**{"input_shape": (64, 64, 3), **kwargs})
