"""Known answers: values published by other libraries' docs and tests, and papers, on their inputs.

Each case names its source; together they document which convention of jaxcal reproduces whom.
"""

import numpy as np
import pytest

from jaxcal.calibration import (
    ece,
    kernel_calibration_error,
    ks_calibration_error,
    smooth_ece,
)

TOL = 1e-4  # the published values are given to 4 digits


class TestTorchmetricsDocs:
    """torchmetrics docs, `binary_calibration_error` / `multiclass_calibration_error` examples."""

    @pytest.mark.parametrize(
        ("norm", "expected"), [("l1", 0.2900), ("l2", 0.2918), ("max", 0.3167)]
    )
    def test_binary_two_bins(self, norm, expected):
        p = np.array([0.25, 0.25, 0.55, 0.75, 0.75])
        y = np.array([0, 0, 1, 1, 1])
        got = float(ece(p, y, num_bins=2, from_logits=False, norm=norm))
        assert got == pytest.approx(expected, abs=TOL)

    @pytest.mark.parametrize(
        ("norm", "expected"), [("l1", 0.2000), ("l2", 0.2082), ("max", 0.2333)]
    )
    def test_multiclass_three_bins(self, norm, expected):
        p = np.array(
            [[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]]
        )
        y = np.array([0, 1, 2, 0])
        got = float(ece(p, y, num_bins=3, from_logits=False, norm=norm))
        assert got == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("closed", ["left", "right"])
def test_robustness_metrics_top_label_30_bins(closed):
    """google/robustness_metrics `uncertainty_test.py`: top-label ECE 0.18125, either edge rule."""
    p = np.array([0.91, 0.32, 0.66, 0.67, 0.57, 0.98, 0.41, 0.19])
    y = np.array([1, 0, 1, 1, 0, 1, 0, 0])
    got = ece(p, y, num_bins=30, from_logits=False, binary="top_label", closed=closed)
    assert float(got) == pytest.approx(0.18125, abs=1e-6)


class TestUncertaintyCalibration:
    """p-lambda/verified_calibration (`uncertainty-calibration`) `util_test.py`."""

    P = np.array([0.5, 0.5, 0.5, 0.6, 0.5, 0.6, 0.6, 0.6, 0.6])
    Y = np.array([0, 1, 0, 1, 0, 1, 1, 1, 0])

    @pytest.mark.parametrize("closed", ["left", "right"])
    def test_plug_in_l1_and_l2(self, closed):
        kw = {"num_bins": 10, "from_logits": False, "closed": closed}
        assert float(ece(self.P, self.Y, **kw)) == pytest.approx(2 / 9, abs=1e-6)
        assert float(ece(self.P, self.Y, norm="l2", **kw)) == pytest.approx(np.sqrt(0.05), abs=1e-6)

    def test_debiased_l2_below_plug_in(self):
        # Both bins' squared gaps equal their label variance / (n - 1): 0.0625 and 0.04, so the
        # debiased estimate is exactly 0 (the library's test only asserts "less than plug-in").
        got = ece(self.P, self.Y, num_bins=10, from_logits=False, norm="l2", debiased=True)
        assert float(got) == pytest.approx(0.0, abs=1e-4)

    @pytest.mark.parametrize(
        ("p", "y", "num_bins", "expected"),
        [
            ([0.1, 0.7, 0.5, 0.9], [0, 1, 0, 1], 2, 0.25),
            ([0.6, 0.7, 0.8, 0.9], [0, 0, 1, 1], 2, 0.4),
            ([0.1, 0.7, 0.5, 0.9], [0, 1, 1, 1], 4, 0.25),
        ],
    )
    def test_equal_mass_bins(self, p, y, num_bins, expected):
        got = ece(
            np.array(p), np.array(y), num_bins=num_bins, from_logits=False, binning="quantile"
        )
        assert float(got) == pytest.approx(expected, abs=1e-6)

    def test_one_uniform_bin(self):
        got = ece(np.array([0.9, 0.1, 0.3]), np.array([0, 0, 0]), num_bins=1, from_logits=False)
        assert float(got) == pytest.approx(1.3 / 3, abs=1e-6)


def test_torch_uncertainty_adaptive_ece():
    """ENSTA-U2IS/torch-uncertainty adaptive-ECE test: 2 equal-count bins give 0.278.

    Top-label confidences max(p, 1 - p) are [.7, .76, .75, .8, .8]; the equal-count edge is
    their median 0.76, itself a sample. (lo, hi] bins put it in the lower bin ({.7, .75, .76}:
    gap 0.263; {.8, .8}: gap 0.3) and reproduce 0.278; [lo, hi) bins move it up and give 0.182.
    """
    p = np.array([0.3, 0.24, 0.25, 0.2, 0.8])
    y = np.array([0, 0, 0, 1, 1])
    kw = {"num_bins": 2, "from_logits": False, "binary": "top_label", "binning": "quantile"}
    assert float(ece(p, y, closed="right", **kw)) == pytest.approx(0.278, abs=1e-6)
    assert float(ece(p, y, closed="left", **kw)) == pytest.approx(0.182, abs=1e-6)


def test_relplot_paper_example():
    """Blasiok & Nakkiran 2023 / apple/ml-calibration README: smECE 0.13368 on this model.

    The predictions depend on the scikit-learn version, so relplot runs on the same p and its
    value is what jaxcal must match; the paper's number is checked to the third digit.
    """
    relplot = pytest.importorskip("relplot")
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=700, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=400, random_state=0)
    p = LogisticRegressionCV().fit(x_train, y_train).predict_proba(x_test)[:, 1]
    reference, width = relplot.smECE(p, y_test, return_width=True)
    got = smooth_ece(p, y_test, from_logits=False)
    assert float(got.error) == pytest.approx(reference, abs=TOL)
    assert float(got.bandwidth) == pytest.approx(width, abs=1e-6)
    assert reference == pytest.approx(0.13368, abs=1e-3)


def test_ks_by_hand():
    """Gupta et al. 2021 definition by hand: sorted residuals .6, -.2, -.1 peak at .6 / 3."""
    got = ks_calibration_error(np.array([0.9, 0.6, 0.8]), np.array([1, 0, 1]), from_logits=False)
    assert float(got) == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [([0, 1], 0.0), ([0, 0], 0.5), ([1, 0], 1 - np.exp(-1)), ([1, 1], 0.5)],
)
def test_rcalibration_biased_skce(labels, expected):
    """devmotion/CalibrationErrors.jl (rcalibration) tests: predictions [1, 0], [0, 1], biased
    SKCE with the squared-exponential kernel exp(-|p - q|^2 / 2); targets (1,2), (1,1), (2,1),
    (2,2) there are the 0-based labels here."""
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    got = kernel_calibration_error(
        p, np.array(labels), estimator="biased", bandwidth=1.0, from_logits=False
    )
    assert float(got) == pytest.approx(expected, abs=1e-6)
