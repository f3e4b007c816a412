"""SSD post-processing as one backend-agnostic Keras layer: decode, softmax, per-class
greedy NMS (vectorised over classes and images), fixed-size padded outputs.

It reproduces the two official (torchvision-based) procedures:
- "v0.1" (cvnets v0.1: v1 and v3 XXS/XS/S): per class, probability > 0.05, NMS at IoU 0.5,
  the first 200 kept; classes concatenated in ascending order (each by decreasing score);
  no per-image cap.
- "v0.2" (cvnets v0.2: v2 and v3 0.5/0.75/1.0): per class, probability > 0.01, the top 400,
  NMS at IoU 0.5 (batched_nms), then the best 200 of the image by decreasing score.

Example:
    >>> post = SSDPostprocess([(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)],
    ...                       POSTPROCESS["v0.2"])
    >>> out = post([box_regressions, class_logits])   # dict: boxes, scores, classes, num_detections
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from keras_mobilevit import anchors as anchor_lib
from keras_mobilevit import box_coder


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    """Detection post-processing settings.

    Attributes:
        score_threshold: keep class probabilities strictly above this.
        nms_iou_threshold: a box is suppressed by a better one of its class above this IoU.
        pre_nms_top_k: per class, NMS sees only the best k candidates (None: all anchors).
        max_per_class: per class, keep at most this many after NMS (None: no cap).
        max_detections: per image, after NMS (None: everything kept, i.e. no cap).
        order: "score" (the image's detections by decreasing score) or "class"
            (ascending class, each class by decreasing score).
    """

    score_threshold: float
    nms_iou_threshold: float
    pre_nms_top_k: int = None
    max_per_class: int = None
    max_detections: int = None
    order: str = "score"


# Official settings per code base (v0.1: argparse default conf 0.05, num_objects_per_class
# 200; v0.2: conf 0.01, top_k 400, objects_per_image 200; NMS IoU 0.5 from every YAML).
POSTPROCESS = {
    "v0.1": PostprocessConfig(0.05, 0.5, None, 200, None, "class"),
    "v0.2": PostprocessConfig(0.01, 0.5, 400, None, 200, "score"),
}


NMS_TILE = 32  # candidates settled per step: memory [..., tile, K], few loop iterations


def greedy_nms(boxes, valid, iou_threshold, tile=NMS_TILE):
    """Greedy NMS over many independent sets at once (torchvision.ops.nms semantics).

    Candidates are settled a tile at a time: inside a tile, "kept = alive and not
    suppressed by a kept better box" is iterated to its fixed point (exact: position j
    depends only on positions before it, so n rounds settle the first n); the tile's kept
    boxes then suppress every later candidate. Only tiles holding valid candidates run.

    Args:
        boxes: [..., K, 4] corner form, each set sorted by decreasing score.
        valid: [..., K] bool, a prefix of each set (the candidates above the threshold).

    Returns:
        keep [..., K] bool: boxes not suppressed by a better kept box with IoU > threshold.
    """
    k = boxes.shape[-2]
    positions = ops.arange(k)
    steps = ops.max(ops.sum(ops.cast(valid, "int32"), axis=-1))  # longest candidate list
    x1, y1, x2, y2 = (boxes[..., c] for c in range(4))  # [..., K] each
    areas = (x2 - x1) * (y2 - y1)

    def overlaps(index):
        """[..., T, K]: IoU of the tile's boxes with every box, > threshold (torchvision)."""
        def pair(v):
            return ops.take(v, index, axis=-1)[..., :, None], v[..., None, :]
        (ax1, bx1), (ay1, by1), (ax2, bx2), (ay2, by2), (aa, ba) = map(
            pair, (x1, y1, x2, y2, areas))
        inter = (ops.maximum(ops.minimum(ax2, bx2) - ops.maximum(ax1, bx1), 0.0)
                 * ops.maximum(ops.minimum(ay2, by2) - ops.maximum(ay1, by1), 0.0))
        return inter / (aa + ba - inter) > iou_threshold

    def settle_tile(t, keep):
        index = ops.minimum(t * tile + ops.arange(tile), k - 1)  # the last tile may overlap
        over = overlaps(index) & (positions[None, :] > index[:, None])  # [..., T, K]
        inner = ops.take(over, index, axis=-1)  # [..., T, T]: better tile box suppresses
        alive = ops.take(keep, index, axis=-1)  # [..., T]

        def refine(_, kept):
            return kept, alive & ~ops.any(kept[..., :, None] & inner, axis=-2)

        _, kept = ops.while_loop(lambda old, new: ops.any(old != new), refine,
                                 refine(None, alive))
        return t + 1, keep & ~ops.any(kept[..., :, None] & over, axis=-2)

    _, keep = ops.while_loop(lambda t, keep: t * tile < steps, settle_tile,
                             (ops.convert_to_tensor(0), valid))
    return keep


@keras.saving.register_keras_serializable(package="keras_mobilevit")
class SSDPostprocess(keras.layers.Layer):
    """[box_regressions [B, A, 4], class_logits [B, A, C]] -> padded detections.

    Returns a dict: boxes [B, D, 4] (x1, y1, x2, y2, normalised to the input), scores
    [B, D], classes [B, D] int32 (1..C-1; 0 in padding rows), num_detections [B] int32.

    Args:
        feature_sizes: (height, width) of every SSD level; the anchors are generated from
            them (`anchors.generate_anchors`), as the official code does on the fly.
        config: a `PostprocessConfig` (or its dict).
        center_variance, size_variance: the box coder's variances.
    """

    def __init__(self, feature_sizes, config, center_variance=box_coder.CENTER_VARIANCE,
                 size_variance=box_coder.SIZE_VARIANCE, **kwargs):
        super().__init__(**kwargs)
        self.feature_sizes = [tuple(int(v) for v in size) for size in feature_sizes]
        self.anchors = anchor_lib.generate_anchors(self.feature_sizes)
        self.config = config if isinstance(config, PostprocessConfig) else PostprocessConfig(
            **config)
        self.center_variance = center_variance
        self.size_variance = size_variance

    def _sizes(self, num_classes):
        """(candidates per class K, output rows D) for C classes with background."""
        cfg, num_anchors = self.config, len(self.anchors)
        k = num_anchors if cfg.pre_nms_top_k is None else min(cfg.pre_nms_top_k, num_anchors)
        per_class = k if cfg.max_per_class is None else min(cfg.max_per_class, k)
        total = (num_classes - 1) * per_class
        return k, total if cfg.max_detections is None else min(cfg.max_detections, total)

    def call(self, inputs):
        regressions, logits = inputs
        cfg = self.config
        batch, num_anchors, num_classes = ops.shape(logits)[0], len(self.anchors), logits.shape[-1]
        k, rows = self._sizes(num_classes)
        boxes = box_coder.center_to_corner(box_coder.decode(
            ops.cast(regressions, "float32"), self.anchors, self.center_variance,
            self.size_variance))  # [B, A, 4]
        probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)[..., 1:]  # drop background
        scores, index = ops.top_k(ops.transpose(probs, (0, 2, 1)), k)  # [B, C-1, K]
        offsets = ops.reshape(ops.arange(batch) * num_anchors, (-1, 1, 1))
        candidates = ops.take(ops.reshape(boxes, (-1, 4)), index + offsets, axis=0)

        keep = greedy_nms(candidates, scores > cfg.score_threshold, cfg.nms_iou_threshold)
        if cfg.max_per_class is not None:
            keep = keep & (ops.cumsum(ops.cast(keep, "int32"), axis=-1) <= cfg.max_per_class)
        # [B, (C-1) * K], class-major; the row length static even where B is not
        # (predict() traces with an unknown batch size)
        keep = ops.reshape(keep, (-1, (num_classes - 1) * k))
        flat_scores = ops.reshape(scores, (-1, (num_classes - 1) * k))
        if cfg.order == "score":
            key = ops.where(keep, flat_scores, -1.0)
        else:  # earlier (class, rank) first
            key = ops.where(keep, -ops.arange(keep.shape[-1], dtype="float32"), -np.inf)
        _, picked = ops.top_k(key, rows)  # [B, D]
        count = ops.minimum(ops.sum(ops.cast(keep, "int32"), axis=-1), rows)
        real = ops.arange(rows)[None, :] < count[:, None]
        picked_boxes = ops.take_along_axis(ops.reshape(candidates, (batch, -1, 4)),
                                           picked[..., None], axis=1)
        return {
            "boxes": ops.where(real[..., None], picked_boxes, 0.0),
            "scores": ops.where(real, ops.take_along_axis(flat_scores, picked, axis=1), 0.0),
            "classes": ops.where(real, ops.cast(picked // k + 1, "int32"), 0),
            "num_detections": count,
        }

    def compute_output_spec(self, inputs):
        regressions, logits = inputs
        batch, rows = logits.shape[0], self._sizes(logits.shape[-1])[1]
        return {
            "boxes": keras.KerasTensor((batch, rows, 4), "float32"),
            "scores": keras.KerasTensor((batch, rows), "float32"),
            "classes": keras.KerasTensor((batch, rows), "int32"),
            "num_detections": keras.KerasTensor((batch,), "int32"),
        }

    def get_config(self):
        return {**super().get_config(), "feature_sizes": self.feature_sizes,
                "config": dataclasses.asdict(self.config),
                "center_variance": self.center_variance, "size_variance": self.size_variance}
