"""Tests for jaxcal.calibration.kernel: SKCE and MMCE against the O(N^2) definitions."""

import jax
import numpy as np
import pytest

from jaxcal.calibration import kernel_calibration_error, mmce
from jaxcal.calibration.kernel import BLOCK


def softmax64(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_skce(probs, labels, bandwidth):
    """float64 (unbiased, biased) SKCE with the full N x N matrix."""
    n = len(labels)
    r = np.eye(probs.shape[1])[labels] - probs
    distance = ((probs[:, None] - probs[None]) ** 2).sum(-1)
    h = np.exp(-distance / (2 * bandwidth**2)) * (r @ r.T)
    return (h.sum() - np.trace(h)) / (n * (n - 1)), h.sum() / n**2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = BLOCK + 45  # one full block and a padded one
    z = rng.normal(0, 2, (n, 3))
    y = np.array([rng.choice(3, p=row) for row in softmax64(z / 1.5)])
    return z, y


@pytest.mark.parametrize("bandwidth", [0.1, 0.5])
def test_skce_matches_full_matrix(data, bandwidth):
    z, y = data
    unbiased, biased = reference_skce(softmax64(z), y, bandwidth)
    kw = {"bandwidth": bandwidth}
    got_u = kernel_calibration_error(z.astype(np.float32), y, **kw)
    got_b = kernel_calibration_error(z.astype(np.float32), y, estimator="biased", **kw)
    assert float(got_u) == pytest.approx(unbiased, abs=1e-6)
    assert float(got_b) == pytest.approx(biased, abs=1e-6)
    assert float(got_b) >= 0.0


def test_binary_scores_are_two_class_distributions(data):
    z, y = data
    logit, yb = z[:, 0], (y == 0).astype(int)
    p = 1 / (1 + np.exp(-logit))
    unbiased, _ = reference_skce(np.stack([1 - p, p], -1), yb, 0.1)
    assert float(kernel_calibration_error(logit.astype(np.float32), yb)) == pytest.approx(
        unbiased, abs=1e-6
    )


def test_mmce_matches_definition(data):
    z, y = data
    probs = softmax64(z)
    c, t = probs.max(1), (probs.argmax(1) == y).astype(float)
    k = np.exp(-np.abs(c[:, None] - c[None]) / 0.4)
    expected = np.sqrt(((t - c)[:, None] * (t - c)[None] * k).sum()) / len(y)
    assert float(mmce(z.astype(np.float32), y)) == pytest.approx(expected, abs=1e-6)


def test_unbiased_skce_centres_on_zero_when_calibrated():
    rng = np.random.default_rng(1)
    p = rng.random((20, 400)).astype(np.float32)
    y = (rng.random((20, 400)) < p).astype(np.int32)
    values = np.asarray(
        jax.vmap(lambda a, b: kernel_calibration_error(a, b, from_logits=False))(p, y)
    )
    # Mean 0 under calibration: the mean of 20 estimates lies within 3 standard errors.
    assert abs(values.mean()) < 3 * values.std(ddof=1) / np.sqrt(20)
    miscalibrated = kernel_calibration_error(
        p[0], (rng.random(400) < p[0] ** 3).astype(int), from_logits=False
    )
    assert float(miscalibrated) > values.max()


def test_jit_and_vmap_equal_eager(data):
    z, y = data
    zs = np.stack([z, z[::-1]]).astype(np.float32)
    ys = np.stack([y, y[::-1]])
    eager = [float(kernel_calibration_error(zs[i], ys[i])) for i in range(2)]
    np.testing.assert_allclose(jax.vmap(kernel_calibration_error)(zs, ys), eager, atol=1e-7)
    assert float(jax.jit(mmce)(zs[0], ys[0])) == pytest.approx(float(mmce(zs[0], ys[0])), abs=1e-7)


def test_input_errors():
    with pytest.raises(ValueError, match="estimator must be one of"):
        kernel_calibration_error(np.zeros(3), np.zeros(3, int), estimator="plug-in")
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        kernel_calibration_error(np.zeros(3), np.zeros(3, int), bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        mmce(np.zeros(3), np.zeros(3, int), width=-1.0)
