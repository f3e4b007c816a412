"""SSD box coding: encode / decode against anchors, IoU, and the SSD anchor matcher.

Written once for the model (decoding), the training targets (matching + encoding) and
the TFLite export (the variances). Everything is keras.ops, so it runs on numpy arrays
and on any backend's tensors, inside or outside a graph.

Conventions (as the official cvnets code): boxes are normalised to [0, 1] of the input;
anchors are (cx, cy, w, h); ground truth and detections are corner form (x1, y1, x2, y2);
regressions are (t_cx, t_cy, t_w, t_h) with
    t_cx = (g_cx - a_cx) / a_w / CENTER_VARIANCE,  t_w = log(g_w / a_w) / SIZE_VARIANCE.

Example:
    >>> t = encode(gt_cxcywh, anchors)              # [..., A, 4]
    >>> boxes = decode(t, anchors)                   # back to cx, cy, w, h
    >>> targets, labels = match(gt_xyxy, gt_labels, anchors)
"""

from keras import ops

CENTER_VARIANCE = 0.1  # official model.detection.ssd.center_variance / matcher.ssd.*
SIZE_VARIANCE = 0.2
MATCH_IOU_THRESHOLD = 0.5  # matcher.ssd.iou_threshold in every official SSD COCO config
IOU_EPSILON = 1e-5  # added to the IoU denominator by the official matcher


def center_to_corner(boxes):
    """(cx, cy, w, h) -> (x1, y1, x2, y2) on the last axis."""
    boxes = ops.convert_to_tensor(boxes)
    half = boxes[..., 2:] * 0.5
    return ops.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def corner_to_center(boxes):
    """(x1, y1, x2, y2) -> (cx, cy, w, h) on the last axis."""
    boxes = ops.convert_to_tensor(boxes)
    return ops.concatenate([(boxes[..., :2] + boxes[..., 2:]) * 0.5,
                            boxes[..., 2:] - boxes[..., :2]], axis=-1)


def encode(boxes, anchors, center_variance=CENTER_VARIANCE, size_variance=SIZE_VARIANCE):
    """Centre-form boxes [..., A, 4] -> regression targets against anchors [A, 4].

    Example:
        >>> encode(anchors, anchors)                 # all zeros
    """
    boxes = ops.convert_to_tensor(boxes, "float32")
    anchors = ops.cast(ops.convert_to_tensor(anchors), boxes.dtype)
    centers = (boxes[..., :2] - anchors[..., :2]) / anchors[..., 2:] / center_variance
    sizes = ops.log(boxes[..., 2:] / anchors[..., 2:]) / size_variance
    return ops.concatenate([centers, sizes], axis=-1)


def decode(regressions, anchors, center_variance=CENTER_VARIANCE, size_variance=SIZE_VARIANCE):
    """Regressions [..., A, 4] -> centre-form boxes (cx, cy, w, h), normalised, not clipped.

    Example:
        >>> boxes_xyxy = center_to_corner(decode(model_out["box_regressions"], anchors))
    """
    regressions = ops.convert_to_tensor(regressions)
    anchors = ops.cast(ops.convert_to_tensor(anchors), regressions.dtype)
    centers = regressions[..., :2] * center_variance * anchors[..., 2:] + anchors[..., :2]
    sizes = ops.exp(regressions[..., 2:] * size_variance) * anchors[..., 2:]
    return ops.concatenate([centers, sizes], axis=-1)


def box_iou(boxes0, boxes1, eps=IOU_EPSILON):
    """IoU of corner-form boxes, broadcasting over the leading axes ([G, 1, 4] x [A, 4] -> [G, A]).

    `eps` is added to the union as the official matcher does (0 for plain IoU).
    """
    boxes0 = ops.convert_to_tensor(boxes0, "float32")
    boxes1 = ops.cast(ops.convert_to_tensor(boxes1), boxes0.dtype)

    def area(lo, hi):
        wh = ops.maximum(hi - lo, 0.0)
        return wh[..., 0] * wh[..., 1]

    inter = area(ops.maximum(boxes0[..., :2], boxes1[..., :2]),
                 ops.minimum(boxes0[..., 2:], boxes1[..., 2:]))
    union = area(boxes0[..., :2], boxes0[..., 2:]) + area(boxes1[..., :2], boxes1[..., 2:])
    return inter / (union - inter + eps)


def match(gt_boxes, gt_labels, anchors, iou_threshold=MATCH_IOU_THRESHOLD,
          center_variance=CENTER_VARIANCE, size_variance=SIZE_VARIANCE, background_id=0):
    """The official SSD matcher: regression targets and class labels for every anchor.

    Every ground-truth box first claims the anchor it overlaps most (if two claim the
    same anchor, the later box wins, as in the official loop); every other anchor takes
    the box it overlaps most and is background below `iou_threshold`. An image without
    boxes gives all-background labels. Rows with a negative label are padding (for
    fixed-size batches) and are ignored.

    Args:
        gt_boxes: [G, 4] corner form (x1, y1, x2, y2), normalised to [0, 1].
        gt_labels: [G] integer class ids (1..classes-1; 0 is background).
        anchors: [A, 4] (cx, cy, w, h), e.g. `detection.model_anchors(model)`.

    Returns:
        (targets [A, 4] = encode(matched boxes), labels [A] int32). Background anchors
        get zero targets (the official code encodes their best, unmatched box, which is
        never used, and is -inf for an empty image).

    Example:
        >>> targets, labels = match([[0.1, 0.1, 0.5, 0.6]], [3], anchors)
        >>> positives = labels > 0
    """
    gt_boxes = ops.reshape(ops.convert_to_tensor(gt_boxes, "float32"), (-1, 4))
    gt_labels = ops.reshape(ops.cast(ops.convert_to_tensor(gt_labels), "int32"), (-1,))
    anchors = ops.cast(ops.convert_to_tensor(anchors), "float32")
    # A zero-area background box at the end: the official code's stand-in for an empty
    # image. IoU 0 with every anchor, and argmax prefers earlier (real) boxes on ties.
    boxes = ops.concatenate([gt_boxes, ops.zeros((1, 4), "float32")], axis=0)
    labels = ops.concatenate([gt_labels, ops.full((1,), background_id, "int32")], axis=0)
    real = ops.concatenate([gt_labels >= 0, ops.zeros((1,), "bool")], axis=0)  # [G+1]

    iou = box_iou(boxes[:, None, :], center_to_corner(anchors)[None, :, :])  # [G+1, A]
    iou = ops.where(ops.logical_or(real, labels == background_id)[:, None], iou, -1.0)
    best_box = ops.argmax(iou, axis=0)  # [A]
    best_iou = ops.max(iou, axis=0)

    # Each real box claims its best anchor; the highest box index wins a shared anchor.
    num_anchors = ops.shape(anchors)[0]
    claims = ops.logical_and(
        ops.arange(num_anchors)[None, :] == ops.argmax(iou, axis=1)[:, None], real[:, None])
    box_ids = ops.arange(ops.shape(boxes)[0])[:, None]
    claimed_by = ops.max(ops.where(claims, box_ids, -1), axis=0)  # [A], -1: unclaimed
    best_box = ops.where(claimed_by >= 0, claimed_by, best_box)
    best_iou = ops.where(claimed_by >= 0, 2.0, best_iou)

    matched_labels = ops.take(labels, best_box, axis=0)
    matched_labels = ops.where(best_iou < iou_threshold, background_id, matched_labels)
    matched = corner_to_center(ops.take(boxes, best_box, axis=0))
    targets = encode(matched, anchors, center_variance, size_variance)
    targets = ops.where((matched_labels == background_id)[:, None], 0.0, targets)
    return targets, matched_labels
