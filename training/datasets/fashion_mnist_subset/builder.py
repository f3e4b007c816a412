"""TFDS builder for the Fashion-MNIST subset stored next to this file.

It reads only the bundled IDX files, so `download_and_prepare()` never touches the
network (unlike `tfds.load("fashion_mnist")`, whose checksums do not match Debian's
re-compressed copy and which retries downloads for minutes when offline).

Example:
    >>> from training.datasets.fashion_mnist_subset import FashionMnistSubset
    >>> builder = FashionMnistSubset(data_dir="/tmp/tfds")
    >>> builder.download_and_prepare()
    >>> ds = builder.as_dataset(split="train", as_supervised=True)  # (28, 28, 1) uint8, int64
"""

from pathlib import Path

import tensorflow_datasets as tfds

from training.datasets.fashion_mnist_subset import make_subset

HERE = Path(__file__).resolve().parent
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class FashionMnistSubset(tfds.core.GeneratorBasedBuilder):
    """Class-balanced Fashion-MNIST subset: 10,000 train and 3,000 test images."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "1,000 train / 300 test images per class (seed 0)."}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "A class-balanced subset of Fashion-MNIST (Zalando): 28x28 grey "
                "images of 10 clothing classes. Train images come from the official "
                "training set, test images from the official test set."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            license="MIT (Copyright 2017 Zalando SE); see LICENSE next to the data.",
            citation=(
                "@article{xiao2017fashion, title={Fashion-MNIST: a Novel Image Dataset "
                "for Benchmarking Machine Learning Algorithms}, author={Xiao, Han and "
                "Rasul, Kashif and Vollgraf, Roland}, journal={arXiv:1708.07747}, "
                "year={2017}}"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is bundled
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split):
        images = make_subset.read_idx(HERE / f"{split}-images-idx3-ubyte.gz")
        labels = make_subset.read_idx(HERE / f"{split}-labels-idx1-ubyte.gz")
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image[..., None], "label": int(label)}
