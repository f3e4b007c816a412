"""SSD anchors (priors): the official SSDLite level layout and its anchor generator.

Anchors depend only on the feature-map sizes, so they are regenerated for any input size
exactly as the official on-the-fly generator does (cvnets SSDAnchorGenerator):
scales = linspace(0.1, 1.05, levels + 1); level k uses s = scales[k] and
s' = sqrt(scales[k] * scales[k + 1]); per cell, in this order: (s, s), (s', s'), then for
each aspect ratio r: (s*sqrt(r), s/sqrt(r)), (s/sqrt(r), s*sqrt(r)). Cells are row-major
(y outer, x inner), centres ((x + 0.5) / W, (y + 0.5) / H); all four columns clamped to
[0, 1]. Computed in float64, returned as float32 (cx, cy, w, h), normalised.

Example:
    >>> anchors = generate_anchors([(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])
    >>> anchors.shape
    (3232, 4)
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AnchorSpec:
    """The official SSD COCO layout (identical in the v1, v2 and v3 configs).

    Attributes:
        output_strides: feature levels; -1 is the global-pooling level.
        aspect_ratios: per level (duplicates are dropped, as the official code does).
        min_scale, max_scale: anchor sizes are spaced linearly between these.
        clip: clamp anchors to [0, 1] (official `no_clipping: false`).
    """

    output_strides: tuple = (16, 32, 64, 128, 256, -1)
    aspect_ratios: tuple = ((2, 3), (2, 3), (2, 3), (2, 3), (2, 3), (2,))
    min_scale: float = 0.1
    max_scale: float = 1.05
    clip: bool = True

    def ratios(self, level):
        """Unique aspect ratios of a level, in first-seen order."""
        return tuple(dict.fromkeys(self.aspect_ratios[level]))

    def anchors_per_location(self):
        """[6, 6, 6, 6, 6, 4] for the official layout."""
        return [2 + 2 * len(self.ratios(k)) for k in range(len(self.output_strides))]


SSD_ANCHORS = AnchorSpec()


def _cell_shapes(spec, level):
    """[(w, h), ...] of the anchors of one cell, in the official order."""
    scales = np.linspace(spec.min_scale, spec.max_scale, len(spec.output_strides) + 1)
    small = float(scales[level])
    large = float(np.sqrt(scales[level] * scales[level + 1]))
    shapes = [(small, small), (large, large)]
    for ratio in spec.ratios(level):
        root = float(np.sqrt(ratio))
        shapes += [(small * root, small / root), (small / root, small * root)]
    return shapes


def generate_anchors(feature_sizes, spec=SSD_ANCHORS):
    """Anchors [A, 4] (cx, cy, w, h) for feature maps of the given (height, width) sizes.

    Example:
        >>> generate_anchors([(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])[:2]
        array([[0.025, 0.025, 0.1, 0.1], [0.025, 0.025, 0.1607, 0.1607]], dtype=float32)
    """
    if len(feature_sizes) != len(spec.output_strides):
        raise ValueError(f"Expected {len(spec.output_strides)} feature sizes (one per level "
                         f"{spec.output_strides}); got {list(feature_sizes)}.")
    levels = []
    for level, (height, width) in enumerate(feature_sizes):
        shapes = np.asarray(_cell_shapes(spec, level), np.float64)  # [k, 2]
        cy, cx = np.meshgrid((np.arange(height) + 0.5) / height,
                             (np.arange(width) + 0.5) / width, indexing="ij")
        centers = np.stack([cx.ravel(), cy.ravel()], axis=-1)  # [H*W, 2], row-major
        grid = np.concatenate([np.repeat(centers[:, None], len(shapes), axis=1),
                               np.broadcast_to(shapes, (len(centers),) + shapes.shape)],
                              axis=-1)  # [H*W, k, 4]
        levels.append(grid.reshape(-1, 4))
    anchors = np.concatenate(levels, axis=0)
    if spec.clip:
        anchors = np.clip(anchors, 0.0, 1.0)
    return anchors.astype(np.float32)
