"""Kolmogorov-Smirnov calibration error (Gupta et al. 2021): binning-free, one sort."""

from functools import partial

import jax
import jax.numpy as jnp

from jaxcal.calibration import _checks
from jaxcal.calibration.metrics import BINARY_MODES, _confidence_and_target


def _ks_statistic(confidence: jax.Array, target: jax.Array) -> jax.Array:
    """max over sorted confidences of |cumulative sum of (confidence - target)| / N."""
    order = jnp.argsort(confidence)
    sorted_confidence = confidence[order]
    cumulative = jnp.cumsum(sorted_confidence - target[order]) / confidence.shape[0]
    # Only where a run of equal confidences ends: the order within ties must not matter.
    run_end = jnp.append(sorted_confidence[1:] != sorted_confidence[:-1], True)
    return jnp.max(jnp.where(run_end, jnp.abs(cumulative), 0.0))


@partial(jax.jit, static_argnames=("from_logits", "binary"))
def _ks_calibration_error(scores, labels, from_logits, binary):
    confidence, target = _confidence_and_target(
        scores, labels, from_logits=from_logits, binary=binary
    )
    return _ks_statistic(confidence, target)


def ks_calibration_error(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    from_logits: bool = True,
    binary: str = "positive",
) -> jax.Array:
    """KS calibration error of Gupta et al. 2021, without bins.

    Sorts the samples by confidence c and returns max_i |sum_{j <= i} (c_j - t_j)| / N, the
    largest gap between the cumulative confidence and cumulative target curves (taken where
    a run of tied confidences ends, so ties in any order give the same value).

    Args:
      scores: [N] or [N, K] scores, as in `ece` ([N, K]: top-label confidence and correctness).
      labels: [N] int labels.
      from_logits: whether `scores` are logits or probabilities.
      binary: for [N] scores, "positive" (p(y=1) against y) or "top_label".

    Returns:
      Scalar KS calibration error in [0, 1].
    """
    _checks.check_option("binary", binary, BINARY_MODES)
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    return _ks_calibration_error(scores, labels, from_logits, binary)
