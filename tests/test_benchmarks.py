"""Tests for benchmarks/: the timing harness, the reference computations and the report rows."""

import dataclasses
import json
import pathlib
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import benchmarks
from benchmarks import resnet_convolutions, step_times, timing
from jaxcal import calibration
from jaxcal.models import LeNet5

TASKS = (
    "lenet_step",
    "mlp_step",
    "resnet18_step",
    "lenet_epoch",
    "temperature_sweep",
    "temperature_fit",
)
# One sample moving between adjacent bins changes the ECE by up to 2 / N; float32 sums over
# 10,000 samples differ from float64 ones by ~1e-6. Equal ECE values: within 1e-5.
ECE_ATOL = 1e-5


def test_time_interleaved_warms_up_then_alternates():
    calls = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = timing.time_interleaved(runs, repeats=3, number=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert set(samples) == {"a", "b"}
    assert all(len(v) == 3 and all(ms >= 0 for ms in v) for v in samples.values())
    calls.clear()
    timing.time_interleaved(runs, repeats=2, number=1, warmup=0, settle=1)
    assert calls == ["a", "a", "b", "b"] * 2


def test_step_rows_settle_before_every_timed_sample():
    # The small step rows time steps back to back: `step_settle` untimed calls of each run
    # precede each of its timed samples, after the first call and the 2 warm-up calls.
    calls = {"a": 0, "reference": 0}

    def counted(name):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    rows = step_times._rows_against_reference(
        "lenet_step",
        {"a": counted("a")},
        "ref",
        counted("reference"),
        repeats=2,
        number=3,
        settle=2,
    )
    assert calls == {"a": 1 + 2 + 2 * (2 + 3), "reference": 1 + 2 + 2 * (2 + 3)}
    assert [row["variant"] for row in rows] == ["a"]
    assert (
        step_times.BenchConfig().step_settle >= 1
        and step_times.BenchConfig.quick().step_settle >= 1
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"runs": {}, "repeats": 1}, "at least one"),
        ({"runs": {"a": print}, "repeats": 0}, "repeats"),
        ({"runs": {"a": print}, "repeats": 1, "number": 0}, "number"),
        ({"runs": {"a": print}, "repeats": 1, "warmup": -1}, "warmup"),
        ({"runs": {"a": print}, "repeats": 1, "settle": -1}, "settle"),
    ],
)
def test_time_interleaved_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timing.time_interleaved(**kwargs)
    with pytest.raises(TypeError, match="callable"):
        timing.time_interleaved({"a": 1}, repeats=1)


def test_median_and_machine_info():
    assert timing.median([3.0, 1.0, 2.0, 10.0]) == 2.5
    with pytest.raises(ValueError):
        timing.median([])
    info = timing.machine_info()
    assert info["cores"] >= 1 and info["versions"]["jax"] and info["jax_backend"]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), temperature=st.floats(0.2, 5.0))
def test_numpy_ece_loop_equals_jaxcal_ece(seed, temperature):
    logits, labels = step_times.overconfident_logits(500, seed)
    loop = step_times.ece_numpy_loop(logits, labels, np.asarray([temperature], np.float32))
    scaled = jnp.asarray(logits) / jnp.float32(temperature)
    ours = calibration.ece(scaled, jnp.asarray(labels), num_bins=15)
    np.testing.assert_allclose(loop[0], float(ours), atol=ECE_ATOL)


def test_numpy_ece_loop_matches_netcal():
    netcal = pytest.importorskip("netcal.metrics")
    logits, labels = step_times.overconfident_logits(2000, 3)
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    expected = netcal.ECE(bins=15).measure(probs, labels)
    loop = step_times.ece_numpy_loop(logits, labels, np.asarray([1.0], np.float32))
    np.testing.assert_allclose(loop[0], expected, atol=ECE_ATOL)


def test_exact_temperature_is_the_nll_minimum():
    optimize = pytest.importorskip("scipy.optimize")
    logits, labels = step_times.overconfident_logits(5000, 4)
    exact = step_times.exact_temperature(logits, labels)
    z, y = logits.astype(np.float64), labels.astype(np.float64)

    def nll(temperature):
        return np.mean(np.logaddexp(0.0, z / temperature) - y * z / temperature)

    bounded = optimize.minimize_scalar(nll, bounds=(0.5, 10.0), method="bounded")
    assert abs(exact - bounded.x) / exact < 1e-6
    assert 2.5 < exact < 3.5  # logits were made 3x overconfident
    assert nll(exact) <= min(nll(exact * (1 + 1e-6)), nll(exact * (1 - 1e-6)))
    with pytest.raises(ValueError, match="separate"):
        step_times.exact_temperature(np.asarray([-2.0, 3.0]), np.asarray([0, 1]))


def test_switching_lenet_convolutions_keeps_weights_and_outputs():
    model = LeNet5.mnist_cnn(rngs=nnx.Rngs(0))  # padding 2 in conv1, no padding in conv2
    switched = step_times.with_other_convolutions(LeNet5.mnist_cnn(rngs=nnx.Rngs(0)))
    assert type(model.conv1) is not type(switched.conv1)
    assert type(model.conv2) is not type(switched.conv2)
    jax.tree.map(
        np.testing.assert_array_equal, nnx.state(model, nnx.Param), nnx.state(switched, nnx.Param)
    )
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 28, 28, 1), np.float32))
    # Two float32 lowerings of the same convolutions: 150-term sums, logits of size ~0.1.
    np.testing.assert_allclose(model(x), switched(x), atol=1e-5)


def test_resnet_convolution_rows_time_every_variant_and_name_the_cpu_choice():
    shapes = (
        resnet_convolutions.Shape("small 3x3", 6, 3, 4, 3, 1, 1, "xw"),
        resnet_convolutions.Shape("big 3x3", 16, 3, 4, 3, 1, 1),
        resnet_convolutions.Shape("1x1/2", 8, 3, 4, 1, 2, 0, "w"),
        resnet_convolutions.Shape("28x28 3x3", 28, 3, 4, 3, 1, 1),
    )
    report = resnet_convolutions.run(quick=True, shapes=shapes, batch=1)
    rows = report["rows"]
    assert [row["cpu_choice"] for row in rows] == ["im2col", "XLA", "im2col", "Winograd"]
    forward = {"XLA NHWC float32", "XLA NCHW bfloat16", "im2col float32", "torch NCHW float32"}
    for row in rows:
        assert forward <= set(row["ms"]) and all(ms > 0 for ms in row["ms"].values())
    assert {"XLA gradients (xw)", "im2col gradients (xw)", "torch forward + gradients"} <= set(
        rows[0]["ms"]
    )
    assert "XLA gradients (w)" in rows[2]["ms"] and "XLA gradients (xw)" not in rows[1]["ms"]
    assert "Winograd float32" in rows[3]["ms"] and "Winograd float32" not in rows[2]["ms"]
    table = resnet_convolutions.markdown(report)
    assert table.count("| small 3x3 |") == 2 and table.count("| big 3x3 |") == 1


def test_mlp_gemm_floor_computes_the_steps_products():
    widths, batch = (6, 5, 3), 4
    forward, weight_grads, input_grads = step_times.mlp_gemm_floor_runner(widths, batch, 1)()
    assert [a.shape for a in forward] == [(batch, 5), (batch, 3)]
    assert [g.shape for g in weight_grads] == [(6, 5), (5, 3)]  # one per kernel
    assert [g.shape for g in input_grads] == [(batch, 5)]  # none for the step's input
    rng = np.random.default_rng(1)  # the runner's operands, drawn in the same order
    x = rng.standard_normal((batch, 6), dtype=np.float32)
    k1 = rng.standard_normal((6, 5), dtype=np.float32) / np.sqrt(6)
    k2 = rng.standard_normal((5, 3), dtype=np.float32) / np.sqrt(5)
    a1 = x @ k1
    out = a1 @ k2
    g1 = out @ k2.T  # backward from the output, as the step's chain runs
    for ours, expected in zip(
        (*forward, *weight_grads, *input_grads),
        (a1, out, x.T @ g1, a1.T @ out, g1),
        strict=True,
    ):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_torch_missing_is_reported_not_fatal(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delitem(sys.modules, "benchmarks.torch_reference", raising=False)
    # An earlier import leaves the submodule as an attribute of the package, which
    # `from benchmarks import torch_reference` would find without importing anything.
    monkeypatch.delattr(benchmarks, "torch_reference", raising=False)
    module, reason = step_times.load_torch_reference()
    assert module is None and "torch" in reason
    tiny = step_times.BenchConfig(
        repeats=2,
        step_number=1,
        sweep_samples=2000,
        sweep_temperatures=50,
        big_sweep_samples=5000,
        fit_samples=2000,
    )
    messages = []
    report = step_times.run(
        tasks=("temperature_sweep", "temperature_fit"), config=tiny, log=messages.append
    )
    assert "torch" in report["torch"] and any("skipped" in m for m in messages)
    rows = report["rows"]
    assert [r["task"] for r in rows] == ["temperature_sweep"] * 2 + ["temperature_fit"] * 2
    sweep = rows[0]
    assert sweep["reference"].startswith("numpy")  # needs no torch
    assert sweep["max_abs_ece_difference"] <= ECE_ATOL
    assert sweep["floor_nll_max_relative_difference"] <= 1e-6  # the floor computes the NLL
    assert sweep["over_floor_back_to_back"] == pytest.approx(
        sweep["jaxcal_back_to_back_ms"] / sweep["floor_back_to_back_ms"], rel=1e-2
    )
    assert sweep["speedup"] == pytest.approx(sweep["reference_ms"] / sweep["jaxcal_ms"], rel=1e-2)
    for row in rows[2:]:
        assert row["reference"] is None and row["reference_ms"] is None and row["speedup"] is None
        assert row["jaxcal_relative_error"] < 1e-5
        assert row["jaxcal_repeated_ms"] > 0 and row["speedup_repeated"] is None
        assert row["fits_per_repeated_sample"] == tiny.step_number
    table = step_times.markdown(report)
    assert table.count("| temperature_") == 4


def test_accelerator_preset_adds_batch_256_and_the_ten_million_sweep():
    accelerator, full = step_times.BenchConfig.accelerator(), step_times.BenchConfig()
    assert accelerator.step_batches == (64, 256) and full.step_batches == (64,)
    assert accelerator.big_sweep_samples == 10_000_000
    assert dataclasses.replace(accelerator, step_batches=(64,), big_sweep_samples=1_000_000) == full
    for bad in ((), (0,), [64], (64, True), (64.0,)):
        with pytest.raises(ValueError, match="step_batches"):
            step_times.BenchConfig(step_batches=bad)


def test_step_rows_come_per_batch_with_their_own_gemm_floor(monkeypatch):
    # Every step runner is replaced by a sleep of 1 ms per 64 examples (the floor: half that),
    # so the rows' grouping, labels and floor ratios are checked without compiling anything.
    batches = []

    def fake_runner(batch, share=1.0):
        batches.append(batch)
        return lambda: time.sleep(0.001 * share * batch / 64)

    monkeypatch.setattr(
        step_times, "jaxcal_step_runner", lambda m, config, *a, **k: fake_runner(config.batch_size)
    )
    monkeypatch.setattr(
        step_times, "mlp_nnx_jit_runner", lambda m, config: fake_runner(config.batch_size)
    )
    monkeypatch.setattr(
        step_times, "mlp_gemm_floor_runner", lambda widths, batch: fake_runner(batch, 0.5)
    )
    cfg = step_times.BenchConfig(repeats=3, step_number=1, step_settle=0, step_batches=(64, 128))
    report = step_times.run(tasks=("lenet_step", "mlp_step"), config=cfg, torch_reason="none")
    rows = report["rows"]
    assert batches == [64, 64, 128, 128] + [64] * 3 + [128] * 3
    assert [(r["task"], r["batch_size"]) for r in rows] == [
        *[("lenet_step", 64)] * 2,
        *[("lenet_step", 128)] * 2,
        *[("mlp_step", 64)] * 3,
        *[("mlp_step", 128)] * 3,
    ]
    assert rows[0]["variant"] == "jaxcal LeNet5 (PatchConv, patches + GEMM)"
    assert rows[2]["variant"] == "jaxcal LeNet5 (PatchConv, patches + GEMM), batch 128"
    assert all(r["variant"].endswith(", batch 128") for r in rows if r["batch_size"] == 128)
    assert not any("batch" in r["variant"] for r in rows if r["batch_size"] == 64)
    for group in (rows[4:7], rows[7:10]):
        floor = group[-1]
        assert floor["variant"].startswith("GEMM floor") and "floor_ratio" not in floor
        for row in group[:-1]:
            assert row["floor_ratio"] == pytest.approx(row["jaxcal_ms"] / floor["jaxcal_ms"], 1e-2)
            assert 1.3 < row["floor_ratio"] < 3  # 1 ms over its own batch's 0.5 ms floor
    assert report["config"]["step_batches"] == (64, 128)


def test_lenet_rows_above_128_show_micro_batches_and_the_whole_batch(monkeypatch):
    """At batch 256 on CPU, `fit` runs LeNet-5 (PatchConv) in micro-batches of 128: its row
    says so and a whole-batch row stands beside it; nnx.Conv's is not split."""
    if jax.default_backend() != "cpu":
        pytest.skip("micro-batches are a CPU choice")
    made = []

    def fake_runner(model, config, *args, micro_batch_size=None, **kwargs):
        made.append(micro_batch_size)
        return lambda: time.sleep(0.001)

    monkeypatch.setattr(step_times, "jaxcal_step_runner", fake_runner)
    cfg = step_times.BenchConfig(repeats=2, step_number=1, step_settle=0, step_batches=(256,))
    report = step_times.run(tasks=("lenet_step",), config=cfg, torch_reason="none")
    variants = [row["variant"] for row in report["rows"]]
    assert variants == [
        "jaxcal LeNet5 (PatchConv, patches + GEMM, micro-batches of 128), batch 256",
        "jaxcal LeNet5 (PatchConv, patches + GEMM, whole batch), batch 256",
        "jaxcal LeNet5 (nnx.Conv, XLA convolutions), batch 256",
    ]
    assert made == [None, 256, None]


def test_accelerator_flag_excludes_the_quick_sizes(capsys):
    with pytest.raises(SystemExit) as error:
        step_times.main(["--quick", "--accelerator"])
    assert error.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_run_rejects_unknown_tasks_and_configs():
    with pytest.raises(ValueError, match="unknown tasks"):
        step_times.run(tasks=("nope",), torch_reason="not needed")
    with pytest.raises(TypeError, match="BenchConfig"):
        step_times.run(tasks=("temperature_fit",), config={"repeats": 1}, torch_reason="x")


@pytest.mark.slow
def test_quick_mode_writes_every_row(tmp_path):
    json_path, md_path = tmp_path / "times.json", tmp_path / "times.md"
    command = [sys.executable, "-m", "benchmarks.step_times", "--quick"]
    command += ["--json", str(json_path), "--markdown", str(md_path)]
    root = pathlib.Path(__file__).resolve().parents[1]  # `benchmarks` is run from the repo root
    subprocess.run(command, check=True, timeout=600, capture_output=True, cwd=root)
    report = json.loads(json_path.read_text())
    rows = report["rows"]
    assert {row["task"] for row in rows} == set(TASKS)
    resnet = [r["variant"] for r in rows if r["task"] == "resnet18_step"]
    assert len(resnet) == 4 and sum("XLA convolutions" in v for v in resnet) == 2
    for row in rows:
        assert all(key in row for key in step_times.REQUIRED_KEYS)
        assert row["jaxcal_ms"] > 0 and row["jaxcal_first_call_ms"] > 0
        if row["reference_ms"] is not None:
            assert row["speedup"] == pytest.approx(row["reference_ms"] / row["jaxcal_ms"], rel=1e-2)
    sweep = next(r for r in rows if r["task"] == "temperature_sweep")
    assert sweep["max_abs_ece_difference"] <= ECE_ATOL
    for row in rows:
        if row["task"] == "temperature_fit":
            assert row["jaxcal_relative_error"] < 1e-5
            assert row["speedup_repeated"] == pytest.approx(
                row["reference_repeated_ms"] / row["jaxcal_repeated_ms"], rel=1e-2
            )
    assert report["machine"]["cores"] >= 1 and report["machine"]["versions"]["jax"]
    assert "cpu_steal_share" in report["machine"] and "load_average_at_end" in report["machine"]
    assert md_path.read_text().count("\n| ") == len(rows) + 1  # header + one line per row


def _stat_file(tmp_path, name, line):
    path = tmp_path / name
    path.write_text(line + "\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    return path


def test_steal_share_is_the_stolen_part_of_the_machines_cpu_time(tmp_path):
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    start = timing.cpu_counters(_stat_file(tmp_path, "a", "cpu  100 0 50 800 10 0 0 40 30 0"))
    end = timing.cpu_counters(_stat_file(tmp_path, "b", "cpu  400 0 100 1000 10 0 0 190 90 0"))
    assert start == timing.CpuCounters(busy=150, steal=40)  # idle and iowait left out
    assert end == timing.CpuCounters(busy=500, steal=190)
    assert timing.steal_share(start, end) == 150 / (150 + 350)
    assert timing.steal_share(start, start) is None
    assert timing.steal_share(None, end) is None and timing.steal_share(start, None) is None
    old_kernel = timing.cpu_counters(_stat_file(tmp_path, "c", "cpu  1 2 3 4"))
    assert old_kernel == timing.CpuCounters(busy=6, steal=0)


@pytest.mark.parametrize("content", ["", "intr 1 2 3\n", "cpu  1 2 x 4 5 6 7 8\n"])
def test_cpu_counters_none_without_a_readable_cpu_line(tmp_path, content):
    path = tmp_path / "stat"
    path.write_text(content)
    assert timing.cpu_counters(path) is None
    assert timing.cpu_counters(tmp_path / "missing") is None


def test_run_conditions_record_the_steal_and_warn_when_it_is_high():
    start = timing.CpuCounters(busy=1000, steal=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = timing.run_conditions(start, timing.CpuCounters(busy=1960, steal=40))
    assert quiet["cpu_steal_share"] == 0.04 and "load_average_at_end" in quiet
    with pytest.warns(UserWarning, match="took 30% of the CPU time this machine wanted"):
        noisy = timing.run_conditions(start, timing.CpuCounters(busy=1700, steal=300))
    assert noisy["cpu_steal_share"] == 0.3
    assert timing.steal_note(noisy) == "CPU steal during the run: 30.0%"
    assert timing.steal_note({}) == "CPU steal during the run: not measured"
    assert timing.run_conditions(None)["cpu_steal_share"] is None
