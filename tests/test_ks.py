"""Tests for jaxcal.calibration.ks: the definition in float64, ties, invariants, jit/vmap."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxcal.calibration import ks_calibration_error


def reference_ks(confidence, target):
    """float64: max over distinct confidences c of |sum_{c_j <= c} (c_j - t_j)| / N."""
    confidence = np.asarray(confidence, np.float64)
    residual = confidence - np.asarray(target, np.float64)
    values = [abs(residual[confidence <= c].sum()) for c in np.unique(confidence)]
    return max(values) / len(confidence)


def test_matches_definition_binary_and_multiclass():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p**1.5).astype(int)
    got = ks_calibration_error(p.astype(np.float32), y, from_logits=False)
    assert float(got) == pytest.approx(reference_ks(p, y), abs=1e-6)
    z = rng.normal(0, 2, (500, 5))
    labels = rng.integers(0, 5, 500)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    expected = reference_ks(probs.max(1), probs.argmax(1) == labels)
    assert float(ks_calibration_error(z.astype(np.float32), labels)) == pytest.approx(
        expected, abs=1e-6
    )
    top = ks_calibration_error(p, y, from_logits=False, binary="top_label")
    assert float(top) == pytest.approx(reference_ks(np.maximum(p, 1 - p), (p > 0.5) == y), abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    p=hnp.arrays(np.float32, 40, elements=st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0])),
    y=hnp.arrays(np.int32, 40, elements=st.integers(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_ties_permutation_and_bounds(p, y, seed):
    got = float(ks_calibration_error(p, y, from_logits=False))
    order = np.random.default_rng(seed).permutation(40)
    assert float(ks_calibration_error(p[order], y[order], from_logits=False)) == pytest.approx(
        got, abs=1e-6
    )
    assert got == pytest.approx(reference_ks(p, y), abs=1e-6)
    assert 0.0 <= got <= np.mean(np.abs(p - y)) + 1e-6


def test_calibrated_data_tends_to_zero():
    rng = np.random.default_rng(1)
    errors = []
    for n in (1_000, 100_000):
        p = rng.random(n).astype(np.float32)
        errors.append(
            float(ks_calibration_error(p, (rng.random(n) < p).astype(int), from_logits=False))
        )
    assert errors[1] < errors[0] and errors[1] < 0.005


def test_jit_and_vmap_equal_eager():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, (3, 200)).astype(np.float32)
    y = rng.integers(0, 2, (3, 200))
    eager = [float(ks_calibration_error(z[i], y[i])) for i in range(3)]
    np.testing.assert_allclose(jax.vmap(ks_calibration_error)(z, y), eager, atol=1e-7)
    assert float(jax.jit(ks_calibration_error)(z[0], y[0])) == pytest.approx(eager[0], abs=1e-7)


def test_input_errors():
    with pytest.raises(ValueError, match="binary must be one of"):
        ks_calibration_error(np.zeros(3), np.zeros(3, int), binary="top")
    with pytest.raises(ValueError, match="labels must have one entry per sample"):
        ks_calibration_error(np.zeros(3), np.zeros(2, int))
