"""Isotonic calibration: pool-adjacent-violators in vectorised rounds over sorted arrays."""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class IsotonicParams(NamedTuple):
    """A non-decreasing step function of p(y=1), linearly interpolated between the points.

    Attributes:
      thresholds: [N] (or [K, N] one-vs-rest) the sorted fit-set probabilities.
      values: [N] (or [K, N]) the isotonic fit at each threshold (equal values at ties).
    """

    thresholds: jax.Array
    values: jax.Array


def _block_means(is_start: jax.Array, targets: jax.Array) -> jax.Array:
    """[N] mean target of the contiguous block each element belongs to.

    Block sums are differences of cumulative sums at the block ends (exact for 0/1 targets:
    the sums are integers).
    """
    index = jnp.arange(targets.shape[0])
    is_end = jnp.roll(is_start, -1).at[-1].set(True)
    start = jax.lax.cummax(jnp.where(is_start, index, 0))
    end = jax.lax.cummin(jnp.where(is_end, index, index[-1]), reverse=True)
    running = jnp.cumsum(targets)
    total = running[end] - jnp.where(start > 0, running[start - 1], 0.0)
    return total / (end - start + 1).astype(targets.dtype)


def _pool_rounds(targets: jax.Array, is_start: jax.Array) -> jax.Array:
    """[N] isotonic fit of `targets` (in increasing score order) from initial blocks.

    Every round merges each maximal run of blocks whose means do not increase (any pooling of
    adjacent violators leads to the same isotonic solution), so a run of any length pools in
    one O(N) round instead of one step per element as in the sequential algorithm; 10,000
    sorted 0/1 targets take about ten rounds.

    Args:
      targets: [N] targets sorted by score.
      is_start: [N] bool, True where an initial block starts (element 0 and each new score,
        so that tied scores are pooled from the start).
    """
    first = jnp.arange(targets.shape[0]) == 0

    def decreasing_step(is_start):
        mean = _block_means(is_start, targets)
        return ~first & is_start & (jnp.roll(mean, 1) >= mean)

    def pool(carry):
        is_start, violators = carry
        is_start = is_start & ~violators
        return is_start, decreasing_step(is_start)

    carry = (is_start, decreasing_step(is_start))
    is_start, _ = jax.lax.while_loop(lambda c: jnp.any(c[1]), pool, carry)
    return _block_means(is_start, targets)


def fit_isotonic_binary(probabilities: jax.Array, targets: jax.Array) -> IsotonicParams:
    """Isotonic regression of [N] targets in {0, 1} on [N] probabilities (traceable).

    Equal probabilities are pooled first (their targets averaged), as in scikit-learn.
    """
    order = jnp.argsort(probabilities, stable=True)
    x, y = probabilities[order], targets[order]
    new_score = jnp.concatenate([jnp.ones(1, bool), x[1:] != x[:-1]])
    return IsotonicParams(thresholds=x, values=_pool_rounds(y, new_score))


def isotonic_binary(params: IsotonicParams, probabilities: jax.Array) -> jax.Array:
    """[N] calibrated p(y=1): linear interpolation, clipped to the end values outside."""
    # The clip removes float rounding of the interpolation below 0 or above 1 (~1e-8).
    return jnp.clip(jnp.interp(probabilities, params.thresholds, params.values), 0.0, 1.0)


def fit_isotonic(logits: jax.Array, labels: jax.Array) -> IsotonicParams:
    """[N] logits: isotonic on sigmoid(z); [N, K]: one fit per class on softmax(z)[:, k]."""
    if logits.ndim == 1:
        return fit_isotonic_binary(jax.nn.sigmoid(logits), labels.astype(logits.dtype))
    probabilities = jax.nn.softmax(logits, axis=-1)
    k = logits.shape[1]
    targets = (labels[:, None] == jnp.arange(k)).astype(logits.dtype)
    return jax.vmap(fit_isotonic_binary, in_axes=1)(probabilities, targets)


def isotonic_probabilities(params: IsotonicParams, logits: jax.Array) -> jax.Array:
    """[N] p(y=1), or [N, K] one-vs-rest fits renormalised (uniform where all are 0)."""
    if logits.ndim == 1:
        return isotonic_binary(params, jax.nn.sigmoid(logits))
    per_class = jax.vmap(isotonic_binary, in_axes=(0, 1), out_axes=1)(
        params, jax.nn.softmax(logits, axis=-1)
    )
    total = jnp.sum(per_class, axis=-1, keepdims=True)
    uniform = jnp.full_like(per_class, 1.0 / logits.shape[1])
    return jnp.where(total > 0, per_class / jnp.where(total > 0, total, 1.0), uniform)
