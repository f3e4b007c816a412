"""LiteRT interpreter set-up, written once: load a model, allocate, feed inputs; what XNNPACK took.

Everything that runs a `.tflite` (benchmark timing, predictions, the memory probe, the
per-op profiler) starts from `ready`, so they all run the model the same way: the
default XNNPACK delegate, `num_threads`, and the same random inputs for a seed.
This module never imports TensorFlow (the benchmark's timing processes use it).

Example:
    >>> it = interpreter.ready("model.tflite", num_threads=1)
    >>> it.invoke()
    >>> interpreter.delegated_ops("model.tflite")   # indices of the ops XNNPACK runs
"""

import os

from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tflite import analyze, compat

# `ready(..., experimental_op_resolver_type=WITHOUT_DELEGATES)`: LiteRT's own kernels, every
# intermediate tensor readable (with experimental_preserve_all_tensors=True)
WITHOUT_DELEGATES = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def ready(model, num_threads=1, seed=0, **options):
    """An allocated `Interpreter` on `model` (a path or bytes) with random inputs set
    (`analyze.random_inputs`); `options` go to the `Interpreter`."""
    source = ({"model_path": os.fspath(model)} if isinstance(model, (str, os.PathLike))
              else {"model_content": bytes(model)})
    it = Interpreter(**source, num_threads=num_threads, **options)
    it.allocate_tensors()
    for detail, x in zip(it.get_input_details(), analyze.random_inputs(model, seed)):
        it.set_tensor(detail["index"], x)
    return it


def has_delegate(it):
    """Whether the default delegate took any op of the allocated interpreter `it`."""
    return any(name == "DELEGATE" for name, _ in compat.execution_plan(it))


def delegated_ops(model, num_threads=1):
    """Indices of the ops that the default XNNPACK delegate takes over."""
    g = analyze.load(model)
    # one delegate node per op, appended after the model's own nodes
    plan = compat.execution_plan(ready(g.content, num_threads,
                                       experimental_disable_delegate_node_fusion=True))
    by_output = {op.outputs[0].index: op.index for op in g.ops if op.outputs}
    return {by_output[t] for _, outputs in plan[len(g.ops):] for t in outputs if t in by_output}
