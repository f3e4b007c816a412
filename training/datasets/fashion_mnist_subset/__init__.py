"""The bundled Fashion-MNIST subset, as a TFDS builder (importing registers it)."""

from training.datasets.fashion_mnist_subset.builder import FashionMnistSubset
