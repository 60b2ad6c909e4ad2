"""Eval-mode prediction in equal, padded batches sharded over the devices, and evaluation."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcal._checks import check_callable, check_int
from jaxcal.data.transforms import Preprocess
from jaxcal.train.inputs import check_labels, check_split, output_width
from jaxcal.train.steps import eval_view, is_correct, per_example_loss, to_float


class Evaluation(NamedTuple):
    """What `evaluate` measured: mean cross-entropy and the fraction correct."""

    loss: float
    accuracy: float


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis ("data") mesh over `devices` (default: all devices, on every host)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return Mesh(np.asarray(devices), ("data",))


def padded_batches(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Example indices and weights of equal batches covering every example once.

    The last batch is padded by repeating the last example with weight 0, so every batch has
    one shape (one compilation) and the padding changes no sum.

    Returns:
      (int32 [num_batches, batch_size] indices, float32 [num_batches, batch_size] weights).
    """
    num_batches = -(-num_examples // batch_size)
    index = np.arange(num_batches * batch_size)
    weight = (index < num_examples).astype(np.float32)
    index = np.minimum(index, num_examples - 1).astype(np.int32)
    return index.reshape(num_batches, batch_size), weight.reshape(num_batches, batch_size)


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= `value`."""
    return -(-value // multiple) * multiple


def prediction_batch(num_examples: int, batch_size: int, num_devices: int) -> int:
    """The batch `predict_logits` runs: `batch_size`, or for fewer examples the next power of
    two >= `num_examples`, rounded up to a multiple of `num_devices`.

    Sets of different small sizes (a 197-image validation and a 204-image test split) then
    share one compiled program, for at most twice the work of an exact batch.
    """
    bucket = 1 << max(num_examples - 1, 0).bit_length()
    return round_up(min(batch_size, bucket), num_devices)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _logits(
    graphdef: nnx.GraphDef,
    preprocess: Preprocess | None,
    method: str,
    state: Any,
    inputs: jax.Array,
) -> jax.Array:
    model = eval_view(nnx.merge(graphdef, state))
    return getattr(model, method)(to_float(inputs, None, preprocess))


def predict_logits(
    model: nnx.Module,
    inputs: Any,
    *,
    batch_size: int = 256,
    preprocess: Preprocess | None = None,
    devices: Sequence[jax.Device] | None = None,
    method: str = "__call__",
) -> jax.Array:
    """The model's logits in eval mode (running BatchNorm statistics, no dropout).

    Every batch has the same shape (`padded_batches`), so this compiles once per model and
    batch size, and each example's logits do not depend on the others in its batch; sets
    smaller than a batch run in a power-of-two batch (`prediction_batch`), so small sets of
    nearby sizes share a program. Batches are sharded over `devices`.

    Args:
      model: an NNX model returning logits [B, K].
      inputs: [N, ...], e.g. images [N, H, W, C] or features [N, D] (numpy or jax; only one
        batch at a time is sent to the devices).
      batch_size: examples per call (fewer for a smaller set, see `prediction_batch`),
        rounded up to a multiple of the device count.
      preprocess: optional `preprocess(inputs, None) -> float32`; without it the inputs are
        only cast to float32.
      devices: default `jax.devices()`.
      method: the model's method to run, e.g. "backbone" for a ResNet18's pooled features.

    Returns:
      float32 [N] for a single-logit model, [N, K] otherwise. When `devices` span several
      processes, every process gets all N rows, on its own devices.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model)}")
    if not callable(getattr(model, method, None)):
        raise ValueError(f"method must name a method of the model, got {method!r}")
    if not hasattr(inputs, "shape") or len(inputs.shape) < 1 or inputs.shape[0] == 0:
        raise ValueError(
            f"inputs must be a non-empty array [N, ...], got shape {getattr(inputs, 'shape', None)}"
        )
    check_int("batch_size", batch_size)
    check_callable("preprocess", preprocess)
    mesh = make_mesh(devices)
    batch_size = prediction_batch(int(inputs.shape[0]), batch_size, mesh.devices.size)
    batch_sharding = NamedSharding(mesh, P("data"))
    graphdef, state = nnx.split(model)
    output_width("predict_logits", graphdef, (state,), inputs, preprocess, method=method)
    state = jax.device_put(nnx.to_pure_dict(state), NamedSharding(mesh, P()))
    index, _ = padded_batches(int(inputs.shape[0]), batch_size)
    outputs = [
        _logits(graphdef, preprocess, method, state, jax.device_put(inputs[rows], batch_sharding))
        for rows in index
    ]
    logits = jnp.concatenate(outputs)[: inputs.shape[0]]
    if not logits.is_fully_addressable:  # several processes: each gets every example's logits
        logits = jnp.asarray(multihost_utils.process_allgather(logits, tiled=True))
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits [B, K]; it returned {logits.shape[1:]}")
    return logits[:, 0] if logits.shape[1] == 1 else logits


def evaluate(
    model: nnx.Module,
    inputs: Any,
    labels: Any,
    *,
    batch_size: int = 256,
    preprocess: Preprocess | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Evaluation:
    """Mean cross-entropy and accuracy in eval mode over every example.

    Args:
      model: an NNX model returning logits [B, K].
      inputs: [N, ...].
      labels: [N] int.
      batch_size, preprocess, devices: as for `predict_logits`.

    Returns:
      Evaluation(loss, accuracy).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model)}")
    inputs, labels = check_split("evaluate", (inputs, labels))
    graphdef, state = nnx.split(model)
    check_labels(
        "evaluate", labels, output_width("evaluate", graphdef, (state,), inputs, preprocess)
    )
    logits = predict_logits(
        model, inputs, batch_size=batch_size, preprocess=preprocess, devices=devices
    )
    labels = jnp.asarray(labels)
    return Evaluation(
        loss=float(jnp.mean(per_example_loss(logits, labels))),
        accuracy=float(jnp.mean(is_correct(logits, labels))),
    )
