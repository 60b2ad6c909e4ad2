"""The study's measures beyond binned ECE: smooth ECE, KS, debiased L2, a calibration test."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import matplotlib.pyplot as plt

from jaxcal import calibration, plotting

# Resamples of the calibration test and of the smooth curve's band: enough for a p-value to
# 0.005 and a visible band, a fraction of a second on 2,000 examples.
NUM_RESAMPLES = 200
SEED = 0


@dataclasses.dataclass(frozen=True)
class BeyondBins:
    """Binning-free and debiased measures of one split's scores.

    Attributes:
      smooth_ece: smooth ECE (Blasiok & Nakkiran 2023) at its fixed-point bandwidth.
      ks: Kolmogorov-Smirnov calibration error (Gupta et al. 2021).
      rmsce_debiased: debiased RMS calibration error (Kumar et al. 2019).
      calibration_p_value: consistency-resampling p-value of "calibrated" (ECE statistic).
      curve: the smoothed reliability curve with its bootstrap band, for the figure.
    """

    smooth_ece: float
    ks: float
    rmsce_debiased: float
    calibration_p_value: float
    curve: calibration.SmoothReliability

    def to_json(self, suffix: str) -> dict[str, float]:
        """{"smooth_ece_<suffix>": ..., ...} (the curve left out)."""
        names = ("smooth_ece", "ks", "rmsce_debiased", "calibration_p_value")
        return {f"{name}_{suffix}": getattr(self, name) for name in names}


def measure_beyond_bins(
    scores: jax.Array, labels: jax.Array, *, num_bins: int, binary: str, from_logits: bool = True
) -> BeyondBins:
    """Every BeyondBins measure of `scores` (random draws from jax.random.key(SEED))."""
    key_test, key_curve = jax.random.split(jax.random.key(SEED))
    kw = {"from_logits": from_logits, "binary": binary}
    curve = calibration.smooth_reliability(
        scores, labels, key_curve, num_resamples=NUM_RESAMPLES, **kw
    )
    test = calibration.calibration_test(
        scores,
        labels,
        key_test,
        num_resamples=NUM_RESAMPLES,
        num_bins=num_bins,
        from_logits=from_logits,
    )
    debiased = calibration.ece(scores, labels, num_bins=num_bins, norm="l2", debiased=True, **kw)
    return BeyondBins(
        smooth_ece=float(curve.error),
        ks=float(calibration.ks_calibration_error(scores, labels, **kw)),
        rmsce_debiased=float(debiased),
        calibration_p_value=float(test.p_value),
        curve=curve,
    )


TABLE_ROWS = (
    ("smooth ECE", "smooth_ece"),
    ("KS calibration error", "ks"),
    ("debiased RMS calibration error", "rmsce_debiased"),
    ("calibration test p-value", "calibration_p_value"),
)


def table_rows(before: BeyondBins, after: BeyondBins) -> list[str]:
    """Markdown rows `| name | before | after |` of the report's test table."""
    return [
        f"| {label} | {getattr(before, name):.4f} | {getattr(after, name):.4f} |"
        for label, name in TABLE_ROWS
    ]


def smooth_reliability_figure(
    before: BeyondBins, after: BeyondBins, *, binary: str, temperature: float
) -> plt.Figure:
    """Side-by-side smooth reliability diagrams of the test set before and after calibration."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 5.2), layout="constrained")
    plotting.smooth_reliability_diagram(left, before.curve, title="before", binary=binary)
    plotting.smooth_reliability_diagram(
        right,
        after.curve,
        title=f"after (T = {temperature:.3f})",
        binary=binary,
        color="tab:green",
    )
    return figure


def figure_path(out_dir: str | pathlib.Path) -> pathlib.Path:
    """Where the study writes the smooth reliability figure."""
    return pathlib.Path(out_dir) / "smooth_reliability_before_after.png"
