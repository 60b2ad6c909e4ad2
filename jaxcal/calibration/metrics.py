"""Calibration metrics from binned sufficient statistics: ECE family, NLL, Brier, accuracy."""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcal.calibration import _checks

BINARY_MODES = ("positive", "top_label")
CLOSED_RULES = ("left", "right")
NORMS = ("l1", "l2", "max")
BINNINGS = ("uniform", "quantile")

# Samples per chunk of the per-bin sums (see `_binned_sums`): float32 sums of this many values
# near 1.0 stay within ~1e-7 relative, and C x B partial sums stay small next to N.
SUM_CHUNK = 4096
# Bin lookups (`_search_bins`, `_bin_index`): edges compared one by one up to these counts.
COMPARE_ALL_EDGES = 32
UNIFORM_COMPARE_BINS = 20


class ReliabilityBins(NamedTuple):
    """Per-bin sufficient statistics of a reliability diagram (a pytree; leading axes allowed).

    Every calibration metric and plot derives from these sums. Statistics of several batches or
    devices combine with `merge` (same edges), so a metric over a large set never needs all
    predictions in memory at once.

    Attributes:
      edges: [..., B + 1] bin edges, 0 and 1 outermost (uniform or quantile).
      counts: [..., B] int32 number of samples per bin.
      confidence_sum: [..., B] sum of confidences per bin.
      target_sum: [..., B] sum of targets per bin: correct predictions for top-label
        (multiclass or binary="top_label"), samples with y == 1 for binary="positive".
    """

    edges: jax.Array
    counts: jax.Array
    confidence_sum: jax.Array
    target_sum: jax.Array

    @property
    def num_samples(self) -> jax.Array:
        """[...] total number of samples."""
        return jnp.sum(self.counts, axis=-1)

    @property
    def mean_confidence(self) -> jax.Array:
        """[..., B] mean confidence per bin, 0 where a bin is empty."""
        return self.confidence_sum / jnp.maximum(self.counts, 1).astype(self.confidence_sum.dtype)

    @property
    def accuracy(self) -> jax.Array:
        """[..., B] mean target per bin (accuracy, or frequency of y == 1), 0 where empty."""
        return self.target_sum / jnp.maximum(self.counts, 1).astype(self.target_sum.dtype)

    def merge(self, other: "ReliabilityBins") -> "ReliabilityBins":
        """Adds the statistics of `other` (e.g. another batch or device) to these.

        Args:
          other: statistics with the same bin edges.

        Returns:
          The statistics of the union of both sample sets.

        Raises:
          ValueError: the edges differ in shape, or (checked on concrete arrays) in value, e.g.
            quantile bins computed on different batches.
        """
        if self.edges.shape != other.edges.shape:
            raise ValueError(
                f"other must have the same bin edges: shapes {self.edges.shape} and "
                f"{other.edges.shape}"
            )
        if (
            _checks.is_concrete(self.edges)
            and _checks.is_concrete(other.edges)
            and not np.array_equal(np.asarray(self.edges), np.asarray(other.edges))
        ):
            raise ValueError(
                "other must have the same bin edges (quantile bins of different batches cannot "
                "be merged; use binning='uniform' or shared edges)"
            )
        return ReliabilityBins(
            edges=self.edges,
            counts=self.counts + other.counts,
            confidence_sum=self.confidence_sum + other.confidence_sum,
            target_sum=self.target_sum + other.target_sum,
        )


class BootstrapInterval(NamedTuple):
    """A bias-corrected estimate with its basic bootstrap confidence interval (scalars).

    Attributes:
      estimate: the bias-corrected error 2 e - median(e*), clipped at 0 (e: the error on the
        full data; e*: the resampled errors). Always within [lower, upper].
      lower: max(0, 2 e - q_hi(e*)), the basic (reverse-percentile) lower bound.
      upper: max(0, 2 e - q_lo(e*)).
      plug_in: e, the error on the full data (what `ece` returns; biased upward).
    """

    estimate: jax.Array
    lower: jax.Array
    upper: jax.Array
    plug_in: jax.Array


def _resample_indices(key: jax.Array, n: int) -> jax.Array:
    """[N] indices drawn uniformly with replacement from [0, N), from one word of bits each.

    floor(bits * N / 2^32) by an exact 32 x 32 -> 64-bit multiply-high in uint32 halves:
    8x cheaper on CPU than `jax.random.randint` (which draws and reduces two words per
    index); each index has probability within N / 2^32 (relative) of 1 / N.
    """
    bits = jax.random.bits(key, (n,), jnp.uint32)
    a_hi, a_lo = bits >> 16, bits & 0xFFFF
    n_hi, n_lo = jnp.uint32(n >> 16), jnp.uint32(n & 0xFFFF)
    mid_1, mid_2 = a_hi * n_lo, a_lo * n_hi
    carry = ((a_lo * n_lo) >> 16) + (mid_1 & 0xFFFF) + (mid_2 & 0xFFFF)
    high = a_hi * n_hi + (mid_1 >> 16) + (mid_2 >> 16) + (carry >> 16)
    return high.astype(jnp.int32)


def _check_bin_options(num_bins: int, binary: str, closed: str, binning: str) -> int:
    _checks.check_option("binary", binary, BINARY_MODES)
    _checks.check_option("closed", closed, CLOSED_RULES)
    _checks.check_option("binning", binning, BINNINGS)
    return _checks.check_positive_int("num_bins", num_bins)


def _probabilities(scores: jax.Array, from_logits: bool) -> jax.Array:
    """[N] p(y=1) or [N, K] class probabilities."""
    if not from_logits:
        return scores
    return jax.nn.sigmoid(scores) if scores.ndim == 1 else jax.nn.softmax(scores, axis=-1)


def _predictions(scores: jax.Array, from_logits: bool) -> jax.Array:
    """[N] predicted class: p > 0.5 (logit > 0) for binary, argmax for multiclass."""
    if scores.ndim == 2:
        return jnp.argmax(scores, axis=-1).astype(jnp.int32)
    return (scores > (0.0 if from_logits else 0.5)).astype(jnp.int32)


def _confidence_and_target(
    scores: jax.Array,
    labels: jax.Array,
    *,
    from_logits: bool,
    binary: str,
    rows: _checks.RowSummary | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The per-sample (confidence, target) pairs that a reliability diagram bins.

    Assumes validated inputs (no checks here; the public metrics check first).

    Args:
      scores: [N] binary logits/probabilities or [N, K] multiclass logits/probabilities.
      labels: [N] int labels.
      from_logits: whether `scores` are logits.
      binary: for [N] scores, "positive" (confidence p(y=1), target y) or "top_label"
        (confidence max(p, 1 - p), target prediction correct). Ignored for [N, K].
      rows: for [N, K] scores, their `_checks.row_summary` if the value checks computed one:
        its maxima and argmax spare a pass over the scores (probabilities then need none;
        logits one, for the top probability 1 / sum_k exp(z_k - max_k z_k), which is exactly
        what softmax then max gives, exp(0) being 1).

    Returns:
      confidence: [N] in [0, 1]; target: [N] in {0, 1}, both of the scores' float dtype.
    """
    dtype = scores.dtype
    if scores.ndim == 1 and binary == "positive":
        return _probabilities(scores, from_logits), labels.astype(dtype)
    if scores.ndim == 2 and rows is not None:
        confidence = rows.max
        if from_logits:
            confidence = 1.0 / jnp.sum(jnp.exp(scores - rows.max[:, None]), axis=-1)
        return confidence, (rows.argmax == labels).astype(dtype)
    predicted = _predictions(scores, from_logits)
    if scores.ndim == 1:
        # sigmoid(|z|) keeps full precision for confident logits (1 - sigmoid(z) would not).
        if from_logits:
            confidence = jax.nn.sigmoid(jnp.abs(scores))
        else:
            confidence = jnp.maximum(scores, 1.0 - scores)
    else:
        confidence = jnp.max(_probabilities(scores, from_logits), axis=-1)
    return confidence, (predicted == labels).astype(dtype)


def _edges(confidence: jax.Array, num_bins: int, binning: str) -> jax.Array:
    """[B + 1] bin edges; uniform edges are k / B correctly rounded, so 0.3 is the edge 3 / 10."""
    if binning == "uniform":
        return jnp.asarray(np.arange(num_bins + 1) / num_bins, confidence.dtype)
    q = jnp.quantile(confidence, jnp.linspace(0.0, 1.0, num_bins + 1, dtype=confidence.dtype))
    return q.at[0].set(0.0).at[-1].set(1.0)


def _search_bins(inner_edges: jax.Array, values: jax.Array, side: str) -> jax.Array:
    """`jnp.searchsorted(inner_edges, values, side=side)` as int32, by XLA:CPU's fastest method.

    Measured on 10^6 values: up to 32 edges, comparing with every edge (1.1 ms at 32, 0.6 ms
    at 15) beats any search; beyond, the unrolled binary search (3-33 ms for 32-1,000 edges)
    beats the rolled one `searchsorted` uses by default (21-43 ms). O(N) memory either way.
    """
    method = "compare_all" if inner_edges.shape[-1] <= COMPARE_ALL_EDGES else "scan_unrolled"
    return jnp.searchsorted(inner_edges, values, side=side, method=method).astype(jnp.int32)


def _bin_index(confidence: jax.Array, edges: jax.Array, *, closed: str, uniform: bool) -> jax.Array:
    """[N] int32 bin of each confidence, in O(N) memory whatever the number of bins.

    Up to 20 bins, or for edges other than k / B: `_search_bins`. Uniform edges k / B beyond
    20 bins: the bin floor(c * B), moved by one where rounding put c across the (correctly
    rounded) edge (two gathers: 1.0 ms on 10^6 confidences, whatever B; comparing with 14
    edges takes 0.6 ms, with 31 edges 1.0 ms).
    """
    num_bins = edges.shape[-1] - 1
    if not uniform or num_bins <= UNIFORM_COMPARE_BINS:
        side = "right" if closed == "left" else "left"
        return _search_bins(edges[1:-1], confidence, side)
    index = jnp.clip(jnp.floor(confidence * num_bins).astype(jnp.int32), 0, num_bins - 1)
    lo, hi = edges[index], edges[index + 1]
    if closed == "left":
        down, up = confidence < lo, (confidence >= hi) & (index < num_bins - 1)
    else:
        down, up = (confidence <= lo) & (index > 0), confidence > hi
    return index - down.astype(jnp.int32) + up.astype(jnp.int32)


def _binned_sums(values: jax.Array, index: jax.Array, num_bins: int) -> jax.Array:
    """[B, F] per-bin sums of [N, F] values, float32-safe.

    A scatter-add accumulates sequentially; summing tens of thousands of confidences near 1.0
    into one float32 bin that way moves an ECE by ~2e-5. Here each chunk of SUM_CHUNK samples is
    scattered on its own ([C, B, F] partial sums, C = N / SUM_CHUNK) and the partial sums are
    added by a reduction, so the rounding error grows with SUM_CHUNK + C, not with N.
    """
    n, width = values.shape
    chunks = -(-n // SUM_CHUNK)
    segment = index + num_bins * (jnp.arange(n, dtype=jnp.int32) // SUM_CHUNK)
    partial_sums = jax.ops.segment_sum(values, segment, chunks * num_bins)
    return jnp.sum(partial_sums.reshape(chunks, num_bins, width), axis=0)


def _bin_statistics(
    confidence: jax.Array,
    target: jax.Array,
    edges: jax.Array,
    *,
    closed: str,
    uniform: bool = False,
    index: jax.Array | None = None,
) -> ReliabilityBins:
    """Bins (confidence, target) pairs over a static bin count in O(N + B * N / SUM_CHUNK) memory.

    Args:
      confidence: [N] confidences in [0, 1].
      target: [N] targets in {0, 1} (float).
      edges: [B + 1] increasing bin edges, 0 and 1 outermost.
      closed: "left" for [lo, hi) bins with 1.0 in the last bin, "right" for (lo, hi] bins
        with 0.0 in the first bin.
      uniform: whether `edges` are the uniform edges k / B of `_edges` (a faster bin lookup).
      index: [N] the bins of the samples, if already known (then `closed`, `uniform` unused).

    Returns:
      The ReliabilityBins of these samples.
    """
    num_bins = edges.shape[-1] - 1
    if index is None:
        index = _bin_index(confidence, edges, closed=closed, uniform=uniform)
    counts = jax.ops.segment_sum(jnp.ones(confidence.shape, jnp.int32), index, num_bins)
    sums = _binned_sums(jnp.stack([confidence, target], axis=-1), index, num_bins)
    return ReliabilityBins(
        edges=edges, counts=counts, confidence_sum=sums[:, 0], target_sum=sums[:, 1]
    )


@partial(jax.jit, static_argnames=("num_bins", "from_logits", "binary", "closed", "binning"))
def _reliability_bins(scores, labels, num_bins, from_logits, binary, closed, binning, rows=None):
    confidence, target = _confidence_and_target(
        scores, labels, from_logits=from_logits, binary=binary, rows=rows
    )
    edges = _edges(confidence, num_bins, binning)
    return _bin_statistics(confidence, target, edges, closed=closed, uniform=binning == "uniform")


def reliability_bins(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    num_bins: int = 15,
    from_logits: bool = True,
    binary: str = "positive",
    closed: str = "left",
    binning: str = "uniform",
) -> ReliabilityBins:
    """Per-bin counts, confidence sums and target sums of a reliability diagram.

    Args:
      scores: [N] binary logits (or p(y=1) with from_logits=False), or [N, K] multiclass
        logits (or probabilities), K >= 2; multiclass always uses the top-label confidence.
      labels: [N] int labels in [0, 2) for [N] scores, [0, K) for [N, K] scores.
      num_bins: number of bins B >= 1 (static).
      from_logits: whether `scores` are logits or probabilities.
      binary: for [N] scores: "positive" (confidence p(y=1), target y == 1; netcal,
        torchmetrics, sklearn) or "top_label" (confidence max(p, 1 - p), target prediction
        correct; Guo et al. 2017, TFP).
      closed: "left": bins [lo, hi) with the last bin closed, so 1.0 falls in the last bin;
        "right": bins (lo, hi] with 0.0 in the first bin (Guo et al.).
      binning: "uniform" (equal-width) or "quantile" (equal-mass bins from the confidences).

    Returns:
      ReliabilityBins with edges [B + 1] and per-bin statistics [B].

    Raises:
      ValueError / TypeError: bad shapes, ranks, dtypes or options (always), or NaN/inf scores,
        probabilities outside [0, 1], labels out of range (only eagerly, on concrete arrays:
        under jit/vmap value checks are skipped).
    """
    num_bins = _check_bin_options(num_bins, binary, closed, binning)
    scores, labels, rows = _checks.check_scores_labels_and_rows(
        scores, labels, from_logits=from_logits
    )
    return _reliability_bins(scores, labels, num_bins, from_logits, binary, closed, binning, rows)


@partial(jax.jit, static_argnames=("norm", "debiased"))
def _calibration_error(bins: ReliabilityBins, norm: str, debiased: bool = False) -> jax.Array:
    dtype = bins.confidence_sum.dtype
    total = jnp.maximum(bins.num_samples, 1).astype(dtype)[..., None]
    accuracy = bins.accuracy
    gap = jnp.abs(accuracy - bins.mean_confidence)
    weight = bins.counts.astype(dtype) / total
    if norm == "l1":
        return jnp.sum(weight * gap, axis=-1)
    if norm == "l2" and debiased:
        # Kumar et al. 2019: the plug-in gap^2 overestimates (acc - conf)^2 by the variance of
        # the bin's mean target, acc (1 - acc) / (n - 1) unbiasedly; bins of one sample give 0.
        n = bins.counts.astype(dtype)
        variance = accuracy * (1.0 - accuracy) / jnp.maximum(n - 1.0, 1.0)
        squared = jnp.where(bins.counts > 1, gap**2 - variance, 0.0)
        return jnp.sqrt(jnp.maximum(jnp.sum(weight * squared, axis=-1), 0.0))
    if norm == "l2":
        return jnp.sqrt(jnp.sum(weight * gap**2, axis=-1))
    return jnp.max(jnp.where(bins.counts > 0, gap, 0.0), axis=-1)


def _check_norm(norm: str, debiased: bool) -> None:
    _checks.check_option("norm", norm, NORMS)
    if not isinstance(debiased, bool):
        raise TypeError(f"debiased must be a bool, got {debiased!r}")
    if debiased and norm != "l2":
        raise ValueError(f"debiased=True needs norm='l2' (Kumar et al. 2019), got norm={norm!r}")


def calibration_error(
    bins: ReliabilityBins, norm: str = "l1", *, debiased: bool = False
) -> jax.Array:
    """Calibration error derived from reliability-bin statistics.

    Args:
      bins: statistics with counts [..., B] (leading axes allowed).
      norm: "l1" expected calibration error sum_b (n_b / N) |acc_b - conf_b|; "l2" root mean
        square calibration error sqrt(sum_b (n_b / N) (acc_b - conf_b)^2); "max" maximum
        calibration error max_b |acc_b - conf_b| over non-empty bins.
      debiased: with norm="l2", the debiased estimator of Kumar, Liang & Ma 2019: each bin's
        (acc_b - conf_b)^2 minus acc_b (1 - acc_b) / (n_b - 1) (bins with n_b < 2 give 0),
        reported as sqrt(max(0, sum_b (n_b / N) (...))), as uncertainty-calibration's
        `get_calibration_error(..., debias=True)` does.

    Returns:
      [...] calibration error in [0, 1] (0 when there are no samples).
    """
    _check_norm(norm, debiased)
    if not isinstance(bins, ReliabilityBins):
        raise TypeError(f"bins must be a ReliabilityBins, got {type(bins).__name__}")
    return _calibration_error(bins, norm, debiased)


@partial(jax.jit, static_argnames=("num_bins", "from_logits", "binary", "closed", "binning"))
def _l1_error(scores, labels, num_bins, from_logits, binary, closed, binning, rows=None):
    """The ECE sum_b (n_b / N) |acc_b - conf_b| as sum_b |sum_{i in b} (c_i - t_i)| / N.

    One residual sum per bin (no counts, no separate confidence and target sums): a third of
    the scatter-adds of `_bin_statistics`, and no cancellation of two large per-bin sums.
    `rows`: the [N, K] scores' RowSummary if the checks made one (see `_confidence_and_target`).
    """
    confidence, target = _confidence_and_target(
        scores, labels, from_logits=from_logits, binary=binary, rows=rows
    )
    return _l1_from_pairs(confidence, target, num_bins, closed, binning)


def _l1_from_pairs(confidence, target, num_bins, closed, binning):
    """The l1 ECE of [N] (confidence, target) pairs from per-bin residual sums (see `_l1_error`)."""
    edges = _edges(confidence, num_bins, binning)
    index = _bin_index(confidence, edges, closed=closed, uniform=binning == "uniform")
    return _l1_from_bins(confidence - target, index, num_bins)


def _l1_from_bins(residual, index, num_bins):
    """sum_b |sum_{i in b} residual_i| / N for [N] residuals c - t and their bins."""
    return jnp.sum(jnp.abs(_binned_sums(residual[:, None], index, num_bins))) / residual.shape[0]


def ece(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    num_bins: int = 15,
    from_logits: bool = True,
    binary: str = "positive",
    closed: str = "left",
    norm: str = "l1",
    binning: str = "uniform",
    debiased: bool = False,
) -> jax.Array:
    """Expected calibration error (or RMS / maximum calibration error) of binned confidences.

    With the defaults this equals netcal's `ECE` and torchmetrics' `binary_calibration_error` /
    `multiclass_calibration_error` (for confidences below 1.0, where torchmetrics opens an
    extra bin). `jax.vmap` over a leading axis evaluates several models or seeds at once.

    Args:
      scores: [N] binary logits (or p(y=1) with from_logits=False), or [N, K] multiclass
        logits (or probabilities), K >= 2; multiclass always uses the top-label confidence.
      labels: [N] int labels in [0, 2) for [N] scores, [0, K) for [N, K] scores.
      num_bins: number of bins B >= 1 (static).
      from_logits: whether `scores` are logits or probabilities.
      binary: "positive" or "top_label"; see `reliability_bins`.
      closed: "left" ([lo, hi), last bin closed) or "right" ((lo, hi], first bin closed).
      norm: "l1" (ECE), "l2" (RMS calibration error) or "max" (MCE); see `calibration_error`.
      binning: "uniform" or "quantile" (equal-mass bins).
      debiased: with norm="l2", Kumar et al.'s debiased estimator (see `calibration_error`);
        with binary="positive", closed="right" it equals uncertainty-calibration's
        `lower_bound_scaling_ce(p, y, p=2, debias=True, binning_scheme=get_equal_prob_bins)`.

    Returns:
      Scalar calibration error in [0, 1].

    Raises:
      ValueError / TypeError: as `reliability_bins` (value checks eager-only), unknown norm, or
        debiased=True with a norm other than "l2".
    """
    _check_norm(norm, debiased)
    if norm == "l1":
        num_bins = _check_bin_options(num_bins, binary, closed, binning)
        scores, labels, rows = _checks.check_scores_labels_and_rows(
            scores, labels, from_logits=from_logits
        )
        return _l1_error(scores, labels, num_bins, from_logits, binary, closed, binning, rows)
    bins = reliability_bins(
        scores,
        labels,
        num_bins=num_bins,
        from_logits=from_logits,
        binary=binary,
        closed=closed,
        binning=binning,
    )
    return _calibration_error(bins, norm, debiased)


@partial(jax.jit, static_argnames=("num_bins", "from_logits", "closed", "norm", "binning"))
def _classwise_ece(scores, labels, num_bins, from_logits, closed, norm, binning):
    probs = _probabilities(scores, from_logits)
    if probs.ndim == 1:
        probs = jnp.stack([1.0 - probs, probs], axis=-1)
    classes = jnp.arange(probs.shape[-1])

    def one_vs_rest(confidence, k):
        target = (labels == k).astype(confidence.dtype)
        edges = _edges(confidence, num_bins, binning)
        bins = _bin_statistics(
            confidence, target, edges, closed=closed, uniform=binning == "uniform"
        )
        return _calibration_error(bins, norm)

    return jnp.mean(jax.vmap(one_vs_rest, in_axes=(1, 0))(probs, classes))


def classwise_ece(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    num_bins: int = 15,
    from_logits: bool = True,
    closed: str = "left",
    norm: str = "l1",
    binning: str = "uniform",
) -> jax.Array:
    """Class-wise ECE: the mean over classes k of the one-vs-rest ECE of p(y = k).

    Args:
      scores: [N] binary logits/probabilities (treated as the two classes [1 - p, p]) or
        [N, K] multiclass logits/probabilities.
      labels: [N] int labels.
      num_bins, from_logits, closed, norm, binning: as in `ece`.

    Returns:
      Scalar mean one-vs-rest calibration error in [0, 1].
    """
    num_bins = _check_bin_options(num_bins, "positive", closed, binning)
    _checks.check_option("norm", norm, NORMS)
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    return _classwise_ece(scores, labels, num_bins, from_logits, closed, norm, binning)


@partial(jax.jit, static_argnames=("num_bins", "from_logits", "closed"))
def _top_label_ece(scores, labels, num_bins, from_logits, closed):
    confidence, target = _confidence_and_target(
        scores, labels, from_logits=from_logits, binary="top_label"
    )
    num_classes = 2 if scores.ndim == 1 else scores.shape[1]
    edges = _edges(confidence, num_bins, "uniform")
    index = _bin_index(confidence, edges, closed=closed, uniform=True)
    cell = _predictions(scores, from_logits) * num_bins + index
    residual = _binned_sums((confidence - target)[:, None], cell, num_classes * num_bins)
    return jnp.sum(jnp.abs(residual)) / confidence.shape[0]


def top_label_ece(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    num_bins: int = 15,
    from_logits: bool = True,
    closed: str = "left",
) -> jax.Array:
    """Top-label calibration error of Gupta & Ramdas 2021: ECE given the predicted class.

    The samples predicted as class k are binned on their own (uniform bins of the top-label
    confidence); the result is sum_k P(pred = k) ECE_k = sum over (class, bin) cells of
    |sum (confidence - correct)| / N. It is at least the top-label `ece`, which pools classes.

    Args:
      scores: [N] binary logits/probabilities (classes 0 and 1) or [N, K] logits/probabilities.
      labels: [N] int labels.
      num_bins: uniform bins B >= 1 per predicted class (static).
      from_logits: whether `scores` are logits or probabilities.
      closed: "left" ([lo, hi), last bin closed) or "right" ((lo, hi], first bin closed).

    Returns:
      Scalar top-label calibration error in [0, 1].
    """
    num_bins = _check_bin_options(num_bins, "top_label", closed, "uniform")
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    return _top_label_ece(scores, labels, num_bins, from_logits, closed)


def _log_likelihood(scores: jax.Array, labels: jax.Array, from_logits: bool) -> jax.Array:
    """[N] log-likelihood of each label."""
    if from_logits:
        if scores.ndim == 1:
            # log sigmoid of the signed margin: one exact transcendental per sample.
            return jax.nn.log_sigmoid(jnp.where(labels == 1, scores, -scores))
        log_probs = jax.nn.log_softmax(scores, axis=-1)
        return jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    if scores.ndim == 1:
        p_label = jnp.where(labels == 1, scores, 1.0 - scores)
    else:
        p_label = jnp.take_along_axis(scores, labels[:, None], axis=-1)[:, 0]
    return jnp.log(jnp.clip(p_label, jnp.finfo(scores.dtype).eps, 1.0))


@partial(jax.jit, static_argnames=("from_logits",))
def _nll(scores, labels, from_logits):
    # 0 - x: a perfect fit gives +0.0, not -0.0.
    return 0.0 - jnp.mean(_log_likelihood(scores, labels, from_logits))


def nll(
    scores: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, from_logits: bool = True
) -> jax.Array:
    """Mean negative log-likelihood (binary cross-entropy for [N], cross-entropy for [N, K]).

    Args:
      scores: [N] binary logits (or p(y=1)) or [N, K] logits (or probabilities).
      labels: [N] int labels.
      from_logits: whether `scores` are logits (exact, via log-sigmoid / log-softmax) or
        probabilities (clipped below at float eps, as sklearn's `log_loss`, so a confident
        wrong probability of exactly 0 costs -log(eps) instead of inf; prefer logits).

    Returns:
      Scalar mean NLL in nats.
    """
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    return _nll(scores, labels, from_logits)


@partial(jax.jit, static_argnames=("from_logits",))
def _brier_score(scores, labels, from_logits):
    probs = _probabilities(scores, from_logits)
    if probs.ndim == 1:
        return jnp.mean((probs - labels.astype(probs.dtype)) ** 2)
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    return jnp.mean(jnp.sum((probs - one_hot) ** 2, axis=-1))


def brier_score(
    scores: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, from_logits: bool = True
) -> jax.Array:
    """Brier score: mean squared error of the predicted probabilities.

    Args:
      scores: [N] binary logits (or p(y=1)) or [N, K] logits (or probabilities).
      labels: [N] int labels.
      from_logits: whether `scores` are logits or probabilities.

    Returns:
      Scalar: mean (p - y)^2 in [0, 1] for [N] scores (sklearn's `brier_score_loss`);
      mean over samples of sum_k (p_k - 1[y = k])^2 in [0, 2] for [N, K] scores (Brier 1950).
    """
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    return _brier_score(scores, labels, from_logits)


@partial(jax.jit, static_argnames=("from_logits",))
def _accuracy(scores, labels, from_logits):
    return jnp.mean((_predictions(scores, from_logits) == labels).astype(scores.dtype))


def accuracy(
    scores: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, from_logits: bool = True
) -> jax.Array:
    """Fraction of correct predictions (binary: p > 0.5, i.e. logit > 0; multiclass: argmax).

    Args:
      scores: [N] binary logits (or p(y=1)) or [N, K] logits (or probabilities).
      labels: [N] int labels.
      from_logits: whether `scores` are logits or probabilities.

    Returns:
      Scalar accuracy in [0, 1].
    """
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    return _accuracy(scores, labels, from_logits)


@partial(
    jax.jit,
    static_argnames=(
        "num_resamples",
        "num_bins",
        "from_logits",
        "binary",
        "closed",
        "norm",
        "binning",
        "batch_size",
    ),
)
def _ece_bootstrap(
    scores,
    labels,
    key,
    num_resamples,
    confidence,
    num_bins,
    from_logits,
    binary,
    closed,
    norm,
    binning,
    batch_size,
):
    conf, target = _confidence_and_target(scores, labels, from_logits=from_logits, binary=binary)
    n = conf.shape[0]
    # Uniform edges do not depend on the sample, so a resample's bins are its samples' bins:
    # looked up once and gathered with them (1,000 resamples of 10,000: 83 -> 72 ms).
    uniform = binning == "uniform"
    edges = _edges(conf, num_bins, "uniform")
    bins = _bin_index(conf, edges, closed=closed, uniform=True) if uniform else None
    residual = conf - target

    def error(c, t):
        if norm == "l1":
            return _l1_from_pairs(c, t, num_bins, closed, binning)
        edges_c = _edges(c, num_bins, binning)
        stats = _bin_statistics(c, t, edges_c, closed=closed, uniform=uniform)
        return _calibration_error(stats, norm)

    def resample(r):
        index = _resample_indices(jax.random.fold_in(key, r), n)
        if not uniform:
            return error(conf[index], target[index])
        if norm == "l1":
            return _l1_from_bins(residual[index], bins[index], num_bins)
        stats = _bin_statistics(conf[index], target[index], edges, closed=closed, index=bins[index])
        return _calibration_error(stats, norm)

    # Round up to whole chunks (one compiled loop body, no remainder body), then drop extras.
    padded = -(-num_resamples // batch_size) * batch_size
    replicates = jax.lax.map(resample, jnp.arange(padded), batch_size=batch_size)[:num_resamples]
    alpha = (1.0 - confidence) / 2.0
    levels = jnp.stack([alpha, 0.5, 1.0 - alpha]).astype(conf.dtype)
    q_lo, median, q_hi = jnp.quantile(replicates, levels)
    plug_in = error(conf, target)
    # Basic bootstrap: the resampled errors overshoot e as e overshoots the true error, so the
    # interval reflects the percentiles about e (the percentile interval would be shifted up).
    lower, estimate, upper = (jnp.maximum(2.0 * plug_in - q, 0.0) for q in (q_hi, median, q_lo))
    return BootstrapInterval(estimate, lower, upper, plug_in)


def ece_bootstrap(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    key: jax.Array,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    num_bins: int = 15,
    from_logits: bool = True,
    binary: str = "positive",
    closed: str = "left",
    norm: str = "l1",
    binning: str = "uniform",
) -> BootstrapInterval:
    """Bias-corrected ECE with a basic bootstrap confidence interval, in one compiled call.

    The plug-in ECE e is biased upward (|noise| adds to every bin's gap), and each resampled
    error e* is biased upward from e by about as much. The percentile interval of e* is then
    shifted above e (at N = 10,000 it can exclude e). The basic (reverse-percentile) bootstrap
    [2 e - q_hi, 2 e - q_lo] reflects that shift, and its bias-corrected centre 2 e - median(e*)
    lies inside it by construction; bounds are clipped at 0. Coverage of the population error
    is tested on calibrated and miscalibrated simulated data.

    Each resample draws N samples with replacement (its key is `fold_in(key, r)`) and
    recomputes the binned error (quantile edges are re-estimated per resample); resamples are
    vmapped in chunks with `lax.map` sized by N and num_bins, so memory stays bounded.

    Args:
      scores: [N] or [N, K] scores, as in `ece`.
      labels: [N] int labels.
      key: a `jax.random` key.
      num_resamples: number of bootstrap resamples R >= 1 (static).
      confidence: coverage of the interval in (0, 1); 0.95 reflects the 2.5 % and 97.5 %
        percentiles of the resampled errors.
      num_bins, from_logits, binary, closed, norm, binning: as in `ece`.

    Returns:
      BootstrapInterval(estimate, lower, upper, plug_in) (scalars).
    """
    num_bins = _check_bin_options(num_bins, binary, closed, binning)
    _checks.check_option("norm", norm, NORMS)
    num_resamples = _checks.check_positive_int("num_resamples", num_resamples)
    confidence = _checks.check_probability("confidence", confidence)
    key = _checks.check_key("key", key)
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    # Resamples evaluated together: ~2^16 gathered samples and partial bin sums per chunk
    # (measured, 10,000 samples: 8 resamples per chunk ran 2.5x faster than 26, 3.5x faster
    # than 1 and 6x faster than 100); a resample holds N samples and B sums per SUM_CHUNK.
    n = scores.shape[0]
    per_resample = n + num_bins * -(-n // SUM_CHUNK)
    batch_size = max(1, min(num_resamples, (1 << 16) // per_resample))
    return _ece_bootstrap(
        scores,
        labels,
        key,
        num_resamples,
        confidence,
        num_bins,
        from_logits,
        binary,
        closed,
        norm,
        binning,
        batch_size,
    )
