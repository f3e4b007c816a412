"""The alternative a user has today: timm's PyTorch MobileViT exported to ONNX, run by
ONNX Runtime on the CPU. Used by `tflite.benchmark` as the float32 latency reference.

A user can export a timm model two ways, and ONNX Runtime runs the two files at
different speeds, so both are made and timed (`EXPORTERS`):
- "torchscript": `torch.onnx.export(..., dynamo=False)`, the TorchScript tracer;
- "dynamo": `torch.onnx.export(..., dynamo=True)`, torch.export + onnxscript (the
  default of current torch).

Runs in its own virtual environment (torch is no dependency of this project). This
line builds one that works (timm imports torchvision, whose build must match torch's,
hence the two pins; an unpinned torchvision broke an earlier venv):

    python3 -m venv /work/venv-baseline2 && /work/venv-baseline2/bin/pip install \
        "torch==2.14.1" "torchvision==0.29.1" timm onnx onnxscript onnxruntime
    /work/venv-baseline2/bin/python tflite/baseline_onnx.py --models mobilevit_xs --json out.json

Weights are random (pretrained=False): latency does not depend on weight values.
Timing matches `tflite.latency`: warm-up runs, then p50/p90 over timed runs (the
`perf_counter` time of one `run` each), batch 1, NCHW float32 input at the given size,
`intra_op_num_threads` = threads.
"""

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

TIMM_MODELS = ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050", "mobilevitv2_100")
EXPORTERS = ("torchscript", "dynamo")
OPSET = 18


def export(name, size, path, exporter="torchscript"):
    """Write timm's `name` (random weights) as one self-contained ONNX file at `path`;
    returns its parameter count."""
    import timm
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}: one of {', '.join(EXPORTERS)}")
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        if exporter == "dynamo":
            program = torch.onnx.export(model, (x,), input_names=["pixels"],
                                        output_names=["logits"], opset_version=OPSET,
                                        dynamo=True, optimize=True)
            program.save(path, external_data=False)
        else:
            torch.onnx.export(model, (x,), path, input_names=["pixels"],
                              output_names=["logits"], opset_version=OPSET, dynamo=False)
    return sum(p.numel() for p in model.parameters())


def session(path, threads, size, seed=0):
    """An ONNX Runtime CPU session and a function running it once on a fixed input."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).uniform(0, 1, (1, 3, size, size)).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def timed(run, count):
    """Seconds of each of `count` runs."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def time_session(path, threads, warmup, runs, size):
    run = session(path, threads, size)
    timed(run, warmup)
    ms = np.array(timed(run, runs)) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "runs": runs, "warmup": warmup}


def serve(name, size, threads, exporter="torchscript"):
    """Export, load, then answer stdin lines "RUN n" with a JSON list of n run times
    (seconds) on stdout, until "QUIT": lets a caller time ONNX Runtime in rounds
    interleaved with another runtime, so machine load hits both alike."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}_{exporter}.onnx")
        # stdout carries the protocol: the dynamo exporter's progress lines go to stderr
        with contextlib.redirect_stdout(sys.stderr):
            params = export(name, size, path, exporter)
        run = session(path, threads, size)
        print(json.dumps({"ready": True, "params": params, "size_bytes": os.path.getsize(path),
                          "exporter": exporter, **runtime_info()}), flush=True)
        for line in sys.stdin:
            command = line.split()
            if not command or command[0] == "QUIT":
                break
            print(json.dumps(timed(run, int(command[1]))), flush=True)


def runtime_info():
    import onnxruntime
    import timm
    import torch

    return {"runtime": f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)",
            "exported_from": f"timm {timm.__version__}, torch {torch.__version__}",
            "python": platform.python_version()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TIMM_MODELS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--exporters", nargs="+", choices=EXPORTERS, default=list(EXPORTERS),
                        help="how to export (default: both; --serve takes the first)")
    parser.add_argument("--json", default=None, help="write results here (default: stdout)")
    parser.add_argument("--serve", action="store_true",
                        help="time one model in rounds on request (see `serve`)")
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.models[0], args.size, args.threads[0], args.exporters[0])
    results = {"info": runtime_info(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            results["models"][name] = {
                exporter: _export_and_time(name, exporter, tmp, args) for exporter in args.exporters}
    text = json.dumps(results, indent=2)
    if args.json:  # atomically: this venv has no keras_mobilevit.fileio
        with open(args.json + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.json + ".tmp", args.json)
    else:
        print(text)
    return 0


def _export_and_time(name, exporter, tmp, args):
    path = os.path.join(tmp, f"{name}_{exporter}.onnx")
    params = export(name, args.size, path, exporter)
    entry = {"params": params, "size_bytes": os.path.getsize(path), "size": args.size,
             "latency": {}}
    for threads in args.threads:
        entry["latency"][str(threads)] = time_session(
            path, threads, args.warmup, args.runs, args.size)
    print(f"{name} ({exporter}): " + ", ".join(f"{t} thread(s) p50 {v['p50_ms']:.1f} ms"
                                               for t, v in entry["latency"].items()),
          file=sys.stderr)
    return entry


if __name__ == "__main__":
    sys.exit(main())
