"""Orbax checkpoints: per-epoch training checkpoints keeping the best epoch; model snapshots."""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

PyTree = Any

_MAX_LISTED = 20
# Training config fields that may change when a run is resumed: they do not change the
# arithmetic of an epoch.
RESUMABLE_CHANGES = ("epochs", "eval_batch_size", "max_to_keep")


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model or training state it is restored into."""


class ResumeMismatchError(ValueError):
    """A run asked to resume differs from the run its checkpoints recorded."""


def _entry_name(entry: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _is_variable(node: Any) -> bool:
    return isinstance(node, nnx.Variable)


def _flat_paths(tree: PyTree) -> dict[tuple[str, ...], Any]:
    """Leaves of `tree` (NNX Variables unwrapped to their values) keyed by string paths."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)[0]:
        keys = tuple(_entry_name(entry) for entry in path)
        if keys in flat:
            raise ValueError(f"two leaves share the checkpoint path {'/'.join(keys)!r}")
        flat[keys] = leaf.get_value() if _is_variable(leaf) else leaf
    return flat


def _nested(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """A nested dict of string keys from leaves keyed by path."""
    out: dict[str, Any] = {}
    for keys, leaf in flat.items():
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    return out


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
    if isinstance(leaf, jax.ShapeDtypeStruct):
        sharding = leaf.sharding
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)


def _describe(keys: tuple[str, ...], shape: Sequence[int] | None) -> str:
    return f"{'/'.join(keys)} {tuple(shape) if shape is not None else '(unknown shape)'}"


def _check_fits(item: str, saved: PyTree, target: Mapping[tuple[str, ...], Any]) -> None:
    """Raises CheckpointMismatchError naming every path whose presence or shape differs."""
    saved_flat = _flat_paths(getattr(saved, "tree", saved))
    missing = sorted(set(target) - set(saved_flat))
    unexpected = sorted(set(saved_flat) - set(target))
    different = sorted(
        keys
        for keys in set(target) & set(saved_flat)
        if tuple(getattr(saved_flat[keys], "shape", ()) or ()) != tuple(np.shape(target[keys]))
    )
    if not (missing or unexpected or different):
        return
    lines = [f"the checkpoint's {item!r} does not fit the target:"]
    for title, paths, describe in (
        ("shape differs (checkpoint vs target)", different, None),
        ("in the target but not in the checkpoint", missing, "target"),
        ("in the checkpoint but not in the target", unexpected, "saved"),
    ):
        if not paths:
            continue
        lines.append(f"  {title}: {len(paths)}")
        for keys in paths[:_MAX_LISTED]:
            if describe is None:
                saved_shape = getattr(saved_flat[keys], "shape", None)
                lines.append(
                    f"    {'/'.join(keys)}: {tuple(saved_shape or ())} vs "
                    f"{tuple(np.shape(target[keys]))}"
                )
            elif describe == "target":
                lines.append(f"    {_describe(keys, np.shape(target[keys]))}")
            else:
                lines.append(f"    {_describe(keys, getattr(saved_flat[keys], 'shape', None))}")
        if len(paths) > _MAX_LISTED:
            lines.append(f"    ... and {len(paths) - _MAX_LISTED} more")
    lines.append("Was the checkpoint written by a model of another architecture?")
    raise CheckpointMismatchError("\n".join(lines))


def _restore_like(restored: PyTree, like: PyTree) -> PyTree:
    """Puts the restored nested dict back into the structure of `like`."""
    flat = _flat_paths(restored)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like, is_leaf=_is_variable)
    values = []
    for path, leaf in leaves:
        value = flat[tuple(_entry_name(entry) for entry in path)]
        values.append(leaf.replace(value) if _is_variable(leaf) else value)
    return jax.tree_util.tree_unflatten(treedef, values)


def _model_state(model: nnx.Module) -> nnx.State:
    """Everything a model holds except its RNG streams, which are never checkpointed."""
    return nnx.state(model, nnx.Not(nnx.RngState))


@dataclasses.dataclass
class _LatestAndBest:
    """Orbax preservation policy: the `n` latest epochs plus the best one.

    The best epoch is read from the metrics of the newest checkpoint (`best_epoch`), so the
    choice is exactly the one `jaxcal.train.fit` made, ties included.
    """

    n: int

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        del context
        if not checkpoints:
            return []
        best = (checkpoints[-1].metrics or {}).get("best_epoch")
        first_latest = len(checkpoints) - self.n
        return [i >= first_latest or c.step == best for i, c in enumerate(checkpoints)]


def _best_epoch_metric(metrics: Mapping[str, Any]) -> float:
    return float(metrics.get("best_epoch") or 0)


class RunCheckpoints:
    """The checkpoints of one training run: one per epoch, the latest `max_to_keep` kept plus the
    best epoch.

    Each checkpoint (orbax step = number of completed epochs) holds three items:
    `model`, the model's state without RNG streams as a nested dict of arrays; `train`, the
    optimiser state and the step counter; `meta`, JSON (epoch, history so far, config, best
    epoch). Saves are synchronous: when `save` returns, the checkpoint is complete on disk.
    Orbax writes into a temporary folder and renames it when complete, so a process killed
    mid-save leaves no checkpoint behind, only a temporary folder that is ignored and removed.

    Args:
      directory: folder of the run; created if missing.
      max_to_keep: how many of the latest epochs to keep (the best epoch is kept besides).
    """

    def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 3) -> None:
        if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(f"max_to_keep must be an int >= 1, got {max_to_keep!r}")
        if not isinstance(directory, (str, pathlib.Path)):
            raise TypeError(f"directory must be a str or pathlib.Path, got {type(directory)}")
        self.directory = pathlib.Path(directory).expanduser().absolute()
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            preservation_policy=_LatestAndBest(max_to_keep),
            # Orbax writes a step's metrics only when `best_fn` is set; `_LatestAndBest`
            # reads them to keep the best epoch.
            best_fn=_best_epoch_metric,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                "model": ocp.StandardCheckpointHandler(),
                "train": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
            options=options,
        )

    def __enter__(self) -> RunCheckpoints:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Waits for pending work and releases orbax's resources."""
        self._manager.close()

    def epochs(self) -> list[int]:
        """The completed epochs that have a checkpoint, in increasing order."""
        return sorted(self._manager.all_steps())

    def latest_epoch(self) -> int | None:
        """The last completed epoch with a checkpoint, or None for an empty run."""
        return self._manager.latest_step()

    def save(
        self,
        epoch: int,
        *,
        model_state: PyTree,
        opt_state: PyTree,
        step: jax.Array | int,
        meta: Mapping[str, Any],
        best_epoch: int | None,
    ) -> None:
        """Writes the checkpoint of a completed epoch and returns once it is on disk.

        Args:
          epoch: number of completed epochs (>= 1).
          model_state: the model's state (an `nnx.State` or nested dict of arrays), without RNGs.
          opt_state: the optax state.
          step: the optimiser step counter.
          meta: JSON-serialisable run metadata.
          best_epoch: the epoch whose checkpoint must be kept as the best, or None.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be an int >= 1, got {epoch!r}")
        with _ctrl_c_held_back():
            self._write(epoch, model_state, opt_state, step, meta, best_epoch)

    def _write(self, epoch, model_state, opt_state, step, meta, best_epoch) -> None:
        self._manager.save(
            epoch,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(_nested(_flat_paths(model_state))),
                train=ocp.args.StandardSave(
                    _nested(_flat_paths({"opt_state": opt_state, "step": step}))
                ),
                meta=ocp.args.JsonSave(dict(meta)),
            ),
            metrics={"best_epoch": best_epoch or 0},
        )
        self._manager.wait_until_finished()

    def _require(self, epoch: int) -> None:
        if epoch not in self._manager.all_steps():
            raise ValueError(
                f"epoch {epoch} has no checkpoint in {self.directory}; found {self.epochs()}"
            )

    def meta(self, epoch: int) -> dict[str, Any]:
        """The JSON metadata saved with `epoch`."""
        self._require(epoch)
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        return dict(restored["meta"])

    def _restore_item(self, epoch: int, item: str, like: PyTree) -> PyTree:
        self._require(epoch)
        target = _flat_paths(like)
        _check_fits(item, self._manager.item_metadata(epoch)[item], target)
        abstract = _nested({keys: _abstract(leaf) for keys, leaf in target.items()})
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
        )
        return _restore_like(restored[item], like)

    def restore_model_state(self, epoch: int, like: PyTree) -> PyTree:
        """The model state of `epoch`, in the structure of `like`.

        Args:
          epoch: a saved epoch.
          like: a model state of the target architecture (arrays or ShapeDtypeStructs; their
            shardings place the restored arrays).

        Raises:
          CheckpointMismatchError: the checkpoint's parameters differ in name or shape from
            `like`'s; the message lists every differing path.
        """
        return self._restore_item(epoch, "model", like)

    def restore_train(self, epoch: int, *, opt_state_like: PyTree) -> tuple[PyTree, jax.Array]:
        """The optimiser state (in the structure of `opt_state_like`) and step of `epoch`."""
        restored = self._restore_item(
            epoch, "train", {"opt_state": opt_state_like, "step": np.zeros((), np.int32)}
        )
        return restored["opt_state"], restored["step"]

    def check_resumable(
        self,
        meta: Mapping[str, Any],
        *,
        config: Mapping[str, Any],
        num_train: int,
        run_info: Mapping[str, Any] | None = None,
    ) -> None:
        """Raises ResumeMismatchError unless a run saved with `meta` may continue as asked.

        Args:
          meta: the metadata of the checkpoint to resume (`meta(epoch)`).
          config: the new run's training config as JSON; only `RESUMABLE_CHANGES` may differ.
          num_train: the new run's number of training examples.
          run_info: what else identifies the run (e.g. a data fingerprint); must equal the
            saved one field by field.
        """
        saved = meta["config"]
        differing = [
            (k, saved.get(k), config[k])
            for k in sorted(config)
            if k not in RESUMABLE_CHANGES and saved.get(k) != config[k]
        ]
        if differing:
            raise ResumeMismatchError(
                f"cannot resume {self.directory} with a different config ({_listed(differing)})"
            )
        if meta["num_train"] != num_train:
            raise ResumeMismatchError(
                f"cannot resume {self.directory}: it trained on {meta['num_train']} examples, "
                f"this call passes {num_train}"
            )
        differing = _differences(meta.get("run") or {}, dict(run_info or {}))
        if differing:
            raise ResumeMismatchError(
                f"cannot resume {self.directory}: the run differs ({_listed(differing)})"
            )

    def best_epoch(self) -> int | None:
        """The best epoch recorded by the latest checkpoint, or None if there is none."""
        latest = self.latest_epoch()
        if latest is None:
            return None
        return (self._manager.metrics(latest) or {}).get("best_epoch") or None


def _differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) of every leaf that differs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append((f"{prefix}{key}", old, new))
    return out


def _listed(differences: Sequence[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in differences)


def restore_model(
    model: nnx.Module,
    directory: str | pathlib.Path,
    *,
    epoch: int | Literal["best", "latest"] = "best",
) -> nnx.Module:
    """Loads a training run's checkpoint into a model of the same architecture.

    Args:
      model: a freshly built model (any initialisation) or an abstract one from
        `nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0)))`. A concrete model is updated in place.
      directory: the run's checkpoint folder (`fit(..., checkpoint_dir=directory)`).
      epoch: an epoch number, "latest", or "best" (the best validation epoch; the latest when
        the run had no validation data).

    Returns:
      The model holding the checkpoint's parameters and batch statistics. RNG streams are not
      checkpointed: an abstract model keeps abstract ones (pass `rngs` at call time).

    Raises:
      ValueError: no checkpoint in `directory`, or an unknown `epoch`.
      CheckpointMismatchError: the architectures differ; the message names the parameters.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model)}")
    if not (
        epoch in ("best", "latest") or (isinstance(epoch, int) and not isinstance(epoch, bool))
    ):
        raise ValueError(f"epoch must be an int, 'best' or 'latest', got {epoch!r}")
    if not pathlib.Path(directory).expanduser().is_dir():
        raise ValueError(f"directory {directory} does not exist")
    with RunCheckpoints(directory) as run:
        latest = run.latest_epoch()
        if latest is None:
            raise ValueError(f"no checkpoint found in {run.directory}")
        if epoch == "latest":
            chosen = latest
        elif epoch == "best":
            chosen = run.best_epoch() or latest
        else:
            chosen = epoch
        state = run.restore_model_state(chosen, _model_state(model))
    return _put_state(model, state)


def _put_state(model: nnx.Module, state: nnx.State) -> nnx.Module:
    abstract = any(
        isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(model))
    )
    if abstract:
        graphdef, rngs, _ = nnx.split(model, nnx.RngState, ...)
        return nnx.merge(graphdef, rngs, state)
    nnx.update(model, state)
    return model


def save_model(model: nnx.Module, path: str | pathlib.Path, *, overwrite: bool = False) -> None:
    """Saves a model's parameters and batch statistics (not its RNG streams) to `path`.

    Args:
      model: the model.
      path: a folder that must not exist yet, unless `overwrite`.
      overwrite: replace an existing snapshot.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model)}")
    path = pathlib.Path(path).expanduser().absolute()
    if path.exists() and not overwrite:
        raise ValueError(f"path {path} exists; pass overwrite=True to replace it")
    state = _nested(_flat_paths(_model_state(model)))
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.StandardSave(state), force=overwrite)


def load_model(model: nnx.Module, path: str | pathlib.Path) -> nnx.Module:
    """Loads a snapshot written by `save_model` into a model of the same architecture.

    Args:
      model: a freshly built model, or an abstract one from `nnx.eval_shape`; a concrete model
        is updated in place.
      path: the snapshot folder.

    Returns:
      The model holding the snapshot's state.

    Raises:
      CheckpointMismatchError: the architectures differ; the message names the parameters.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model)}")
    path = pathlib.Path(path).expanduser().absolute()
    if not path.is_dir():
        raise ValueError(f"no model snapshot at {path}")
    like = _model_state(model)
    target = _flat_paths(like)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        _check_fits("model", checkpointer.metadata(path).item_metadata, target)
        abstract = _nested({keys: _abstract(leaf) for keys, leaf in target.items()})
        restored = checkpointer.restore(path, args=ocp.args.StandardRestore(abstract))
    return _put_state(model, _restore_like(restored, like))


@contextlib.contextmanager
def _ctrl_c_held_back() -> Iterator[None]:
    """Holds a Ctrl-C (SIGINT) back until the block ends, then delivers it as usual.

    Orbax writes with worker threads; a KeyboardInterrupt raised in the middle of a save
    leaves them running into the interpreter's shutdown ("cannot schedule new futures after
    interpreter shutdown") and can keep the process from exiting. Held back, the interrupt
    arrives once the checkpoint is complete. Off the main thread (which Python never
    interrupts) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
    if received:
        signal.raise_signal(signal.SIGINT)  # the previous handler's own response
