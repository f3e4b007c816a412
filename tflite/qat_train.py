"""Quantization-aware fine-tuning of a trained float model with the training pipeline.

    python training/train.py --qat --from runs/mobilevitv3_xxs-fashion_mnist_subset/model.keras
    python -m tflite.qat_train --from runs/mobilevitv3_xxs-fashion_mnist_subset/model.keras

(the same command twice) takes every flag of `training/train.py` (dataset, recipe, output, ...) and trains the QAT
twin of the `--from` model (`tflite.qat.make_qat_model`, activation ranges calibrated on
the training split through the eval transform) instead of the float model. It writes
`model.keras` (a QAT model: reload it with `tflite.qat.load_qat_model`, convert it with
`python -m tflite.convert`) to `--output-dir`, by default `<the --from folder>-qat`.

Fine-tuning defaults (explicit flags win): 3 epochs, learning rate 1e-4 -> 1e-5 with a
short warm-up, weight EMA off; BatchNorm is already folded into the convs.
"""

import os
import sys
from pathlib import Path

QAT_DEFAULTS = ["--epochs", "3", "--lr", "1e-4", "--min-lr", "1e-5",
                "--warmup-init-lr", "1e-5", "--warmup-steps", "20", "--ema-momentum", "0"]


def _flag(argv, name):
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    source = _flag(argv, "--from")
    if not source:
        raise SystemExit("error: --from PATH.keras (the trained float model) is required")
    if _flag(argv, "--output-dir") is None:
        argv += ["--output-dir", str(Path(source).resolve().parent) + "-qat"]

    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tflite import data, qat
    from training import train as train_lib

    float_build = train_lib.build_model

    def build_qat_model(config):
        model = float_build(config)
        if qat.fake_quant_layers(model):  # --from a QAT model: keep training it
            return model
        return qat.make_qat_model(model, calibration_data=data.calibration_images(config, 256))

    # train.py's documented extension point: the one place that makes the model.
    train_lib.build_model = build_qat_model
    return train_lib.main(QAT_DEFAULTS + argv)


if __name__ == "__main__":
    sys.exit(main())
