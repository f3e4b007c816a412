"""Training, evaluation and benchmarking of keras_mobilevit models (see README.md)."""
