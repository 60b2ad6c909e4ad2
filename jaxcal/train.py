"""Training engine: jitted optax steps, data-parallel `fit` with early stopping and resumable
checkpoints, and batched eval-mode prediction."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxcal import checkpoint
from jaxcal.models import conv

Preprocess = Callable[[jax.Array, "jax.Array | None"], jax.Array]
"""`preprocess(images [B, H, W, C], key or None) -> float32 [B, H', W', C']`, run inside jit.

A key is given for training batches (augmentation), None for evaluation."""

_OPTIMIZERS = ("adam", "adamw", "sgd")
_MONITORS = ("val_loss", "val_accuracy")
# Fields that may change when a run is resumed: they do not change the arithmetic of an epoch.
_RESUMABLE_CHANGES = ("epochs", "eval_batch_size", "max_to_keep")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How `fit` trains. The defaults are the first original notebook's (Adam 1e-3, batch 64,
    10 epochs).

    Attributes:
      epochs: number of passes over the training set.
      batch_size: global batch size (split over devices; must divide by the device count). The
        ragged last batch of an epoch is dropped so every step has the same shape; a new
        permutation each epoch means every example is still seen.
      optimizer: "adam", "adamw" (decoupled weight decay) or "sgd".
      learning_rate: step size.
      momentum: SGD momentum (0 = plain SGD); ignored by Adam.
      weight_decay: for "adam" and "sgd", L2 added to the gradient (PyTorch's `weight_decay`);
        for "adamw", decoupled decay.
      trainable: None trains every `nnx.Param`; a tuple of top-level submodule names (e.g.
        ("fc",) or ("layer4", "fc")) trains only those. The other submodules are frozen: their
        parameters never move, have no optimiser state, and they run in eval mode (BatchNorm
        uses and keeps its running statistics, Dropout is off).
      patience: stop after this many epochs without improvement of `monitor` and restore the
        best epoch's parameters; None trains all epochs and keeps the last ones.
      monitor: "val_loss" (lower is better) or "val_accuracy" (higher is better).
      seed: seeds the per-epoch permutations, augmentation and dropout.
      eval_batch_size: batch size for validation.
      steps_per_call: training steps fused into one jitted call with `lax.scan`. None picks
        per backend and model (`jaxcal.models.conv.steps_per_call_for`): 8, except 1 on CPU
        for models with XLA convolutions (XLA:CPU compiles their gradients inside loops into
        slow kernels).
      max_to_keep: how many latest epoch checkpoints to keep (the best one is kept besides).
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    trainable: tuple[str, ...] | None = None
    patience: int | None = None
    monitor: str = "val_loss"
    seed: int = 0
    eval_batch_size: int = 256
    steps_per_call: int | None = None
    max_to_keep: int = 3

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "max_to_keep"):
            _require_int(name, getattr(self, name), minimum=1)
        _require_int("seed", self.seed, minimum=None)
        if self.patience is not None:
            _require_int("patience", self.patience, minimum=1)
        if self.steps_per_call is not None:
            _require_int("steps_per_call", self.steps_per_call, minimum=1)
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.monitor not in _MONITORS:
            raise ValueError(f"monitor must be one of {_MONITORS}, got {self.monitor!r}")
        for name in ("learning_rate", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {value!r}")
            if not math.isfinite(value) or value < 0 or (name == "learning_rate" and value == 0):
                bound = "> 0" if name == "learning_rate" else ">= 0"
                raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
        if self.trainable is not None:
            if isinstance(self.trainable, str) or not isinstance(self.trainable, (tuple, list)):
                raise TypeError(
                    f"trainable must be None or a tuple of submodule names such as ('fc',), "
                    f"got {self.trainable!r}"
                )
            if not self.trainable or not all(isinstance(n, str) for n in self.trainable):
                raise ValueError(f"trainable must hold at least one name, got {self.trainable!r}")
            object.__setattr__(self, "trainable", tuple(self.trainable))


def _require_int(name: str, value: Any, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


@dataclasses.dataclass(eq=False)
class History:
    """What `fit` measured.

    Attributes:
      step_loss: [num_steps] training loss of every step (train mode, before the update).
      step_accuracy: [num_steps] training accuracy of every step's batch.
      steps_per_epoch: steps in one epoch.
      train_loss: per epoch, the mean of its step losses.
      train_accuracy: per epoch, the mean of its step accuracies.
      val_loss: per epoch, mean validation loss in eval mode (empty without validation data).
      val_accuracy: per epoch, validation accuracy (empty without validation data).
      best_epoch: 1-based epoch with the best `monitor` value, None without validation data.
      stopped_early: whether early stopping ended the run before `epochs`.
    """

    step_loss: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    step_accuracy: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    steps_per_epoch: int = 0
    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_accuracy: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    val_accuracy: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (arrays become lists)."""
        return {
            "step_loss": [float(x) for x in self.step_loss],
            "step_accuracy": [float(x) for x in self.step_accuracy],
            "steps_per_epoch": self.steps_per_epoch,
            "train_loss": list(self.train_loss),
            "train_accuracy": list(self.train_accuracy),
            "val_loss": list(self.val_loss),
            "val_accuracy": list(self.val_accuracy),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "epochs_run": self.epochs_run,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """The inverse of `to_dict`."""
        return cls(
            step_loss=np.asarray(data["step_loss"], np.float32),
            step_accuracy=np.asarray(data["step_accuracy"], np.float32),
            steps_per_epoch=int(data["steps_per_epoch"]),
            train_loss=list(data["train_loss"]),
            train_accuracy=list(data["train_accuracy"]),
            val_loss=list(data["val_loss"]),
            val_accuracy=list(data["val_accuracy"]),
            best_epoch=data["best_epoch"],
            stopped_early=bool(data["stopped_early"]),
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a training step reads and replaces, as plain pytrees of arrays.

    Attributes:
      step: int32 [] optimiser steps taken.
      params: trainable parameters (a nested dict, `nnx.to_pure_dict` layout).
      rest: the rest of the model's state except RNG streams: frozen parameters and BatchNorm
        statistics.
      rngs: the model's own RNG stream state (unused when dropout gets call-time keys).
      opt_state: the optax state of `params`.
    """

    step: jax.Array
    params: dict[str, Any]
    rest: dict[str, Any]
    rngs: dict[str, Any]
    opt_state: optax.OptState


def per_example_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of every example, in float32.

    Args:
      logits: [B] or [B, 1] single binary logits (sigmoid BCE), or [B, K] (softmax CE).
      labels: [B] int, in {0, 1} for single logits, in [0, K) otherwise.

    Returns:
      [B] losses.
    """
    logits = _squeeze_single(logits).astype(jnp.float32)
    if logits.ndim == 1:
        return optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def is_correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Whether each prediction is right: logit > 0 for single logits, argmax otherwise.

    Args:
      logits: [B], [B, 1] or [B, K].
      labels: [B] int.

    Returns:
      [B] bool.
    """
    logits = _squeeze_single(logits)
    predicted = (logits > 0).astype(jnp.int32) if logits.ndim == 1 else jnp.argmax(logits, -1)
    return predicted == labels


def _squeeze_single(logits: jax.Array) -> jax.Array:
    if logits.ndim == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    if logits.ndim not in (1, 2):
        raise ValueError(f"logits must be [B], [B, 1] or [B, K], got shape {logits.shape}")
    return logits


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax transformation `config` names (PyTorch semantics for `weight_decay`)."""
    if config.optimizer == "adamw":
        return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        base = optax.adam(config.learning_rate)
    else:
        base = optax.sgd(config.learning_rate, momentum=config.momentum or None)
    if config.weight_decay:
        return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
    return base


def _trainable_filter(trainable: tuple[str, ...] | None) -> nnx.filterlib.Filter:
    if trainable is None:
        return nnx.Param
    names = frozenset(trainable)

    def is_trainable(path: tuple[Any, ...], value: Any) -> bool:
        return isinstance(value, nnx.Param) and bool(path) and path[0] in names

    return is_trainable


def _split(
    model: nnx.Module, trainable: tuple[str, ...] | None
) -> tuple[nnx.GraphDef, dict[str, Any], dict[str, Any], dict[str, Any]]:
    graphdef, params, rngs, rest = nnx.split(model, _trainable_filter(trainable), nnx.RngState, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest), nnx.to_pure_dict(rngs)


def _train_view(model: nnx.Module, trainable: tuple[str, ...] | None) -> nnx.Module:
    model = nnx.view(
        model, deterministic=False, use_running_average=False, raise_if_not_found=False
    )
    if trainable is None:
        return model
    names = frozenset(trainable)
    return nnx.view(
        model,
        only=lambda path, _: bool(path) and path[0] not in names,
        deterministic=True,
        use_running_average=True,
        raise_if_not_found=False,
    )


def _eval_view(model: nnx.Module) -> nnx.Module:
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def _to_float(images: jax.Array, key: jax.Array | None, preprocess: Preprocess | None):
    if preprocess is None:
        return images.astype(jnp.float32)
    return preprocess(images, key)


def create_train_state(model: nnx.Module, config: TrainConfig) -> tuple[nnx.GraphDef, TrainState]:
    """Splits `model` into a graph definition and a fresh training state.

    The state holds copies of the model's arrays, so donating it to the train step leaves the
    model intact.

    Args:
      model: an NNX model.
      config: the training configuration (`trainable` and the optimiser are used).

    Returns:
      (graphdef, state); `nnx.merge(graphdef, state.params, state.rest, state.rngs)` rebuilds
      the model.

    Raises:
      ValueError: a name in `config.trainable` is not a top-level submodule holding parameters.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model)}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config)}")
    if config.trainable is not None:
        owners = {str(path[0]) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
        unknown = sorted(set(config.trainable) - owners)
        if unknown:
            raise ValueError(
                f"trainable names {unknown} hold no parameters; top-level submodules with "
                f"parameters are {sorted(owners)}"
            )
    graphdef, params, rest, rngs = _split(model, config.trainable)
    params, rest, rngs = jax.tree.map(jnp.copy, (params, rest, rngs))
    opt_state = make_optimizer(config).init(params)
    return graphdef, TrainState(jnp.zeros((), jnp.int32), params, rest, rngs, opt_state)


def _base_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(key for steps, key for epoch permutations), both derived from `seed`."""
    root = jax.random.key(seed)
    return jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)


@functools.partial(jax.jit, static_argnums=(1, 2))
def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Example indices of one epoch's batches: a permutation cut into full batches.

    Args:
      key: the epoch's key, `fold_in(permutation_key, epoch)`.
      num_examples: N.
      batch_size: B <= N.

    Returns:
      int32 [N // B, B]; the N % B examples left over are skipped this epoch.
    """
    order = jax.random.permutation(key, num_examples).astype(jnp.int32)
    num_batches = num_examples // batch_size
    return order[: num_batches * batch_size].reshape(num_batches, batch_size)


def make_train_step(
    graphdef: nnx.GraphDef,
    config: TrainConfig,
    preprocess: Preprocess | None = None,
    *,
    steps_per_call: int = 1,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """The jitted training step; it donates the state it replaces.

    `step(state, images, labels, batches) -> (state, metrics)` runs `steps_per_call` optimiser
    steps. Step s uses batch row `s % num_batches` of `batches` and the key
    `fold_in(step_key, s)` (split into augmentation and dropout keys), so nothing random is
    carried in the state and a restored state continues exactly.

    Args:
      graphdef: from `create_train_state`.
      config: the training configuration.
      preprocess: optional `preprocess(images, key) -> float32 NHWC`, run inside the step.
      steps_per_call: steps fused with `lax.scan` in one call.
      mesh: when given, each batch is sharded over its "data" axis (data parallelism).

    Calls with equal arguments return the same jitted function, so repeated runs compile once.

    Returns:
      The step. Arguments: `images` [N, H, W, C] (any dtype), `labels` [N] int,
      `batches` int32 [num_batches, B]; `metrics` is float32 [steps_per_call, 2] holding each
      step's (loss, accuracy).
    """
    _require_int("steps_per_call", steps_per_call, minimum=1)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config)}")
    # Fields a step does not read are reset, so runs differing only in them share one step.
    step_config = dataclasses.replace(
        config,
        epochs=1,
        patience=None,
        monitor="val_loss",
        eval_batch_size=1,
        steps_per_call=None,
        max_to_keep=1,
    )
    return _train_step(graphdef, step_config, preprocess, steps_per_call, mesh)


@functools.lru_cache(maxsize=16)
def _train_step(
    graphdef: nnx.GraphDef,
    config: TrainConfig,
    preprocess: Preprocess | None,
    steps_per_call: int,
    mesh: Mesh | None,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    tx = make_optimizer(config)
    step_key, _ = _base_keys(config.seed)
    batch_sharding = None if mesh is None else NamedSharding(mesh, P("data"))

    def one_step(state: TrainState, images, labels, batches) -> tuple[TrainState, jax.Array]:
        row = state.step % batches.shape[0]
        index = jax.lax.dynamic_index_in_dim(batches, row, keepdims=False)
        if batch_sharding is not None:
            index = jax.lax.with_sharding_constraint(index, batch_sharding)
        x = images.at[index].get(mode="promise_in_bounds")
        y = labels.at[index].get(mode="promise_in_bounds")
        augment_key, dropout_key = jax.random.split(jax.random.fold_in(step_key, state.step))
        x = _to_float(x, augment_key, preprocess)

        def loss_fn(params):
            model = _train_view(
                nnx.merge(graphdef, params, state.rngs, state.rest), config.trainable
            )
            logits = model(x, rngs=nnx.Rngs(dropout_key))
            _, _, rest, rngs = _split(model, config.trainable)
            return per_example_loss(logits, y).mean(), (logits, rest, rngs)

        (loss, (logits, rest, rngs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        accuracy = is_correct(logits, y).mean(dtype=jnp.float32)
        new_state = TrainState(state.step + 1, params, rest, rngs, opt_state)
        return new_state, jnp.stack([loss, accuracy])

    def step(state, images, labels, batches):
        if steps_per_call == 1:
            state, metrics = one_step(state, images, labels, batches)
            return state, metrics[None]
        return jax.lax.scan(
            lambda s, _: one_step(s, images, labels, batches), state, length=steps_per_call
        )

    return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=16)
def make_eval_step(
    graphdef: nnx.GraphDef,
    preprocess: Preprocess | None = None,
    *,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]:
    """The jitted evaluation step (eval mode: running BatchNorm statistics, no dropout).

    `eval_step(state, images, labels, index, weight) -> float32 [2]` returns the weighted
    sums (loss, correct) over the batch `images[index]`; padding rows get weight 0.

    Args:
      graphdef: from `create_train_state`.
      preprocess: optional `preprocess(images, None) -> float32 NHWC`.
      mesh: when given, the batch is sharded over its "data" axis.

    Calls with equal arguments return the same jitted function.

    Returns:
      The step. `index` int32 [B], `weight` float32 [B].
    """
    batch_sharding = None if mesh is None else NamedSharding(mesh, P("data"))

    def eval_step(state: TrainState, images, labels, index, weight):
        if batch_sharding is not None:
            index = jax.lax.with_sharding_constraint(index, batch_sharding)
        x = _to_float(images.at[index].get(mode="promise_in_bounds"), None, preprocess)
        y = labels.at[index].get(mode="promise_in_bounds")
        model = _eval_view(nnx.merge(graphdef, state.params, state.rngs, state.rest))
        logits = model(x)
        return jnp.stack(
            [
                jnp.sum(per_example_loss(logits, y) * weight),
                jnp.sum(is_correct(logits, y) * weight),
            ]
        )

    return jax.jit(eval_step)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis ("data") mesh over `devices` (default: all devices, on every host)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return Mesh(np.asarray(devices), ("data",))


def _check_split(name: str, data: Any) -> tuple[Any, np.ndarray]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a tuple (images, labels), got {type(data)}")
    images, labels = data
    if not hasattr(images, "shape") or len(images.shape) != 4:
        raise ValueError(
            f"{name} images must be an array [N, H, W, C] (NHWC), "
            f"got shape {getattr(images, 'shape', None)}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{name} labels must be [N] with N = {images.shape[0]} images, got {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} labels must be integers, got dtype {labels.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} has no examples")
    return images, labels.astype(np.int32)


def _check_labels(name: str, labels: np.ndarray, width: int) -> None:
    limit = 2 if width == 1 else width
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= limit:
        kind = "a single logit needs labels in {0, 1}" if width == 1 else f"{width} logits"
        raise ValueError(
            f"{name} labels range over [{low}, {high}] but the model outputs {kind} "
            f"(labels must be in [0, {limit}))"
        )


def _output_width(
    graphdef: nnx.GraphDef,
    states: tuple[Any, ...],
    image_shape: tuple[int, ...],
    dtype: Any,
    preprocess: Preprocess | None,
) -> int:
    """K of the model's logits [B, K], found by tracing (nothing is computed)."""

    def forward(states, images):
        model = _eval_view(nnx.merge(graphdef, *states))
        return model(_to_float(images, None, preprocess))

    out = jax.eval_shape(forward, states, jax.ShapeDtypeStruct((2, *image_shape), dtype))
    if len(out.shape) != 2:
        raise ValueError(f"the model must return logits [B, K]; it returned shape {out.shape}")
    return int(out.shape[1])


def _eval_batches(
    num_examples: int, batch_size: int, sharding: NamedSharding
) -> list[tuple[jax.Array, jax.Array]]:
    """(index, weight) per evaluation batch; the last batch is padded with weight-0 rows."""
    num_batches = -(-num_examples // batch_size)
    index = np.arange(num_batches * batch_size)
    weight = (index < num_examples).astype(np.float32)
    index = np.minimum(index, num_examples - 1).astype(np.int32)
    return [
        (
            jax.device_put(index[i * batch_size : (i + 1) * batch_size], sharding),
            jax.device_put(weight[i * batch_size : (i + 1) * batch_size], sharding),
        )
        for i in range(num_batches)
    ]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _is_better(value: float, best: float, monitor: str) -> bool:
    return value > best if monitor == "val_accuracy" else value < best


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


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
) -> History:
    """Trains `model` in place and returns what was measured.

    The images stay on the devices for the whole run (uint8 is fine: `preprocess` converts).
    Each epoch draws a permutation from `fold_in(key, epoch)`; each step gathers its batch by
    index inside one jitted, state-donating call and uses `fold_in(key, step)` for
    augmentation and dropout. Nothing is copied to the host inside an epoch: per-step losses
    are fetched once per epoch, with the validation sums, for the progress bar.

    Data parallelism: the batch is sharded over a mesh of `devices` (default all), the
    parameters and optimiser state are replicated; `batch_size` must divide by the device
    count. The result equals a one-device run up to float32 summation order.

    Args:
      model: an NNX model returning logits [B, K] (K = 1: one binary logit, sigmoid BCE;
        otherwise softmax CE). Updated in place with the final (or, with early stopping, the
        best) parameters.
      train: (images [N, H, W, C], labels [N] int).
      val: optional (images, labels) evaluated in eval mode after every epoch, every example
        counted (the last batch is padded and masked).
      config: training configuration; default `TrainConfig()`.
      preprocess: optional `preprocess(images, key or None) -> float32 NHWC`, jittable.
      checkpoint_dir: when given, a checkpoint is saved after every epoch (the latest
        `config.max_to_keep` and the best epoch are kept).
      resume: continue the run in `checkpoint_dir` from its last complete epoch (starts afresh
        when the folder has no checkpoint). Without it, a folder that already holds
        checkpoints is an error.
      progress: show a tqdm bar with per-epoch train loss, val loss and val accuracy.
      devices: the devices to train on; default `jax.devices()`.

    Returns:
      The History; with `checkpoint_dir` it includes the epochs run before a resume.

    Raises:
      ValueError: bad shapes or labels, a batch size the data or device count cannot supply,
        early stopping without validation data, a resume whose configuration differs.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config)}")
    train_images, train_labels = _check_split("train", train)
    val_data = None if val is None else _check_split("val", val)
    if val_data is not None and val_data[0].shape[1:] != train_images.shape[1:]:
        raise ValueError(
            f"val images are {val_data[0].shape[1:]} but train images are {train_images.shape[1:]}"
        )
    num_train = int(train_images.shape[0])
    if config.batch_size > num_train:
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the {num_train} training examples"
        )
    if config.patience is not None and val_data is None:
        raise ValueError("early stopping (config.patience) needs validation data: pass val")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable, got {type(preprocess)}")
    mesh = make_mesh(devices)
    num_devices = mesh.devices.size
    if config.batch_size % num_devices:
        raise ValueError(f"batch_size {config.batch_size} must divide by the {num_devices} devices")

    graphdef, state = create_train_state(model, config)
    width = _output_width(
        graphdef,
        (state.params, state.rngs, state.rest),
        tuple(train_images.shape[1:]),
        train_images.dtype,
        preprocess,
    )
    _check_labels("train", train_labels, width)
    if val_data is not None:
        _check_labels("val", val_data[1], width)

    replicated = NamedSharding(mesh, P())
    state = jax.device_put(state, replicated)
    images = jax.device_put(train_images, replicated)
    labels = jax.device_put(train_labels, replicated)
    steps_per_epoch = num_train // config.batch_size
    history = History(steps_per_epoch=steps_per_epoch)

    run = None
    start_epoch = 0
    try:
        if checkpoint_dir is not None:
            run = checkpoint.RunCheckpoints(checkpoint_dir, max_to_keep=config.max_to_keep)
            latest = run.latest_epoch()
            if latest is not None and not resume:
                raise ValueError(
                    f"{run.directory} already holds checkpoints (epochs {run.epochs()}); pass "
                    "resume=True to continue that run or choose another checkpoint_dir"
                )
            if latest is not None:
                state, history = _resume(run, latest, graphdef, state, config, num_train)
                start_epoch = latest
        state, history, best = _run_epochs(
            graphdef,
            state,
            history,
            config,
            start_epoch=start_epoch,
            data=(images, labels),
            val_data=val_data,
            preprocess=preprocess,
            mesh=mesh,
            run=run,
            progress=progress,
        )
        if config.patience is not None and history.best_epoch not in (None, history.epochs_run):
            if best is not None:
                state = dataclasses.replace(state, params=best[0], rest=best[1])
            else:  # the best epoch came before a resume: read it back
                state = _restore_state(run, history.best_epoch, graphdef, state, config)
    finally:
        if run is not None:
            run.close()
    nnx.update(model, state.params, state.rest, state.rngs)
    return history


def _run_epochs(
    graphdef: nnx.GraphDef,
    state: TrainState,
    history: History,
    config: TrainConfig,
    *,
    start_epoch: int,
    data: tuple[jax.Array, jax.Array],
    val_data: tuple[Any, np.ndarray] | None,
    preprocess: Preprocess | None,
    mesh: Mesh,
    run: checkpoint.RunCheckpoints | None,
    progress: bool,
) -> tuple[TrainState, History, tuple[Any, Any] | None]:
    """The epoch loop of `fit`; returns the final state, the history and, when early stopping
    found its best epoch in this call, a copy of that epoch's (params, rest)."""
    images, labels = data
    num_train = int(images.shape[0])
    steps_per_epoch = history.steps_per_epoch
    platform = mesh.devices.flat[0].platform
    model = nnx.merge(graphdef, state.params, state.rngs, state.rest)
    fused = config.steps_per_call or conv.steps_per_call_for(model, platform)
    fused = min(fused, steps_per_epoch)
    calls, remainder = divmod(steps_per_epoch, fused)
    train_step = make_train_step(graphdef, config, preprocess, steps_per_call=fused, mesh=mesh)
    single_step = (
        train_step
        if fused == 1
        else make_train_step(graphdef, config, preprocess, steps_per_call=1, mesh=mesh)
    )
    replicated = NamedSharding(mesh, P())
    rows = NamedSharding(mesh, P(None, "data"))
    if val_data is not None:
        eval_step = make_eval_step(graphdef, preprocess, mesh=mesh)
        val_images = jax.device_put(val_data[0], replicated)
        val_labels = jax.device_put(val_data[1], replicated)
        num_val = int(val_images.shape[0])
        eval_size = _round_up(config.eval_batch_size, mesh.devices.size)
        eval_batches = _eval_batches(num_val, eval_size, NamedSharding(mesh, P("data")))
    _, permutation_key = _base_keys(config.seed)
    best = None
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=min(start_epoch, config.epochs) * steps_per_epoch,
        disable=not progress or jax.process_index() != 0,
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(start_epoch, config.epochs):
            if history.stopped_early:
                break
            batches = jax.device_put(
                epoch_batches(
                    jax.random.fold_in(permutation_key, epoch), num_train, config.batch_size
                ),
                rows,
            )
            metrics = []
            for step_fn, count in ((train_step, calls), (single_step, remainder)):
                for _ in range(count):
                    state, step_metrics = step_fn(state, images, labels, batches)
                    metrics.append(step_metrics)
                    bar.update(step_metrics.shape[0])
            fetch = {"train": jnp.concatenate(metrics)}
            if val_data is not None:
                sums = [eval_step(state, val_images, val_labels, i, w) for i, w in eval_batches]
                fetch["val"] = jnp.sum(jnp.stack(sums), axis=0)
            fetched = jax.device_get(fetch)
            _record(history, fetched["train"])
            postfix = {"epoch": epoch + 1, "loss": f"{history.train_loss[-1]:.4f}"}
            if val_data is not None:
                improved = _record_val(history, fetched["val"] / num_val, config)
                if improved and config.patience is not None:
                    best = jax.tree.map(jnp.copy, (state.params, state.rest))
                postfix["val_loss"] = f"{history.val_loss[-1]:.4f}"
                postfix["val_acc"] = f"{history.val_accuracy[-1]:.4f}"
            if run is not None:
                _save(run, graphdef, state, history, config, num_train)
            bar.set_postfix(postfix)
    finally:
        bar.close()
    return state, history, best


def _record(history: History, train_metrics: np.ndarray) -> None:
    history.step_loss = np.concatenate([history.step_loss, train_metrics[:, 0]])
    history.step_accuracy = np.concatenate([history.step_accuracy, train_metrics[:, 1]])
    history.train_loss.append(float(np.mean(train_metrics[:, 0])))
    history.train_accuracy.append(float(np.mean(train_metrics[:, 1])))


def _record_val(history: History, val_means: np.ndarray, config: TrainConfig) -> bool:
    """Appends the validation metrics, updates best epoch and early stopping; True if best."""
    history.val_loss.append(float(val_means[0]))
    history.val_accuracy.append(float(val_means[1]))
    values = history.val_loss if config.monitor == "val_loss" else history.val_accuracy
    epoch = history.epochs_run
    improved = history.best_epoch is None or _is_better(
        values[-1], values[history.best_epoch - 1], config.monitor
    )
    if improved:
        history.best_epoch = epoch
    if config.patience is not None and epoch - history.best_epoch >= config.patience:
        history.stopped_early = True
    return improved


def _save(
    run: checkpoint.RunCheckpoints,
    graphdef: nnx.GraphDef,
    state: TrainState,
    history: History,
    config: TrainConfig,
    num_train: int,
) -> None:
    model = nnx.merge(graphdef, state.params, state.rngs, state.rest)
    run.save(
        history.epochs_run,
        model_state=nnx.state(model, nnx.Not(nnx.RngState)),
        opt_state=state.opt_state,
        step=state.step,
        meta={
            "history": history.to_dict(),
            "config": _config_dict(config),
            "num_train": num_train,
        },
        best_epoch=history.best_epoch,
    )


def _resume(
    run: checkpoint.RunCheckpoints,
    epoch: int,
    graphdef: nnx.GraphDef,
    fresh: TrainState,
    config: TrainConfig,
    num_train: int,
) -> tuple[TrainState, History]:
    meta = run.meta(epoch)
    saved, current = meta["config"], _config_dict(config)
    differing = sorted(
        k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k]
    )
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in differing)
        raise ValueError(f"cannot resume {run.directory} with a different config ({details})")
    if meta["num_train"] != num_train:
        raise ValueError(
            f"cannot resume {run.directory}: it trained on {meta['num_train']} examples, "
            f"this call passes {num_train}"
        )
    state = _restore_state(run, epoch, graphdef, fresh, config)
    opt_state, step = run.restore_train(epoch, opt_state_like=fresh.opt_state)
    state = dataclasses.replace(state, opt_state=opt_state, step=step)
    return state, History.from_dict(meta["history"])


def _restore_state(
    run: checkpoint.RunCheckpoints,
    epoch: int,
    graphdef: nnx.GraphDef,
    like: TrainState,
    config: TrainConfig,
) -> TrainState:
    """`like` with the model state of `epoch` (parameters and batch statistics)."""
    model = nnx.merge(graphdef, like.params, like.rngs, like.rest)
    restored = run.restore_model_state(epoch, nnx.state(model, nnx.Not(nnx.RngState)))
    nnx.update(model, restored)
    _, params, rest, _ = _split(model, config.trainable)
    return dataclasses.replace(like, params=params, rest=rest)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _logits(
    graphdef: nnx.GraphDef, preprocess: Preprocess | None, state: Any, images: jax.Array
) -> jax.Array:
    model = _eval_view(nnx.merge(graphdef, state))
    return model(_to_float(images, None, preprocess))


def predict_logits(
    model: nnx.Module,
    images: Any,
    *,
    batch_size: int = 256,
    preprocess: Preprocess | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> jax.Array:
    """The model's logits in eval mode (running BatchNorm statistics, no dropout).

    Every batch has the same shape (the last is padded by repeating the last image), so this
    compiles once, and each image's logits do not depend on the others in its batch. Batches
    are sharded over `devices`.

    Args:
      model: an NNX model returning logits [B, K].
      images: [N, H, W, C] (numpy or jax; only one batch at a time is sent to the devices).
      batch_size: images per call, rounded up to a multiple of the device count.
      preprocess: optional `preprocess(images, None) -> float32 NHWC`; without it the images
        are only cast to float32.
      devices: default `jax.devices()`.

    Returns:
      float32 [N] for a single-logit model, [N, K] otherwise.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model)}")
    if not hasattr(images, "shape") or len(images.shape) != 4 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty array [N, H, W, C], got shape "
            f"{getattr(images, 'shape', None)}"
        )
    _require_int("batch_size", batch_size, minimum=1)
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable, got {type(preprocess)}")
    mesh = make_mesh(devices)
    batch_size = _round_up(min(batch_size, images.shape[0]), mesh.devices.size)
    batch_sharding = NamedSharding(mesh, P("data"))
    graphdef, state = nnx.split(model)
    state = jax.device_put(nnx.to_pure_dict(state), NamedSharding(mesh, P()))
    num = int(images.shape[0])
    outputs = []
    for start in range(0, num, batch_size):
        index = np.minimum(np.arange(start, start + batch_size), num - 1)
        batch = jax.device_put(images[index], batch_sharding)
        outputs.append(_logits(graphdef, preprocess, state, batch))
    logits = jnp.concatenate(outputs)[:num]
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits [B, K]; it returned {logits.shape[1:]}")
    return logits[:, 0] if logits.shape[1] == 1 else logits


def evaluate(
    model: nnx.Module,
    images: Any,
    labels: Any,
    *,
    batch_size: int = 256,
    preprocess: Preprocess | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> dict[str, float]:
    """Mean cross-entropy and accuracy in eval mode over every example.

    Args:
      model: an NNX model returning logits [B, K].
      images: [N, H, W, C].
      labels: [N] int.
      batch_size, preprocess, devices: as for `predict_logits`.

    Returns:
      {"loss": mean cross-entropy, "accuracy": fraction correct}.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model)}")
    images, labels = _check_split("evaluate", (images, labels))
    graphdef, state = nnx.split(model)
    width = _output_width(graphdef, (state,), tuple(images.shape[1:]), images.dtype, preprocess)
    _check_labels("evaluate", labels, width)
    logits = predict_logits(
        model, images, batch_size=batch_size, preprocess=preprocess, devices=devices
    )
    labels = jnp.asarray(labels)
    return {
        "loss": float(jnp.mean(per_example_loss(logits, labels))),
        "accuracy": float(jnp.mean(is_correct(logits, labels))),
    }
