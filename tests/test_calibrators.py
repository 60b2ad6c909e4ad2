"""Tests for jaxcal.calibration.calibrators: parity with float64 references, contract, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax

from benchmarks import calibrator_references as ref
from jaxcal.calibration import (
    CALIBRATORS,
    Calibrator,
    applicable_methods,
    fit_calibrator,
    fit_temperature,
)

N, K = 400, 4
BINARY = ("temperature", "platt", "beta", "histogram", "isotonic")
MULTICLASS = (
    "temperature",
    "vector",
    "matrix",
    "dirichlet",
    "histogram",
    "isotonic",
    "ensemble_temperature",
)


def overconfident(n=N, k=None, seed=0, scale=3.0):
    """Logits `scale` times too confident (and shifted) for labels drawn from the truth."""
    rng = np.random.default_rng(seed)
    shape = (n,) if k is None else (n, k)
    truth = rng.normal(0.0, 1.2, shape)
    if k is None:
        labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-truth))).astype(np.int32)
        logits = scale * truth + 0.5
    else:
        p = np.exp(truth) / np.exp(truth).sum(axis=1, keepdims=True)
        labels = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1).astype(np.int32)
        logits = scale * truth + np.linspace(-0.5, 0.5, k)
    return logits.astype(np.float32), labels


def ties(logits):
    """Rounds a third of the logits so that isotonic and histogram see exact ties."""
    out = logits.copy()
    out[: len(out) // 3] = np.round(out[: len(out) // 3])
    return out


def probabilities(calibrator, logits):
    return np.asarray(calibrator.probabilities(logits), np.float64)


def test_calibrators_lists_every_method_once():
    assert sorted(CALIBRATORS) == sorted(set(BINARY + MULTICLASS))
    assert applicable_methods(1) == BINARY
    assert applicable_methods(2) == MULTICLASS


PARITY = [
    ("platt", None, ref.platt, 1e-4),
    ("beta", None, ref.beta, 1e-4),
    ("vector", K, ref.vector, 1e-4),
    ("matrix", K, ref.matrix, 1e-4),
    ("ensemble_temperature", K, ref.ensemble_temperature, 1e-4),
    ("histogram", None, ref.histogram, 1e-6),
    ("histogram", K, ref.histogram, 1e-6),
]


@pytest.mark.parametrize(("method", "k", "reference", "atol"), PARITY)
def test_matches_reference_on_held_out_logits(method, k, reference, atol):
    logits, labels = overconfident(k=k)
    logits = ties(logits) if method in ("isotonic", "histogram") else logits
    test_logits, _ = overconfident(n=300, k=k, seed=7)
    test_logits = np.concatenate([test_logits, logits[:100]])
    calibrator = fit_calibrator(method, logits, labels)
    assert bool(calibrator.converged)
    expected = reference(logits, labels)(test_logits.astype(np.float64))
    np.testing.assert_allclose(probabilities(calibrator, test_logits), expected, atol=atol)


@pytest.mark.parametrize("k", [None, K])
def test_isotonic_matches_sklearn_on_the_same_probabilities(k):
    # Isotonic fits are linear between fit points that can be one float32 ulp apart, so the
    # reference gets jaxcal's own float32 probabilities (any rounding difference would be
    # amplified by the steep interpolation between such points).
    logits, labels = overconfident(k=k)
    logits = ties(logits)
    test_logits = np.concatenate([overconfident(n=300, k=k, seed=7)[0], logits[:100]])
    calibrator = fit_calibrator("isotonic", logits, labels)
    to_p = jax.nn.sigmoid if k is None else jax.nn.softmax
    expected = ref.isotonic_on_probabilities(np.asarray(to_p(logits), np.float64), labels)(
        np.asarray(to_p(test_logits), np.float64)
    )
    np.testing.assert_allclose(probabilities(calibrator, test_logits), expected, atol=1e-6)


@pytest.mark.parametrize(("lam", "mu"), [(0.0, 0.0), (1e-2, 1e-3), (0.5, 0.5)])
def test_dirichlet_matches_scipy_odir_optimum(lam, mu):
    logits, labels = overconfident(k=K, seed=3)
    calibrator = fit_calibrator("dirichlet", logits, labels, lam=lam, mu=mu)
    assert bool(calibrator.converged)
    expected = ref.dirichlet(logits, labels, lam, mu)(logits.astype(np.float64))
    np.testing.assert_allclose(probabilities(calibrator, logits), expected, atol=1e-4)


def test_matrix_with_odir_equals_scipy_on_logits():
    logits, labels = overconfident(k=K, seed=4)
    calibrator = fit_calibrator("matrix", logits, labels, lam=0.1, mu=0.1)
    # Matrix scaling with ODIR is the Dirichlet objective on z instead of log softmax(z).
    w, b = ref._fit_multinomial(logits.astype(np.float64), labels, 0.1, 0.1)
    expected = ref.softmax(logits.astype(np.float64) @ w.T + b, axis=1)
    np.testing.assert_allclose(probabilities(calibrator, logits), expected, atol=1e-4)


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
@pytest.mark.parametrize("k", [None, K])
def test_histogram_binnings_match_numpy(binning, k):
    logits, labels = overconfident(n=N - 1, k=k, seed=5)
    calibrator = fit_calibrator("histogram", logits, labels, num_bins=7, binning=binning)
    expected = ref.histogram(logits, labels, 7, binning)(logits.astype(np.float64))
    np.testing.assert_allclose(probabilities(calibrator, logits), expected, atol=1e-6)


@pytest.mark.parametrize("k", [None, K])
def test_temperature_is_fit_temperature(k):
    logits, labels = overconfident(k=k)
    calibrator = fit_calibrator("temperature", logits, labels)
    fit = fit_temperature(logits, labels)
    assert float(calibrator.params.temperature) == float(fit.temperature)
    np.testing.assert_allclose(calibrator.logits(logits), logits / fit.temperature, rtol=1e-6)
    assert float(calibrator.nll_after) == float(fit.nll_after)


def test_known_answers():
    # Platt on two logit values with positive rates 1/4 and 3/4: sigmoid(-a + b) = 1/4,
    # sigmoid(a + b) = 3/4, so b = 0 and a = log 3.
    z = np.array([-1.0] * 4 + [1.0] * 4, np.float32)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    platt = fit_calibrator("platt", z, y)
    np.testing.assert_allclose(platt.params, (np.log(3.0), 0.0), atol=1e-5)
    # Isotonic: targets 1, 0, 1, 1 in score order pool the first two to 0.5.
    z = np.array([-2.0, -1.0, 1.0, 2.0], np.float32)
    iso = fit_calibrator("isotonic", z, np.array([1, 0, 1, 1]))
    np.testing.assert_allclose(iso.probabilities(z), [0.5, 0.5, 1.0, 1.0])
    # Histogram with 2 uniform bins: p < 0.5 holds one positive of three, p >= 0.5 two of two.
    z = np.array([-3.0, -2.0, -1.0, 1.0, 2.0], np.float32)
    hist = fit_calibrator("histogram", z, np.array([0, 1, 0, 1, 1]), num_bins=2)
    np.testing.assert_allclose(hist.probabilities(z), [1 / 3] * 3 + [1.0] * 2, rtol=1e-6)


@pytest.mark.parametrize("method", BINARY)
def test_binary_nll_drops_on_miscalibrated_fit_set(method):
    logits, labels = overconfident()
    calibrator = fit_calibrator(method, logits, labels)
    assert float(calibrator.nll_after) < float(calibrator.nll_before) - 1e-3
    assert bool(calibrator.converged)


@pytest.mark.parametrize("method", MULTICLASS)
def test_multiclass_nll_drops_on_miscalibrated_fit_set(method):
    logits, labels = overconfident(k=K)
    calibrator = fit_calibrator(method, logits, labels)
    assert float(calibrator.nll_after) < float(calibrator.nll_before) - 1e-3
    assert bool(calibrator.converged)


def _all_finite(calibrator):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(calibrator))


@pytest.mark.parametrize("method", ["platt", "beta", "vector", "matrix", "dirichlet"])
def test_separable_data_is_finite_and_not_converged(method):
    logits, _ = overconfident(k=None if method in BINARY else K)
    labels = (logits > 0).astype(np.int32) if logits.ndim == 1 else logits.argmax(axis=1)
    unpenalised = {"lam": 0.0, "mu": 0.0} if method == "dirichlet" else {}
    calibrator = fit_calibrator(method, logits, labels, **unpenalised)
    assert _all_finite(calibrator)
    assert not bool(calibrator.converged)
    assert np.isfinite(probabilities(calibrator, logits)).all()


@pytest.mark.parametrize("method", MULTICLASS)
def test_missing_class_is_finite(method):
    logits, labels = overconfident(k=K, seed=2)
    labels = np.where(labels == K - 1, 0, labels)
    calibrator = fit_calibrator(method, logits, labels)
    assert _all_finite(calibrator)
    p = probabilities(calibrator, logits)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    if method in ("vector", "matrix", "dirichlet"):
        assert not bool(calibrator.converged)


@pytest.mark.parametrize(("method", "k"), [("platt", None), ("isotonic", K)])
def test_vmap_and_jit_equal_eager(method, k):
    data = [overconfident(k=k, seed=s) for s in range(3)]
    logits = np.stack([d[0] for d in data])
    labels = np.stack([d[1] for d in data])
    batched = jax.vmap(lambda z, y: fit_calibrator(method, z, y))(logits, labels)
    jitted = jax.jit(lambda z, y: fit_calibrator(method, z, y))(logits[0], labels[0])
    assert isinstance(batched, Calibrator) and batched.converged.shape == (3,)
    for i, (z, y) in enumerate(data):
        eager = fit_calibrator(method, z, y)
        one = jax.tree.map(lambda x, i=i: x[i], batched)
        # Parameters, not probabilities: isotonic interpolation amplifies 1-ulp differences.
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), one, eager)
        assert one.method == eager.method and bool(one.converged)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
        jitted,
        fit_calibrator(method, *data[0]),
    )


SMALL = N  # the parity tests' shape: the compiled fits are reused


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(0.3, 4.0),
    method=st.sampled_from(BINARY),
)
def test_binary_invariants(seed, scale, method):
    logits, labels = overconfident(n=SMALL, seed=seed, scale=scale)
    calibrator = fit_calibrator(method, logits, labels)
    p = probabilities(calibrator, logits)
    assert ((p >= 0.0) & (p <= 1.0)).all()
    # Histogram binning is not monotone (bin frequencies need not increase); the others are,
    # Platt when its slope is >= 0.
    increasing = method != "histogram" and (
        method != "platt" or float(calibrator.params.weight) >= 0.0
    )
    if increasing:
        order = np.argsort(logits, kind="stable")
        assert (np.diff(p[order]) >= -1e-6).all()
    permutation = np.random.default_rng(seed).permutation(SMALL)
    permuted = fit_calibrator(method, logits[permutation], labels[permutation])
    np.testing.assert_allclose(probabilities(permuted, logits), p, atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(0.3, 4.0),
    method=st.sampled_from(MULTICLASS),
)
def test_multiclass_invariants(seed, scale, method):
    logits, labels = overconfident(n=SMALL, k=K, seed=seed, scale=scale)
    calibrator = fit_calibrator(method, logits, labels)
    p = probabilities(calibrator, logits)
    assert ((p >= 0.0) & (p <= 1.0)).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    permutation = np.random.default_rng(seed).permutation(SMALL)
    permuted = fit_calibrator(method, logits[permutation], labels[permutation])
    np.testing.assert_allclose(probabilities(permuted, logits), p, atol=1e-4)


def test_bad_inputs_raise_before_work():
    z, y = overconfident(n=20)
    zk, yk = overconfident(n=20, k=K)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_calibrator("bbq", z, y)
    with pytest.raises(ValueError, match=r"'platt' does not apply .*'vector'"):
        fit_calibrator("platt", zk, yk)
    with pytest.raises(ValueError, match=r"'dirichlet' does not apply .*'beta'"):
        fit_calibrator("dirichlet", z, y)
    with pytest.raises(TypeError, match=r"unknown options \['lam'\]"):
        fit_calibrator("platt", z, y, lam=1.0)
    with pytest.raises(TypeError, match="accepts none"):
        fit_calibrator("isotonic", z, y, num_bins=3)
    with pytest.raises(ValueError, match="lam must be a finite float >= 0"):
        fit_calibrator("dirichlet", zk, yk, lam=-1.0)
    with pytest.raises(ValueError, match="tol must be a finite float > 0"):
        fit_calibrator("vector", zk, yk, tol=0.0)
    with pytest.raises(TypeError, match="max_iter must be a Python int"):
        fit_calibrator("matrix", zk, yk, max_iter=2.5)
    with pytest.raises(ValueError, match="binning must be one of"):
        fit_calibrator("histogram", z, y, binning="width")
    with pytest.raises(ValueError, match="bounds must be"):
        fit_calibrator("temperature", z, y, bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="logits must be finite"):
        fit_calibrator("platt", np.where(np.arange(20) == 3, np.nan, z), y)
    with pytest.raises(ValueError, match="labels must be in"):
        fit_calibrator("vector", zk, yk + K)
    with pytest.raises(ValueError, match="labels must have one entry per sample"):
        fit_calibrator("beta", z, y[:-1])


def test_applying_to_the_wrong_shape_raises():
    zk, yk = overconfident(k=K)
    vector = fit_calibrator("vector", zk, yk)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]: this vector calibrator"):
        vector.probabilities(zk[:, :3])
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        vector.logits(zk[:, 0])
    z, y = overconfident()
    platt = fit_calibrator("platt", z, y)
    with pytest.raises(ValueError, match=r"shape \[N\]: this platt calibrator"):
        platt.probabilities(np.stack([z, -z], axis=1))
    with pytest.raises(ValueError, match="no finite calibrated logits"):
        fit_calibrator("isotonic", z, y).logits(z)
    with pytest.raises(ValueError, match="logits must be finite"):
        platt.probabilities(np.full(3, np.inf, np.float32))


def _odir_objective64(weight, bias, logits, labels, lam, mu):
    """float64 mean NLL of softmax(W log softmax(z) + b) plus the ODIR penalty."""
    k = logits.shape[1]
    features = log_softmax(np.asarray(logits, np.float64), axis=1)
    log_p = log_softmax(features @ weight.T + bias, axis=1)
    nll = -np.mean(log_p[np.arange(len(labels)), labels])
    off = weight * (1.0 - np.eye(k))
    return nll + lam / (k * (k - 1)) * np.sum(off**2) + mu / k * np.sum(bias**2)


@pytest.mark.parametrize(("seed", "scale"), [(0, 3.0), (1, 3.0), (2, 10.0)])
def test_dirichlet_converges_with_its_defaults_to_the_odir_optimum(seed, scale):
    # 1,000 x 10 samples: the softmax-invariant shifts of W and b are curved only by the
    # penalty (1e-5) and the features are correlated (scale 10: log softmax down to ~-60);
    # before the whitened, profiled fit 28 of 30 such fits ran out of their 500 L-BFGS
    # iterations. Now each converges, to the float64 optimum's objective, and to its
    # least-penalised parameters.
    logits, labels = overconfident(n=1_000, k=10, seed=seed, scale=scale)
    calibrator = fit_calibrator("dirichlet", logits, labels)
    assert bool(calibrator.converged)
    weight, bias = (np.asarray(x, np.float64) for x in calibrator.params)
    features = log_softmax(logits.astype(np.float64), axis=1)
    w_ref, b_ref = ref._fit_multinomial(features, labels, 1e-3, 1e-3)
    ours = _odir_objective64(weight, bias, logits, labels, 1e-3, 1e-3)
    best = _odir_objective64(w_ref, b_ref, logits, labels, 1e-3, 1e-3)
    assert ours <= best + 1e-7
    np.testing.assert_allclose(weight, w_ref, atol=2e-3)
    np.testing.assert_allclose(bias, b_ref, atol=2e-3)


def test_least_penalised_keeps_the_softmax_and_lowers_the_penalty():
    from jaxcal.calibration import _scaling

    rng = np.random.default_rng(0)
    params = _scaling.AffineParams(
        jnp.asarray(rng.normal(size=(5, 5)), jnp.float32), jnp.asarray(rng.normal(size=5))
    )
    best = _scaling.least_penalised(params)
    x = jnp.asarray(rng.normal(size=(50, 5)), jnp.float32)
    np.testing.assert_allclose(
        jax.nn.softmax(x @ best.weight.T + best.bias),
        jax.nn.softmax(x @ params.weight.T + params.bias),
        atol=1e-6,
    )
    penalty = _scaling.odir_penalty(best, 1.0, 1.0)
    assert float(penalty) < float(_scaling.odir_penalty(params, 1.0, 1.0))
    # Any further shift only adds penalty: the shift is optimal.
    for shift in (0.1, -0.1):
        moved = _scaling.AffineParams(best.weight + shift, best.bias + shift)
        assert float(_scaling.odir_penalty(moved, 1.0, 1.0)) > float(penalty)


@pytest.mark.parametrize("case", ["interior", "edge", "vertex", "duplicate"])
def test_simplex_weights_match_slsqp_on_every_kind_of_optimum(case):
    from jaxcal.calibration._ensemble import simplex_weights

    rng = np.random.default_rng(1)
    n = 2_000
    a, b = rng.beta(2.0, 2.0, n), rng.beta(2.0, 5.0, n)
    columns = {
        "interior": (a, b, np.full(n, 0.25)),  # every component helps
        "edge": (a, 0.5 * a + 0.1, np.full(n, 0.25)),  # the second only dilutes the first
        "vertex": (a, 0.3 * a, 0.2 * a),  # the first dominates both others
        "duplicate": (a, a, np.full(n, 0.1)),  # T = 1: the first two components are equal
    }[case]
    label_probs = np.stack(columns, axis=1).astype(np.float32)
    weights, converged = simplex_weights(jnp.asarray(label_probs), 1e-6, 500)
    expected, best = ref.mixture_weights(label_probs)
    assert bool(converged)
    assert float(jnp.sum(weights)) == pytest.approx(1.0, abs=1e-6)
    assert bool(jnp.all(weights >= 0))
    ours = -np.mean(np.log(label_probs.astype(np.float64) @ np.asarray(weights, np.float64)))
    assert ours <= best + 1e-6
    if case != "duplicate":  # there only w0 + w1 is determined
        np.testing.assert_allclose(weights, expected, atol=1e-4)
        assert np.array_equal(np.asarray(weights) == 0, expected < 1e-6)


def test_ensemble_weights_do_not_depend_on_the_sample_order():
    # Found by hypothesis: the optimum has w3 = 0; the softmax-parametrised fit stopped at
    # w3 = 2.8e-4 or 7e-6 depending on the order, 1.3e-4 apart in probabilities.
    logits, labels = overconfident(n=400, k=K, seed=2303, scale=3.0)
    order = np.random.default_rng(2303).permutation(400)
    a = fit_calibrator("ensemble_temperature", logits, labels)
    b = fit_calibrator("ensemble_temperature", logits[order], labels[order])
    assert float(a.params.weights[2]) == 0.0 == float(b.params.weights[2])
    np.testing.assert_allclose(probabilities(a, logits), probabilities(b, logits), atol=1e-6)
