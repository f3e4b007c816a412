"""Run LiteRT work in fresh processes that never import TensorFlow, and survive their crashes.

LiteRT then runs as an app would run it: no TensorFlow threads, memory or second TFLite
runtime (the converter's) in the process being measured. `isolated` runs one of
`WORKER_FUNCTIONS` in a child process (arrays travel as `.npy` files); `timed_apart`
finds the model a crashing interpreter dies on and times the rest; `TimingServer`
keeps a timing process alive so two runtimes can be asked in turn (`interleaved`).

Example:
    >>> workers.isolated("latency", paths={"int8": "m_int8.tflite"}, threads=1)
    >>> workers.convert_isolated("m.keras", "m_int8.tflite", "int8", calibration=images)

Command line (internal): `python -m tflite.workers SPEC.json` runs one job,
`python -m tflite.workers --serve-litert MODEL.tflite` is a timing server.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from keras_mobilevit import fileio
from tflite import interpreter, latency, op_profile


class WorkerError(RuntimeError):
    """A worker raised an exception (the message is the worker's); e.g. a conversion
    refused by `convert`."""


def _convert(keras_path, out, mode, calibration=None, ptq="auto", **options):
    """Convert the `.keras` at `keras_path` to `out` (`ptq` and the task `options`, e.g.
    segmentation_output, as in `convert.convert`)."""
    # Deferred on purpose: only this job loads TensorFlow; the LiteRT jobs must not.
    from tflite import convert

    model = convert.load_keras_model(keras_path)
    fileio.write_bytes_atomic(out, convert.convert(model, mode, calibration, ptq=ptq, **options))
    return out


WORKER_FUNCTIONS = {"latency": latency.latency, "latency_by_threads": latency.latency_by_threads,
                    "predict_tflite": latency.predict,
                    "predict_outputs": latency.predict_outputs,
                    "invoke": latency.invoke, "op_profile": op_profile.profile,
                    "delegated_ops": lambda model: sorted(interpreter.delegated_ops(model)),
                    "convert": _convert}


def isolated(function, retry=True, **kwargs):
    """Run one of `WORKER_FUNCTIONS` with `kwargs` in a fresh process; return its result.

    A worker killed by a signal is run once more (`retry`); a second death raises
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
        command = [sys.executable, "-m", "tflite.workers", spec]
        code = subprocess.run(command, env=latency.project_env()).returncode
        if code < 0 and retry:
            # Killed by a signal: TensorFlow has died with SIGSEGV at random partway
            # through long runs (see `convert_isolated`). One retry, said out loud; a
            # second death is an error (a crash that repeats is a bug to report).
            print(f"benchmark: the {function} worker died of a signal; retrying once",
                  file=sys.stderr, flush=True)
            subprocess.run(command, check=True, env=latency.project_env())
        elif code:
            if os.path.exists(out + ".error"):
                with open(out + ".error") as f:
                    raise WorkerError(f.read())
            raise subprocess.CalledProcessError(code, command)
        # Our own child's result in our own temporary folder (dicts travel pickled).
        result = np.load(out, allow_pickle=True)
        return result[()] if result.dtype == object and result.shape == () else result


def _run_job(spec_path):
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


def convert_isolated(keras_path, out, mode, calibration=None, **kwargs):
    """`convert.convert` of a `.keras` file in a fresh process, written to `out`: one
    conversion per process, because several conversions in one long process crashed
    TensorFlow (SIGSEGV in libtensorflow_framework) partway through a benchmark run."""
    return str(isolated("convert", keras_path=str(keras_path), out=str(out), mode=mode,
                        calibration=calibration, **kwargs))


def timed_apart(paths, thread_counts, warmup, runs, failures):
    """`latency.latency_by_threads` of `paths` in a worker ({label: {threads: stats}});
    if the worker dies (LiteRT has aborted with SIGABRT on some graphs), each model is
    first invoked alone at each thread count to find the one(s) that kill it, those go
    into `failures` ({label: reason}), and the rest are timed."""
    def timed(models):
        return isolated("latency_by_threads", paths=models, thread_counts=list(thread_counts),
                        warmup=warmup, runs=runs)

    try:
        return timed(paths)
    except (subprocess.CalledProcessError, WorkerError) as e:
        print(f"benchmark: timing {sorted(paths)} failed ({failure_reason(e)}); "
              "invoking each alone to find the model", file=sys.stderr, flush=True)
    survivors = {}
    for label, path in paths.items():
        try:
            for threads in thread_counts:
                isolated("invoke", path=path, threads=threads, retry=False)
            survivors[label] = path
        except (subprocess.CalledProcessError, WorkerError) as e:
            failures[label] = (f"the LiteRT interpreter failed ({failure_reason(e)}) invoking "
                               f"{os.path.basename(path)} with {threads} thread(s)")
    if not survivors:
        return {}
    if len(survivors) == len(paths):  # each runs alone, not together: time them apart
        return {k: v for label, path in paths.items() for k, v in timed({label: path}).items()}
    return timed(survivors)


def failure_reason(error):
    """One line saying how a worker failed: its exception, or the signal that killed it."""
    if isinstance(error, WorkerError):
        return str(error).splitlines()[0][:300]
    code = error.returncode
    return signal.Signals(-code).name if code < 0 else f"exit code {code}"


class TimingServer:
    """A long-lived process that times one model: "RUN n" in, a JSON list of n run
    times (seconds) out. Two of them, asked in turn, time two runtimes in interleaved
    rounds, so that changes in machine load hit both alike."""

    def __init__(self, command, env=None):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        self.info = self._read()

    @classmethod
    def litert(cls, path):
        """A timing server running `path` under LiteRT, 1 thread."""
        return cls([sys.executable, "-m", "tflite.workers", "--serve-litert", path],
                   latency.project_env())

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


def interleaved(servers, warmup=10, runs=50):
    """p50/p90 ms for each `{label: TimingServer}`, asked one run at a time in turn."""
    for server in servers.values():
        server.run(warmup)
    times = {label: [] for label in servers}
    for _ in range(runs):
        for label, server in servers.items():
            times[label] += server.run(1)
    return {label: latency.stats(ts, warmup, 1) for label, ts in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tflite.workers", description=__doc__.split("\n")[0])
    parser.add_argument("spec", nargs="?", help="job spec JSON written by `isolated`")
    parser.add_argument("--serve-litert", help="time this .tflite for a TimingServer")
    args = parser.parse_args(argv)
    if args.serve_litert:
        latency.serve(args.serve_litert, 1)
    elif args.spec:
        _run_job(args.spec)
    else:
        parser.error("give a job spec or --serve-litert MODEL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
