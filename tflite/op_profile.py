"""Per-op latency of a `.tflite` under LiteRT: where does the time go?

The LiteRT Python API has no op profiler, so each op is cut out into a one-op model
(same tensors, quantization and constant buffers) and timed alone with the same
interpreter settings (XNNPACK on). The sum over ops is close to, and usually a little
above, the whole-model latency (each one-op model pays an invoke overhead; XNNPACK
fuses nothing across them). The column `xnnpack` says whether the default delegate took
the op; ops it refuses run on the builtin reference/optimized kernels.

One known overcount: in the whole model XNNPACK fuses a zero PAD into the CONV_2D /
DEPTHWISE_CONV_2D after it (the PyTorch-style padding of the stride-2 convs), so the
PAD rows' time is not spent there (mobilevit_xs float32: ~2 ms of PAD alone, none in
the whole model; measured by timing the stem with and without the explicit PAD).

Command line:
    python -m tflite.op_profile model.tflite [--threads 1] [--top 25] [--json out.json]
"""

import argparse
import copy
import json
import sys
import time

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from keras_mobilevit import fileio
from tflite import analyze, interpreter


def single_op_model(graph, op_index):
    """Bytes of a model holding only op `op_index` of `graph` (subgraph 0)."""
    g = analyze.load(graph)
    m, sg = g.model, g.model.subgraphs[0]
    op = sg.operators[op_index]
    used = list(dict.fromkeys(
        i for i in list(op.inputs) + list(op.outputs) + list(op.intermediates if op.intermediates is not None else [])
        if i >= 0
    ))
    remap = {old: new for new, old in enumerate(used)}
    buffers = [schema.BufferT()]  # buffer 0 is the empty sentinel
    tensors = []
    for old in used:
        t = copy.copy(sg.tensors[old])
        src = m.buffers[t.buffer]
        if src.data is not None and len(src.data):
            buffers.append(src)
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
        tensors.append(t)
    new_op = copy.copy(op)
    new_op.opcodeIndex = 0
    new_op.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
    new_op.outputs = [remap[i] for i in op.outputs]
    if op.intermediates is not None:
        new_op.intermediates = [remap[i] for i in op.intermediates]
    sub = schema.SubGraphT()
    sub.tensors = tensors
    sub.operators = [new_op]
    sub.inputs = [remap[i] for i in dict.fromkeys(op.inputs)
                  if i >= 0 and tensors[remap[i]].buffer == 0]
    sub.outputs = new_op.outputs
    model = schema.ModelT()
    model.version = m.version
    model.operatorCodes = [m.operatorCodes[op.opcodeIndex]]
    model.subgraphs = [sub]
    model.buffers = buffers
    return analyze.pack(model)


def time_invoke(content, num_threads=1, min_runs=10, min_seconds=0.05, warmup=2, seed=0):
    """Median seconds per invoke and whether XNNPACK took the (single) op."""
    it = interpreter.ready(content, num_threads, seed)
    delegated = interpreter.has_delegate(it)
    for _ in range(warmup):
        it.invoke()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), delegated


def profile(model, num_threads=1):
    """One row per op: index, op, output shape and dtype, median ms, xnnpack, location."""
    g = analyze.load(model)
    rows = []
    for op in g.ops:
        seconds, delegated = time_invoke(single_op_model(g, op.index), num_threads)
        out = op.outputs[0] if op.outputs else None
        rows.append({
            "index": op.index,
            "op": op.name,
            "in_dtype": op.inputs[0].dtype if op.inputs else "",
            "out_shape": list(out.shape) if out else [],
            "out_dtype": out.dtype if out else "",
            "ms": seconds * 1e3,
            "xnnpack": delegated,
            "location": out.name if out else "",
        })
    return rows


def by_op_type(rows):
    """Total ms and count per (op, dtype, xnnpack), largest first."""
    agg = {}
    for r in rows:
        key = (r["op"], r["in_dtype"], r["xnnpack"])
        ms, n = agg.get(key, (0.0, 0))
        agg[key] = (ms + r["ms"], n + 1)
    return sorted(((k, ms, n) for k, (ms, n) in agg.items()), key=lambda x: -x[1])


def report(rows, top=25):
    total = sum(r["ms"] for r in rows)
    lines = [f"sum of per-op medians: {total:.2f} ms over {len(rows)} ops",
             "", f"{'op':<22}{'dtype':<9}{'xnnpack':<9}{'count':>6}{'ms':>9}{'share':>8}"]
    for (op, dtype, xnn), ms, n in by_op_type(rows):
        lines.append(f"{op:<22}{dtype:<9}{str(xnn):<9}{n:>6}{ms:>9.2f}{ms / total:>8.1%}")
    lines += ["", f"top {top} ops:"]
    for r in sorted(rows, key=lambda r: -r["ms"])[:top]:
        lines.append(f"  {r['ms']:7.3f} ms  #{r['index']:<4} {r['op']:<16} {r['in_dtype']:<7}"
                     f" xnnpack={str(r['xnnpack']):<5} {r['out_shape']}  {r['location'][:70]}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tflite.op_profile", description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", default=None, help="write the per-op rows here")
    args = parser.parse_args(argv)
    rows = profile(args.model, args.threads)
    print(report(rows, args.top))
    if args.json:
        fileio.write_text_atomic(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
