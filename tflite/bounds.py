"""Lower bounds on float32 latency: the float `.tflite` with whole op families cut out.

A question the float32 benchmark has to answer: how much faster could any graph change
that keeps MobileViT's convolutions and matrix products make it under LiteRT? Cutting
swish and the LayerNorm statistics out of the graph (each consumer reads the op's input
instead) gives a model that computes something else, but times everything that is left:
no rewrite of those ops (fused, approximated or moved) can beat leaving them out.
`tflite.benchmark --float-bounds` times these models beside float32 and ONNX Runtime.

Example:
    >>> content = bounds.without(open("m_float32.tflite", "rb").read(), swish=True, norms=True)
"""

import copy

from ai_edge_litert import schema_py_generated as schema

from tflite import analyze

_OP = schema.BuiltinOperator


def _code(model, op):
    oc = model.operatorCodes[op.opcodeIndex]
    return max(oc.builtinCode, oc.deprecatedBuiltinCode)


def _swish(model, ops, producer):
    """{output of x * sigmoid(x): x} and the indices of both ops, for every swish."""
    alias, drop = {}, set()
    for i, op in enumerate(ops):
        if _code(model, op) != _OP.MUL:
            continue
        a, b = (int(t) for t in op.inputs)
        for x, s in ((a, b), (b, a)):
            j = producer.get(s)
            if j is not None and _code(model, ops[j]) == _OP.LOGISTIC and int(ops[j].inputs[0]) == x:
                alias[int(op.outputs[0])] = x
                drop |= {i, j}
                break
    return alias, drop


def _norms(model, ops, producer):
    """{normalized output: input} and the op indices of every `(x - mean) * rsqrt(var + eps)`
    (keras_mobilevit's LayerNorm / GroupNorm as the converter emits it: MEAN, SUB, MUL,
    MEAN, ADD, RSQRT, MUL; gamma and beta are folded into the next op or kept)."""
    consumers = {}
    for i, op in enumerate(ops):
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(i)
    alias, drop = {}, set()
    for i, op in enumerate(ops):
        if _code(model, op) != _OP.RSQRT:
            continue
        add = producer[int(op.inputs[0])]
        mean_sq = producer[int(ops[add].inputs[0])]
        square = producer[int(ops[mean_sq].inputs[0])]
        sub = producer[int(ops[square].inputs[0])]
        mean = producer[int(ops[sub].inputs[1])]
        scale = next(c for c in consumers[int(op.outputs[0])] if _code(model, ops[c]) == _OP.MUL)
        alias[int(ops[scale].outputs[0])] = int(ops[sub].inputs[0])
        drop |= {i, add, mean_sq, square, sub, mean, scale}
    return alias, drop


def without(content, swish=True, norms=False):
    """`content` (float32 `.tflite` bytes) with swish and/or the normalization statistics
    cut out; returns (bytes, number of ops removed)."""
    graph = analyze.load(content)
    model = copy.deepcopy(graph.model)
    sg = model.subgraphs[0]
    producer = {int(t): i for i, op in enumerate(sg.operators) for t in op.outputs}
    alias, drop = {}, set()
    for wanted, find in ((swish, _swish), (norms, _norms)):
        if wanted:
            a, d = find(model, sg.operators, producer)
            alias.update(a)
            drop |= d
    sg.operators = [op for i, op in enumerate(sg.operators) if i not in drop]
    for op in sg.operators:
        op.inputs = [alias.get(int(t), int(t)) for t in op.inputs]
    sg.outputs = [alias.get(int(t), int(t)) for t in sg.outputs]
    return analyze.pack(model), len(drop)
