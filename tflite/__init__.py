"""Conversion to `.tflite`, quantization-aware training and LiteRT benchmarks for keras_mobilevit.

Modules (one job each; the table in tflite/README.md): `convert` (Keras -> .tflite, CLI),
`calibration` (calibration images and their checks), `qat_layers` (the fake-quant QAT
layers), `qat` (a float model's QAT twin and its calibration), `folding` (input
preprocessing folded into the stem conv), `range_ties` (a converter workaround),
`qat_train` (QAT fine-tuning through training/, CLI), `rewrite` (int8 float islands),
`analyze` (read a .tflite), `interpreter` (LiteRT set-up), `op_profile` (per-op timing,
CLI), `bounds` (float32 lower bounds), `latency` (measurement), `workers` (process
isolation), `benchmark` (the benchmark run, CLI), `benchmark_report` (JSON, Markdown,
plot), `compat` (private TensorFlow / Keras / LiteRT APIs), `data` (images from the
training pipeline), `android` (labels + I/O spec), `baseline_onnx` (ONNX Runtime + timm
reference, run in a separate venv).
"""
