"""Where segmentation and detection examples come from: a TFDS dataset (the bundled
Fashion-MNIST scenes by default), a folder of images + PNG masks, or images + COCO JSON.

Every source reads a split as dicts of decoded tensors:
`image` uint8 [H, W, 3]; for segmentation `mask` uint8 [H, W] (class index, 255 =
ignore); for detection `boxes` float32 [n, 4] (normalized ymin, xmin, ymax, xmax, TF's
box order) and `labels` int32 [n] in 1..K. Class 0 is always the background, so
`class_names[0] == "background"` and `len(class_names)` is the number of model classes.

Everything is checked when the source opens, before any training: unknown or
unprepared TFDS datasets (never downloaded unless asked), masks that are not single
channel, of another size than their image, or with values >= the number of classes
(other than 255), empty or malformed annotation files, boxes outside their image or of
zero area, category ids missing from the label map. Each raises `DataError` saying what
to fix.

Example:
    >>> source = open_scene_source("segmentation")                # bundled scenes
    >>> source = open_scene_source("detection", dataset="voc/2012", data_dir="~/tfds")
    >>> source = open_scene_source("segmentation", image_folder="VOCdevkit/VOC2012")
    >>> source = open_scene_source("detection", image_folder="shapes/")  # + annotations.json
    >>> ds = source.read(source.train_split)
"""

import io
import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from training import data
from training.data import DataError
from training.datasets.fashion_scenes import FashionScenes

TASKS = ("segmentation", "detection")
DEFAULT_DATASET = "fashion_scenes"
IGNORE_INDEX = 255
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
EDGE_TOLERANCE = 1.0  # pixels a COCO box may overhang its image (rounding), then clipped
SHUFFLE_BUFFER = 4096


def open_scene_source(task, dataset=None, image_folder=None, data_dir=None, manual_dir=None,
                      download=False, train_split=None, eval_split=None):
    """A source for `task` ("segmentation" or "detection"); see the module docstring."""
    if task not in TASKS:
        raise DataError(f"Unknown task {task!r}; expected one of {TASKS}.")
    if dataset and image_folder:
        raise DataError("Pass either --dataset or --image-folder, not both.")
    if image_folder:
        source = (MaskFolderSource if task == "segmentation" else CocoFolderSource)(image_folder)
    else:
        source = TfdsSceneSource(dataset or DEFAULT_DATASET, task, data_dir, manual_dir, download)
    source.choose_splits(train_split, eval_split)
    return source


def training_batches(source, settings, augment, input_context=None, seed=0):
    """Endless per-replica batches of `augment(example)` over this input pipeline's shard
    of the train split: cached (small data), shuffled, repeated, batched, prefetched."""
    ctx = input_context or tf.distribute.InputContext()
    split, shards = source.train_split, ctx.num_input_pipelines
    ds = maybe_cache(source.read(split, shards, ctx.input_pipeline_id, shuffle=True),
                     source, split, settings.cache)
    ds = ds.shuffle(min(SHUFFLE_BUFFER, source.num_examples(split) // shards + 1),
                    seed=seed).repeat()
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(ctx.get_per_replica_batch_size(settings.batch_size), drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = False  # take whichever example is ready first
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_batches(source, split, settings, prepare, batch_size, blank=None):
    """Every example of `split` once through `prepare`, in full batches: the last one is
    padded with `blank` elements (default: zeros), which the task makes count for nothing."""
    count = source.num_examples(split)
    ds = maybe_cache(source.read(split), source, split, settings.cache)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if blank is None:
        blank = tuple(tf.zeros(spec.shape, spec.dtype) for spec in ds.element_spec)
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(-count % batch_size))
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def maybe_cache(ds, source, split, cache):
    """`ds.cache()` when asked ("yes"), or by default ("auto") for data known to fit."""
    if cache == "yes" or (cache == "auto" and source.cacheable(split)):
        return ds.cache()
    return ds


class TfdsSceneSource(data.TfdsSource):
    """A TFDS dataset with `segmentation_mask` (segmentation) or `objects` with `bbox` and
    `label` (detection): fashion_scenes, voc/2012 and coco/2017 (detection)."""

    def __init__(self, name, task, data_dir=None, manual_dir=None, download=False):
        self.name, self.task = name, task
        self.builder = data._tfds_builder(name, data_dir)
        features = self.builder.info.features  # known before preparing: fail fast
        objects = features["objects"] if "objects" in features else {}
        if task == "segmentation" and "segmentation_mask" not in features:
            raise DataError(
                f"TFDS dataset {name!r} has no segmentation masks (features: "
                f"{sorted(features)}); TFDS' voc/2012 holds only boxes. For PASCAL VOC "
                "segmentation pass --image-folder VOCdevkit/VOC2012 (JPEGImages + "
                "SegmentationClass), or use the dataset with --task detection.")
        needed = ("label",) if task == "segmentation" else ("label", "bbox")
        if any(key not in objects for key in needed):
            raise DataError(f"TFDS dataset {name!r} has no objects/{' and objects/'.join(needed)} "
                            f"feature for {task} (features: {features}).")
        self.class_names = ["background"] + list(objects["label"].names)
        if not self.builder.is_prepared():
            self._prepare(manual_dir, download)

    def _prepare(self, manual_dir, download):
        if isinstance(self.builder, FashionScenes):  # rendered locally, no download
            print("Rendering the Fashion-MNIST scenes (once, about a minute) ...")
            self.builder.download_and_prepare()
        else:
            super()._prepare(manual_dir, download)

    def cacheable(self, split):
        """Decoded images fit in memory: the bundled scenes do (~150 MB)."""
        return isinstance(self.builder, FashionScenes)

    def read(self, split, num_shards=1, shard=0, shuffle=False):
        if num_shards > 1:
            split = tfds.even_splits(split, num_shards)[shard]
        ds = self.builder.as_dataset(split, shuffle_files=shuffle,
                                     read_config=tfds.ReadConfig(try_autocache=False))
        return ds.map(self._convert, num_parallel_calls=tf.data.AUTOTUNE)

    def _convert(self, example):
        image = example["image"]
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        if self.task == "segmentation":
            return {"image": image, "mask": example["segmentation_mask"][..., 0]}
        objects = example["objects"]
        keep = tf.logical_not(objects["is_crowd"]) if "is_crowd" in objects else (
            tf.ones_like(objects["label"], tf.bool))
        return {"image": image, "boxes": tf.boolean_mask(objects["bbox"], keep),
                "labels": tf.cast(tf.boolean_mask(objects["label"], keep), tf.int32) + 1}


class _FolderSource(data._Source):
    """Split bookkeeping of the folder sources: `self.splits[name]` is a list of examples
    whose first item is the image path; one split only -> 10% held out by file name."""

    splits: dict

    def _hold_out_if_single(self):
        if len(self.splits) == 1 and not any(s in self.splits for s in data.EVAL_SPLITS):
            (name, examples), = self.splits.items()
            held = data._holdout(examples)
            self.splits = {name: held["train"], "validation": held["validation"]}

    def split_names(self):
        return {name for name, examples in self.splits.items() if examples}

    def num_examples(self, split):
        return len(self.splits[split])

    def cacheable(self, split):
        return False


class MaskFolderSource(_FolderSource):
    """Images and PNG masks: `root/images/*` + `root/masks/<stem>.png` (or the same per
    split, `root/<split>/{images,masks}`), or a VOC devkit (`JPEGImages`,
    `SegmentationClass`, `ImageSets/Segmentation/<split>.txt`).

    Class names: `root/labels.txt`, one per line, background first (VOC: its 21 names).
    Masks are grey or palette PNGs of class indices; 255 is ignored.
    """

    def __init__(self, root):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"--image-folder {root} is not a directory.")
        self.name = root.name
        if (root / "SegmentationClass").is_dir():
            self.splits = _voc_splits(root)
            default_names = VOC_CLASSES
        else:
            pairs = [root] if (root / "images").is_dir() else data._subfolders(root)
            self.splits = {("train" if p == root else p.name): _mask_pairs(p)
                           for p in pairs if (p / "images").is_dir()}
            default_names = None
        if not any(self.splits.values()):
            raise DataError(
                f"--image-folder {root} holds no image/mask pairs: expected "
                f"{root}/images/<name>.jpg|png with {root}/masks/<name>.png (or "
                f"{root}/<split>/images + masks, or a VOC devkit with SegmentationClass).")
        self.class_names = _label_names(root, default_names)
        self._hold_out_if_single()
        _check_masks([pair for pairs in self.splits.values() for pair in pairs],
                     len(self.class_names))

    def read(self, split, num_shards=1, shard=0, shuffle=False):
        pairs = self.splits[split][shard::num_shards]
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant([i for i, _ in pairs]), tf.constant([m for _, m in pairs])))
        if shuffle:
            ds = ds.shuffle(len(pairs))

        def load(image_path, mask_path):
            image = tf.io.decode_image(tf.io.read_file(image_path), channels=3,
                                       expand_animations=False)
            mask = tf.numpy_function(_decode_mask, [tf.io.read_file(mask_path)], tf.uint8)
            return {"image": image, "mask": tf.ensure_shape(mask, [None, None])}

        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def _decode_mask(png_bytes):
    """Class indices of a grey or palette PNG (TF would turn a palette into colours)."""
    return np.asarray(Image.open(io.BytesIO(png_bytes)), np.uint8)


def _voc_splits(root):
    lists = root / "ImageSets" / "Segmentation"
    splits = {}
    for listing in sorted(lists.glob("*.txt")) if lists.is_dir() else []:
        names = listing.read_text().split()
        splits[listing.stem] = [(str(root / "JPEGImages" / f"{n}.jpg"),
                                 str(root / "SegmentationClass" / f"{n}.png")) for n in names]
    if not splits:
        raise DataError(f"VOC devkit {root} has no ImageSets/Segmentation/*.txt split lists.")
    return splits


def _mask_pairs(folder):
    """[(image path, mask path)] of folder/images and folder/masks, matched by stem."""
    images = data._images(folder / "images")
    masks = folder / "masks"
    missing = [p.name for p in images if not (masks / f"{p.stem}.png").is_file()]
    if missing:
        raise DataError(f"{len(missing)} images in {folder / 'images'} have no mask "
                        f"{masks}/<name>.png, e.g. {', '.join(missing[:5])}.")
    return [(str(p), str(masks / f"{p.stem}.png")) for p in images]


def _label_names(root, default):
    path = root / "labels.txt"
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) < 2:
            raise DataError(f"{path} lists {len(names)} class names; it needs the "
                            "background first and at least one class, one per line.")
        return names
    if default:
        return list(default)
    raise DataError(f"{root} has no labels.txt: write the class names there, one per line, "
                    "background first (mask value i is line i).")


def _check_masks(pairs, num_classes):
    """Raises DataError listing masks that are not single channel, differ in size from
    their image, or hold values >= num_classes other than the ignore index."""
    problems = []
    for image_path, mask_path in pairs:
        with Image.open(mask_path) as mask:
            if mask.mode not in ("L", "P"):
                problems.append(f"{mask_path}: mode {mask.mode}, expected a grey or palette PNG")
                continue
            values, mask_size = np.unique(np.asarray(mask)), mask.size
        with Image.open(image_path) as image:
            if image.size != mask_size:
                problems.append(f"{mask_path}: {mask_size[0]}x{mask_size[1]} but its image "
                                f"{image_path} is {image.size[0]}x{image.size[1]}")
        bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
        if len(bad):
            problems.append(f"{mask_path}: values {bad.tolist()} but only {num_classes} "
                            f"classes (0..{num_classes - 1}, {IGNORE_INDEX} = ignore)")
    if problems:
        listed = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise DataError(f"{len(problems)} of {len(pairs)} masks cannot be used:\n  {listed}\n"
                        "Fix them, or the class names in labels.txt.")


class CocoFolderSource(_FolderSource):
    """Images + COCO JSON: `root/annotations.json` with images in `root/images/` (or
    next to it), the same per split (`root/<split>/annotations.json`), or COCO's own
    layout (`root/annotations/instances_<split>.json`, images in `root/<split>/`).

    Categories keep the JSON's order by id and become labels 1..K; crowd boxes are left out.
    """

    def __init__(self, root):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"--image-folder {root} is not a directory.")
        self.name = root.name
        found = _coco_files(root)
        if not found:
            raise DataError(
                f"--image-folder {root} has no COCO annotations: expected "
                f"{root}/annotations.json (images in {root}/images), "
                f"{root}/<split>/annotations.json, or {root}/annotations/instances_<split>.json.")
        self.splits, names = {}, None
        for split, (json_path, image_dir) in found.items():
            self.splits[split], split_names = _read_coco(json_path, image_dir)
            if names not in (None, split_names):
                raise DataError(f"{json_path} lists other categories than the other splits.")
            names = split_names
        self.class_names = ["background"] + names
        self._hold_out_if_single()

    def read(self, split, num_shards=1, shard=0, shuffle=False):
        examples = self.splits[split][shard::num_shards]
        counts = [len(labels) for _, _, labels in examples]
        boxes = np.concatenate([b for _, b, _ in examples] + [np.zeros((0, 4), np.float32)])
        labels = np.concatenate([lab for _, _, lab in examples] + [np.zeros(0, np.int32)])
        ds = tf.data.Dataset.from_tensor_slices((
            tf.constant([path for path, _, _ in examples]),
            tf.RaggedTensor.from_row_lengths(boxes, counts),
            tf.RaggedTensor.from_row_lengths(labels, counts)))
        if shuffle:
            ds = ds.shuffle(len(examples))
        return ds.map(lambda path, b, lab: {
            "image": tf.io.decode_image(tf.io.read_file(path), channels=3,
                                        expand_animations=False),
            "boxes": b, "labels": lab}, num_parallel_calls=tf.data.AUTOTUNE)


def _coco_files(root):
    """{split: (annotation file, image folder)} for the three layouts."""
    if (root / "annotations.json").is_file():
        images = root / "images"
        return {"train": (root / "annotations.json", images if images.is_dir() else root)}
    found = {}
    for json_path in sorted((root / "annotations").glob("instances_*.json")):
        split = json_path.stem[len("instances_"):]
        found[split] = (json_path, root / split)
    for folder in data._subfolders(root):
        if (folder / "annotations.json").is_file():
            images = folder / "images"
            found[folder.name] = (folder / "annotations.json",
                                  images if images.is_dir() else folder)
    return found


def _read_coco(json_path, image_dir):
    """([(image path, boxes [n, 4] normalized yxyx, labels [n])], category names)."""
    coco = _load_json(json_path)
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k + 1 for k, c in enumerate(categories)}
    images = {im["id"]: im for im in coco["images"]}
    per_image = {image_id: [] for image_id in images}
    problems = []
    for ann in coco["annotations"]:
        problem = _box_problem(ann, images, label_of)
        if problem:
            problems.append(f"annotation {ann.get('id')}: {problem}")
        elif not ann.get("iscrowd", 0):
            per_image[ann["image_id"]].append(ann)
    missing = [im["file_name"] for im in images.values()
               if not (image_dir / im["file_name"]).is_file()]
    if missing:
        problems.append(f"{len(missing)} image files missing from {image_dir}, e.g. "
                        + ", ".join(missing[:3]))
    if problems:
        listed = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise DataError(f"{json_path} has {len(problems)} problems:\n  {listed}")
    examples = []
    for image_id, anns in per_image.items():
        im = images[image_id]
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        size = np.array([im["width"], im["height"]], np.float64)
        low = np.clip(xywh[:, :2], 0, size) / size
        high = np.clip(xywh[:, :2] + xywh[:, 2:], 0, size) / size
        boxes = np.stack([low[:, 1], low[:, 0], high[:, 1], high[:, 0]], -1)
        examples.append((str(image_dir / im["file_name"]), boxes.astype(np.float32),
                         np.array([label_of[a["category_id"]] for a in anns], np.int32)))
    return examples, [c["name"] for c in categories]


def _load_json(path):
    text = Path(path).read_text()
    if not text.strip():
        raise DataError(f"Annotation file {path} is empty; it needs COCO JSON with "
                        "'images', 'annotations' and 'categories'.")
    try:
        coco = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"Annotation file {path} is not valid JSON: {error}.") from None
    keys = ("images", "annotations", "categories")
    if not isinstance(coco, dict) or any(not isinstance(coco.get(k), list) for k in keys):
        raise DataError(f"Annotation file {path} is not COCO JSON: it needs the lists "
                        f"{', '.join(keys)} at the top level.")
    if not coco["images"] or not coco["categories"]:
        raise DataError(f"Annotation file {path} lists no "
                        f"{'images' if not coco['images'] else 'categories'}.")
    for im in coco["images"]:
        if not all(k in im for k in ("id", "file_name", "width", "height")):
            raise DataError(f"{path}: image entry {im} lacks id, file_name, width or height.")
    return coco


def _box_problem(ann, images, label_of):
    """Why a COCO annotation cannot be used, or None."""
    if ann.get("category_id") not in label_of:
        return (f"category_id {ann.get('category_id')} is not in the label map "
                f"(categories {sorted(label_of)})")
    image = images.get(ann.get("image_id"))
    if image is None:
        return f"image_id {ann.get('image_id')} is not in 'images'"
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) for v in box)):
        return f"bbox {box!r} is not [x, y, width, height]"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return f"bbox {box} has zero area"
    if (x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x + w > image["width"] + EDGE_TOLERANCE
            or y + h > image["height"] + EDGE_TOLERANCE):
        return (f"bbox {box} lies outside its image {image['file_name']} "
                f"({image['width']}x{image['height']})")
    return None

