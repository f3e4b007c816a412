"""The Fashion-MNIST scene dataset (segmentation + detection), as a TFDS builder
(importing registers it) and its generator."""

from training.datasets.fashion_scenes.builder import FashionScenes
