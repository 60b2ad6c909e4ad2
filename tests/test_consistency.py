"""Tests for jaxcal.calibration.consistency: uniform p-values when calibrated, power otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcal.calibration import CalibrationTest, calibration_test, ece


def calibrated_logits(key, shape):
    k1, k2 = jax.random.split(key)
    logits = 2.0 * jax.random.normal(k1, shape)
    return logits, jax.random.bernoulli(k2, jax.nn.sigmoid(logits)).astype(jnp.int32)


def test_rejection_rate_at_5_percent_when_calibrated():
    # 1,000 calibrated data sets of 100 samples, 99 resamples each, all in one vmapped call.
    keys = jax.random.split(jax.random.key(0), 1000)
    logits, labels = jax.vmap(lambda k: calibrated_logits(k, (100,)))(keys)
    test_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    run = jax.vmap(lambda z, y, k: calibration_test(z, y, k, num_resamples=99))
    p_values = np.asarray(run(logits, labels, test_keys).p_value)
    rate = np.mean(p_values <= 0.05)
    binomial_sd = np.sqrt(0.05 * 0.95 / 1000)
    assert abs(rate - 0.05) <= 3 * binomial_sd, rate
    # Uniform overall, not only at 5 %: every decile holds about a tenth.
    counts = np.histogram(p_values, bins=10, range=(0, 1))[0]
    assert counts.min() > 60 and counts.max() < 140, counts


def readme_example():
    k1, k2 = jax.random.split(jax.random.key(0))
    true_logit = 2.0 * jax.random.normal(k1, (10_000,))
    labels = jax.random.bernoulli(k2, jax.nn.sigmoid(true_logit)).astype(jnp.int32)
    return true_logit, labels


@pytest.mark.parametrize(
    ("statistic", "n"), [("ece", 10_000), ("smooth_ece", 10_000), ("skce", 1_000)]
)
def test_readme_overconfident_model_is_rejected(statistic, n):
    true_logit, labels = readme_example()
    key = jax.random.key(1)
    over = calibration_test(
        3.0 * true_logit[:n], labels[:n], key, statistic=statistic, num_resamples=99
    )
    fair = calibration_test(true_logit[:n], labels[:n], key, statistic=statistic, num_resamples=99)
    assert isinstance(over, CalibrationTest)
    assert float(over.p_value) == pytest.approx(0.01)  # the smallest possible: (1 + 0) / 100
    assert float(fair.p_value) > 0.05


def test_statistic_and_p_value_by_hand():
    true_logit, labels = readme_example()
    z, y = 3.0 * true_logit[:500], labels[:500]
    key = jax.random.key(2)
    result = calibration_test(z, y, key, num_resamples=20)
    assert float(result.statistic) == pytest.approx(float(ece(z, y)), abs=1e-6)
    p = jax.nn.sigmoid(z)
    log_probs = jnp.log(jnp.stack([1 - p, p], -1).clip(1e-38))
    resampled = [
        float(ece(z, jax.random.categorical(jax.random.fold_in(key, r), log_probs)))
        for r in range(20)
    ]
    expected = (1 + np.sum(np.array(resampled) >= float(result.statistic))) / 21
    assert float(result.p_value) == pytest.approx(expected)


def test_multiclass_resamples_classes():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, (400, 4)).astype(np.float32)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    fair = calibration_test(z, y, jax.random.key(0), num_resamples=99)
    over = calibration_test(3 * z, y, jax.random.key(0), num_resamples=99)
    assert float(fair.p_value) > 0.05
    assert float(over.p_value) == pytest.approx(0.01)


def test_input_errors():
    z, y = np.zeros(4), np.array([0, 1, 0, 1])
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="statistic must be one of"):
        calibration_test(z, y, key, statistic="mce")
    with pytest.raises(ValueError, match="num_resamples must be >= 1"):
        calibration_test(z, y, key, num_resamples=0)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        calibration_test(z, y, key, statistic="skce", bandwidth=0.0)
    with pytest.raises(TypeError, match="key"):
        calibration_test(z, y, 0)
