"""Data parallelism through tf.distribute: MirroredStrategy over two logical CPUs and a
two-process MultiWorkerMirroredStrategy on 127.0.0.1 (each a few steps on tiny data),
with a tiny CNN (fast) and with MobileViT (slow).

TPUStrategy is selectable (`--strategy tpu`) but cannot be tested here.
"""

import json
import socket
import subprocess

import pytest

import training_utils

ARGS = ["--image-size", "32", "--batch-size", "8", "--epochs", "1", "--steps-per-epoch",
        "3", "--ema-momentum", "0.5"]
SCRIPTS = ["tiny", pytest.param("train.py", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return training_utils.make_image_folder(tmp_path_factory.mktemp("images"), per_class=12)


def _summary(out):
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_mirrored_strategy_on_two_logical_cpus(folder, tmp_path, script):
    # Multi-scale on: the resolution and batch size change from step to step.
    result = training_utils.run_script(
        script, "--image-folder", folder, *ARGS, "--multi-scale", "--strategy",
        "mirrored", "--cpu-devices", "2", "--output-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout
    assert _summary(tmp_path / "run")["steps"] == 3


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.parametrize("script", SCRIPTS)
def test_multi_worker_mirrored_strategy_two_processes(folder, tmp_path, script):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    out = tmp_path / "run"
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            training_utils.script_command(
                script, "--image-folder", folder, *ARGS, "--multi-scale",
                "--strategy", "multi_worker", "--output-dir", out),
            env=training_utils.script_env(TF_CONFIG=json.dumps(tf_config)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=900))
    finally:
        for process in processes:
            process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    assert "2 replica(s)" in outputs[0][0]
    assert "held-out top-1" in outputs[0][0]       # the chief reports and writes
    assert "held-out top-1" not in outputs[1][0]   # the other worker does not
    assert _summary(out)["steps"] == 3
