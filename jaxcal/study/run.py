"""`run_study`: fit calibrations on the validation logits, judge them on the test logits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcal import calibration
from jaxcal.study.calibrators import fit_calibrators, study_methods
from jaxcal.study.config import StudyConfig
from jaxcal.study.measures import measure
from jaxcal.study.results import (
    TEMPERATURE,
    CalibrationStudy,
    MethodResult,
    SplitResult,
    TemperatureResult,
)

# The logit scales a = 1 / T of the original notebook's "effect of a" panel, around the optimum.
EFFECT_SCALES = (0.5, 1.5)


def run_study(
    val_logits: jax.typing.ArrayLike,
    val_labels: jax.typing.ArrayLike,
    test_logits: jax.typing.ArrayLike,
    test_labels: jax.typing.ArrayLike,
    config: StudyConfig | None = None,
) -> CalibrationStudy:
    """Fits a temperature on validation logits and compares test calibration before and after;
    fits the other calibrators of `config.calibrators` (default: all that apply) alike.

    Args:
      val_logits: [N] binary or [N, K] multiclass logits of the validation set (fit set).
      val_labels: [N] int labels.
      test_logits: [M] or [M, K] logits of the test set (same width as `val_logits`).
      test_labels: [M] int labels.
      config: bins, sweep and bootstrap settings; default `StudyConfig()`.

    Returns:
      A CalibrationStudy: both splits' uncalibrated measures and, per method (temperature
      scaling first, with its fit and test-set sweep), the calibrated measures.

    Raises:
      ValueError: mismatched widths or the input errors of `jaxcal.calibration`.
    """
    config = StudyConfig() if config is None else config
    val_logits, test_logits = jnp.asarray(val_logits), jnp.asarray(test_logits)
    if val_logits.shape[1:] != test_logits.shape[1:]:
        raise ValueError(
            "val_logits and test_logits must have the same class axis, got "
            f"{val_logits.shape} and {test_logits.shape}"
        )
    binary = config.binary if val_logits.ndim == 1 else "top_label"
    methods = study_methods(config.calibrators, multiclass=val_logits.ndim == 2)
    fit = calibration.fit_temperature(val_logits, val_labels)
    val = (val_logits, val_labels)
    test = (test_logits, test_labels)
    return CalibrationStudy(
        num_bins=config.num_bins,
        binary=binary,
        multiclass=val_logits.ndim == 2,
        val=_split_result(*val, config, binary, bootstrap=False),
        test=_split_result(*test, config, binary, bootstrap=True),
        methods={
            TEMPERATURE: _temperature_result(fit, val, test, config, binary),
            **fit_calibrators(val, test, methods, config, binary),
        },
    )


def _split_result(logits, labels, config: StudyConfig, binary: str, *, bootstrap: bool):
    """The uncalibrated measures of one split (with the ECE interval when `bootstrap`)."""
    return SplitResult(
        size=int(logits.shape[0]),
        accuracy=float(calibration.accuracy(logits, labels)),
        raw=measure(logits, labels, num_bins=config.num_bins, binary=binary, beyond=bootstrap),
        ece_interval=_ece_interval(logits, labels, config, binary) if bootstrap else None,
    )


def _ece_interval(scores, labels, config: StudyConfig, binary: str, *, from_logits=True):
    """95 % bootstrap interval of the ECE; every method resamples with the same key."""
    return calibration.ece_bootstrap(
        scores,
        labels,
        jax.random.key(config.seed),
        num_resamples=config.num_resamples,
        num_bins=config.num_bins,
        binary=binary,
        from_logits=from_logits,
    )


def _method_result(val, test, config: StudyConfig, binary: str) -> MethodResult:
    """Measures of calibrated (val, test) logits; the fields every method shares."""
    kw = {"num_bins": config.num_bins, "binary": binary}
    return MethodResult(
        val=measure(*val, **kw),
        test=measure(*test, beyond=True, **kw),
        test_ece_interval=_ece_interval(*test, config, binary),
    )


def _temperature_result(fit, val, test, config: StudyConfig, binary: str) -> TemperatureResult:
    """Temperature scaling at the fitted T: measures, the sweep over T and the effect panel."""
    temperature = float(fit.temperature)
    (val_logits, val_labels), (test_logits, test_labels) = val, test
    scaled = _method_result(
        (calibration.apply_temperature(val_logits, temperature), val_labels),
        (calibration.apply_temperature(test_logits, temperature), test_labels),
        config,
        binary,
    )
    lo, hi = config.temperature_range
    grid = np.geomspace(lo, hi, config.num_temperatures)
    temperatures = np.unique(np.concatenate([grid, [1.0, temperature]]))
    kw = {"num_bins": config.num_bins, "binary": binary}
    sweep = calibration.temperature_sweep(
        test_logits, test_labels, jnp.asarray(temperatures, jnp.float32), **kw
    )
    swept = np.asarray(sweep.temperatures)
    scales = (EFFECT_SCALES[0], 1.0 / temperature, EFFECT_SCALES[1])
    return TemperatureResult(
        **{f.name: getattr(scaled, f.name) for f in dataclasses.fields(MethodResult)},
        fit=fit,
        sweep=sweep,
        initial_index=int(np.argmin(np.abs(swept - 1.0))),
        fitted_index=int(np.argmin(np.abs(swept - np.float32(temperature)))),
        effect_scales=scales,
        effect_bins=tuple(
            calibration.reliability_bins(test_logits * scale, test_labels, **kw) for scale in scales
        ),
    )
