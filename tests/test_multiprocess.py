"""Training across processes: two local processes with two CPU devices each (gloo collectives,
coordinator on 127.0.0.1) train, checkpoint, resume and predict as one process with four."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")
ROOT = pathlib.Path(__file__).resolve().parents[1]
# Each run must finish within this (they take under a minute on 2 idle cores); a hung
# collective must fail the test, not stall CI.
TIMEOUT_S = 420
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env(num_devices: int) -> dict[str, str]:
    """The environment of a worker: CPU only, `num_devices` simulated devices, this tree first."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={num_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"  # a killed worker still shows what it printed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_processes(commands: dict[str, tuple[list[str], dict[str, str]]], logs: pathlib.Path):
    """Starts every command at once and waits for all of them.

    Fails the test, with every process's output, as soon as one exits with an error or when
    TIMEOUT_S passes; the processes still running are killed first.
    """
    logs.mkdir(parents=True, exist_ok=True)
    running = {}
    for name, (argv, env) in commands.items():
        with open(logs / f"{name}.log", "w") as log:
            running[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
    deadline = time.monotonic() + TIMEOUT_S
    failure = None
    while failure is None and any(p.poll() is None for p in running.values()):
        failed = [n for n, p in running.items() if p.poll() not in (None, 0)]
        if failed:
            failure = f"{failed} exited with an error"
        elif time.monotonic() > deadline:
            failure = f"not finished after {TIMEOUT_S} s"
        else:
            time.sleep(0.2)
    failed = [n for n, p in running.items() if p.poll() not in (None, 0)]
    if failure is None and failed:
        failure = f"{failed} exited with an error"
    if failure is not None:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        outputs = "\n".join(
            f"----- {name} (exit {p.returncode}):\n{(logs / f'{name}.log').read_text()[-4000:]}"
            for name, p in running.items()
        )
        pytest.fail(f"{failure}\n{outputs}")


def load(path: pathlib.Path) -> dict:
    with np.load(path) as data:
        out = {key: data[key] for key in data.files}
    out["history"] = json.loads(str(out["history"]))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"process0", "process1", "single"}: what each worker wrote, and the shared folder."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    address = f"127.0.0.1:{free_port()}"
    worker = [sys.executable, str(WORKER)]
    commands = {
        f"process{i}": (
            [
                *worker,
                *("--coordinator", address, "--num-processes", "2", "--process-id", str(i)),
                *("train", str(tmp / "shared"), str(tmp / f"process{i}.npz")),
            ],
            worker_env(2),
        )
        for i in range(2)
    }
    commands["single"] = (
        [*worker, "train", str(tmp / "single"), str(tmp / "single.npz")],
        worker_env(4),
    )
    run_processes(commands, tmp / "logs")
    results = {name: load(tmp / f"{name}.npz") for name in commands}
    results["shared"] = tmp / "shared"
    return results


def arrays(result: dict, prefix: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in result.items() if k.startswith(prefix + "/")}


def test_each_run_had_the_devices_it_asked_for(runs):
    # (processes, global devices, local devices)
    assert runs["process0"]["counts"].tolist() == [2, 4, 2]
    assert runs["process1"]["counts"].tolist() == [2, 4, 2]
    assert runs["single"]["counts"].tolist() == [1, 4, 4]


@pytest.mark.parametrize("phase", ["first", "second"])
def test_two_processes_measure_the_losses_of_one_process(runs, phase):
    single = runs["single"]["history"][phase]
    assert single["epochs_run"] == (1 if phase == "first" else 2)
    assert single["steps_per_epoch"] == 8
    assert len(single["step_loss"]) == 8 * single["epochs_run"]
    for name in ("process0", "process1"):
        history = runs[name]["history"][phase]
        assert history["epochs_run"] == single["epochs_run"]
        assert history["best_epoch"] == single["best_epoch"]
        for key in ("step_loss", "step_accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(history[key], single[key], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("prefix", ["epoch1", "epoch2", "restored"])
def test_two_processes_end_with_the_parameters_of_one_process(runs, prefix):
    single = arrays(runs["single"], prefix)
    assert len(single) == 10  # LeNet-5: 5 layers, kernel and bias each
    for name in ("process0", "process1"):
        ours = arrays(runs[name], prefix)
        assert ours.keys() == single.keys()
        for key in single:
            np.testing.assert_allclose(ours[key], single[key], rtol=0, atol=TOLERANCE, err_msg=key)


def test_every_process_holds_the_same_parameters_and_all_the_logits(runs):
    first, second = runs["process0"], runs["process1"]
    for key in [*arrays(first, "epoch2"), "logits"]:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert first["logits"].shape == (48,)
    np.testing.assert_allclose(first["logits"], runs["single"]["logits"], rtol=0, atol=TOLERANCE)


def test_the_processes_share_one_checkpoint_per_epoch(runs):
    shared = runs["shared"]
    epochs = sorted(p.name for p in shared.iterdir() if not p.name.startswith("."))
    assert epochs == ["1", "2"]
    for epoch in epochs:
        assert {"model", "train", "meta"} <= {p.name for p in (shared / epoch).iterdir()}
    # The checkpoint read back is the resumed run's last epoch, exactly.
    for name in ("process0", "process1"):
        restored, trained = arrays(runs[name], "restored"), arrays(runs[name], "epoch2")
        for key, value in restored.items():
            np.testing.assert_array_equal(value, trained[key.replace("restored", "epoch2", 1)])


# A tiny bird/cat run: one epoch on 256 synthetic training images, the quick study.
BIRDCAT_OPTIONS = (
    *("--data", "synthetic", "--quick", "--max-train", "320", "--max-test", "64"),
    *("--epochs", "1", "--batch-size", "32", "--no-progress"),
)


def written_outside_checkpoints(writes: pathlib.Path, out: pathlib.Path) -> set[str]:
    """The files under `out`, but not under its checkpoints, that a worker wrote."""
    out = out.resolve()
    paths = {pathlib.Path(p).resolve() for p in json.loads(writes.read_text())}
    return {
        str(p.relative_to(out))
        for p in paths
        if p.is_relative_to(out) and not p.is_relative_to(out / "checkpoints")
    }


@pytest.mark.slow
def test_only_process_0_writes_the_experiment_report(tmp_path):
    out = tmp_path / "birdcat"
    address = f"127.0.0.1:{free_port()}"
    commands = {
        f"process{i}": (
            [
                *(sys.executable, str(WORKER)),
                *("--coordinator", address, "--num-processes", "2", "--process-id", str(i)),
                *("birdcat", str(tmp_path / f"writes{i}.json"), "--", *BIRDCAT_OPTIONS),
                *("--out", str(out)),
            ],
            worker_env(2),
        )
        for i in range(2)
    }
    run_processes(commands, tmp_path / "logs")
    first = written_outside_checkpoints(tmp_path / "writes0.json", out)
    assert {"report.md", "metrics.json", "loss_curves.png"} <= first
    assert written_outside_checkpoints(tmp_path / "writes1.json", out) == set()
    logs = [(tmp_path / "logs" / f"process{i}.log").read_text() for i in range(2)]
    assert f"report: {out / 'report.md'}" in logs[0]
    assert "report:" not in logs[1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["epochs_run"] == 1
    assert metrics["setup"]["devices"].startswith("4 x ")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["1"]
