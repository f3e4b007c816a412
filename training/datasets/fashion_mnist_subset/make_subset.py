"""Rebuilds the bundled Fashion-MNIST subset from the full dataset.

The files next to this script were made with the defaults, from Debian's
`dataset-fashion-mnist` package (the upstream IDX files, re-compressed by Debian):

    apt-get install dataset-fashion-mnist
    python training/datasets/fashion_mnist_subset/make_subset.py

Each split is class-balanced and drawn with a fixed seed, so the output is reproducible.
The held-out "test" split comes from the official test set, never from training images.
"""

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
HERE = Path(__file__).resolve().parent


def read_idx(path):
    """Reads a gzipped IDX file (the MNIST format) into a uint8 array."""
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path, array):
    """Writes a uint8 array as gzipped IDX; mtime=0 keeps the bytes reproducible."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def balanced_subset(labels, per_class, rng):
    """Indices of `per_class` random examples of every class, in random order."""
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class]
              for c in range(int(labels.max()) + 1)]
    return rng.permutation(np.concatenate(picked))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for split, official, per_class in (("train", "train", args.train_per_class),
                                       ("test", "t10k", args.test_per_class)):
        images = read_idx(args.source / f"{official}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{official}-labels-idx1-ubyte.gz")
        keep = balanced_subset(labels, per_class, rng)
        write_idx(HERE / f"{split}-images-idx3-ubyte.gz", images[keep])
        write_idx(HERE / f"{split}-labels-idx1-ubyte.gz", labels[keep])
        print(f"{split}: {len(keep)} images from {official} ({per_class} per class)")


if __name__ == "__main__":
    main()
