"""tflite/metadata.py and tflite/labels.py: files MediaPipe Tasks runs, with real class names.

A small CNN of keras_mobilevit layers (Preprocess, ConvNormAct: the layers the default
conversion paths fold and quantize), trained for a few seconds on the bundled
Fashion-MNIST subset, is converted once to float32 and to int8 with metadata and the
dataset's class names. MediaPipe Tasks' ImageClassifier (the C++ task Android apps run)
then classifies 48 held-out images from each file, and must agree with the LiteRT
interpreter on the same pixels. Error paths edit those files or use a tiny model.
ImageSegmenter and ObjectDetector are checked the same way on stand-in models (a few
convs; the detector ends in TFLite_Detection_PostProcess), and, slow, on a detector
that `python -m tflite.convert` writes from the segdet fixture weights.
"""

import hashlib
import json

import keras
import numpy as np
import pytest
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

import mediapipe as mp
from keras_mobilevit import layers as kmv_layers
from tflite import (analyze, android, convert, data, detection, folding, labels, metadata,
                    workers)
from training.datasets.fashion_mnist_subset.builder import CLASS_NAMES

SIZE = 32
NUM_EVAL = 48


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    """A run's config.json contents for the bundled dataset, prepared in a temporary folder."""
    config = data.default_config(SIZE)
    config["data_dir"] = str(tmp_path_factory.mktemp("tfds"))
    return config


@pytest.fixture(scope="module")
def heldout(run_config):
    """Held-out images as whole pixel values (what an app hands over), and their labels."""
    images, truth = data.images(run_config, "eval", limit=NUM_EVAL)
    return np.round(images), truth


@pytest.fixture(scope="module")
def train_images(run_config):
    images, truth = data.images(run_config, "train", limit=2048)
    return np.round(images), truth


@pytest.fixture(scope="module")
def model(train_images):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = kmv_layers.Preprocess(reverse_channels=True, name="preprocess")(inputs)
    x = kmv_layers.ConvNormAct(16, 3, strides=2, name="stem")(x)
    x = kmv_layers.ConvNormAct(48, 3, strides=2, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="small_cnn")
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*train_images, batch_size=64, epochs=6, verbose=0)
    return model


@pytest.fixture(scope="module")
def files(model, train_images, tmp_path_factory):
    """{mode: path} of the model as float32 and int8 `.tflite` with classifier metadata."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for mode in ("float32", "int8"):
        path = folder / f"small_cnn_{mode}.tflite"
        path.write_bytes(convert.convert(model, mode, train_images[0][:64]))
        metadata.write(str(path), CLASS_NAMES, name="small_cnn",
                                  description=f"Fashion-MNIST test model, {mode}", version="1")
        paths[mode] = str(path)
    return paths


def _mediapipe_scores(path, images):
    """(scores [N, classes] by class index, names of the top category) from MediaPipe."""
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path))
    scores, names = np.zeros((len(images), len(CLASS_NAMES)), np.float32), []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for i, image in enumerate(images):
            frame = mp.Image(image_format=mp.ImageFormat.SRGB,
                             data=np.ascontiguousarray(image.astype(np.uint8)))
            categories = classifier.classify(frame).classifications[0].categories
            for c in categories:
                scores[i, c.index] = c.score
            names.append(categories[0].category_name)  # sorted best first
    return scores, names


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_mediapipe_image_classifier_runs_the_file_like_litert(mode, files, model, heldout):
    images, truth = heldout
    scores, names = _mediapipe_scores(files[mode], images)
    litert = workers.isolated("predict_tflite", path=files[mode], images=images)
    # Same file, same pixels: the same scores (MediaPipe dequantizes an int8 output too)
    # and so the same top-1, named by the labels file inside the model.
    np.testing.assert_allclose(scores, litert, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(scores.argmax(1), litert.argmax(1))
    assert names == [CLASS_NAMES[i] for i in litert.argmax(1)]
    keras_top1 = model.predict(images, verbose=0).argmax(1)
    agree = np.mean(litert.argmax(1) == keras_top1)
    if mode == "float32":
        assert agree == 1.0
    else:  # int8 rounding flips near ties (2 of 48 here, both with logit margins < 0.03)
        assert agree >= 0.9, agree
    assert np.mean(scores.argmax(1) == truth) > 0.5  # a trained model, not a constant one


def test_metadata_reads_back(files):
    for mode, path in files.items():
        meta, packed = metadata.read(path)
        assert meta.name == b"small_cnn" and meta.minParserVersion == b"1.0.0"
        [subgraph] = meta.subgraphMetadata
        [image], [out] = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata
        assert image.content.contentProperties.colorSpace == metadata.fb.ColorSpaceType.RGB
        if mode == "float32":  # raw pixels in: (pixel - 0) / 1
            [unit] = image.processUnits
            assert (unit.options.mean, unit.options.std) == ([0.0], [1.0])
        else:  # uint8 bytes go in unchanged: no normalization
            assert image.processUnits is None
        assert out.name == b"logits" and b"no softmax" in out.description
        [labels_file] = out.associatedFiles
        assert labels_file.type == metadata.fb.AssociatedFileType.TENSOR_AXIS_LABELS
        assert packed == {"labels.txt": ("\n".join(CLASS_NAMES) + "\n").encode()}


def test_populating_again_replaces_metadata_and_files(files, tmp_path):
    content = open(files["int8"], "rb").read()
    meta, _ = metadata.classifier(content, [f"c{i}" for i in range(10)], name="again")
    again = metadata.populate(content, meta, {"labels.txt": b"c\n" * 10})
    model = analyze.load(again).model
    assert [m.name for m in model.metadata].count(b"TFLITE_METADATA") == 1
    assert len(model.buffers) == len(analyze.load(content).model.buffers)
    new_meta, packed = metadata.read(again)
    assert new_meta.name == b"again" and packed == {"labels.txt": b"c\n" * 10}
    with pytest.raises(metadata.MetadataError, match="not given.*labels.txt"):
        metadata.populate(content, meta, {})


def _edited(path, edit):
    """The `.tflite` at `path` with `edit(subgraph, input tensor)` applied."""
    model = analyze.load(path).model
    edit(model.subgraphs[0].tensors[model.subgraphs[0].inputs[0]])
    return analyze.pack(model)


def test_bad_requests_get_clear_errors(files):
    with pytest.raises(labels.LabelsError, match="9 class names for a model with 10 outputs"):
        metadata.classifier(files["int8"], CLASS_NAMES[:9])
    with pytest.raises(metadata.MetadataError, match="contradicts.*--output probabilities"):
        metadata.classifier(files["float32"], CLASS_NAMES, output="probabilities")
    dynamic = _edited(files["float32"], lambda t: setattr(t, "shapeSignature", [1, -1, -1, 3]))
    with pytest.raises(metadata.MetadataError, match="no fixed size"):
        metadata.classifier(dynamic, CLASS_NAMES)

    def halve_scale(tensor):
        tensor.quantization.scale = [0.5]
    with pytest.raises(metadata.MetadataError, match="does not take raw 0..255 pixels"):
        metadata.classifier(_edited(files["int8"], halve_scale), CLASS_NAMES)
    with pytest.raises(metadata.MetadataError, match="pixel_range=None"):
        metadata.classifier(files["float32"], CLASS_NAMES, pixel_range=None)


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_a_softmax_model_is_described_as_probabilities(mode):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    pixels = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    content = convert.convert(model, mode, pixels, ptq="converter")
    assert metadata.graph_output_kind(content) == "probabilities"
    meta, _ = metadata.read(metadata.populate(content, *metadata.classifier(content, "abc")))
    out = meta.subgraphMetadata[0].outputTensorMetadata[0]
    assert out.name == b"probabilities" and (out.stats.min, out.stats.max) == ([0.0], [1.0])
    with pytest.raises(metadata.MetadataError, match="contradicts.*softmax"):
        metadata.classifier(content, ["a", "b", "c"], output="logits")


# --- class names -----------------------------------------------------------------


def test_class_names_from_the_run_folder_and_the_dataset(run_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(run_config))
    found = labels.class_names(10, run_dir=run)  # the dataset's TFDS ClassLabel names
    assert found.names == CLASS_NAMES and found.source == "TFDS dataset fashion_mnist_subset"
    (run / "config.json").write_text(json.dumps({**run_config, "class_names": list("abcdefghij")}))
    assert labels.class_names(10, run_dir=run).names == list("abcdefghij")
    (run / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    found = labels.class_names(10, run_dir=run)
    assert found.names == CLASS_NAMES and found.source == str(run / "labels.txt")
    with pytest.raises(labels.LabelsError, match="10 class names for a model with 3 outputs"):
        labels.class_names(3, run_dir=run)


def test_class_names_from_image_folders_imagenet_or_placeholders(tmp_path):
    import training_utils

    folder = training_utils.make_image_folder(tmp_path / "pets", per_class=2, size=(8, 8))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"image_folder": str(folder), "dataset": "pets",
                                                 "pipeline": {"image_size": 8, "batch_size": 4}}))
    assert labels.class_names(2, run_dir=run).names == ["cat", "dog"]
    imagenet = labels.class_names(1000, weights="imagenet")
    assert imagenet.names[:2] == ["tench", "goldfish"] and not imagenet.placeholder
    none = labels.class_names(3)
    assert none.names == ["class_0", "class_1", "class_2"] and none.placeholder
    # official detection / segmentation weights: a detector's labels have no background
    coco = labels.class_names(80, weights="coco", background=True)
    assert coco.names[:2] == ["person", "bicycle"] and coco.names[-1] == "toothbrush"
    voc = labels.class_names(21, weights="voc")  # a segmenter's class 0 is the background
    assert voc.names[:2] == ["background", "aeroplane"] and voc.names[-1] == "tvmonitor"
    ade = labels.class_names(150, weights="ade20k")  # no background output
    assert ade.names[:3] == ["wall", "building", "sky"] and ade.names[-1] == "flag"
    assert ade.names[44] == "chest of drawers" and len(set(ade.names)) == 150


def test_labels_file_with_a_blank_line_is_refused(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\n\ndog\n\n")
    with pytest.raises(labels.LabelsError, match=r"line\(s\) \[2\] are empty"):
        labels.read_labels(path)
    path.write_text("cat\ndog\n\n")
    assert labels.class_names(2, labels_file=path).names == ["cat", "dog"]


# --- segmenter ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_mediapipe_image_segmenter_runs_the_file_like_litert(mode, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(
        keras.layers.Rescaling(1 / 127.5, -1)(inputs))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))  # per-pixel logits
    rng = np.random.default_rng(0)
    pixels = np.round(rng.uniform(0, 255, (6, 16, 16, 3))).astype("float32")
    path = tmp_path / f"seg_{mode}.tflite"
    path.write_bytes(convert.convert(model, mode, pixels, ptq="converter",
                                     segmentation_output="logits"))  # (1, H, W, 3) logits
    meta = metadata.write(str(path), ["sky", "road", "car"], task="segmenter", name="seg")
    assert meta.minParserVersion == "1.5.0"  # custom metadata (SEGMENTER_METADATA)
    litert = workers.isolated("predict_tflite", path=str(path), images=pixels)
    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           output_category_mask=True,
                                           output_confidence_masks=True)
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        assert segmenter.labels == ["sky", "road", "car"]
        for image, want in zip(pixels, litert):
            result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                data=np.ascontiguousarray(image.astype(np.uint8))))
            np.testing.assert_array_equal(result.category_mask.numpy_view()[..., 0],
                                          want.argmax(-1))
            confidence = np.concatenate([m.numpy_view() for m in result.confidence_masks], -1)
            softmax = np.exp(want) / np.exp(want).sum(-1, keepdims=True)  # metadata asks for it
            np.testing.assert_allclose(confidence, softmax, atol=1e-4)


# --- python -m tflite.convert on a training run ---------------------------------------


@pytest.fixture(scope="module")
def tiny_run(run_config, tmp_path_factory):
    """A run folder trained by the tiny training config on the bundled data (a few steps)."""
    import training_utils

    out = tmp_path_factory.mktemp("tiny") / "run"
    result = training_utils.run_script(
        "tiny", "--data-dir", run_config["data_dir"], "--image-size", 16, "--batch-size", 16,
        "--epochs", 1, "--steps-per-epoch", 8, "--output-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_trained_run_converts_to_int8_with_its_class_names_and_logits(tiny_run, tmp_path):
    out = tmp_path / "out"
    assert convert.main([str(tiny_run / "model.keras"), "--quant", "int8", "--num-calib", "16",
                         "-o", str(out), "--name", "tiny"]) == 0
    path = str(out / "tiny_int8.tflite")
    meta, packed = metadata.read(path)
    assert packed["labels.txt"].decode().splitlines() == CLASS_NAMES
    assert (out / "tiny_int8.labels.txt").read_text().splitlines() == CLASS_NAMES
    spec = json.loads((out / "tiny_int8.json").read_text())
    assert spec["output_kind"] == "logits" and spec["output"]["meaning"].startswith("class logits")
    assert spec["output"]["dequantize"].startswith("logit = ")
    assert spec["labels_source"] == str(tiny_run / "labels.txt")  # written by training
    assert spec["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert meta.subgraphMetadata[0].outputTensorMetadata[0].name == b"logits"
    images = np.round(data.images(data.run_config(tiny_run), "eval", limit=8)[0])
    scores, names = _mediapipe_scores(path, images)
    litert = workers.isolated("predict_tflite", path=path, images=images)
    assert names == [CLASS_NAMES[i] for i in litert.argmax(1)]


def test_output_probabilities_adds_a_softmax(tiny_run, tmp_path):
    model = str(tiny_run / "model.keras")
    for output in ("logits", "probabilities"):
        assert convert.main([model, "--quant", "float32", "-o", str(tmp_path), "--name", output]
                            + (["--output", output] if output == "probabilities" else [])) == 0
    spec = json.loads((tmp_path / "probabilities_float32.json").read_text())
    assert spec["output_kind"] == "probabilities" and "softmax" in spec["output"]["meaning"]
    meta, _ = metadata.read(str(tmp_path / "probabilities_float32.tflite"))
    assert meta.subgraphMetadata[0].outputTensorMetadata[0].name == b"probabilities"
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    logits, probabilities = (
        workers.isolated("predict_tflite", path=str(tmp_path / f"{o}_float32.tflite"),
                         images=pixels) for o in ("logits", "probabilities"))
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probabilities, softmax, atol=1e-6)


def test_logits_asked_of_a_softmax_model_is_refused():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
    assert convert.output_kind(model) == "probabilities"
    assert convert.with_output(model, "probabilities") is model
    with pytest.raises(ValueError, match="output='logits' contradicts the model.*'head'"):
        convert.convert(model, "float32", output="logits")


def test_fold_preprocessing_of_a_model_with_an_unnamed_input():
    inputs = keras.Input((8, 8, 3))  # its clone gets another name
    x = kmv_layers.ConvNormAct(4, 3, strides=2, name="stem")(kmv_layers.Preprocess()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    folded = folding.fold_preprocessing(model)
    np.testing.assert_allclose(folded.predict(pixels, verbose=0),
                               model.predict(pixels, verbose=0), atol=1e-5)


# --- detector ------------------------------------------------------------------------

DET_SIZE, DET_LABELS = 32, ["cat", "dog", "bird"]  # the op's classes 0, 1, 2 (no background)


def _det_pixels(n, seed=0):
    return np.round(np.random.default_rng(seed).uniform(0, 255, (n, DET_SIZE, DET_SIZE, 3)))


@pytest.fixture(scope="module")
def detector_files(tmp_path_factory):
    """{mode: path} of a stand-in SSD (a few convs) ending in TFLite_Detection_PostProcess,
    float32 and int8, with detector metadata."""
    import segdet_utils

    model = segdet_utils.tiny_detector(DET_SIZE, classes=len(DET_LABELS) + 1)
    spec = detection.PostprocessSpec(num_classes=len(DET_LABELS), score_threshold=0.3,
                                     iou_threshold=0.5, max_detections=10)
    folder, paths = tmp_path_factory.mktemp("detector"), {}
    for mode in ("float32", "int8"):
        path = str(folder / f"det_{mode}.tflite")
        with open(path, "wb") as f:
            f.write(convert.convert(model, mode, _det_pixels(16), ptq="converter",
                                    postprocess=spec, anchors=segdet_utils.tiny_anchors()))
        metadata.write(path, DET_LABELS, task="detector", name="det", version="1")
        paths[mode] = path
    return paths


def _pixel_boxes(boxes, height, width):
    """MediaPipe's pixel boxes (origin_x, origin_y, width, height) of the op's (ymin, xmin,
    ymax, xmax) fractions, computed as its DetectionTransformationCalculator does: float32
    products truncated to int, clamped to [0, size]."""
    ymin, xmin, ymax, xmax = np.asarray(boxes, np.float32).T

    def pixels(value, size):
        return np.clip(np.trunc(value * np.float32(size)), 0, size).astype(int)

    return np.stack([pixels(xmin, width), pixels(ymin, height), pixels(xmax - xmin, width),
                     pixels(ymax - ymin, height)], 1)


def _litert_detections(path, images, labels):
    """Per image (pixel boxes, class names, scores) from the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    found = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                               image[None].astype(interpreter.get_input_details()[0]["dtype"]))
        interpreter.invoke()
        boxes, classes, scores, count = (interpreter.get_tensor(d["index"])[0]
                                         for d in interpreter.get_output_details())
        n = int(count)  # count is (1,): one value per image
        found.append((_pixel_boxes(boxes[:n], *image.shape[:2]),
                      [labels[int(c)] for c in classes[:n]], scores[:n]))
    return found


def _mediapipe_detections(path, images):
    """Per image (pixel boxes, category names, scores) from MediaPipe's ObjectDetector."""
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=path))
    found = []
    with vision.ObjectDetector.create_from_options(options) as detector:
        for image in images:
            result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                              data=np.ascontiguousarray(image.astype(np.uint8))))
            boxes = [(d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.width,
                      d.bounding_box.height) for d in result.detections]
            assert all(len(d.categories) == 1 for d in result.detections)
            found.append((np.array(boxes, int).reshape(-1, 4),
                          [d.categories[0].category_name for d in result.detections],
                          np.array([d.categories[0].score for d in result.detections])))
    return found


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_mediapipe_object_detector_runs_the_file_like_litert(mode, detector_files):
    images = _det_pixels(8, seed=1)
    # the labels MediaPipe names its categories by are the file's own
    labels = metadata.read(detector_files[mode])[1]["labels.txt"].decode().splitlines()
    assert labels == DET_LABELS
    want = _litert_detections(detector_files[mode], images, DET_LABELS)
    _assert_same_detections(_mediapipe_detections(detector_files[mode], images), want)
    detected = [name for _, names, _ in want for name in names]
    assert len(detected) >= 40 and len(set(detected)) >= 2, detected  # not a degenerate case


def _assert_same_detections(got, want):
    """Same pixel boxes, category names and scores, in the same order, on every image."""
    for (boxes, names, scores), (want_boxes, want_names, want_scores) in zip(got, want):
        np.testing.assert_array_equal(boxes, want_boxes)
        assert names == want_names
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)


def _found_within_a_pixel(got, want):
    """How many of `want`'s detections `got` has (same name, box within a pixel), of how many."""
    found = total = 0
    for (boxes, names, _), (want_boxes, want_names, _) in zip(got, want):
        names = np.array(names)
        for box, name in zip(want_boxes, want_names):
            same = boxes[names == name]
            found += bool(same.size and np.abs(same - box).max(axis=1).min() <= 1)
            total += 1
    return found, total


def test_detector_metadata_reads_back(detector_files):
    meta, packed = metadata.read(detector_files["int8"])
    assert meta.name == b"det" and meta.minParserVersion == b"1.0.0"
    [subgraph] = meta.subgraphMetadata
    [image] = subgraph.inputTensorMetadata
    assert image.content.contentProperties.colorSpace == metadata.fb.ColorSpaceType.RGB
    assert image.processUnits is None  # uint8 camera bytes in
    outputs = subgraph.outputTensorMetadata
    assert [t.name.decode() for t in outputs] == list(metadata.DETECTOR_OUTPUTS)
    box = outputs[0].content.contentProperties
    # (ymin, xmin, ymax, xmax) rows: left is element 1, top 0, right 3, bottom 2
    assert list(box.index) == [1, 0, 3, 2]
    assert box.type == metadata.fb.BoundingBoxType.BOUNDARIES
    assert box.coordinateType == metadata.fb.CoordinateType.RATIO
    [labels_file] = outputs[1].associatedFiles
    assert labels_file.type == metadata.fb.AssociatedFileType.TENSOR_VALUE_LABELS
    assert packed == {"labels.txt": b"cat\ndog\nbird\n"}
    unit = metadata.read(detector_files["float32"])[0].subgraphMetadata[0].inputTensorMetadata[0]
    assert (unit.processUnits[0].options.mean, unit.processUnits[0].options.std) == ([0.0], [1.0])


def test_detector_metadata_refuses_what_it_cannot_describe(detector_files):
    inputs = keras.Input((8, 8, 3))
    classifier = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(metadata.MetadataError, match="no such op.*task='classifier'"):
        metadata.detector(convert.convert(classifier, "float32"), DET_LABELS)
    with pytest.raises(labels.LabelsError, match="no background line.*4 class names"):
        metadata.detector(detector_files["int8"], ["background"] + DET_LABELS)
    dynamic = _edited(detector_files["float32"],
                      lambda t: setattr(t, "shapeSignature", [1, -1, -1, 3]))
    with pytest.raises(metadata.MetadataError, match="no fixed size"):
        metadata.detector(dynamic, DET_LABELS)
    model = analyze.load(detector_files["float32"]).model
    outputs = [int(i) for i in model.subgraphs[0].outputs]
    model.subgraphs[0].outputs = [outputs[i] for i in (2, 1, 0, 3)]  # scores first
    with pytest.raises(metadata.MetadataError, match="order boxes, classes, scores, count"):
        metadata.detector(analyze.pack(model), DET_LABELS)


def test_android_artifacts_of_a_detector_carry_its_metadata(detector_files, tmp_path):
    path = tmp_path / "det_int8.tflite"
    path.write_bytes(open(detector_files["int8"], "rb").read())
    labels_file = tmp_path / "labels.txt"  # as a detection run writes it: background first
    labels_file.write_text("background\ncat\ndog\nbird\n")
    names = labels.class_names(3, labels_file=labels_file, background=True)
    assert names.names == DET_LABELS and "background line dropped" in names.source
    spec = android.write_artifacts(str(path), labels=names, quantization="int8", name="det")
    assert "outputs location, category, score, number of detections" in spec["metadata"]
    assert (tmp_path / "det_int8.labels.txt").read_text().splitlines() == DET_LABELS
    meta, packed = metadata.read(str(path))
    assert meta.name == b"det" and packed["labels.txt"].decode().splitlines() == DET_LABELS
    with pytest.raises(labels.LabelsError, match="4 class names for a model with 3"):
        labels.class_names(3, labels_file=labels_file)  # a classifier's labels keep every line
    labels_file.write_text("sky\ncat\ndog\nbird\n")
    with pytest.raises(labels.LabelsError, match="4 class names for a model with 3"):
        labels.class_names(3, labels_file=labels_file, background=True)


@pytest.mark.slow  # about 4 minutes on 2 cores (int8 PTQ of a real SSDLite)
def test_convert_command_line_writes_a_detector_mediapipe_runs(fixtures_path, tmp_path):
    """`python -m tflite.convert ssdlite:...` on the segdet fixture weights (confident,
    varied detections), labels given as a detection run writes them (background first)."""
    size, fixture = 160, fixtures_path / "segdet" / "ssdlite_mobilevit_v2_050"
    with np.load(f"{fixture}.npz") as f:
        images = np.round(keras.ops.convert_to_numpy(
            keras.ops.image.resize(f["input_nhwc"] * 255.0, (size, size))).clip(0, 255))
    np.savez(tmp_path / "images.npz", images=images)
    names = [f"object_{i}" for i in range(1, 81)]
    (tmp_path / "labels.txt").write_text("\n".join(["background"] + names) + "\n")
    out = tmp_path / "out"
    assert convert.main(["ssdlite:mobilevitv2_050", "--weights", f"{fixture}.pt",
                         "--input-size", str(size), "--quant", "float32", "int8",
                         "--calib", str(tmp_path / "images.npz"), "--num-calib", "2",
                         "--labels", str(tmp_path / "labels.txt"), "-o", str(out),
                         "--name", "det"]) == 0
    for mode in ("float32", "int8"):
        path = str(out / f"det_{mode}.tflite")
        spec = json.loads((out / f"det_{mode}.json").read_text())
        assert spec["task"] == "detection" and "number of detections" in spec["metadata"]
        assert metadata.read(path)[1]["labels.txt"].decode().splitlines() == names
        want = _litert_detections(path, images, names)
        got = _mediapipe_detections(path, images)
        found, total = _found_within_a_pixel(got, want)
        print(f"SSDLite {mode}: MediaPipe found {found} of LiteRT's {total} detections "
              f"(same name, box within a pixel)")
        assert total >= 100 and len({n for _, row, _ in want for n in row}) >= 20
        if mode == "float32":
            _assert_same_detections(got, want)
        else:  # MediaPipe's bundled TFLite rounds some int8 kernels differently
            assert found >= 0.95 * total
