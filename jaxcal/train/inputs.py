"""Checks of what `fit` and `evaluate` are given: (inputs, labels) pairs and the label range."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxcal.data.transforms import Preprocess
from jaxcal.train.steps import eval_view, to_float


def check_split(name: str, data: Any) -> tuple[Any, np.ndarray]:
    """(inputs [N, ...], int32 labels [N]) of a split; errors name the split.

    Raises:
      TypeError: `data` is not an (inputs, labels) pair.
      ValueError: no examples, labels not [N] integers.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a tuple (inputs, labels), got {type(data)}")
    inputs, labels = data
    if not hasattr(inputs, "shape") or len(inputs.shape) < 1:
        raise ValueError(
            f"{name} inputs must be an array [N, ...] (images NHWC [N, H, W, C], features "
            f"[N, D]), got shape {getattr(inputs, 'shape', None)}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"{name} labels must be [N] with N = {inputs.shape[0]} inputs, got {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} labels must be integers, got dtype {labels.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError(f"{name} has no examples")
    return inputs, labels.astype(np.int32)


def check_labels(name: str, labels: np.ndarray, width: int) -> None:
    """ValueError unless `labels` suit logits [B, width] (width 1: a single binary logit)."""
    limit = 2 if width == 1 else width
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= limit:
        kind = "a single logit needs labels in {0, 1}" if width == 1 else f"{width} logits"
        raise ValueError(
            f"{name} labels range over [{low}, {high}] but the model outputs {kind} "
            f"(labels must be in [0, {limit}))"
        )


def output_width(
    name: str,
    graphdef: nnx.GraphDef,
    states: tuple[Any, ...],
    inputs: Any,
    preprocess: Preprocess | None,
    *,
    method: str = "__call__",
) -> int:
    """K of the model's logits [B, K] on `inputs` [N, ...], found by tracing (nothing runs).

    The trace (~20 ms for LeNet-5) is remembered per model structure, state shapes, input
    shape, preprocessing and method, so repeated `fit` / `evaluate` / `predict_logits` calls
    on the same model trace once.

    Raises:
      ValueError: the model does not take inputs of this shape, or does not return [B, K].
    """
    leaves, treedef = jax.tree.flatten(states)
    abstract = tuple(jax.ShapeDtypeStruct(np.shape(x), jax.dtypes.result_type(x)) for x in leaves)
    like = jax.ShapeDtypeStruct((2, *inputs.shape[1:]), inputs.dtype)
    key = (graphdef, treedef, abstract, like, preprocess, method)
    try:
        hash(key)
    except TypeError:  # an unhashable preprocess: trace every time
        return _traced_width(name, *key)
    return _cached_width(name, *key)


def _traced_width(name, graphdef, treedef, abstract, like, preprocess, method) -> int:
    def forward(states, batch):
        model = eval_view(nnx.merge(graphdef, *states))
        return getattr(model, method)(to_float(batch, None, preprocess))

    try:
        out = jax.eval_shape(forward, jax.tree.unflatten(treedef, abstract), like)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{name} inputs [N, {', '.join(map(str, like.shape[1:]))}] do not fit the model "
            f"(images are NHWC [N, H, W, C]): {error}"
        ) from error
    if len(out.shape) != 2:
        raise ValueError(f"the model must return logits [B, K]; it returned shape {out.shape}")
    return int(out.shape[1])


# Keyed on everything the trace depends on; `name` only words the error, which is not cached.
_cached_width = functools.lru_cache(maxsize=32)(_traced_width)
