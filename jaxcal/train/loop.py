"""`fit`: the epoch loop over on-device data, validation, early stopping and checkpoints."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxcal import checkpoint
from jaxcal._checks import check_callable, check_int
from jaxcal.data.transforms import Preprocess
from jaxcal.models import conv
from jaxcal.train.config import History, TrainConfig
from jaxcal.train.inputs import check_labels, check_split, output_width
from jaxcal.train.predict import make_mesh, padded_batches, round_up
from jaxcal.train.steps import (
    TrainState,
    base_keys,
    check_micro_batches,
    create_train_state,
    epoch_batches,
    make_eval_step,
    make_train_step,
    split_state,
)


def fit(
    model: nnx.Module,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None = None,
    config: TrainConfig | None = None,
    *,
    preprocess: Preprocess | None = None,
    checkpoint_dir: str | pathlib.Path | None = None,
    resume: bool = False,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    run_info: Mapping[str, Any] | None = None,
) -> History:
    """Trains `model` in place and returns what was measured.

    The inputs stay on the devices for the whole run (uint8 images are fine: `preprocess`
    converts). Each epoch draws a permutation from `fold_in(key, epoch)`; each step gathers its
    batch by index inside one jitted, state-donating call and uses `fold_in(key, step)` for
    augmentation and dropout. Nothing is copied to the host inside an epoch: per-step losses
    are fetched once per epoch, with the validation sums, for the progress bar.

    Data parallelism: the batch is sharded over a mesh of `devices` (default all), the
    parameters and optimiser state are replicated; `batch_size` must divide by the device
    count. The result equals a one-device run up to float32 summation order.

    Args:
      model: an NNX model returning logits [B, K] (K = 1: one binary logit, sigmoid BCE;
        otherwise softmax CE). Updated in place with the final (or, with early stopping, the
        best) parameters. Its `__call__` gets `rngs=` (dropout keys) only if it takes them.
      train: (inputs [N, ...], labels [N] int): images [N, H, W, C], features [N, D], ...
      val: optional (inputs, labels) evaluated in eval mode after every epoch, every example
        counted (the last batch is padded and masked).
      config: training configuration; default `TrainConfig()`.
      preprocess: optional `preprocess(inputs, key or None) -> float32`, jittable.
      checkpoint_dir: when given, a checkpoint is saved after every epoch (the latest
        `config.max_to_keep` and the best epoch are kept).
      resume: continue the run in `checkpoint_dir` from its last complete epoch (starts afresh
        when the folder has no checkpoint). Without it, a folder that already holds
        checkpoints is an error.
      progress: show a tqdm bar with per-epoch train loss, val loss and val accuracy.
      devices: the devices to train on; default `jax.devices()`.
      run_info: JSON that identifies the run beyond `config` (e.g. a fingerprint of the
        data), saved with every checkpoint; a resume whose `run_info` differs is refused.

    Returns:
      The History; with `checkpoint_dir` it includes the epochs run before a resume.

    Raises:
      ValueError: bad shapes or labels, a batch size the data or device count cannot supply,
        early stopping without validation data.
      checkpoint.ResumeMismatchError: a resume whose configuration, data size or `run_info`
        differs from the checkpoints'.
    """
    config = TrainConfig() if config is None else config
    data, val_data, mesh = _check_fit(
        train, val, config, preprocess, checkpoint_dir, resume, devices
    )
    micro = config.micro_batch_size or _micro_batch(model, config.batch_size, mesh)
    check_micro_batches(model, config, micro, mesh)
    graphdef, state = create_train_state(model, config)
    width = output_width(
        "train", graphdef, (state.params, state.rngs, state.rest), data[0], preprocess
    )
    check_labels("train", data[1], width)
    if val_data is not None:
        check_labels("val", val_data[1], width)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    history = History(steps_per_epoch=int(data[0].shape[0]) // config.batch_size)
    run, run_info = None, json.loads(json.dumps(dict(run_info or {})))
    try:
        start_epoch = 0
        if checkpoint_dir is not None:
            run = checkpoint.RunCheckpoints(checkpoint_dir, max_to_keep=config.max_to_keep)
            state, history, start_epoch = _start(
                run, resume, graphdef, state, history, config, (int(data[0].shape[0]), run_info)
            )
        fused = config.steps_per_call or steps_dividing_the_epoch(
            conv.steps_per_call_for(model, mesh.devices.flat[0].platform),
            history.steps_per_epoch,
        )
        history.micro_batch_size = None if micro == config.batch_size else micro
        loop = _EpochLoop(
            graphdef, config, preprocess, mesh, data, val_data, (run, run_info), fused, micro
        )
        state, best = loop.run_epochs(state, history, start_epoch, progress)
        if config.patience is not None and history.best_epoch not in (None, history.epochs_run):
            if best is not None:
                state = dataclasses.replace(state, params=best[0], rest=best[1])
            else:  # the best epoch came before a resume: read it back
                state = _restore_model(run, history.best_epoch, graphdef, state, config)
    finally:
        if run is not None:
            run.close()
    nnx.update(model, state.params, state.rest, state.rngs)
    return history


def _micro_batch(model: nnx.Module, batch_size: int, mesh: Mesh) -> int | None:
    """`conv.micro_batch_for` on one device; a sharded batch runs whole (None)."""
    if mesh.devices.size > 1:
        return None
    return conv.micro_batch_for(model, batch_size, mesh.devices.flat[0].platform)


def _check_fit(train, val, config, preprocess, checkpoint_dir, resume, devices):
    """Checks `fit`'s arguments before any work; returns (train, val or None, mesh)."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config)}")
    inputs, labels = check_split("train", train)
    val_data = None if val is None else check_split("val", val)
    if val_data is not None and val_data[0].shape[1:] != inputs.shape[1:]:
        raise ValueError(
            f"val inputs are {val_data[0].shape[1:]} but train inputs are {inputs.shape[1:]} "
            "(val images must match the train images)"
        )
    if config.batch_size > inputs.shape[0]:
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the {inputs.shape[0]} training examples"
        )
    if config.patience is not None and val_data is None:
        raise ValueError("early stopping (config.patience) needs validation data: pass val")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    check_callable("preprocess", preprocess)
    mesh = make_mesh(devices)
    if config.batch_size % mesh.devices.size:
        raise ValueError(
            f"batch_size {config.batch_size} must divide by the {mesh.devices.size} devices"
        )
    return (inputs, labels), val_data, mesh


def _start(run, resume, graphdef, state, history, config, identity):
    """(state, history, first epoch) of a run: fresh, or its last checkpoint with `resume`."""
    latest = run.latest_epoch()
    if latest is None:
        return state, history, 0
    if not resume:
        raise ValueError(
            f"{run.directory} already holds checkpoints (epochs {run.epochs()}); pass "
            "resume=True to continue that run or choose another checkpoint_dir"
        )
    meta = run.meta(latest)
    num_train, run_info = identity
    run.check_resumable(meta, config=config.to_json(), num_train=num_train, run_info=run_info)
    restored = _restore_model(run, latest, graphdef, state, config)
    opt_state, step = run.restore_train(latest, opt_state_like=state.opt_state)
    restored = dataclasses.replace(restored, opt_state=opt_state, step=step)
    return restored, History.from_dict(meta["history"]), latest


def _restore_model(
    run: checkpoint.RunCheckpoints,
    epoch: int,
    graphdef: nnx.GraphDef,
    like: TrainState,
    config: TrainConfig,
) -> TrainState:
    """`like` with the model state of `epoch` (parameters and batch statistics)."""
    model = nnx.merge(graphdef, like.params, like.rngs, like.rest)
    nnx.update(model, run.restore_model_state(epoch, nnx.state(model, nnx.Not(nnx.RngState))))
    _, params, rest, _ = split_state(model, config.trainable)
    return dataclasses.replace(like, params=params, rest=rest)


def steps_dividing_the_epoch(preferred: int, steps_per_epoch: int) -> int:
    """Steps per call for `fit`'s automatic choice: a divisor of the epoch's steps from
    `preferred` down to `preferred // 2` if there is one, else `preferred` (at most the epoch).

    Steps left over after the last full call run one at a time, a second compiled program
    (a LeNet-5 train step compiles in ~2 s on two CPU cores); 4 to 16 steps per call train an
    epoch equally fast there (`benchmarks/README.md`), so a divisor in that range costs nothing.
    E.g. 8 preferred: 12 steps -> 6, 125 -> 5, 13 -> 8 (8 + 5 single steps), 3 -> 3.
    """
    check_int("preferred", preferred)
    check_int("steps_per_epoch", steps_per_epoch)
    largest = min(preferred, steps_per_epoch)
    for steps in range(largest, max(1, preferred // 2) - 1, -1):
        if steps_per_epoch % steps == 0:
            return steps
    return largest


class _EpochLoop:
    """The compiled steps and the on-device data of one `fit` call, and its epoch loop."""

    def __init__(
        self,
        graphdef,
        config,
        preprocess,
        mesh: Mesh,
        data,
        val_data,
        run,
        fused: int,
        micro: int | None,
    ) -> None:
        self.graphdef, self.config = graphdef, config
        self.run, self.run_info = run
        replicated = NamedSharding(mesh, P())
        self.inputs, self.labels = jax.device_put(data, replicated)
        self.num_train = int(self.inputs.shape[0])
        self.rows = NamedSharding(mesh, P(None, "data"))
        steps_per_epoch = self.num_train // config.batch_size
        fused = min(fused, steps_per_epoch)
        self.calls, self.remainder = divmod(steps_per_epoch, fused)
        self.train_step = make_train_step(
            graphdef, config, preprocess, steps_per_call=fused, micro_batch_size=micro, mesh=mesh
        )
        self.single_step = make_train_step(
            graphdef, config, preprocess, steps_per_call=1, micro_batch_size=micro, mesh=mesh
        )
        self.val = None
        if val_data is not None:
            size = round_up(config.eval_batch_size, mesh.devices.size)
            index, weight = padded_batches(int(val_data[0].shape[0]), size)
            sharding = NamedSharding(mesh, P("data"))
            self.val = (
                make_eval_step(graphdef, preprocess, mesh=mesh),
                jax.device_put(val_data, replicated),
                [jax.device_put(batch, sharding) for batch in zip(index, weight, strict=True)],
            )
        _, self.permutation_key = base_keys(config.seed)

    def run_epochs(
        self, state: TrainState, history: History, start_epoch: int, progress: bool
    ) -> tuple[TrainState, tuple[Any, Any] | None]:
        """Trains from `start_epoch`, recording into `history`; returns the final state and,
        when early stopping found its best epoch here, a copy of its (params, rest)."""
        config, best = self.config, None
        steps = history.steps_per_epoch
        bar = tqdm(
            total=config.epochs * steps,
            initial=min(start_epoch, config.epochs) * steps,
            disable=not progress or jax.process_index() != 0,
            unit="step",
            dynamic_ncols=True,
        )
        try:
            for epoch in range(start_epoch, config.epochs):
                if history.stopped_early:
                    break
                state, fetched = self._epoch(state, epoch, bar)
                history.record_train(fetched["train"])
                postfix = {"epoch": epoch + 1, "loss": f"{history.train_loss[-1]:.4f}"}
                if self.val is not None:
                    improved = history.record_validation(fetched["val"], config)
                    if improved and config.patience is not None:
                        best = jax.tree.map(jnp.copy, (state.params, state.rest))
                    postfix["val_loss"] = f"{history.val_loss[-1]:.4f}"
                    postfix["val_acc"] = f"{history.val_accuracy[-1]:.4f}"
                if self.run is not None:
                    meta = {"num_train": self.num_train, "run": self.run_info}
                    _save(self.run, self.graphdef, state, history, config, meta)
                bar.set_postfix(postfix)
        finally:
            bar.close()
        return state, best

    def _epoch(self, state: TrainState, epoch: int, bar: Any) -> tuple[TrainState, dict]:
        """One epoch's steps and validation; one host fetch of their metrics at the end."""
        key = jax.random.fold_in(self.permutation_key, epoch)
        batches = jax.device_put(
            epoch_batches(key, self.num_train, self.config.batch_size), self.rows
        )
        metrics = []
        for step_fn, count in ((self.train_step, self.calls), (self.single_step, self.remainder)):
            for _ in range(count):
                state, step_metrics = step_fn(state, self.inputs, self.labels, batches)
                metrics.append(step_metrics)
                bar.update(step_metrics.shape[0])
        fetch = {"train": jnp.concatenate(metrics)}
        if self.val is not None:
            eval_step, (inputs, labels), eval_batches = self.val
            sums = [eval_step(state, inputs, labels, i, w) for i, w in eval_batches]
            fetch["val"] = jnp.sum(jnp.stack(sums), axis=0)
        fetched = jax.device_get(fetch)
        if self.val is not None:
            fetched["val"] = fetched["val"] / self.val[1][0].shape[0]
        return state, fetched


def _save(run, graphdef, state: TrainState, history: History, config: TrainConfig, meta):
    """Checkpoints the epoch just completed: model state, optimiser state, history, config and
    `meta` (the run's identity)."""
    model = nnx.merge(graphdef, state.params, state.rngs, state.rest)
    run.save(
        history.epochs_run,
        model_state=nnx.state(model, nnx.Not(nnx.RngState)),
        opt_state=state.opt_state,
        step=state.step,
        meta={"history": history.to_dict(), "config": config.to_json(), **meta},
        best_epoch=history.best_epoch,
    )
