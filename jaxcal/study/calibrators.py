"""The study's comparison of calibrators: each fitted on validation, judged on test, in a table."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax

from jaxcal import calibration
from jaxcal.study.beyond_bins import BeyondBins
from jaxcal.study.config import StudyConfig
from jaxcal.study.measures import Measures, measure
from jaxcal.study.results import TEMPERATURE, CalibrationStudy, MethodResult

UNCALIBRATED = "uncalibrated"
# Measures where higher is better; every other column is best at its minimum.
HIGHER_IS_BETTER = ("accuracy", "calibration_p_value")


@dataclasses.dataclass(frozen=True)
class CalibratorResult(MethodResult):
    """A `calibration.fit_calibrator` method fitted on validation, judged on both splits.

    Attributes:
      calibrator: the fitted calibrator (its `converged`, `nll_before`, `nll_after`).
      test_accuracy: accuracy of the calibrated test probabilities (histogram binning and
        one-vs-rest isotonic can change the top class; the scaling methods cannot).
    """

    calibrator: calibration.Calibrator
    test_accuracy: float


def study_methods(requested: Sequence[str] | None, multiclass: bool) -> tuple[str, ...]:
    """The calibrators the study fits: `requested` (checked) or all that apply to the logits.

    Temperature scaling is always among them, first: the study's other results build on it.
    """
    applicable = calibration.applicable_methods(2 if multiclass else 1)
    if requested is None:
        return applicable
    wrong = [m for m in requested if m not in applicable]
    if wrong:
        kind = "multiclass [N, K]" if multiclass else "binary [N]"
        raise ValueError(
            f"calibrators {wrong} do not apply to {kind} logits; use any of {list(applicable)}"
        )
    return (TEMPERATURE, *(m for m in dict.fromkeys(requested) if m != TEMPERATURE))


def fit_calibrators(
    val: tuple[jax.Array, jax.Array],
    test: tuple[jax.Array, jax.Array],
    methods: Sequence[str],
    config: StudyConfig,
    binary: str,
) -> dict[str, CalibratorResult]:
    """Fits every method of `methods` but temperature on `val` and measures it on both splits.

    Args:
      val: (logits [N] or [N, K], labels [N]) of the validation split (the fit set).
      test: (logits, labels) of the test split.
      methods: names from `calibration.CALIBRATORS` ("temperature" is skipped: the study
        fits it itself).
      config: the study's bins and bootstrap.
      binary: "positive" or "top_label" for the binned measures.
    """
    results = {}
    kw = {"num_bins": config.num_bins, "binary": binary, "from_logits": False}
    for method in methods:
        if method == TEMPERATURE:
            continue
        calibrator = calibration.fit_calibrator(method, *val)
        val_p = calibrator.probabilities(val[0])
        test_p = calibrator.probabilities(test[0])
        results[method] = CalibratorResult(
            val=measure(val_p, val[1], **kw),
            test=measure(test_p, test[1], beyond=True, **kw),
            test_ece_interval=calibration.ece_bootstrap(
                test_p,
                test[1],
                jax.random.key(config.seed),
                num_resamples=config.num_resamples,
                **kw,
            ),
            calibrator=calibrator,
            test_accuracy=float(calibration.accuracy(test_p, test[1], from_logits=False)),
        )
    return results


def _measure_names() -> list[str]:
    """The scalar fields of Measures and of its BeyondBins (every measure the study has)."""
    binned = [f.name for f in dataclasses.fields(Measures) if f.name not in ("bins", "beyond")]
    beyond = [f.name for f in dataclasses.fields(BeyondBins) if f.name != "curve"]
    return binned + beyond


def comparison_rows(study: CalibrationStudy) -> dict[str, dict[str, Any]]:
    """{method: test measures, accuracy, and the fit's convergence}, uncalibrated first."""
    rows = {UNCALIBRATED: _row(study.test.raw, study.test.accuracy, None)}
    for name, result in study.methods.items():
        if name == TEMPERATURE:
            rows[name] = _row(result.test, study.test.accuracy, bool(result.fit.converged))
        else:
            rows[name] = _row(result.test, result.test_accuracy, bool(result.calibrator.converged))
    return rows


def _row(test: Measures, accuracy: float, converged: bool | None) -> dict[str, Any]:
    return {
        **{
            name: float(getattr(test.beyond if hasattr(test.beyond, name) else test, name))
            for name in _measure_names()
        },
        "accuracy": float(accuracy),
        "converged": converged,
    }


def comparison_table(study: CalibrationStudy) -> str:
    """A markdown table of every calibrator's test measures; each column's best is bold."""
    rows = comparison_rows(study)
    columns = [*_measure_names(), "accuracy"]
    best = {}
    for column in columns:
        values = [row[column] for row in rows.values()]
        best[column] = max(values) if column in HIGHER_IS_BETTER else min(values)
    lines = [
        f"Every calibrator fitted on the validation set ({study.val.size} examples), measured "
        f"on the test set ({study.test.size}); **bold**: the best of each column.",
        "",
        "| method | " + " | ".join(columns) + " | converged |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for name, row in rows.items():
        cells = [f"**{row[c]:.4f}**" if row[c] == best[c] else f"{row[c]:.4f}" for c in columns]
        converged = "" if row["converged"] is None else ("yes" if row["converged"] else "no")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {converged} |")
    return "\n".join(lines)
