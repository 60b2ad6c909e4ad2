"""jaxcal's calibrators against their reference fits (scipy, scikit-learn, betacal, numpy).

Run `python -m benchmarks.calibrators [--quick] [--json PATH] [--markdown PATH] [--methods ...]`.
Per method: one fit on 10,000 binary logits or 10,000 x 10 logits, jaxcal's
`fit_calibrator` and the float64 reference interleaved (A B A B ...) after warm-up, medians
reported; then 100 fits on 100 data sets of 1,000 samples: one `jax.vmap`ped call against 100
reference fits in a loop. First calls (trace + compile) are reported separately, and every row
records how far jaxcal's probabilities are from the reference's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks import calibrator_references as references
from benchmarks.timing import (
    cpu_counters,
    first_call_ms,
    machine_info,
    median,
    run_conditions,
    time_interleaved,
)
from jaxcal import calibration

REFERENCES: dict[str, tuple[str, Callable[..., references.Predictor]]] = {
    "temperature": ("scipy minimize_scalar", references.temperature),
    "platt": ("scipy BFGS", references.platt),
    # scipy's and scikit-learn's default tolerances: the fits their users run (the parity
    # tests use tight ones, which take 10-100x longer here).
    "vector": ("scipy L-BFGS-B", lambda z, y: references.vector(z, y, options={})),
    "matrix": ("sklearn LogisticRegression", lambda z, y: references.matrix(z, y, tol=1e-4)),
    "dirichlet": (
        "scipy L-BFGS-B (ODIR)",
        lambda z, y: references.dirichlet(z, y, lam=1e-3, mu=1e-3, options={}),
    ),
    "beta": ("betacal", references.beta),
    "histogram": ("numpy", references.histogram),
    "isotonic": ("sklearn IsotonicRegression", references.isotonic),
    "ensemble_temperature": ("scipy SLSQP", references.ensemble_temperature),
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeat counts of one run.

    Attributes:
        samples: samples of the single-fit rows.
        classes: classes of the multiclass rows.
        repeats: timed rounds of the single-fit rows.
        batch: calibrators fitted in the vmap rows.
        batch_samples: samples per calibrator in the vmap rows.
        batch_repeats: timed rounds of the vmap rows.
    """

    samples: int = 10_000
    classes: int = 10
    repeats: int = 5
    batch: int = 100
    batch_samples: int = 1_000
    batch_repeats: int = 2

    @classmethod
    def quick(cls) -> BenchConfig:
        """A smaller run (CI): fewer rounds and calibrators."""
        return cls(repeats=2, batch=10, batch_repeats=1)


def overconfident(n: int, k: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 logits 3x too confident (and shifted) for labels drawn from the truth."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0.0, 1.5, (n,) if k is None else (n, k))
    if k is None:
        labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-truth))).astype(np.int32)
        return (3.0 * truth + 0.5).astype(np.float32), labels
    p = np.exp(truth) / np.exp(truth).sum(axis=1, keepdims=True)
    labels = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1).astype(np.int32)
    return (3.0 * truth + np.linspace(-0.5, 0.5, k)).astype(np.float32), labels


def _fit(method: str, logits, labels) -> calibration.Calibrator:
    return jax.block_until_ready(calibration.fit_calibrator(method, logits, labels))


def single_fit_row(method: str, k: int | None, config: BenchConfig) -> dict[str, Any]:
    """One fit of `method`: jaxcal against its reference, with their probability gap."""
    logits, labels = overconfident(config.samples, k, seed=0)
    z64 = logits.astype(np.float64)
    name, reference = REFERENCES[method]
    first = first_call_ms(lambda: _fit(method, logits, labels))
    samples = time_interleaved(
        {
            "jaxcal": lambda: _fit(method, logits, labels),
            "reference": lambda: reference(z64, labels),
        },
        repeats=config.repeats,
        warmup=1,
    )
    calibrator = _fit(method, logits, labels)
    gap = np.abs(np.asarray(calibrator.probabilities(logits)) - reference(z64, labels)(z64))
    jaxcal_ms, reference_ms = median(samples["jaxcal"]), median(samples["reference"])
    return {
        "task": "fit",
        "method": method,
        "input": f"{config.samples}" if k is None else f"{config.samples}x{k}",
        "jaxcal_ms": jaxcal_ms,
        "reference": name,
        "reference_ms": reference_ms,
        "speedup": round(reference_ms / jaxcal_ms, 3),
        "jaxcal_first_call_ms": round(first, 1),
        "max_abs_probability_gap": float(gap.max()),
        "converged": bool(calibrator.converged),
        "samples_ms": samples,
    }


def batch_fit_row(method: str, k: int | None, config: BenchConfig) -> dict[str, Any]:
    """`config.batch` fits: one vmapped jaxcal call against a loop of reference fits."""
    data = [overconfident(config.batch_samples, k, seed=s) for s in range(config.batch)]
    logits = np.stack([d[0] for d in data])
    labels = np.stack([d[1] for d in data])
    fit_all = jax.jit(jax.vmap(lambda z, y: calibration.fit_calibrator(method, z, y)))
    name, reference = REFERENCES[method]

    def run_jaxcal():
        return jax.block_until_ready(fit_all(logits, labels))

    def run_reference():
        return [reference(z.astype(np.float64), y) for z, y in data]

    first = first_call_ms(run_jaxcal)
    samples = time_interleaved(
        {"jaxcal": run_jaxcal, "reference": run_reference},
        repeats=config.batch_repeats,
        warmup=0,
    )
    converged = np.asarray(run_jaxcal().converged)
    jaxcal_ms, reference_ms = median(samples["jaxcal"]), median(samples["reference"])
    shape = f"{config.batch_samples}" if k is None else f"{config.batch_samples}x{k}"
    return {
        "task": f"vmap {config.batch} fits",
        "method": method,
        "input": f"{config.batch} x {shape}",
        "jaxcal_ms": jaxcal_ms,
        "reference": f"{name}, {config.batch} fits",
        "reference_ms": reference_ms,
        "speedup": round(reference_ms / jaxcal_ms, 3),
        "jaxcal_first_call_ms": round(first, 1),
        "converged_share": float(converged.mean()),
        "samples_ms": samples,
    }


def run(
    *, quick: bool = False, methods: list[str] | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every requested method's rows (binary and multiclass where both apply) and the machine."""
    config = BenchConfig.quick() if quick else BenchConfig()
    report: dict[str, Any] = {"config": dataclasses.asdict(config), "machine": machine_info()}
    start = cpu_counters()
    rows = []
    for method in methods or calibration.CALIBRATORS:
        for k in (None, config.classes):
            if method not in calibration.applicable_methods(1 if k is None else 2):
                continue
            for make_row in (single_fit_row, batch_fit_row):
                row = make_row(method, k, config)
                log(f"{row['task']:>14} {method:>20} {row['input']:>14}: {row['speedup']}x")
                rows.append(row)
    report["rows"] = rows
    report["machine"] |= run_conditions(start)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The rows as a markdown table (speedup = reference_ms / jaxcal_ms; > 1: jaxcal faster)."""
    lines = [
        "| task | method | input | jaxcal ms | reference | reference ms | speedup | "
        "jaxcal first call ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['task']} | {row['method']} | {row['input']} | {row['jaxcal_ms']:.2f} | "
            f"{row['reference']} | {row['reference_ms']:.2f} | {row['speedup']:.2f} | "
            f"{row['jaxcal_first_call_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calibrators")
    parser.add_argument("--json", type=pathlib.Path, help="write the report as JSON here")
    parser.add_argument("--markdown", type=pathlib.Path, help="write the table here")
    parser.add_argument(
        "--methods", nargs="+", choices=list(calibration.CALIBRATORS), help="default: all"
    )
    args = parser.parse_args(argv)
    report = run(quick=args.quick, methods=args.methods, log=lambda m: print(m, file=sys.stderr))
    table = markdown(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
