"""The measures of one split under one calibration, all derived from one set of bins."""

from __future__ import annotations

import dataclasses

import jax

from jaxcal import calibration


@dataclasses.dataclass(frozen=True)
class Measures:
    """Calibration measures of one split's scores under one calibration (or none).

    The binned measures are derived from `bins` with `calibration_error(bins, norm)`; a new
    measure is a new field here and one line in `measure`.

    Attributes:
      bins: the split's reliability bins.
      ece: expected calibration error (l1 over the bins).
      mce: maximum calibration error over non-empty bins.
      rmsce: root mean square calibration error.
      nll: mean negative log-likelihood.
      brier: Brier score.
    """

    bins: calibration.ReliabilityBins
    ece: float
    mce: float
    rmsce: float
    nll: float
    brier: float

    def to_json(self, suffix: str) -> dict[str, float]:
        """{"ece_<suffix>": ..., "mce_<suffix>": ..., ...} (bins left out)."""
        names = ("ece", "mce", "rmsce", "nll", "brier")
        return {f"{name}_{suffix}": getattr(self, name) for name in names}


def measure(
    scores: jax.Array,
    labels: jax.Array,
    *,
    num_bins: int,
    binary: str,
    from_logits: bool = True,
) -> Measures:
    """Bins `scores` once and derives every measure of `Measures` from them.

    Args:
      scores: [N] binary or [N, K] multiclass logits (probabilities with from_logits=False).
      labels: [N] int labels.
      num_bins: equal-width bins.
      binary: "positive" or "top_label" for [N] scores.
      from_logits: whether `scores` are logits.
    """
    bins = calibration.reliability_bins(
        scores, labels, num_bins=num_bins, binary=binary, from_logits=from_logits
    )
    return Measures(
        bins=bins,
        ece=float(calibration.calibration_error(bins, "l1")),
        mce=float(calibration.calibration_error(bins, "max")),
        rmsce=float(calibration.calibration_error(bins, "l2")),
        nll=float(calibration.nll(scores, labels, from_logits=from_logits)),
        brier=float(calibration.brier_score(scores, labels, from_logits=from_logits)),
    )
