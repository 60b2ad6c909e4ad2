"""Quick run of benchmarks/calibration_peers.py: every row exists, jaxcal agrees with peers."""

import pytest

from benchmarks import calibration_peers

pytest.importorskip("torchmetrics")
pytest.importorskip("netcal")
pytest.importorskip("relplot")


@pytest.fixture(scope="module")
def report():
    return calibration_peers.run(quick=True)


def test_every_row_exists(report):
    tasks = {(row["task"], row["n"]) for row in report["rows"]}
    n = calibration_peers.PeersConfig.quick().sizes[0]
    for task in (
        "ece_binary",
        "ece_10_class",
        "ece_binary_unchecked",
        "ece_10_class_unchecked",
        "smooth_ece",
    ):
        assert (task, n) in tasks
    assert any(task == "ece_bootstrap_upper" for task, _ in tasks)
    peers = {name for row in report["rows"] for name in row.get("peers", {})}
    assert peers == {"torchmetrics", "netcal", "numpy", "relplot"}
    rss = [row for row in report["rows"] if row["task"] == "ece_peak_rss"]
    assert [row["num_bins"] for row in rss] == [15, 1000]
    assert all(row["peak_rss_mib"] > 0 for row in rss)


def test_values_agree(report):
    for row in report["rows"]:
        for name, peer in row.get("peers", {}).items():
            assert peer["agrees"], (row["task"], name, row["jaxcal_value"], peer["value"])


def test_markdown_has_a_line_per_comparison(report):
    table = calibration_peers.markdown(report)
    comparisons = sum(len(row.get("peers", {})) for row in report["rows"])
    assert len(table.splitlines()) == 2 + comparisons + 2


def test_ece_rows_are_also_timed_with_repeated_calls(report):
    for row in report["rows"]:
        if not row["task"].startswith("ece_") or row["task"] == "ece_peak_rss":
            continue
        if row["task"] == "ece_bootstrap_upper":
            assert "jaxcal_repeated_ms" not in row
            continue
        assert row["calls_per_repeated_sample"] == calibration_peers.REPEATED_CALLS
        for peer in row["peers"].values():
            assert peer["speedup_repeated"] == pytest.approx(
                peer["repeated_ms"] / row["jaxcal_repeated_ms"], rel=1e-2
            )
