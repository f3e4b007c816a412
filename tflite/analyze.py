"""Read a `.tflite` flatbuffer: op list, tensor types, builtin-only and int8 checks.

Example:
    >>> from tflite import analyze
    >>> graph = analyze.load("model.tflite")
    >>> analyze.non_builtin_ops(graph)   # [] for a deployable model
    >>> analyze.float_ops(graph)         # ops that still compute in float
"""

import dataclasses
import os
import struct

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.interpreter import OpResolverType

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16"}
# What a corrupt flatbuffer that passed the verifier raises while it is read (a string
# that is not UTF-8, an index past the end of a table, an absent table).
_PARSE_ERRORS = (UnicodeDecodeError, IndexError, KeyError, TypeError, AttributeError,
                 ValueError, OverflowError, struct.error)


class TFLiteFileError(ValueError):
    """The bytes are not a complete, valid `.tflite` flatbuffer."""


@dataclasses.dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple
    is_constant: bool
    scale: tuple = ()
    zero_point: tuple = ()


@dataclasses.dataclass(frozen=True)
class Op:
    index: int
    name: str  # builtin name such as "CONV_2D"; "CUSTOM:<code>" for custom and Flex ops
    inputs: tuple  # of Tensor
    outputs: tuple  # of Tensor

    @property
    def is_builtin(self):
        return not self.name.startswith("CUSTOM:")

    @property
    def custom_name(self):
        """The custom op's name ("TFLite_Detection_PostProcess"), None for a builtin."""
        return None if self.is_builtin else self.name[len("CUSTOM:"):]

    @property
    def float_tensors(self):
        return [t for t in self.inputs + self.outputs if t.dtype in _FLOAT_TYPES]

    def __str__(self):
        ins = ", ".join(t.dtype for t in self.inputs)
        outs = ", ".join(t.dtype for t in self.outputs)
        where = self.outputs[0].name if self.outputs else "?"
        return f"#{self.index} {self.name}({ins}) -> ({outs}) at '{where}'"


@dataclasses.dataclass
class Graph:
    """Subgraph 0 of a `.tflite` file, with the raw bytes kept for interpreters."""

    content: bytes
    model: object  # schema.ModelT
    ops: list
    inputs: list
    outputs: list

    @property
    def size_bytes(self):
        return len(self.content)

    def op_counts(self):
        counts = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def read_bytes(model):
    """Return the bytes of `model` (a path or bytes) after checking they form a valid flatbuffer."""
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            content = f.read()
        source = os.fspath(model)
    else:
        content = bytes(model)
        source = "<bytes>"
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise TFLiteFileError(
            f"{source}: not a .tflite file ({len(content)} bytes, missing the 'TFL3' identifier)"
        )
    try:
        # The interpreter runs the flatbuffer verifier, which catches truncation.
        Interpreter(
            model_content=content,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    except ValueError as e:
        if "not a valid Flatbuffer" in str(e):
            raise TFLiteFileError(
                f"{source}: truncated or corrupt .tflite file ({len(content)} bytes): {e}"
            ) from None
        # Any other failure (e.g. unresolved Flex ops) is for the op checks to report.
    return content


def load(model):
    """Parse a `.tflite` file (path, bytes or Graph) into a `Graph`.

    Raises:
        TFLiteFileError: the bytes are not a complete, valid `.tflite` file.
    """
    if isinstance(model, Graph):
        return model
    content = read_bytes(model)
    try:
        return _parse(content)
    except _PARSE_ERRORS as e:
        source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<bytes>"
        raise TFLiteFileError(f"{source}: corrupt .tflite file ({len(content)} bytes): "
                              f"{type(e).__name__}: {e}") from None


def _parse(content):
    m = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    sg = m.subgraphs[0]
    codes = [_op_name(oc) for oc in m.operatorCodes]
    tensors = [_tensor(m, sg, i) for i in range(len(sg.tensors))]
    ops = []
    for i, o in enumerate(sg.operators or []):
        ins = tuple(_at(tensors, j) for j in (o.inputs if o.inputs is not None else []) if j >= 0)
        outs = tuple(_at(tensors, j) for j in (o.outputs if o.outputs is not None else []))
        ops.append(Op(i, _at(codes, o.opcodeIndex), ins, outs))
    return Graph(content=content, model=m, ops=ops,
                 inputs=[_at(tensors, i) for i in sg.inputs],
                 outputs=[_at(tensors, i) for i in sg.outputs])


def _at(items, index):
    """`items[index]`, refusing the negative indices Python would count from the end."""
    if not 0 <= index < len(items):
        raise IndexError(f"index {index} out of range for {len(items)} entries")
    return items[index]


def builtin_code(oc):
    """The `schema.BuiltinOperator` value of an operator code (old files keep codes < 127
    in the deprecated field, new ones in `builtinCode`)."""
    return max(oc.builtinCode, oc.deprecatedBuiltinCode)


def wiring(sg):
    """({tensor: [indices of the ops reading it]}, {tensor: index of the op writing it})
    of a `schema.SubGraphT`."""
    consumers, producer = {}, {}
    for i, op in enumerate(sg.operators):
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(i)
        for t in op.outputs:
            producer[int(t)] = i
    return consumers, producer


def _op_name(oc):
    code = builtin_code(oc)
    name = _OP_NAMES.get(code, str(code))
    if name == "CUSTOM":
        custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
        name = f"CUSTOM:{custom}"
    return name


def pack(model):
    """`.tflite` bytes of a `schema.ModelT` (e.g. an edited `Graph.model`)."""
    builder = flatbuffers.Builder(1024)  # grows as needed
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor(m, sg, i):
    t = sg.tensors[i]
    buf = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
    const = buf is not None and (
        (buf.data is not None and len(buf.data) > 0) or getattr(buf, "size", 0) > 0
    )
    q = t.quantization
    scale = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
    zp = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
    name = t.name.decode() if isinstance(t.name, bytes) else (t.name or "")
    shape = tuple(int(s) for s in t.shape) if t.shape is not None else ()
    return Tensor(i, name, _TYPE_NAMES.get(t.type, str(t.type)), shape, const, scale, zp)


# Custom ops that LiteRT's default op resolver registers (an app needs no custom
# resolver for them): the only non-builtin ops a deployable graph may hold.
# TFLite_Detection_PostProcess ends the SSD detectors (tflite/detection.py).
ALLOWED_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess"})


def non_builtin_ops(model, allowed=ALLOWED_CUSTOM_OPS):
    """Ops that need a custom op resolver or the Flex (TensorFlow) delegate; the custom
    ops LiteRT registers by default (`allowed`) are not counted."""
    return [op for op in load(model).ops if not op.is_builtin and op.custom_name not in allowed]


def allowed_custom_ops(model, allowed=ALLOWED_CUSTOM_OPS):
    """The graph's custom ops that LiteRT registers by default (e.g. the detection
    post-processing): not builtin, but deployable as they are."""
    return [op for op in load(model).ops if op.custom_name in allowed]


def float_ops(model):
    """Ops that read or write a float tensor: in a full-integer graph these should be none."""
    return [op for op in load(model).ops if op.float_tensors]


# LiteRT's int8 / uint8 ADD rescales the output by 2 * max(input scales) /
# (2**20 * output scale) and aborts the process in Prepare (a CHECK, not an error) when
# that is not below 1: an output range some million times narrower than an input's.
# (Its SUB takes such rescales: a SUB at 2.2 loads and runs.)
_RESCALED_OPS = ("ADD",)
_ADD_LEFT_SHIFT = 20


def unrepresentable_rescales(model):
    """`(op, multiplier)` for each 8-bit ADD whose output rescale LiteRT cannot
    represent: loading such a model aborts the app (`allocate_tensors` dies of SIGABRT)."""
    bad = []
    for op in load(model).ops:
        if op.name not in _RESCALED_OPS or len(op.inputs) != 2 or not op.outputs:
            continue
        tensors = (*op.inputs, op.outputs[0])
        if any(t.dtype not in ("int8", "uint8") or len(t.scale) != 1 for t in tensors):
            continue
        out_scale = op.outputs[0].scale[0]
        twice_max = 2 * max(t.scale[0] for t in op.inputs)
        multiplier = twice_max / (2 ** _ADD_LEFT_SHIFT * out_scale) if out_scale > 0 else np.inf
        if not multiplier < 1.0:
            bad.append((op, multiplier))
    return bad


def io_spec(model):
    """Input and output tensors as the app sees them: name, shape, dtype, scale, zero point."""
    g = load(model)

    def spec(t):
        d = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
        if t.scale:
            d["quantization"] = {"scale": t.scale[0], "zero_point": t.zero_point[0]}
        return d

    return {"inputs": [spec(t) for t in g.inputs], "outputs": [spec(t) for t in g.outputs]}


def random_inputs(model, seed=0):
    """One random array per input, matching dtype and shape (pixels for 8-bit inputs)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in load(model).inputs:
        if t.dtype in ("uint8", "int8"):
            info = np.iinfo(t.dtype)
            out.append(rng.integers(info.min, info.max + 1, t.shape).astype(t.dtype))
        elif t.dtype in _FLOAT_TYPES:
            out.append(rng.uniform(0, 255, t.shape).astype(t.dtype))
        else:
            out.append(np.zeros(t.shape, t.dtype))
    return out
