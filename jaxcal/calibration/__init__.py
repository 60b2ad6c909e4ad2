"""Calibration metrics, temperature scaling and other calibrators in pure JAX (jax/optax/numpy).

Scores are [N] (binary: one logit per sample, or p(y=1) with from_logits=False) or [N, K]
(multiclass logits or probabilities); labels are [N] ints. Every function works under
`jax.jit` and `jax.vmap`. Shape, rank, dtype and option errors raise at once (also under jit);
value checks (finite scores, probabilities in [0, 1], labels in range) run eagerly, on
concrete arrays only.
"""

from jaxcal.calibration.calibrators import (
    CALIBRATORS,
    Calibrator,
    applicable_methods,
    fit_calibrator,
)
from jaxcal.calibration.consistency import CalibrationTest, calibration_test
from jaxcal.calibration.kernel import kernel_calibration_error, mmce
from jaxcal.calibration.ks import ks_calibration_error
from jaxcal.calibration.metrics import (
    BootstrapInterval,
    ReliabilityBins,
    accuracy,
    brier_score,
    calibration_error,
    classwise_ece,
    ece,
    ece_bootstrap,
    nll,
    reliability_bins,
    top_label_ece,
)
from jaxcal.calibration.smooth import SmoothECE, SmoothReliability, smooth_ece, smooth_reliability
from jaxcal.calibration.temperature import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    TemperatureFit,
    TemperatureSweep,
    apply_temperature,
    fit_temperature,
    temperature_sweep,
)

__all__ = [
    "CALIBRATORS",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "BootstrapInterval",
    "CalibrationTest",
    "Calibrator",
    "ReliabilityBins",
    "SmoothECE",
    "SmoothReliability",
    "TemperatureFit",
    "TemperatureSweep",
    "accuracy",
    "applicable_methods",
    "apply_temperature",
    "brier_score",
    "calibration_error",
    "calibration_test",
    "classwise_ece",
    "ece",
    "ece_bootstrap",
    "fit_calibrator",
    "fit_temperature",
    "kernel_calibration_error",
    "ks_calibration_error",
    "mmce",
    "nll",
    "reliability_bins",
    "smooth_ece",
    "smooth_reliability",
    "temperature_sweep",
    "top_label_ece",
]
