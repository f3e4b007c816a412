"""A converter workaround: tie the QAT fake-quant ranges around identity LayerNorm steps.

The TFLite converter folds `x * 1` and `x + 0` away; a LayerNorm whose gamma is all ones
(beta all zeros), e.g. any untrained one, then leaves two fake-quants back to back, and
when their ranges differ its quantizer fails with "same scale constraint" on the ops
after them. `tflite.convert` exports QAT models inside `identity_steps_tied`.

Example:
    >>> with identity_steps_tied(qat_model):
    ...     export(qat_model)
"""

import contextlib

from keras import ops

from tflite import compat
from tflite.qat_layers import QLayerNorm


@contextlib.contextmanager
def identity_steps_tied(qat_model):
    """Within the block, a LayerNorm whose gamma is all ones (beta all zeros) gives the
    fake-quant after `* gamma` (`+ beta`) the range of the one before it.

    Why: the converter folds `x * 1` and `x + 0` away, which leaves two fake-quants back
    to back; when their ranges differ, its quantizer hands the wrong one to the
    same-scale ops that follow (Fold's reshape/transpose, then the fusion concat) and
    fails with "same scale constraint". Untrained LayerNorms (random-weight benchmarks,
    a freshly built model) have exactly those weights. With one range, the second
    fake-quant is exact on the first one's grid. The ranges are restored afterwards.
    """
    saved = []
    for layer in compat.flatten_layers(qat_model):
        if not isinstance(layer, QLayerNorm):
            continue
        steps = [(ops.all(layer.gamma == 1.0), "normed", "scaled"),
                 (ops.all(layer.beta == 0.0), "scaled", "out")]
        for identity, before, after in steps:
            src, dst = layer.fq[before], layer.fq[after]
            if bool(identity) and src.fixed_range is None and dst.fixed_range is None:
                saved.append((dst, dst.range_min.numpy(), dst.range_max.numpy()))
                dst.range_min.assign(src.range_min)
                dst.range_max.assign(src.range_max)
    try:
        yield qat_model
    finally:
        for fq, lo, hi in reversed(saved):
            fq.range_min.assign(lo)
            fq.range_max.assign(hi)
