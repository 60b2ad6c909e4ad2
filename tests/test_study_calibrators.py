"""Tests for jaxcal.study.calibrators: every calibrator in the study, its table, JSON and figure."""

import json

import matplotlib
import numpy as np
import pytest
from scipy import special

from jaxcal import calibration, study
from jaxcal.study import calibrators as compared
from jaxcal.study import figures as study_figures

matplotlib.use("Agg")

BINARY_METHODS = ("temperature", "platt", "beta", "histogram", "isotonic")


def overconfident_binary(seed, n):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < special.expit(z)).astype(np.int32)
    return (3.0 * z).astype(np.float32), labels


@pytest.fixture(scope="module")
def binary_study():
    val, test = overconfident_binary(0, 600), overconfident_binary(1, 500)
    config = study.StudyConfig(num_temperatures=20, num_resamples=50)
    return study.run_study(*val, *test, config), val, test, config


def test_study_fits_every_applicable_calibrator_by_default(binary_study):
    result, val, test, config = binary_study
    assert tuple(result.methods) == BINARY_METHODS
    platt = result.methods["platt"]
    direct = calibration.fit_calibrator("platt", *val)
    p = np.asarray(direct.probabilities(test[0]))
    assert platt.test.nll == pytest.approx(
        float(calibration.nll(p, test[1], from_logits=False)), rel=1e-6
    )
    assert platt.test.ece == pytest.approx(
        float(calibration.ece(p, test[1], from_logits=False)), abs=1e-6
    )
    # Every calibrator fitted on overconfident validation logits improves the test NLL.
    for name in BINARY_METHODS:
        assert result.methods[name].test.nll < result.test.raw.nll, name


def test_comparison_table_marks_the_best_of_each_column(binary_study):
    result = binary_study[0]
    rows = compared.comparison_rows(result)
    assert list(rows) == ["uncalibrated", *BINARY_METHODS]
    table = compared.comparison_table(result)
    best_ece = min(row["ece"] for row in rows.values())
    winner = next(name for name, row in rows.items() if row["ece"] == best_ece)
    line = next(line for line in table.splitlines() if line.startswith(f"| {winner} |"))
    assert f"**{best_ece:.4f}**" in line
    assert table.count("**") >= 2 * 6  # one bold value per column at least
    assert json.loads(json.dumps(rows))["platt"]["converged"] is True


def test_comparison_figure_is_written(binary_study, tmp_path):
    figures = study_figures.save_comparison_figure(binary_study[0], tmp_path)
    (name,) = figures.values()
    assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_chosen_calibrators_and_bad_choices():
    val, test = overconfident_binary(2, 300), overconfident_binary(3, 300)
    config = study.StudyConfig(
        num_temperatures=10, num_resamples=20, calibrators=("isotonic", "temperature")
    )
    assert tuple(study.run_study(*val, *test, config).methods) == ("temperature", "isotonic")
    with pytest.raises(ValueError, match=r"\['vector'\] do not apply to binary"):
        study.run_study(*val, *test, study.StudyConfig(calibrators=("vector",)))
    with pytest.raises(ValueError, match="calibrators must be"):
        study.StudyConfig(calibrators=("bbq",))
