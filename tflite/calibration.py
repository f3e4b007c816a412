"""Calibration images for int8: where they come from, and refusing those that do not fit the model.

int8 ranges are only as good as the images they are measured on, and a wrong set
converts without any error, just a worse model. So every set is checked: shape against
the model input, finite values, and pixels in the range the model takes (raw [0, 255]
by default: not normalized to [0, 1], not 16-bit, not shifted to [-128, 127], not one
constant colour). A source is also checked against the model before any image is read:
"training" (the training pipeline's images) is only taken for a model whose training
run is known (its `config.json`).

Example:
    >>> images = calibration.calibration_data("training", (32, 32, 3), 100, run_dir="runs/x")
    >>> samples = calibration.representative_samples(images, (32, 32, 3), 100)
"""

import os

import numpy as np

from tflite import data

RAW_PIXELS = (0.0, 255.0)
# How far outside the pixel range values may lie (a fraction of its width): resampling
# can overshoot a little; 16-bit or int8-shifted pixels are far outside.
RANGE_SLACK = 0.1
# A whole set of raw-pixel images whose brightest value is under 2% of the range is a
# normalized set ([0, 1], or mean/std standardized), not dark photos.
NORMALIZED_BELOW = 0.02
SOURCES = "'training', 'random' or a .npz/.npy path"


class RepresentativeDatasetError(ValueError):
    """The calibration data is empty, wrongly shaped or in the wrong pixel range."""


class CalibrationSourceError(ValueError):
    """The calibration source does not fit the model (or does not exist)."""


def representative_samples(data, input_shape, num_samples=100, pixel_range=RAW_PIXELS):
    """Validate calibration data and return it as float32 (N, H, W, C), N <= num_samples.

    `data` may be a numpy array (N, H, W, C) or (H, W, C), a `tf.data.Dataset` or any
    iterable whose elements are images, batches of images, or `(images, labels)` pairs.
    `pixel_range`: the values the model takes (see `check_pixel_range`); None skips it.
    """
    if data is None:
        raise RepresentativeDatasetError(
            "full-integer int8 conversion needs a representative dataset (calibration images)")
    if int(num_samples) < 1:
        raise RepresentativeDatasetError(
            f"the number of calibration samples must be at least 1, got {num_samples}")
    if isinstance(data, np.ndarray):
        data = [data] if data.ndim == len(input_shape) else data
    elif hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()
    samples = []
    for element in _images(data):
        x = np.asarray(element)
        batch = x[None] if x.ndim == len(input_shape) else x
        if batch.ndim != len(input_shape) + 1 or any(
                want is not None and got != want for got, want in zip(batch.shape[1:], input_shape)):
            raise RepresentativeDatasetError(
                f"representative sample {len(samples)} has shape {x.shape}; the model takes "
                f"{tuple(input_shape)} images (optionally batched)")
        samples.extend(batch[: num_samples - len(samples)])
        if len(samples) >= num_samples:
            break
    if not samples:
        raise RepresentativeDatasetError("the representative dataset is empty")
    out = np.stack(samples).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise RepresentativeDatasetError("the representative dataset contains NaN or inf")
    if pixel_range is not None:
        check_pixel_range(out, pixel_range)
    return out


def check_pixel_range(images, pixel_range=RAW_PIXELS):
    """Refuse images whose values do not look like pixels in `pixel_range` (lo, hi)."""
    lo, hi = pixel_range
    low, high = float(images.min()), float(images.max())
    seen = f"representative images lie in [{low:.6g}, {high:.6g}]"
    slack = RANGE_SLACK * (hi - lo)
    if low < lo - slack or high > hi + slack:
        raise RepresentativeDatasetError(
            f"{seen}, outside the model's pixel range [{lo:g}, {hi:g}] (16-bit images? pixels "
            f"shifted to int8?): pass pixels in [{lo:g}, {hi:g}] as the model takes them")
    if low == high:
        raise RepresentativeDatasetError(
            f"every value of the {len(images)} representative images is {low:g} (e.g. all-black "
            "images): they carry no activation ranges; calibrate on real images")
    if hi > 1.0 and high <= max(1.0, lo + NORMALIZED_BELOW * (hi - lo)):
        raise RepresentativeDatasetError(
            f"{seen} but the model takes pixels in [{lo:g}, {hi:g}] (normalized images, e.g. "
            "divided by 255 or by a std?): pass raw (unnormalized) pixels")


def _images(data):
    for element in data:
        if isinstance(element, dict):
            element = element.get("image", next(iter(element.values())))
        elif isinstance(element, (tuple, list)):
            element = element[0]
        yield element


def check_source(source, input_shape, run_dir=None):
    """Refuse a calibration `source` that cannot fit a model taking `input_shape` images,
    before anything is read or converted (`calibration_data` takes the same sources).

    "training" needs `run_dir`, the model's training run (its config.json names the
    dataset and image size the model was trained on): without it, the bundled default
    dataset (grey 32x32 Fashion-MNIST) would calibrate a model trained on anything."""
    if source == "training":
        if run_dir is None or not os.path.exists(os.path.join(run_dir, "config.json")):
            raise CalibrationSourceError(
                "--calib training takes the images the model was trained on from its training "
                "run's config.json (next to its model.keras), and this model has none: pass "
                "--calib IMAGES.npz (an 'images' array of raw RGB pixels like the model's "
                "training data), or --calib random for latency work only")
        trained = data.run_config(run_dir).get("pipeline", {}).get("image_size")
        if trained is not None and tuple(input_shape[:2]) != (trained, trained):
            raise CalibrationSourceError(
                f"the training run {run_dir} used {trained}x{trained} images but the model "
                f"takes {input_shape[0]}x{input_shape[1]}: convert at --input-size {trained} "
                "or pass --calib IMAGES.npz at the model's size")
    elif source != "random" and not source.endswith((".npz", ".npy")):
        raise CalibrationSourceError(f"unknown calibration source {source!r}: {SOURCES}")
    elif source.endswith((".npz", ".npy")) and not os.path.isfile(source):
        raise CalibrationSourceError(f"calibration file {source} does not exist")


def calibration_data(source, input_shape, num_samples=100, run_dir=None, seed=0):
    """Calibration images from `source`, checked with `check_source` first.

    "training": the training run's (`run_dir`) train split through its eval transform;
    a `.npz` / `.npy` path: an array of images (key "images" in an npz);
    "random": uniform noise pixels, only for latency work, never for accuracy.
    """
    check_source(source, input_shape, run_dir)
    if source == "training":
        return data.calibration_images(data.run_config(run_dir), num_samples)
    if source == "random":
        rng = np.random.default_rng(seed)
        return rng.uniform(0, 255, (num_samples, *input_shape)).astype(np.float32)
    return _read_images(source)


def _read_images(path):
    """The image array of a .npy, or of a .npz (its "images", else its only array)."""
    try:
        if not path.endswith(".npz"):
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f.files and len(f.files) != 1:
                raise CalibrationSourceError(
                    f"{path} holds {len(f.files)} arrays {f.files[:5]} and none named "
                    "'images': save the calibration images as images=...")
            return f["images" if "images" in f.files else f.files[0]]
    except CalibrationSourceError:
        raise
    except Exception as e:  # noqa: BLE001  (a damaged .npz/.npy fails in numpy or zipfile)
        raise CalibrationSourceError(
            f"cannot read calibration images from {path} ({type(e).__name__}: "
            f"{str(e)[:200]}): save them with numpy.savez(path, images=array)") from None
