"""Conversion to `.tflite`, quantization-aware training and LiteRT benchmarks for keras_mobilevit.

Modules: `convert` (Keras -> .tflite, CLI), `qat` (fake-quant QAT on Keras 3),
`analyze` (op lists, int8 and builtin checks), `op_profile` (per-op LiteRT timing),
`benchmark` (latency, size, memory, accuracy; CLI), `android` (labels + I/O spec),
`baseline_onnx` (ONNX Runtime + timm reference, run in a separate venv).
"""
