"""Lower bounds on latency: a `.tflite` (float32 or int8) with whole op families cut out.

A question the benchmark has to answer: how much faster could any graph change that
keeps MobileViT's convolutions and matrix products make it under LiteRT? Cutting swish,
the LayerNorm statistics or the attention softmax out of the graph (each consumer reads
the op's input instead) gives a model that computes something else, but times
everything that is left: no rewrite of those ops (fused, approximated or moved) can beat
leaving them out. `tflite.benchmark --float-bounds` / `--int8-bounds` time these models
beside float32, int8 and ONNX Runtime.

In an int8 graph, where a consumer of the cut output needs its input's scale (XNNPACK
takes an int8 PAD, RESHAPE, TRANSPOSE or CONCATENATION only if input and output scales
agree), the tensor it now reads takes the cut output's quantization, and so do the
tensors above it up to an op that requantizes (only that op's multiplier changes, not
what it costs): every op left runs where it ran, in XNNPACK or not. A cut op's float
island goes with it: the DEQUANTIZE / QUANTIZE around a float SOFTMAX or RSQRT, and the
LayerNorm's variance floor (MAXIMUM).

Example:
    >>> content, removed = bounds.without(open("m_float32.tflite", "rb").read(), swish=True, norms=True)
    >>> content, removed = bounds.without(open("m_int8.tflite", "rb").read(), swish=True, softmax=True)
"""

import copy

from ai_edge_litert import schema_py_generated as schema

from tflite import analyze

_OP = schema.BuiltinOperator
# ops an int8 graph puts around a float island or after a variance: walked through
_EDGES = (_OP.DEQUANTIZE, _OP.QUANTIZE, _OP.MAXIMUM)
# int8 ops that XNNPACK takes only with the same scale in and out
_SAME_SCALE = (_OP.PAD, _OP.RESHAPE, _OP.TRANSPOSE, _OP.CONCATENATION, _OP.STRIDED_SLICE,
               _OP.SLICE, _OP.SQUEEZE, _OP.EXPAND_DIMS)


class _Graph:
    """Producers and consumers of subgraph 0's tensors, and walks past island edges."""

    def __init__(self, model):
        self.model, self.ops = model, model.subgraphs[0].operators
        self.consumers, self.producer = analyze.wiring(model.subgraphs[0])

    def code(self, i):
        return analyze.builtin_code(self.model.operatorCodes[self.ops[i].opcodeIndex])

    def up(self, tensor, drop):
        """The op producing `tensor`, past any `_EDGES` op (added to `drop`)."""
        i = self.producer[tensor]
        while self.code(i) in _EDGES:
            drop.add(i)
            i = self.producer[int(self.ops[i].inputs[0])]
        return i

    def down(self, tensor, drop):
        """`tensor`, or past a QUANTIZE / DEQUANTIZE that is its only consumer (to `drop`)."""
        users = self.consumers.get(tensor, [])
        while len(users) == 1 and self.code(users[0]) in (_OP.QUANTIZE, _OP.DEQUANTIZE):
            drop.add(users[0])
            tensor = int(self.ops[users[0]].outputs[0])
            users = self.consumers.get(tensor, [])
        return tensor

    def retag(self, tensor, quantization):
        """Give `tensor`, and the tensors above it through `_SAME_SCALE` ops, this
        quantization (int8 graphs: see the module docstring)."""
        tensors = self.model.subgraphs[0].tensors
        while True:
            tensors[tensor].quantization = copy.deepcopy(quantization)
            i = self.producer.get(tensor)
            if i is None or self.code(i) not in _SAME_SCALE:
                return
            tensor = int(self.ops[i].inputs[0])


def _swish(g):
    """{output of x * sigmoid(x): x} and the indices of both ops, for every swish."""
    alias, drop = {}, set()
    for i, op in enumerate(g.ops):
        if g.code(i) != _OP.MUL:
            continue
        a, b = (int(t) for t in op.inputs)
        for x, s in ((a, b), (b, a)):
            j = g.producer.get(s)
            if j is not None and g.code(j) == _OP.LOGISTIC and int(g.ops[j].inputs[0]) == x:
                alias[int(op.outputs[0])] = x
                drop |= {i, j}
                break
    return alias, drop


def _norms(g):
    """{normalized output: input} and the op indices of every `(x - mean) * rsqrt(var + eps)`
    (keras_mobilevit's LayerNorm / GroupNorm as the converter emits it: MEAN, SUB, MUL,
    MEAN, ADD, RSQRT, MUL; in int8 also the variance floor and the island's DEQUANTIZE /
    QUANTIZE; gamma and beta are folded into the next op or kept)."""
    alias, drop = {}, set()
    for i, op in enumerate(g.ops):
        if g.code(i) != _OP.RSQRT:
            continue
        add = g.up(int(op.inputs[0]), drop)
        mean_sq = g.up(int(g.ops[add].inputs[0]), drop)
        square = g.producer[int(g.ops[mean_sq].inputs[0])]
        sub = g.producer[int(g.ops[square].inputs[0])]
        mean = g.producer[int(g.ops[sub].inputs[1])]
        rsqrt = g.down(int(op.outputs[0]), drop)
        scale = next(c for c in g.consumers[rsqrt] if g.code(c) == _OP.MUL)
        alias[int(g.ops[scale].outputs[0])] = int(g.ops[sub].inputs[0])
        drop |= {i, add, mean_sq, square, sub, mean, scale}
    return alias, drop


def _softmax(g):
    """{softmax output: its logits} and the op indices of every SOFTMAX (with, in int8,
    the DEQUANTIZE / QUANTIZE of its float island)."""
    alias, drop = {}, set()
    for i, op in enumerate(g.ops):
        if g.code(i) != _OP.SOFTMAX:
            continue
        logits = int(op.inputs[0])
        j = g.producer.get(logits)
        if j is not None and g.code(j) == _OP.DEQUANTIZE:
            drop.add(j)
            logits = int(g.ops[j].inputs[0])
        alias[g.down(int(op.outputs[0]), drop)] = logits
        drop.add(i)
    return alias, drop


def without(content, swish=True, norms=False, softmax=False):
    """`content` (float32 or int8 `.tflite` bytes) with swish, the normalization
    statistics and/or the softmax cut out; returns (bytes, number of ops removed)."""
    graph = analyze.load(content)
    model = copy.deepcopy(graph.model)
    sg = model.subgraphs[0]
    g = _Graph(model)
    alias, drop = {}, set()
    for wanted, find in ((swish, _swish), (norms, _norms), (softmax, _softmax)):
        if wanted:
            a, d = find(g)
            alias.update(a)
            drop |= d
    for out in alias:  # a chain (swish then norm) resolves to the first input
        while alias[out] in alias:
            alias[out] = alias[alias[out]]
    for out, x in alias.items():
        scaled = any(g.code(c) in _SAME_SCALE for c in g.consumers.get(out, []))
        if scaled and sg.tensors[out].quantization is not None:  # int8
            g.retag(x, sg.tensors[out].quantization)
    sg.operators = [op for i, op in enumerate(sg.operators) if i not in drop]
    for op in sg.operators:
        op.inputs = [alias.get(int(t), int(t)) for t in op.inputs]
    sg.outputs = [alias.get(int(t), int(t)) for t in sg.outputs]
    return analyze.pack(model), len(drop)
