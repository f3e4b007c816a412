"""The only door to private TensorFlow / Keras / LiteRT APIs, with the versions each was verified on.

tflite/ needs a few things no public API offers (the converter's calibrate-only step and
its quantizer, a layer's consumers, every nested layer, the interpreter's execution
plan). Each is used through one function here, and `VERIFIED` records the package
versions it was checked on. When an upgrade removes or changes one, the call raises
`PrivateAPIError` naming the API, the verified versions and the installed ones, and
`tests/test_tflite_compat.py` (default suite) fails the same way.

Nothing here imports TensorFlow or Keras at module level: LiteRT-only processes (the
benchmark's timing workers) use `execution_plan` without loading TensorFlow.

Example:
    >>> compat.flatten_layers(model)          # every layer, nested ones included
    >>> compat.installed_versions()
    {'tensorflow': '2.21.0', 'keras': '3.15.1', 'ai-edge-litert': '2.3.0'}
"""

import contextlib
import importlib.metadata

# private API -> the package versions it was verified on (all of them together).
VERIFIED = {
    "tf.lite.TFLiteConverter._experimental_calibrate_only": {"tensorflow": "2.21.0"},
    "tensorflow.lite.python.convert.mlir_quantize": {"tensorflow": "2.21.0"},
    "keras.layers.Layer._outbound_nodes": {"keras": "3.15.1"},
    "keras.layers.Layer._flatten_layers": {"keras": "3.15.1"},
    "ai_edge_litert Interpreter._interpreter (NumNodes, NodeName, NodeOutputs)":
        {"ai-edge-litert": "2.3.0"},
}
_DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": ("keras",),
                  "ai-edge-litert": ("ai-edge-litert",)}


class PrivateAPIError(RuntimeError):
    """A private TensorFlow / Keras / LiteRT API this project relies on is gone or changed."""


def installed_versions():
    """{package: installed version or None} for the packages in `VERIFIED`."""
    found = {}
    for package, distributions in _DISTRIBUTIONS.items():
        found[package] = None
        for name in distributions:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                found[package] = importlib.metadata.version(name)
                break
    return found


@contextlib.contextmanager
def _fenced(api):
    """Turn the errors a removed or re-shaped private API raises into `PrivateAPIError`."""
    try:
        yield
    except (AttributeError, ImportError, TypeError) as e:
        verified = ", ".join(f"{k} {v}" for k, v in VERIFIED[api].items())
        installed = installed_versions()
        now = ", ".join(f"{k} {installed[k]}" for k in VERIFIED[api])
        raise PrivateAPIError(
            f"private API {api} (verified on {verified}; installed: {now}) no longer works: "
            f"{type(e).__name__}: {e}. Update tflite/compat.py for this version, or install "
            "the verified one.") from e


def calibrate_only(converter):
    """Make `converter.convert()` return a float model carrying calibration statistics
    (the first of the converter's two quantization steps, as its debugger runs them)."""
    api = "tf.lite.TFLiteConverter._experimental_calibrate_only"
    with _fenced(api):
        if not hasattr(converter, "_experimental_calibrate_only"):
            raise AttributeError("the converter has no attribute '_experimental_calibrate_only'")
        converter._experimental_calibrate_only = True
    return converter


def mlir_quantize(calibrated, io_dtype, output_dtype=None):
    """The converter's second step: full-integer model bytes from calibrated ones, with
    `io_dtype` ("uint8" or "int8") input and output (`output_dtype`, e.g. "float32" for a
    graph whose outputs are a float custom op's, if given). Converter errors propagate."""
    with _fenced("tensorflow.lite.python.convert.mlir_quantize"):
        # Deferred: TensorFlow is heavy, and this module must load without it.
        import tensorflow as tf
        from tensorflow.lite.python.convert import mlir_quantize as quantize

        dtype, out_dtype = getattr(tf, io_dtype), getattr(tf, output_dtype or io_dtype)
    return quantize(calibrated, input_data_type=dtype, output_data_type=out_dtype)


def outbound_layers(layer):
    """The layers (operations) that consume `layer`'s output in a functional model."""
    with _fenced("keras.layers.Layer._outbound_nodes"):
        return [node.operation for node in layer._outbound_nodes]


def flatten_layers(model):
    """Every layer inside `model` (not `model` itself), nested layers included."""
    with _fenced("keras.layers.Layer._flatten_layers"):
        return list(model._flatten_layers(include_self=False, recursive=True))


def execution_plan(interpreter):
    """[(node name, output tensor indices)] of an allocated LiteRT `Interpreter`, in
    execution order; a delegated partition is one node named "DELEGATE"."""
    with _fenced("ai_edge_litert Interpreter._interpreter (NumNodes, NodeName, NodeOutputs)"):
        wrapper = interpreter._interpreter
        return [(wrapper.NodeName(n), list(wrapper.NodeOutputs(n)))
                for n in range(wrapper.NumNodes())]
