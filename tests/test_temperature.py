"""Tests for jaxcal.calibration.temperature: scipy parity, bounds, convergence and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from jaxcal.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    TemperatureFit,
    apply_temperature,
    fit_temperature,
)
from jaxcal.calibration.metrics import _nll
from jaxcal.calibration.temperature import _label_gaps, _nll_change

LOG_BOUNDS = (np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE))


def nll64(logits, labels):
    """float64 mean NLL: sigmoid BCE for [N], softmax CE for [N, K]."""
    z = np.asarray(logits, np.float64)
    if z.ndim == 1:
        return float(np.mean(np.logaddexp(0.0, z) - labels * z))
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), labels]))


def scipy_temperature(logits, labels):
    """The exact bounded optimum: minimize_scalar over log T in float64."""
    result = minimize_scalar(
        lambda s: nll64(np.asarray(logits, np.float64) * np.exp(-s), labels),
        bounds=LOG_BOUNDS,
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(np.exp(result.x))


def overconfident_binary(n=10_000, seed=0):
    """Logits 3x too large for the label noise: the optimal T is about 3."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-true_logit))).astype(np.int32)
    logits = (3.0 * true_logit + rng.normal(0.0, 1.0, n)).astype(np.float32)
    return logits, labels


def overconfident_multiclass(n=4_000, k=10, seed=1):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.0, 2.0, (n, k))
    probs = np.exp(true_logit) / np.exp(true_logit).sum(axis=1, keepdims=True)
    labels = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1).astype(np.int32)
    logits = (2.5 * true_logit + rng.normal(0.0, 0.5, (n, k))).astype(np.float32)
    return logits, labels


@pytest.fixture(scope="module")
def binary_data():
    return overconfident_binary()


@pytest.fixture(scope="module")
def multiclass_data():
    return overconfident_multiclass()


class TestFitTemperature:
    def test_binary_matches_scipy(self, binary_data):
        logits, labels = binary_data
        fit = fit_temperature(logits, labels)
        expected = scipy_temperature(logits, labels)
        assert isinstance(fit, TemperatureFit)
        assert 2.5 < expected < 4.0  # the data really is overconfident
        assert float(fit.temperature) == pytest.approx(expected, rel=1e-4)
        assert float(fit.scale) == pytest.approx(1.0 / expected, rel=1e-4)
        assert bool(fit.converged)
        assert 1 <= int(fit.num_iter) <= 20
        # float32 mean of 10k terms: 1e-6 relative.
        assert float(fit.nll_before) == pytest.approx(nll64(logits, labels), rel=1e-6)
        assert float(fit.nll_after) == pytest.approx(nll64(logits / expected, labels), rel=1e-6)
        assert float(fit.nll_after) < float(fit.nll_before) - 0.1

    def test_multiclass_matches_scipy(self, multiclass_data):
        logits, labels = multiclass_data
        fit = fit_temperature(logits, labels)
        expected = scipy_temperature(logits, labels)
        assert 2.0 < expected < 3.5
        assert float(fit.temperature) == pytest.approx(expected, rel=1e-4)
        assert bool(fit.converged)
        assert float(fit.nll_after) == pytest.approx(nll64(logits / expected, labels), rel=1e-6)

    def test_original_notebook_lbfgs_is_far_off(self, binary_data):
        # The original fits a with torch LBFGS(lr=0.01, max_iter=50): far from the optimum.
        torch = pytest.importorskip("torch")
        logits, labels = binary_data
        z = torch.tensor(logits)[:, None]
        y = torch.tensor(labels, dtype=torch.float32)[:, None]
        a = torch.nn.Parameter(torch.ones(1))
        optimizer = torch.optim.LBFGS([a], lr=0.01, max_iter=50)

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z * a, y)
            loss.backward()
            return loss

        optimizer.step(closure)
        exact_scale = 1.0 / scipy_temperature(logits, labels)
        assert abs(a.item() / exact_scale - 1.0) > 0.3
        ours = float(fit_temperature(logits, labels).scale)
        assert abs(ours / exact_scale - 1.0) < 1e-4

    def test_separable_goes_to_lower_bound(self):
        rng = np.random.default_rng(2)
        logits = rng.normal(0, 2, 500).astype(np.float32)
        fit = fit_temperature(logits, (logits > 0).astype(np.int32))
        assert float(fit.temperature) == pytest.approx(MIN_TEMPERATURE)
        assert not bool(fit.converged)
        assert int(fit.num_iter) == 0
        assert np.isfinite(float(fit.nll_after)) and float(fit.nll_after) < float(fit.nll_before)
        multi = rng.normal(0, 1, (300, 4)).astype(np.float32)
        labels = multi.argmax(axis=1)
        fit = fit_temperature(multi, labels)
        assert float(fit.temperature) == pytest.approx(MIN_TEMPERATURE)
        assert not bool(fit.converged)

    def test_unpredictable_labels_go_to_upper_bound(self):
        rng = np.random.default_rng(3)
        logits = -np.abs(rng.normal(0, 2, 500)).astype(np.float32)
        fit = fit_temperature(logits, np.ones(500, np.int32))  # one class, always predicted wrong
        assert float(fit.temperature) == pytest.approx(MAX_TEMPERATURE)
        assert not bool(fit.converged)
        assert float(fit.nll_after) == pytest.approx(np.log(2), abs=0.01)
        multi = rng.normal(0, 1, (300, 4)).astype(np.float32)
        multi[:, 0] -= 1.0  # the only label is the least likely class
        fit = fit_temperature(multi, np.zeros(300, np.int32))
        assert float(fit.temperature) == pytest.approx(MAX_TEMPERATURE)
        assert not bool(fit.converged)

    def test_constant_logits_keep_temperature_one(self):
        fit = fit_temperature(np.zeros(500, np.float32), np.arange(500) % 2)
        assert float(fit.temperature) == 1.0 and bool(fit.converged)
        assert float(fit.nll_after) == pytest.approx(np.log(2))

    @pytest.mark.parametrize(("multiplier", "inside"), [(0.02, True), (80.0, True), (150.0, False)])
    def test_optimum_near_and_beyond_bounds(self, multiplier, inside):
        rng = np.random.default_rng(4)
        true_logit = rng.normal(0, 1, 500)
        labels = (rng.random(500) < 1 / (1 + np.exp(-true_logit))).astype(np.int32)
        logits = (multiplier * true_logit).astype(np.float32)
        fit = fit_temperature(logits, labels)
        assert float(fit.temperature) == pytest.approx(scipy_temperature(logits, labels), rel=1e-4)
        assert bool(fit.converged) == inside
        if not inside:
            assert float(fit.temperature) == pytest.approx(MAX_TEMPERATURE)

    def test_custom_bounds_and_iteration_budget(self, binary_data):
        logits, labels = binary_data
        fit = fit_temperature(logits, labels, bounds=(0.5, 2.0))
        assert float(fit.temperature) == pytest.approx(2.0)
        assert not bool(fit.converged)
        one_step = fit_temperature(logits, labels, max_iter=1)
        assert int(one_step.num_iter) == 1 and not bool(one_step.converged)
        assert float(one_step.nll_after) < float(one_step.nll_before)

    @pytest.mark.parametrize(
        ("case", "bounds"),
        [
            ("interior", (MIN_TEMPERATURE, MAX_TEMPERATURE)),
            ("above one", (1.5, 5.0)),  # T = 1 outside the bounds: the start is T = 1.5
            ("at upper bound", (0.5, 2.0)),
            ("separable", (MIN_TEMPERATURE, MAX_TEMPERATURE)),
        ],
    )
    def test_nll_after_is_the_nll_at_the_fitted_temperature(self, binary_data, case, bounds):
        # nll_after comes from the fit's last pass, or a fresh one when T was set to a bound.
        logits, labels = binary_data
        if case == "separable":
            labels = (logits > 0).astype(np.int32)
        fit = fit_temperature(logits, labels, bounds=bounds)
        t = float(fit.temperature)
        assert bounds[0] * (1 - 1e-6) <= t <= bounds[1] * (1 + 1e-6)  # float32 bounds
        if case == "above one":
            assert float(fit.temperature) == pytest.approx(scipy_temperature(logits, labels), 1e-4)
        # float32 means of 10k terms: 1e-6 relative (the separable NLL is ~1e-30: absolute).
        expected = nll64(np.asarray(logits, np.float64) / t, labels)
        assert float(fit.nll_after) == pytest.approx(expected, rel=1e-6, abs=1e-7)
        assert float(fit.nll_before) == pytest.approx(nll64(logits, labels), rel=1e-6)

    def test_jit_and_vmap(self, binary_data):
        logits, labels = binary_data[0][:500], binary_data[1][:500]
        stacked = np.stack([logits, 0.5 * logits, 2.0 * logits])
        batched = jax.jit(jax.vmap(lambda z: fit_temperature(z, labels)))(stacked)
        for i, z in enumerate(stacked):
            single = fit_temperature(z, labels)
            assert float(batched.temperature[i]) == pytest.approx(
                float(single.temperature), rel=1e-5
            )
            assert bool(batched.converged[i])
        # Scaling the logits by c scales the temperature by c.
        np.testing.assert_allclose(
            batched.temperature / batched.temperature[0], [1.0, 0.5, 2.0], rtol=1e-4
        )

    @settings(max_examples=25, deadline=None)
    @given(
        seed=st.integers(0, 2**31 - 1),
        scale=st.floats(0.01, 30.0),
        classes=st.sampled_from([0, 4]),
    )
    def test_fit_is_the_best_temperature_on_a_grid(self, seed, scale, classes):
        rng = np.random.default_rng(seed)
        # The shapes of the other small tests, so no new compilation is needed.
        shape = (500,) if classes == 0 else (300, classes)
        logits = (scale * rng.normal(0, 1, shape)).astype(np.float32)
        labels = rng.integers(0, max(classes, 2), shape[0])
        fit = fit_temperature(logits, labels)
        t = float(fit.temperature)
        assert MIN_TEMPERATURE <= t <= MAX_TEMPERATURE and np.isfinite(float(fit.nll_after))
        assert float(fit.nll_after) <= float(fit.nll_before) + 1e-6
        grid = np.geomspace(MIN_TEMPERATURE, MAX_TEMPERATURE, 81)
        best_on_grid = min(nll64(logits / g, labels) for g in grid)
        # float32 NLL of a few hundred samples: absolute error ~1e-6 per unit of loss.
        assert nll64(logits / t, labels) <= best_on_grid + 1e-5 * (1 + best_on_grid)


def issue_problem(seed):
    """The random problems of the convergence report: N in [100, 5000), interior optima."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(100, 5000))
    logits = (rng.normal(size=n) * rng.uniform(0.5, 4)).astype(np.float32)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logits / rng.uniform(0.5, 2)))).astype(np.int32)
    return logits, labels


class TestConvergence:
    def test_reported_interior_optimum_is_converged(self):
        logits, labels = issue_problem(23)
        fit = fit_temperature(logits, labels)
        assert float(fit.temperature) == pytest.approx(scipy_temperature(logits, labels), rel=1e-5)
        assert bool(fit.converged)

    def test_flag_is_true_exactly_when_within_1e4_of_the_optimum(self):
        # 1,000 problems in one compiled lax.map. Each is padded to 5,000 samples with zero
        # logits: their NLL, log 2, does not depend on T, so the optimum and the scale-free
        # convergence test are unchanged (only the mean's weight shrinks).
        size = 5000
        logits = np.zeros((1000, size), np.float32)
        labels = np.zeros((1000, size), np.int32)
        optima = np.empty(1000)
        for seed in range(1000):
            z, y = issue_problem(seed)
            logits[seed, : len(z)], labels[seed, : len(z)] = z, y
            optima[seed] = scipy_temperature(z, y)
        fits = jax.jit(lambda z, y: jax.lax.map(lambda zy: fit_temperature(*zy), (z, y)))(
            logits, labels
        )
        error = np.abs(np.asarray(fits.temperature) / optima - 1.0)
        within = error <= 1e-4
        np.testing.assert_array_equal(np.asarray(fits.converged), within)
        assert within.mean() > 0.99  # interior optima: nearly all fits must get there

    def test_budget_cut_short_is_not_converged(self):
        logits, labels = issue_problem(23)
        for max_iter in (1, 2):
            fit = fit_temperature(logits, labels, max_iter=max_iter)
            error = abs(float(fit.temperature) / scipy_temperature(logits, labels) - 1.0)
            assert int(fit.num_iter) <= max_iter
            assert bool(fit.converged) == (error <= 1e-4)


class TestObjective:
    @pytest.mark.parametrize("classes", [0, 4])
    def test_fused_derivatives_match_autodiff(self, classes):
        # The one-pass f, f', f'' of the NLL change in log T against jax autodiff of the plain
        # mean NLL, in float64, inside and (quadratic continuation) outside the bounds.
        rng = np.random.default_rng(5)
        shape = (400,) if classes == 0 else (400, classes)
        with jax.enable_x64(True):
            logits = jnp.asarray(3.0 * rng.normal(size=shape))
            labels = jnp.asarray(rng.integers(0, max(classes, 2), 400))
            lo, hi = np.log(0.5), np.log(4.0)
            derivatives, _, _ = _nll_change(_label_gaps(logits, labels), lo, hi)

            def change(log_t):
                inside = jnp.clip(log_t, lo, hi)
                scaled = _nll(logits * jnp.exp(-inside), labels, True)
                return scaled - _nll(logits, labels, True) + 0.5 * (log_t - inside) ** 2

            for log_t in (-0.3, 0.0, 0.7, 1.9):
                result = derivatives(jnp.asarray(log_t))
                assert result.value.dtype == jnp.float64
                np.testing.assert_allclose(result.value, change(log_t), rtol=1e-10, atol=1e-13)
                np.testing.assert_allclose(result.slope, jax.grad(change)(log_t), rtol=1e-9)
                np.testing.assert_allclose(
                    result.curvature, jax.grad(jax.grad(change))(log_t), rtol=1e-8
                )

    def test_float64_logits_fit_in_float64(self, binary_data):
        logits, labels = binary_data
        with jax.enable_x64(True):
            fit = fit_temperature(logits.astype(np.float64), labels)
            assert fit.temperature.dtype == jnp.float64
        assert float(fit.temperature) == pytest.approx(scipy_temperature(logits, labels), rel=1e-6)
        assert bool(fit.converged)

    def test_tight_tol_hands_over_to_newton_early(self):
        # tol = 1e-6 (the calibrators' default) lies below float32 steps in log T. Stopping
        # L-BFGS at steps below tol / 10 ran these problems to max_iter = 100, and a vmapped
        # batch with them; L-BFGS must stop after a few iterations and still converge.
        for seed in (2, 7, 18):
            rng = np.random.default_rng(seed)
            truth = rng.normal(0.0, 1.5, 1000)
            labels = (rng.random(1000) < 1.0 / (1.0 + np.exp(-truth))).astype(np.int32)
            logits = (3.0 * truth + 0.5).astype(np.float32)
            fit = fit_temperature(logits, labels, tol=1e-6)
            assert int(fit.num_iter) <= 15 and bool(fit.converged)
            expected = scipy_temperature(logits, labels)
            assert float(fit.temperature) == pytest.approx(expected, rel=1e-5)


class TestApplyTemperature:
    def test_divides(self):
        z = np.array([[1.0, -2.0], [4.0, 0.5]], np.float32)
        np.testing.assert_allclose(apply_temperature(z, 2.0), z / 2.0)
        np.testing.assert_allclose(jax.jit(apply_temperature)(z, 4.0), z / 4.0)

    @pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
    def test_rejects_bad_temperature(self, bad):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            apply_temperature(np.ones(3), bad)
        with pytest.raises(ValueError, match="temperature must be a scalar"):
            apply_temperature(np.ones(3), np.ones(2))

    def test_rejects_bad_logits_and_overflow(self):
        with pytest.raises(ValueError, match="logits must be finite"):
            apply_temperature(np.array([1.0, np.nan]), 2.0)
        with pytest.raises(ValueError, match="logits must be finite"):
            apply_temperature(np.array([np.inf, 0.0]), 2.0)
        with pytest.raises(ValueError, match="temperature 1.4e-45 is too small"):
            apply_temperature(np.array([1.0, -2.0], np.float32), 1e-45)
        # Under jit the values are unknown: no check, no sync.
        assert np.isinf(jax.jit(apply_temperature)(np.ones(2, np.float32), 1e-45)).all()


class TestValidation:
    @pytest.mark.parametrize(
        ("logits", "labels", "kwargs", "error", "match"),
        [
            (np.array([np.nan, 1.0]), np.array([0, 1]), {}, ValueError, "logits must be finite"),
            (np.zeros(2), np.array([0, 2]), {}, ValueError, "labels must be in"),
            (np.zeros((2, 1)), np.array([0, 0]), {}, ValueError, "K >= 2"),
            (np.zeros(3), np.array([0, 1]), {}, ValueError, "one entry per sample"),
            (np.zeros(2), np.array([0, 1]), {"max_iter": 0}, ValueError, "max_iter must be >= 1"),
            (np.zeros(2), np.array([0, 1]), {"tol": 0.0}, ValueError, "tol must be"),
            (np.zeros(2), np.array([0, 1]), {"bounds": (2.0, 1.0)}, ValueError, "bounds must"),
            (np.zeros(2), np.array([0, 1]), {"bounds": (0.0, 1.0)}, ValueError, "bounds must"),
            (np.zeros(2), np.array([0.0, 1.0]), {}, TypeError, "labels must be integers"),
        ],
    )
    def test_fit_rejects(self, logits, labels, kwargs, error, match):
        with pytest.raises(error, match=match):
            fit_temperature(logits, labels, **kwargs)
