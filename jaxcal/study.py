"""The calibration study every experiment ends with: fit T on validation, judge it on test."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcal import calibration, plotting

# The logit scales a = 1 / T of the original notebook's "effect of a" panel, around the optimum.
EFFECT_SCALES = (0.5, 1.5)
# Reliability curves drawn in the temperature overlay (of the whole sweep): more is unreadable.
OVERLAY_CURVES = 40


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """How the calibration study bins, sweeps and resamples.

    Attributes:
      num_bins: equal-width bins for ECE/MCE and the diagrams (15, as Guo et al.).
      binary: for [N] binary logits, "positive" (p(y=1) vs frequency of y=1, the notebook's
        diagram) or "top_label"; ignored for [N, K] logits.
      num_temperatures: temperatures in the sweep (log-spaced over `temperature_range`, plus
        T = 1 and the fitted T).
      temperature_range: (lowest, highest) temperature of the sweep.
      num_resamples: bootstrap resamples for the 95 % ECE intervals.
      seed: seed of the bootstrap.
    """

    num_bins: int = 15
    binary: str = "positive"
    num_temperatures: int = 1000
    temperature_range: tuple[float, float] = (0.2, 5.0)
    num_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_bins", "num_temperatures", "num_resamples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.binary not in ("positive", "top_label"):
            raise ValueError(f"binary must be 'positive' or 'top_label', got {self.binary!r}")
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


@dataclasses.dataclass(frozen=True)
class CalibrationStudy:
    """Everything the study measured; `metrics` is what goes into metrics.json.

    Attributes:
      metrics: {"temperature", "scale", "converged", "val": {...}, "test": {...}} of floats.
      fit: the temperature fitted on the validation logits.
      bins_before: test-set reliability bins of the raw logits.
      bins_after: test-set reliability bins of logits / T.
      sweep: test-set metrics for every temperature of the sweep.
      initial_index: index of T = 1 in the sweep.
      fitted_index: index of the fitted T in the sweep.
      effect_scales: the logit scales a of the effect panel (0.5, 1 / T, 1.5).
      effect_bins: test-set bins for each of `effect_scales`.
      binary: the binary mode used for [N] logits (None for multiclass).
    """

    metrics: dict[str, Any]
    fit: calibration.TemperatureFit
    bins_before: calibration.ReliabilityBins
    bins_after: calibration.ReliabilityBins
    sweep: calibration.TemperatureSweep
    initial_index: int
    fitted_index: int
    effect_scales: tuple[float, float, float]
    effect_bins: list[calibration.ReliabilityBins]
    binary: str | None


def _scores_metrics(logits: jax.Array, labels: jax.Array, config: StudyConfig, binary: str):
    kw = {"num_bins": config.num_bins, "binary": binary}
    return {
        "ece": float(calibration.ece(logits, labels, **kw)),
        "mce": float(calibration.ece(logits, labels, norm="max", **kw)),
        "rmsce": float(calibration.ece(logits, labels, norm="l2", **kw)),
        "nll": float(calibration.nll(logits, labels)),
        "brier": float(calibration.brier_score(logits, labels)),
    }


def run_study(
    val_logits: jax.typing.ArrayLike,
    val_labels: jax.typing.ArrayLike,
    test_logits: jax.typing.ArrayLike,
    test_labels: jax.typing.ArrayLike,
    config: StudyConfig = StudyConfig(),
) -> CalibrationStudy:
    """Fits a temperature on validation logits and compares test calibration before and after.

    Args:
      val_logits: [N] binary or [N, K] multiclass logits of the validation set (fit set).
      val_labels: [N] int labels.
      test_logits: [M] or [M, K] logits of the test set (same width as `val_logits`).
      test_labels: [M] int labels.
      config: bins, sweep and bootstrap settings.

    Returns:
      A CalibrationStudy; its `metrics` holds temperature, val {nll, ece before/after} and test
      {accuracy, ece/mce/rmsce/nll/brier before/after, 95 % bootstrap ECE intervals}.

    Raises:
      ValueError: mismatched widths or the input errors of `jaxcal.calibration`.
    """
    val_logits, test_logits = jnp.asarray(val_logits), jnp.asarray(test_logits)
    if val_logits.shape[1:] != test_logits.shape[1:]:
        raise ValueError(
            "val_logits and test_logits must have the same class axis, got "
            f"{val_logits.shape} and {test_logits.shape}"
        )
    lo, hi = config.temperature_range
    binary = config.binary if val_logits.ndim == 1 else "top_label"
    fit = calibration.fit_temperature(val_logits, val_labels)
    temperature = float(fit.temperature)
    calibrated_test = calibration.apply_temperature(test_logits, temperature)

    bins_kw = {"num_bins": config.num_bins, "binary": binary}
    key = jax.random.key(config.seed)
    before = _scores_metrics(test_logits, test_labels, config, binary)
    after = _scores_metrics(calibrated_test, test_labels, config, binary)
    ci_before = calibration.ece_bootstrap(
        test_logits, test_labels, key, num_resamples=config.num_resamples, **bins_kw
    )
    ci_after = calibration.ece_bootstrap(
        calibrated_test, test_labels, key, num_resamples=config.num_resamples, **bins_kw
    )
    calibrated_val = calibration.apply_temperature(val_logits, temperature)
    metrics = {
        "temperature": temperature,
        "scale": 1.0 / temperature,
        "converged": bool(fit.converged),
        "num_bins": config.num_bins,
        "binary": binary if val_logits.ndim == 1 else None,
        "val": {
            "size": int(val_logits.shape[0]),
            "nll_before": float(fit.nll_before),
            "nll_after": float(fit.nll_after),
            "ece_before": float(calibration.ece(val_logits, val_labels, **bins_kw)),
            "ece_after": float(calibration.ece(calibrated_val, val_labels, **bins_kw)),
        },
        "test": {
            "size": int(test_logits.shape[0]),
            "accuracy": float(calibration.accuracy(test_logits, test_labels)),
            **{f"{name}_before": value for name, value in before.items()},
            **{f"{name}_after": value for name, value in after.items()},
            "ece_ci_before": [float(ci_before.lower), float(ci_before.upper)],
            "ece_ci_after": [float(ci_after.lower), float(ci_after.upper)],
        },
    }

    grid = np.geomspace(lo, hi, config.num_temperatures)
    temperatures = np.unique(np.concatenate([grid, [1.0, temperature]]))
    sweep = calibration.temperature_sweep(
        test_logits, test_labels, jnp.asarray(temperatures, jnp.float32), **bins_kw
    )
    swept = np.asarray(sweep.temperatures)
    scales = (EFFECT_SCALES[0], 1.0 / temperature, EFFECT_SCALES[1])
    effect_bins = [
        calibration.reliability_bins(test_logits * scale, test_labels, **bins_kw)
        for scale in scales
    ]
    return CalibrationStudy(
        metrics=metrics,
        fit=fit,
        bins_before=calibration.reliability_bins(test_logits, test_labels, **bins_kw),
        bins_after=calibration.reliability_bins(calibrated_test, test_labels, **bins_kw),
        sweep=sweep,
        initial_index=int(np.argmin(np.abs(swept - 1.0))),
        fitted_index=int(np.argmin(np.abs(swept - np.float32(temperature)))),
        effect_scales=scales,
        effect_bins=effect_bins,
        binary=binary,
    )


def save_study_figures(study: CalibrationStudy, out_dir: str | pathlib.Path) -> dict[str, str]:
    """Writes the study's figures as PNGs; returns {caption: file name}.

    Figures: reliability diagrams before/after temperature scaling, the a = 0.5 / optimal /
    1.5 panel, every swept temperature's reliability curve (T = 1 blue, fitted T red), and
    ECE/NLL/Brier versus temperature.
    """
    out_dir = pathlib.Path(out_dir)
    m = study.metrics
    figures = {}

    fig = plotting.before_after_figure(
        study.bins_before,
        study.bins_after,
        ece_before=m["test"]["ece_before"],
        ece_after=m["test"]["ece_after"],
        temperature=m["temperature"],
        binary=study.binary,
    )
    figures["Test-set reliability before and after temperature scaling"] = _save(
        fig, out_dir, "reliability_before_after.png"
    )
    effect_eces = [float(calibration.calibration_error(b)) for b in study.effect_bins]
    fig = plotting.scale_effect_figure(
        study.effect_bins,
        study.effect_scales,
        eces=effect_eces,
        optimal_index=1,
        binary=study.binary,
    )
    figures["Effect of the logit scale a = 1/T (0.5, optimal, 1.5)"] = _save(
        fig, out_dir, "scale_effect.png"
    )
    num_swept = study.sweep.temperatures.shape[0]
    shown = np.unique(
        np.concatenate(
            [
                np.round(np.linspace(0, num_swept - 1, OVERLAY_CURVES)).astype(int),
                [study.initial_index, study.fitted_index],
            ]
        )
    )
    ax = plotting.temperature_overlay(
        None,
        jax.tree.map(lambda stat: stat[shown], study.sweep.bins),
        study.sweep.temperatures[shown],
        initial_index=int(np.searchsorted(shown, study.initial_index)),
        best_index=int(np.searchsorted(shown, study.fitted_index)),
        binary=study.binary,
        best_name="fitted",
    )
    caption = (
        f"Reliability curves of {len(shown)} of the {num_swept} temperatures swept "
        "(T = 1 blue, T fitted on validation red)"
    )
    figures[caption] = _save(ax.figure, out_dir, "temperature_overlay.png")
    ax = plotting.metrics_vs_temperature(
        None,
        study.sweep.temperatures,
        study.sweep.ece,
        study.sweep.nll,
        study.sweep.brier,
        best_temperature=m["temperature"],
        best_name="fitted on val",
    )
    figures["Test ECE, NLL and Brier score versus temperature"] = _save(
        ax.figure, out_dir, "metrics_vs_temperature.png"
    )
    return figures


def _save(figure: Any, out_dir: pathlib.Path, name: str) -> str:
    plotting.save_figure(figure, out_dir / name)
    return name


def calibration_table(metrics: Mapping[str, Any]) -> str:
    """A markdown table of the test metrics before and after temperature scaling."""
    test = metrics["test"]
    rows = [
        ("ECE", "ece"),
        ("MCE", "mce"),
        ("RMS calibration error", "rmsce"),
        ("NLL", "nll"),
        ("Brier score", "brier"),
    ]
    lines = [
        f"Temperature fitted on the validation set: T = {metrics['temperature']:.4f} "
        f"(a = 1/T = {metrics['scale']:.4f}, converged: {metrics['converged']}); "
        f"validation NLL {metrics['val']['nll_before']:.4f} -> {metrics['val']['nll_after']:.4f}.",
        "",
    ]
    if not metrics["converged"]:
        lines += [
            "**The fit did not converge:** T sits at a bound of its search range (the "
            "validation NLL keeps falling beyond it: separable or uninformative validation "
            "logits, or too few of them) or L-BFGS ran out of iterations, so this T is not a "
            "reliable calibration.",
            "",
        ]
    lines += [
        f"| test metric ({test['size']} images) | before | after |",
        "|---|---|---|",
    ]
    lines += [
        f"| {label} | {test[key + '_before']:.4f} | {test[key + '_after']:.4f} |"
        for label, key in rows
    ]
    lo_b, hi_b = test["ece_ci_before"]
    lo_a, hi_a = test["ece_ci_after"]
    lines.append(
        f"| ECE 95 % bootstrap interval | [{lo_b:.4f}, {hi_b:.4f}] | [{lo_a:.4f}, {hi_a:.4f}] |"
    )
    lines.append(f"| accuracy | {test['accuracy']:.4f} | {test['accuracy']:.4f} |")
    return "\n".join(lines)


def write_outputs(
    out_dir: str | pathlib.Path,
    *,
    title: str,
    setup: Mapping[str, Any],
    metrics: Mapping[str, Any],
    sections: Sequence[tuple[str, str]],
    figures: Mapping[str, str],
) -> pathlib.Path:
    """Writes metrics.json and report.md (setup, result sections, figures inline).

    Args:
      out_dir: output folder (created).
      title: the report's heading.
      setup: the run's settings, shown as a table (and stored in metrics.json as "setup").
      metrics: JSON-serialisable results.
      sections: (heading, markdown body) pairs, e.g. ("Calibration", calibration_table(...)).
      figures: {caption: PNG file name inside out_dir}.

    Returns:
      The path of report.md.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(
        json.dumps({**metrics, "setup": dict(setup)}, indent=2, default=_json_default) + "\n"
    )
    lines = [f"# {title}", "", "## Setup", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in setup.items()]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    lines += ["", "## Figures"]
    for caption, name in figures.items():
        lines += ["", f"**{caption}**", "", f"![{caption}]({name})"]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
