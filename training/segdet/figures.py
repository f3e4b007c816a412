"""Figures of held-out predictions: image, truth and prediction side by side, one row
per image, as a PNG in the run folder (segmentation masks or detection boxes).

Example:
    >>> save_mask_figure(path, images, true_masks, predicted_masks, class_names)
    >>> save_box_figure(path, images, truths, predictions, class_names)
"""

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_mobilevit.fileio import atomic_path  # noqa: E402

IGNORE_COLOUR = (255, 255, 255)


def palette(num_classes):
    """PASCAL VOC's colour map: class k -> RGB uint8 (background black)."""
    colours = np.zeros((max(num_classes, 1), 3), np.uint8)
    for k in range(num_classes):
        c, bit = k, 7
        while c:
            for channel in range(3):
                colours[k, channel] |= ((c >> channel) & 1) << bit
            c, bit = c >> 3, bit - 1
    return colours


def colour_mask(mask, num_classes, ignore_index=255):
    """uint8 [H, W] class indices -> uint8 [H, W, 3]; the ignore index drawn white."""
    mask = np.asarray(mask)
    rgb = palette(num_classes)[np.minimum(mask, num_classes - 1)]
    rgb[mask == ignore_index] = IGNORE_COLOUR
    return rgb


def save_mask_figure(path, images, true_masks, predicted_masks, class_names,
                     ignore_index=255):
    """Rows of (image | true mask | predicted mask), with a legend of the classes."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n + 0.8), squeeze=False)
    for row, (image, truth, predicted) in enumerate(zip(images, true_masks, predicted_masks)):
        for ax, picture, title in zip(
                axes[row], (np.asarray(image, np.uint8),
                            colour_mask(truth, len(class_names), ignore_index),
                            colour_mask(predicted, len(class_names), ignore_index)),
                ("image", "true mask (white: ignored)", "predicted mask")):
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    colours = palette(len(class_names)) / 255.0
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours]
    fig.legend(handles, class_names, loc="lower center", ncol=min(6, len(class_names)),
               fontsize=7, frameon=False)
    legend_rows = -(-len(class_names) // 6)
    _save(fig, path, bottom=0.25 * legend_rows / fig.get_figheight())


def save_box_figure(path, images, truths, predictions, class_names, min_score=0.3):
    """Rows of (image with true boxes | image with predicted boxes above `min_score`).

    `truths`: per image (boxes [n, 4] pixel xyxy, labels [n]); `predictions`: per image
    (boxes [m, 4] pixel xyxy, labels [m], scores [m]).
    """
    n = len(images)
    colours = palette(len(class_names)) / 255.0
    fig, axes = plt.subplots(n, 2, figsize=(6, 3 * n), squeeze=False)
    for row, image in enumerate(images):
        truth, predicted = truths[row], predictions[row]
        keep = np.asarray(predicted[2]) >= min_score
        panels = ((truth[0], truth[1], None, "true boxes"),
                  (np.asarray(predicted[0])[keep], np.asarray(predicted[1])[keep],
                   np.asarray(predicted[2])[keep], f"predicted (score >= {min_score})"))
        for ax, (boxes, labels, scores, title) in zip(axes[row], panels):
            ax.imshow(np.asarray(image, np.uint8))
            for k, ((x0, y0, x1, y1), label) in enumerate(zip(boxes, labels)):
                colour = colours[int(label) % len(colours)]
                ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0,
                                           fill=False, color=colour, linewidth=1.5))
                text = class_names[int(label)] + ("" if scores is None else f" {scores[k]:.2f}")
                ax.text(x0, y0, text, fontsize=6, color="white", va="bottom",
                        bbox=dict(facecolor=colour, pad=0.5, linewidth=0))
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    _save(fig, path)


def _save(fig, path, bottom=0.0):
    """Writes `fig` as a PNG atomically; `bottom`: figure fraction kept free (legend)."""
    fig.tight_layout(rect=(0, bottom, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
