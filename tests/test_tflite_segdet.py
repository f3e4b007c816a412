"""tflite/detection.py and tflite/segmentation.py: the graph ends of detection and
segmentation models, on tiny stand-in models (a few convs).

Detection: the graph ends in LiteRT's TFLite_Detection_PostProcess, float32 and full
int8, and its outputs equal an independent decode + per-class NMS of the same raw
outputs. Segmentation: bilinear upsampling as RESIZE_BILINEAR and the argmax inside
the graph, uint8 class map or uint8 logits out.
"""

import json

import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import keras_mobilevit as kmv  # noqa: E402
import segdet_utils  # noqa: E402
from tflite import (analyze, android, benchmark_report, convert, detection, qat,  # noqa: E402
                    segmentation, tasks)

SIZE = 32
CLASSES = 4  # background + 3
ANCHORS = 48  # 4x4 cells x 3 anchors


def _pixels(n, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _anchors(seed=0):
    return segdet_utils.tiny_anchors(ANCHORS, seed)


@pytest.fixture(scope="module")
def raw_detector():
    """Pixels in [0, 255] -> box_regressions (1, A, 4), class_logits (1, A, C)."""
    return segdet_utils.tiny_detector(SIZE, CLASSES, ANCHORS)


SPEC = detection.PostprocessSpec(num_classes=CLASSES - 1, score_threshold=0.3,
                                 iou_threshold=0.5, max_detections=10, detections_per_class=10)


def _convert(model, mode, **task_options):
    """`convert.convert` of a stand-in (plain Keras layers: the converter's own int8
    calibration, as for any model QAT does not cover)."""
    size = model.inputs[0].shape[1]
    return convert.convert(model, mode, _pixels(16, size), ptq="converter", **task_options)


def _convert_detector(model, mode, spec=SPEC):
    return _convert(model, mode, postprocess=spec, anchors=_anchors())


def _run(content, image, keep_tensors=False):
    it = Interpreter(model_content=content, experimental_preserve_all_tensors=keep_tensors)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
    it.invoke()
    outputs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    return outputs, it


# An independent reference of what the op computes: decode (variances 0.1 / 0.2), then
# per foreground class: scores >= threshold, greedy NMS (IoU > threshold suppresses),
# at most detections_per_class; all classes merged by decreasing score, cut to D rows.
def _decode(regressions, anchors):
    centre = regressions[:, :2] * 0.1 * anchors[:, 2:] + anchors[:, :2]
    size = np.exp(regressions[:, 2:] * 0.2) * anchors[:, 2:]
    return np.concatenate([centre - size / 2, centre + size / 2], 1)  # x0, y0, x1, y1


def _iou(box, boxes):
    lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), 1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], 1)
    return inter / (area - inter)


def _reference(regressions, scores, anchors, spec):
    boxes, found = _decode(regressions, anchors), []
    for c in range(1, scores.shape[1]):
        order = np.argsort(-scores[:, c], kind="stable")
        order = order[scores[order, c] >= spec.score_threshold]
        kept = []
        while order.size and len(kept) < spec.detections_per_class:
            best, order = order[0], order[1:]
            kept.append(best)
            order = order[_iou(boxes[best], boxes[order]) <= spec.iou_threshold]
        found += [(scores[i, c], c - 1, boxes[i]) for i in kept]
    found.sort(key=lambda t: -t[0])
    found = found[:spec.max_detections]
    yxyx = np.array([b[[1, 0, 3, 2]] for _, _, b in found]).reshape(-1, 4)
    return yxyx, np.array([c for _, c, _ in found]), np.array([s for s, _, _ in found])


def _check_against_reference(outputs, regressions, scores, spec, anchors=None):
    boxes, classes, probs, count = outputs
    n = int(count[0])
    anchors = _anchors() if anchors is None else anchors
    want_boxes, want_classes, want_scores = _reference(regressions, scores, anchors, spec)
    assert n == len(want_classes) and n > 3  # a non-degenerate case
    np.testing.assert_array_equal(classes[0, :n].astype(int), want_classes)
    np.testing.assert_allclose(probs[0, :n], want_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(boxes[0, :n], want_boxes, atol=1e-5)


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_detector_ends_in_the_postprocess_op_with_the_outputs_apps_expect(raw_detector, mode):
    content = _convert_detector(raw_detector, mode)
    graph = analyze.load(content)
    # the one custom op, which LiteRT registers by default: allowed, and said so
    assert analyze.non_builtin_ops(graph) == []
    assert [op.custom_name for op in analyze.allowed_custom_ops(graph)] == [detection.OP_NAME]
    assert [op.custom_name for op in analyze.non_builtin_ops(graph, allowed=())] == [
        detection.OP_NAME]
    assert graph.ops[-1].name == f"CUSTOM:{detection.OP_NAME}"
    assert [t.name for t in graph.outputs] == list(detection.TENSOR_NAMES)
    assert [(t.shape, t.dtype) for t in graph.outputs] == [
        ((1, 10, 4), "float32"), ((1, 10), "float32"), ((1, 10), "float32"), ((1,), "float32")]
    assert graph.inputs[0].dtype == ("float32" if mode == "float32" else "uint8")
    # the anchors are a constant input of the op, in y, x, h, w order
    anchors = graph.ops[-1].inputs[2]
    assert anchors.is_constant and anchors.shape == (ANCHORS, 4)


def test_float32_postprocess_equals_decode_and_nms_of_the_keras_outputs(raw_detector):
    content = _convert_detector(raw_detector, "float32")
    image = _pixels(1, seed=5)[0]
    outputs, _ = _run(content, image)
    raw = raw_detector(image[None])
    scores = keras.ops.convert_to_numpy(keras.ops.softmax(raw["class_logits"], axis=-1))[0]
    _check_against_reference(outputs, keras.ops.convert_to_numpy(raw["box_regressions"])[0],
                             scores, SPEC)


def test_int8_postprocess_equals_decode_and_nms_of_its_own_raw_outputs(raw_detector):
    """The int8 graph's op sees dequantized int8 encodings and scores: decoding those
    exactly as the reference does proves the wiring (order, anchors, scales, classes)."""
    content = _convert_detector(raw_detector, "int8")
    graph = analyze.load(content)
    op = graph.ops[-1]
    assert graph.inputs[0].scale == (1.0,) and graph.inputs[0].zero_point == (0,)
    outputs, it = _run(content, _pixels(1, seed=5)[0].round(), keep_tensors=True)
    encodings, scores = (it.get_tensor(t.index)[0] for t in op.inputs[:2])
    _check_against_reference(outputs, encodings[:, [1, 0, 3, 2]], scores, SPEC)


def test_int8_detections_close_to_keras(raw_detector):
    content = _convert_detector(raw_detector, "int8")
    float_content = _convert_detector(raw_detector, "float32")
    checked = 0
    for seed in range(3):
        image = _pixels(1, seed=10 + seed)[0].round()
        (b8, c8, s8, n8), _ = _run(content, image)
        (bf, cf, sf, nf), _ = _run(float_content, image)
        # each confident float detection has an int8 one of its class within a pixel
        for box, cls, score in zip(bf[0], cf[0], sf[0][: int(nf[0])]):
            if score < 0.5:
                continue
            same = c8[0, : int(n8[0])] == cls
            err = np.abs(b8[0, : int(n8[0])][same] - box).max(axis=1) * SIZE
            assert err.size and err.min() < 1.0
            checked += 1
    assert checked >= 10


def test_int8_levels_keep_their_own_scales_up_to_the_postprocess_op():
    """The op's box and score inputs are concatenated over the levels in float, each
    level dequantized with its own scale: one int8 scale for all levels (the wide level's)
    cost the narrow level's boxes most of their precision."""
    model = segdet_utils.tiny_two_level_detector(SIZE, CLASSES)
    anchors = segdet_utils.tiny_anchors(60, seed=0)
    content = _convert(model, "int8", postprocess=SPEC, anchors=anchors)
    graph = analyze.load(content)
    op = graph.ops[-1]
    assert [t.dtype for t in op.inputs] == ["float32"] * 3
    producer = {t.index: o for o in graph.ops for t in o.outputs}
    concats = [o for o in graph.ops if o.name == "CONCATENATION" and o.outputs[0].dtype == "float32"]
    assert len(concats) == 2  # boxes, class logits: float, from per-level dequantized inputs
    for concat in concats:
        assert {producer[t.index].name for t in concat.inputs} == {"DEQUANTIZE"}
    box_concat = producer[producer[op.inputs[0].index].inputs[0].index]  # before the reorder
    scales = [producer[t.index].inputs[0].scale[0] for t in box_concat.inputs]
    assert box_concat in concats and max(scales) > 20 * min(scales), scales  # their own
    # no QUANTIZE -> DEQUANTIZE round trip left in front of the op (the softmax feeds it)
    assert producer[op.inputs[1].index].name == "SOFTMAX"
    image = _pixels(1, seed=5)[0].round()
    _, it = _run(content, image, keep_tensors=True)
    encodings = it.get_tensor(op.inputs[0].index)[0][:, [1, 0, 3, 2]]  # back to cx, cy, w, h
    want = keras.ops.convert_to_numpy(model(image[None])["box_regressions"])[0]
    fine = slice(0, 48)  # the 4x4 level's rows, values within +-0.08; the 2x2 level's +-5
    assert np.abs(want[fine]).max() < 0.1 and np.abs(want[48:]).max() > 1
    error = np.abs(encodings[fine] - want[fine])
    # measured: mean 0.0009, max 0.006 (the layers before, in int8); at one scale for both
    # levels (step 0.04): mean 0.003, max 0.02
    assert error.mean() < 0.0015 and error.max() < 0.012, (error.mean(), error.max())


def test_spec_from_official_config_and_signature():
    from types import SimpleNamespace

    v02 = SimpleNamespace(score_threshold=0.01, nms_iou_threshold=0.5, pre_nms_top_k=400,
                          max_per_class=None, max_detections=200)
    spec = detection.PostprocessSpec.from_config(v02, classes=81)
    assert (spec.num_classes, spec.max_detections, spec.detections_per_class) == (80, 200, 200)
    assert spec.scales == (10.0, 10.0, 5.0, 5.0)
    v01 = SimpleNamespace(score_threshold=0.05, nms_iou_threshold=0.5, pre_nms_top_k=None,
                          max_per_class=200, max_detections=None)
    spec = detection.PostprocessSpec.from_config(v01, classes=81, nms="fast")
    assert (spec.max_detections, spec.detections_per_class) == (100, 100)
    signature = spec.implements_signature()
    assert signature.startswith('name: "TFLite_Detection_PostProcess" ')
    for part in ('key: "use_regular_nms" value { b: false }', 'key: "num_classes" value { i: 80 }',
                 'key: "nms_score_threshold" value { f: 0.05 }', 'key: "h_scale" value { f: 5.0 }'):
        assert part in signature
    with pytest.raises(ValueError, match="nms must be"):
        detection.PostprocessSpec(3, 0.5, 0.5, nms="greedy")
    with pytest.raises(ValueError, match="anchors must be"):
        detection.anchors_yxhw(np.zeros((5, 3)))


# --- segmentation ------------------------------------------------------------------

SEG_SIZE, SEG_CLASSES = 64, 5


@pytest.fixture(scope="module", params=[False, True], ids=["half_pixel", "align_corners"])
def segmenter(request):
    """`segdet_utils.tiny_segmenter`: stride-16 logits, (4, 4) here, resized to the input."""
    return segdet_utils.tiny_segmenter(SEG_SIZE, SEG_CLASSES, request.param)


def _convert_segmenter(model, mode, output):
    return _convert(model, mode, segmentation_output=output)


def test_split_upsampling_finds_the_resize_to_the_input(segmenter):
    trunk, align_corners = segmentation.split_upsampling(segmenter)
    assert trunk.output.shape == (None, 4, 4, SEG_CLASSES)
    assert align_corners == segmenter.layers[-1].align_corners
    plain = keras.Model(segmenter.input, segmenter.layers[-2].output)
    assert segmentation.split_upsampling(plain) == (plain, None)


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_segmenter_class_map_in_the_graph(segmenter, mode):
    content = _convert_segmenter(segmenter, mode, "class")
    graph = analyze.load(content)
    assert analyze.non_builtin_ops(graph) == []
    names = [op.name for op in graph.ops]
    assert names.count("RESIZE_BILINEAR") == 1 and "BATCH_MATMUL" not in names
    assert names[-2:] == ["ARG_MAX", "CAST"]
    assert [(t.shape, t.dtype) for t in graph.outputs] == [((1, SEG_SIZE, SEG_SIZE), "uint8")]
    if mode == "int8":
        assert graph.inputs[0].dtype == "uint8" and graph.inputs[0].scale == (1.0,)
        assert analyze.float_ops(graph) == []  # integer resize and argmax
        resize = next(op for op in graph.ops if op.name == "RESIZE_BILINEAR")
        assert resize.inputs[0].dtype == "int8"
    images = _pixels(4, SEG_SIZE, seed=3).round()
    want = np.argmax(keras.ops.convert_to_numpy(segmenter(images)), axis=-1)
    got = np.concatenate([_run(content, image)[0][0] for image in images])
    agreement = np.mean(got == want)
    assert agreement > (0.999 if mode == "float32" else 0.95), agreement


def test_segmenter_logits_out(segmenter):
    images = _pixels(2, SEG_SIZE, seed=4).round()
    want = keras.ops.convert_to_numpy(segmenter(images))
    float_content = _convert_segmenter(segmenter, "float32", "logits")
    got = np.concatenate([_run(float_content, image)[0][0] for image in images])
    np.testing.assert_allclose(got, want, atol=1e-4)  # RESIZE_BILINEAR == torch's rule
    graph = analyze.load(_convert_segmenter(segmenter, "int8", "logits"))
    out = graph.outputs[0]
    assert (out.shape, out.dtype) == ((1, SEG_SIZE, SEG_SIZE, SEG_CLASSES), "uint8")
    q = np.stack([_run(graph.content, image)[0][0][0] for image in images])
    dequantized = (q.astype("float32") - out.zero_point[0]) * out.scale[0]
    assert np.abs(dequantized - want).max() < 8 * out.scale[0] + 0.05 * np.abs(want).max()


def test_segmentation_outputs_rejects_bad_requests():
    logits = tf.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="output must be one of"):
        segmentation.segmentation_outputs(logits, (16, 16), False, "mask")
    with pytest.raises(ValueError, match="input-size logits"):
        segmentation.segmentation_outputs(logits, (16, 16), None)


def test_task_of_reads_the_outputs(raw_detector, segmenter):
    assert tasks.task_of(raw_detector) == "detection"
    assert tasks.task_of(segmenter) == "segmentation"
    inp = keras.Input((8, 8, 3))
    classifier = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp)))
    trunk, head = tasks.resolve(classifier)
    assert trunk is classifier and head.task == "classification" and head.custom_ops == ()
    with pytest.raises(ValueError, match="task must be"):
        tasks.resolve(classifier, task="pose")
    with pytest.raises(ValueError, match="segmentation_output must be"):
        tasks.resolve(segmenter, segmentation_output="mask")
    with pytest.raises(ValueError, match="post-processing settings"):
        tasks.resolve(raw_detector)  # no SSDPostprocess layer, not named ssdlite_*


# --- the real models on the segdet fixture weights (non-degenerate outputs) -----------

# (builder, backbone, fixture name, input size): fixture weights at a small size
REAL_MODELS = {"segmentation": (kmv.DeepLabV3, "mobilevit_xxs", "deeplabv3_mobilevit_v1_xxs", 128),
               "detection": (kmv.SSDLite, "mobilevitv2_050", "ssdlite_mobilevit_v2_050", 192)}


def _fixture_model(fixtures_path, task):
    """The task's model on its fixture weights, and the fixture's two input images (RGB
    in [0, 1]) as raw pixels at the model's size."""
    build, backbone, name, size = REAL_MODELS[task]
    weights = str(fixtures_path / "segdet" / f"{name}.pt")
    model = build(backbone, weights=weights, input_shape=(size, size, 3))
    with np.load(fixtures_path / "segdet" / f"{name}.npz") as f:
        images = f["input_nhwc"]
    return model, np.round(tf.image.resize(images * 255.0, (size, size)).numpy().clip(0, 255))


@pytest.fixture(scope="module")
def deeplab(fixtures_path):
    return _fixture_model(fixtures_path, "segmentation")


@pytest.fixture(scope="module")
def ssdlite(fixtures_path):
    return _fixture_model(fixtures_path, "detection")


def _int8_structure(graph):
    """uint8 raw pixels in, integer kernels: float only in the default float islands, the
    detection op (float by design) and, for a detector, the float tail that feeds it."""
    assert graph.inputs[0].dtype == "uint8" and graph.inputs[0].scale == (1.0,)
    assert graph.inputs[0].zero_point == (0,)
    tail = detection.float_tail(graph)
    # the levels' concatenations, the box reorder and the class softmax, nothing else
    assert {graph.ops[i].name for i in tail} <= {"CONCATENATION", "GATHER", "SOFTMAX"}
    floats = {op.name for op in analyze.float_ops(graph) if op.index not in tail}
    assert floats <= {"QUANTIZE", "DEQUANTIZE", "SOFTMAX", "RSQRT", "ADD",
                      f"CUSTOM:{detection.OP_NAME}"}, floats


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_deeplabv3_class_map_agrees_with_keras(deeplab, mode):
    model, images = deeplab
    content = convert.convert(model, mode, images)
    graph = analyze.load(content)
    assert analyze.non_builtin_ops(graph) == [] and analyze.allowed_custom_ops(graph) == []
    assert graph.outputs[0].shape == (1, *images.shape[1:3]) and graph.outputs[0].dtype == "uint8"
    assert [op.name for op in graph.ops].count("RESIZE_BILINEAR") == 1
    want = np.argmax(keras.ops.convert_to_numpy(model(images)), axis=-1)
    got = np.concatenate([_run(content, image)[0][0] for image in images])
    agreement = np.mean(got == want)
    print(f"DeepLabV3 {mode}: pixel agreement with Keras {agreement:.4f} "
          f"({np.unique(want).size} classes in the Keras maps)")
    assert np.unique(want).size > 3  # not a degenerate map
    if mode == "float32":
        assert agreement > 0.999, agreement
    else:
        _int8_structure(graph)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_ssdlite_ends_in_the_op_and_agrees_with_keras(ssdlite, mode):
    """float32: the confident Keras detections (official post-processing) found by the
    op within a pixel. int8: the op's detections equal a decode + NMS of the int8
    graph's own raw outputs (the int8 network's agreement is printed, see the report)."""
    model, images = ssdlite
    content = convert.convert(model, mode, images)
    graph = analyze.load(content)
    assert [op.custom_name for op in analyze.allowed_custom_ops(graph)] == [detection.OP_NAME]
    assert [t.name for t in graph.outputs] == list(detection.TENSOR_NAMES)
    spec = tasks.detection_spec(model)
    assert detection.op_attributes(graph)["num_classes"] == 80
    matched, total = _matched_detections(content, model, images)
    print(f"SSDLite {mode}: {matched}/{total} confident Keras detections within a pixel")
    if mode == "float32":
        assert total >= 20 and matched >= 0.95 * total
        return
    _int8_structure(graph)
    outputs, it = _run(content, images[0], keep_tensors=True)
    encodings, scores = (it.get_tensor(t.index)[0] for t in graph.ops[-1].inputs[:2])
    anchors = kmv.detection.model_anchors(model)
    _check_against_reference(outputs, encodings[:, [1, 0, 3, 2]], scores, spec, anchors)


def _matched_detections(content, model, images, min_score=0.5):
    """(how many of the Keras model's detections above `min_score` the .tflite has, of
    the same class, within a pixel on every side; how many there are)."""
    size = images.shape[1]
    want = {k: keras.ops.convert_to_numpy(v) for k, v in model(images).items()}
    matched = total = 0
    for k, image in enumerate(images):
        (boxes, classes, _, count), _ = _run(content, image)
        n = int(count[0])
        got_boxes, got_classes = boxes[0, :n] * size, classes[0, :n].astype(int) + 1
        m = int(want["num_detections"][k])
        keep = want["scores"][k][:m] > min_score
        for box, cls in zip(want["boxes"][k][:m][keep][:, [1, 0, 3, 2]] * size,
                            want["classes"][k][:m][keep]):
            err = np.abs(got_boxes[got_classes == cls] - box).max(axis=1, initial=0)
            matched += bool((got_classes == cls).any() and err.min() < 1.0)
            total += 1
    return matched, total


# --- artifacts, command line, QAT coverage, report (fast) ------------------------------

def test_android_spec_of_a_detector_and_a_segmenter(raw_detector, segmenter, tmp_path):
    path = tmp_path / "det_int8.tflite"
    path.write_bytes(_convert_detector(raw_detector, "int8"))
    spec = android.write_artifacts(str(path), labels=["a", "b", "c"], quantization="int8")
    assert spec["task"] == "detection" and spec["num_classes"] == CLASSES - 1
    assert [o["name"] for o in spec["outputs"]] == list(detection.TENSOR_NAMES)
    assert spec["outputs"][0]["shape"] == [1, 10, 4] and "ymin" in spec["outputs"][0]["meaning"]
    assert detection.OP_NAME in spec["runtime"]
    with pytest.raises(ValueError, match="4 labels for a model with 3 classes"):
        android.model_spec(str(path), labels=list("abcd"))
    for output, meaning in (("class", "class index per pixel"), ("logits", "logits")):
        path = tmp_path / f"seg_{output}.tflite"
        path.write_bytes(_convert_segmenter(segmenter, "int8", output))
        spec = android.write_artifacts(str(path), quantization="int8")
        assert spec["task"] == "segmentation" and spec["num_classes"] == SEG_CLASSES
        assert meaning in spec["output"]["meaning"]
        assert (tmp_path / f"seg_{output}.labels.txt").read_text().split() == [
            f"class_{i}" for i in range(SEG_CLASSES)]


def test_convert_command_line_builds_a_segmenter_by_name(tmp_path):
    out = tmp_path / "out"
    assert convert.main(["deeplabv3:mobilevitv3_xxs", "--input-size", "64", "--classes", "4",
                         "--quant", "float32", "--seg-output", "logits", "-o", str(out)]) == 0
    spec = json.loads((out / "deeplabv3_mobilevitv3_xxs_float32.json").read_text())
    assert spec["task"] == "segmentation" and spec["output"]["shape"] == [1, 64, 64, 4]
    with pytest.raises(SystemExit):
        convert.main(["pspnet:mobilevitv3_xxs", "-o", str(out)])


def test_qat_twins_cover_the_deeplabv3_and_ssdlite_heads(tmp_path):
    keras.utils.set_random_seed(3)
    images = _pixels(2, 64)
    for model in (kmv.DeepLabV3("mobilevitv3_xxs", input_shape=(64, 64, 3)),
                  kmv.SSDLite("mobilevitv3_xxs", input_shape=(160, 160, 3))):
        x = images if model.inputs[0].shape[1] == 64 else _pixels(2, 160)
        twin = qat.make_qat_model(model, calibration_data=x, batch_size=2)
        kinds = [type(layer).__name__ for layer in twin.layers]
        assert "QBilinearResize" in kinds or kinds.count("QSSDPrediction") == 6
        want, got = model(x), twin(x)
        # the raw outputs (the post-processing stays float); box and class values of a
        # level come from their own int8 ranges
        names = ("box_regressions", "class_logits") if isinstance(want, dict) else (None,)
        for name in names:
            w, g = (keras.ops.convert_to_numpy(t[name] if name else t) for t in (want, got))
            assert np.abs(g - w).mean() < 0.1 * np.abs(w).mean() + 1e-3, name
        if names[0]:  # the twin saves and loads (QAT fine-tuning writes it as .keras)
            twin.save(tmp_path / "twin.keras")
            again = qat.load_keras_model(tmp_path / "twin.keras")(x)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(again["box_regressions"]),
                                       keras.ops.convert_to_numpy(got["box_regressions"]))


def test_qssd_prediction_splits_the_float_prediction_exactly():
    """Box columns (4 of every 4 + C) and class columns of the float 1x1 conv, each
    quantized on its own: with the activation fake-quants bypassed the twin equals
    Dense + SSDHeadOutput up to the weights' int8 rounding, in the official row order;
    a wrong column or row order is an O(1) difference."""
    from keras_mobilevit.detection import SSDHeadOutput
    from tflite.qat_layers import QSSDPrediction

    keras.utils.set_random_seed(0)
    classes, anchors = 5, 3
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 8)).astype("float32")
    dense = keras.layers.Dense(anchors * (4 + classes))
    boxes, logits = SSDHeadOutput(classes)(dense(x))
    twin = QSSDPrediction(anchors * (4 + classes), classes, dense.name)
    twin(x)
    twin.load_float(dense)
    twin.fq_box.bypass = twin.fq_cls.bypass = True
    got_boxes, got_logits = twin(x)
    assert got_boxes.shape == boxes.shape == (2, 3 * 4 * anchors, 4)
    assert got_logits.shape == logits.shape == (2, 3 * 4 * anchors, classes)
    for got, want in ((got_boxes, boxes), (got_logits, logits)):
        got, want = keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want)
        np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max())


def test_task_report_goes_to_its_own_benchmarks_section(tmp_path):
    row = {"size_bytes": 3e6, "size_vs_float32": 0.28, "float_ops": [], "model_rss_bytes": 2**20,
           "latency_1_thread": {"p50_ms": 50.0, "p90_ms": 55.0, "threads": 1},
           "latency_2_thread": {"p50_ms": 30.0, "p90_ms": 33.0, "threads": 2}}
    report = {"machine": {"cpu": "cpu", "cores": 2, "load_average_1m_at_start": 1.0,
                          "platform": "linux", "interpreter": "ai-edge-litert 2.3.0",
                          "converter": "tensorflow 2.21.0", "date": "today"},
              "command": "python -m tflite.benchmark --tasks segmentation", "complete": True,
              "tasks": [{"task": "segmentation", "model": "deeplabv3_mobilevitv3_xs_512",
                         "size": 512, "targets": {"int8_size_vs_float32": 0.3,
                                                  "int8_p50_vs_float32": 0.6},
                         "results": {"float32": {**row, "size_vs_float32": 1.0,
                                                 "latency_1_thread": {"p50_ms": 100.0,
                                                                      "p90_ms": 110.0,
                                                                      "threads": 1}},
                                     "int8 PTQ": row}}]}
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## LiteRT benchmarks (tflite/)\n\nkept\n")
    benchmark_report.update_section(str(md), report, "out/benchmark.json")
    text = md.read_text()
    assert "kept" in text and "## LiteRT benchmarks: segmentation and detection" in text
    assert "int8 file <= 0.3x float32: 0.28x: **met**" in text
    assert "int8 p50 <= 0.6x float32 (1 thread): 0.50x: **met**" in text
    benchmark_report.update_section(str(md), report, "out/benchmark.json")  # replaced, once
    assert md.read_text().count("segmentation and detection (tflite/)") == 1
    again = md.read_text()  # rendered again: the same file (no blank line added each time)
    benchmark_report.update_section(str(md), report, "out/benchmark.json")
    assert md.read_text() == again


def test_calibration_images_of_a_detection_run(tmp_path):
    """`--calib training` of a detection run: its scene source's training images,
    resized to the input size (a classification source refused these datasets)."""
    from tflite import data as tflite_data
    from training.datasets.fashion_scenes import make_scenes
    make_scenes.export(tmp_path / "scenes", "train", 10, size=48)  # 2 held out
    config = {"task": "detection", "dataset": "scenes", "image_folder": str(tmp_path / "scenes"),
              "pipeline": {"image_size": 40}}
    images = tflite_data.calibration_images(config, 3)
    assert images.shape == (3, 40, 40, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255 and images.std() > 1
    held_out, labels = tflite_data.images(config, "eval")
    assert held_out.shape == (2, 40, 40, 3) and labels is None


def test_labels_of_a_detection_run_skip_its_background(tmp_path):
    """A detection run's labels.txt starts with 'background'; the exported detector's
    classes (the op's) do not, so its labels are the other lines."""
    from tflite import labels
    (tmp_path / "labels.txt").write_text("background\ncat\ndog\n")
    (tmp_path / "config.json").write_text(json.dumps({"task": "detection"}))
    found = labels.class_names(2, run_dir=tmp_path)
    assert found.names == ["cat", "dog"] and "without its first line" in found.source
    (tmp_path / "config.json").write_text(json.dumps({"task": "segmentation"}))
    assert labels.class_names(3, run_dir=tmp_path).names == ["background", "cat", "dog"]


@pytest.mark.slow  # minutes on 2 cores: two train.py runs of a real model, QAT tracing, int8
@pytest.mark.parametrize("task,size", [("segmentation", 64), ("detection", 160)])
def test_train_py_qat_of_a_segmentation_or_detection_run(task, size, tmp_path):
    """`train.py --task TASK` then `train.py --task TASK --qat --from RUN/model.keras`:
    the QAT twin comes from the task's own model factory (DeepLabV3 / SSDLite in its
    training wrapper), fine-tunes on the scene data, saves, and converts to full int8
    ending as the task's graph does (a class map; TFLite_Detection_PostProcess)."""
    from tflite import qat_train
    from training import train

    common = ["--task", task, "--image-folder", str(segdet_utils.scene_folder(tmp_path / "s")),
              "--image-size", str(size), "--batch-size", "2", "--epochs", "1",
              "--steps-per-epoch", "1", "--warmup-steps", "1"]
    train.main(common + ["--output-dir", str(tmp_path / "float")])
    qat_train.main(common + ["--from", str(tmp_path / "float" / "model.keras"),
                             "--output-dir", str(tmp_path / "qat")])
    config = json.loads((tmp_path / "qat" / "config.json").read_text())
    assert config["task"] == task and config["qat"]
    model = qat.load_keras_model(tmp_path / "qat" / "model.keras")
    assert qat.fake_quant_layers(model)
    graph = analyze.load(convert.convert(model, "int8", _pixels(4, size)))
    assert graph.inputs[0].dtype == "uint8" and analyze.non_builtin_ops(graph) == []
    if task == "detection":
        assert graph.ops[-1].name == f"CUSTOM:{detection.OP_NAME}"
    else:
        assert graph.outputs[0].shape == (1, size, size) and graph.outputs[0].dtype == "uint8"
