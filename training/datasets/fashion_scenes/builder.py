"""TFDS builder for the Fashion-MNIST scenes, rendered at first use by make_scenes.py.

Nothing rendered is committed: `download_and_prepare()` draws every scene from the
bundled Fashion-MNIST subset with the deterministic generator (about a minute on one
core) and TFDS stores it in its data dir like any prepared dataset. It never touches
the network.

Features per scene: `image` uint8 [96, 96, 3]; `segmentation_mask` uint8 [96, 96, 1]
(0 background, 1..10 classes, 255 ignore); `objects`: `bbox` (TFDS' normalized
[ymin, xmin, ymax, xmax]) and `label` (0..9, the Fashion-MNIST class; +1 in masks).

Example:
    >>> from training.datasets.fashion_scenes import FashionScenes
    >>> builder = FashionScenes(data_dir="/tmp/tfds")
    >>> builder.download_and_prepare()
    >>> ds = builder.as_dataset(split="test")
"""

import numpy as np
import tensorflow_datasets as tfds

from training.datasets.fashion_scenes import make_scenes


class FashionScenes(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST objects on cluttered 96x96 canvases: 4,000 train, 500 test scenes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"make_scenes.py, seed {make_scenes.SEED}."}

    def _info(self):
        size = make_scenes.SIZE
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "1-4 tinted Fashion-MNIST garments per scene on a canvas with gradient, "
                "stripes, noise and garment fragments; per-pixel masks (255 on object "
                "rims) and tight boxes from the same pixels. Train scenes use the "
                "subset's training images, test scenes its held-out test images."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3)),
                "segmentation_mask": tfds.features.Image(shape=(size, size, 1)),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=make_scenes.CLASS_NAMES),
                }),
            }),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            license="MIT (Fashion-MNIST, Copyright 2017 Zalando SE); see "
                    "../fashion_mnist_subset/LICENSE.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # rendered from bundled files
        return {split: self._generate_examples(split) for split in make_scenes.SPLITS}

    def _generate_examples(self, split):
        size = make_scenes.SIZE
        for index in range(make_scenes.SPLITS[split]):
            image, mask, boxes, labels = make_scenes.scene(split, index)
            x, y, w, h = (boxes.T / size).astype(np.float32)
            yield index, {
                "image": image,
                "segmentation_mask": mask[..., None],
                "objects": {"bbox": np.stack([y, x, y + h, x + w], axis=-1).reshape(-1, 4),
                            "label": labels - 1},
            }
