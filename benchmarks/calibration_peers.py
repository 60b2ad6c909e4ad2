"""jaxcal's calibration measures against torchmetrics, netcal, relplot and a numpy bootstrap.

Run `python -m benchmarks.calibration_peers [--quick] [--json PATH] [--tasks ece ...]`. Every
row times jaxcal and its peer in one interleaved run (A B A B ..., medians) on the same inputs
and records both values, which must agree; the ECE rows are also timed `REPEATED_CALLS` calls
per sample (`*repeated*`); the peak-RSS rows run `ece` in fresh processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from jaxcal import calibration
from jaxcal.calibration.metrics import _resample_indices

if TYPE_CHECKING:
    import torch

NUM_BINS = 15
# Float32 bin edges of the peers can move a sample lying within rounding of an edge: 2 / N each.
VALUE_ATOL = 1e-5
SMOOTH_ATOL = 1e-4  # relplot parity bar of smooth_ece
# Calls per timed sample of the ECE rows' second timing: a lone call after the other library's
# starts with cold caches on these machines; several in a row show both sides warm.
REPEATED_CALLS = 5


@dataclasses.dataclass(frozen=True)
class PeersConfig:
    """Sizes of one run.

    Attributes:
      sizes: sample counts of the ECE and smooth-ECE rows.
      bootstrap_size: samples of the bootstrap row.
      num_resamples: bootstrap resamples.
      rss_size: samples of the peak-RSS rows.
      rss_bins: bin counts of the peak-RSS rows.
      repeats: interleaved timing rounds per row.
    """

    sizes: tuple[int, ...] = (10_000, 1_000_000)
    bootstrap_size: int = 10_000
    num_resamples: int = 1000
    rss_size: int = 1_000_000
    rss_bins: tuple[int, ...] = (15, 1000)
    repeats: int = 5

    @classmethod
    def quick(cls) -> PeersConfig:
        return cls(
            sizes=(2_000,),
            bootstrap_size=2_000,
            num_resamples=200,
            rss_size=100_000,
            rss_bins=(15, 1000),
            repeats=2,
        )


def simulated(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 probabilities ([N] p(y=1) or [N, K] softmax of overconfident logits), labels."""
    rng = np.random.default_rng(seed)
    if classes == 2:
        z = rng.normal(0.0, 2.0, n)
        labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-z / 1.5))).astype(np.int32)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32), labels
    z = rng.normal(0.0, 2.0, (n, classes))
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    soft = np.exp((z - z.max(axis=1, keepdims=True)) / 1.5)
    soft /= soft.sum(axis=1, keepdims=True)
    labels = (soft.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, classes - 1)
    return probs.astype(np.float32), labels.astype(np.int32)


def _row(
    task: str,
    n: int,
    times: dict[str, list[float]],
    values: dict[str, float],
    atol: float,
    repeated: dict[str, list[float]] | None = None,
):
    """One row: medians, speedups and values of jaxcal and each peer (and of `repeated`)."""
    jaxcal_ms = timing.median(times["jaxcal"])
    row: dict[str, Any] = {"task": task, "n": n, "jaxcal_ms": jaxcal_ms, "peers": {}}
    if repeated is not None:
        row["jaxcal_repeated_ms"] = timing.median(repeated["jaxcal"])
        row["calls_per_repeated_sample"] = REPEATED_CALLS
    for name in times:
        if name == "jaxcal":
            continue
        peer_ms = timing.median(times[name])
        row["peers"][name] = {
            "ms": peer_ms,
            "speedup": round(peer_ms / jaxcal_ms, 2),
            "value": float(values[name]),
            "agrees": bool(abs(values[name] - values["jaxcal"]) <= atol),
        }
        if repeated is not None:
            theirs = timing.median(repeated[name])
            row["peers"][name] |= {
                "repeated_ms": theirs,
                "speedup_repeated": round(theirs / row["jaxcal_repeated_ms"], 2),
            }
    row["jaxcal_value"] = float(values["jaxcal"])
    return row


def _blocked(fn: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: jax.block_until_ready(fn())


def _torchmetrics_ece(
    probs: torch.Tensor, labels: torch.Tensor, classes: int, validate_args: bool
) -> Callable[[], float]:
    """torchmetrics' 15-bin ECE of `probs` ([N] p(y=1) or [N, K]) as a call without arguments."""
    from torchmetrics.functional.classification import (
        binary_calibration_error,
        multiclass_calibration_error,
    )

    if classes == 2:
        return lambda: float(
            binary_calibration_error(probs, labels, n_bins=NUM_BINS, validate_args=validate_args)
        )
    return lambda: float(
        multiclass_calibration_error(
            probs, labels, num_classes=classes, n_bins=NUM_BINS, validate_args=validate_args
        )
    )


def _timed_row(
    task: str, n: int, runs: dict[str, Callable[[], Any]], cfg: PeersConfig
) -> dict[str, Any]:
    """`runs` timed single and `REPEATED_CALLS` per sample, values compared (an ECE row)."""
    values = {name: float(run()) for name, run in runs.items()}
    times = timing.time_interleaved(runs, repeats=cfg.repeats)
    repeated = timing.time_interleaved(runs, repeats=cfg.repeats, number=REPEATED_CALLS)
    return _row(task, n, times, values, VALUE_ATOL, repeated)


def bench_ece(cfg: PeersConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """`ece` (binary p(y=1) and 10-class top-label) vs torchmetrics and netcal.

    Each size also gets an `*_unchecked` row with input validation off on both sides, showing
    how much of each time is the checks: jaxcal's value checks run only eagerly, so `ece` under
    `jax.jit` skips them, and torchmetrics skips its own with validate_args=False (netcal has
    no such switch and is left out).
    """
    rows = []
    for classes in (2, 10):
        for n in cfg.sizes:
            rows.extend(_ece_rows(classes, n, cfg))
            log(f"ece {classes} classes n={n}: {rows[-2]}, {rows[-1]}")
    return rows


def _ece_rows(classes: int, n: int, cfg: PeersConfig) -> list[dict[str, Any]]:
    """The checked and the unchecked ECE row of `classes` at `n` samples."""
    import netcal.metrics
    import torch

    task = "ece_binary" if classes == 2 else "ece_10_class"
    probs, labels = simulated(n, classes)
    p_jax, y_jax = jnp.asarray(probs), jnp.asarray(labels)
    p_torch, y_torch = torch.from_numpy(probs), torch.from_numpy(labels.astype(np.int64))
    checked = {
        "jaxcal": _blocked(lambda: calibration.ece(p_jax, y_jax, from_logits=False)),
        "torchmetrics": _torchmetrics_ece(p_torch, y_torch, classes, validate_args=True),
        "netcal": lambda: netcal.metrics.ECE(bins=NUM_BINS).measure(probs, labels),
    }
    jitted = jax.jit(lambda p, y: calibration.ece(p, y, from_logits=False))
    unchecked = {
        "jaxcal": _blocked(lambda: jitted(p_jax, y_jax)),
        "torchmetrics": _torchmetrics_ece(p_torch, y_torch, classes, validate_args=False),
    }
    return [_timed_row(task, n, checked, cfg), _timed_row(f"{task}_unchecked", n, unchecked, cfg)]


def numpy_bootstrap(confidence: np.ndarray, target: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """[R] 15-bin ECE of each resample (rows of `indices`), a numpy loop over resamples."""
    out = np.empty(len(indices))
    for r, index in enumerate(indices):
        c, t = confidence[index], target[index]
        b = np.minimum((c * NUM_BINS).astype(np.int64), NUM_BINS - 1)
        gap = np.bincount(b, c - t, NUM_BINS)
        out[r] = np.abs(gap).sum() / len(c)
    return out


def bench_bootstrap(cfg: PeersConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """`ece_bootstrap` vs the same resampling loop in numpy (same resample indices)."""
    n, resamples = cfg.bootstrap_size, cfg.num_resamples
    probs, labels = simulated(n, 2)
    key = jax.random.key(0)
    indices = np.asarray(
        jax.vmap(lambda r: _resample_indices(jax.random.fold_in(key, r), n))(jnp.arange(resamples))
    )
    target = labels.astype(np.float32)
    p_jax, y_jax = jnp.asarray(probs), jnp.asarray(labels)

    def jaxcal_run():
        return calibration.ece_bootstrap(
            p_jax, y_jax, key, num_resamples=resamples, from_logits=False
        ).upper

    def basic_upper(replicates):
        plug_in = numpy_bootstrap(probs, target, np.arange(n)[None])[0]
        return max(2 * plug_in - np.quantile(replicates, 0.025), 0.0)

    def numpy_run():
        rng = np.random.default_rng(0)
        draws = (rng.integers(0, n, n) for _ in range(resamples))
        return basic_upper(np.concatenate([numpy_bootstrap(probs, target, [i]) for i in draws]))

    # Timed: the numpy loop draws its own indices. Compared: the same loop on jaxcal's indices.
    values = {
        "jaxcal": float(jaxcal_run()),
        "numpy": basic_upper(numpy_bootstrap(probs, target, indices)),
    }
    runs = {"jaxcal": _blocked(jaxcal_run), "numpy": numpy_run}
    times = timing.time_interleaved(runs, repeats=max(2, cfg.repeats // 2))
    row = _row("ece_bootstrap_upper", n, times, values, VALUE_ATOL)
    row["num_resamples"] = resamples
    log(f"ece_bootstrap n={n}: {row}")
    return [row]


def bench_smooth_ece(cfg: PeersConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """`smooth_ece` (fixed-point bandwidth) vs `relplot.smECE`."""
    import relplot

    rows = []
    for n in cfg.sizes:
        probs, labels = simulated(n, 2, seed=1)
        p_jax, y_jax = jnp.asarray(probs), jnp.asarray(labels)
        p64 = probs.astype(np.float64)
        runs = {
            "jaxcal": _blocked(
                lambda p=p_jax, y=y_jax: calibration.smooth_ece(p, y, from_logits=False).error
            ),
            "relplot": lambda p=p64, y=labels: relplot.smECE(p, y),
        }
        values = {name: float(run()) for name, run in runs.items()}
        times = timing.time_interleaved(runs, repeats=max(2, cfg.repeats // 2))
        rows.append(_row("smooth_ece", n, times, values, SMOOTH_ATOL))
        log(f"smooth_ece n={n}: {rows[-1]}")
    return rows


RSS_SCRIPT = """
import sys
import numpy as np
import jax, jax.numpy as jnp
from benchmarks.timing import peak_rss_mib
from jaxcal.calibration import ece
n, bins = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
z = jnp.asarray(rng.normal(0, 2, n).astype(np.float32))
y = jnp.asarray((rng.random(n) < 0.5).astype(np.int32))
jax.block_until_ready((z, y))
before = peak_rss_mib()
ece(z, y, num_bins=bins).block_until_ready()
print(before, peak_rss_mib())
"""


def bench_peak_rss(cfg: PeersConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Peak RSS (MiB) of one `ece` call in a fresh process, per bin count."""
    rows = []
    for bins in cfg.rss_bins:
        result = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, str(cfg.rss_size), str(bins)],
            cwd=pathlib.Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        before, after = (float(v) for v in result.stdout.split())
        rows.append(
            {
                "task": "ece_peak_rss",
                "n": cfg.rss_size,
                "num_bins": bins,
                "peak_rss_mib": round(after, 1),
                "added_by_ece_mib": round(after - before, 1),
            }
        )
        log(f"peak rss: {rows[-1]}")
    return rows


BENCHES = {
    "ece": bench_ece,
    "bootstrap": bench_bootstrap,
    "smooth_ece": bench_smooth_ece,
    "peak_rss": bench_peak_rss,
}


def run(
    quick: bool = False,
    log: Callable[[str], None] = lambda _: None,
    tasks: tuple[str, ...] = tuple(BENCHES),
) -> dict[str, Any]:
    """Runs the rows of `tasks` (BENCHES names); returns the report (machine, config, rows)."""
    unknown = sorted(set(tasks) - set(BENCHES))
    if unknown:
        raise ValueError(f"tasks must be among {sorted(BENCHES)}, got {unknown}")
    cfg = PeersConfig.quick() if quick else PeersConfig()
    machine, start = timing.machine_info(), timing.cpu_counters()
    rows = []
    for task in tasks:
        rows.extend(BENCHES[task](cfg, log))
    return {
        "machine": machine | timing.run_conditions(start),
        "config": {"quick": quick, "tasks": list(tasks), **dataclasses.asdict(cfg)},
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    """The rows as a markdown table (ms are medians of interleaved runs)."""
    lines = [
        "| task | N | jaxcal ms | peer | peer ms | speedup | values agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if row["task"] == "ece_peak_rss":
            lines.append(
                f"| ece peak RSS, {row['num_bins']} bins | {row['n']:,} | "
                f"{row['peak_rss_mib']} MiB (+{row['added_by_ece_mib']}) | | | | |"
            )
            continue
        for name, peer in row["peers"].items():
            lines.append(
                f"| {row['task']} | {row['n']:,} | {row['jaxcal_ms']:.2f} | {name} | "
                f"{peer['ms']:.2f} | {peer['speedup']}x | {peer['agrees']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute on 2 cores")
    parser.add_argument("--json", type=pathlib.Path, help="write the report as JSON here")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=sorted(BENCHES),
        default=list(BENCHES),
        help="run only these rows (default: all)",
    )
    args = parser.parse_args(argv)
    report = run(quick=args.quick, log=lambda m: print(m, file=sys.stderr), tasks=tuple(args.tasks))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
