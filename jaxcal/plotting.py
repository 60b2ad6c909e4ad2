"""Matplotlib figures for calibration and classification: each draws precomputed statistics."""

from __future__ import annotations

import operator
import pathlib
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter
from numpy.typing import ArrayLike

from jaxcal.calibration import calibration_error

BinaryMode = Literal["positive", "top_label"]

# Per-cell and per-bar numbers are written only up to this many classes; beyond, they overlap.
_MAX_ANNOTATED_CLASSES = 20


class ReliabilityAxes(NamedTuple):
    """The axes a reliability diagram was drawn on.

    Attributes:
      diagram: the accuracy-vs-confidence axes.
      histogram: the confidence-histogram axes, or None when none was drawn.
    """

    diagram: Axes
    histogram: Axes | None


class _Bins(NamedTuple):
    """Numpy copies of the fields of a ReliabilityBins that the figures draw."""

    edges: np.ndarray
    counts: np.ndarray
    confidence_sum: np.ndarray
    target_sum: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray


def _read_bins(bins: Any, name: str, stacked: bool = False) -> _Bins:
    """Reads a ReliabilityBins (one set of bins, or a leading [T] axis when stacked)."""
    fields = _Bins._fields
    if not all(hasattr(bins, field) for field in fields):
        raise TypeError(
            f"{name} must be a jaxcal.calibration.ReliabilityBins (with {', '.join(fields)}), "
            f"got {type(bins).__name__}"
        )
    edges, counts, confidence_sum, target_sum, confidence, accuracy = (
        np.asarray(getattr(bins, field), dtype=np.float64) for field in fields
    )
    ndim = 2 if stacked else 1
    if counts.ndim != ndim:
        shape = "[T, B] (a temperature sweep's bins)" if stacked else "[B] (one set of bins)"
        raise ValueError(f"{name}.counts must have shape {shape}, got shape {counts.shape}")
    for field, values in zip(
        fields[2:], (confidence_sum, target_sum, confidence, accuracy), strict=True
    ):
        if values.shape != counts.shape:
            raise ValueError(
                f"{name}.{field} must have the shape of {name}.counts {counts.shape}, "
                f"got {values.shape}"
            )
    if edges.shape[-1] != counts.shape[-1] + 1 or edges.ndim > ndim:
        raise ValueError(
            f"{name}.edges must have {counts.shape[-1] + 1} entries per row (B + 1), "
            f"got shape {edges.shape}"
        )
    if np.any(np.diff(edges, axis=-1) <= 0):
        raise ValueError(f"{name}.edges must be strictly increasing")
    if np.any(counts < 0):
        raise ValueError(f"{name}.counts must be non-negative")
    if np.any(counts.sum(axis=-1) == 0):
        raise ValueError(f"{name} holds no samples: every bin is empty")
    return _Bins(edges, counts, confidence_sum, target_sum, confidence, accuracy)


def _axis_labels(binary: str) -> tuple[str, str]:
    """(x label, y label) of a reliability diagram for the binary mode its bins were made with."""
    if binary == "positive":
        return "P(y = 1)", "fraction of positives"
    if binary == "top_label":
        return "confidence", "accuracy"
    raise ValueError(f"binary must be 'positive' or 'top_label', got {binary!r}")


def _ece_text(bins: Any, ece: float | None) -> str:
    value = calibration_error(bins) if ece is None else ece
    return f"ECE = {float(value):.4f}"


def reliability_diagram(
    ax: Axes | None,
    bins: Any,
    *,
    hist_ax: Axes | None = None,
    title: str | None = None,
    ece: float | None = None,
    binary: BinaryMode = "positive",
) -> ReliabilityAxes:
    """Draws a reliability diagram: accuracy per bin, its gap to the diagonal, and a histogram.

    The upper axes shows one bar per non-empty bin, spanning the bin and as tall as the bin's
    accuracy, and a hatched red bar from the accuracy to the bin's mean confidence (its height
    is |accuracy - confidence|, the bin's share of the ECE before weighting). The histogram axes
    shows the fraction of samples in each bin, with the mean confidence and the overall
    accuracy as vertical lines.

    Args:
      ax: axes for the diagram. None creates a figure with the diagram above a histogram
        (height ratio 3:1, shared x axis).
      bins: a ReliabilityBins (fields edges [B+1], counts [B]; properties mean_confidence [B]
        and accuracy [B]), e.g. from `jaxcal.calibration.reliability_bins`.
      hist_ax: axes for the confidence histogram; only with `ax` given. When `ax` is given and
        this is None, no histogram is drawn.
      title: first line of the title; the second line gives the ECE.
      ece: the ECE written in the title; None derives the L1 ECE from `bins` with
        `jaxcal.calibration.calibration_error`.
      binary: the `binary` mode the bins were made with: "positive" labels the x axis P(y = 1)
        and the y axis the fraction of positives; "top_label" (and any multiclass bins) labels
        them confidence and accuracy.

    Returns:
      ReliabilityAxes(diagram, histogram).
    """
    x_label, y_label = _axis_labels(binary)
    stats = _read_bins(bins, "bins")
    if ax is None and hist_ax is not None:
        raise ValueError("hist_ax needs ax: pass both axes, or neither to create a figure")
    heading = _ece_text(bins, ece)
    if title:
        heading = f"{title}\n{heading}"
    if ax is None:
        figure = plt.figure(figsize=(5, 6.5), layout="constrained")
        ax, hist_ax = _diagram_axes(figure, 1)[0]

    filled = stats.counts > 0
    lows, highs = stats.edges[:-1][filled], stats.edges[1:][filled]
    accuracy = stats.accuracy[filled]
    confidence = stats.mean_confidence[filled]
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    ax.bar(
        lows,
        accuracy,
        width=highs - lows,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        alpha=0.8,
        label="outputs",
    )
    ax.bar(
        lows,
        np.abs(confidence - accuracy),
        width=highs - lows,
        bottom=np.minimum(confidence, accuracy),
        align="edge",
        color="tab:red",
        edgecolor="tab:red",
        alpha=0.3,
        hatch="//",
        label="gap to mean confidence",
    )
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel=y_label, title=heading)
    ax.legend(loc="upper left")
    ax.grid(True, linestyle=":", alpha=0.6)
    if hist_ax is None:
        ax.set_xlabel(x_label)
        ax.set_aspect("equal", adjustable="box")
        return ReliabilityAxes(ax, None)

    total = stats.counts.sum()
    hist_ax.bar(
        stats.edges[:-1],
        stats.counts / total,
        width=np.diff(stats.edges),
        align="edge",
        color="0.6",
        edgecolor="black",
        label="samples",
    )
    mean_confidence = stats.confidence_sum.sum() / total
    mean_accuracy = stats.target_sum.sum() / total
    mean_names = ("mean confidence", "accuracy")
    if binary == "positive":
        mean_names = ("mean P(y = 1)", "fraction positive")
    lines = [
        hist_ax.axvline(mean_confidence, color="tab:red", linestyle="--", label=mean_names[0]),
        hist_ax.axvline(mean_accuracy, color="tab:blue", linestyle=":", label=mean_names[1]),
    ]
    hist_ax.set(xlim=(0, 1), xlabel=x_label, ylabel="fraction of samples")
    hist_ax.legend(handles=lines, loc="upper center", fontsize="small", framealpha=0.9)
    return ReliabilityAxes(ax, hist_ax)


def smooth_reliability_diagram(
    ax: Axes,
    curve: Any,
    *,
    title: str | None = None,
    color: str = "tab:red",
    label: str = "smoothed",
    binary: BinaryMode = "positive",
) -> Axes:
    """Draws a smoothed reliability curve with its bootstrap band and the prediction density.

    As in relplot's diagram: the diagonal, the 95 % band as a shaded area, the curve, and the
    density of the predictions as a grey area along the bottom (scaled to a fifth of the
    height; its shape, not its height, is what it shows). Computes nothing.

    Args:
      ax: the axes to draw on.
      curve: a SmoothReliability (grid, curve, lower, upper, density [G]; error, bandwidth),
        from `jaxcal.calibration.smooth_reliability`.
      title: first line of the title; the second gives the smooth ECE and the bandwidth.
      color: colour of the curve and its band.
      label: legend label of the curve.
      binary: "positive" or "top_label" axis labels, as in `reliability_diagram`.

    Returns:
      The axes.
    """
    fields = ("grid", "curve", "lower", "upper", "density", "error", "bandwidth")
    if not all(hasattr(curve, field) for field in fields):
        raise TypeError(
            "curve must be a jaxcal.calibration.SmoothReliability (with "
            f"{', '.join(fields)}), got {type(curve).__name__}"
        )
    grid, mean, lower, upper, density = (
        np.asarray(getattr(curve, field), np.float64) for field in fields[:5]
    )
    x_label, y_label = _axis_labels(binary)
    heading = f"smooth ECE = {float(curve.error):.4f} (bandwidth {float(curve.bandwidth):.3f})"
    if title:
        heading = f"{title}\n{heading}"
    ax.fill_between(
        grid,
        0.0,
        0.2 * density / max(density.max(), 1e-12),
        color="0.8",
        label="density of predictions",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    ax.fill_between(grid, lower, upper, color=color, alpha=0.25, label="95 % bootstrap band")
    ax.plot(grid, mean, color=color, linewidth=2, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=x_label, ylabel=y_label, title=heading)
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, linestyle=":", alpha=0.6)
    return ax


def _diagram_axes(figure: Figure, panels: int) -> list[tuple[Axes, Axes]]:
    """Adds `panels` columns of (diagram, histogram) axes to `figure`."""
    grid = figure.add_gridspec(2, panels, height_ratios=(3, 1))
    pairs = []
    for column in range(panels):
        diagram = figure.add_subplot(grid[0, column])
        histogram = figure.add_subplot(grid[1, column], sharex=diagram)
        diagram.tick_params(labelbottom=False)
        pairs.append((diagram, histogram))
    return pairs


def _unstack(bins: Any) -> list[Any]:
    """A sequence of ReliabilityBins, or one with a leading [T] axis, as a list of single bins."""
    if not hasattr(bins, "counts"):
        return list(bins)
    if np.ndim(bins.counts) != 2:
        raise ValueError(
            "bins_list must be a sequence of ReliabilityBins or one ReliabilityBins with a "
            f"leading [S] axis (counts [S, B]), got counts of shape {np.shape(bins.counts)}"
        )
    fields = [np.asarray(field) for field in bins]
    return [
        type(bins)(*(field[i] if field.ndim == 2 else field for field in fields))
        for i in range(np.shape(bins.counts)[0])
    ]


def _panels(
    figure: Figure | None,
    bins_list: list[Any],
    titles: list[str],
    eces: Sequence[float | None] | None,
    binary: BinaryMode,
) -> Figure:
    """Draws one reliability diagram with histogram per entry of bins_list, side by side."""
    if not bins_list:
        raise ValueError("bins_list must hold at least one ReliabilityBins")
    if eces is not None and len(eces) != len(bins_list):
        raise ValueError(f"eces must have one entry per panel ({len(bins_list)}), got {len(eces)}")
    _axis_labels(binary)
    for i, bins in enumerate(bins_list):
        _read_bins(bins, f"bins[{i}]")
    if figure is None:
        figure = plt.figure(figsize=(4.5 * len(bins_list), 6), layout="constrained")
    for i, (diagram, histogram) in enumerate(_diagram_axes(figure, len(bins_list))):
        reliability_diagram(
            diagram,
            bins_list[i],
            hist_ax=histogram,
            title=titles[i],
            ece=None if eces is None else eces[i],
            binary=binary,
        )
    return figure


def before_after_figure(
    bins_before: Any,
    bins_after: Any,
    *,
    ece_before: float | None = None,
    ece_after: float | None = None,
    temperature: float | None = None,
    binary: BinaryMode = "positive",
    figure: Figure | None = None,
) -> Figure:
    """Two reliability diagrams side by side: before and after temperature scaling.

    Args:
      bins_before: ReliabilityBins of the uncalibrated scores.
      bins_after: ReliabilityBins of the temperature-scaled scores.
      ece_before: ECE for the left title; None derives it from `bins_before`.
      ece_after: ECE for the right title; None derives it from `bins_after`.
      temperature: the fitted temperature T, written in the right title when given.
      binary: the `binary` mode both sets of bins were made with (see `reliability_diagram`).
      figure: figure to draw in; None creates one.

    Returns:
      The figure, with a diagram and a histogram axes per panel.
    """
    after = "after temperature scaling"
    if temperature is not None:
        after = f"{after} (T = {float(temperature):.3g})"
    bins_list = [bins_before, bins_after]
    titles = ["before calibration", after]
    return _panels(figure, bins_list, titles, [ece_before, ece_after], binary)


def scale_effect_figure(
    bins_list: Sequence[Any] | Any,
    scales: ArrayLike,
    *,
    eces: Sequence[float] | None = None,
    optimal_index: int | None = None,
    binary: BinaryMode = "positive",
    figure: Figure | None = None,
) -> Figure:
    """Reliability diagrams for several logit scales a = 1 / T (e.g. a = 0.5 / optimal / 1.5).

    Args:
      bins_list: one ReliabilityBins per scale, or one ReliabilityBins with a leading [S] axis.
      scales: [S] the logit scales a the bins were made with; panel i is titled "a = <a_i>".
      eces: [S] ECEs for the titles; None derives each from its bins.
      optimal_index: the panel whose scale was fitted; its title says "(optimal)".
      binary: the `binary` mode the bins were made with (see `reliability_diagram`).
      figure: figure to draw in; None creates one.

    Returns:
      The figure, with a diagram and a histogram axes per scale.
    """
    bins_list = _unstack(bins_list)
    scales = np.asarray(scales, dtype=np.float64)
    if scales.shape != (len(bins_list),):
        raise ValueError(
            f"scales must have shape [{len(bins_list)}] (one per bins), got {scales.shape}"
        )
    if optimal_index is not None:
        optimal_index = _panel_index(optimal_index, "optimal_index", len(bins_list))
    titles = [
        f"a = {scale:.4g}" + (" (optimal)" if i == optimal_index else "")
        for i, scale in enumerate(scales)
    ]
    return _panels(figure, bins_list, titles, eces, binary)


def _panel_index(index: Any, name: str, count: int) -> int:
    """An integer index (Python, numpy or 0-d jax) in [0, count) as a Python int."""
    try:
        value = operator.index(index)
    except TypeError:
        raise TypeError(f"{name} must be an integer index, got {index!r}") from None
    if not 0 <= value < count:
        raise ValueError(f"{name} must lie in [0, {count}), got {value}")
    return value


def temperature_overlay(
    ax: Axes | None,
    sweep_bins: Any,
    temperatures: ArrayLike,
    *,
    initial_index: int,
    best_index: int,
    binary: BinaryMode = "positive",
    best_name: str = "best",
) -> Axes:
    """Overlays the reliability curve of every temperature tried.

    Each curve joins (mean confidence, accuracy) over the non-empty bins of one temperature.
    The initial temperature is drawn blue, the best red, and the others thin and grey.

    Args:
      ax: axes to draw on; None creates a figure.
      sweep_bins: ReliabilityBins with a leading [T] axis (counts [T, B]), e.g. the `.bins` of
        `jaxcal.calibration.temperature_sweep`.
      temperatures: [T] the temperatures, for the legend.
      initial_index: index of the uncalibrated temperature (usually T = 1).
      best_index: index of the best temperature, e.g. the sweep's `.best_index`.
      binary: the `binary` mode the bins were made with (see `reliability_diagram`).
      best_name: the legend calls the red curve "<best_name> T = ..." (e.g. "fitted").

    Returns:
      The axes.
    """
    x_label, y_label = _axis_labels(binary)
    stats = _read_bins(sweep_bins, "sweep_bins", stacked=True)
    temperatures = np.asarray(temperatures, dtype=np.float64)
    count = stats.counts.shape[0]
    if temperatures.shape != (count,):
        raise ValueError(f"temperatures must have shape [{count}], got {temperatures.shape}")
    initial_index = _panel_index(initial_index, "initial_index", count)
    best_index = _panel_index(best_index, "best_index", count)
    if ax is None:
        ax = plt.figure(figsize=(6, 6), layout="constrained").add_subplot()

    curves = [
        np.column_stack([confidence[counts > 0], accuracy[counts > 0]])
        for confidence, accuracy, counts in zip(
            stats.mean_confidence, stats.accuracy, stats.counts, strict=True
        )
    ]
    ax.plot(
        [0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="perfectly calibrated"
    )
    others = [curve for i, curve in enumerate(curves) if i not in (initial_index, best_index)]
    ax.add_collection(
        LineCollection(others, colors="0.65", linewidths=0.7, alpha=0.7, label="other temperatures")
    )
    initial_label = f"initial T = {temperatures[initial_index]:.3g}"
    if initial_index == best_index:
        initial_label += " (best)"
    else:
        ax.plot(
            *curves[initial_index].T,
            color="tab:blue",
            marker="o",
            markersize=3,
            label=initial_label,
        )
    best = curves[best_index]
    best_label = (
        initial_label
        if initial_index == best_index
        else f"{best_name} T = {temperatures[best_index]:.3g}"
    )
    ax.plot(*best.T, color="tab:red", marker="o", markersize=3, linewidth=2, label=best_label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=x_label, ylabel=y_label)
    ax.set_title(f"reliability curves of {count} temperatures")
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper left")
    ax.grid(True, linestyle=":", alpha=0.6)
    return ax


def metrics_vs_temperature(
    ax: Axes | None,
    temperatures: ArrayLike,
    ece: ArrayLike,
    nll: ArrayLike,
    brier: ArrayLike,
    *,
    best_temperature: float | None = None,
    best_name: str = "best",
) -> Axes:
    """Plots ECE and Brier score (left axis) and NLL (right axis) against the temperature.

    Args:
      ax: axes to draw on; None creates a figure. The NLL goes on a twin axes of it.
      temperatures: [T] positive temperatures; the x axis is logarithmic.
      ece: [T] expected calibration error at each temperature.
      nll: [T] negative log-likelihood at each temperature.
      brier: [T] Brier score at each temperature.
      best_temperature: drawn as a vertical red line when given.
      best_name: the legend calls that line "<best_name> T = ..." (e.g. "fitted on val").

    Returns:
      The left axes (ECE and Brier); the NLL axes is `ax.figure.axes` after it.
    """
    temperatures = np.asarray(temperatures, dtype=np.float64)
    if temperatures.ndim != 1 or temperatures.size == 0:
        raise ValueError(f"temperatures must be a non-empty [T] array, got {temperatures.shape}")
    if np.any(temperatures <= 0):
        raise ValueError("temperatures must be positive")
    series = {"ece": ece, "nll": nll, "brier": brier}
    for name, values in series.items():
        series[name] = np.asarray(values, dtype=np.float64)
        if series[name].shape != temperatures.shape:
            raise ValueError(
                f"{name} must have the shape of temperatures {temperatures.shape}, "
                f"got {series[name].shape}"
            )
    if ax is None:
        ax = plt.figure(figsize=(7, 4.5), layout="constrained").add_subplot()
    nll_ax = ax.twinx()
    lines = [
        *ax.plot(temperatures, series["ece"], color="tab:red", label="ECE"),
        *ax.plot(temperatures, series["brier"], color="tab:green", label="Brier score"),
        *nll_ax.plot(temperatures, series["nll"], color="tab:blue", linestyle="--", label="NLL"),
    ]
    if best_temperature is not None:
        lines.append(
            ax.axvline(
                best_temperature,
                color="tab:red",
                linestyle=":",
                label=f"{best_name} T = {float(best_temperature):.3g}",
            )
        )
    ax.set_xscale("log")
    low, high = float(temperatures.min()), float(temperatures.max())
    powers = 2.0 ** np.arange(np.floor(np.log2(low)), np.ceil(np.log2(high)) + 1)
    ax.set_xticks(powers[(powers >= low) & (powers <= high)] if high > 2 * low else [low, high])
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="temperature T", ylabel="ECE, Brier score")
    nll_ax.set_ylabel("NLL")
    ax.legend(lines, [line.get_label() for line in lines], loc="best")
    ax.grid(True, linestyle=":", alpha=0.6)
    return ax


def loss_curves(
    ax: Axes | None,
    step_losses: ArrayLike,
    *,
    window: int = 60,
    val_epoch_losses: ArrayLike | None = None,
    steps_per_epoch: int | None = None,
) -> Axes:
    """Training loss per step, its running mean, and validation loss per epoch.

    Step i (1-based) of training is at x = i. The running mean over `window` steps is placed at
    the last step of its window; validation loss of epoch e (1-based) at x = e * steps_per_epoch.

    Args:
      ax: axes to draw on; None creates a figure.
      step_losses: [S] training loss at every step.
      window: running-mean window in steps; at most S // 2, so a short run still shows a curve.
      val_epoch_losses: [E] validation loss after each epoch, or None.
      steps_per_epoch: training steps per epoch; needed with `val_epoch_losses`.

    Returns:
      The axes.
    """
    losses = np.asarray(step_losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"step_losses must be a non-empty [S] array, got shape {losses.shape}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    if val_epoch_losses is not None:
        val = np.asarray(val_epoch_losses, dtype=np.float64)
        if val.ndim != 1:
            raise ValueError(f"val_epoch_losses must be a [E] array, got shape {val.shape}")
        if steps_per_epoch is None or steps_per_epoch < 1:
            raise ValueError(
                f"steps_per_epoch must be a positive int with val_epoch_losses, got "
                f"{steps_per_epoch!r}"
            )
    if ax is None:
        ax = plt.figure(figsize=(7, 4.5), layout="constrained").add_subplot()
    steps = np.arange(1, losses.size + 1)
    # A short run gets a window of half its length, so the running mean is still a curve.
    window = min(window, max(1, losses.size // 2))
    running = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train (per step)")
    ax.plot(steps[window - 1 :], running, color="tab:red", label=f"train (mean of {window} steps)")
    if val_epoch_losses is not None:
        epochs_x = np.arange(1, val.size + 1) * steps_per_epoch
        ax.plot(epochs_x, val, color="black", marker="o", linestyle="-", label="validation (epoch)")
    ax.set(xlabel="step", ylabel="loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right")
    ax.grid(True, linestyle=":", alpha=0.6)
    return ax


def image_grid(
    figure: Figure | None,
    images: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str],
    *,
    predictions: ArrayLike | None = None,
    probabilities: ArrayLike | None = None,
    ncols: int = 8,
) -> Figure:
    """A grid of images titled with their class, or with label / prediction.

    Args:
      figure: figure to draw in; None creates one.
      images: [N, H, W, C] with C = 1 (drawn in grey) or C = 3; uint8 in [0, 255] or float in
        [0, 1] (denormalise first).
      labels: [N] int true classes.
      class_names: name of each class, indexed by label.
      predictions: [N] int predicted classes; titles become "label / prediction", green when
        right and red when wrong.
      probabilities: [N] the model's probability of each predicted class, appended to titles;
        needs `predictions`.
      ncols: images per row.

    Returns:
      The figure, one axes per image.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            f"images must be [N, H, W, C] with N >= 1 and C in (1, 3), got {images.shape}"
        )
    if images.dtype == np.uint8:
        pixels = images
    elif np.issubdtype(images.dtype, np.floating):
        if images.min() < -1e-3 or images.max() > 1 + 1e-3:
            raise ValueError(
                f"float images must lie in [0, 1], got [{images.min():.3g}, {images.max():.3g}]; "
                "undo the normalisation first"
            )
        pixels = np.clip(images, 0.0, 1.0)
    else:
        raise TypeError(f"images must be uint8 or float, got dtype {images.dtype}")
    count = images.shape[0]
    labels = _indices(labels, "labels", count, len(class_names))
    if predictions is not None:
        predictions = _indices(predictions, "predictions", count, len(class_names))
    if probabilities is not None:
        if predictions is None:
            raise ValueError("probabilities needs predictions")
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (count,):
            raise ValueError(f"probabilities must have shape [{count}], got {probabilities.shape}")
    if isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")

    ncols = min(ncols, count)
    nrows = -(-count // ncols)
    if figure is None:
        figure = plt.figure(figsize=(1.6 * ncols, 1.9 * nrows), layout="constrained")
    for i in range(count):
        ax = figure.add_subplot(nrows, ncols, i + 1)
        if pixels.shape[-1] == 1:
            vmax = 255 if pixels.dtype == np.uint8 else 1.0
            ax.imshow(pixels[i, ..., 0], cmap="gray", vmin=0, vmax=vmax)
        else:
            ax.imshow(pixels[i])
        ax.axis("off")
        text, color = class_names[labels[i]], "black"
        if predictions is not None:
            text = f"{text} / {class_names[predictions[i]]}"
            color = "tab:green" if predictions[i] == labels[i] else "tab:red"
            if probabilities is not None:
                text = f"{text} ({probabilities[i]:.2f})"
        ax.set_title(text, color=color, fontsize="small")
    return figure


def _indices(values: ArrayLike, name: str, count: int, num_classes: int) -> np.ndarray:
    """Validates [count] class ids in [0, num_classes)."""
    values = np.asarray(values)
    if values.shape != (count,):
        raise ValueError(f"{name} must have shape [{count}], got {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class ids, got dtype {values.dtype}")
    if values.min() < 0 or values.max() >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) (one entry of class_names each), "
            f"got [{values.min()}, {values.max()}]"
        )
    return values


def confusion_matrix_plot(
    ax: Axes | None,
    matrix: ArrayLike,
    class_names: Sequence[str],
    *,
    normalize: bool = False,
) -> Axes:
    """Draws a confusion matrix as a heat map, rows true classes and columns predictions.

    Args:
      ax: axes to draw on; None creates a figure.
      matrix: [K, K] counts, entry [i, j] for true class i predicted as j (as from
        `jaxcal.metrics.confusion_matrix`).
      class_names: [K] names for the ticks.
      normalize: draw each row divided by its sum (per-class recall); an empty row stays 0.

    Returns:
      The axes. Cells are annotated with their values when K <= 20.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square [K, K], got shape {matrix.shape}")
    if len(class_names) != matrix.shape[0]:
        raise ValueError(
            f"class_names must have {matrix.shape[0]} entries (one per row), got {len(class_names)}"
        )
    if np.any(matrix < 0):
        raise ValueError("matrix must hold non-negative counts")
    if ax is None:
        size = 2 + 0.5 * matrix.shape[0]
        ax = plt.figure(figsize=(size + 1, size), layout="constrained").add_subplot()
    values = matrix.astype(np.float64)
    if normalize:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    image = ax.imshow(values, cmap="Blues", vmin=0)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(matrix.shape[0])
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    ax.set(xlabel="predicted", ylabel="true")
    if matrix.shape[0] <= _MAX_ANNOTATED_CLASSES:
        middle = values.max() / 2
        for (row, column), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalize else f"{matrix[row, column]:d}"
            color = "white" if value > middle else "black"
            ax.text(column, row, text, ha="center", va="center", color=color)
    return ax


def roc_plot(
    ax: Axes | None,
    fpr: ArrayLike,
    tpr: ArrayLike,
    auc: float,
    *,
    label: str | None = None,
) -> Axes:
    """Draws a ROC curve with its AUC in the legend, and the chance diagonal.

    Call again on the same axes to compare models.

    Args:
      ax: axes to draw on; None creates a figure.
      fpr: [M] false positive rates, as from `jaxcal.metrics.roc_curve`.
      tpr: [M] true positive rates.
      auc: the area under the curve, for the legend.
      label: name of the curve in the legend.

    Returns:
      The axes.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size < 2:
        raise ValueError(
            f"fpr and tpr must be [M] arrays of one length M >= 2, got {fpr.shape} and {tpr.shape}"
        )
    if ax is None:
        ax = plt.figure(figsize=(5, 5), layout="constrained").add_subplot()
    legend = f"AUC = {float(auc):.3f}" if label is None else f"{label} (AUC = {float(auc):.3f})"
    ax.plot(fpr, tpr, linewidth=2, label=legend)
    if not any(line.get_gid() == "chance" for line in ax.lines):
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="chance", gid="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="lower right")
    ax.grid(True, linestyle=":", alpha=0.6)
    return ax


def per_class_accuracy_plot(
    ax: Axes | None,
    accuracies: ArrayLike,
    class_names: Sequence[str],
    *,
    overall: float | None = None,
) -> Axes:
    """Draws one bar per class at its accuracy; the overall accuracy goes in the title.

    Args:
      ax: axes to draw on; None creates a figure.
      accuracies: [K] accuracy of each class in [0, 1], as from
        `jaxcal.metrics.per_class_accuracy`; NaN (a class without samples) draws no bar and
        is marked "n/a".
      class_names: [K] names for the ticks.
      overall: overall accuracy, drawn as a dashed horizontal line and given in the title.

    Returns:
      The axes. Bars are annotated with their values when K <= 20.
    """
    accuracies = np.asarray(accuracies, dtype=np.float64)
    if accuracies.ndim != 1 or accuracies.size == 0:
        raise ValueError(f"accuracies must be a non-empty [K] array, got {accuracies.shape}")
    if len(class_names) != accuracies.size:
        raise ValueError(
            f"class_names must have {accuracies.size} entries (one per class), "
            f"got {len(class_names)}"
        )
    if np.any((accuracies < 0) | (accuracies > 1)):
        raise ValueError("accuracies must lie in [0, 1] (or be NaN)")
    if ax is None:
        ax = plt.figure(figsize=(1 + 0.6 * accuracies.size, 4), layout="constrained").add_subplot()
    missing = np.isnan(accuracies)
    positions = np.arange(accuracies.size)
    bars = ax.bar(positions, np.where(missing, 0.0, accuracies), color="tab:blue", label="class")
    if overall is not None:
        ax.axhline(float(overall), color="tab:red", linestyle="--", label="overall")
        ax.set_title(f"overall accuracy {float(overall):.3f}")
    if accuracies.size <= _MAX_ANNOTATED_CLASSES:
        texts = ["n/a" if m else f"{a:.3f}" for a, m in zip(accuracies, missing, strict=True)]
        ax.bar_label(bars, labels=texts, fontsize="small")
    ax.set_xticks(positions, labels=class_names)
    ax.set(ylim=(0, 1.08), xlabel="class", ylabel="accuracy")
    return ax


def save_figure(figure: Figure, path: str | pathlib.Path, *, dpi: int = 150) -> pathlib.Path:
    """Writes a figure to `path` (format from its suffix), creating folders, then closes it.

    Args:
      figure: the figure to write.
      path: output file, e.g. "out/reliability.png".
      dpi: resolution for raster formats.

    Returns:
      The path written.
    """
    if not isinstance(figure, Figure):
        raise TypeError(f"figure must be a matplotlib Figure, got {type(figure).__name__}")
    path = pathlib.Path(path)
    if not path.suffix:
        raise ValueError(f"path must end in a format suffix such as .png or .pdf, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path
