"""The study's figures: reliability before/after, the logit-scale panel, the temperature sweep."""

from __future__ import annotations

import pathlib

import jax
import matplotlib.pyplot as plt
import numpy as np

from jaxcal import calibration, plotting
from jaxcal.study.beyond_bins import figure_path, smooth_reliability_figure
from jaxcal.study.calibrators import UNCALIBRATED
from jaxcal.study.report import save_figure_atomic
from jaxcal.study.results import CalibrationStudy

# Reliability curves drawn in the temperature overlay (of the whole sweep): more is unreadable.
OVERLAY_CURVES = 40


def save_study_figures(study: CalibrationStudy, out_dir: str | pathlib.Path) -> dict[str, str]:
    """Writes the study's figures as PNGs; returns {caption: file name}.

    Figures: reliability diagrams before/after temperature scaling, the a = 0.5 / optimal /
    1.5 panel, every swept temperature's reliability curve (T = 1 blue, fitted T red), and
    ECE/NLL/Brier versus temperature.
    """
    out_dir = pathlib.Path(out_dir)
    scaled = study.temperature
    fig = plotting.before_after_figure(
        study.test.raw.bins,
        scaled.test.bins,
        ece_before=study.test.raw.ece,
        ece_after=scaled.test.ece,
        temperature=scaled.temperature,
        binary=study.binary,
    )
    figures = {
        "Test-set reliability before and after temperature scaling": save_figure_atomic(
            fig, out_dir / "reliability_before_after.png"
        )
    }
    fig = plotting.scale_effect_figure(
        list(scaled.effect_bins),
        scaled.effect_scales,
        eces=[float(calibration.calibration_error(b)) for b in scaled.effect_bins],
        optimal_index=1,
        binary=study.binary,
    )
    figures["Effect of the logit scale a = 1/T (0.5, optimal, 1.5)"] = save_figure_atomic(
        fig, out_dir / "scale_effect.png"
    )
    fig = smooth_reliability_figure(
        study.test.raw.beyond,
        scaled.test.beyond,
        binary=study.binary,
        temperature=scaled.temperature,
    )
    figures["Test-set smooth reliability (95 % bootstrap band) before and after"] = (
        save_figure_atomic(fig, figure_path(out_dir))
    )
    figures.update(_sweep_figures(study, out_dir))
    if len(study.methods) > 1:
        figures.update(save_comparison_figure(study, out_dir))
    return figures


def _sweep_figures(study: CalibrationStudy, out_dir: pathlib.Path) -> dict[str, str]:
    """The overlay of the swept temperatures' reliability curves and metrics versus T."""
    scaled = study.temperature
    sweep = scaled.sweep
    num_swept = sweep.temperatures.shape[0]
    shown = np.unique(
        np.concatenate(
            [
                np.round(np.linspace(0, num_swept - 1, OVERLAY_CURVES)).astype(int),
                [scaled.initial_index, scaled.fitted_index],
            ]
        )
    )
    ax = plotting.temperature_overlay(
        None,
        jax.tree.map(lambda stat: stat[shown], sweep.bins),
        sweep.temperatures[shown],
        initial_index=int(np.searchsorted(shown, scaled.initial_index)),
        best_index=int(np.searchsorted(shown, scaled.fitted_index)),
        binary=study.binary,
        best_name="fitted",
    )
    caption = (
        f"Reliability curves of {len(shown)} of the {num_swept} temperatures swept "
        "(T = 1 blue, T fitted on validation red)"
    )
    figures = {caption: save_figure_atomic(ax.figure, out_dir / "temperature_overlay.png")}
    ax = plotting.metrics_vs_temperature(
        None,
        sweep.temperatures,
        sweep.ece,
        sweep.nll,
        sweep.brier,
        best_temperature=scaled.temperature,
        best_name="fitted on val",
    )
    figures["Test ECE, NLL and Brier score versus temperature"] = save_figure_atomic(
        ax.figure, out_dir / "metrics_vs_temperature.png"
    )
    return figures


def save_comparison_figure(study: CalibrationStudy, out_dir: str | pathlib.Path) -> dict[str, str]:
    """One figure, a test-set reliability diagram per method; returns {caption: file name}."""
    panels = [(UNCALIBRATED, study.test.raw)]
    panels += [(name, result.test) for name, result in study.methods.items()]
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False, layout="constrained"
    )
    for ax, (name, measures) in zip(axes.flat, panels, strict=False):
        plotting.reliability_diagram(
            ax, measures.bins, title=name, ece=measures.ece, binary=study.binary
        )
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    name = save_figure_atomic(figure, pathlib.Path(out_dir) / "calibrators.png")
    return {"Test-set reliability of every calibrator (fitted on validation)": name}
