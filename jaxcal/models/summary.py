"""Per-layer output shapes and parameter counts of a model, as a table (via `nnx.tabulate`)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def parameter_count(model: nnx.Module, parts: Sequence[str] | None = None) -> int:
    """Number of trainable values (`nnx.Param`), as torch counts `model.parameters()`.

    BatchNorm running statistics (`nnx.BatchStat`) are not parameters and are not counted.

    Args:
      model: an NNX module.
      parts: names of top-level submodules to count (e.g. a `TrainConfig.trainable`); None
        counts the whole model.
    """
    if parts is not None:
        return sum(parameter_count(getattr(model, name)) for name in parts)
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def summary(
    model: nnx.Module, input_shape: Sequence[int], *, depth: int | None = None, width: int = 200
) -> str:
    """A table of every submodule's path, type, input and output shapes and parameters.

    The model is traced abstractly (`jax.eval_shape`), in eval mode, on a float32 input of
    `input_shape`: nothing is computed, the model is not modified, and an abstract model from
    `nnx.eval_shape` works too. The table is `nnx.tabulate`'s; its closing line gives the
    number of parameters (`nnx.Param`, the count torch reports) and of BatchNorm statistics.

    Args:
        model: an NNX model following jaxcal's conventions.
        input_shape: the full input shape including the batch, e.g. (1, 28, 28, 1).
        depth: deepest submodule level shown (1: top-level submodules only); None shows all.
        width: characters per line of the rendered table.

    Returns:
        The table as plain text.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"input_shape must be a non-empty sequence of positive ints, got {shape}")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be None or a positive int, got {depth!r}")
    view = nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
    graphdef, state = nnx.split(view)
    tables = []

    def tabulate(state: nnx.State) -> None:
        tables.append(
            nnx.tabulate(
                nnx.merge(graphdef, state),
                jnp.zeros(shape, jnp.float32),
                depth=depth,
                console_kwargs={"force_terminal": False, "force_jupyter": False, "width": width},
            )
        )

    jax.eval_shape(tabulate, state)
    # nnx.tabulate's own total adds BatchNorm statistics to the parameters; replace it.
    lines = [line for line in tables[0].rstrip().splitlines() if "Total Parameters:" not in line]
    stats = sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    lines.append(
        f"Parameters: {parameter_count(model):,} (nnx.Param)    "
        f"BatchNorm statistics: {stats:,} (nnx.BatchStat, not trained)"
    )
    return "\n".join(lines) + "\n"
