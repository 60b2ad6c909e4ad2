"""Histogram binning of p(y=1) (binary) or of the top-label confidence per predicted class."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class HistogramParams(NamedTuple):
    """Bin edges and the calibrated probability of each bin.

    Attributes:
      edges: [B + 1] (binary) or [K, B + 1] (per predicted class) increasing edges, 0 and 1
        outermost; bins are [lo, hi) with 1.0 in the last one.
      values: [B] or [K, B] the fit set's frequency of the positive (binary) or of a correct
        top label (multiclass) in each bin; the bin's midpoint where the bin is empty.
    """

    edges: jax.Array
    values: jax.Array


def _uniform_edges(num_bins: int, dtype) -> jax.Array:
    return jnp.asarray(np.arange(num_bins + 1) / num_bins, dtype)


def _bin_index(edges: jax.Array, confidence: jax.Array) -> jax.Array:
    return jnp.searchsorted(edges[1:-1], confidence, side="right", method="compare_all")


def _fit_bins(confidence, target, weight, num_bins, binning):
    """Edges and values from the samples with weight 1 (weight 0 samples are ignored)."""
    dtype = confidence.dtype
    uniform = _uniform_edges(num_bins, dtype)
    if binning == "uniform":
        edges = uniform
    else:
        masked = jnp.where(weight > 0, confidence, jnp.nan)
        q = jnp.nanquantile(masked, jnp.linspace(0.0, 1.0, num_bins + 1, dtype=dtype))
        # No samples (a class never predicted): uniform edges, never NaN.
        edges = jnp.where(jnp.any(weight > 0), q.at[0].set(0.0).at[-1].set(1.0), uniform)
    index = _bin_index(edges, confidence)
    counts = jax.ops.segment_sum(weight, index, num_bins)
    hits = jax.ops.segment_sum(weight * target, index, num_bins)
    midpoints = 0.5 * (edges[:-1] + edges[1:])
    values = jnp.where(counts > 0, hits / jnp.where(counts > 0, counts, 1.0), midpoints)
    return HistogramParams(edges, values)


def fit_histogram(logits: jax.Array, labels: jax.Array, num_bins: int, binning: str):
    """[N] logits: bins of p(y=1); [N, K]: top-label bins per predicted class (Gupta & Ramdas
    2021). Traceable; `num_bins` and `binning` ("uniform" or "quantile") are static."""
    dtype = logits.dtype
    if logits.ndim == 1:
        ones = jnp.ones_like(logits)
        return _fit_bins(jax.nn.sigmoid(logits), labels.astype(dtype), ones, num_bins, binning)
    probabilities = jax.nn.softmax(logits, axis=-1)
    predicted = jnp.argmax(probabilities, axis=-1)
    confidence = jnp.max(probabilities, axis=-1)
    correct = (predicted == labels).astype(dtype)
    classes = jnp.arange(logits.shape[1])
    weights = (predicted[None, :] == classes[:, None]).astype(dtype)
    return jax.vmap(lambda w: _fit_bins(confidence, correct, w, num_bins, binning))(weights)


def histogram_probabilities(params: HistogramParams, logits: jax.Array) -> jax.Array:
    """[N] p(y=1), or [N, K]: the top label's binned confidence, the rest of the mass spread
    over the other classes in proportion to their probabilities (evenly if those are all 0)."""
    if logits.ndim == 1:
        p = jax.nn.sigmoid(logits)
        return params.values[_bin_index(params.edges, p)]
    probabilities = jax.nn.softmax(logits, axis=-1)
    predicted = jnp.argmax(probabilities, axis=-1)
    confidence = jnp.max(probabilities, axis=-1)
    index = jax.vmap(_bin_index)(params.edges[predicted], confidence)
    top = params.values[predicted, index]
    is_top = predicted[:, None] == jnp.arange(logits.shape[1])
    others = jnp.where(is_top, 0.0, probabilities)
    rest = jnp.sum(others, axis=-1, keepdims=True)
    even = jnp.where(is_top, 0.0, 1.0 / (logits.shape[1] - 1))
    share = jnp.where(rest > 0, others / jnp.where(rest > 0, rest, 1.0), even)
    return jnp.where(is_top, top[:, None], (1.0 - top[:, None]) * share)
