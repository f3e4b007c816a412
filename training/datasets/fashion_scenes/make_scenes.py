"""Renders the Fashion-MNIST scenes: clothing on cluttered canvases, with masks and boxes.

Each scene places 1-4 Fashion-MNIST objects (from the bundled subset next door: train
images for "train", the held-out test images for "test") at random sizes and positions
on a canvas with a colour gradient, stripes, noise and distractor fragments (cut-outs
of other Fashion-MNIST images, which stay background), and tints every object a random
colour. From the same pixels it derives:

- the segmentation mask: 0 background, 1..10 the Fashion-MNIST classes, 255 (ignore)
  on the anti-aliased rim of every object, where the pixel is part object, part not;
- one tight box per object around its visible (alpha >= 0.5) pixels, COCO-style
  [x, y, width, height] in pixels, with category ids 1..10.

Every scene is drawn from its own generator seeded by (SEED, split, index) with float64
numpy arithmetic only (the resize is written here, not borrowed from an image library),
so any slice rebuilds byte-identically, anywhere. The TFDS builder (builder.py) calls
`scene` at first use, so no rendered data is committed; `--check` re-renders whole
splits against the SHA-256 in README.md, `--out DIR` writes a split as PNG images,
PNG masks and a COCO JSON (the folder formats train.py reads).

Example:
    >>> image, mask, boxes, labels = scene("test", 0)   # uint8 [96, 96, 3], [96, 96], ...
    python training/datasets/fashion_scenes/make_scenes.py --check
    python training/datasets/fashion_scenes/make_scenes.py --out /tmp/scenes --split test --count 50
"""

import argparse
import functools
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from keras_mobilevit.fileio import write_bytes_atomic, write_text_atomic  # noqa: E402
from training.datasets.fashion_mnist_subset import make_subset  # noqa: E402

SEED = 2024
SIZE = 96                          # canvas side in pixels
SPLITS = {"train": 4000, "test": 500}
SPLIT_CODES = {"train": 0, "test": 1}
OBJECTS = (1, 4)                   # objects per scene, inclusive
OBJECT_SIDE = (0.25, 0.5)          # side of an object's 28x28 frame, fraction of the canvas
MAX_OCCLUSION = 0.3                # a frame covers at most this much of an earlier one
IGNORE = 255
SOLID, RIM = 0.5, 0.1              # alpha >= SOLID: object; RIM < alpha < SOLID: ignore
FASHION = Path(__file__).resolve().parents[1] / "fashion_mnist_subset"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@functools.cache
def fashion(split):
    """(images uint8 [N, 28, 28], labels uint8 [N]) of the bundled subset's split."""
    return (make_subset.read_idx(FASHION / f"{split}-images-idx3-ubyte.gz"),
            make_subset.read_idx(FASHION / f"{split}-labels-idx1-ubyte.gz"))


def resize(array, height, width):
    """Bilinear resize (half-pixel centres, edge clamped) of a float64 [h, w] array."""
    def taps(n_out, n_in):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, pos - low

    y0, y1, fy = taps(height, array.shape[0])
    x0, x1, fx = taps(width, array.shape[1])
    rows = array[y0] * (1 - fy)[:, None] + array[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


def silhouette(image):
    """The object's area in a 28x28 Fashion-MNIST image: inked pixels, holes filled.

    Dark garments have near-black pixels inside their outline; they belong to the
    object, so the outside is what the (near-black) border reaches by 4-neighbour steps.
    """
    empty = image < 8
    outside = np.zeros_like(empty)
    outside[0], outside[-1], outside[:, 0], outside[:, -1] = (
        empty[0], empty[-1], empty[:, 0], empty[:, -1])
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= empty
        if (grown == outside).all():
            return ~outside
        outside = grown


def tint(rng, low, high):
    """A random RGB colour (float64 [3] in 0..255) with value in [low, high]."""
    hue = rng.uniform(0, 6)
    sector, frac = int(hue), hue - int(hue)
    ramp = [1, 1 - frac, 0, 0, frac, 1]  # standard HSV -> RGB sector table
    rgb = np.array([ramp[(sector + k) % 6] for k in (0, 4, 2)], np.float64)
    saturation = rng.uniform(0.4, 1.0)
    return 255 * rng.uniform(low, high) * (1 - saturation * (1 - rgb))


def background(rng, size, pool):
    """Gradient + stripes + faint distractor fragments: float64 [size, size, 3]."""
    ramp = np.linspace(0, 1, size)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None] + 1) / 3
    canvas = tint(rng, 0.2, 0.8) * (1 - t[..., None]) + tint(rng, 0.2, 0.8) * t[..., None]
    period, phase = rng.uniform(4, 16), rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * (ramp[:, None] * np.cos(angle + 1) + ramp[None, :]
                                  * np.sin(angle + 1)) * size / period + phase)
    canvas += rng.uniform(5, 20) * stripes[..., None]
    for _ in range(rng.integers(2, 6)):  # pieces of other garments: still background
        source = pool[rng.integers(len(pool))].astype(np.float64)
        piece = rng.integers(8, 15)
        top, left = rng.integers(0, 28 - piece, size=2)
        crop = source[top:top + piece, left:left + piece]
        side = int(piece * rng.uniform(1.0, 2.0) * size / 96)
        alpha = resize(crop, side, side)[..., None] / 255 * rng.uniform(0.5, 0.9)
        y, x = rng.integers(0, size - side, size=2)
        window = canvas[y:y + side, x:x + side]
        window[:] = window * (1 - alpha) + alpha * tint(rng, 0.3, 1.0)
    return canvas


def place(rng, size, side, frames):
    """Top-left corner for a side x side frame that hides at most MAX_OCCLUSION of any
    earlier frame (and is hidden no more), or None after 20 tries."""
    for _ in range(20):
        y, x = rng.integers(0, size - side + 1, size=2)
        if all(_overlap(y, x, side, *frame) <= MAX_OCCLUSION for frame in frames):
            return int(y), int(x)
    return None


def _overlap(y, x, side, y2, x2, side2):
    dy = max(0, min(y + side, y2 + side2) - max(y, y2))
    dx = max(0, min(x + side, x2 + side2) - max(x, x2))
    return dy * dx / min(side, side2) ** 2


def scene(split, index, size=SIZE):
    """One scene: (image uint8 [size, size, 3], mask uint8 [size, size],
    boxes int64 [n, 4] as COCO [x, y, w, h], labels int64 [n] in 1..10)."""
    rng = np.random.default_rng([SEED, SPLIT_CODES[split], index, size])
    images, classes = fashion(split)
    canvas = background(rng, size, images)
    mask = np.zeros((size, size), np.uint8)
    instance = np.zeros((size, size), np.int64)  # which object each pixel shows
    frames, labels = [], []
    for _ in range(rng.integers(OBJECTS[0], OBJECTS[1] + 1)):
        pick = rng.integers(len(images))
        side = int(rng.uniform(*OBJECT_SIDE) * size)
        corner = place(rng, size, side, frames)
        if corner is None:
            continue
        y, x = corner
        ink = images[pick].astype(np.float64)
        alpha = resize(silhouette(images[pick]).astype(np.float64), side, side)
        shade = resize(0.35 + 0.65 * ink / 255, side, side)[..., None] * tint(rng, 0.5, 1.0)
        window = canvas[y:y + side, x:x + side]
        window[:] = window * (1 - alpha[..., None]) + alpha[..., None] * shade
        frames.append((y, x, side))
        labels.append(int(classes[pick]) + 1)
        solid, rim = alpha >= SOLID, (alpha > RIM) & (alpha < SOLID)
        mask[y:y + side, x:x + side][rim] = IGNORE
        mask[y:y + side, x:x + side][solid] = labels[-1]
        instance[y:y + side, x:x + side][rim | solid] = 0
        instance[y:y + side, x:x + side][solid] = len(labels)
    canvas += rng.normal(0, rng.uniform(2, 8), canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    boxes = np.array([_tight_box(instance == k + 1) for k in range(len(labels))],
                     np.int64).reshape(-1, 4)
    keep = boxes[:, 2] > 0  # an object hidden entirely by later ones has no box
    return image, mask, boxes[keep], np.array(labels, np.int64)[keep]


def _tight_box(pixels):
    """COCO [x, y, w, h] around the True pixels (zeros if none)."""
    ys, xs = np.nonzero(pixels)
    if not len(ys):
        return [0, 0, 0, 0]
    return [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


def digest(split, start=0, stop=None, size=SIZE):
    """SHA-256 over the bytes of scenes [start, stop) of `split` (image, mask, boxes, labels)."""
    sha = hashlib.sha256()
    for index in range(start, SPLITS[split] if stop is None else stop):
        for array in scene(split, index, size):
            sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def export(out, split, count, size=SIZE):
    """Writes images/*.png, masks/*.png and annotations.json (COCO) for `count` scenes."""
    import tensorflow as tf  # deferred: only the export encodes PNGs

    out = Path(out)
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    coco = dict(images=[], annotations=[], categories=[
        dict(id=k + 1, name=name) for k, name in enumerate(CLASS_NAMES)])
    for index in range(count):
        image, mask, boxes, labels = scene(split, index, size)
        name = f"{split}_{index:06d}.png"
        write_bytes_atomic(out / "images" / name, tf.io.encode_png(image).numpy())
        write_bytes_atomic(out / "masks" / name, tf.io.encode_png(mask[..., None]).numpy())
        coco["images"].append(dict(id=index, file_name=name, height=size, width=size))
        coco["annotations"] += [
            dict(id=len(coco["annotations"]) + k, image_id=index, category_id=int(label),
                 bbox=[int(v) for v in box], area=int(box[2] * box[3]), iscrowd=0)
            for k, (box, label) in enumerate(zip(boxes, labels))]
    write_text_atomic(out / "annotations.json", json.dumps(coco))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="re-render every split and print its SHA-256 (compare README.md)")
    parser.add_argument("--out", type=Path, help="write a split as PNGs + COCO JSON here")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--count", type=int, help="scenes to write (default: the whole split)")
    args = parser.parse_args(argv)
    if args.check:
        for split in SPLITS:
            print(f"{digest(split)}  {split} ({SPLITS[split]} scenes, {SIZE}x{SIZE})")
    if args.out:
        export(args.out, args.split, args.count or SPLITS[args.split])
        print(f"wrote {args.count or SPLITS[args.split]} {args.split} scenes to {args.out}")


if __name__ == "__main__":
    main()
