"""Conversion to `.tflite`, quantization-aware training and LiteRT benchmarks for keras_mobilevit.

Modules: `convert` (Keras -> .tflite, CLI), `qat` (fake-quant QAT on Keras 3),
`qat_train` (QAT fine-tuning through training/, CLI), `rewrite` (int8 float islands),
`analyze` (op lists, int8 and builtin checks), `op_profile` (per-op LiteRT timing, CLI),
`benchmark` (latency, size, memory, accuracy; CLI), `data` (calibration and eval images
from the training pipeline), `android` (labels + I/O spec), `baseline_onnx` (ONNX
Runtime + timm reference, run in a separate venv). See tflite/README.md.
"""
