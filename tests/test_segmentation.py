"""DeepLabV3: golden parity with the official PyTorch code on the segdet fixtures
(../shared/fixtures/segdet, README.md there), parameter counts, the output-stride mechanism
of each code version, every backbone's output shape, serialization and the clear errors."""

import json

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
