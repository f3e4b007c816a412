"""Edit a converted int8 `.tflite`: run chosen ops in float between DEQUANTIZE and
QUANTIZE (a "float island"), keeping every int8 tensor and its quantization.

Why: LiteRT's XNNPACK delegate has no int8 SOFTMAX or RSQRT. Left int8, those ops fall
back to builtin kernels (the int8 softmax of MobileViT's attention is ~5x slower than
XNNPACK's float one) and split the delegated graph into pieces. As float islands they
run inside XNNPACK; the int8 tensors around them are unchanged, so accuracy only gains.

Example:
    >>> fast = rewrite.float_islands(int8_bytes, ("SOFTMAX", "RSQRT"))
"""

import copy

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tflite import analyze

_INT8 = (schema.TensorType.INT8, schema.TensorType.UINT8)


def _opcode(model, builtin):
    for i, oc in enumerate(model.operatorCodes):
        if analyze.builtin_code(oc) == builtin:
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode = builtin
    oc.deprecatedBuiltinCode = min(builtin, 127)  # the field holds codes < 127 only
    oc.version = 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _float_tensor(sg, like, name):
    t = schema.TensorT()
    t.shape = list(like.shape) if like.shape is not None else []
    t.shapeSignature = like.shapeSignature
    t.type = schema.TensorType.FLOAT32
    t.buffer = 0
    t.name = name
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _float_constant(model, sg, index):
    """A float32 copy of a quantized constant tensor (e.g. an epsilon)."""
    t = sg.tensors[index]
    q = t.quantization
    raw = np.asarray(model.buffers[t.buffer].data, dtype=np.uint8).tobytes()
    dtype = {schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8,
             schema.TensorType.INT32: np.int32, schema.TensorType.INT16: np.int16}[t.type]
    values = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    values = (values - np.asarray(q.zeroPoint, np.float32)) * np.asarray(q.scale, np.float32)
    buf = schema.BufferT()
    buf.data = np.frombuffer(values.astype(np.float32).tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    new = _float_tensor(sg, t, (t.name or b"") + b"_float")
    sg.tensors[new].buffer = len(model.buffers) - 1
    return new


def float_islands(content, op_names=("SOFTMAX", "RSQRT"), epsilon_adds=True, ops=()):
    """Rewrite every int8 op named in `op_names`, and the ops at the indices `ops`, to
    compute in float32.

    With `epsilon_adds`, an int8 ADD of a scalar constant that feeds one of those ops
    (the `var + eps` before RSQRT: its quantized epsilon makes XNNPACK refuse it) joins
    the island. Consecutive island ops share float tensors, with no requantization.
    An op of `ops` reads an int8 input that was only requantized for it (a QUANTIZE from
    int8 to int8, e.g. each input of a CONCATENATION brought to the output's scale) at
    its original scale. A QUANTIZE whose int8 output is only dequantized again is
    skipped: its readers get the float tensor.
    """
    graph = analyze.load(content)
    targets = _targets(graph, set(op_names), epsilon_adds) | set(ops)
    if not targets:
        return content
    model = copy.deepcopy(graph.model)
    sg = model.subgraphs[0]
    consumers, producer = analyze.wiring(sg)
    outputs = {int(t) for t in sg.outputs}
    dequantize, quantize = _opcode(model, schema.BuiltinOperator.DEQUANTIZE), \
        _opcode(model, schema.BuiltinOperator.QUANTIZE)
    float_of = {}  # int8 tensor -> its float twin, for outputs of island ops
    new_ops = []
    for i, op in enumerate(sg.operators):
        if i not in targets:
            new_ops.append(op)
            continue
        inputs = []
        for t in op.inputs:
            t = int(t)
            if i in ops:
                t = _unrequantized(model, sg, t, producer, consumers, targets, outputs)
            tensor = sg.tensors[t] if t >= 0 else None
            if tensor is None or not _is_quantized(tensor):  # float, or indices / shapes
                inputs.append(t)
            elif _is_constant(model, tensor):
                inputs.append(_float_constant(model, sg, t))
            elif t in float_of:
                inputs.append(float_of[t])
            else:
                f = _float_tensor(sg, tensor, (tensor.name or b"") + b"_dequantized")
                new_ops.append(_op(dequantize, [t], [f]))
                inputs.append(f)
        island = copy.copy(op)
        island.inputs = inputs
        island.outputs = []
        requantize = []
        for t in op.outputs:
            t = int(t)
            if sg.tensors[t].type not in _INT8:  # already float (e.g. a custom op's)
                island.outputs.append(t)
                continue
            f = _float_tensor(sg, sg.tensors[t], (sg.tensors[t].name or b"") + b"_float")
            float_of[t] = f
            island.outputs.append(f)
            # Requantize only if something outside the island reads the int8 tensor.
            if t in outputs or any(c not in targets for c in consumers.get(t, [])):
                requantize.append(_op(quantize, [f], [t]))
        new_ops.append(island)
        new_ops.extend(requantize)
    sg.operators = _without_dead_ops(_without_round_trips(model, new_ops, outputs), outputs)
    return analyze.pack(model)


def _unrequantized(model, sg, t, producer, consumers, targets, outputs):
    """The int8 tensor a requantizing QUANTIZE read to make `t`, if only island ops read
    `t`; else `t`."""
    op = sg.operators[producer[t]] if t in producer else None
    if (op is None or t in outputs
            or any(c not in targets for c in consumers.get(t, []))):
        return t
    source = int(op.inputs[0])
    if _is(model, op, schema.BuiltinOperator.QUANTIZE) and sg.tensors[source].type in _INT8:
        return source
    return t


def _is(model, op, builtin):
    """Whether `op` is the builtin op `builtin` (a `schema.BuiltinOperator` value)."""
    return analyze.builtin_code(model.operatorCodes[op.opcodeIndex]) == builtin


def _without_round_trips(model, ops, outputs):
    """`ops` with each QUANTIZE -> DEQUANTIZE pair on an otherwise unread int8 tensor
    removed: the DEQUANTIZE's readers read the QUANTIZE's float input instead."""
    readers = {}
    for op in ops:
        for t in op.inputs:
            readers.setdefault(int(t), []).append(op)
    writer_of = {int(t): op for op in ops for t in op.outputs}
    tensors = model.subgraphs[0].tensors
    replace = {}
    for op in ops:
        if not _is(model, op, schema.BuiltinOperator.DEQUANTIZE):
            continue
        q = int(op.inputs[0])
        writer = writer_of.get(q)
        if (writer is not None and _is(model, writer, schema.BuiltinOperator.QUANTIZE)
                and q not in outputs
                and len(readers.get(q, [])) == 1
                and tensors[int(writer.inputs[0])].type == schema.TensorType.FLOAT32
                and int(op.outputs[0]) not in outputs):
            replace[int(op.outputs[0])] = int(writer.inputs[0])
    for op in ops:
        op.inputs = [replace.get(int(t), int(t)) for t in op.inputs]
    return ops


def _without_dead_ops(ops, outputs):
    """`ops` less those whose outputs nothing reads (repeated until none is left)."""
    while True:
        read = {int(t) for op in ops for t in op.inputs} | outputs
        alive = [op for op in ops if any(int(t) in read for t in op.outputs)]
        if len(alive) == len(ops):
            return ops
        ops = alive


def _targets(graph, op_names, epsilon_adds):
    picked = {op.index for op in graph.ops
              if op.name in op_names and op.inputs and op.inputs[0].dtype in ("int8", "uint8")}
    if epsilon_adds:
        producer = {t.index: op for op in graph.ops for t in op.outputs}
        for index in list(picked):
            src = producer.get(graph.ops[index].inputs[0].index)
            if src is not None and src.name == "ADD" and any(
                    t.is_constant and int(np.prod(t.shape)) <= 1 for t in src.inputs):
                picked.add(src.index)
    return picked


def _is_quantized(tensor):
    """An 8-bit tensor, or an int32 one with a scale (a quantized bias or epsilon)."""
    q = tensor.quantization
    scaled = q is not None and q.scale is not None and len(q.scale) > 0
    return tensor.type in _INT8 or (tensor.type == schema.TensorType.INT32 and scaled)


def _is_constant(model, tensor):
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _op(opcode, inputs, outputs):
    op = schema.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = inputs
    op.outputs = outputs
    return op
