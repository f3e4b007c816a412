"""Where training images come from: a TFDS dataset (the bundled one by default) or a
folder of class sub-folders. Both read as (image, label) pairs where `image` is still
encoded, so decoding and cropping happen together in the input pipeline.

Nothing here downloads unless asked: an unknown name, unprepared data or a broken image
raises `DataError` at once, with what to do about it.

Example:
    >>> source = open_source()                                 # bundled Fashion-MNIST subset
    >>> source = open_source("tf_flowers", data_dir="~/tensorflow_datasets")
    >>> source = open_source(image_folder="photos/")           # photos/<class>/*.jpg
    >>> source.class_names, source.num_examples(source.train_split)
    >>> ds = source.read(source.train_split)                   # (encoded image, label)
"""

import difflib
import os
import zlib
from pathlib import Path

import tensorflow as tf
import tensorflow_datasets as tfds

from training.datasets.fashion_mnist_subset import FashionMnistSubset

DEFAULT_DATASET = "fashion_mnist_subset"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
EVAL_SPLITS = ("validation", "val", "test")
HOLDOUT_PERCENT = 10  # held out of "train" when a dataset has no eval split


class DataError(ValueError):
    """The dataset cannot be used as asked; the message says how to fix it."""


def open_source(dataset=None, image_folder=None, data_dir=None, manual_dir=None,
                download=False, train_split=None, eval_split=None, check_images=True):
    """A `TfdsSource` or `FolderSource` ready to read (see the module docstring)."""
    if dataset and image_folder:
        raise DataError("Pass either --dataset or --image-folder, not both.")
    if image_folder:
        source = FolderSource(image_folder)
    else:
        source = TfdsSource(dataset or DEFAULT_DATASET, data_dir, manual_dir, download)
    source.choose_splits(train_split, eval_split)
    if check_images and isinstance(source, FolderSource):
        source.check_images()
    return source


class _Source:
    """Split bookkeeping shared by both kinds of source."""

    name: str
    class_names: list

    def split_names(self):
        raise NotImplementedError

    def choose_splits(self, train_split=None, eval_split=None):
        """Picks the train and eval splits; without an eval split, holds out 10% of train."""
        names = self.split_names()
        for split in (train_split, eval_split):
            if split and self._base(split) not in names:
                raise DataError(f"{self.name} has no split {split!r}; its splits are "
                                f"{sorted(names)}. Choose with --train-split/--eval-split.")
        train_split = train_split or ("train" if "train" in names else sorted(names)[0])
        eval_split = eval_split or next((s for s in EVAL_SPLITS if s in names), None)
        if eval_split is None:
            eval_split = f"{train_split}[-{HOLDOUT_PERCENT}%:]"
            train_split = f"{train_split}[:-{HOLDOUT_PERCENT}%]"
        self.train_split, self.eval_split = train_split, eval_split

    @staticmethod
    def _base(split):
        return split.split("[")[0]


class TfdsSource(_Source):
    """A TFDS dataset by name ("tf_flowers", "imagenette/320px-v2", ...)."""

    def __init__(self, name, data_dir=None, manual_dir=None, download=False):
        self.name = name
        self.builder = _tfds_builder(name, data_dir)
        if not self.builder.is_prepared():
            self._prepare(manual_dir, download)
        features, keys = self.builder.info.features, self.builder.info.supervised_keys
        if not (keys and len(keys) == 2 and isinstance(features[keys[0]], tfds.features.Image)
                and isinstance(features[keys[1]], tfds.features.ClassLabel)):
            raise DataError(f"TFDS dataset {name!r} is not an image classification dataset "
                            f"(its supervised keys are {keys}, features {features}).")
        self.keys = keys
        self.class_names = list(features[keys[1]].names)

    def _prepare(self, manual_dir, download):
        builder = self.builder
        if isinstance(builder, FashionMnistSubset) or download or manual_dir:
            config = tfds.download.DownloadConfig(
                manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
            builder.download_and_prepare(download_config=config)
            return
        if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
            how = ("It needs files you download yourself; then pass their folder as "
                   f"--manual-dir. {builder.name}'s instructions:\n"
                   + builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip())
        else:
            how = ("Pass --download to download and prepare it (needs internet), or "
                   f"prepare it elsewhere with `tfds build {self.name} --data_dir DIR` "
                   "and pass that DIR as --data-dir.")
        raise DataError(f"TFDS dataset {self.name!r} is not prepared in "
                        f"{builder.data_dir}. {how}")

    def split_names(self):
        return set(self.builder.info.splits)

    def num_examples(self, split):
        return self.builder.info.splits[split].num_examples

    def size_bytes(self, split):
        """Bytes of encoded data in `split` (for the cache decision)."""
        info = self.builder.info.splits[self._base(split)]
        return info.num_bytes * self.num_examples(split) // max(1, info.num_examples)

    def read(self, split, num_shards=1, shard=0, shuffle=False):
        """(encoded image, int64 label) of one of `num_shards` even parts of `split`."""
        if num_shards > 1:
            split = tfds.even_splits(split, num_shards)[shard]
        image_key, label_key = self.keys
        ds = self.builder.as_dataset(
            split, shuffle_files=shuffle, decoders={image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(try_autocache=False))
        return ds.map(lambda ex: (ex[image_key], ex[label_key]),
                      num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_builder(name, data_dir):
    """`tfds.builder`, failing fast (never reaching the network) on unknown names."""
    known = tfds.list_builders(with_community_datasets=False)
    base = name.split("/")[0].split(":")[0]
    if base not in known:
        close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise DataError(
            f"Unknown TFDS dataset {name!r}.{hint} Run `tfds.list_builders()` for all "
            "names, leave out --dataset for the bundled Fashion-MNIST subset, or pass "
            "--image-folder PATH for a folder of class sub-folders.")
    try:
        return tfds.builder(name, data_dir=os.path.expanduser(data_dir) if data_dir else None)
    except Exception as error:  # e.g. an unknown config or version of a known dataset
        raise DataError(f"Cannot open TFDS dataset {name!r}: {error}") from error


class FolderSource(_Source):
    """Images in `root/<class>/*` or `root/<split>/<class>/*` (JPEG, PNG, BMP, GIF).

    With class folders at the top, 10% of each class (chosen by a hash of the file
    name, so stable as files are added) is held out as "validation".
    """

    def __init__(self, root):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"--image-folder {root} is not a directory.")
        self.name = root.name
        top = _subfolders(root)
        if any(_images(folder) for folder in top):  # root/<class>/<image>
            self.class_names = [f.name for f in top]
            self.splits = _holdout(self._examples(root))
        else:  # root/<split>/<class>/<image>
            self.class_names = sorted({c.name for split in top for c in _subfolders(split)})
            self.splits = {split.name: self._examples(split) for split in top}
            self.splits = {k: v for k, v in self.splits.items() if v}
        if not self.splits or len(self.class_names) < 2:
            raise DataError(
                f"--image-folder {root} holds no usable images: expected at least two "
                f"class folders with {'/'.join(IMAGE_EXTENSIONS)} files, as "
                f"{root}/<class>/<image> or {root}/<split>/<class>/<image>.")

    def _examples(self, folder):
        """[(path, label index)] of the class folders in `folder`."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return [(str(path), index[c.name]) for c in _subfolders(folder) for path in _images(c)]

    def choose_splits(self, train_split=None, eval_split=None):
        names = self.split_names()
        if not eval_split and not any(s in names for s in EVAL_SPLITS):
            # Hold out here: split-slicing strings ("train[:-10%]") are TFDS-only.
            base = train_split or ("train" if "train" in names else sorted(names)[0])
            if base in names:
                held = _holdout(self.splits[base])
                self.splits[base], self.splits["validation"] = held["train"], held["validation"]
        super().choose_splits(train_split, eval_split)

    def split_names(self):
        return set(self.splits)

    def num_examples(self, split):
        return len(self.splits[split])

    def size_bytes(self, split):
        return sum(os.path.getsize(path) for path, _ in self.splits[split])

    def read(self, split, num_shards=1, shard=0, shuffle=False):
        """(file bytes, int64 label) of every `num_shards`-th file from `shard`."""
        examples = self.splits[split][shard::num_shards]
        paths = tf.constant([p for p, _ in examples])
        labels = tf.constant([label for _, label in examples], tf.int64)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if shuffle:  # file order; the pipeline shuffles examples too
            ds = ds.shuffle(len(examples))
        return ds.map(lambda path, label: (tf.io.read_file(path), label),
                      num_parallel_calls=tf.data.AUTOTUNE)

    def check_images(self):
        """Raises DataError naming every file that does not decode."""
        paths = [p for examples in self.splits.values() for p, _ in examples]
        bad = find_unreadable_images(paths)
        if bad:
            listed = "\n  ".join(bad[:20]) + ("\n  ..." if len(bad) > 20 else "")
            raise DataError(
                f"{len(bad)} of {len(paths)} image files in --image-folder cannot be "
                f"decoded (corrupt, truncated or not an image):\n  {listed}\n"
                "Delete or replace them (or pass --skip-image-check to find out later).")


def find_unreadable_images(paths):
    """The paths whose file does not decode as an image, in input order.

    Decodes in parallel with tf.data; a failing element is dropped by `ignore_errors`,
    so the missing indices name the broken files.
    """
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string)).enumerate()
    ds = ds.map(lambda i, path: (i, tf.shape(tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False))),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().map(lambda i, shape: i).batch(4096)
    readable = set()
    for indices in ds.as_numpy_iterator():
        readable.update(indices.tolist())
    return [p for i, p in enumerate(paths) if i not in readable]


def _subfolders(folder):
    return sorted((f for f in folder.iterdir() if f.is_dir()), key=lambda f: f.name)


def _images(folder):
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def _holdout(examples):
    """{"train": ..., "validation": ...}: 10% of files by a stable hash of their name."""
    def held(path):
        return zlib.crc32(os.path.basename(path).encode()) % 100 < HOLDOUT_PERCENT
    return {"train": [e for e in examples if not held(e[0])],
            "validation": [e for e in examples if held(e[0])]}
