"""Class names for a model's outputs (a detector's classes), and where they came from.

Looked up in this order: a labels file the user names; the training run folder's
`labels.txt` or the `class_names` of its config.json; the run's dataset (TFDS
`ClassLabel` names, image-folder names); the ImageNet-1k class index for
`weights="imagenet"` models, COCO's names for `weights="coco"` detectors, PASCAL VOC's
or ADE20k's for `weights="voc"` / `"ade20k"` segmenters. Only when none of these exists are the names
placeholders, `class_<i>`, and `ClassNames.source` says so.

Example:
    >>> names = class_names(10, run_dir="runs/fmnist")
    >>> names.names[:2], names.source
    (['T-shirt/top', 'Trouser'], 'runs/fmnist/labels.txt')
"""

import dataclasses
import os

from keras_mobilevit import imagenet
from training import rundir

BACKGROUND = "background"  # a detection dataset's class 0, first in its labels.txt
# The official COCO detectors' classes (weights="coco"), background first, in the order of
# the official code (cvnets COCODetection.class_names: COCO category ids sorted).
COCO_CLASSES = [
    BACKGROUND, "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"]

# The official ADE20k segmenters' 150 classes (weights="ade20k"), output index i =
# ADEChallenge label i + 1: the official code (cvnets ADE20KDataset) shifts the labels
# by one and has no background output (its label 0, "other", is ignored).
ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]

PLACEHOLDER_SOURCE = "none (the dataset has no class names): class_<i> placeholders"


class LabelsError(ValueError):
    """Class names that do not fit the model; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class ClassNames:
    names: list  # line i = output index i
    source: str  # a file, "dataset <name>", "ImageNet-1k class index" or PLACEHOLDER_SOURCE

    @property
    def placeholder(self):
        return self.source == PLACEHOLDER_SOURCE


def read_labels(path):
    """The names in a labels file, one per line (a final newline is optional)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        raise LabelsError(f"{path}: line(s) {blank} are empty; each line names one class, "
                          "line i naming output index i")
    return lines


def check_labels(labels, count, source="the labels"):
    """`labels` as a list, refusing a count other than the model's `count` outputs."""
    labels = list(labels)
    if len(labels) != count:
        raise LabelsError(f"{source}: {len(labels)} class names for a model with {count} "
                          f"outputs; a labels file needs exactly {count} lines, line i naming "
                          "output index i")
    if any(not name.strip() or "\n" in name for name in labels):
        raise LabelsError(f"{source}: every class name must be a non-empty single line")
    return labels


def class_names(num_classes, *, labels_file=None, run_dir=None, weights=None,
                background=False):
    """`ClassNames` of a model with `num_classes` outputs (see the module docstring).

    `background=True` (a detector: `num_classes` object classes, the model's class 0 is
    the background) also takes names with one more line that starts with "background",
    as a detection run's labels.txt does, and drops that line: line i then names the
    object class the detector's post-processing reports as i."""
    found = None
    if labels_file:
        found = ClassNames(read_labels(labels_file), os.fspath(labels_file))
    elif run_dir:
        found = _from_run(run_dir)
    elif weights in _WEIGHTS_NAMES:
        found = _WEIGHTS_NAMES[weights]()
    if found is None:
        return ClassNames([f"class_{i}" for i in range(num_classes)], PLACEHOLDER_SOURCE)
    if (background and len(found.names) == num_classes + 1
            and found.names[0].strip().lower() == BACKGROUND):
        found = ClassNames(found.names[1:], f"{found.source} (its background line dropped)")
    check_labels(found.names, num_classes, found.source)
    return found


def _voc_names():
    from training.segdet.sources import VOC_CLASSES  # imports TensorFlow: only when needed

    return ClassNames(list(VOC_CLASSES), "PASCAL VOC class names")


# Class names of the official weights a model can be built with.
_WEIGHTS_NAMES = {
    "imagenet": lambda: ClassNames(imagenet.imagenet_class_names(), "ImageNet-1k class index"),
    "coco": lambda: ClassNames(list(COCO_CLASSES), "COCO class names (official order)"),
    "voc": _voc_names,
    "ade20k": lambda: ClassNames(list(ADE20K_CLASSES), "ADE20k class names (official order)"),
}


def _from_run(run_dir):
    """The names a training run folder records (labels.txt, config.json), or its dataset's.

    A detection run's names start with its background class, which the exported
    detector's classes skip (`TFLite_Detection_PostProcess`): that name is dropped.
    """
    found = _run_names(run_dir)
    config_path = os.path.join(run_dir, rundir.CONFIG)
    if found is None or not os.path.exists(config_path):
        return found
    if rundir.read_config(run_dir).get("task") == "detection":
        return ClassNames(found.names[1:], f"{found.source} without its first line "
                          f"({found.names[0]!r}: a detector's outputs skip the background)")
    return found


def _run_names(run_dir):
    path = os.path.join(run_dir, rundir.LABELS)
    if os.path.exists(path):
        return ClassNames(read_labels(path), path)
    if not os.path.exists(os.path.join(run_dir, rundir.CONFIG)):
        return None
    config = rundir.read_config(run_dir)
    if config.get("class_names"):
        return ClassNames(list(config["class_names"]),
                          f"{os.path.join(run_dir, rundir.CONFIG)} class_names")
    from tflite import data  # imports TensorFlow and the dataset code: only when needed

    source = data.open_source(config)  # TFDS ClassLabel or image-folder names
    kind = "image folder" if config.get("image_folder") else "TFDS dataset"
    return ClassNames(list(source.class_names), f"{kind} {source.name}") if source.class_names else None
