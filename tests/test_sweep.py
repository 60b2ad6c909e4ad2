"""Tests for jaxcal.calibration.sweep: every entry equals the single-temperature metrics."""

import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcal.calibration import (
    brier_score,
    ece,
    fit_temperature,
    nll,
    reliability_bins,
    temperature_sweep,
)
from jaxcal.calibration import sweep as sweep_module

# The reference `ece` sums each bin's confidences sequentially in float32 (an error of up to
# ~1e-6 relative per bin at 3,000 samples); the sweep's block sums are more exact. Against a
# float64 ECE over the very same bins both agree to 1e-6; against each other to 1e-5.
ECE_ATOL = 1e-5
OPTIONS = [
    {},
    {"closed": "right"},
    {"binary": "top_label", "closed": "right", "norm": "l2", "num_bins": 10},
    {"binning": "quantile", "norm": "max"},
    {"binning": "quantile", "binary": "top_label", "closed": "right"},
]


def overconfident_binary(n=3_000, seed=0):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-true_logit))).astype(np.int32)
    return (3.0 * true_logit + rng.normal(0.0, 1.0, n)).astype(np.float32), labels


def overconfident_multiclass(n=4_000, k=10, seed=1):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.0, 2.0, (n, k))
    probs = np.exp(true_logit) / np.exp(true_logit).sum(axis=1, keepdims=True)
    labels = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1).astype(np.int32)
    return (2.5 * true_logit + rng.normal(0.0, 0.5, (n, k))).astype(np.float32), labels


def ece64(bins, index, confidences, norm):
    """float64 calibration error of `bins[index]`'s counts with float64 confidence sums."""
    counts = np.asarray(bins.counts[index])
    target = np.asarray(bins.target_sum[index], np.float64)
    order = np.argsort(confidences, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    sums = np.add.reduceat(np.append(np.asarray(confidences, np.float64)[order], 0.0), bounds[:-1])
    sums[counts == 0] = 0.0
    gap = np.abs(target - sums) / np.maximum(counts, 1)
    weight = counts / counts.sum()
    if norm == "l1":
        return float(np.sum(weight * gap))
    if norm == "l2":
        return float(np.sqrt(np.sum(weight * gap**2)))
    return float(gap[counts > 0].max())


def assert_sweep_matches(logits, labels, temperatures, **kwargs):
    """Each entry of the sweep equals the single-temperature bins and metrics."""
    sweep = temperature_sweep(logits, labels, temperatures, **kwargs)
    norm = kwargs.pop("norm", "l1")
    binary = kwargs.get("binary", "positive")
    for i, t in enumerate(np.asarray(temperatures)):
        scaled = jnp.asarray(logits) / t
        single = reliability_bins(scaled, labels, **kwargs)
        np.testing.assert_array_equal(sweep.bins.counts[i], single.counts)
        np.testing.assert_array_equal(sweep.bins.target_sum[i], single.target_sum)
        np.testing.assert_array_equal(sweep.bins.edges[i], single.edges)
        probs = jax.nn.sigmoid(scaled)
        confidence = probs if binary == "positive" else jax.nn.sigmoid(jnp.abs(scaled))
        assert float(sweep.ece[i]) == pytest.approx(
            ece64(sweep.bins, i, np.asarray(confidence), norm), abs=1e-6
        )
        # Probabilities give the same confidences only for p(y = 1): max(p, 1 - p) rounds
        # differently from sigmoid(|z|).
        inputs = ((scaled, True), (probs, False)) if binary == "positive" else ((scaled, True),)
        for scores, from_logits in inputs:
            assert float(sweep.ece[i]) == pytest.approx(
                float(ece(scores, labels, from_logits=from_logits, norm=norm, **kwargs)),
                abs=ECE_ATOL,
            )
        assert float(sweep.nll[i]) == pytest.approx(float(nll(scaled, labels)), rel=1e-6)
        assert float(sweep.brier[i]) == pytest.approx(
            float(brier_score(scaled, labels)), rel=1e-6, abs=1e-9
        )
    return sweep


def assert_same_sweep(a, b):
    """Same bins; float sums equal up to float32 rounding (compiled fusions may differ)."""
    for name in ("counts", "target_sum", "edges"):
        np.testing.assert_array_equal(getattr(a.bins, name), getattr(b.bins, name))
    for x, y in ((a.ece, b.ece), (a.nll, b.nll), (a.brier, b.brier)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.bins.confidence_sum, b.bins.confidence_sum, rtol=1e-6)


@pytest.fixture(scope="module")
def binary_data():
    return overconfident_binary()


class TestBinarySweep:
    @pytest.mark.parametrize("kwargs", OPTIONS)
    def test_entries_equal_single_metrics(self, binary_data, kwargs):
        logits, labels = binary_data
        temperatures = jnp.geomspace(0.5, 8.0, 5)
        sweep = assert_sweep_matches(logits, labels, temperatures, **kwargs)
        num_bins = kwargs.get("num_bins", 15)
        assert sweep.ece.shape == sweep.nll.shape == sweep.brier.shape == (5,)
        assert sweep.bins.counts.shape == (5, num_bins)
        assert sweep.bins.edges.shape == (5, num_bins + 1)
        np.testing.assert_array_equal(sweep.bins.counts.sum(axis=1), 3000)
        np.testing.assert_allclose(sweep.accuracy, np.mean((logits > 0) == labels))

    def test_float32_sums_stay_exact_at_scale(self):
        # 300,000 samples: each bin's confidence sum adds a few group totals and two short
        # heads, so the ECE stays within 1e-7 of float64 sums over the same bins (measured
        # 2e-8; a segment sum of every block total in the bin, in float32, was 4e-7 off).
        logits, labels = overconfident_binary(n=300_000, seed=3)
        temperatures = jnp.asarray([0.5, 1.0, 3.0, 7.0])
        sweep = temperature_sweep(logits, labels, temperatures)
        for i, t in enumerate(np.asarray(temperatures)):
            confidence = np.asarray(jax.nn.sigmoid(jnp.asarray(logits) / t))
            assert float(sweep.ece[i]) == pytest.approx(
                ece64(sweep.bins, i, confidence, "l1"), abs=1e-7
            )

    def test_nll_of_confident_logits_keeps_its_digits(self):
        # Every logit on its label's side and |z| up to ~150: the NLL is the sum of log1p(u)
        # alone, many u far below float32 eps (1 + u rounds to 1). The grouped products of
        # `_sum_log1p` keep them: within 1e-6 of float64 at every T (measured 1.5e-7).
        rng = np.random.default_rng(4)
        z = rng.normal(0.0, 1.5, 10_000)
        labels = (z > 0).astype(np.int32)
        logits = (40.0 * z).astype(np.float32)
        temperatures = np.geomspace(0.25, 8.0, 20).astype(np.float32)
        sweep = temperature_sweep(logits, labels, temperatures)
        z64, sign = logits.astype(np.float64), np.where(labels == 1, 1.0, -1.0)
        for i, t in enumerate(temperatures.astype(np.float64)):
            expected = np.mean(np.logaddexp(0.0, -sign * z64 / t))
            assert float(sweep.nll[i]) == pytest.approx(expected, rel=1e-6)

    def test_sum_log1p_matches_float64(self):
        # Tiny, ordinary and saturated u, and the zeros of the padding, in strided groups.
        u = np.concatenate([np.geomspace(1e-38, 1.0, 4000), np.zeros(96)]).astype(np.float32)
        np.random.default_rng(5).shuffle(u)
        got = float(jax.jit(sweep_module._sum_log1p)(jnp.asarray(u)))
        assert got == pytest.approx(float(np.sum(np.log1p(u.astype(np.float64)))), rel=1e-6)

    @pytest.mark.parametrize("kwargs", OPTIONS)
    def test_edges_ties_saturation_and_underflow(self, kwargs):
        # Logits whose confidence is exactly a bin edge k/10 (at T = 1, and at T = 2 and 4
        # for the doubled ones), exact ties, 0, confidences that round to 1.0 and 0.0, and
        # subnormal logits that become 0 at T = 4 (then predicted negative).
        edges = np.float32(np.arange(1, 10) / 10)
        on_edge = np.log(edges / (1 - edges)).astype(np.float32)
        for _ in range(3):
            p = np.asarray(jax.nn.sigmoid(on_edge))
            on_edge = np.where(p < edges, np.nextafter(on_edge, np.float32(9)), on_edge)
            on_edge = np.where(p > edges, np.nextafter(on_edge, np.float32(-9)), on_edge)
        assert np.array_equal(np.asarray(jax.nn.sigmoid(on_edge)), edges)
        special = np.float32([0.0, 0.0, 40.0, 60.0, -40.0, -120.0, 1e-45, -1e-45, 3e-45])
        logits = np.concatenate([on_edge, 2 * on_edge, 4 * on_edge, np.repeat(on_edge[:3], 5)])
        logits = np.concatenate([logits, special, -logits]).astype(np.float32)
        labels = np.random.default_rng(0).integers(0, 2, logits.shape[0])
        assert_sweep_matches(logits, labels, jnp.asarray([0.5, 1.0, 2.0, 4.0]), **kwargs)

    def test_jit_equals_eager(self, binary_data):
        # Eager calls sort on the host (numpy), traced ones with XLA: the same order.
        logits, labels = binary_data
        temperatures = jnp.geomspace(0.5, 8.0, 5)
        eager = temperature_sweep(logits, labels, temperatures, binary="top_label")
        traced = jax.jit(lambda z: temperature_sweep(z, labels, temperatures, binary="top_label"))(
            jnp.asarray(logits)
        )
        assert_same_sweep(eager, traced)

    @pytest.mark.parametrize("batch_size", [1, 4])
    def test_chunking_does_not_change_results(self, binary_data, batch_size):
        logits, labels = binary_data
        temperatures = jnp.geomspace(0.5, 8.0, 9)
        whole = temperature_sweep(logits, labels, temperatures, batch_size=9)
        chunked = temperature_sweep(logits, labels, temperatures, batch_size=batch_size)
        assert_same_sweep(whole, chunked)

    def test_sigmoid_is_monotonic_on_float32(self):
        # The sweep bisects sigmoid(key / T) along the sorted keys: it must be non-decreasing
        # on consecutive float32 values (checked on 200 windows of 2^14 neighbours).
        starts = np.random.default_rng(1).uniform(0.0, 18.0, 200).astype(np.float32)
        bits = starts.view(np.int32)[:, None] + np.arange(1 << 14, dtype=np.int32)
        x = jnp.asarray(bits.view(np.float32))
        assert bool(jnp.all(jnp.diff(jax.nn.sigmoid(x), axis=1) >= 0))
        assert bool(jnp.all(jnp.diff(jax.nn.sigmoid(-x[:, ::-1]), axis=1) >= 0))

    @pytest.mark.slow
    def test_thousand_temperatures_million_samples(self):
        rng = np.random.default_rng(5)
        logits = jnp.asarray(rng.normal(0, 3, 1_000_000).astype(np.float32))
        labels = jnp.asarray(rng.integers(0, 2, 1_000_000).astype(np.int32))
        temperatures = jnp.geomspace(0.25, 4.0, 1000)
        sweep = jax.block_until_ready(temperature_sweep(logits, labels, temperatures))
        np.testing.assert_array_equal(np.asarray(sweep.bins.counts).sum(1), 1_000_000)
        for i in (0, 999):
            scaled = logits / temperatures[i]
            single = reliability_bins(scaled, labels)
            np.testing.assert_array_equal(sweep.bins.counts[i], single.counts)
            expected = ece64(sweep.bins, i, np.asarray(jax.nn.sigmoid(scaled)), "l1")
            assert float(sweep.ece[i]) == pytest.approx(expected, abs=1e-6)


class TestMulticlassSweep:
    def test_entries_and_best_index(self):
        logits, labels = overconfident_multiclass(n=2_000)
        temperatures = jnp.geomspace(1.0, 5.0, 41)
        sweep = temperature_sweep(logits, labels, temperatures, batch_size=7)
        same = temperature_sweep(logits, labels, temperatures, batch_size=41)
        assert_same_sweep(sweep, same)
        for i in (0, 20, 40):
            scaled = logits / temperatures[i]
            np.testing.assert_array_equal(
                sweep.bins.counts[i], reliability_bins(scaled, labels).counts
            )
            assert float(sweep.ece[i]) == pytest.approx(float(ece(scaled, labels)), abs=1e-6)
        best = float(sweep.best_temperature)
        assert best == float(temperatures[sweep.best_index])
        # The grid step is 4 %: the best grid point lies within one step of the fitted T.
        assert best == pytest.approx(float(fit_temperature(logits, labels).temperature), rel=0.05)

    @pytest.mark.parametrize("kwargs", [{"binning": "quantile", "closed": "right"}, {"norm": "l2"}])
    def test_other_bins(self, kwargs):
        logits, labels = overconfident_multiclass(n=500)
        temperatures = jnp.asarray([0.5, 1.0, 3.0])
        sweep = temperature_sweep(logits, labels, temperatures, **kwargs)
        norm = kwargs.pop("norm", "l1")
        for i, t in enumerate(np.asarray(temperatures)):
            single = reliability_bins(logits / t, labels, **kwargs)
            np.testing.assert_array_equal(sweep.bins.counts[i], single.counts)
            assert float(sweep.ece[i]) == pytest.approx(
                float(ece(logits / t, labels, norm=norm, **kwargs)), abs=1e-6
            )


def test_million_bins_run_in_bounded_memory():
    # num_bins = 10**6 on 200 samples and 3 temperatures: N x B x chunk floats would be 2.4 GB
    # per array; the sweep must stay far below a 3 GiB address-space limit.
    script = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        import jax.numpy as jnp
        import numpy as np
        from jaxcal.calibration import temperature_sweep
        rng = np.random.default_rng(0)
        temperatures = jnp.geomspace(0.5, 2.0, 3)
        for shape in ((200,), (200, 3)):
            logits = rng.normal(0, 2, shape).astype(np.float32)
            labels = rng.integers(0, 2 if len(shape) == 1 else 3, 200)
            sweep = temperature_sweep(logits, labels, temperatures, num_bins=10**6)
            assert sweep.bins.counts.shape == (3, 10**6)
            assert int(sweep.bins.counts.sum()) == 600, sweep.bins.counts.sum()
        print("ok")
        """
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_rejects_bad_temperatures(binary_data):
    logits, labels = binary_data
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        temperature_sweep(logits, labels, jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="temperatures must have shape"):
        temperature_sweep(logits, labels, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="temperatures must have shape"):
        temperature_sweep(logits, labels, jnp.ones(0))
    with pytest.raises(ValueError, match="temperatures must be finite"):
        temperature_sweep(logits, labels, jnp.array([1.0, jnp.nan]))
    with pytest.raises(ValueError, match="norm must be one of"):
        temperature_sweep(logits, labels, jnp.ones(2), norm="l0")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        temperature_sweep(logits, labels, jnp.ones(2), batch_size=0)
