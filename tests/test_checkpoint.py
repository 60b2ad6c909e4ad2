"""Tests for jaxcal.checkpoint: run checkpoints, retention, restore into fresh and abstract
models, architecture mismatches, and runs killed between epochs or in the middle of a save."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcal import checkpoint, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resume_worker import CONFIG, TRAIN, TinyCNN, scale  # noqa: E402

WORKER = pathlib.Path(__file__).with_name("resume_worker.py")


def model_arrays(model):
    """Everything checkpointed (parameters and batch statistics) as numpy, by path."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.RngState)))
    return {"/".join(map(str, path)): np.asarray(v.get_value()) for path, v in flat}


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def opt_state_of(model):
    return optax.adam(1e-3).init(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


# ---------------------------------------------------------------- RunCheckpoints


def test_run_checkpoints_round_trip_and_keep_latest_plus_best(tmp_path):
    models = [TinyCNN(rngs=nnx.Rngs(seed)) for seed in range(5)]
    with checkpoint.RunCheckpoints(tmp_path / "run", max_to_keep=2) as run:
        assert run.latest_epoch() is None and run.best_epoch() is None
        for epoch, model in enumerate(models, start=1):
            run.save(
                epoch,
                model_state=nnx.state(model, nnx.Not(nnx.RngState)),
                opt_state=opt_state_of(model),
                step=jnp.int32(10 * epoch),
                meta={"epoch": epoch, "note": "x"},
                best_epoch=2,
            )
        assert run.epochs() == [2, 4, 5]  # the 2 latest plus the best
    with checkpoint.RunCheckpoints(tmp_path / "run", max_to_keep=2) as run:  # a new process
        assert run.latest_epoch() == 5 and run.best_epoch() == 2
        assert run.meta(4) == {"epoch": 4, "note": "x"}
        fresh = TinyCNN(rngs=nnx.Rngs(99))
        state = run.restore_model_state(2, nnx.state(fresh, nnx.Not(nnx.RngState)))
        nnx.update(fresh, state)
        assert_same_arrays(model_arrays(fresh), model_arrays(models[1]))
        opt_state, step = run.restore_train(5, opt_state_like=opt_state_of(fresh))
        assert int(step) == 50
        jax.tree.map(np.testing.assert_array_equal, opt_state, opt_state_of(models[4]))
        with pytest.raises(ValueError, match="epoch 3 has no checkpoint"):
            run.meta(3)


def test_run_checkpoints_reject_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        checkpoint.RunCheckpoints(tmp_path, max_to_keep=0)
    with checkpoint.RunCheckpoints(tmp_path) as run, pytest.raises(ValueError, match="epoch"):
        run.save(0, model_state={}, opt_state={}, step=0, meta={}, best_epoch=None)


def test_an_interrupted_save_is_never_restored(tmp_path):
    """A step folder orbax never committed (what a kill mid-save leaves) is ignored and
    removed: the run's latest epoch is the last complete one."""
    model = TinyCNN(rngs=nnx.Rngs(0))
    with checkpoint.RunCheckpoints(tmp_path) as run:
        for epoch in (1, 2):
            run.save(
                epoch,
                model_state=nnx.state(model, nnx.Not(nnx.RngState)),
                opt_state=opt_state_of(model),
                step=epoch,
                meta={},
                best_epoch=None,
            )
    partial = tmp_path / "3.orbax-checkpoint-tmp"
    (partial / "model").mkdir(parents=True)
    (partial / "model" / "garbage").write_bytes(b"\x00" * 10)
    other = TinyCNN(rngs=nnx.Rngs(1))
    with checkpoint.RunCheckpoints(tmp_path) as run:
        assert run.epochs() == [1, 2] and run.latest_epoch() == 2
        # The resumed run writes epoch 3 again; orbax removes the stale folder first.
        run.save(
            3,
            model_state=nnx.state(other, nnx.Not(nnx.RngState)),
            opt_state=opt_state_of(other),
            step=3,
            meta={},
            best_epoch=None,
        )
        assert sorted(os.listdir(tmp_path)) == ["1", "2", "3"]
        state = run.restore_model_state(3, nnx.state(model, nnx.Not(nnx.RngState)))
    nnx.update(model, state)
    assert_same_arrays(model_arrays(model), model_arrays(other))


def _save_epoch(run, model, epoch, *, step=0, meta=None):
    """`run.save` of `model`'s state and a fresh optimiser state as epoch `epoch`."""
    run.save(
        epoch,
        model_state=nnx.state(model, nnx.Not(nnx.RngState)),
        opt_state=opt_state_of(model),
        step=step,
        meta={} if meta is None else meta,
        best_epoch=None,
    )


@pytest.fixture
def python_ctrl_c():
    """Python's own SIGINT handler for the test: tools that ran earlier in this worker process
    may have installed another."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_save_arrives_once_the_checkpoint_is_complete(
    tmp_path, monkeypatch, python_ctrl_c
):
    model = TinyCNN(rngs=nnx.Rngs(0))
    with checkpoint.RunCheckpoints(tmp_path) as run:
        orbax_save, calls = run._manager.save, []

        def interrupted_save(*args, **kwargs):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while orbax writes
            calls.append(signal.getsignal(signal.SIGINT))
            return orbax_save(*args, **kwargs)

        monkeypatch.setattr(run._manager, "save", interrupted_save)
        with pytest.raises(KeyboardInterrupt):
            _save_epoch(run, model, 1, step=1, meta={"epoch": 1})
        assert len(calls) == 1 and calls[0] is not signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert run.epochs() == [1]
        assert run.meta(1) == {"epoch": 1}
    assert sorted(os.listdir(tmp_path)) == ["1"]


def test_a_save_off_the_main_thread_leaves_ctrl_c_alone(tmp_path, python_ctrl_c):
    model = TinyCNN(rngs=nnx.Rngs(0))
    handlers = []

    def save():
        with checkpoint.RunCheckpoints(tmp_path) as run:
            run._manager.save = _recording(run._manager.save, handlers)
            _save_epoch(run, model, 1, step=1)

    worker = threading.Thread(target=save)
    worker.start()
    worker.join()
    assert handlers == [signal.default_int_handler]
    assert sorted(os.listdir(tmp_path)) == ["1"]


def _recording(save, handlers):
    def recorded(*args, **kwargs):
        handlers.append(signal.getsignal(signal.SIGINT))
        return save(*args, **kwargs)

    return recorded


# ---------------------------------------------------------------- mismatches


def _save_run(directory, model, epoch=1):
    with checkpoint.RunCheckpoints(directory) as run:
        _save_epoch(run, model, epoch)


class Deeper(nnx.Module):
    """TinyCNN plus a second linear layer: same names, one more parameter pair."""

    def __init__(self, *, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.fc = nnx.Linear(4, 1, rngs=rngs)
        self.extra = nnx.Linear(1, 1, rngs=rngs)


def test_restoring_another_architecture_names_the_parameters(tmp_path):
    _save_run(tmp_path / "run", TinyCNN(rngs=nnx.Rngs(0)))
    with pytest.raises(checkpoint.CheckpointMismatchError) as wider:
        checkpoint.restore_model(TinyCNN(width=5, rngs=nnx.Rngs(0)), tmp_path / "run")
    message = str(wider.value)
    assert isinstance(wider.value, ValueError)
    assert "conv/kernel: (3, 3, 3, 4) vs (3, 3, 3, 5)" in message
    assert "fc/kernel: (4, 1) vs (5, 1)" in message and "bn/mean: (4,) vs (5,)" in message
    with pytest.raises(checkpoint.CheckpointMismatchError) as deeper:
        checkpoint.restore_model(Deeper(rngs=nnx.Rngs(0)), tmp_path / "run")
    message = str(deeper.value)
    assert "in the target but not in the checkpoint: 2" in message
    assert "extra/kernel (1, 1)" in message and "extra/bias (1,)" in message
    assert "shape differs" not in message


def test_restore_model_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        checkpoint.restore_model(TinyCNN(rngs=nnx.Rngs(0)), tmp_path / "missing")
    with pytest.raises(ValueError, match="no checkpoint"):
        checkpoint.restore_model(TinyCNN(rngs=nnx.Rngs(0)), tmp_path)
    with pytest.raises(ValueError, match="epoch must be"):
        checkpoint.restore_model(TinyCNN(rngs=nnx.Rngs(0)), tmp_path, epoch="first")
    with pytest.raises(TypeError, match="model"):
        checkpoint.restore_model({"not": "a model"}, tmp_path)


# ---------------------------------------------------------------- model snapshots


def test_save_and_load_model(tmp_path):
    model = TinyCNN(rngs=nnx.Rngs(0))
    nnx.update(model, {"bn": {"mean": jnp.arange(4.0), "var": jnp.full(4, 3.0)}})
    checkpoint.save_model(model, tmp_path / "snap")
    with pytest.raises(ValueError, match="overwrite"):
        checkpoint.save_model(model, tmp_path / "snap")

    fresh = checkpoint.load_model(TinyCNN(rngs=nnx.Rngs(1)), tmp_path / "snap")
    assert_same_arrays(model_arrays(fresh), model_arrays(model))
    abstract = nnx.eval_shape(lambda: TinyCNN(rngs=nnx.Rngs(2)))
    loaded = checkpoint.load_model(abstract, tmp_path / "snap")
    assert_same_arrays(model_arrays(loaded), model_arrays(model))
    images = TRAIN[0][:6]
    np.testing.assert_array_equal(
        train.predict_logits(loaded, images, preprocess=scale),
        train.predict_logits(model, images, preprocess=scale),
    )
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"fc/kernel: \(4, 1\) vs"):
        checkpoint.load_model(TinyCNN(width=6, rngs=nnx.Rngs(0)), tmp_path / "snap")


# ---------------------------------------------------------------- fit with checkpoints

FLIPPED = (TRAIN[0], 1 - TRAIN[1])  # validation loss rises as the model learns the training set
STOPPING = dataclasses.replace(CONFIG, epochs=12, patience=2, max_to_keep=1)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """An early-stopped run with checkpoints: (directory, model, history)."""
    directory = tmp_path_factory.mktemp("stopped")
    model = TinyCNN(rngs=nnx.Rngs(0))
    history = train.fit(
        model,
        TRAIN,
        FLIPPED,
        STOPPING,
        preprocess=scale,
        checkpoint_dir=directory,
        progress=False,
    )
    assert history.stopped_early and history.epochs_run == history.best_epoch + 2
    return directory, model, history


def test_fit_keeps_the_best_checkpoint_and_restores_it(stopped_run):
    directory, model, history = stopped_run
    with checkpoint.RunCheckpoints(directory) as run:
        assert run.epochs() == [history.best_epoch, history.epochs_run]  # latest 1 + best
        meta = run.meta(history.epochs_run)
    assert meta["history"] == history.to_dict()
    best = checkpoint.restore_model(TinyCNN(rngs=nnx.Rngs(5)), directory)
    assert_same_arrays(model_arrays(best), model_arrays(model))  # fit returned the best too
    latest = checkpoint.restore_model(TinyCNN(rngs=nnx.Rngs(5)), directory, epoch="latest")
    assert not np.array_equal(model_arrays(latest)["fc/kernel"], model_arrays(model)["fc/kernel"])


def test_resume_across_the_best_epoch_matches_an_uninterrupted_run(stopped_run, tmp_path):
    """Stop one epoch after the best, resume: early stopping continues its count and reads the
    best parameters back from the checkpoint."""
    _, model, history = stopped_run
    first = dataclasses.replace(STOPPING, epochs=history.best_epoch + 1)
    train.fit(
        TinyCNN(rngs=nnx.Rngs(0)),
        TRAIN,
        FLIPPED,
        first,
        preprocess=scale,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    resumed_model = TinyCNN(rngs=nnx.Rngs(0))
    resumed = train.fit(
        resumed_model,
        TRAIN,
        FLIPPED,
        STOPPING,
        preprocess=scale,
        checkpoint_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert resumed.to_dict() == history.to_dict()
    assert_same_arrays(model_arrays(resumed_model), model_arrays(model))
    # The same command once more finds the run finished: no epoch is trained or saved again.
    again_model = TinyCNN(rngs=nnx.Rngs(0))
    again = train.fit(
        again_model,
        TRAIN,
        FLIPPED,
        STOPPING,
        preprocess=scale,
        checkpoint_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert again.to_dict() == history.to_dict()
    assert_same_arrays(model_arrays(again_model), model_arrays(model))
    assert sorted(os.listdir(tmp_path)) == sorted(
        str(e) for e in {history.best_epoch, history.epochs_run}
    )


def test_fit_refuses_to_mix_runs(stopped_run):
    directory, _, _ = stopped_run
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train.fit(
            TinyCNN(rngs=nnx.Rngs(0)),
            TRAIN,
            FLIPPED,
            STOPPING,
            checkpoint_dir=directory,
            progress=False,
        )
    changed = dataclasses.replace(STOPPING, learning_rate=0.5)
    with pytest.raises(ValueError, match=r"different config \(learning_rate: 0.02 -> 0.5\)"):
        train.fit(
            TinyCNN(rngs=nnx.Rngs(0)),
            TRAIN,
            FLIPPED,
            changed,
            preprocess=scale,
            checkpoint_dir=directory,
            resume=True,
            progress=False,
        )
    fewer = (TRAIN[0][:100], TRAIN[1][:100])
    with pytest.raises(ValueError, match="trained on 120 examples"):
        train.fit(
            TinyCNN(rngs=nnx.Rngs(0)),
            fewer,
            FLIPPED,
            STOPPING,
            preprocess=scale,
            checkpoint_dir=directory,
            resume=True,
            progress=False,
        )
    with pytest.raises(checkpoint.CheckpointMismatchError, match="conv/kernel"):
        train.fit(
            TinyCNN(width=3, rngs=nnx.Rngs(0)),
            TRAIN,
            FLIPPED,
            STOPPING,
            preprocess=scale,
            checkpoint_dir=directory,
            resume=True,
            progress=False,
        )


# ---------------------------------------------------------------- killed runs (subprocesses)


def _start(directory, out, *flags):
    env = dict(os.environ)
    # Later workers reuse the first ones' compilations.
    env["JAX_COMPILATION_CACHE_DIR"] = str(directory.parent / "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(directory), str(out), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _kill_when(process, line):
    """Reads the worker's output until `line`, then SIGKILLs it; returns the lines read."""
    seen = []
    for received in process.stdout:
        seen.append(received.strip())
        if received.strip() == line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (seen, process.returncode)
    return seen


def _finish(process):
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return [line for line in output.splitlines() if line.startswith("SAVED")]


def _result(path):
    with np.load(path) as data:
        history = json.loads(str(data["history"]))
        return history, {key: data[key] for key in data.files if key != "history"}


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_parameters(tmp_path):
    """Killed after epoch 2's checkpoint, or while epoch 3's was being written (files in
    orbax's temporary folder, not yet renamed): restarted with the same command, each continues
    from the last complete epoch and ends bitwise equal to an uninterrupted run."""
    runs = {name: tmp_path / name for name in ("whole", "between", "during")}
    whole = _start(runs["whole"], tmp_path / "whole.npz")
    between = _start(runs["between"], tmp_path / "between.npz", "--pause-after-save", "2")
    during = _start(runs["during"], tmp_path / "during.npz", "--pause-in-save", "3")
    assert _kill_when(between, "SAVED 2") == ["SAVED 1", "SAVED 2"]
    assert _kill_when(during, "FINALIZING 3") == ["SAVED 1", "SAVED 2", "FINALIZING 3"]
    assert _finish(whole) == ["SAVED 1", "SAVED 2", "SAVED 3", "SAVED 4"]

    assert sorted(os.listdir(runs["between"])) == ["1", "2"]
    assert sorted(os.listdir(runs["during"])) == ["1", "2", "3.orbax-checkpoint-tmp"]
    restarted = [_start(runs[name], tmp_path / f"{name}.npz") for name in ("between", "during")]
    for process in restarted:
        assert _finish(process) == ["SAVED 3", "SAVED 4"]  # epochs 1-2 are not redone

    expected_history, expected = _result(tmp_path / "whole.npz")
    assert expected_history["epochs_run"] == 4
    for name in ("between", "during"):
        history, arrays = _result(tmp_path / f"{name}.npz")
        assert history == expected_history
        assert_same_arrays(arrays, expected)
    assert not any("tmp" in name for name in os.listdir(runs["during"]))
