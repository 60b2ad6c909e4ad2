"""Tests for jaxcal.plotting: render with Agg and check that what was drawn equals the inputs."""

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.collections import LineCollection

from jaxcal import plotting
from jaxcal.calibration import (
    ReliabilityBins,
    calibration_error,
    reliability_bins,
    temperature_sweep,
)

matplotlib.use("Agg")

# Expected values are computed in float64 from the same float32 bins that are drawn, so drawn
# and expected coordinates agree to float64 rounding.
TOL = 1e-12
# reliability_bins sums float32 confidences: its ECE differs from a float64 sum by ~1e-7.
ECE_TOL = 1e-5


def make_bins(confidence, targets, num_bins=10):
    """Reliability bins [lo, hi) (last bin closed) of P(y = 1) [N] and 0/1 labels [N]."""
    return reliability_bins(
        np.asarray(confidence, np.float32),
        np.asarray(targets, np.int32),
        num_bins=num_bins,
        from_logits=False,
    )


def as64(x):
    return np.asarray(x, dtype=np.float64)


def reference_ece(bins):
    """L1 ECE in float64: sum over bins of |confidence sum - target sum| / N."""
    gaps = np.abs(as64(bins.confidence_sum) - as64(bins.target_sum))
    return np.sum(gaps) / np.sum(as64(bins.counts))


def ece_text(bins):
    """The title line reliability_diagram derives, checked against the float64 reference."""
    ece = float(calibration_error(bins))
    assert ece == pytest.approx(reference_ece(bins), abs=ECE_TOL)
    return f"ECE = {ece:.4f}"


def overconfident(n=2000, scale=3.0, seed=0):
    """Binary logits whose sigmoid is overconfident by `scale`, and labels drawn from truth."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0.0, 1.5, size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_logits))).astype(np.int32)
    return true_logits * scale, labels


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def stacked(bins_list):
    """One ReliabilityBins with a leading [T] axis."""
    return jax.tree.map(lambda *fields: jnp.stack(fields), *bins_list)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bars(ax, label):
    """The rectangles of the bar container with the given label."""
    (container,) = [c for c in ax.containers if c.get_label() == label]
    return container.patches


def rendered_png(figure, path):
    """Saves the figure and returns its pixels, checking the image is not blank."""
    plotting.save_figure(figure, path)
    pixels = plt.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert np.ptp(pixels[..., :3]) > 0.5
    return pixels


def check_diagram(axes, bins):
    """Accuracy bars, gap bars and histogram bars equal the statistics of `bins`."""
    counts, edges = as64(bins.counts), as64(bins.edges)
    filled = counts > 0
    accuracy = as64(bins.accuracy)[filled]
    confidence = as64(bins.mean_confidence)[filled]
    outputs = bars(axes.diagram, "outputs")
    assert len(outputs) == filled.sum()
    np.testing.assert_allclose([p.get_height() for p in outputs], accuracy, atol=TOL)
    np.testing.assert_allclose([p.get_x() for p in outputs], edges[:-1][filled], atol=TOL)
    np.testing.assert_allclose([p.get_width() for p in outputs], np.diff(edges)[filled], atol=TOL)
    gaps = bars(axes.diagram, "gap to mean confidence")
    np.testing.assert_allclose(
        [p.get_height() for p in gaps], np.abs(accuracy - confidence), atol=TOL
    )
    np.testing.assert_allclose(
        [p.get_y() for p in gaps], np.minimum(accuracy, confidence), atol=TOL
    )
    if axes.histogram is not None:
        heights = [p.get_height() for p in bars(axes.histogram, "samples")]
        np.testing.assert_allclose(heights, counts / counts.sum(), atol=TOL)


def test_reliability_diagram_positive_mode(tmp_path):
    logits, labels = overconfident()
    bins = make_bins(sigmoid(logits), labels, num_bins=15)
    axes = plotting.reliability_diagram(None, bins, title="LeNet-5")
    check_diagram(axes, bins)
    assert reference_ece(bins) > 0.05  # overconfident by 3x: the diagram has visible gaps
    assert axes.diagram.get_title() == f"LeNet-5\n{ece_text(bins)}"
    assert axes.histogram.get_xlabel() == "P(y = 1)"
    assert axes.diagram.get_ylabel() == "fraction of positives"
    # The vertical lines mark the mean P(y = 1) and the fraction of positives.
    mean_line, rate_line = axes.histogram.get_lines()
    # float32 sums of 2,000 confidences: 1e-5.
    assert mean_line.get_xdata()[0] == pytest.approx(sigmoid(logits).mean(), abs=1e-5)
    assert rate_line.get_xdata()[0] == pytest.approx(labels.mean(), abs=1e-9)
    rendered_png(axes.diagram.figure, tmp_path / "diagram.png")


def test_reliability_diagram_top_label_mode_on_given_axes(tmp_path):
    logits, labels = overconfident(seed=1)
    bins = reliability_bins(logits, labels, num_bins=10, binary="top_label")
    assert np.sum(bins.counts[:5]) == 0  # top-label confidence is at least 0.5
    figure, ax = plt.subplots()
    axes = plotting.reliability_diagram(ax, bins, ece=0.123456, binary="top_label")
    assert axes.diagram is ax and axes.histogram is None
    assert figure.axes == [ax]
    check_diagram(axes, bins)
    assert len(bars(ax, "outputs")) == np.count_nonzero(bins.counts)
    assert ax.get_title() == "ECE = 0.1235"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("confidence", "accuracy")
    rendered_png(figure, tmp_path / "top_label.png")


@st.composite
def bin_statistics(draw):
    """ReliabilityBins with arbitrary counts, sums consistent with them, and any bin count."""
    num_bins = draw(st.integers(1, 20))
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    counts = np.array(draw(st.lists(st.integers(0, 50), min_size=num_bins, max_size=num_bins)))
    counts[draw(st.integers(0, num_bins - 1))] += 1
    position = np.array(draw(st.lists(st.floats(0, 1), min_size=num_bins, max_size=num_bins)))
    hits = np.array(draw(st.lists(st.floats(0, 1), min_size=num_bins, max_size=num_bins)))
    mean_confidence = edges[:-1] + position * np.diff(edges)
    return ReliabilityBins(
        jnp.asarray(edges, jnp.float32),
        jnp.asarray(counts, jnp.int32),
        jnp.asarray(mean_confidence * counts, jnp.float32),
        jnp.asarray(np.round(hits * counts), jnp.float32),
    )


@settings(max_examples=20, deadline=None)
@given(bin_statistics())
def test_reliability_bars_equal_bin_statistics(bins):
    figure = plt.figure()
    diagram, histogram = figure.subplots(2)
    axes = plotting.reliability_diagram(diagram, bins, hist_ax=histogram, ece=0.5)
    check_diagram(axes, bins)
    plt.close(figure)


def test_before_after_figure(tmp_path):
    logits, labels = overconfident()
    before = make_bins(sigmoid(logits), labels)
    after = make_bins(sigmoid(logits / 3.0), labels)
    figure = plotting.before_after_figure(before, after, temperature=3.0, ece_before=0.25)
    left, left_hist, right, right_hist = figure.axes
    assert left.get_title() == "before calibration\nECE = 0.2500"
    assert right.get_title() == (f"after temperature scaling (T = 3)\n{ece_text(after)}")
    assert reference_ece(after) < reference_ece(before) / 3
    check_diagram(plotting.ReliabilityAxes(left, left_hist), before)
    check_diagram(plotting.ReliabilityAxes(right, right_hist), after)
    rendered_png(figure, tmp_path / "before_after.png")


def test_scale_effect_figure_titles_and_stacked_input(tmp_path):
    logits, labels = overconfident()
    scales = [0.5, 1 / 3.0852, 1.5]
    bins_list = [make_bins(sigmoid(a * logits), labels) for a in scales]
    figure = plotting.scale_effect_figure(bins_list, scales, optimal_index=1)
    diagrams = figure.axes[::2]
    titles = [ax.get_title().split("\n") for ax in diagrams]
    assert [t[0] for t in titles] == ["a = 0.5", "a = 0.3241 (optimal)", "a = 1.5"]
    assert [t[1] for t in titles] == [ece_text(b) for b in bins_list]
    for ax, hist, bins in zip(diagrams, figure.axes[1::2], bins_list, strict=True):
        check_diagram(plotting.ReliabilityAxes(ax, hist), bins)
    rendered_png(figure, tmp_path / "scales.png")

    again = plotting.scale_effect_figure(stacked(bins_list), scales, eces=[0.1, 0.2, 0.3])
    assert [ax.get_title() for ax in again.axes[::2]] == [
        "a = 0.5\nECE = 0.1000",
        "a = 0.3241\nECE = 0.2000",
        "a = 1.5\nECE = 0.3000",
    ]
    for ax, hist, bins in zip(again.axes[::2], again.axes[1::2], bins_list, strict=True):
        check_diagram(plotting.ReliabilityAxes(ax, hist), bins)


@pytest.fixture(scope="module")
def sweep():
    """A sweep of 12 temperatures 0.5, 1, ..., 6 over 3x-overconfident logits."""
    logits, labels = overconfident()
    return temperature_sweep(logits, labels, jnp.linspace(0.5, 6.0, 12), num_bins=10)


def curve(bins, index):
    filled = as64(bins.counts[index]) > 0
    confidence, accuracy = as64(bins.mean_confidence[index]), as64(bins.accuracy[index])
    return np.column_stack([confidence[filled], accuracy[filled]])


def test_temperature_overlay(sweep, tmp_path):
    result, bins = sweep, sweep.bins
    assert int(result.best_index) == 5  # logits are 3x overconfident: T = 3 fits best
    ax = plotting.temperature_overlay(
        None, bins, result.temperatures, initial_index=1, best_index=result.best_index
    )
    (collection,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    rest = [i for i in range(12) if i not in (1, 5)]
    segments = collection.get_segments()
    assert len(segments) + 2 == 12
    for segment, index in zip(segments, rest, strict=True):
        np.testing.assert_allclose(segment, curve(bins, index), atol=TOL)
    diagonal, initial, best = ax.get_lines()
    np.testing.assert_allclose(np.column_stack(initial.get_data()), curve(bins, 1), atol=TOL)
    np.testing.assert_allclose(np.column_stack(best.get_data()), curve(bins, 5), atol=TOL)
    assert matplotlib.colors.same_color(initial.get_color(), "tab:blue")
    assert matplotlib.colors.same_color(best.get_color(), "tab:red")
    assert initial.get_label() == "initial T = 1"
    assert best.get_label() == "best T = 3"
    rendered_png(ax.figure, tmp_path / "overlay.png")


def test_temperature_overlay_initial_is_best(sweep):
    ax = plotting.temperature_overlay(
        None, sweep.bins, sweep.temperatures, initial_index=1, best_index=1
    )
    _, best = ax.get_lines()
    assert best.get_label() == "initial T = 1 (best)"
    assert matplotlib.colors.same_color(best.get_color(), "tab:red")
    np.testing.assert_allclose(np.column_stack(best.get_data()), curve(sweep.bins, 1), atol=TOL)
    assert len(ax.collections[0].get_segments()) == 11


def test_metrics_vs_temperature(sweep, tmp_path):
    result = sweep
    ax = plotting.metrics_vs_temperature(
        None,
        result.temperatures,
        result.ece,
        result.nll,
        result.brier,
        best_temperature=result.best_temperature,
    )
    ece_line, brier_line, best_line = ax.get_lines()
    np.testing.assert_allclose(ece_line.get_xdata(), as64(result.temperatures), atol=TOL)
    np.testing.assert_allclose(ece_line.get_ydata(), as64(result.ece), atol=TOL)
    np.testing.assert_allclose(brier_line.get_ydata(), as64(result.brier), atol=TOL)
    assert best_line.get_xdata()[0] == pytest.approx(float(result.best_temperature))
    (nll_ax,) = [a for a in ax.figure.axes if a is not ax]
    np.testing.assert_allclose(nll_ax.get_lines()[0].get_ydata(), as64(result.nll), atol=TOL)
    np.testing.assert_allclose(
        nll_ax.get_lines()[0].get_xdata(), as64(result.temperatures), atol=TOL
    )
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ECE", "Brier score", "NLL", f"best T = {float(result.best_temperature):.3g}"]
    rendered_png(ax.figure, tmp_path / "metrics.png")


def test_loss_curves(tmp_path):
    rng = np.random.default_rng(0)
    losses = np.exp(-np.arange(300) / 100) + rng.normal(0, 0.05, 300)
    ax = plotting.loss_curves(None, losses, val_epoch_losses=[0.6, 0.3, 0.2], steps_per_epoch=100)
    raw, running, validation = ax.get_lines()
    np.testing.assert_array_equal(raw.get_xdata(), np.arange(1, 301))
    np.testing.assert_allclose(raw.get_ydata(), losses, atol=TOL)
    assert raw.get_alpha() < 0.5
    np.testing.assert_array_equal(running.get_xdata(), np.arange(60, 301))
    expected = [losses[i - 60 : i].mean() for i in range(60, 301)]
    np.testing.assert_allclose(running.get_ydata(), expected, atol=1e-12)
    np.testing.assert_array_equal(validation.get_xdata(), [100, 200, 300])
    np.testing.assert_allclose(validation.get_ydata(), [0.6, 0.3, 0.2], atol=TOL)
    rendered_png(ax.figure, tmp_path / "loss.png")


def test_loss_curves_short_run_shortens_the_window():
    ax = plotting.loss_curves(None, [3.0, 2.0, 1.0, 0.0], window=60)
    _, running = ax.get_lines()
    np.testing.assert_allclose(running.get_ydata(), [2.5, 1.5, 0.5], atol=TOL)
    assert running.get_label() == "train (mean of 2 steps)"


def test_image_grid_predictions(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    predictions = np.array([0, 1, 0, 0, 2, 2, 0, 1, 2, 1])
    probabilities = np.linspace(0.5, 0.95, 10)
    names = ["bird", "cat", "dog"]
    figure = plotting.image_grid(
        None, images, labels, names, predictions=predictions, probabilities=probabilities, ncols=4
    )
    assert len(figure.axes) == 10
    assert figure.axes[4].get_subplotspec().get_geometry()[:2] == (3, 4)
    for i, ax in enumerate(figure.axes):
        title = ax.title
        expected = f"{names[labels[i]]} / {names[predictions[i]]} ({probabilities[i]:.2f})"
        assert title.get_text() == expected
        colour = "tab:green" if labels[i] == predictions[i] else "tab:red"
        assert matplotlib.colors.same_color(title.get_color(), colour)
        np.testing.assert_array_equal(ax.images[0].get_array(), images[i])
    rendered_png(figure, tmp_path / "grid.png")


def test_image_grid_grayscale_and_float():
    images = np.linspace(0, 1, 2 * 5 * 5).reshape(2, 5, 5, 1)
    figure = plotting.image_grid(None, images, [3, 7], [str(d) for d in range(10)])
    assert [ax.get_title() for ax in figure.axes] == ["3", "7"]
    image = figure.axes[1].images[0]
    assert image.get_cmap().name == "gray"
    np.testing.assert_allclose(image.get_array(), images[1, ..., 0], atol=TOL)
    assert image.get_clim() == (0, 1.0)


def test_confusion_matrix_plot(tmp_path):
    matrix = np.array([[50, 3, 0], [4, 40, 6], [0, 0, 0]])
    ax = plotting.confusion_matrix_plot(None, matrix, ["a", "b", "c"])
    np.testing.assert_array_equal(ax.images[0].get_array(), matrix)
    texts = {(t.get_position(), t.get_text()) for t in ax.texts}
    assert texts == {((j, i), str(matrix[i, j])) for i in range(3) for j in range(3)}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    rendered_png(ax.figure, tmp_path / "confusion.png")

    normalized = plotting.confusion_matrix_plot(None, matrix, ["a", "b", "c"], normalize=True)
    drawn = normalized.images[0].get_array()
    np.testing.assert_allclose(drawn[:2].sum(axis=1), [1.0, 1.0], atol=TOL)
    np.testing.assert_allclose(drawn[1], [0.08, 0.8, 0.12], atol=TOL)
    np.testing.assert_array_equal(drawn[2], [0, 0, 0])
    assert "0.80" in [t.get_text() for t in normalized.texts]


def test_roc_plot(tmp_path):
    fpr, tpr = np.array([0, 0, 0.5, 1]), np.array([0, 0.5, 1, 1])
    ax = plotting.roc_plot(None, fpr, tpr, 0.875, label="LeNet-5")
    plotting.roc_plot(ax, [0, 1], [0, 1], 0.5, label="chance model")
    curve_line, chance, second = ax.get_lines()
    np.testing.assert_array_equal(curve_line.get_xdata(), fpr)
    np.testing.assert_array_equal(curve_line.get_ydata(), tpr)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["LeNet-5 (AUC = 0.875)", "chance", "chance model (AUC = 0.500)"]
    rendered_png(ax.figure, tmp_path / "roc.png")


def test_per_class_accuracy_plot(tmp_path):
    accuracies = np.array([0.9, np.nan, 0.75])
    ax = plotting.per_class_accuracy_plot(None, accuracies, ["0", "1", "2"], overall=0.85)
    np.testing.assert_allclose([p.get_height() for p in bars(ax, "class")], [0.9, 0, 0.75])
    assert [t.get_text() for t in ax.texts] == ["0.900", "n/a", "0.750"]
    assert ax.get_lines()[0].get_ydata()[0] == 0.85
    assert ax.get_title() == "overall accuracy 0.850"
    rendered_png(ax.figure, tmp_path / "per_class.png")


def test_save_figure_creates_folders_and_closes(tmp_path):
    figure, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = plotting.save_figure(figure, tmp_path / "a" / "b" / "line.pdf")
    assert path.is_file() and path.read_bytes().startswith(b"%PDF")
    assert figure.number not in plt.get_fignums()


ONE = make_bins(np.array([0.2, 0.7, 0.9]), np.array([0.0, 1.0, 1.0]))
EMPTY = ONE._replace(counts=jnp.zeros(10, jnp.int32))
SWEEP = stacked([ONE, ONE])


@pytest.mark.parametrize(
    ("error", "match", "call"),
    [
        (TypeError, "ReliabilityBins", lambda: plotting.reliability_diagram(None, [0.1, 0.2])),
        (ValueError, "one set of bins", lambda: plotting.reliability_diagram(None, SWEEP)),
        (ValueError, "every bin is empty", lambda: plotting.reliability_diagram(None, EMPTY)),
        (
            ValueError,
            "edges",
            lambda: plotting.reliability_diagram(None, ONE._replace(edges=ONE.edges[:-1])),
        ),
        (
            ValueError,
            "hist_ax needs ax",
            lambda: plotting.reliability_diagram(None, ONE, hist_ax=plt.figure().add_subplot()),
        ),
        (ValueError, "binary", lambda: plotting.reliability_diagram(None, ONE, binary="top")),
        (ValueError, "eces", lambda: plotting.scale_effect_figure([ONE, ONE], [1, 2], eces=[1])),
        (ValueError, "scales", lambda: plotting.scale_effect_figure([ONE, ONE], [1, 2, 3])),
        (ValueError, "leading", lambda: plotting.scale_effect_figure(ONE, [1])),
        (ValueError, "at least one", lambda: plotting.scale_effect_figure([], [])),
        (
            ValueError,
            "optimal_index",
            lambda: plotting.scale_effect_figure([ONE], [1], optimal_index=1),
        ),
        (
            ValueError,
            "T, B",
            lambda: plotting.temperature_overlay(None, ONE, [1], initial_index=0, best_index=0),
        ),
        (
            ValueError,
            "temperatures",
            lambda: plotting.temperature_overlay(None, SWEEP, [1], initial_index=0, best_index=0),
        ),
        (
            ValueError,
            "best_index",
            lambda: plotting.temperature_overlay(
                None, SWEEP, [1, 2], initial_index=0, best_index=2
            ),
        ),
        (
            TypeError,
            "integer index",
            lambda: plotting.temperature_overlay(
                None, SWEEP, [1, 2], initial_index=0.0, best_index=1
            ),
        ),
        (
            ValueError,
            "positive",
            lambda: plotting.metrics_vs_temperature(None, [0, 1], *[[1, 1]] * 3),
        ),
        (
            ValueError,
            "nll",
            lambda: plotting.metrics_vs_temperature(None, [1, 2], [1, 1], [1], [1, 1]),
        ),
        (
            ValueError,
            "steps_per_epoch",
            lambda: plotting.loss_curves(None, [1.0], val_epoch_losses=[1]),
        ),
        (ValueError, "window", lambda: plotting.loss_curves(None, [1.0], window=0)),
        (ValueError, "step_losses", lambda: plotting.loss_curves(None, [])),
        (
            ValueError,
            "N, H, W, C",
            lambda: plotting.image_grid(None, np.zeros((2, 4, 4)), [0, 0], ["a"]),
        ),
        (
            ValueError,
            "undo the normalisation",
            lambda: plotting.image_grid(None, np.full((1, 4, 4, 3), -2.0), [0], ["a"]),
        ),
        (
            TypeError,
            "uint8 or float",
            lambda: plotting.image_grid(None, np.zeros((1, 4, 4, 3), int), [0], ["a"]),
        ),
        (
            ValueError,
            "labels must lie",
            lambda: plotting.image_grid(None, np.zeros((1, 4, 4, 3)), [1], ["a"]),
        ),
        (
            ValueError,
            "labels must have",
            lambda: plotting.image_grid(None, np.zeros((1, 4, 4, 3)), [0, 0], ["a"]),
        ),
        (
            ValueError,
            "probabilities needs predictions",
            lambda: plotting.image_grid(
                None, np.zeros((1, 4, 4, 3)), [0], ["a"], probabilities=[1]
            ),
        ),
        (
            ValueError,
            "square",
            lambda: plotting.confusion_matrix_plot(None, np.zeros((2, 3)), "ab"),
        ),
        (ValueError, "class_names", lambda: plotting.confusion_matrix_plot(None, np.eye(2), ["a"])),
        (ValueError, "fpr and tpr", lambda: plotting.roc_plot(None, [0, 1], [0, 0.5, 1], 0.5)),
        (ValueError, "lie in", lambda: plotting.per_class_accuracy_plot(None, [1.5], ["a"])),
        (ValueError, "suffix", lambda: plotting.save_figure(plt.figure(), "out/figure")),
        (TypeError, "Figure", lambda: plotting.save_figure(plt.gca(), "out/figure.png")),
    ],
)
def test_bad_inputs(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_smooth_reliability_diagram_draws_the_curve(tmp_path):
    from jaxcal.calibration import smooth_reliability

    rng = np.random.default_rng(20)
    p = rng.random(400).astype(np.float32)
    y = (rng.random(400) < p**2).astype(np.int32)
    curve = smooth_reliability(p, y, jax.random.key(0), num_resamples=20, from_logits=False)
    figure, ax = plt.subplots()
    assert plotting.smooth_reliability_diagram(ax, curve, title="model") is ax
    line = next(ln for ln in ax.lines if ln.get_label() == "smoothed")
    np.testing.assert_allclose(line.get_xdata(), as64(curve.grid), atol=TOL)
    np.testing.assert_allclose(line.get_ydata(), as64(curve.curve), atol=TOL)
    band = next(c for c in ax.collections if c.get_label() == "95 % bootstrap band")
    vertices = band.get_paths()[0].vertices
    # fill_between's outline runs along the upper edge and back along the lower one.
    assert np.isclose(vertices[:, 1].max(), as64(curve.upper).max(), atol=TOL)
    assert np.isclose(vertices[:, 1].min(), as64(curve.lower).min(), atol=TOL)
    assert f"{float(curve.error):.4f}" in ax.get_title()
    plotting.save_figure(figure, tmp_path / "smooth.png")
    assert (tmp_path / "smooth.png").stat().st_size > 0
    with pytest.raises(TypeError, match="SmoothReliability"):
        plotting.smooth_reliability_diagram(ax, make_bins([0.5], [1]))
