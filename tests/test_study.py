"""Tests for jaxcal.study: known temperatures, parity with jaxcal.calibration, figures, report."""

import json
import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import optimize, special

from jaxcal import calibration, study

matplotlib.use("Agg")

CONFIG = study.StudyConfig(num_temperatures=50, num_resamples=100, calibrators=("temperature",))
NUM_BINS = CONFIG.num_bins
# The model logits are 3 x the true logits, so T = 3 minimises the expected NLL exactly. The
# fitted T is a maximum-likelihood estimate from finite data: with a = 1/T, var(a) ~ 1 / (N I)
# with Fisher information I = E[x^2 p (1 - p)] for x = 3 z (binary; 2.18 for z ~ N(0, 2^2)) or
# E[Var_p(x_y)] (multiclass, K = 4: 4.90), so sd(T) = T^2 sd(a) is 0.096 (binary, N = 4000)
# and 0.091 (multiclass, N = 2000). 0.4 is over 4 standard deviations.
T_TOL = 0.4
# float32 L-BFGS stops at |d NLL / d log T| <= 1e-6; the float64 scipy optimum of the same NLL
# agrees to 2e-6 relative (measured), so 1e-3 leaves ample room for float32 rounding.
T_REF_RTOL = 1e-3
# The study and the direct calls run the same float32 code; sums over 4000 samples may be
# reassociated differently by XLA (sweep vs single call), which moves results by ~1e-7.
F32_ATOL = 1e-6
# A float64 numpy ECE over float32 logits differs from the float32 segment sums by ~1e-7 x N
# rounding per bin; 1e-5 covers that (no sample lies within 1e-7 of a bin edge here).
NUMPY_ECE_ATOL = 1e-5
# Bin sums of ~300 float32 confidences: XLA may order the sums (and the division by T)
# differently in two compiled calls, moving a sum by a few ulp (~1e-7 relative).
BIN_RTOL = 1e-6
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def binary_draw(rng, n):
    """Overconfident binary logits [n] = 3 z for z ~ N(0, 2^2), labels ~ Bernoulli(sigmoid(z))."""
    z = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < special.expit(z)).astype(np.int32)
    return (3.0 * z).astype(np.float32), labels


def multiclass_draw(rng, n, k=4):
    """Overconfident logits [n, k] = 3 z for z ~ N(0, 2^2), labels ~ Categorical(softmax(z))."""
    z = rng.normal(0.0, 2.0, (n, k))
    cumulative = np.cumsum(special.softmax(z, axis=1), axis=1)
    labels = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), k - 1)
    return (3.0 * z).astype(np.float32), labels.astype(np.int32)


def confidence_target(logits, labels, binary):
    """float64 (confidence, target) per sample, computed in numpy from float32 logits."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim == 1 and binary == "positive":
        return special.expit(logits), labels.astype(np.float64)
    if logits.ndim == 1:
        logits = np.stack([np.zeros_like(logits), logits], axis=1)
    probs = special.softmax(logits, axis=1)
    return probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)


def numpy_ece(logits, labels, binary, norm="l1", num_bins=NUM_BINS):
    """Equal-width [lo, hi) bins with 1.0 in the last bin; ECE (l1) or MCE (max)."""
    confidence, target = confidence_target(logits, labels, binary)
    index = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    errors, weights = [], []
    for b in range(num_bins):
        member = index == b
        if member.any():
            errors.append(abs(target[member].mean() - confidence[member].mean()))
            weights.append(member.mean())
    if norm == "max":
        return max(errors)
    return float(np.dot(weights, errors))


def numpy_accuracy(logits, labels):
    predicted = (logits > 0).astype(int) if logits.ndim == 1 else logits.argmax(axis=1)
    return float(np.mean(predicted == labels))


def reference_temperature(logits, labels):
    """float64 NLL-optimal temperature of [N] or [N, K] logits, by scipy on log T."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim == 1:
        logits = np.stack([np.zeros_like(logits), logits], axis=1)

    def nll(log_t):
        scaled = logits * np.exp(-log_t)
        log_probs = scaled - special.logsumexp(scaled, axis=1, keepdims=True)
        return -np.mean(log_probs[np.arange(len(labels)), labels])

    result = optimize.minimize_scalar(
        nll, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-10}
    )
    return float(np.exp(result.x))


def assert_bins_equal(actual, expected):
    """Same edges and counts; per-bin float32 sums equal up to summation order."""
    np.testing.assert_array_equal(np.asarray(actual.edges), np.asarray(expected.edges))
    np.testing.assert_array_equal(np.asarray(actual.counts), np.asarray(expected.counts))
    for name in ("confidence_sum", "target_sum"):
        np.testing.assert_allclose(
            np.asarray(getattr(actual, name)), np.asarray(getattr(expected, name)), rtol=BIN_RTOL
        )


@pytest.fixture(scope="module")
def binary_data():
    rng = np.random.default_rng(0)
    return (*binary_draw(rng, 4000), *binary_draw(rng, 4000))


@pytest.fixture(scope="module")
def binary_study(binary_data):
    return study.run_study(*binary_data, CONFIG)


@pytest.fixture(scope="module")
def multiclass_data():
    rng = np.random.default_rng(1)
    return (*multiclass_draw(rng, 2000), *multiclass_draw(rng, 2000))


@pytest.fixture(scope="module")
def multiclass_study(multiclass_data):
    return study.run_study(*multiclass_data, CONFIG)


def test_metrics_key_set_and_json(binary_study):
    m = binary_study.to_json()
    assert {"temperature", "scale", "converged", "val", "test"} <= m.keys()
    assert {"nll_before", "nll_after", "ece_before", "ece_after"} <= m["val"].keys()
    before_after = {
        f"{name}_{when}"
        for name in ("ece", "mce", "rmsce", "nll", "brier")
        for when in ("before", "after")
    }
    assert {"accuracy", "ece_ci_before", "ece_ci_after"} | before_after <= m["test"].keys()
    assert json.loads(json.dumps(m)) == m  # plain Python types only, no default= needed
    assert m["val"]["size"] == 4000 and m["test"]["size"] == 4000
    assert m["num_bins"] == NUM_BINS and m["binary"] == "positive"
    assert binary_study.binary == "positive"


def test_fitted_temperature_is_three(binary_study, binary_data):
    val_logits, val_labels, _, _ = binary_data
    m = binary_study.to_json()
    assert abs(m["temperature"] - 3.0) < T_TOL
    reference = reference_temperature(val_logits, val_labels)
    np.testing.assert_allclose(m["temperature"], reference, rtol=T_REF_RTOL)
    assert m["converged"] is True
    assert m["scale"] == pytest.approx(1.0 / m["temperature"], rel=1e-12)
    assert m["temperature"] == float(binary_study.temperature.fit.temperature)


def test_temperature_scaling_improves_calibration(binary_study):
    m = binary_study.to_json()
    assert m["val"]["nll_after"] <= m["val"]["nll_before"]
    assert m["val"]["ece_after"] < m["val"]["ece_before"]
    test = m["test"]
    assert test["ece_after"] < test["ece_before"]
    assert test["nll_after"] < test["nll_before"]
    assert test["brier_after"] < test["brier_before"]
    lo_before, hi_before = test["ece_ci_before"]
    lo_after, hi_after = test["ece_ci_after"]
    # The 4x overconfidence is far outside the noise: the intervals do not overlap.
    assert hi_after < lo_before


@pytest.mark.parametrize("fixture", ["binary_study", "multiclass_study"])
def test_metric_ranges_and_order(fixture, request):
    test = request.getfixturevalue(fixture).to_json()["test"]
    for when in ("before", "after"):
        ece, mce, rmsce = test[f"ece_{when}"], test[f"mce_{when}"], test[f"rmsce_{when}"]
        assert 0.0 <= ece <= rmsce <= mce <= 1.0  # weighted mean <= weighted RMS <= max
        lower, upper = test[f"ece_ci_{when}"]
        assert 0.0 <= lower <= upper <= 1.0
        assert test[f"nll_{when}"] > 0.0
        assert 0.0 <= test[f"brier_{when}"] <= 2.0
    assert 0.0 <= test["accuracy"] <= 1.0


def test_metrics_equal_direct_calibration_calls(binary_study, binary_data):
    val_logits, val_labels, test_logits, test_labels = binary_data
    m, t = binary_study.to_json(), binary_study.to_json()["test"]
    fit = calibration.fit_temperature(val_logits, val_labels)
    np.testing.assert_allclose(m["temperature"], float(fit.temperature), rtol=1e-6)
    np.testing.assert_allclose(m["val"]["nll_before"], float(fit.nll_before), atol=F32_ATOL)
    np.testing.assert_allclose(m["val"]["nll_after"], float(fit.nll_after), atol=F32_ATOL)
    temperature = m["temperature"]
    kw = {"num_bins": NUM_BINS, "binary": "positive"}
    val_scaled, test_scaled = val_logits / temperature, test_logits / temperature
    expected = {
        ("val", "ece_before"): calibration.ece(val_logits, val_labels, **kw),
        ("val", "ece_after"): calibration.ece(val_scaled, val_labels, **kw),
        ("test", "ece_before"): calibration.ece(test_logits, test_labels, **kw),
        ("test", "ece_after"): calibration.ece(test_scaled, test_labels, **kw),
        ("test", "mce_before"): calibration.ece(test_logits, test_labels, norm="max", **kw),
        ("test", "mce_after"): calibration.ece(test_scaled, test_labels, norm="max", **kw),
        ("test", "rmsce_after"): calibration.ece(test_scaled, test_labels, norm="l2", **kw),
        ("test", "nll_before"): calibration.nll(test_logits, test_labels),
        ("test", "nll_after"): calibration.nll(test_scaled, test_labels),
        ("test", "brier_before"): calibration.brier_score(test_logits, test_labels),
        ("test", "brier_after"): calibration.brier_score(test_scaled, test_labels),
        ("test", "accuracy"): calibration.accuracy(test_logits, test_labels),
    }
    for (split, key), value in expected.items():
        np.testing.assert_allclose(m[split][key], float(value), atol=F32_ATOL, err_msg=key)
    key = jax.random.key(CONFIG.seed)
    for when, logits in (("before", test_logits), ("after", test_scaled)):
        interval = calibration.ece_bootstrap(
            logits, test_labels, key, num_resamples=CONFIG.num_resamples, **kw
        )
        np.testing.assert_allclose(
            t[f"ece_ci_{when}"], [float(interval.lower), float(interval.upper)], atol=F32_ATOL
        )


def test_metrics_equal_numpy(binary_study, binary_data):
    _, _, test_logits, test_labels = binary_data
    t = binary_study.to_json()["test"]
    scaled = test_logits / np.float32(binary_study.to_json()["temperature"])
    for when, logits in (("before", test_logits), ("after", scaled)):
        for norm in ("l1", "max"):
            name = "ece" if norm == "l1" else "mce"
            expected = numpy_ece(logits, test_labels, "positive", norm)
            assert t[f"{name}_{when}"] == pytest.approx(expected, abs=NUMPY_ECE_ATOL)
    # Accuracy does not depend on T > 0: the study's single value holds before and after.
    assert t["accuracy"] == pytest.approx(numpy_accuracy(test_logits, test_labels), abs=1e-7)
    assert t["accuracy"] == pytest.approx(numpy_accuracy(scaled, test_labels), abs=1e-7)
    np.testing.assert_allclose(
        np.asarray(binary_study.temperature.sweep.accuracy), t["accuracy"], atol=1e-7
    )


def test_reliability_bins_before_after(binary_study, binary_data):
    _, _, test_logits, test_labels = binary_data
    kw = {"num_bins": NUM_BINS, "binary": "positive"}
    scaled = test_logits / binary_study.to_json()["temperature"]
    assert_bins_equal(
        binary_study.test.raw.bins, calibration.reliability_bins(test_logits, test_labels, **kw)
    )
    assert_bins_equal(
        binary_study.temperature.test.bins, calibration.reliability_bins(scaled, test_labels, **kw)
    )
    t = binary_study.to_json()["test"]
    assert float(
        calibration.calibration_error(binary_study.temperature.test.bins)
    ) == pytest.approx(t["ece_after"], abs=F32_ATOL)


def test_sweep_indices_and_values(binary_study):
    sweep, m = binary_study.temperature.sweep, binary_study.to_json()
    temperatures = np.asarray(sweep.temperatures)
    assert temperatures.dtype == np.float32
    assert np.all(np.diff(temperatures) > 0)
    grid = np.geomspace(*CONFIG.temperature_range, CONFIG.num_temperatures).astype(np.float32)
    assert np.isin(grid, temperatures).all()
    # The grid plus T = 1 and the fitted T (neither lies on this 50-point grid).
    assert len(temperatures) == CONFIG.num_temperatures + 2
    assert temperatures[binary_study.temperature.initial_index] == 1.0
    assert temperatures[binary_study.temperature.fitted_index] == np.float32(m["temperature"])
    t, i, f = (
        m["test"],
        binary_study.temperature.initial_index,
        binary_study.temperature.fitted_index,
    )
    assert float(sweep.ece[f]) == pytest.approx(t["ece_after"], abs=F32_ATOL)
    assert float(sweep.ece[i]) == pytest.approx(t["ece_before"], abs=F32_ATOL)
    assert float(sweep.nll[f]) == pytest.approx(t["nll_after"], abs=F32_ATOL)
    assert float(sweep.nll[i]) == pytest.approx(t["nll_before"], abs=F32_ATOL)
    assert float(sweep.brier[f]) == pytest.approx(t["brier_after"], abs=F32_ATOL)
    assert sweep.bins.counts.shape == (len(temperatures), NUM_BINS)


def test_effect_scales_and_bins(binary_study, binary_data):
    _, _, test_logits, test_labels = binary_data
    temperature = binary_study.to_json()["temperature"]
    assert binary_study.temperature.effect_scales == pytest.approx(
        (0.5, 1.0 / temperature, 1.5), rel=1e-12
    )
    assert len(binary_study.temperature.effect_bins) == 3
    kw = {"num_bins": NUM_BINS, "binary": "positive"}
    for scale, bins in zip(
        binary_study.temperature.effect_scales, binary_study.temperature.effect_bins, strict=True
    ):
        assert_bins_equal(
            bins, calibration.reliability_bins(test_logits * scale, test_labels, **kw)
        )
    # The optimal panel is the calibrated test set (x / T vs x * (1/T): float32 rounding only).
    optimal = float(calibration.calibration_error(binary_study.temperature.effect_bins[1]))
    assert optimal == pytest.approx(binary_study.to_json()["test"]["ece_after"], abs=1e-4)


def test_top_label_binary_mode(binary_study, binary_data):
    config = study.StudyConfig(num_temperatures=50, num_resamples=100, binary="top_label")
    result = study.run_study(*binary_data, config)
    _, _, test_logits, test_labels = binary_data
    assert result.binary == "top_label" and result.to_json()["binary"] == "top_label"
    t = result.to_json()["test"]
    assert t["ece_before"] == pytest.approx(
        numpy_ece(test_logits, test_labels, "top_label"), abs=NUMPY_ECE_ATOL
    )
    top = calibration.ece(test_logits, test_labels, num_bins=NUM_BINS, binary="top_label")
    positive = calibration.ece(test_logits, test_labels, num_bins=NUM_BINS, binary="positive")
    assert t["ece_before"] == pytest.approx(float(top), abs=F32_ATOL)
    assert float(top) != float(positive)
    # Top-label confidences max(p, 1 - p) are >= 0.5: the 7 bins below 7/15 stay empty, which
    # they are not for P(y = 1).
    assert int(result.test.raw.bins.counts[:7].sum()) == 0
    assert int(binary_study.test.raw.bins.counts[:7].sum()) > 1000


def test_multiclass_study(multiclass_study, multiclass_data):
    val_logits, val_labels, test_logits, test_labels = multiclass_data
    m, t = multiclass_study.to_json(), multiclass_study.to_json()["test"]
    assert multiclass_study.binary == "top_label"
    assert m["binary"] is None
    assert json.loads(json.dumps(m)) == m
    assert abs(m["temperature"] - 3.0) < T_TOL
    reference = reference_temperature(val_logits, val_labels)
    np.testing.assert_allclose(m["temperature"], reference, rtol=T_REF_RTOL)
    assert m["val"]["nll_after"] <= m["val"]["nll_before"]
    assert t["ece_after"] < t["ece_before"]
    scaled = test_logits / np.float32(m["temperature"])
    for when, logits in (("before", test_logits), ("after", scaled)):
        assert t[f"ece_{when}"] == pytest.approx(
            numpy_ece(logits, test_labels, "top_label"), abs=NUMPY_ECE_ATOL
        )
        assert t[f"ece_{when}"] == pytest.approx(
            float(calibration.ece(logits, test_labels, num_bins=NUM_BINS)), abs=F32_ATOL
        )
        assert t[f"brier_{when}"] == pytest.approx(
            float(calibration.brier_score(logits, test_labels)), abs=F32_ATOL
        )
    assert t["accuracy"] == pytest.approx(numpy_accuracy(test_logits, test_labels), abs=1e-7)
    sweep = multiclass_study.temperature.sweep
    assert float(sweep.temperatures[multiclass_study.temperature.initial_index]) == 1.0
    assert float(sweep.ece[multiclass_study.temperature.fitted_index]) == pytest.approx(
        t["ece_after"], abs=F32_ATOL
    )
    assert multiclass_study.temperature.test.bins.counts.shape == (NUM_BINS,)


@pytest.mark.parametrize(
    ("val_shape", "test_shape"), [((8,), (8, 3)), ((8, 3), (8,)), ((8, 3), (8, 4))]
)
def test_class_axis_mismatch_raises(val_shape, test_shape):
    labels = np.zeros(8, np.int32)
    with pytest.raises(ValueError, match="val_logits and test_logits"):
        study.run_study(np.zeros(val_shape), labels, np.zeros(test_shape), labels, CONFIG)


class _WorkStarted(Exception):
    """Raised by a stand-in fit_temperature: the study began work before validating."""


def _no_fit(*args, **kwargs):
    raise _WorkStarted


@pytest.mark.parametrize(
    "temperature_range",
    [
        (0.5, 0.9),
        (1.0, 5.0),
        (0.2, 1.0),
        (0.0, 5.0),
        (-1.0, 5.0),
        (5.0, 0.2),
        (0.2, float("nan")),
        (0.2, float("inf")),
        (0.2, 0.5, 5.0),
    ],
)
def test_bad_temperature_range_raises_before_work(temperature_range, monkeypatch):
    monkeypatch.setattr(calibration, "fit_temperature", _no_fit)
    logits, labels = np.zeros(8, np.float32), np.zeros(8, np.int32)
    with pytest.raises(ValueError, match="temperature_range"):
        config = study.StudyConfig(temperature_range=temperature_range)
        study.run_study(logits, labels, logits, labels, config)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_temperatures", -1),
        ("num_temperatures", 0),
        ("num_bins", 0),
        ("num_resamples", 0),
        ("binary", "both"),
    ],
)
def test_bad_config_raises_before_work(field, value, monkeypatch):
    monkeypatch.setattr(calibration, "fit_temperature", _no_fit)
    logits, labels = np.zeros(8, np.float32), np.zeros(8, np.int32)
    with pytest.raises(ValueError, match=field):
        config = study.StudyConfig(**{field: value})
        study.run_study(logits, labels, logits, labels, config)


@pytest.mark.parametrize(("field", "value"), [("num_bins", 0), ("num_resamples", 0)])
def test_bad_config_raises_naming_field(field, value, binary_data):
    with pytest.raises(ValueError, match=field):
        config = study.StudyConfig(num_temperatures=50, **{field: value})
        study.run_study(*binary_data, config)


@pytest.fixture(scope="module")
def figures(binary_study, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("figures")
    open_before = set(plt.get_fignums())
    captions = study.save_study_figures(binary_study, out_dir)
    # Every figure the study opened was closed after saving.
    assert set(plt.get_fignums()) <= open_before
    return out_dir, captions


def png_size(path):
    """(width, height) read from a PNG's IHDR chunk."""
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_save_study_figures(figures):
    out_dir, captions = figures
    assert sorted(captions.values()) == [
        "metrics_vs_temperature.png",
        "reliability_before_after.png",
        "scale_effect.png",
        "smooth_reliability_before_after.png",
        "temperature_overlay.png",
    ]
    assert sorted(p.name for p in out_dir.glob("*.png")) == sorted(captions.values())
    for caption, name in captions.items():
        assert caption.strip()
        width, height = png_size(out_dir / name)
        assert width > 100 and height > 100


def test_calibration_table(binary_study):
    m = binary_study.to_json()
    t = m["test"]
    table = study.calibration_table(binary_study)
    lines = table.splitlines()
    assert f"T = {m['temperature']:.4f}" in lines[0]
    assert f"{m['val']['nll_before']:.4f} -> {m['val']['nll_after']:.4f}" in lines[0]
    assert f"| test metric ({t['size']} images) | before | after |" in lines
    for label, key in [("ECE", "ece"), ("MCE", "mce"), ("NLL", "nll"), ("Brier score", "brier")]:
        assert f"| {label} | {t[key + '_before']:.4f} | {t[key + '_after']:.4f} |" in lines
    (lo_b, hi_b), (lo_a, hi_a) = t["ece_ci_before"], t["ece_ci_after"]
    assert f"[{lo_b:.4f}, {hi_b:.4f}] | [{lo_a:.4f}, {hi_a:.4f}]" in table
    assert f"| accuracy | {t['accuracy']:.4f} | {t['accuracy']:.4f} |" in lines
    rows = [line for line in lines if line.startswith("|")]
    # header, rule, 5 binned metrics, interval, 4 beyond-bins measures, accuracy
    assert len(rows) == 2 + 5 + 1 + 4 + 1


def test_write_outputs(binary_study, figures):
    out_dir, captions = figures
    setup = {
        "dataset": "synthetic",
        "seed": np.int64(3),
        "learning_rate": np.float32(0.5),
        "checkpoint": pathlib.Path("runs/x"),
        "logit_scale": jnp.asarray(3.0),
    }
    table = study.calibration_table(binary_study)
    report = study.write_outputs(
        out_dir,
        title="Synthetic study",
        setup=setup,
        metrics=binary_study.to_json(),
        sections=[("Calibration", table)],
        figures=captions,
    )
    assert report == out_dir / "report.md"
    stored = json.loads((out_dir / "metrics.json").read_text())
    expected_setup = {
        "dataset": "synthetic",
        "seed": 3,
        "learning_rate": 0.5,
        "checkpoint": "runs/x",
        "logit_scale": 3.0,
    }
    assert stored == {**binary_study.to_json(), "setup": expected_setup}
    text = report.read_text()
    assert text.startswith("# Synthetic study\n")
    assert "| seed | 3 |" in text and "| checkpoint | runs/x |" in text
    assert "## Calibration\n\n" + table in text
    for caption, name in captions.items():
        assert f"![{caption}]({name})" in text
        assert (out_dir / name).is_file()


def test_write_outputs_rejects_unserialisable_setup(tmp_path, binary_study):
    with pytest.raises(TypeError, match="not JSON serialisable"):
        study.write_outputs(
            tmp_path,
            title="t",
            setup={"callback": object()},
            metrics=binary_study.to_json(),
            sections=[],
            figures={},
        )
