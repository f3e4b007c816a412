"""Detection training parts: COCO-folder source and its errors, SSD crop/flip keeping
boxes on their objects, anchor targets, the SSD loss with hard-negative mining,
pycocotools mAP and the box figure."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from keras_mobilevit import box_coder
from segdet_utils import crash_and_resume
from training import models, train
from training.data import DataError
from training.datasets.fashion_scenes import make_scenes
from training.segdet import detection, factory, figures, joint_augment, sources


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_scenes.export(root, "test", 6, size=48)
    return root


def test_coco_folder_reads_boxes_and_labels(coco_folder):
    source = sources.open_scene_source("detection", image_folder=coco_folder)
    assert source.class_names == ["background"] + make_scenes.CLASS_NAMES
    examples = {}
    for split in (source.train_split, source.eval_split):
        for path, boxes, labels in source.splits[split]:
            examples[int(path[-10:-4])] = (boxes, labels)
    assert len(examples) == 6
    for index, (boxes, labels) in examples.items():
        _, _, coco_boxes, coco_labels = make_scenes.scene("test", index, 48)
        x, y, w, h = coco_boxes.T / 48
        np.testing.assert_allclose(boxes, np.stack([y, x, y + h, x + w], -1), atol=1e-6)
        np.testing.assert_array_equal(labels, coco_labels)
    example = next(iter(source.read(source.train_split)))
    assert example["image"].shape == (48, 48, 3) and example["boxes"].dtype == tf.float32


def _broken(root, coco_folder, change):
    root.mkdir()
    (root / "images").symlink_to(coco_folder / "images")
    coco = json.loads((coco_folder / "annotations.json").read_text())
    text = change(coco)
    (root / "annotations.json").write_text(json.dumps(coco) if text is None else text)
    return root


def _set_first(key, value):
    def change(coco):
        coco["annotations"][0][key] = value
    return change


@pytest.mark.parametrize("change,message", [
    (lambda coco: "", "is empty"),
    (lambda coco: "{not json", "is not valid JSON"),
    (lambda coco: "[]", "is not COCO JSON"),
    (lambda coco: coco.pop("categories") and None, "is not COCO JSON"),
    (lambda coco: coco.update(images=[]), "lists no images"),
    (_set_first("bbox", [3, 3, 0, 5]), "has zero area"),
    (_set_first("bbox", [40, 3, 20, 5]), "lies outside its image"),
    (_set_first("bbox", [-5, 3, 4, 5]), "lies outside its image"),
    (_set_first("category_id", 42), "category_id 42 is not in the label map"),
    (_set_first("image_id", 999), "image_id 999 is not in 'images'"),
    (lambda coco: coco["images"][0].update(file_name="gone.png"), "image files missing"),
])
def test_coco_folder_errors(tmp_path, coco_folder, change, message):
    root = _broken(tmp_path / "broken", coco_folder, change)
    with pytest.raises(DataError, match=message):
        sources.open_scene_source("detection", image_folder=root)


def test_no_annotations_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no COCO annotations"):
        sources.open_scene_source("detection", image_folder=tmp_path)


def _painted(boxes, height=60, width=80):
    """An image black except for boxes painted in their own grey level (index * 40 + 40)."""
    image = np.zeros((height, width, 3), np.uint8)
    for k, (ymin, xmin, ymax, xmax) in enumerate(boxes):
        image[int(ymin * height):int(ymax * height), int(xmin * width):int(xmax * width)] = 40 * k + 40
    return image


@pytest.mark.parametrize("seed", range(6))
def test_ssd_crop_and_flip_keep_boxes_on_their_objects(seed):
    tf.random.set_seed(seed)
    boxes = np.array([[0.1, 0.1, 0.4, 0.3], [0.5, 0.55, 0.9, 0.95], [0.2, 0.6, 0.45, 0.8]],
                     np.float32)
    image = tf.constant(_painted(boxes))
    cropped, kept, labels = joint_augment.ssd_crop(image, tf.constant(boxes),
                                                   tf.constant([1, 2, 3], tf.int32))
    flipped, kept = joint_augment.flip_boxes(cropped, kept)
    picture, kept, labels = flipped.numpy(), kept.numpy(), labels.numpy()
    height, width = picture.shape[:2]
    assert len(kept) == len(labels) and (kept >= 0).all() and (kept <= 1).all()
    for (ymin, xmin, ymax, xmax), label in zip(kept, labels):
        centre = picture[int((ymin + ymax) / 2 * height), int((xmin + xmax) / 2 * width)]
        assert centre[0] == 40 * (label - 1) + 40  # the box still sits on its own object


def test_anchor_targets_match_and_encode():
    anchors = np.array([[0.25, 0.25, 0.5, 0.5],    # exactly box 1
                        [0.75, 0.75, 0.2, 0.2],    # poor overlap with box 2, but its best
                        [0.5, 0.5, 0.1, 0.1],      # nothing
                        [0.3, 0.3, 0.5, 0.5]],     # IoU 0.68 with box 1
                       np.float32)
    boxes = tf.constant([[0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 1.0, 1.0]])  # yxyx
    targets = detection.match_anchors(boxes, tf.constant([3, 7]), anchors).numpy()
    np.testing.assert_array_equal(targets[:, 4], [3, 7, 0, 3])
    np.testing.assert_allclose(targets[0, :4], 0, atol=1e-6)
    # box 2: centre (0.8, 0.8), size 0.4 vs anchor centre 0.75, size 0.2
    np.testing.assert_allclose(targets[1, :4], [0.05 / 0.2 / 0.1, 0.05 / 0.2 / 0.1,
                                                np.log(2) / 0.2, np.log(2) / 0.2], rtol=1e-5)
    empty = detection.match_anchors(tf.zeros([0, 4]), tf.zeros([0], tf.int32), anchors)
    np.testing.assert_array_equal(empty.numpy()[:, 4], 0)


def _reference_ssd_loss(y_true, y_pred, ratio=3):
    """The multibox loss written out with numpy loops (cvnets' definition)."""
    total_cls, total_box, positives = 0.0, 0.0, 0
    for truth, pred in zip(y_true, y_pred):
        labels, logits = truth[:, 4].astype(int), pred[:, 4:]
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        pos = labels > 0
        negatives = [a for a in np.argsort(log_p[:, 0]) if not pos[a]][:ratio * pos.sum()]
        chosen = list(np.flatnonzero(pos)) + negatives
        total_cls += -sum(log_p[a, labels[a]] for a in chosen)
        diff = np.abs(pred[pos, :4] - truth[pos, :4])
        total_box += np.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).sum()
        positives += pos.sum()
    return (total_cls + total_box) / max(positives, 1)


def test_ssd_loss_mines_three_negatives_per_positive():
    rng = np.random.default_rng(0)
    y_pred = rng.normal(size=(3, 20, 4 + 5)).astype(np.float32)
    y_true = np.zeros((3, 20, 5), np.float32)
    y_true[..., :4] = rng.normal(size=(3, 20, 4))
    y_true[0, [2, 5], 4] = [1, 4]
    y_true[1, 7, 4] = 2
    # image 2 has no positives: it mines no negatives, so it adds nothing
    loss = float(detection.SSDLoss()(y_true, y_pred))
    np.testing.assert_allclose(loss, _reference_ssd_loss(y_true, y_pred), rtol=1e-5)
    y_pred[2] += 10 * rng.normal(size=(20, 9)).astype(np.float32)
    np.testing.assert_allclose(float(detection.SSDLoss()(y_true, y_pred)), loss, rtol=1e-5)


def test_coco_metrics_with_pycocotools():
    truths = [(np.array([[10, 10, 30, 40], [50, 50, 70, 60]]), np.array([1, 2])),
              (np.array([[0, 0, 20, 20]]), np.array([1]))]
    sizes = [(80, 80)] * 2
    perfect = [(b, lab, np.ones(len(lab))) for b, lab in truths]
    assert detection.coco_metrics(truths, perfect, sizes) == {"mAP": 1.0, "mAP50": 1.0}
    shifted = [(b + np.array([4, 0, 4, 0]), lab, np.ones(len(lab))) for b, lab in truths]
    metrics = detection.coco_metrics(truths, shifted, sizes)
    assert metrics["mAP50"] == 1.0 and 0.2 < metrics["mAP"] < 0.9  # IoU 0.6-0.8
    wrong_class = [(b, 3 - lab, np.ones(len(lab))) for b, lab in truths]
    assert detection.coco_metrics(truths, wrong_class, sizes)["mAP"] == 0.0
    nothing = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))] * 2
    assert detection.coco_metrics(truths, nothing, sizes) == {"mAP": 0.0, "mAP50": 0.0}


def test_detection_pipelines_shapes(coco_folder):
    source = sources.open_scene_source("detection", image_folder=coco_folder)
    anchors = np.array([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], np.float32)
    settings = detection.DetectionSettings(image_size=32, batch_size=2)
    images, targets = next(iter(detection.train_dataset(source, settings, anchors=anchors)))
    assert images.shape == (2, 32, 32, 3) and targets.shape == (2, 2, 5)
    count = source.num_examples(source.train_split)
    batches = list(detection.eval_dataset(source, settings, split=source.train_split,
                                          with_truth=True, batch_size=4))
    labels = np.concatenate([lab.numpy() for _, _, lab in batches])
    assert len(labels) == -(-count // 4) * 4 and (labels[count:] == 0).all()
    assert (labels[:count] > 0).any(axis=1).all()


def test_box_figure_is_written(tmp_path):
    truth = [(np.array([[2, 2, 10, 12]]), np.array([1]))]
    predicted = [(np.array([[3, 2, 10, 12], [0, 0, 4, 4]]), np.array([1, 2]),
                  np.array([0.9, 0.1]))]
    path = tmp_path / "boxes.png"
    figures.save_box_figure(path, np.zeros((1, 16, 16, 3)), truth, predicted, ["bg", "a", "b"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # minutes on 2 cores (a whole crash + resume run); `pytest -m slow` runs it
def test_train_detection_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    """`train.py --task detection` on a tiny scene folder: crash, resume, COCO mAP, the
    saved detector with its post-processing."""
    out, summary = crash_and_resume("detection", 160, tmp_path, monkeypatch, capsys)
    assert 0 <= summary["metrics"]["mAP"] <= summary["metrics"]["mAP50"] <= 1
    detector = models.load_model(out / "model.keras")
    outputs = detector.predict(np.zeros((1, 160, 160, 3), np.float32), verbose=0)
    assert {"boxes", "scores", "classes", "num_detections"} <= set(outputs)
    assert outputs["class_logits"].shape[-1] == 11


def test_without_ssd_crop_targets_are_the_whole_images_boxes(coco_folder):
    """ssd_crop=False (the bundled scenes' default): every positive anchor decodes to one
    of its image's true boxes, or that box mirrored (the flip), nothing cropped."""
    source = sources.open_scene_source("detection", image_folder=coco_folder)
    settings = detection.DetectionSettings(image_size=48, batch_size=6, photometric=False,
                                           ssd_crop=False)
    anchors = np.array([[x, y, w, w] for x in (0.25, 0.5, 0.75) for y in (0.25, 0.5, 0.75)
                        for w in (0.2, 0.3, 0.45)], np.float32)
    truth = [np.asarray(e["boxes"]) for e in source.read(source.train_split)]
    mirrored = [b[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, 1, 0, 1] for b in truth]
    allowed = np.concatenate(truth + mirrored)[:, [1, 0, 3, 2]]  # xyxy
    ds = detection.train_dataset(source, settings, anchors=anchors)
    for _, targets in ds.take(3).as_numpy_iterator():
        positive = targets[..., 4] > 0
        assert positive.any(axis=1).all()  # no image lost its boxes
        boxes = box_coder.center_to_corner(box_coder.decode(
            targets[positive][:, :4], np.broadcast_to(anchors, targets.shape[:2] + (4,))[
                positive]))
        error = np.abs(np.asarray(boxes)[:, None] - allowed[None]).max(-1).min(-1)
        assert error.max() < 1e-5


def test_bundled_scenes_alone_default_to_no_ssd_crop_and_match_iou_0_4():
    """The official recipe (SSD crop, matching at IoU 0.5) everywhere but on the bundled
    scenes; explicit flags win on both."""
    recipe = SimpleNamespace(image_size=160, batch_size=16)

    def settings(dataset, image_folder=None, **flags):
        config = SimpleNamespace(recipe=recipe, segdet=factory.SegDetOptions(**flags),
                                 dataset=dataset, image_folder=image_folder,
                                 model="mobilevitv3_xxs", cache="auto")
        return factory.detection_settings(config)

    bundled = settings(sources.DEFAULT_DATASET)
    assert not bundled.ssd_crop and bundled.iou_threshold == 0.4
    for official in (settings("coco/2017"), settings(None, "folder")):
        assert official.ssd_crop and official.iou_threshold == 0.5
    flagged = settings(sources.DEFAULT_DATASET, ssd_crop=True, match_iou=0.5)
    assert flagged.ssd_crop and flagged.iou_threshold == 0.5
    flagged = settings("coco/2017", ssd_crop=False, match_iou=0.6)
    assert not flagged.ssd_crop and flagged.iou_threshold == 0.6
    parse = train.parse_args
    assert parse(["--task", "detection"])[0].segdet.ssd_crop is None
    assert parse(["--ssd-crop"])[0].segdet.ssd_crop is True
    assert parse(["--no-ssd-crop"])[0].segdet.ssd_crop is False
    assert parse(["--match-iou", "0.45"])[0].segdet.match_iou == 0.45
