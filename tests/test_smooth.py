"""Tests for jaxcal.calibration.smooth: parity with relplot, invariants, jit/vmap, the band."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxcal.calibration import SmoothECE, SmoothReliability, smooth_ece, smooth_reliability

relplot = pytest.importorskip("relplot")

PARITY_TOL = 1e-4  # the bar for relplot parity (float32 gives ~1e-8)
N = 600  # one shape for most tests: one compilation


def simulated(seed, n=N, power=1.0):
    """p ~ U(0, 1) and y ~ Bernoulli(p ** power) (power 1: calibrated)."""
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    return p, (rng.random(n) < p**power).astype(np.int32)


@pytest.mark.parametrize(("seed", "power"), [(0, 1.0), (1, 2.0), (2, 0.5)])
def test_fixed_point_matches_relplot(seed, power):
    p, y = simulated(seed, power=power)
    reference, width = relplot.smECE(p, y, return_width=True)
    got = smooth_ece(p.astype(np.float32), y, from_logits=False)
    assert isinstance(got, SmoothECE)
    assert float(got.error) == pytest.approx(reference, abs=PARITY_TOL)
    assert float(got.bandwidth) == pytest.approx(width, abs=1e-7)


@pytest.mark.parametrize("bandwidth", [0.004, 0.03, 0.2])
def test_fixed_bandwidth_matches_relplot(bandwidth):
    # 0.004 and 0.03 use relplot's finer grids (more kernel and integration points).
    p, y = simulated(3, power=1.5)
    reference = relplot.smECE_sigma(p, y, bandwidth)
    got = smooth_ece(p.astype(np.float32), y, from_logits=False, bandwidth=bandwidth)
    assert float(got.error) == pytest.approx(reference, abs=PARITY_TOL)
    assert float(got.bandwidth) == pytest.approx(bandwidth)


def test_multiclass_and_logits_match_relplot():
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, (N, 4))
    y = rng.integers(0, 4, N)
    f, correct = relplot.multiclass_logits_to_confidences(z, y)
    reference = relplot.smECE(f, correct)
    assert float(smooth_ece(z.astype(np.float32), y).error) == pytest.approx(
        reference, abs=PARITY_TOL
    )
    logit = rng.normal(0, 2, N)
    yb = (rng.random(N) < 1 / (1 + np.exp(-logit / 2))).astype(int)
    reference = relplot.smECE(1 / (1 + np.exp(-logit)), yb)
    assert float(smooth_ece(logit.astype(np.float32), yb).error) == pytest.approx(
        reference, abs=PARITY_TOL
    )


def test_jit_and_vmap_equal_eager():
    p = np.stack([simulated(s, power=1.0 + s)[0] for s in range(2)]).astype(np.float32)
    y = np.stack([simulated(s, power=1.0 + s)[1] for s in range(2)])
    eager = [smooth_ece(p[i], y[i], from_logits=False) for i in range(2)]
    batched = jax.vmap(lambda a, b: smooth_ece(a, b, from_logits=False))(p, y)
    jitted = jax.jit(lambda a, b: smooth_ece(a, b, from_logits=False))(p[1], y[1])
    for i in range(2):
        assert float(batched.error[i]) == pytest.approx(float(eager[i].error), abs=1e-6)
        assert float(batched.bandwidth[i]) == float(eager[i].bandwidth)
    assert float(jitted.error) == pytest.approx(float(eager[1].error), abs=1e-6)


def test_calibrated_data_tends_to_zero():
    errors = [float(smooth_ece(*simulated(5, n=n), from_logits=False).error) for n in (N, 20_000)]
    assert errors[1] < errors[0]
    assert errors[1] < 0.02


@settings(max_examples=20, deadline=None)
@given(
    p=hnp.arrays(np.float32, 64, elements=st.floats(0, 1, width=32)),
    y=hnp.arrays(np.int32, 64, elements=st.integers(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_bounds_permutation_invariance_and_parity(p, y, seed):
    got = smooth_ece(p, y, from_logits=False, bandwidth=0.05)
    order = np.random.default_rng(seed).permutation(64)
    permuted = smooth_ece(p[order], y[order], from_logits=False, bandwidth=0.05)
    assert 0.0 <= float(got.error) <= 1.0
    assert float(permuted.error) == pytest.approx(float(got.error), abs=1e-6)
    reference = relplot.smECE_sigma(p.astype(np.float64), y, 0.05)
    assert float(got.error) == pytest.approx(reference, abs=PARITY_TOL)


def test_reliability_curve_and_density_match_relplot():
    from relplot.kernels import ReflectedGaussianKernel

    p, y = simulated(6, power=1.5)
    result = smooth_reliability(p.astype(np.float32), y, jax.random.key(0), from_logits=False)
    assert isinstance(result, SmoothReliability)
    kernel = ReflectedGaussianKernel(float(result.bandwidth))
    grid = np.linspace(0, 1, 200)
    curve, _ = kernel.smooth(p, y.astype(float), grid)
    np.testing.assert_allclose(np.asarray(result.grid), grid, atol=1e-6)
    np.testing.assert_allclose(np.asarray(result.curve), curve, atol=1e-5)
    np.testing.assert_allclose(np.asarray(result.density), kernel.kde(p, grid), atol=1e-4)
    assert float(result.error) == pytest.approx(relplot.smECE(p, y), abs=PARITY_TOL)
    lower, upper = np.asarray(result.lower), np.asarray(result.upper)
    inside = (lower <= np.asarray(result.curve) + 1e-6) & (np.asarray(result.curve) <= upper + 1e-6)
    assert inside.mean() > 0.95
    assert (upper - lower).min() > 0.0


def test_reliability_band_narrows_with_n():
    key = jax.random.key(1)
    widths = []
    for n in (N, 6000):
        p, y = simulated(7, n=n)
        result = smooth_reliability(p, y, key, num_resamples=50, bandwidth=0.1, from_logits=False)
        widths.append(float(jnp.mean(result.upper - result.lower)))
    assert widths[1] < 0.6 * widths[0]


def test_input_errors():
    p, y = simulated(8, n=10)
    with pytest.raises(ValueError, match="bandwidth must be in"):
        smooth_ece(p, y, from_logits=False, bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth must be in"):
        smooth_ece(p, y, from_logits=False, bandwidth=2.0)
    with pytest.raises(ValueError, match="binary must be one of"):
        smooth_ece(p, y, from_logits=False, binary="pos")
    with pytest.raises(TypeError, match="key"):
        smooth_reliability(p, y, 0, from_logits=False)
    with pytest.raises(ValueError, match="num_resamples must be >= 1"):
        smooth_reliability(p, y, jax.random.key(0), num_resamples=0, from_logits=False)
