"""Tests for benchmarks.original_vs_jaxcal: its images, its summary statistics and its table."""

import dataclasses

import numpy as np
import pytest

from benchmarks import original_vs_jaxcal as ovj
from jaxcal import data


def _result(seed, accuracy, temperature, notebook=None):
    return ovj.RunResult(
        seed=seed,
        accuracy=accuracy,
        ece_before=0.1,
        ece_after=0.05,
        temperature=temperature,
        seconds=2.0,
        temperature_notebook_lbfgs=notebook,
    )


def test_images_are_the_embedded_birdcat_pool_and_test_set():
    (train_images, train_labels), (test_images, test_labels) = ovj.birdcat_images()
    splits = data.load_birdcat("embedded", seed=0)
    assert train_images.shape == (983, 32, 32, 3) and test_images.shape == (204, 32, 32, 3)
    assert np.bincount(train_labels).tolist() == [490, 493]
    np.testing.assert_array_equal(test_images, splits.test.images)
    np.testing.assert_array_equal(test_labels, splits.test.labels)
    # The jaxcal split partitions exactly these 983 images.
    train_idx, val_idx = data.split_indices(983, 0.2, 0)
    np.testing.assert_array_equal(train_images[val_idx], splits.val.images)
    np.testing.assert_array_equal(train_labels[train_idx], splits.train.labels)


def test_summarize_gives_mean_and_sample_std_and_skips_missing_fields():
    summary = ovj.summarize([_result(0, 0.6, 1.0), _result(1, 0.7, 2.0), _result(2, 0.8, 3.0)])
    assert summary.mean["accuracy"] == pytest.approx(0.7)
    assert summary.std["accuracy"] == pytest.approx(0.1)  # ddof 1
    assert summary.mean["temperature"] == pytest.approx(2.0)
    assert summary.std["temperature"] == pytest.approx(1.0)
    assert "temperature_notebook_lbfgs" not in summary.mean
    single = ovj.summarize([_result(0, 0.6, 1.5, notebook=1.1)])
    assert single.std["accuracy"] == 0.0 and single.mean["temperature_notebook_lbfgs"] == 1.1
    with pytest.raises(ValueError, match="at least one run"):
        ovj.summarize([])


def test_markdown_table_rows():
    original = ovj.summarize([_result(0, 0.70, 1.2, 0.9), _result(1, 0.72, 1.4, 0.95)])
    jaxcal = ovj.summarize([_result(0, 0.71, 1.1), _result(1, 0.69, 1.3)])
    report = {
        "seeds": [0, 1],
        "epochs": 10,
        "summary": {
            "original": dataclasses.asdict(original),
            "jaxcal": dataclasses.asdict(jaxcal),
        },
        "machine": {
            "cores": 2,
            "cpu": "cpu",
            "load_average_at_start": [1.0, 1.0, 1.0],
            "load_average_at_end": [2.0, 2.0, 2.0],
            "cpu_steal_share": 0.0123,
        },
    }
    lines = ovj.markdown(report).splitlines()
    assert lines[0].startswith("| 2 seeds x 10 epochs | test accuracy")
    assert lines[2] == (
        "| original notebook (PyTorch) | 0.710 ± 0.014 | 0.100 ± 0.000 | 0.050 ± 0.000 | "
        "1.300 ± 0.141 | 2.0 |"
    )
    assert lines[3].startswith("| jaxcal | 0.700 ± 0.014 |")
    assert "T = 0.925 ± 0.035 instead of the converged 1.300 ± 0.141" in lines[5]
    assert "[2.0, 2.0, 2.0] at end; CPU steal during the run: 1.2%." in lines[5]


def test_bad_arguments_exit_with_the_option_name(capsys):
    with pytest.raises(SystemExit):
        ovj.main(["--seeds", "0"])
    assert "--seeds must be >= 1" in capsys.readouterr().err
