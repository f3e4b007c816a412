"""Google's ai-edge-quantizer as the peer to beat: static int8 of a float `.tflite`.

It is what an Android engineer would try instead of our QAT/PTQ: int8 weights and
activations (its `static_wi8_ai8` recipe, min/max calibration) applied to the float32
file `tflite.convert` writes, calibrated on the same images as our int8. The LiteRT
benchmark scores and times it as one more row. Its model takes and returns int8
tensors with calibrated scales (not raw uint8 pixels): an app quantizes each pixel.

Optional dependency: `pip install -e .[bench]` (ai-edge-quantizer 0.10, which pins
ai-edge-litert 2.3, our interpreter).

Example:
    >>> from tflite import edge_quantizer
    >>> content = edge_quantizer.quantize("m_float32.tflite", images)  # images: (N, H, W, 3)
"""

import importlib.util

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tflite import analyze

RECIPE = "static_wi8_ai8"
INSTALL_HINT = "pip install 'ai-edge-quantizer>=0.10,<0.11' (or `pip install -e .[bench]`)"


def available():
    """Whether ai-edge-quantizer can be imported here."""
    return importlib.util.find_spec("ai_edge_quantizer") is not None


def quantize(float_tflite, images, recipe=RECIPE):
    """`.tflite` bytes of `float_tflite` (path or bytes) quantized by ai-edge-quantizer,
    calibrated on `images` (float32 (N, H, W, C), what the float model takes)."""
    try:  # optional and slow to import: only when asked for
        from ai_edge_quantizer import quantizer, recipe as recipes
    except ImportError as e:
        raise ImportError(f"ai-edge-quantizer is not installed: {INSTALL_HINT}") from e
    content = analyze.read_bytes(float_tflite)
    signatures = Interpreter(model_content=content).get_signature_list()
    if len(signatures) != 1:
        raise ValueError(f"expected a model with one signature, got {sorted(signatures)}")
    [(key, io)] = signatures.items()
    [name] = io["inputs"]
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"calibration images must be a non-empty (N, H, W, C) array, got "
                         f"shape {images.shape}")
    engine = quantizer.Quantizer(bytearray(content), getattr(recipes, recipe)())
    calibration = engine.calibrate({key: [{name: image[None]} for image in images]})
    result = engine.quantize(calibration, enable_progress_report=False)
    return bytes(result.quantized_model)
