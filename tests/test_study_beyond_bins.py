"""Tests for jaxcal.study.beyond_bins: the study's binning-free measures, rows and figure."""

import jax
import matplotlib
import numpy as np
import pytest

from jaxcal import calibration
from jaxcal.study import beyond_bins

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def measured():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 300).astype(np.float32)
    y = (rng.random(300) < 1 / (1 + np.exp(-z / 2))).astype(np.int32)
    kw = {"num_bins": 15, "binary": "positive"}
    return (
        z,
        y,
        beyond_bins.measure_beyond_bins(3 * z, y, **kw),
        beyond_bins.measure_beyond_bins(z / 2, y, **kw),
    )


def test_measures_equal_the_library(measured):
    z, y, over, _ = measured
    assert over.smooth_ece == pytest.approx(float(calibration.smooth_ece(3 * z, y).error), abs=1e-6)
    assert over.ks == pytest.approx(float(calibration.ks_calibration_error(3 * z, y)), abs=1e-7)
    debiased = calibration.ece(3 * z, y, norm="l2", debiased=True)
    assert over.rmsce_debiased == pytest.approx(float(debiased), abs=1e-7)
    key_test, _ = jax.random.split(jax.random.key(beyond_bins.SEED))
    test = calibration.calibration_test(3 * z, y, key_test, num_resamples=beyond_bins.NUM_RESAMPLES)
    assert over.calibration_p_value == pytest.approx(float(test.p_value))


def test_overconfident_rejected_calibrated_not(measured):
    _, _, over, fair = measured
    assert over.calibration_p_value < 0.01 < fair.calibration_p_value
    assert fair.smooth_ece < over.smooth_ece


def test_json_rows_and_figure(measured, tmp_path):
    _, _, over, fair = measured
    assert set(over.to_json("before")) == {
        "smooth_ece_before",
        "ks_before",
        "rmsce_debiased_before",
        "calibration_p_value_before",
    }
    rows = beyond_bins.table_rows(over, fair)
    assert len(rows) == len(beyond_bins.TABLE_ROWS)
    assert rows[0] == f"| smooth ECE | {over.smooth_ece:.4f} | {fair.smooth_ece:.4f} |"
    figure = beyond_bins.smooth_reliability_figure(over, fair, binary="positive", temperature=2.0)
    left, right = figure.axes
    assert "T = 2.000" in right.get_title()
    assert f"{over.smooth_ece:.4f}" in left.get_title()
    figure.savefig(beyond_bins.figure_path(tmp_path))
    assert beyond_bins.figure_path(tmp_path).stat().st_size > 0
