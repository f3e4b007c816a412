"""Held-out accuracy of a segmentation or detection model, Keras or `.tflite`, with the
training code's own metrics, and how far a `.tflite` agrees with the Keras model.

Segmentation: mean IoU of class maps (Keras' MeanIoU as training compiles it, pixels
labelled 255 ignored) and the share of pixels whose class equals the Keras argmax.
Detection: COCO mAP@[.5:.95] and mAP@.5 (pycocotools, `training/segdet/detection.py`)
of the Keras post-processing or of LiteRT's TFLite_Detection_PostProcess outputs
(boxes ymin, xmin, ymax, xmax normalized; classes = label - 1; count), and the share of
the Keras model's detections above a 0.5 score that the `.tflite` finds: same class,
every box coordinate within a pixel.

Example:
    >>> images, truth = data.task_examples(config)              # held-out split
    >>> keras_metrics, score = scorer("segmentation", model, images, truth, 11)
    >>> score(workers.isolated("predict_outputs", path="m_int8.tflite", images=images))
    {'mean_iou': 0.61, 'pixel_agreement_with_float_keras': 0.99}
"""

import keras
import numpy as np

from training.segdet import detection, segmentation

MIN_SCORE = 0.5  # Keras detections above this score are the ones matched
TOLERANCE_PX = 1.0  # every box coordinate closer than this, in input pixels


def class_maps(model, images, chunk=32):
    """[N, H, W] argmax class maps of a Keras segmenter's logits (`chunk` images a call)."""
    maps = [np.argmax(model.predict(images[i:i + chunk], verbose=0), axis=-1)
            for i in range(0, len(images), chunk)]
    return np.concatenate(maps).astype(np.int32)


def mean_iou(maps, masks, num_classes, chunk=32):
    """Training's mean IoU (`segmentation.mean_iou`) of class maps [N, H, W] against
    masks [N, H, W] (255 = ignore)."""
    metric = segmentation.mean_iou(num_classes)
    for i in range(0, len(masks), chunk):
        # the metric takes logits (it argmaxes them): a one-hot map has the same argmax
        metric.update_state(masks[i:i + chunk],
                            keras.ops.one_hot(np.asarray(maps[i:i + chunk], np.int32),
                                              num_classes))
    return float(metric.result())


def tflite_detections(outputs, size):
    """Per image (boxes pixel x0, y0, x1, y1, labels 1..K, scores) of the four outputs
    of a TFLite_Detection_PostProcess graph over N images (`latency.predict_outputs`:
    boxes [N, D, 4] normalized ymin, xmin, ymax, xmax; classes [N, D] = label - 1;
    scores [N, D]; count [N]) on size x size inputs: what `predict_boxes` gives."""
    boxes, classes, scores, counts = outputs
    found = []
    for b, c, s, n in zip(boxes, classes, scores, np.asarray(counts).reshape(-1).astype(int)):
        found.append((detection.yxyx_to_pixel_xyxy(b[:n], size),
                      np.asarray(c[:n]).astype(np.int64) + 1, np.asarray(s[:n])))
    return found


def inside_image(detections, size, tolerance=TOLERANCE_PX):
    """`detections` (per image: pixel xyxy boxes, labels, scores) without the boxes that
    reach more than `tolerance` pixels past a size x size image. A box decoded far past
    the image (an under-trained detector's, several times its height) moves by many
    pixels for one int8 step of its log-size; what an app draws is clipped anyway.

    Example:
        >>> inside_image([(np.array([[0, 0, 10, 10], [-50, 0, 10, 300]]), [1, 2], [.9, .8])], 160)
        [(array([[ 0,  0, 10, 10]]), array([1]), array([0.9]))]
    """
    kept = []
    for boxes, labels, scores in detections:
        boxes = np.asarray(boxes).reshape(-1, 4)
        keep = (boxes.min(axis=1) >= -tolerance) & (boxes.max(axis=1) <= size + tolerance)
        kept.append((boxes[keep], np.asarray(labels)[keep], np.asarray(scores)[keep]))
    return kept


def matched_detections(reference, found, min_score=MIN_SCORE, tolerance=TOLERANCE_PX):
    """(how many of `reference`'s detections above `min_score` `found` has, of the same
    label with every box coordinate closer than `tolerance` pixels; how many there are).
    Both: per image (boxes pixel xyxy, labels, scores)."""
    matched = total = 0
    for (boxes, labels, scores), (got_boxes, got_labels, _) in zip(reference, found):
        confident = np.asarray(scores) > min_score
        for box, label in zip(np.asarray(boxes)[confident], np.asarray(labels)[confident]):
            same = got_boxes[got_labels == label]
            total += 1
            matched += bool(len(same)) and bool(np.abs(same - box).max(axis=1).min() < tolerance)
    return matched, total


def detection_agreement(keras_model, images, outputs):
    """How many of `keras_model`'s confident detections on `images` a detector `.tflite`'s
    `outputs` (`latency.predict_outputs`) find, as `scorer` counts them against the float
    model: with `keras_model` the int8 Keras model the file was converted from (the
    calibrated QAT twin of the same raw-output network, or a QAT model) it shows what
    conversion itself changed.

    (No segmentation counterpart: a segmenter's twin ends in a fake-quantized resize
    that the exported graph, which resizes in int8 after its network, does not have.)

    Example:
        >>> detection_agreement(qat_model, images, outputs)
        {'int8_keras_detections_matched': 0.97, 'confident_int8_keras_detections': 210}
    """
    matched, total = matched_detections(detection.predict_boxes(keras_model, images),
                                        tflite_detections(outputs, images.shape[1]))
    return {"int8_keras_detections_matched": matched / total if total else float("nan"),
            "confident_int8_keras_detections": total}


def scorer(task, model, images, truth, num_classes):
    """(the float Keras `model`'s metrics on `images`, a function from a `.tflite`'s
    outputs on the same images (`latency.predict_outputs`) to its metrics and its
    agreement with the Keras model).

    truth: `data.task_examples`'s (masks, or per-image boxes and labels)."""
    if task == "segmentation":
        reference = class_maps(model, images)

        def score(outputs):
            maps = outputs[0]
            return {"mean_iou": mean_iou(maps, truth, num_classes),
                    "pixel_agreement_with_float_keras": float(np.mean(maps == reference))}

        return {"mean_iou": mean_iou(reference, truth, num_classes)}, score
    if task != "detection":
        raise ValueError(f"task must be 'segmentation' or 'detection', got {task!r}")
    size = images.shape[1]
    sizes = [images.shape[1:3]] * len(images)
    reference = detection.predict_boxes(model, images)

    def score(outputs):
        found = tflite_detections(outputs, size)
        matched, total = matched_detections(reference, found)
        inside, total_inside = matched_detections(inside_image(reference, size), found)
        return {**detection.coco_metrics(truth, found, sizes),
                "keras_detections_matched": matched / total if total else float("nan"),
                "confident_keras_detections": total,
                # a diagnosis, not the target: the float detections inside the image
                "keras_detections_inside_matched":
                    inside / total_inside if total_inside else float("nan"),
                "confident_keras_detections_inside": total_inside}

    return detection.coco_metrics(truth, reference, sizes), score
