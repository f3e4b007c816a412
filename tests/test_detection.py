"""SSDLite: golden parity with the official cvnets detectors (v0.1 and v0.2 code), anchors,
box coder, matcher, post-processing, serialization and clear errors."""

import json

import keras
import numpy as np
import pytest

import keras_mobilevit as kmv
from keras_mobilevit import anchors, box_coder, detection, postprocess
from conftest import fixtures_dir

SEGDET = fixtures_dir() / "segdet"
# backbone -> (fixture variant, official parameter count, also pinned here)
GOLDEN = {
    "mobilevit_xxs": ("ssdlite_mobilevit_v1_xxs", 1755050),
    "mobilevitv2_050": ("ssdlite_mobilevit_v2_050", 2035395),
}
TOL = 2e-4  # class logits have std ~3, regressions std ~1: a structural bug is O(1)
GRID_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
LEVELS = {16: "16", 32: "32", 64: "64", 128: "128", 256: "256", -1: "global"}


@pytest.fixture(scope="module")
def manifest(fixtures_path):
    return json.loads((fixtures_path / "segdet" / "manifest-segdet.json").read_text())


@pytest.fixture(scope="module", params=list(GOLDEN))
def golden(request, fixtures_path):
    """(backbone, fixture arrays, outputs of our model incl. per-level features, model)."""
    backbone = request.param
    variant = GOLDEN[backbone][0]
    model = kmv.SSDLite(backbone, weights=str(fixtures_path / "segdet" / f"{variant}.pt"),
                        include_preprocessing=False)
    probe = keras.Model(model.input, {**model.output, **{
        f"features_os_{name}": model.get_layer(detection.feature_layer_name(stride)).output
        for stride, name in LEVELS.items()}})
    data = dict(np.load(fixtures_path / "segdet" / f"{variant}.npz"))
    out = {k: np.asarray(v) for k, v in probe(data["input_nhwc"]).items()}
    return backbone, data, out, model


def test_raw_outputs_and_features_match_official(golden):
    _, data, out, _ = golden
    np.testing.assert_allclose(out["class_logits"], data["cls_logits"], atol=TOL, rtol=0)
    np.testing.assert_allclose(out["box_regressions"], data["box_regressions"], atol=TOL, rtol=0)
    for name in LEVELS.values():
        key = f"features_os_{name}"
        np.testing.assert_allclose(out[key], data[key], atol=TOL, rtol=0, err_msg=key)


def test_anchors_match_official(golden):
    _, data, _, model = golden
    np.testing.assert_allclose(detection.model_anchors(model), data["anchors_cxcywh"],
                               atol=TOL, rtol=0)
    np.testing.assert_allclose(anchors.generate_anchors(GRID_320), data["anchors_cxcywh"],
                               atol=1e-7, rtol=0)


def test_parameter_count(golden, manifest):
    backbone, _, _, model = golden
    variant, pinned = GOLDEN[backbone]
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert count == manifest["param_counts"][variant] == pinned


def _same_rows(out, data, i, score_tol):
    """Checks count, classes (in order) and scores of image i; returns the official rows."""
    boxes, scores, labels = (data[f"det{i}_boxes_xyxy"], data[f"det{i}_scores"],
                             data[f"det{i}_labels"])
    n = int(out["num_detections"][i])
    assert n == len(labels)
    np.testing.assert_array_equal(out["classes"][i, :n], labels)
    np.testing.assert_allclose(out["scores"][i, :n], scores, atol=score_tol, rtol=0)
    return n, boxes, scores, labels


@pytest.mark.parametrize("backbone", list(GOLDEN))
def test_postprocess_equals_official_on_stored_outputs(backbone, fixtures_path):
    """The official detections were computed from exactly these raw outputs: same rows."""
    data = np.load(fixtures_path / "segdet" / f"{GOLDEN[backbone][0]}.npz")
    layer = postprocess.SSDPostprocess(GRID_320, detection.postprocess_config(backbone))
    out = {k: np.asarray(v) for k, v in
           layer([data["box_regressions"], data["cls_logits"]]).items()}
    for i in range(2):
        n, boxes, _, _ = _same_rows(out, data, i, score_tol=1e-5)
        np.testing.assert_allclose(out["boxes"][i, :n], boxes, atol=1e-3, rtol=0)
        assert not out["scores"][i, n:].any() and not out["classes"][i, n:].any()


def test_model_detections_equal_official(golden):
    """End to end from pixels. Our raw outputs differ from the stored ones by float noise
    (~2e-5), which may swap two detections of one class whose official scores differ by
    less than 1e-5 (seen: 4e-8 .. 9e-7); such a pair may match crosswise, nothing else."""
    _, data, out, _ = golden
    for i in range(2):
        n, boxes, scores, labels = _same_rows(out, data, i, score_tol=1e-4)
        for row in range(n):
            near = [j for j in range(max(row - 1, 0), min(row + 2, n))
                    if labels[j] == labels[row] and abs(scores[j] - scores[row]) < 1e-5]
            errors = [np.abs(out["boxes"][i, row] - boxes[j]).max() for j in near]
            assert min(errors) <= 1e-3, (i, row, errors)


@pytest.mark.parametrize("backbone", kmv.list_models())
def test_every_backbone_builds_with_the_official_grid(backbone):
    model = kmv.SSDLite(backbone, classes=81, input_shape=(320, 320, 3),
                        include_preprocessing=False, postprocess=False)
    assert tuple(model.output["class_logits"].shape) == (None, 3232, 81)
    assert tuple(model.output["box_regressions"].shape) == (None, 3232, 4)
    assert len(detection.model_anchors(model)) == 3232


def test_other_input_size_and_keras_round_trip(tmp_path):
    model = kmv.SSDLite("mobilevitv3_050", classes=5, input_shape=(192, 256, 3))
    # 192x256: 12x16, 6x8, 3x4, 2x2, 1x1, 1x1 cells
    grid = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1), (1, 1)]
    np.testing.assert_array_equal(detection.model_anchors(model), anchors.generate_anchors(grid))
    images = np.random.RandomState(0).uniform(0, 255, (1, 192, 256, 3)).astype("float32")
    path = tmp_path / "ssd.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    a, b = model(images), loaded(images)
    count = sum(h * w * k for (h, w), k in zip(grid, anchors.SSD_ANCHORS.anchors_per_location()))
    assert a["class_logits"].shape == (1, count, 5) and count == 1546
    for key in ("class_logits", "box_regressions", "boxes", "scores", "classes",
                "num_detections"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=1e-5)


@pytest.mark.parametrize("backbone", ["mobilevitv3_xxs", "mobilevitv3_050"])  # v0.1, v0.2
def test_predict_in_batches_with_a_partial_last_batch(backbone):
    """predict() traces with an unknown batch size; the v0.1 (class-ordered)
    post-processing needed a static row length there and refused a trained run's model."""
    model = kmv.SSDLite(backbone, classes=5, input_shape=(160, 160, 3))
    images = np.random.RandomState(0).uniform(0, 255, (3, 160, 160, 3)).astype("float32")
    out = model.predict(images, batch_size=2, verbose=0)
    direct = model(images[2:])
    assert out["boxes"].shape == (3, *direct["boxes"].shape[1:])
    np.testing.assert_array_equal(out["num_detections"][2:], direct["num_detections"])
    # random weights give many near-equal scores: rows may swap between batch layouts
    np.testing.assert_allclose(np.sort(out["scores"][2]), np.sort(direct["scores"][0]),
                               atol=1e-5)


def test_clear_errors(fixtures_path, tmp_path):
    with pytest.raises(ValueError, match="too small for the SSD anchor grid"):
        kmv.SSDLite("mobilevitv2_050", input_shape=(128, 128, 3), postprocess=False)
    with pytest.raises(ValueError, match="fixed input_shape"):
        kmv.SSDLite("mobilevitv2_050", input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="81 classes"):
        kmv.SSDLite("mobilevitv2_050", weights="coco", classes=10)
    with pytest.raises(ValueError, match="either `weights`"):
        kmv.SSDLite("mobilevitv2_050", weights="coco", backbone_weights="imagenet")
    with pytest.raises(ValueError, match="Valid names"):
        kmv.SSDLite("mobilevit_huge")
    with pytest.raises(ValueError, match="backbone_weights="):
        kmv.SSDLite("mobilevitv2_050", weights=str(fixtures_path / "mobilevit_v2_050.pt"),
                    postprocess=False)
    with pytest.raises(ValueError, match="existing official"):
        kmv.SSDLite("mobilevitv2_050", weights=str(tmp_path / "missing.pt"))


def test_wrong_variant_checkpoint_names_keys(fixtures_path):
    with pytest.raises(kmv.CheckpointError, match="wrong shape"):
        kmv.SSDLite("mobilevitv2_075", postprocess=False,
                    weights=str(fixtures_path / "segdet" / "ssdlite_mobilevit_v2_050.pt"))


# ------------------------------------------------------------ box coder and matcher


def test_encode_decode_round_trip():
    rng = np.random.RandomState(0)
    priors = anchors.generate_anchors(GRID_320)
    boxes = np.concatenate([rng.uniform(0.1, 0.9, (3232, 2)),
                            rng.uniform(0.02, 0.8, (3232, 2))], axis=1).astype("float32")
    t = box_coder.encode(boxes, priors)
    np.testing.assert_allclose(np.asarray(box_coder.decode(t, priors)), boxes, atol=1e-6)
    np.testing.assert_allclose(np.asarray(box_coder.encode(priors, priors)), 0.0, atol=1e-6)
    # the variances: a box shifted by one anchor width and twice as wide
    shifted = priors[:1] * [1, 1, 2, 1] + [priors[0, 2], 0, 0, 0]
    np.testing.assert_allclose(np.asarray(box_coder.encode(shifted, priors[:1])),
                               [[10.0, 0.0, np.log(2) / 0.2, 0.0]], atol=1e-5)


def _official_match(gt, labels, priors, threshold=0.5):
    """Plain transcription of cvnets assign_priors (loop over targets, later wins)."""
    corners = np.asarray(box_coder.center_to_corner(priors))
    ious = np.asarray(box_coder.box_iou(gt[:, None], corners[None]))  # [G, A]
    best_target, best_iou = ious.argmax(0), ious.max(0)
    for target, prior in enumerate(ious.argmax(1)):
        best_target[prior] = target
    best_iou[ious.argmax(1)] = 2.0
    out = labels[best_target].copy()
    out[best_iou < threshold] = 0
    return gt[best_target], out


def test_matcher_follows_official_semantics():
    rng = np.random.RandomState(1)
    priors = anchors.generate_anchors(GRID_320)
    xy = rng.uniform(0, 0.7, (12, 2))
    gt = np.concatenate([xy, xy + rng.uniform(0.02, 0.3, (12, 2))], 1).astype("float32")
    gt[5] = gt[4]  # two boxes with the same best anchor: the later one must win it
    labels = rng.randint(1, 81, 12).astype("int32")
    labels[4], labels[5] = 7, 9
    targets, got = box_coder.match(gt, labels, priors)
    matched, want = _official_match(gt, labels, priors)
    np.testing.assert_array_equal(np.asarray(got), want)
    corners = np.asarray(box_coder.center_to_corner(priors))
    best = np.asarray(box_coder.box_iou(gt[5], corners)).argmax()
    assert np.asarray(got)[best] == 9
    positive = want > 0
    expected = np.asarray(box_coder.encode(box_coder.corner_to_center(matched), priors))
    np.testing.assert_allclose(np.asarray(targets)[positive], expected[positive], atol=1e-5)
    assert not np.asarray(targets)[~positive].any()
    # padding rows (label -1) change nothing; an empty image is all background
    padded = box_coder.match(np.concatenate([gt, np.zeros((3, 4), "float32")]),
                             np.concatenate([labels, [-1, -1, -1]]), priors)[1]
    np.testing.assert_array_equal(np.asarray(padded), want)
    t0, l0 = box_coder.match(np.zeros((0, 4), "float32"), np.zeros((0,), "int32"), priors)
    assert not np.asarray(l0).any() and np.isfinite(np.asarray(t0)).all()


def _reference_nms(boxes, threshold):
    """Sequential greedy NMS in numpy (torchvision.ops.nms on boxes sorted by score)."""
    ious = np.asarray(box_coder.box_iou(boxes[:, None], boxes[None], eps=0.0))
    keep = []
    for i in range(len(boxes)):
        if all(ious[i, j] <= threshold for j in keep):
            keep.append(i)
    return keep


def test_greedy_nms_matches_sequential_reference():
    rng = np.random.RandomState(2)
    xy = rng.uniform(0, 0.8, (3, 77, 2))  # 77: tiles of 32 with an overlapping last tile
    boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (3, 77, 2))], -1).astype("float32")
    valid = np.arange(77)[None] < np.array([[77], [40], [0]])
    keep = np.asarray(postprocess.greedy_nms(boxes, valid, 0.3))
    for s, n in enumerate((77, 40, 0)):
        assert np.nonzero(keep[s])[0].tolist() == _reference_nms(boxes[s, :n], 0.3)
