"""How the calibration study bins, sweeps and resamples (StudyConfig)."""

from __future__ import annotations

import dataclasses

from jaxcal import calibration


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """How the calibration study bins, sweeps and resamples.

    Attributes:
      num_bins: equal-width bins for ECE/MCE and the diagrams (15, as Guo et al.).
      binary: for [N] binary logits, "positive" (p(y=1) vs frequency of y=1, the notebook's
        diagram) or "top_label"; [N, K] multiclass logits always use "top_label".
      num_temperatures: temperatures in the sweep (log-spaced over `temperature_range`, plus
        T = 1 and the fitted T).
      temperature_range: (lowest, highest) temperature of the sweep.
      num_resamples: bootstrap resamples for the 95 % ECE intervals.
      seed: seed of the bootstrap.
      calibrators: the `calibration.CALIBRATORS` methods fitted on validation and compared on
        test (temperature scaling always among them); None: every one that applies.
    """

    num_bins: int = 15
    binary: str = "positive"
    num_temperatures: int = 1000
    temperature_range: tuple[float, float] = (0.2, 5.0)
    num_resamples: int = 1000
    seed: int = 0
    calibrators: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("num_bins", "num_temperatures", "num_resamples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.binary not in ("positive", "top_label"):
            raise ValueError(f"binary must be 'positive' or 'top_label', got {self.binary!r}")
        if self.calibrators is not None and (
            not isinstance(self.calibrators, tuple)
            or not self.calibrators
            or any(m not in calibration.CALIBRATORS for m in self.calibrators)
        ):
            raise ValueError(
                f"calibrators must be a non-empty tuple of {list(calibration.CALIBRATORS)} or "
                f"None, got {self.calibrators!r}"
            )
        bounds = self.temperature_range
        if (
            not isinstance(bounds, tuple)
            or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
            or not 0 < bounds[0] < 1 < bounds[1] < float("inf")
        ):
            raise ValueError(
                f"temperature_range must be (lo, hi) with 0 < lo < 1 < hi < inf, got {bounds!r}"
            )
