"""Calibration test by consistency resampling (Broecker & Smith 2007; Vaicenavicius et al. 2019)."""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcal.calibration import _checks
from jaxcal.calibration.kernel import _probability_vectors, _skce
from jaxcal.calibration.metrics import (
    _bin_statistics,
    _calibration_error,
    _confidence_and_target,
    _edges,
)
from jaxcal.calibration.smooth import _fixed_point

STATISTICS = ("ece", "smooth_ece", "skce")


class CalibrationTest(NamedTuple):
    """Result of `calibration_test` (scalars).

    Attributes:
      statistic: the statistic on the observed labels.
      p_value: (1 + #{resampled >= observed}) / (1 + R).
    """

    statistic: jax.Array
    p_value: jax.Array


def _statistic(probs: jax.Array, labels: jax.Array, name: str, num_bins: int, bandwidth: float):
    """The test statistic of [N, K] probabilities (binary: K = 2) and [N] labels."""
    if name == "skce":
        return _skce(probs, labels, jnp.asarray(bandwidth, probs.dtype), "unbiased")
    if probs.shape[1] == 2:
        # Binary: p(y = 1) against y, as `ece` and `smooth_ece` do by default.
        confidence, target = probs[:, 1], labels.astype(probs.dtype)
    else:
        confidence, target = _confidence_and_target(
            probs, labels, from_logits=False, binary="top_label"
        )
    if name == "smooth_ece":
        return _fixed_point(jnp.clip(confidence, 0.0, 1.0), confidence - target)[0]
    edges = _edges(confidence, num_bins, "uniform")
    return _calibration_error(
        _bin_statistics(confidence, target, edges, closed="left", uniform=True), "l1"
    )


@partial(
    jax.jit,
    static_argnames=(
        "statistic",
        "num_resamples",
        "from_logits",
        "num_bins",
        "bandwidth",
        "batch_size",
    ),
)
def _calibration_test(
    scores, labels, key, statistic, num_resamples, from_logits, num_bins, bandwidth, batch_size
):
    probs = _probability_vectors(scores, from_logits)
    observed = _statistic(probs, labels, statistic, num_bins, bandwidth)
    log_probs = jnp.log(jnp.clip(probs, jnp.finfo(probs.dtype).tiny, 1.0))

    def resample(r):
        drawn = jax.random.categorical(jax.random.fold_in(key, r), log_probs, axis=-1)
        return _statistic(probs, drawn, statistic, num_bins, bandwidth)

    padded = -(-num_resamples // batch_size) * batch_size
    resampled = jax.lax.map(resample, jnp.arange(padded), batch_size=batch_size)[:num_resamples]
    exceed = jnp.sum(resampled >= observed)
    p_value = (1 + exceed).astype(observed.dtype) / (1 + num_resamples)
    return CalibrationTest(observed, p_value)


def calibration_test(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    key: jax.Array,
    *,
    statistic: str = "ece",
    num_resamples: int = 1000,
    from_logits: bool = True,
    num_bins: int = 15,
    bandwidth: float = 0.1,
) -> CalibrationTest:
    """A p-value for "the model is calibrated", by consistency resampling.

    Under the null hypothesis the labels are drawn from the predicted distributions. Each of
    R resamples draws labels y* ~ Categorical(p_i) (Bernoulli(p_i) for [N] scores; key
    fold_in(key, r)) and recomputes the statistic on (p, y*), vmapped in chunks; the p-value
    is the share of resampled statistics at least as large as the observed one, counted as
    (1 + #) / (1 + R) so that it is a valid p-value for any R (never 0). On calibrated data the
    p-values are uniform; a small p-value is evidence of miscalibration.

    Args:
      scores: [N] binary logits/probabilities or [N, K] logits/probabilities.
      labels: [N] int labels.
      key: a `jax.random` key.
      statistic: "ece" (15-bin `ece`: p(y=1) for [N], top-label for [N, K]), "smooth_ece"
        (`smooth_ece` at its fixed-point bandwidth, re-found per resample) or "skce"
        (unbiased `kernel_calibration_error`, O(N^2) per resample).
      num_resamples: R >= 1 (static).
      from_logits: whether `scores` are logits or probabilities.
      num_bins: bins of the "ece" statistic (static).
      bandwidth: kernel bandwidth of the "skce" statistic (static).

    Returns:
      CalibrationTest(statistic, p_value), scalars.
    """
    _checks.check_option("statistic", statistic, STATISTICS)
    num_resamples = _checks.check_positive_int("num_resamples", num_resamples)
    num_bins = _checks.check_positive_int("num_bins", num_bins)
    if not float(bandwidth) > 0.0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    key = _checks.check_key("key", key)
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    width = 2 if scores.ndim == 1 else scores.shape[1]
    batch_size = max(1, min(num_resamples, (1 << 18) // (scores.shape[0] * width)))
    return _calibration_test(
        scores,
        labels,
        key,
        statistic,
        num_resamples,
        from_logits,
        num_bins,
        float(bandwidth),
        batch_size,
    )
