"""Benchmark `.tflite` models under LiteRT (`ai_edge_litert`, XNNPACK on): latency,
file size, peak memory, and top-1 on a held-out split; ONNX Runtime as the reference.

Two parts, either or both in one run:

- accuracy (`--float-run RUN_DIR [--qat-run RUN_DIR]`): the float model a training run
  wrote (RUN_DIR/model.keras, RUN_DIR/config.json), converted to float32, PTQ int8 and
  QAT int8 `.tflite`, evaluated on the run's held-out split with its eval transform:
  top-1, agreement with the float Keras model, latency at the trained size.
- latency (`--latency-models mobilevitv3_xs ...`): each variant at `--size` (256) with
  random weights (latency does not depend on weight values), float32 vs PTQ int8
  under LiteRT, and, for the v1/v2 variants timm has, ONNX Runtime running timm's
  export of the same model (`--baseline-python`, see `baseline_onnx.py`).
  LiteRT work runs in processes that never import TensorFlow (see `isolated`).

Ratios are always measured side by side in the same run: int8 vs float32 in interleaved
rounds in one process, LiteRT vs ONNX Runtime in alternating single runs of two timing
processes, so that machine load hits both alike.

    python -m tflite.benchmark --float-run runs/mobilevitv3_xxs-fashion_mnist_subset \\
        --qat-run runs/mobilevitv3_xxs-qat --latency-models mobilevitv3_xs mobilevit_xs \\
        --baseline-python /work/venv-baseline/bin/python --out tflite/results
"""

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from tflite import analyze

# keras_mobilevit name -> timm name, for the ONNX Runtime reference.
TIMM_NAMES = {"mobilevit_xxs": "mobilevit_xxs", "mobilevit_xs": "mobilevit_xs",
              "mobilevit_s": "mobilevit_s", "mobilevitv2_050": "mobilevitv2_050",
              "mobilevitv2_075": "mobilevitv2_075", "mobilevitv2_100": "mobilevitv2_100",
              "mobilevitv2_125": "mobilevitv2_125", "mobilevitv2_150": "mobilevitv2_150",
              "mobilevitv2_175": "mobilevitv2_175", "mobilevitv2_200": "mobilevitv2_200"}


def machine_info():
    """Where the numbers come from: CPU, cores, load, runtime versions."""
    import ai_edge_litert
    import tensorflow as tf

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        from importlib.metadata import version
        litert_version = version("ai-edge-litert")
    except Exception:  # noqa: BLE001  (metadata missing in odd installs)
        litert_version = getattr(ai_edge_litert, "__version__", "unknown")
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "interpreter": f"ai_edge_litert {litert_version} Interpreter, default XNNPACK delegate",
        "converter": f"tensorflow {tf.__version__}",
    }


def _interpreter(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    for detail, x in zip(it.get_input_details(), analyze.random_inputs(path)):
        it.set_tensor(detail["index"], x)
    return it


def latency(paths, threads=1, warmup=10, runs=50, rounds=10):
    """p50/p90/mean ms per invoke for each `{label: path}`, timed in interleaved rounds."""
    its = {label: _interpreter(p, threads) for label, p in paths.items()}
    for it in its.values():
        for _ in range(warmup):
            it.invoke()
    times = {label: [] for label in its}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for label, it in its.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                it.invoke()
                times[label].append(time.perf_counter() - t0)
    return {label: _stats(ts, warmup, threads) for label, ts in times.items()}


_MEMORY_PROBE = """
import sys
from tflite import analyze
from ai_edge_litert.interpreter import Interpreter
def status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key + ":"))
before = status_kb("VmRSS")
it = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]))
it.allocate_tensors()
for d, x in zip(it.get_input_details(), analyze.random_inputs(sys.argv[1])):
    it.set_tensor(d["index"], x)
for _ in range(3):
    it.invoke()
print(before, status_kb("VmHWM"))
"""


def peak_memory(path, threads=1):
    """Peak resident memory (bytes) of a fresh process that loads and runs the model,
    and the part of it above the process right before loading. (VmHWM, not ru_maxrss:
    Linux carries ru_maxrss over from the forking parent across exec.)"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, path, str(threads)],
                         capture_output=True, text=True, env=env, check=True)
    before, peak = map(int, out.stdout.split()[-2:])
    return {"peak_rss_bytes": peak * 1024, "model_rss_bytes": max(0, peak - before) * 1024}


def predict_tflite(path, images, threads=1):
    """Class scores for each image (dequantized), one invoke per image (batch 1)."""
    it = _interpreter(path, threads)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp["quantization"]
    oscale, ozero = out["quantization"]
    scores = []
    for image in images:
        x = image[None].astype(np.float32)
        if inp["dtype"] in (np.uint8, np.int8):
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] in (np.uint8, np.int8):
            y = (y - ozero) * oscale
        scores.append(y[0])
    return np.stack(scores)


class WorkerError(RuntimeError):
    """A worker raised an exception (the message is the worker's); e.g. a conversion
    refused by `convert`."""


def isolated(function, retry=True, **kwargs):
    """Run one of `WORKER_FUNCTIONS` in a fresh process that never imports TensorFlow.

    LiteRT then runs as an app would run it: no TensorFlow threads, memory or second
    TFLite runtime (the converter's) in the process being measured. A worker killed by
    a signal is run once more (`retry`); a second death raises
    `subprocess.CalledProcessError`, an exception in the worker `WorkerError`.
    """
    with tempfile.TemporaryDirectory() as tmp:
        for key, value in list(kwargs.items()):
            if isinstance(value, np.ndarray):
                np.save(os.path.join(tmp, key + ".npy"), value)
                kwargs[key] = {"npy": os.path.join(tmp, key + ".npy")}
        spec, out = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.npy")
        with open(spec, "w") as f:
            json.dump({"function": function, "kwargs": kwargs, "out": out}, f)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        command = [sys.executable, "-m", "tflite.benchmark", "--worker", spec]
        code = subprocess.run(command, env=env).returncode
        if code < 0 and retry:
            # Killed by a signal: TensorFlow has died with SIGSEGV at random partway
            # through long runs (see `convert_isolated`). One retry, said out loud; a
            # second death is an error (a crash that repeats is a bug to report).
            print(f"benchmark: the {function} worker died of a signal; retrying once",
                  file=sys.stderr, flush=True)
            subprocess.run(command, check=True, env=env)
        elif code:
            if os.path.exists(out + ".error"):
                with open(out + ".error") as f:
                    raise WorkerError(f.read())
            raise subprocess.CalledProcessError(code, command)
        result = np.load(out, allow_pickle=True)
        return result[()] if result.dtype == object and result.shape == () else result


def _worker(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    kwargs = {k: np.load(v["npy"]) if isinstance(v, dict) and "npy" in v else v
              for k, v in spec["kwargs"].items()}
    try:
        result = WORKER_FUNCTIONS[spec["function"]](**kwargs)
    except Exception as e:
        with open(spec["out"] + ".error", "w") as f:
            f.write(f"{type(e).__name__}: {e}")
        raise
    if not isinstance(result, np.ndarray):  # dicts and lists travel as a 0-d object array
        holder = np.empty((), dtype=object)
        holder[()] = result
        result = holder
    np.save(spec["out"], result, allow_pickle=True)


def _delegated(model):
    return sorted(analyze.delegated_ops(model))


def _profile(model):
    from tflite import op_profile

    return op_profile.profile(model)


def _convert_job(keras_path, out, mode, calibration=None, ptq="auto"):
    """Convert the `.keras` at `keras_path` to `out` (`ptq` as in `convert.convert`)."""
    from tflite import convert

    model = convert.load_keras_model(keras_path)
    _write(out, convert.convert(model, mode, calibration, ptq=ptq))
    return out


def convert_isolated(keras_path, out, mode, calibration=None, **kwargs):
    """`_convert_job` in a fresh process: one conversion per process, because several
    conversions in one long process crashed TensorFlow (SIGSEGV in
    libtensorflow_framework) partway through a full benchmark run."""
    return str(isolated("convert", keras_path=str(keras_path), out=str(out), mode=mode,
                        calibration=calibration, **kwargs))


def _invoke(path, threads=1, count=3):
    """Load `path` and invoke it `count` times (does the interpreter survive it?)."""
    it = _interpreter(path, threads)
    for _ in range(count):
        it.invoke()
    return True


def timed_apart(paths, threads, warmup, runs, failures):
    """`latency` of `paths` in a worker; if the worker dies (LiteRT has aborted with
    SIGABRT on some graphs), each model is first invoked alone to find the one(s) that
    kill it, those go into `failures` ({label: reason}), and the rest are timed together.
    """
    try:
        return isolated("latency", paths=paths, threads=threads, warmup=warmup, runs=runs)
    except (subprocess.CalledProcessError, WorkerError) as e:
        print(f"benchmark: timing {sorted(paths)} failed ({_failure_reason(e)}); "
              "invoking each alone to find the model", file=sys.stderr, flush=True)
    survivors = {}
    for label, path in paths.items():
        try:
            isolated("invoke", path=path, threads=threads, retry=False)
            survivors[label] = path
        except (subprocess.CalledProcessError, WorkerError) as e:
            failures[label] = (f"the LiteRT interpreter failed ({_failure_reason(e)}) invoking "
                               f"{os.path.basename(path)} with {threads} thread(s)")
    if not survivors:
        return {}
    if len(survivors) == len(paths):  # each runs alone, not together: time them apart
        stats = {}
        for label, path in paths.items():
            stats.update(isolated("latency", paths={label: path}, threads=threads,
                                  warmup=warmup, runs=runs))
        return stats
    return isolated("latency", paths=survivors, threads=threads, warmup=warmup, runs=runs)


def _failure_reason(error):
    import signal

    if isinstance(error, WorkerError):
        return str(error).splitlines()[0][:300]
    code = error.returncode
    return signal.Signals(-code).name if code < 0 else f"exit code {code}"


WORKER_FUNCTIONS = {"latency": latency, "predict_tflite": predict_tflite, "invoke": _invoke,
                    "delegated_ops": _delegated, "op_profile": _profile,
                    "convert": _convert_job}


class _TimingServer:
    """A long-lived process that times one model: "RUN n" in, a JSON list of n run
    times (seconds) out. Two of them, asked in turn, time two runtimes in interleaved
    rounds, so that changes in machine load hit both alike."""

    def __init__(self, command, env=None):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"timing process {self.proc.args[:4]} exited "
                               f"(code {self.proc.wait()})")
        return json.loads(line)

    def run(self, count):
        self.proc.stdin.write(f"RUN {count}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        with contextlib.suppress(OSError):
            self.proc.stdin.write("QUIT\n")
            self.proc.stdin.close()
        self.proc.wait()


def _serve_litert(path, threads):
    it = _interpreter(path, threads)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "QUIT":
            break
        times = []
        for _ in range(int(command[1])):
            t0 = time.perf_counter()
            it.invoke()
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


def interleaved(servers, warmup=10, runs=50):
    """p50/p90 ms for each `{label: _TimingServer}`, asked one run at a time in turn."""
    for server in servers.values():
        server.run(warmup)
    times = {label: [] for label in servers}
    for _ in range(runs):
        for label, server in servers.items():
            times[label] += server.run(1)
    return {label: _stats(ts, warmup, 1) for label, ts in times.items()}


def _stats(seconds, warmup, threads):
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "runs": len(ms), "warmup": warmup, "threads": threads}


def _write(path, content):
    from keras_mobilevit.fileio import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(content)
    return path


def _file_row(label, path, float_path):
    size = os.path.getsize(path)
    return {"file": os.path.basename(path), "size_bytes": size,
            "size_vs_float32": size / os.path.getsize(float_path),
            "float_ops": [str(op) for op in analyze.float_ops(path)]
            if not label.startswith("float32") else None}


def accuracy_benchmark(float_run, qat_run, workdir, threads, warmup, runs, eval_limit=None,
                       naive_ptq=False):
    """float32 / PTQ int8 / QAT int8 of one trained model: top-1, agreement, latency."""
    import keras

    from tflite import convert, data

    float_path = os.path.join(float_run, "model.keras")
    float_model = convert.load_keras_model(float_path)
    config = data.run_config(float_run)
    images, labels = data.images(config, "eval", eval_limit)
    calib = data.calibration_images(config)
    reference = np.argmax(float_model.predict(images, batch_size=64, verbose=0), axis=-1)
    name = float_model.name
    out = functools.partial(os.path.join, workdir)
    paths = {"float32": convert_isolated(float_path, out(f"{name}_float32.tflite"), "float32")}
    paths["int8 PTQ"] = convert_isolated(float_path, out(f"{name}_int8_ptq.tflite"), "int8",
                                         calib)
    refused = {}
    if naive_ptq:
        try:
            paths["int8 PTQ (converter only)"] = convert_isolated(
                float_path, out(f"{name}_int8_naive.tflite"), "int8", calib, ptq="converter")
        except WorkerError as e:  # the converter's own PTQ is only a comparison
            refused["int8 PTQ (converter only)"] = {"error": f"conversion refused: {e}"}
    if qat_run:
        paths["int8 QAT"] = convert_isolated(os.path.join(qat_run, "model.keras"),
                                             out(f"{name}_int8_qat.tflite"), "int8", calib)
    keras_top1 = float(np.mean(reference == labels))
    rows = {}
    lat = isolated("latency", paths=paths, threads=1, warmup=warmup, runs=runs)
    lat_n = (isolated("latency", paths=paths, threads=threads, warmup=warmup, runs=runs)
             if threads > 1 else {})
    for label, path in paths.items():
        pred = np.argmax(isolated("predict_tflite", path=path, images=images), axis=-1)
        rows[label] = {
            **_file_row(label, path, paths["float32"]),
            "top1": float(np.mean(pred == labels)),
            "agreement_with_float_keras": float(np.mean(pred == reference)),
            "latency_1_thread": lat[label],
            **({f"latency_{threads}_threads": lat_n[label]} if lat_n else {}),
            **peak_memory(path),
        }
    rows.update(refused)
    del keras  # imported for its side effect of initialising the backend first
    return {"model": name, "input_shape": list(float_model.inputs[0].shape[1:]),
            "eval_examples": int(len(labels)), "float_keras_top1": keras_top1,
            "float_run": float_run, "qat_run": qat_run, "results": rows}


def onnx_comparison(python, timm_name, float_paths, size, warmup, runs):
    """LiteRT float32 vs ONNX Runtime (timm's export of the same model), 1 thread each,
    in timing processes asked in turn (see `_TimingServer`).

    `float_paths`: {label: .tflite}; "float32" is the model, any others (the
    `--float-bounds` models) are timed in the same alternating runs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = os.path.join(root, "tflite", "baseline_onnx.py")
    servers = {}
    try:
        for label, path in float_paths.items():
            servers[label] = _TimingServer([sys.executable, "-m", "tflite.benchmark",
                                            "--serve-litert", path], env)
        servers["onnxruntime"] = ort = _TimingServer(
            [python, script, "--serve", "--models", timm_name, "--size", str(size),
             "--threads", "1"])
        stats = interleaved(servers, warmup, runs)
    finally:
        for server in servers.values():
            server.close()
    info = {k: v for k, v in ort.info.items() if k != "ready"}
    reference = stats.pop("onnxruntime")
    return {"timm_model": timm_name, **info, "onnxruntime_1_thread": reference,
            "litert_float32_1_thread": stats["float32"],
            "litert_float32_vs_onnxruntime": stats["float32"]["p50_ms"] / reference["p50_ms"],
            "bounds": {label: {"litert_1_thread": s,
                               "vs_onnxruntime": s["p50_ms"] / reference["p50_ms"]}
                       for label, s in stats.items() if label != "float32"}}


# `--float-bounds`: the float32 graph with op families cut out (see tflite/bounds.py).
BOUNDS = {"float32 bound: no swish": {"swish": True},
          "float32 bound: no swish, no norm statistics": {"swish": True, "norms": True}}


def latency_benchmark(name, size, workdir, threads, warmup, runs, calib, baseline_python=None,
                      naive_ptq=False, float_bounds=False, seed=0, keep_failed=None):
    """float32 vs PTQ int8 of one variant at `size` (random weights from `seed`) under
    LiteRT; and LiteRT float32 vs ONNX Runtime on timm's export (`onnx_comparison`).
    With `float_bounds`, also the `BOUNDS` models (lower bounds for float32 graph
    changes). A model the interpreter dies on, or whose conversion `convert` refuses
    (the converter's own PTQ, `naive_ptq`), gets an "error" row instead of numbers (the
    others are still timed together); a file the interpreter died on is copied to
    `keep_failed` for a bug report."""
    import shutil

    import keras

    from tflite import bounds

    import keras_mobilevit as kmv

    # One set of random weights for every conversion: saved once, converted in turn.
    keras.utils.set_random_seed(seed)
    keras_path = os.path.join(workdir, f"{name}_{size}.keras")
    kmv.create_model(name, weights=None, input_shape=(size, size, 3)).save(keras_path)
    out = functools.partial(os.path.join, workdir)
    paths = {"float32": convert_isolated(keras_path, out(f"{name}_{size}_float32.tflite"),
                                         "float32")}
    paths["int8 PTQ"] = convert_isolated(keras_path, out(f"{name}_{size}_int8.tflite"), "int8",
                                         calib[:32])
    failures = {}
    if naive_ptq:
        try:
            paths["int8 PTQ (converter only)"] = convert_isolated(
                keras_path, out(f"{name}_{size}_int8_naive.tflite"), "int8", calib[:32],
                ptq="converter")
        except WorkerError as e:  # e.g. a graph LiteRT could not load (convert says so)
            failures["int8 PTQ (converter only)"] = f"conversion refused: {e}"
    if float_bounds:
        with open(paths["float32"], "rb") as f:
            content = f.read()
        for i, (label, cut) in enumerate(BOUNDS.items()):
            paths[label] = _write(out(f"{name}_{size}_float32_bound{i}.tflite"),
                                  bounds.without(content, **cut)[0])
    result = {"model": name, "size": size, "seed": seed,
              "results": {label: {} for label in [*paths, *failures]}}
    thread_counts = [1] + ([threads] if threads > 1 else [])
    for t in thread_counts:
        alive = {k: v for k, v in paths.items() if k not in failures}
        for label, stats in timed_apart(alive, t, warmup, runs, failures).items():
            result["results"][label][f"latency_{t}_thread"] = stats
    for label in result["results"]:
        path = paths.get(label)
        if path is None:  # not converted
            result["results"][label]["error"] = failures[label]
            continue
        result["results"][label].update(_file_row(label, path, paths["float32"]))
        if label in failures:
            result["results"][label]["error"] = failures[label]
            if keep_failed:
                os.makedirs(keep_failed, exist_ok=True)
                shutil.copy(path, keep_failed)
        else:
            result["results"][label].update(peak_memory(path))
    timm_name = TIMM_NAMES.get(name)
    if baseline_python and timm_name and "float32" not in failures:
        floats = {label: p for label, p in paths.items()
                  if label.startswith("float32") and label not in failures}
        result["onnxruntime"] = onnx_comparison(baseline_python, timm_name, floats,
                                                size, warmup, runs)
    return result


def _verdict(ok):
    return "**met**" if ok else "**not met**"


def targets(report):
    """Markdown lines: this run's numbers against the issue's targets (tflite/README.md)."""
    lines = []
    acc = report.get("accuracy")
    if acc and "int8 QAT" in acc["results"]:
        gap = 100 * (acc["results"]["int8 QAT"]["top1"] - acc["float_keras_top1"])
        lines.append(f"- QAT int8 top-1 within 1.0 point of float ({acc['model']}): "
                     f"{gap:+.2f} points: {_verdict(gap >= -1.0)}")
    for entry in report.get("latency", []):
        r = entry["results"]
        failed = [label for label in ("float32", "int8 PTQ") if "error" in r.get(label, {})]
        if failed:
            lines.append(f"- {entry['model']} at {entry['size']}: not measured, "
                         f"{'; '.join(r[label]['error'] for label in failed)}")
        elif "int8 PTQ" in r:
            size = r["int8 PTQ"]["size_vs_float32"]
            speed = (r["int8 PTQ"]["latency_1_thread"]["p50_ms"]
                     / r["float32"]["latency_1_thread"]["p50_ms"])
            note = ("" if entry["model"] == "mobilevitv3_xs" and entry["size"] == 256 else
                    " (the issue sets these for mobilevitv3_xs at 256; for reference)")
            lines.append(f"- {entry['model']} at {entry['size']}: int8 file <= 0.3x float32: "
                         f"{size:.2f}x: {_verdict(size <= 0.3)}; int8 p50 <= 0.7x float32 "
                         f"(1 thread): {speed:.2f}x: {_verdict(speed <= 0.7)}{note}")
        ort = entry.get("onnxruntime")
        if ort:
            ratio = ort["litert_float32_vs_onnxruntime"]
            lines.append(f"- {entry['model']} at {entry['size']}: float32 LiteRT p50 <= 0.8x "
                         f"ONNX Runtime (timm export, 1 thread): {ratio:.2f}x: "
                         f"{_verdict(ratio <= 0.8)}")
    return ["## Targets", ""] + lines + [""] if lines else []


def markdown(report):
    """The BENCHMARKS table(s) as Markdown."""
    info = report["machine"]
    lines = ["# LiteRT benchmarks (tflite/)", "",
             f"Machine: {info['cpu']}, {info['cores']} cores (shared; 1-minute load "
             f"{info['load_average_1m_at_start']:.1f} at the start), {info['platform']}. "
             f"Interpreter: {info['interpreter']}. Converter: {info['converter']}. "
             f"Date: {info['date']}. Command: `{report['command']}`.", "",
             "Latency: warm-up, then p50/p90 over timed invokes of batch 1, models timed in "
             "interleaved rounds in one process so that ratios are side by side. Other "
             "workers share this machine's cores: absolute numbers move with their load, "
             "ratios much less.", ""]
    if not report.get("complete", True):
        lines += ["**Incomplete: the run is still going or stopped early; the parts below "
                  "are the ones it finished.**", ""]
    lines += targets(report)
    acc = report.get("accuracy")
    if acc:
        lines += [f"## Accuracy: {acc['model']} at {acc['input_shape'][0]}x"
                  f"{acc['input_shape'][1]}, {acc['eval_examples']} held-out images", "",
                  f"Float Keras top-1: {acc['float_keras_top1']:.2%}.", "",
                  "| model | top-1 | agreement with float | size | vs float32 | p50 1 thread "
                  "| p90 1 thread | peak RSS | float ops |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, r in acc["results"].items():
            if "error" in r:
                lines.append(f"| {label} | failed: {r['error'][:300]} | | | | | | | |")
                continue
            lat = r["latency_1_thread"]
            floats = "-" if r["float_ops"] is None else str(len(r["float_ops"]))
            lines.append(
                f"| {label} | {r['top1']:.2%} | {r['agreement_with_float_keras']:.2%} | "
                f"{r['size_bytes'] / 1e6:.2f} MB | {r['size_vs_float32']:.2f}x | "
                f"{lat['p50_ms']:.2f} ms | {lat['p90_ms']:.2f} ms | "
                f"{r['peak_rss_bytes'] / 2**20:.0f} MiB | {floats} |")
        lines.append("")
    for entry in report.get("latency", []):
        lines += [f"## Latency: {entry['model']} at {entry['size']}x{entry['size']} "
                  "(random weights)", "",
                  "| model | size | vs float32 | p50 1 thread | p90 1 thread | p50 vs float32 "
                  "| p50 N threads | model RSS | float ops |",
                  "|---|---|---|---|---|---|---|---|---|"]
        f32 = entry["results"]["float32"].get("latency_1_thread", {}).get("p50_ms", np.nan)
        for label, r in entry["results"].items():
            if "error" in r:
                size = (f"{r['size_bytes'] / 1e6:.2f} MB | {r['size_vs_float32']:.2f}x"
                        if "size_bytes" in r else "- | -")
                lines.append(f"| {label} | {size} | failed: {r['error'][:300]} | | | | | |")
                continue
            lat = r["latency_1_thread"]
            multi = [v for k, v in r.items() if k.startswith("latency_") and k != "latency_1_thread"]
            multi_s = f"{multi[0]['p50_ms']:.1f} ms ({multi[0]['threads']})" if multi else "-"
            floats = "-" if r["float_ops"] is None else str(len(r["float_ops"]))
            lines.append(
                f"| {label} | {r['size_bytes'] / 1e6:.2f} MB | {r['size_vs_float32']:.2f}x | "
                f"{lat['p50_ms']:.1f} ms | {lat['p90_ms']:.1f} ms | {lat['p50_ms'] / f32:.2f}x | "
                f"{multi_s} | {r['model_rss_bytes'] / 2**20:.0f} MiB | {floats} |")
        ort = entry.get("onnxruntime")
        if ort:
            o, lt = ort["onnxruntime_1_thread"], ort["litert_float32_1_thread"]
            lines.append(
                f"| ONNX Runtime, timm {ort['timm_model']} | {ort['size_bytes'] / 1e6:.2f} MB "
                f"| - | {o['p50_ms']:.1f} ms | {o['p90_ms']:.1f} ms | - | - | - | - |")
            lines += ["", f"LiteRT float32 / ONNX Runtime, 1 thread, p50, timed in alternating "
                      f"runs: **{ort['litert_float32_vs_onnxruntime']:.2f}x** ({lt['p50_ms']:.1f} "
                      f"vs {o['p50_ms']:.1f} ms). {ort['runtime']}, exported from "
                      f"{ort['exported_from']}."]
            for label, b in ort.get("bounds", {}).items():
                lines += ["", f"{label} (a lower bound, see tflite/bounds.py), same alternating "
                          f"runs: {b['litert_1_thread']['p50_ms']:.1f} ms, "
                          f"**{b['vs_onnxruntime']:.2f}x** ONNX Runtime."]
        lines.append("")
    return "\n".join(lines)


def plot(report, path):
    """Top-1 against p50 latency (1 thread) for the accuracy models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = report["accuracy"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, r in acc["results"].items():
        if "error" in r:
            continue
        x, y = r["latency_1_thread"]["p50_ms"], 100 * r["top1"]
        ax.scatter([x], [y], s=40)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("p50 latency, 1 thread, LiteRT (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{acc['model']} {acc['input_shape'][0]}px, {report['machine']['cpu']}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tflite.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--float-run", help="training run folder of the float model")
    parser.add_argument("--qat-run", help="training run folder of the QAT model")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N held-out images")
    parser.add_argument("--latency-models", nargs="*", default=[], help="variants to time at --size")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="N for the N-thread runs")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--naive-ptq", action="store_true", help="also the converter's own PTQ (slow graph)")
    parser.add_argument("--float-bounds", action="store_true",
                        help="also time float32 with swish / norm statistics cut out (lower bounds)")
    parser.add_argument("--seed", type=int, default=0, help="random weights of the latency models")
    parser.add_argument("--baseline-python", help="python of the venv with torch, timm, onnxruntime")
    parser.add_argument("--out", default="tflite/results", help="folder for JSON, Markdown and the plot")
    parser.add_argument("--markdown", default="tflite/BENCHMARKS-tflite.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: see `isolated`
    parser.add_argument("--serve-litert", help=argparse.SUPPRESS)  # internal: `_TimingServer`
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    if args.serve_litert:
        return _serve_litert(args.serve_litert, 1)

    os.makedirs(args.out, exist_ok=True)
    report = {"machine": machine_info(), "command": "python -m tflite.benchmark " + " ".join(
        argv if argv is not None else sys.argv[1:])}
    report["complete"] = False
    with tempfile.TemporaryDirectory() as workdir:
        # The report is written after every part, so a crash late in a long run keeps
        # what was measured before it ("complete": false until the end).
        if args.float_run:
            report["accuracy"] = accuracy_benchmark(
                args.float_run, args.qat_run, workdir, args.threads, args.warmup, args.runs,
                args.eval_limit, args.naive_ptq)
            _save_report(report, args)
        if args.latency_models:
            calib = _latency_calibration(args.size)
            report["latency"] = []
            for name in args.latency_models:
                report["latency"].append(latency_benchmark(
                    name, args.size, workdir, args.threads, args.warmup, args.runs, calib,
                    args.baseline_python, args.naive_ptq, args.float_bounds, args.seed,
                    keep_failed=os.path.join(args.out, "failed")))
                _save_report(report, args)
    report["complete"] = True
    _save_report(report, args)
    if "accuracy" in report:
        plot(report, os.path.join(args.out, "accuracy_vs_latency.png"))
    print(markdown(report))
    return 0


def _save_report(report, args):
    _write(os.path.join(args.out, "benchmark.json"), json.dumps(report, indent=1).encode())
    _write(args.markdown, (markdown(report) + "\n").encode())


def _latency_calibration(size):
    """Calibration images at `size`: the default dataset's train split through the eval
    transform (activation ranges only set how fast int8 runs here, weights are random)."""
    from tflite import data

    return data.calibration_images(data.default_config(size), 32)


if __name__ == "__main__":
    sys.exit(main())
