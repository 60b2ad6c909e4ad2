"""Tests for jaxcal.calibration.metrics: known answers, float64 and library parity, invariants."""

import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxcal.calibration import (
    BootstrapInterval,
    ReliabilityBins,
    _checks,
    accuracy,
    brier_score,
    calibration_error,
    classwise_ece,
    ece,
    ece_bootstrap,
    nll,
    reliability_bins,
    top_label_ece,
)
from jaxcal.calibration.metrics import _resample_indices

# REFERENCE.md section 4 test vector.
P_REF64 = np.array([0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 1, 1])
P_REF = P_REF64.astype(np.float32)
Y_REF = np.array([1, 0, 0, 1, 1, 0, 1, 1, 0, 1])

# float32 sums of at most a few thousand values in [0, 1]: relative error well below 1e-6 for
# the tiny exact inputs, ~1e-6 for continuous ones; library parity allows the 2e-5 of the spec.
EXACT_TOL = 1e-6
PARITY_TOL = 2e-5


def sigmoid64(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_conf_target(p, y, binary):
    """float64 (confidence, target) from probabilities [N] or [N, K]."""
    p = np.asarray(p, np.float64)
    y = np.asarray(y)
    if p.ndim == 2:
        return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    if binary == "positive":
        return p, y.astype(np.float64)
    pred = (p > 0.5).astype(int)
    return np.maximum(p, 1 - p), (pred == y).astype(np.float64)


def reference_ece(conf, target, num_bins, closed, norm="l1"):
    """float64 ECE with explicit interval membership on the edges k / B (no searchsorted)."""
    edges = np.arange(num_bins + 1) / num_bins
    n = len(conf)
    gaps, weights = [], []
    for b in range(num_bins):
        lo, hi = edges[b], edges[b + 1]
        if closed == "left":
            member = (conf >= lo) & ((conf < hi) | ((b == num_bins - 1) & (conf == hi)))
        else:
            member = ((conf > lo) | ((b == 0) & (conf == lo))) & (conf <= hi)
        if member.any():
            gaps.append(abs(target[member].mean() - conf[member].mean()))
            weights.append(member.sum() / n)
    gaps, weights = np.array(gaps), np.array(weights)
    if norm == "l1":
        return float(np.sum(weights * gaps))
    if norm == "l2":
        return float(np.sqrt(np.sum(weights * gaps**2)))
    return float(gaps.max())


def grid_probabilities(rng, n, k, denominator):
    """[N, K] probability rows whose entries are multiples of 1 / denominator (exact in f32)."""
    counts = rng.multinomial(denominator, rng.dirichlet(np.full(k, 0.3)), size=n)
    return (counts / denominator).astype(np.float32)


class TestKnownAnswers:
    def test_reference_vector_top_label(self):
        left = ece(P_REF, Y_REF, num_bins=10, from_logits=False, binary="top_label")
        right = ece(
            P_REF, Y_REF, num_bins=10, from_logits=False, binary="top_label", closed="right"
        )
        assert float(left) == pytest.approx(0.385, abs=EXACT_TOL)
        assert float(right) == pytest.approx(0.425, abs=EXACT_TOL)  # Guo et al.

    def test_reference_vector_positive(self):
        # With edges k / 10 the sample 0.3 opens the bin [0.3, 0.4): ECE 0.405 for both rules.
        for closed in ("left", "right"):
            value = ece(P_REF, Y_REF, num_bins=10, from_logits=False, closed=closed)
            assert float(value) == pytest.approx(0.405, abs=EXACT_TOL)
        # netcal reports 0.365 because np.linspace(0, 1, 11)[3] == 0.30000000000000004 puts 0.3
        # in the bin below; reading 0.3 as just below its edge reproduces that number.
        nudged = P_REF.copy()
        nudged[3] = np.nextafter(np.float32(0.3), np.float32(0))
        assert float(ece(nudged, Y_REF, num_bins=10, from_logits=False)) == pytest.approx(
            0.365, abs=EXACT_TOL
        )
        netcal = pytest.importorskip("netcal.metrics")
        assert netcal.ECE(bins=10).measure(P_REF64, Y_REF) == pytest.approx(0.365)

    def test_confidence_one_in_last_bin_zero_in_first(self):
        p = np.array([0.0, 1.0, 1.0], np.float32)
        y = np.array([0, 1, 1])
        left = reliability_bins(p, y, num_bins=4, from_logits=False)
        right = reliability_bins(p, y, num_bins=4, from_logits=False, closed="right")
        np.testing.assert_array_equal(left.counts, [1, 0, 0, 2])
        np.testing.assert_array_equal(right.counts, [1, 0, 0, 2])
        assert float(ece(p, y, num_bins=4, from_logits=False)) == 0.0

    def test_edge_value_goes_to_rule_side(self):
        p = np.array([0.25, 0.5, 0.75], np.float32)
        y = np.array([0, 1, 1])
        left = reliability_bins(p, y, num_bins=4, from_logits=False, closed="left")
        right = reliability_bins(p, y, num_bins=4, from_logits=False, closed="right")
        np.testing.assert_array_equal(left.counts, [0, 1, 1, 1])
        np.testing.assert_array_equal(right.counts, [1, 1, 1, 0])
        np.testing.assert_allclose(left.edges, [0, 0.25, 0.5, 0.75, 1.0])

    def test_bin_statistics_and_empty_bins(self):
        p = np.array([0.1, 0.15, 0.9], np.float32)
        y = np.array([1, 0, 1])
        bins = reliability_bins(p, y, num_bins=5, from_logits=False)
        np.testing.assert_array_equal(bins.counts, [2, 0, 0, 0, 1])
        np.testing.assert_allclose(bins.mean_confidence, [0.125, 0, 0, 0, 0.9], atol=EXACT_TOL)
        np.testing.assert_allclose(bins.accuracy, [0.5, 0, 0, 0, 1.0], atol=EXACT_TOL)
        # ECE = 2/3 * 0.375 + 1/3 * 0.1; MCE over non-empty bins = 0.375.
        assert float(calibration_error(bins)) == pytest.approx(0.25 + 0.1 / 3, abs=EXACT_TOL)
        assert float(calibration_error(bins, "max")) == pytest.approx(0.375, abs=EXACT_TOL)
        rms = np.sqrt(2 / 3 * 0.375**2 + 1 / 3 * 0.1**2)
        assert float(calibration_error(bins, "l2")) == pytest.approx(rms, abs=EXACT_TOL)

    def test_logits_equal_probabilities(self):
        rng = np.random.default_rng(0)
        z = rng.normal(0, 2, 300).astype(np.float32)
        y = rng.integers(0, 2, 300)
        p = np.asarray(jax.nn.sigmoid(z))
        for binary in ("positive", "top_label"):
            a = ece(z, y, binary=binary)
            b = ece(p, y, from_logits=False, binary=binary)
            assert float(a) == pytest.approx(float(b), abs=EXACT_TOL)


class TestFloat64Reference:
    @pytest.mark.parametrize("closed", ["left", "right"])
    @pytest.mark.parametrize("binary", ["positive", "top_label"])
    @pytest.mark.parametrize("norm", ["l1", "l2", "max"])
    def test_binary_on_exact_edges(self, closed, binary, norm):
        rng = np.random.default_rng(1)
        p = (rng.integers(0, 17, 500) / 16).astype(np.float32)  # many values on edges k / 8
        y = (rng.random(500) < p).astype(np.int32)
        conf, target = reference_conf_target(p, y, binary)
        expected = reference_ece(conf, target, 8, closed, norm)
        got = ece(p, y, num_bins=8, from_logits=False, binary=binary, closed=closed, norm=norm)
        assert float(got) == pytest.approx(expected, abs=EXACT_TOL)

    @pytest.mark.parametrize("closed", ["left", "right"])
    @pytest.mark.parametrize("num_bins", [1, 4, 16])
    def test_multiclass_on_exact_edges(self, closed, num_bins):
        rng = np.random.default_rng(2)
        p = grid_probabilities(rng, 400, 4, 32)
        y = rng.integers(0, 4, 400)
        conf, target = reference_conf_target(p, y, "top_label")
        expected = reference_ece(conf, target, num_bins, closed)
        got = ece(p, y, num_bins=num_bins, from_logits=False, closed=closed)
        assert float(got) == pytest.approx(expected, abs=EXACT_TOL)

    def test_classwise_on_exact_edges(self):
        rng = np.random.default_rng(3)
        p = grid_probabilities(rng, 300, 3, 16)
        y = rng.integers(0, 3, 300)
        expected = np.mean(
            [reference_ece(p[:, k].astype(np.float64), (y == k) * 1.0, 8, "left") for k in range(3)]
        )
        assert float(classwise_ece(p, y, num_bins=8, from_logits=False)) == pytest.approx(
            expected, abs=EXACT_TOL
        )

    def test_classwise_binary_is_mean_of_both_classes(self):
        rng = np.random.default_rng(4)
        p = (rng.integers(0, 17, 200) / 16).astype(np.float32)
        y = rng.integers(0, 2, 200)
        expected = (
            reference_ece(p.astype(np.float64), y * 1.0, 8, "left")
            + reference_ece(1.0 - p.astype(np.float64), (y == 0) * 1.0, 8, "left")
        ) / 2
        assert float(classwise_ece(p, y, num_bins=8, from_logits=False)) == pytest.approx(
            expected, abs=EXACT_TOL
        )


@pytest.fixture(scope="module")
def binary_data():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 3, 4000).astype(np.float32)
    y = (rng.random(4000) < sigmoid64(z / 2)).astype(np.int32)
    return z, y


@pytest.fixture(scope="module")
def multiclass_data():
    rng = np.random.default_rng(6)
    z = rng.normal(0, 2, (3000, 5)).astype(np.float32)
    y = rng.integers(0, 5, 3000)
    return z, y


class TestLibraryParity:
    @pytest.mark.parametrize("num_bins", [10, 15])
    def test_netcal_binary_and_multiclass(self, binary_data, multiclass_data, num_bins):
        netcal = pytest.importorskip("netcal.metrics")
        z, y = binary_data
        expected = netcal.ECE(bins=num_bins).measure(sigmoid64(z), y)
        assert float(ece(z, y, num_bins=num_bins)) == pytest.approx(expected, abs=PARITY_TOL)
        zm, ym = multiclass_data
        expected = netcal.ECE(bins=num_bins).measure(softmax64(zm), ym)
        assert float(ece(zm, ym, num_bins=num_bins)) == pytest.approx(expected, abs=PARITY_TOL)

    @pytest.mark.parametrize("norm", ["l1", "l2", "max"])
    def test_torchmetrics(self, binary_data, multiclass_data, norm):
        torch = pytest.importorskip("torch")
        tmc = pytest.importorskip("torchmetrics.functional.classification")
        z, y = binary_data
        expected = tmc.binary_calibration_error(
            torch.sigmoid(torch.tensor(z)), torch.tensor(y), n_bins=15, norm=norm
        )
        assert float(ece(z, y, norm=norm)) == pytest.approx(float(expected), abs=PARITY_TOL)
        zm, ym = multiclass_data
        expected = tmc.multiclass_calibration_error(
            torch.softmax(torch.tensor(zm), -1), torch.tensor(ym), 5, n_bins=15, norm=norm
        )
        assert float(ece(zm, ym, norm=norm)) == pytest.approx(float(expected), abs=PARITY_TOL)

    def test_sklearn_calibration_curve(self, binary_data):
        calibration = pytest.importorskip("sklearn.calibration")
        z, y = binary_data
        prob_true, prob_pred = calibration.calibration_curve(y, sigmoid64(z), n_bins=10)
        bins = reliability_bins(z, y, num_bins=10, closed="right")
        nonempty = np.asarray(bins.counts) > 0
        np.testing.assert_allclose(np.asarray(bins.accuracy)[nonempty], prob_true, atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(bins.mean_confidence)[nonempty], prob_pred, atol=PARITY_TOL
        )

    def test_nll_brier_accuracy_vs_sklearn(self, binary_data, multiclass_data):
        metrics = pytest.importorskip("sklearn.metrics")
        z, y = binary_data
        p = sigmoid64(z)
        assert float(nll(z, y)) == pytest.approx(metrics.log_loss(y, p), rel=1e-5)
        assert float(brier_score(z, y)) == pytest.approx(metrics.brier_score_loss(y, p), rel=1e-5)
        assert float(accuracy(z, y)) == pytest.approx(np.mean((z > 0) == y), abs=1e-7)
        zm, ym = multiclass_data
        pm = softmax64(zm)
        assert float(nll(zm, ym)) == pytest.approx(metrics.log_loss(ym, pm), rel=1e-5)
        one_hot = np.eye(5)[ym]
        expected = np.mean(np.sum((pm - one_hot) ** 2, axis=1))
        assert float(brier_score(zm, ym)) == pytest.approx(expected, rel=1e-5)
        assert float(accuracy(zm, ym)) == pytest.approx(np.mean(zm.argmax(1) == ym), abs=1e-7)


class TestOtherMetrics:
    def test_nll_known_values(self):
        assert float(nll(np.zeros(4), np.array([0, 1, 1, 0]))) == pytest.approx(np.log(2))
        # Large logits stay exact: -log sigmoid(-30) = 30 + log1p(exp(-30)).
        assert float(nll(np.array([-30.0]), np.array([1]))) == pytest.approx(30.0, rel=1e-6)
        assert float(nll(np.array([30.0, -30.0]), np.array([1, 0]))) == pytest.approx(
            0.0, abs=1e-12
        )
        # Probabilities of exactly 0 for the label cost -log(eps), not inf.
        clipped = nll(np.array([0.0]), np.array([1]), from_logits=False)
        assert float(clipped) == pytest.approx(-np.log(np.finfo(np.float32).eps), rel=1e-6)

    def test_brier_and_accuracy_known_values(self):
        p = np.array([1.0, 0.5, 0.0, 0.8], np.float32)
        y = np.array([1, 0, 1, 1])
        assert float(brier_score(p, y, from_logits=False)) == pytest.approx(
            (0 + 0.25 + 1 + 0.04) / 4
        )
        # p = 0.5 predicts class 0 (p > 0.5 means class 1, as the original notebook): 3 of 4.
        assert float(accuracy(p, y, from_logits=False)) == pytest.approx(0.75)
        onehot = np.eye(3, dtype=np.float32)[[0, 1, 2]]
        assert float(brier_score(onehot, np.array([0, 1, 0]), from_logits=False)) == (
            pytest.approx(2 / 3)
        )

    def test_perfectly_calibrated_ece_shrinks_with_n(self):
        rng = np.random.default_rng(7)
        values = []
        for n in (1_000, 10_000, 200_000):
            p = rng.random(n).astype(np.float32)
            y = (rng.random(n) < p).astype(np.int32)
            values.append(float(ece(p, y, from_logits=False)))
        # Sampling noise alone: ECE ~ sqrt(B / N) / 2, about 0.06, 0.02, 0.004 here.
        assert values[0] > values[2]
        assert values[1] > values[2]
        assert values[2] < 0.01

    def test_quantile_bins_equal_mass(self):
        rng = np.random.default_rng(8)
        z = rng.normal(0, 1, 1000).astype(np.float32)
        y = rng.integers(0, 2, 1000)
        bins = reliability_bins(z, y, num_bins=10, binning="quantile")
        np.testing.assert_array_equal(bins.counts, np.full(10, 100))
        edges = np.asarray(bins.edges)
        assert edges[0] == 0.0 and edges[-1] == 1.0 and np.all(np.diff(edges) > 0)
        # Cross-check the ECE with the float64 reference run on those edges.
        p, target = sigmoid64(z), y.astype(np.float64)
        idx = np.searchsorted(edges[1:-1].astype(np.float64), p, side="right")
        expected = sum(abs(target[idx == b].sum() - p[idx == b].sum()) for b in range(10)) / len(p)
        assert float(calibration_error(bins)) == pytest.approx(expected, abs=PARITY_TOL)

    def test_merge_rejects_different_edges(self):
        rng = np.random.default_rng(9)
        z = rng.normal(0, 1, 100).astype(np.float32)
        y = rng.integers(0, 2, 100)
        a = reliability_bins(z[:50], y[:50], binning="quantile")
        b = reliability_bins(z[50:], y[50:], binning="quantile")
        with pytest.raises(ValueError, match="same bin edges"):
            a.merge(b)
        with pytest.raises(ValueError, match="same bin edges"):
            reliability_bins(z, y, num_bins=5).merge(reliability_bins(z, y, num_bins=6))


@pytest.fixture(scope="module")
def bootstrap_data():
    rng = np.random.default_rng(10)
    z = rng.normal(0, 2, 400).astype(np.float32)
    y = (rng.random(400) < sigmoid64(z / 2)).astype(np.int32)
    return z, y


class TestBootstrap:
    @pytest.mark.parametrize("n", [1, 7, 400, 65_537, 3_000_000])
    def test_resample_indices_are_the_multiply_high_of_the_bits(self, n):
        key = jax.random.key(n)
        draws = np.asarray(_resample_indices(key, n))
        bits = np.asarray(jax.random.bits(key, (n,), jnp.uint32)).astype(np.uint64)
        # floor(bits * n / 2^32), exact in uint64: uniform bits give near-uniform indices.
        np.testing.assert_array_equal(draws, (bits * np.uint64(n)) >> np.uint64(32))
        assert draws.min() >= 0 and draws.max() < n

    @pytest.mark.parametrize(
        "options",
        [
            {},
            {"norm": "l2"},
            {"norm": "max"},
            {"binning": "quantile"},
            {"binning": "quantile", "norm": "l2"},
        ],
    )
    def test_matches_explicit_resampling(self, bootstrap_data, options):
        # Uniform bins are looked up once and gathered with the resampled samples; quantile
        # bins are recomputed per resample: both equal `ece` of the explicit resample.
        z, y = bootstrap_data
        key = jax.random.key(0)
        result = ece_bootstrap(z, y, key, num_resamples=64, confidence=0.9, **options)
        assert isinstance(result, BootstrapInterval)
        plug_in = float(ece(z, y, **options))
        assert float(result.plug_in) == pytest.approx(plug_in, abs=EXACT_TOL)
        replicates = []
        for r in range(64):
            index = np.asarray(_resample_indices(jax.random.fold_in(key, r), 400))
            replicates.append(float(ece(z[index], y[index], **options)))
        q_lo, median, q_hi = np.quantile(replicates, [0.05, 0.5, 0.95])
        # Basic bootstrap: percentiles reflected about the plug-in error, clipped at 0.
        assert float(result.lower) == pytest.approx(max(2 * plug_in - q_hi, 0), abs=1e-5)
        assert float(result.upper) == pytest.approx(max(2 * plug_in - q_lo, 0), abs=1e-5)
        assert float(result.estimate) == pytest.approx(max(2 * plug_in - median, 0), abs=1e-5)

    def test_interval_behaviour(self, bootstrap_data):
        z, y = bootstrap_data
        key = jax.random.key(1)
        wide = ece_bootstrap(z, y, key, num_resamples=64, confidence=0.99)
        narrow = ece_bootstrap(z, y, key, num_resamples=64, confidence=0.5)
        assert float(wide.lower) <= float(narrow.lower) <= float(narrow.upper)
        assert float(narrow.upper) <= float(wide.upper)
        assert float(wide.lower) < float(wide.estimate) < float(wide.upper)
        small = ece_bootstrap(z[:100], y[:100], key, num_resamples=64, confidence=0.99)
        assert float(wide.upper - wide.lower) < float(small.upper - small.lower)
        again = ece_bootstrap(z, y, key, num_resamples=64, confidence=0.99)
        assert float(again.lower) == float(wide.lower)


class TestTransforms:
    def test_vmap_and_jit_every_metric(self):
        rng = np.random.default_rng(12)
        zs = rng.normal(0, 2, (3, 128)).astype(np.float32)  # three models' binary logits
        zm = rng.normal(0, 2, (3, 128, 4)).astype(np.float32)
        y = rng.integers(0, 2, 128)
        ym = rng.integers(0, 4, 128)
        cases = [
            (ece, zs, y),
            (lambda s, t: ece(s, t, norm="max", binary="top_label", closed="right"), zs, y),
            (lambda s, t: ece(s, t, binning="quantile", num_bins=8, norm="l2"), zm, ym),
            (classwise_ece, zm, ym),
            (nll, zs, y),
            (nll, zm, ym),
            (brier_score, zm, ym),
            (accuracy, zs, y),
        ]
        for metric, scores, labels in cases:
            looped = np.array([float(metric(s, labels)) for s in scores])
            batched = jax.jit(jax.vmap(metric, in_axes=(0, None)))(scores, labels)
            np.testing.assert_allclose(batched, looped, atol=EXACT_TOL)

    def test_bins_with_leading_axis(self):
        rng = np.random.default_rng(13)
        z = rng.normal(0, 2, (2, 64)).astype(np.float32)
        y = rng.integers(0, 2, 64)
        bins = jax.vmap(lambda s: reliability_bins(s, y, num_bins=6))(z)
        assert bins.counts.shape == (2, 6) and bins.edges.shape == (2, 7)
        assert bins.mean_confidence.shape == (2, 6)
        np.testing.assert_array_equal(bins.num_samples, [64, 64])
        np.testing.assert_allclose(
            calibration_error(bins), [float(ece(s, y, num_bins=6)) for s in z], atol=EXACT_TOL
        )

    def test_bootstrap_under_jit(self, bootstrap_data):
        z, y = bootstrap_data
        key = jax.random.key(2)
        eager = ece_bootstrap(z, y, key, num_resamples=64)
        jitted = jax.jit(lambda s, t, k: ece_bootstrap(s, t, k, num_resamples=64))(z, y, key)
        np.testing.assert_allclose(jnp.stack(jitted), jnp.stack(eager), atol=EXACT_TOL)


N_CHOICES = [1, 7, 64]


@st.composite
def binary_case(draw):
    n = draw(st.sampled_from(N_CHOICES))
    p = draw(hnp.arrays(np.float32, n, elements=st.floats(0, 1, width=32)))
    y = draw(hnp.arrays(np.int32, n, elements=st.integers(0, 1)))
    return p, y


class TestInvariants:
    @settings(max_examples=40, deadline=None)
    @given(case=binary_case(), binary=st.sampled_from(["positive", "top_label"]))
    def test_bounds_order_and_permutation(self, case, binary):
        p, y = case
        kwargs = dict(num_bins=10, from_logits=False, binary=binary)
        l1, l2, mx = (float(ece(p, y, norm=norm, **kwargs)) for norm in ("l1", "l2", "max"))
        assert 0.0 <= l1 <= l2 + 1e-6
        assert l2 <= mx + 1e-6 and mx <= 1.0
        perm = np.random.default_rng(len(p)).permutation(len(p))
        assert float(ece(p[perm], y[perm], **kwargs)) == pytest.approx(l1, abs=EXACT_TOL)

    @settings(max_examples=30, deadline=None)
    @given(
        p=hnp.arrays(np.float32, 64, elements=st.floats(0, 1, width=32)),
        y=hnp.arrays(np.int32, 64, elements=st.integers(0, 1)),
        split=st.sampled_from([1, 13, 32, 63]),
        closed=st.sampled_from(["left", "right"]),
    )
    def test_merge_of_halves_equals_whole(self, p, y, split, closed):
        kwargs = dict(num_bins=8, from_logits=False, closed=closed)
        whole = reliability_bins(p, y, **kwargs)
        merged = reliability_bins(p[:split], y[:split], **kwargs).merge(
            reliability_bins(p[split:], y[split:], **kwargs)
        )
        np.testing.assert_array_equal(merged.counts, whole.counts)
        # float32 sums of <= 64 values in another order: relative error <= 64 * 2^-24 = 4e-6.
        np.testing.assert_allclose(merged.confidence_sum, whole.confidence_sum, rtol=4e-6)
        np.testing.assert_allclose(merged.target_sum, whole.target_sum, rtol=4e-6)
        assert float(calibration_error(merged)) == pytest.approx(
            float(calibration_error(whole)), abs=EXACT_TOL
        )

    @settings(max_examples=25, deadline=None)
    @given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 5))
    def test_multiclass_matches_float64_reference(self, seed, k):
        rng = np.random.default_rng(seed)
        z = rng.normal(0, 3, (64, k)).astype(np.float32)
        y = rng.integers(0, k, 64)
        conf, target = reference_conf_target(softmax64(z), y, "top_label")
        expected = reference_ece(conf, target, 15, "left")
        assert float(ece(z, y)) == pytest.approx(expected, abs=1e-5)


class TestValidation:
    @pytest.mark.parametrize(
        ("scores", "labels", "kwargs", "match"),
        [
            (np.array([0.1, np.nan]), np.array([0, 1]), {}, "scores must be finite"),
            (np.array([0.1, np.inf]), np.array([0, 1]), {}, "scores must be finite"),
            (np.zeros(0), np.zeros(0, int), {}, "scores must be non-empty"),
            (np.zeros(3), np.zeros(2, int), {}, "labels must have one entry per sample"),
            (np.zeros(2), np.array([0, 2]), {}, r"labels must be in \[0, 1\]"),
            (np.zeros((2, 3)), np.array([0, 3]), {}, r"labels must be in \[0, 2\]"),
            (np.zeros(2), np.array([-1, 0]), {}, "labels must be in"),
            (np.array([0.5, 1.2]), np.array([0, 1]), {"from_logits": False}, r"\[0, 1\]"),
            (np.array([[0.5, 0.6]]), np.array([0]), {"from_logits": False}, "sum to 1"),
            (np.zeros((2, 2, 2)), np.zeros(2, int), {}, "scores must have shape"),
            (np.zeros((2, 1)), np.zeros(2, int), {}, "K >= 2"),
            (np.zeros(2), np.zeros((2, 1), int), {}, "labels must have shape"),
            (np.zeros(2), np.zeros(2, int), {"num_bins": 0}, "num_bins must be >= 1"),
            (np.zeros(2), np.zeros(2, int), {"binary": "pos"}, "binary must be one of"),
            (np.zeros(2), np.zeros(2, int), {"closed": "both"}, "closed must be one of"),
            (np.zeros(2), np.zeros(2, int), {"norm": "l3"}, "norm must be one of"),
            (np.zeros(2), np.zeros(2, int), {"binning": "equal"}, "binning must be one of"),
        ],
    )
    def test_ece_value_errors(self, scores, labels, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ece(scores, labels, **kwargs)

    def test_type_errors(self):
        with pytest.raises(TypeError, match="labels must be integers"):
            ece(np.zeros(2), np.array([0.0, 1.0]))
        with pytest.raises(TypeError, match="num_bins"):
            ece(np.zeros(2), np.zeros(2, int), num_bins=2.5)
        with pytest.raises(TypeError, match="from_logits"):
            nll(np.zeros(2), np.zeros(2, int), from_logits="yes")
        with pytest.raises(TypeError, match="key"):
            ece_bootstrap(np.zeros(2), np.zeros(2, int), 0)

    def test_probabilities_passed_as_logits_warn(self):
        p = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
        with pytest.warns(UserWarning, match="look like probabilities"):
            ece(p, np.array([1, 0]))

    @pytest.mark.parametrize("metric", [nll, brier_score, accuracy, classwise_ece])
    def test_every_metric_checks(self, metric):
        with pytest.raises(ValueError, match="labels must be in"):
            metric(np.zeros((2, 3)), np.array([0, 3]))
        with pytest.raises(ValueError, match="scores must be finite"):
            metric(np.array([np.nan]), np.array([0]))

    def test_bootstrap_options(self):
        key = jax.random.key(0)
        with pytest.raises(ValueError, match="confidence must be in"):
            ece_bootstrap(np.zeros(2), np.zeros(2, int), key, confidence=1.0)
        with pytest.raises(ValueError, match="num_resamples must be >= 1"):
            ece_bootstrap(np.zeros(2), np.zeros(2, int), key, num_resamples=0)

    def test_shape_errors_raise_under_jit_value_checks_do_not(self):
        with pytest.raises(ValueError, match="labels must have one entry per sample"):
            jax.jit(ece)(jnp.zeros(3), jnp.zeros(2, jnp.int32))
        with pytest.raises(ValueError, match="scores must have shape"):
            jax.jit(nll)(jnp.zeros((2, 2, 2)), jnp.zeros(2, jnp.int32))
        # Documented: value checks need concrete arrays, so a traced NaN is not caught.
        traced = jax.jit(ece)(jnp.array([jnp.nan, 0.0]), jnp.array([0, 1]))
        assert traced.shape == ()

    def test_calibration_error_input(self):
        with pytest.raises(TypeError, match="ReliabilityBins"):
            calibration_error((np.zeros(3),), "l1")
        bins = ReliabilityBins(jnp.linspace(0, 1, 3), jnp.array([1, 1]), jnp.zeros(2), jnp.ones(2))
        with pytest.raises(ValueError, match="norm must be one of"):
            calibration_error(bins, "L1")


class TestFloat32Sums:
    def test_issue_shape_float32_equals_float64(self):
        # 50,000 top-label predictions, ~31,000 in the top bin of 20, 2,000 at exactly 1.0: a
        # sequential float32 scatter-add of the confidences moved the ECE by ~4e-6 here.
        rng = np.random.default_rng(13)
        conf = np.concatenate(
            [np.ones(2000), rng.uniform(0.95, 1.0, 29_000), rng.uniform(0.2, 0.95, 19_000)]
        ).astype(np.float32)
        correct = (rng.random(conf.size) < conf - 0.08).astype(np.int32)
        conf64 = conf.astype(np.float64)
        for norm in ("l1", "max"):
            got = float(ece(conf, correct, num_bins=20, from_logits=False, norm=norm))
            expected = reference_ece(conf64, correct.astype(np.float64), 20, "left", norm)
            assert got == pytest.approx(expected, abs=2e-6)

    def test_large_bins_merge_in_float32(self):
        rng = np.random.default_rng(14)
        p = rng.uniform(0.9, 1.0, 200_000).astype(np.float32)
        y = (rng.random(p.size) < p).astype(np.int32)
        bins = reliability_bins(p, y, from_logits=False)
        expected = np.bincount(np.minimum((p * 15).astype(int), 14), p.astype(np.float64), 15)
        # Within 2 float32 ulps of the float64 sums (a sequential float32 sum drifts ~1e-5).
        np.testing.assert_allclose(bins.confidence_sum, expected, rtol=2.5e-7)


class TestDebiasedL2:
    @pytest.mark.parametrize("n", [40, 1000, 20_000])
    def test_matches_uncertainty_calibration(self, n):
        uc = pytest.importorskip("calibration.utils")
        rng = np.random.default_rng(n)
        p = rng.random(n).astype(np.float32)
        y = (rng.random(n) < p**1.2).astype(int)
        expected = uc.lower_bound_scaling_ce(
            p.astype(np.float64), y, p=2, debias=True, binning_scheme=uc.get_equal_prob_bins
        )
        got = ece(p, y, from_logits=False, closed="right", norm="l2", debiased=True)
        assert float(got) == pytest.approx(expected, abs=1e-5)

    def test_top_label_matches_uncertainty_calibration(self, multiclass_data):
        uc = pytest.importorskip("calibration.utils")
        zm, ym = multiclass_data
        expected = uc.lower_bound_scaling_top_ce(
            softmax64(zm), ym, p=2, debias=True, binning_scheme=uc.get_equal_prob_bins
        )
        got = ece(zm, ym, closed="right", norm="l2", debiased=True)
        assert float(got) == pytest.approx(expected, abs=1e-5)

    def test_below_plug_in_and_near_zero_when_calibrated(self):
        rng = np.random.default_rng(15)
        p = rng.random(50_000).astype(np.float32)
        y = (rng.random(p.size) < p).astype(int)
        kw = {"from_logits": False, "norm": "l2"}
        debiased, plug_in = float(ece(p, y, debiased=True, **kw)), float(ece(p, y, **kw))
        assert debiased < plug_in
        assert debiased < 0.005

    def test_only_with_l2(self):
        with pytest.raises(ValueError, match="debiased=True needs norm='l2'"):
            ece(np.zeros(2), np.zeros(2, int), debiased=True)


class TestTopLabelECE:
    def test_matches_per_class_definition(self, multiclass_data):
        zm, ym = multiclass_data
        probs = softmax64(zm)
        conf, pred = probs.max(1), probs.argmax(1)
        correct = (pred == ym).astype(float)
        expected = sum(
            (pred == k).mean() * reference_ece(conf[pred == k], correct[pred == k], 15, "left")
            for k in np.unique(pred)
        )
        got = top_label_ece(zm.astype(np.float32), ym)
        assert float(got) == pytest.approx(expected, abs=1e-6)
        assert float(got) >= float(ece(zm, ym)) - 1e-7

    def test_binary_is_two_classes(self, binary_data):
        z, y = binary_data
        logits = np.stack([np.zeros_like(z), z], axis=-1)
        assert float(top_label_ece(z, y)) == pytest.approx(
            float(top_label_ece(logits, y)), abs=1e-6
        )


def simulated_bootstraps(power, num_sets=200):
    """ece_bootstrap on data sets p ~ U(0, 1), y ~ Bernoulli(p ** power), N = 1,000."""
    keys = jax.random.split(jax.random.key(16), num_sets)

    def one(key):
        k1, k2, k3 = jax.random.split(key, 3)
        p = jax.random.uniform(k1, (1000,))
        y = jax.random.bernoulli(k2, p**power).astype(jnp.int32)
        return ece_bootstrap(p, y, k3, num_resamples=200, from_logits=False)

    return jax.vmap(one)(keys)


class TestBootstrapCoverage:
    def test_covers_population_error_when_miscalibrated(self):
        # y ~ Bernoulli(p^2): every bin's gap has the same sign, so the population ECE over
        # uniform bins is the integral of p - p^2 = 1/6.
        result = simulated_bootstraps(2.0)
        covered = (result.lower <= 1 / 6) & (result.upper >= 1 / 6)
        assert float(jnp.mean(covered)) >= 0.9
        assert bool(jnp.all((result.lower <= result.estimate) & (result.estimate <= result.upper)))

    def test_calibrated_data_bias_is_corrected(self):
        # The population ECE is 0, on the boundary: the plug-in error is always above it and
        # the percentile interval (the previous one) never covered it. The basic interval does
        # in part of the data sets (~37 % here: at the boundary no bootstrap of the plug-in is
        # exact), and its estimate is closer to 0 than the plug-in error.
        result = simulated_bootstraps(1.0)
        assert bool(jnp.all(result.plug_in > 0))
        assert float(jnp.mean(result.lower == 0.0)) >= 0.25
        assert float(jnp.mean(result.estimate)) < 0.8 * float(jnp.mean(result.plug_in))
        assert bool(jnp.all((result.lower <= result.estimate) & (result.estimate <= result.upper)))
        assert bool(jnp.all(result.lower <= result.plug_in))


MEMORY_SCRIPT = """
import resource, sys
from benchmarks.timing import peak_rss_mib
limit = 3 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import jax, jax.numpy as jnp
from jaxcal.calibration import ece, ece_bootstrap
n = 1_000_000
z = jax.random.normal(jax.random.key(0), (n,))
y = (jax.random.uniform(jax.random.key(1), (n,)) < 0.5).astype(jnp.int32)
peaks = []
for bins in (15, 1000):
    ece(z, y, num_bins=bins).block_until_ready()
    ece_bootstrap(z[:20_000], y[:20_000], jax.random.key(2), num_resamples=64, num_bins=bins)
    peaks.append(peak_rss_mib())
print(peaks[0], peaks[1])
"""


def test_memory_independent_of_num_bins():
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    peak_15, peak_1000 = (float(v) for v in result.stdout.split())
    # The process's own peak (not ru_maxrss, which inherits pytest's): 1,000 bins may add no
    # more than 64 MiB to the peak of 15 bins (an N x B intermediate would be 1 GB).
    assert peak_1000 - peak_15 < 64


class TestLabelAndLogitChecks:
    def test_int64_labels_beyond_int32_raise(self):
        labels = np.array([0, 2**32 + 1], np.int64)
        with pytest.raises(ValueError, match="labels must fit in int32"):
            ece(np.zeros(2), labels)

    def test_binary_probabilities_passed_as_logits_warn(self):
        p = np.array([0.2, 0.9, 0.6], np.float32)
        with pytest.warns(UserWarning, match="all lie in \\[0, 1\\]"):
            ece(p, np.array([0, 1, 1]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ece(np.zeros(3), np.array([0, 1, 1]))  # constant logits mean p = 0.5 either way
            ece(np.array([-1.0, 0.5, 2.0]), np.array([0, 1, 1]))


def check_outcome(scores, labels, from_logits):
    """What `check_scores_labels` does with these inputs: the error message or the warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _checks.check_scores_labels(scores, labels, from_logits=from_logits)
        except ValueError as error:
            return ("error", str(error))
    return ("ok", [str(w.message) for w in caught])


ROW_ATOL = _checks.ROW_SUM_ATOL
CHECK_CASES = [
    (np.array([0.0, 0.3, 1.0]), np.array([0, 1, 1]), False),
    (np.array([-0.0, 0.3, 1.0]), np.array([0, 1, 1]), False),  # -0.0 >= 0: accepted
    (np.array([0.2, np.nan]), np.array([0, 1]), False),
    (np.array([0.2, np.inf]), np.array([0, 1]), True),
    (np.array([0.2, 1.0 + 1e-7]), np.array([0, 1]), False),
    (np.array([-1e-30, 0.5]), np.array([0, 1]), False),
    (np.array([0.2, 0.9]), np.array([0, 1]), True),  # warns
    (np.array([0.2, 1.5]), np.array([0, 1]), True),
    (np.array([-0.5, 0.5]), np.array([0, 1]), True),
    (np.array([0.5, 0.5]), np.array([0, 1]), True),  # constant: no warning
    (np.array([0.2, 0.9]), np.array([0, 2]), False),
    (np.array([0.2, 0.9]), np.array([-1, 1]), False),
    (np.array([0.2, 0.9]), np.array([-1, 1], np.int8), False),
    (np.array([0.2, 0.9]), np.array([0, 1], np.uint8), False),
    (np.array([0.2, 0.9]), np.array([True, False]), False),
    (np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 0]), False),
    (np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 0]), True),  # warns
    (np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 2]), False),
    (np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 2**32 + 1]), False),  # not wrapped to 1
    (np.array([[0.2, 0.8 + 0.9 * ROW_ATOL], [0.6, 0.4]]), np.array([1, 0]), False),
    (np.array([[0.2, 0.8 + 0.9 * ROW_ATOL], [0.6, 0.4]]), np.array([1, 0]), True),  # warns
    (np.array([[0.2, 0.8 + 1.1 * ROW_ATOL], [0.6, 0.4]]), np.array([1, 0]), False),
    (np.array([[0.2, 0.8 + 1.1 * ROW_ATOL], [0.6, 0.4]]), np.array([1, 0]), True),
    (np.array([[0.2, 0.8 + 3 * ROW_ATOL], [0.6, 0.4]]), np.array([1, 0]), True),
    (np.array([[0.2, 0.9], [-0.1, 0.4]]), np.array([1, 0]), True),
    (np.array([[0.2, 0.9], [-0.1, 0.4]]), np.array([1, 0]), False),
    (np.array([[0.2, 0.8], [np.nan, 0.4]]), np.array([1, 0]), False),
    (np.full((3, 1500), 1 / 1500), np.array([0, 1, 1499]), False),  # K * eps too big: device
    (np.full((3, 1500), 1 / 1500), np.array([0, 1, 1500]), False),
]


class TestHostValueChecks:
    """CPU inputs are checked in numpy; every outcome must equal the exact device pass."""

    @pytest.mark.parametrize("row_summary", [False, True])
    @pytest.mark.parametrize("float64", [False, True])
    @pytest.mark.parametrize(("scores", "labels", "from_logits"), CHECK_CASES)
    def test_host_checks_equal_device_checks(
        self, monkeypatch, scores, labels, from_logits, float64, row_summary
    ):
        if row_summary:  # [N, K] scores checked from their one-pass row statistics
            monkeypatch.setattr(_checks, "ROW_SUMMARY_ENTRIES", 0)
        with jax.enable_x64(float64):
            scores = jnp.asarray(scores, jnp.float64 if float64 else jnp.float32)
            host = check_outcome(scores, labels, from_logits)
            monkeypatch.setattr(_checks, "_on_one_cpu", lambda x: False)
            device = check_outcome(scores, labels, from_logits)
        assert host == device

    def test_large_clean_inputs_pass_on_the_host(self, monkeypatch):
        rng = np.random.default_rng(0)
        z = rng.normal(size=(20_000, 10)).astype(np.float32)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = rng.integers(0, 10, 20_000)

        def no_device_pass(*args):
            raise AssertionError("clean CPU inputs should not need the device pass")

        monkeypatch.setattr(_checks, "_value_summary", no_device_pass)
        for scores, from_logits in ((z, True), (p, False), (p[:, 0], False), (z[:, 0], True)):
            labels = y if scores.ndim == 2 else y % 2
            _checks.check_scores_labels(
                jnp.asarray(scores), jnp.asarray(labels), from_logits=from_logits
            )

    def test_large_inputs_are_checked_in_one_device_pass(self, monkeypatch):
        rng = np.random.default_rng(1)
        z = rng.normal(size=(300, 10)).astype(np.float32)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = rng.integers(0, 10, 300)
        monkeypatch.setattr(_checks, "ROW_SUMMARY_ENTRIES", 100)
        small = jnp.asarray(p[:5])  # 50 entries: numpy's checks, no summary
        assert _checks.check_scores_labels_and_rows(small, y[:5], from_logits=False)[2] is None
        monkeypatch.setattr(_checks, "_host_values_pass", None)  # the device pass only
        for scores, from_logits in ((z, True), (p, False)):
            _, _, rows = _checks.check_scores_labels_and_rows(
                jnp.asarray(scores), jnp.asarray(y), from_logits=from_logits
            )
            np.testing.assert_array_equal(rows.max, scores.max(axis=1))
            np.testing.assert_array_equal(rows.argmax, scores.argmax(axis=1))

    @pytest.mark.parametrize("row_summary", [False, True])
    def test_int64_labels_are_checked_before_the_int32_cast(self, monkeypatch, row_summary):
        if row_summary:
            monkeypatch.setattr(_checks, "ROW_SUMMARY_ENTRIES", 0)
        with jax.enable_x64(True):
            labels = jnp.asarray([1, 2**32 + 1], jnp.int64)  # as int32 it would be 1
            scores = jnp.asarray([[0.2, 0.8], [0.6, 0.4]])
            with pytest.raises(ValueError, match="labels must be in \\[0, 1\\]"):
                _checks.check_scores_labels(scores, labels, from_logits=False)

    @settings(max_examples=60, deadline=None)
    @given(
        hnp.arrays(
            np.float32,
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
            elements=st.sampled_from([0.0, -0.0, 0.25, 0.5, 1.0, -3.0, np.inf, -np.inf, np.nan]),
        )
    )
    def test_row_summary_equals_numpy(self, scores):
        """Ties (the first column wins), signed zeros, infinities; NaN shows in min and sum."""
        rows = _checks.row_summary(jnp.asarray(scores))
        nan_rows = np.isnan(scores).any(axis=1)
        clean = ~nan_rows
        np.testing.assert_array_equal(rows.max[clean], scores[clean].max(axis=1))
        np.testing.assert_array_equal(rows.argmax[clean], scores[clean].argmax(axis=1))
        np.testing.assert_array_equal(rows.min, scores.min(axis=1))  # NaN where a row has one
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(rows.sum, scores.astype(np.float64).sum(axis=1), rtol=1e-6)

    @pytest.mark.parametrize("float64", [False, True])
    @pytest.mark.parametrize("from_logits", [False, True])
    def test_metrics_from_the_row_summary_equal_the_full_pass(
        self, monkeypatch, from_logits, float64
    ):
        """`ece` and `reliability_bins` take row maxima and argmax from the checks' summary."""
        rng = np.random.default_rng(2)
        z = rng.normal(0.0, 3.0, (4_000, 10))
        z[:50] = np.round(z[:50])  # ties between classes
        scores = z if from_logits else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = rng.integers(0, 10, 4_000)
        with jax.enable_x64(float64):
            scores = jnp.asarray(scores, jnp.float64 if float64 else jnp.float32)
            kwargs = {"from_logits": from_logits, "num_bins": 20}
            full = (ece(scores, y, **kwargs), reliability_bins(scores, y, **kwargs))
            monkeypatch.setattr(_checks, "ROW_SUMMARY_ENTRIES", 0)
            assert _checks.check_scores_labels_and_rows(scores, y, from_logits=from_logits)[2]
            from_rows = (ece(scores, y, **kwargs), reliability_bins(scores, y, **kwargs))
        tol = 0.0 if not from_logits else (1e-15 if float64 else 1e-6)
        np.testing.assert_allclose(from_rows[0], full[0], rtol=tol, atol=tol)
        for got, want in zip(from_rows[1], full[1], strict=True):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)

    def test_bits_of_probabilities(self):
        for dtype in (np.float32, np.float64):
            ok = np.array([0.0, 1e-40, 0.5, 1.0], dtype)
            assert _checks._all_probabilities(ok)
            for bad in (-0.0, -1e-40, np.nextafter(dtype(1), dtype(2)), np.inf, np.nan):
                assert not _checks._all_probabilities(np.append(ok, dtype(bad)))


class TestL1Path:
    """`ece` with norm="l1" sums residuals per bin: the ReliabilityBins value, less rounding."""

    @pytest.mark.parametrize("binary", ["positive", "top_label"])
    @pytest.mark.parametrize("closed", ["left", "right"])
    @pytest.mark.parametrize("binning", ["uniform", "quantile"])
    @pytest.mark.parametrize("num_bins", [1, 15, 1000])
    def test_equals_calibration_error_of_bins(self, binary, closed, binning, num_bins):
        rng = np.random.default_rng(num_bins)
        z = rng.normal(0, 2, 9000).astype(np.float32)
        y = (rng.random(9000) < 1 / (1 + np.exp(-z / 1.5))).astype(np.int32)
        kw = dict(num_bins=num_bins, binary=binary, closed=closed, binning=binning)
        got = float(ece(z, y, **kw))
        # The bins route divides two float32 sums of ~4,500 values each: ~8e-7 off at 1 bin.
        assert got == pytest.approx(
            float(calibration_error(reliability_bins(z, y, **kw))), abs=1e-6
        )
        if binning == "uniform":
            conf, target = reference_conf_target(sigmoid64(z.astype(np.float64)), y, binary)
            assert got == pytest.approx(reference_ece(conf, target, num_bins, closed), abs=1e-7)

    def test_multiclass_and_float64(self):
        rng = np.random.default_rng(3)
        z = rng.normal(0, 2, (5000, 7))
        y = rng.integers(0, 7, 5000)
        with jax.enable_x64(True):
            got = ece(jnp.asarray(z), y, num_bins=12)
            assert got.dtype == jnp.float64
            expected = calibration_error(reliability_bins(jnp.asarray(z), y, num_bins=12))
        conf, target = reference_conf_target(softmax64(z), y, "top_label")
        assert float(got) == pytest.approx(float(expected), abs=1e-12)
        assert float(got) == pytest.approx(reference_ece(conf, target, 12, "left"), abs=1e-12)
