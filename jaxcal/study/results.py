"""What the calibration study measured, as frozen dataclasses, and their one JSON form."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxcal import calibration
from jaxcal.study.measures import Measures

TEMPERATURE = "temperature"


def _interval(interval: calibration.BootstrapInterval) -> list[float]:
    return [float(interval.lower), float(interval.upper)]


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """One split's uncalibrated scores.

    Attributes:
      size: number of examples.
      accuracy: fraction correct (does not change with any monotone calibration).
      raw: the measures of the uncalibrated logits.
      ece_interval: 95 % bootstrap interval of `raw.ece` (test split only, else None).
    """

    size: int
    accuracy: float
    raw: Measures
    ece_interval: calibration.BootstrapInterval | None = None


@dataclasses.dataclass(frozen=True)
class MethodResult:
    """A post-hoc calibration fitted on the validation split, judged on both splits.

    Attributes:
      val: measures of the calibrated validation scores (the fit set).
      test: measures of the calibrated test scores.
      test_ece_interval: 95 % bootstrap interval of `test.ece`.
    """

    val: Measures
    test: Measures
    test_ece_interval: calibration.BootstrapInterval


@dataclasses.dataclass(frozen=True)
class TemperatureResult(MethodResult):
    """Temperature scaling: the fit, and the sweep of the test set over temperatures.

    Attributes:
      fit: the temperature fitted on the validation logits.
      sweep: test-set measures for every temperature of the sweep.
      initial_index: index of T = 1 in the sweep.
      fitted_index: index of the fitted T in the sweep.
      effect_scales: the logit scales a of the effect panel (0.5, 1 / T, 1.5).
      effect_bins: test-set bins for each of `effect_scales`.
    """

    fit: calibration.TemperatureFit
    sweep: calibration.TemperatureSweep
    initial_index: int
    fitted_index: int
    effect_scales: tuple[float, float, float]
    effect_bins: tuple[calibration.ReliabilityBins, ...]

    @property
    def temperature(self) -> float:
        """The fitted T."""
        return float(self.fit.temperature)


@dataclasses.dataclass(frozen=True)
class CalibrationStudy:
    """Everything the study measured.

    Attributes:
      num_bins: equal-width bins of every binned measure.
      binary: the confidence used: "positive" or "top_label" for [N] logits, "top_label" for
        [N, K] multiclass logits.
      multiclass: whether the logits were [N, K].
      val: the validation split (the fit set), uncalibrated.
      test: the test split, uncalibrated.
      methods: every calibration fitted on validation, by name; temperature scaling first.
    """

    num_bins: int
    binary: str
    multiclass: bool
    val: SplitResult
    test: SplitResult
    methods: Mapping[str, MethodResult]

    @property
    def temperature(self) -> TemperatureResult:
        """The temperature-scaling result."""
        return self.methods[TEMPERATURE]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: what metrics.json holds of the study."""
        scaled = self.temperature
        return {
            "temperature": scaled.temperature,
            "scale": 1.0 / scaled.temperature,
            "converged": bool(scaled.fit.converged),
            "num_bins": self.num_bins,
            "binary": None if self.multiclass else self.binary,
            "val": {
                "size": self.val.size,
                "nll_before": float(scaled.fit.nll_before),
                "nll_after": float(scaled.fit.nll_after),
                "ece_before": self.val.raw.ece,
                "ece_after": scaled.val.ece,
            },
            "test": {
                "size": self.test.size,
                "accuracy": self.test.accuracy,
                **self.test.raw.to_json("before"),
                **scaled.test.to_json("after"),
                "ece_ci_before": _interval(self.test.ece_interval),
                "ece_ci_after": _interval(scaled.test_ece_interval),
            },
        }
