"""Quantization-aware fine-tuning of a trained float model with the training pipeline.

    python training/train.py --qat --from runs/mobilevitv3_xxs-fashion_mnist_subset/model.keras
    python -m tflite.qat_train --from runs/mobilevitv3_xxs-fashion_mnist_subset/model.keras

(the same command twice: setup.py registers `main` as the `qat` plugin of
training/train.py, entry point group `keras_mobilevit.training_plugins`) takes every
flag of `training/train.py` (dataset, recipe, output, ...) and trains the QAT twin of
the `--from` model (`tflite.qat.make_qat_model`, activation ranges calibrated on the
training split through the eval transform) instead of the float model, by passing
`build_qat_model` to `training.train.main(argv, build_model=...)`. It writes
`model.keras` (a QAT model: reload it with `tflite.qat.load_qat_model`, convert it with
`python -m tflite.convert`) to `--output-dir`, by default `<the --from folder>-qat`.

Fine-tuning defaults (explicit flags win): 3 epochs, learning rate 1e-4 -> 1e-5 with a
short warm-up, weight EMA off; BatchNorm is already folded into the convs.
"""

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tflite` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tflite import data, qat  # noqa: E402
from training import tasks, train  # noqa: E402

QAT_DEFAULTS = ["--epochs", "3", "--lr", "1e-4", "--min-lr", "1e-5",
                "--warmup-init-lr", "1e-5", "--warmup-steps", "20", "--ema-momentum", "0"]


def build_qat_model(config):
    """The QAT twin of the float model that `config` (a training.config.TrainConfig) names,
    built by its task's model factory (a classifier, DeepLabV3, or SSDLite inside its
    training wrapper), calibrated on the run's training images."""

    def twin(model):
        _check_image_size(model, config)
        if qat.fake_quant_layers(model):  # --from a QAT classifier: keep training it
            return model
        calibration = data.calibration_images(config.to_json(), 256)
        return qat.make_qat_model(model, calibration_data=calibration)

    return tasks.get_task(config.task).build_model(config, transform=twin)


def _check_image_size(model, config):
    """QAT fine-tunes at the `--from` model's fixed input size: another --image-size is
    an argument error (it surfaced as a calibration traceback)."""
    height, width = model.inputs[0].shape[1:3]
    size = config.recipe.image_size
    if None not in (height, width) and (height, width) != (size, size):
        raise SystemExit(
            f"error: the --from model {config.from_model} takes {height}x{width} images, but "
            f"this run trains at --image-size {size}: pass --image-size {height} (QAT "
            "fine-tunes the float model at its own input size)")


def main(argv=None):
    """training/train.py ARGV with the QAT model, its defaults and output folder."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config, _ = train.parse_args(argv)
    if not config.from_model:
        raise SystemExit("error: --from PATH.keras (the trained float model) is required")
    if config.output_dir is None:
        argv += ["--output-dir", str(Path(config.from_model).resolve().parent) + "-qat"]
    if not config.qat:
        argv.append("--qat")  # recorded in config.json
    return train.main(QAT_DEFAULTS + argv, build_model=build_qat_model)


if __name__ == "__main__":
    main()
