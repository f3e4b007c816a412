"""Measure `.tflite` models under LiteRT in this process: latency, peak memory, predictions.

The functions here run where they are called; `tflite.workers` runs them in fresh
processes that never import TensorFlow (as an app runs LiteRT). Latency is warm-up,
then p50/p90 over timed invokes of batch 1; models compared are timed in interleaved
rounds so that machine load hits them alike.

Example:
    >>> latency.latency({"float32": "m_float32.tflite", "int8": "m_int8.tflite"}, threads=1)
    {'float32': {'p50_ms': 22.6, 'p90_ms': 23.2, ...}, 'int8': {...}}
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

from tflite import interpreter

# Run in a fresh process: its resident memory before and after loading and running the
# model. (VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.)
_MEMORY_PROBE = """
import sys
from tflite import interpreter
def status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key + ":"))
before = status_kb("VmRSS")
it = interpreter.ready(sys.argv[1], int(sys.argv[2]))
for _ in range(3):
    it.invoke()
print(before, status_kb("VmHWM"))
"""


def stats(seconds, warmup, threads):
    """p50 / p90 / mean in ms of the timed `seconds`, with how they were taken."""
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "runs": len(ms), "warmup": warmup, "threads": threads}


def timed_invokes(it, count):
    """Seconds of each of `count` invokes of the interpreter `it`."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t0)
    return times


def latency(paths, threads=1, warmup=10, runs=50, rounds=10):
    """p50/p90/mean ms per invoke for each `{label: path}`, timed in interleaved rounds."""
    timed = latency_by_threads(paths, (threads,), warmup, runs, rounds)
    return {label: by_threads[threads] for label, by_threads in timed.items()}


def latency_by_threads(paths, thread_counts=(1, 2), warmup=10, runs=50, rounds=10):
    """{label: {threads: p50/p90/mean ms}}: each `{label: path}` at each thread count, all
    in the same interleaved rounds, so that a speed-up from more threads is measured side
    by side (a busy second core hits the 1- and the N-thread invokes alike; timed one
    after the other, a change of load between them moves the speed-up).

    Example:
        >>> latency_by_threads({"int8": "m_int8.tflite"}, (1, 2))
        {'int8': {1: {'p50_ms': 5.8, ...}, 2: {'p50_ms': 3.1, ...}}}
    """
    its = {(label, t): interpreter.ready(p, t) for label, p in paths.items()
           for t in thread_counts}
    for it in its.values():
        timed_invokes(it, warmup)
    times = {key: [] for key in its}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for key, it in its.items():
            times[key] += timed_invokes(it, per_round)
    timed = {label: {} for label in paths}
    for (label, t), ts in times.items():
        timed[label][t] = stats(ts, warmup, t)
    return timed


def peak_memory(path, threads=1):
    """Peak resident memory (bytes) of a fresh process that loads and runs the model,
    and the part of it above the process right before loading."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, path, str(threads)],
                         capture_output=True, text=True, env=project_env(), check=True)
    before, peak = map(int, out.stdout.split()[-2:])
    return {"peak_rss_bytes": peak * 1024, "model_rss_bytes": max(0, peak - before) * 1024}


def project_env():
    """The environment for a child Python process that imports this project."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))


def predict(path, images, threads=1):
    """Class scores for each image (dequantized), one invoke per image (batch 1)."""
    return predict_outputs(path, images, threads)[0]


def predict_outputs(path, images, threads=1):
    """Every output of the model for each image, in the graph's output order, stacked
    over the images ([N, ...] each; quantized outputs dequantized, others as they are:
    a uint8 class map stays class indices). One invoke per image (batch 1)."""
    it = interpreter.ready(path, threads)
    inp, outs = it.get_input_details()[0], it.get_output_details()
    scale, zero = inp["quantization"]
    results = [[] for _ in outs]
    for image in images:
        x = image[None].astype(np.float32)
        if inp["dtype"] in (np.uint8, np.int8):
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        for out, found in zip(outs, results):
            y = it.get_tensor(out["index"])
            oscale, ozero = out["quantization"]
            if oscale:  # a quantized tensor (scale 0: not quantized)
                y = (y.astype(np.float32) - ozero) * oscale
            found.append(y[0])
    return [np.stack(found) for found in results]


def invoke(path, threads=1, count=3):
    """Load `path` and invoke it `count` times (does the interpreter survive it?)."""
    it = interpreter.ready(path, threads)
    timed_invokes(it, count)
    return True


def serve(path, threads=1):
    """Time one model for a timing server (`workers.TimingServer`): "RUN n" on stdin,
    a JSON list of n invoke times (seconds) on stdout; "QUIT" or EOF ends it."""
    it = interpreter.ready(path, threads)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "QUIT":
            break
        print(json.dumps(timed_invokes(it, int(command[1]))), flush=True)
