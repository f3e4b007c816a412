"""keras_mobilevit: MobileViT v1/v2/v3 for Keras 3, from ImageNet weights to int8 TFLite."""

from setuptools import find_packages, setup

TF = "tensorflow-cpu>=2.21,<2.22"
EXTRAS = {
    # The model code is backend-agnostic Keras; training/ and tflite/ need TensorFlow.
    "cpu": [TF],
    "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    "jax": ["jax[cpu]>=0.4.30"],
    # tensorflow-datasets 4.9.10 imports importlib_resources without declaring it.
    # tensorboard: tensorflow-cpu does not pull it, and train.py writes TensorBoard logs.
    # pycocotools: COCO mAP of detection runs (not hand-written); pillow: PNG masks.
    "train": ["tensorflow-datasets>=4.9.10,<4.10", "importlib_resources>=6", "matplotlib>=3.8",
              "tensorboard>=2.21,<2.22", "pycocotools>=2.0.8,<3", "pillow>=10"],
    # mediapipe: the TFLite metadata schema bindings (tflite/metadata.py) and, in the
    # tests, MediaPipe Tasks' ImageClassifier / ImageSegmenter running our files.
    "tflite": ["ai-edge-litert>=2.3,<2.4", "mediapipe>=1.2.2,<1.3"],
    # The benchmark's peer row: Google's ai-edge-quantizer (pins ai-edge-litert 2.3 too).
    "bench": ["ai-edge-quantizer>=0.10,<0.11"],
}
EXTRAS["test"] = sorted({*EXTRAS["cpu"], *EXTRAS["jax"], *EXTRAS["train"], *EXTRAS["tflite"],
                         *EXTRAS["bench"], "pytest>=8", "pytest-xdist>=3.5", "ruff>=0.15,<0.18"})

setup(
    name="keras_mobilevit",
    version="0.1.0",
    description="MobileViT v1, v2 and v3 for Keras 3 with the official ImageNet weights",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_mobilevit", "keras_mobilevit.*"]),
    package_data={"keras_mobilevit": ["data/*.json", "data/*.md"]},
    install_requires=["keras>=3.15,<4", "numpy>=2.0,<3", "h5py>=3.10"],
    extras_require=EXTRAS,
    # training/ finds these by group and never imports tflite by name (training/train.py
    # PLUGIN_GROUP: `--qat` runs tflite.qat_train.main; training/models.py LAYER_PLUGINS:
    # modules whose import registers Keras layers, so their saved models load).
    entry_points={
        "keras_mobilevit.training_plugins": ["qat = tflite.qat_train:main"],
        "keras_mobilevit.keras_layers": ["qat = tflite.qat"],
    },
)
