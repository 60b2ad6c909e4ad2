"""The jitted training and evaluation steps over pure state, and what they compute per batch."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcal._checks import check_int
from jaxcal.data.transforms import Preprocess
from jaxcal.train.config import TrainConfig, make_optimizer


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


def _copies_rows(mesh: Mesh | None) -> bool:
    """Whether `batch_rows` copies rows in a loop: on a single CPU device (see `batch_rows`)."""
    if mesh is not None and mesh.devices.size > 1:
        return False
    platform = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
    return platform == "cpu"


def batch_rows(images: jax.Array, index: jax.Array, *, copy_rows: bool) -> jax.Array:
    """`images[index]`: the rows of a batch, for int32 [B] `index` (in bounds).

    With `copy_rows`, the rows are copied one at a time in a `fori_loop` of dynamic slices.
    As a gather, XLA:CPU fuses the lookup into the batch's consumers and redoes it for every
    element they read: LeNet-5's first patch matrix reads each pixel 9 times, and the fused
    gather cost ~2.5 ms of CPU time in a ~12 ms train step with other VMs loading the host
    (on a quiet host the two are within 4 %). A loop's result is written once.
    Elsewhere (accelerators, where a loop is one kernel launch per row; a sharded batch) the
    gather stays.
    """
    if not copy_rows:
        return images.at[index].get(mode="promise_in_bounds")

    def copy_row(i, batch):
        row = jax.lax.dynamic_index_in_dim(images, index[i], keepdims=True)
        return jax.lax.dynamic_update_index_in_dim(batch, row, i, 0)

    batch = jnp.zeros((index.shape[0], *images.shape[1:]), images.dtype)
    return jax.lax.fori_loop(0, index.shape[0], copy_row, batch)


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


def _trainable_filter(trainable: tuple[str, ...] | None) -> nnx.filterlib.Filter:
    if trainable is None:
        return nnx.Param
    names = frozenset(trainable)

    def is_trainable(path: tuple[Any, ...], value: Any) -> bool:
        return isinstance(value, nnx.Param) and bool(path) and path[0] in names

    return is_trainable


def split_state(
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


def eval_view(model: nnx.Module) -> nnx.Module:
    """`model` in eval mode: running BatchNorm statistics, no dropout."""
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def to_float(inputs: jax.Array, key: jax.Array | None, preprocess: Preprocess | None) -> jax.Array:
    """`preprocess(inputs, key)`, or the inputs cast to float32 without one."""
    if preprocess is None:
        return inputs.astype(jnp.float32)
    return preprocess(inputs, key)


def _forward(model: nnx.Module, x: jax.Array, dropout_key: jax.Array) -> jax.Array:
    """`model(x)`, with `rngs` for dropout only where the model's `__call__` takes them."""
    if "rngs" in inspect.signature(model.__call__).parameters:
        return model(x, rngs=nnx.Rngs(dropout_key))
    return model(x)


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
    graphdef, params, rest, rngs = split_state(model, config.trainable)
    params, rest, rngs = jax.tree.map(jnp.copy, (params, rest, rngs))
    opt_state = make_optimizer(config).init(params)
    return graphdef, TrainState(jnp.zeros((), jnp.int32), params, rest, rngs, opt_state)


def base_keys(seed: int) -> tuple[jax.Array, jax.Array]:
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
    micro_batch_size: int | None = None,
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
      micro_batch_size: None runs each batch through forward and backward at once; M runs
        it as B / M micro-batches (rows j, j + B / M, ...; in a `lax.scan`) whose gradients,
        losses and hits are summed before the one optimiser update: the same step up to
        float32 rounding, in less memory (`conv.micro_batch_for` says when that is faster).
        Dropout draws keys per micro-batch. Refused for BatchNorm layers in training mode,
        which would normalise each micro-batch by its own statistics.
      mesh: when given, each batch is sharded over its "data" axis (data parallelism).

    Calls with arguments that differ at most in `config.seed` (and in the fields a step does
    not read) share one jitted function, so repeated runs and runs over seeds compile once.

    Returns:
      The step. Arguments: `images` [N, H, W, C] (any dtype), `labels` [N] int,
      `batches` int32 [num_batches, B]; `metrics` is float32 [steps_per_call, 2] holding each
      step's (loss, accuracy).
    """
    check_int("steps_per_call", steps_per_call)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config)}")
    micro_batch_size = _check_micro_batch(micro_batch_size, None, mesh)
    # Fields a step does not read are reset, so runs differing only in them share one step;
    # the seed's key is an argument of the compiled step, so runs over seeds share it too.
    step_config = dataclasses.replace(
        config,
        epochs=1,
        patience=None,
        monitor="val_loss",
        eval_batch_size=1,
        steps_per_call=None,
        micro_batch_size=None,
        max_to_keep=1,
        seed=0,
    )
    compiled = _train_step(
        graphdef, step_config, preprocess, steps_per_call, micro_batch_size, mesh
    )
    step_key, _ = base_keys(config.seed)

    def step(state, images, labels, batches):
        return compiled(state, images, labels, batches, step_key)

    return step


def _check_micro_batch(
    micro_batch_size: int | None, batch_size: int | None, mesh: Mesh | None
) -> int | None:
    """`micro_batch_size` checked against the batch (when known) and the mesh."""
    if micro_batch_size is None:
        return None
    check_int("micro_batch_size", micro_batch_size)
    if batch_size is not None and batch_size % micro_batch_size:
        raise ValueError(
            f"micro_batch_size must divide batch_size {batch_size}, got {micro_batch_size}"
        )
    devices = 1 if mesh is None else mesh.devices.size
    if micro_batch_size % devices:
        raise ValueError(
            f"micro_batch_size must divide by the {devices} devices, got {micro_batch_size}"
        )
    return micro_batch_size


def _micro_batches(x: jax.Array, micro_batch_size: int) -> jax.Array:
    """[B, ...] -> [B / M, M, ...]: micro-batch j holds rows j, j + B / M, ... (a batch sharded
    over devices in blocks of rows stays sharded along M)."""
    return x.reshape(micro_batch_size, -1, *x.shape[1:]).swapaxes(0, 1)


def check_micro_batches(
    model: nnx.Module, config: TrainConfig, micro_batch_size: int | None, mesh: Mesh | None
) -> None:
    """Raises ValueError unless `make_train_step` can run `model` in these micro-batches.

    `make_train_step` checks the same (the model when its step is traced); `fit` asks first,
    before any work.
    """
    if _check_micro_batch(micro_batch_size, config.batch_size, mesh) not in (
        None,
        config.batch_size,
    ):
        _check_no_batch_statistics(_train_view(model, config.trainable))


def _check_no_batch_statistics(model: nnx.Module) -> None:
    if any(
        isinstance(node, nnx.BatchNorm) and not node.use_running_average
        for _, node in nnx.iter_graph(model)
    ):
        raise ValueError(
            "micro_batch_size must be None for a model with BatchNorm layers in training mode "
            "(each micro-batch would be normalised by its own statistics)"
        )


@functools.lru_cache(maxsize=16)
def _train_step(
    graphdef: nnx.GraphDef,
    config: TrainConfig,
    preprocess: Preprocess | None,
    steps_per_call: int,
    micro_batch_size: int | None,
    mesh: Mesh | None,
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """The jitted `step(state, images, labels, batches, step_key)` of `make_train_step`."""
    tx = make_optimizer(config)
    batch_sharding = None if mesh is None else NamedSharding(mesh, P("data"))
    copy_rows = _copies_rows(mesh)

    def one_step(
        state: TrainState, images, labels, batches, step_key
    ) -> tuple[TrainState, jax.Array]:
        row = state.step % batches.shape[0]
        index = jax.lax.dynamic_index_in_dim(batches, row, keepdims=False)
        if batch_sharding is not None:
            index = jax.lax.with_sharding_constraint(index, batch_sharding)
        x = batch_rows(images, index, copy_rows=copy_rows)
        y = labels.at[index].get(mode="promise_in_bounds")
        augment_key, dropout_key = jax.random.split(jax.random.fold_in(step_key, state.step))
        x = to_float(x, augment_key, preprocess)
        batch = index.shape[0]
        if micro_batch_size in (None, batch):
            loss, hits, rest, rngs, grads = summed_gradients(
                state.params, state.rest, state.rngs, x, y, dropout_key, batch
            )
        else:
            loss, hits, rest, rngs, grads = _accumulated(
                summed_gradients, state, x, y, dropout_key, micro_batch_size
            )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(state.step + 1, params, rest, rngs, opt_state)
        return new_state, jnp.stack([loss, hits / batch])

    def summed_gradients(params, rest, rngs, x, y, dropout_key, batch):
        """(loss, hits, rest, rngs, grads) of the rows x, y of a batch of `batch` rows (the
        loss and its gradients as their share of the batch's mean)."""

        def loss_fn(params):
            model = _train_view(nnx.merge(graphdef, params, rngs, rest), config.trainable)
            if x.shape[0] < batch:
                _check_no_batch_statistics(model)
            logits = _forward(model, x, dropout_key)
            _, _, new_rest, new_rngs = split_state(model, config.trainable)
            loss = per_example_loss(logits, y).sum() / batch
            return loss, (is_correct(logits, y).sum(dtype=jnp.float32), new_rest, new_rngs)

        (loss, (hits, rest, rngs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, hits, rest, rngs, grads

    def step(state, images, labels, batches, step_key):
        if steps_per_call == 1:
            state, metrics = one_step(state, images, labels, batches, step_key)
            return state, metrics[None]
        return jax.lax.scan(
            lambda s, _: one_step(s, images, labels, batches, step_key),
            state,
            length=steps_per_call,
        )

    return jax.jit(step, donate_argnums=0)


def _accumulated(summed_gradients, state: TrainState, x, y, dropout_key, micro_batch_size: int):
    """`summed_gradients` over the micro-batches of x, y, added up in a `lax.scan`; the model
    state (`rest`, `rngs`) passes from one micro-batch to the next."""

    batch = x.shape[0]
    if batch % micro_batch_size:
        raise ValueError(
            f"micro_batch_size must divide the batch of {batch} rows, got {micro_batch_size}"
        )

    def add(carry, inputs):
        xm, ym, j = inputs
        *sums, rest, rngs, grads = carry
        loss, hits, rest, rngs, g = summed_gradients(
            state.params, rest, rngs, xm, ym, jax.random.fold_in(dropout_key, j), batch
        )
        sums = (sums[0] + loss, sums[1] + hits)
        return (*sums, rest, rngs, jax.tree.map(jnp.add, grads, g)), None

    zero = jnp.zeros((), jnp.float32)
    init = (zero, zero, state.rest, state.rngs, jax.tree.map(jnp.zeros_like, state.params))
    xs = (_micro_batches(x, micro_batch_size), _micro_batches(y, micro_batch_size))
    carry, _ = jax.lax.scan(add, init, (*xs, jnp.arange(xs[1].shape[0])))
    return carry


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
    copy_rows = _copies_rows(mesh)

    def eval_step(state: TrainState, images, labels, index, weight):
        if batch_sharding is not None:
            index = jax.lax.with_sharding_constraint(index, batch_sharding)
        x = to_float(batch_rows(images, index, copy_rows=copy_rows), None, preprocess)
        y = labels.at[index].get(mode="promise_in_bounds")
        model = eval_view(nnx.merge(graphdef, state.params, state.rngs, state.rest))
        logits = model(x)
        return jnp.stack(
            [
                jnp.sum(per_example_loss(logits, y) * weight),
                jnp.sum(is_correct(logits, y) * weight),
            ]
        )

    return jax.jit(eval_step)
