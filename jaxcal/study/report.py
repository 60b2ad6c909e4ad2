"""The study's markdown table, and atomic writers of figures, metrics.json and report.md."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxcal import plotting
from jaxcal.study.beyond_bins import table_rows
from jaxcal.study.calibrators import comparison_table
from jaxcal.study.results import CalibrationStudy


def calibration_table(study: CalibrationStudy) -> str:
    """A markdown table of the test metrics before and after temperature scaling, followed by
    the comparison of every calibrator when the study fitted others."""
    scaled, test = study.temperature, study.test
    fit = scaled.fit
    lines = [
        f"Temperature fitted on the validation set: T = {scaled.temperature:.4f} "
        f"(a = 1/T = {1.0 / scaled.temperature:.4f}, converged: {bool(fit.converged)}); "
        f"validation NLL {float(fit.nll_before):.4f} -> {float(fit.nll_after):.4f}.",
        "",
    ]
    if not fit.converged:
        lines += [
            "**The fit did not converge:** T sits at a bound of its search range (the "
            "validation NLL keeps falling beyond it: separable or uninformative validation "
            "logits, or too few of them) or L-BFGS ran out of iterations, so this T is not a "
            "reliable calibration.",
            "",
        ]
    lines += [f"| test metric ({test.size} images) | before | after |", "|---|---|---|"]
    for label, name in (
        ("ECE", "ece"),
        ("MCE", "mce"),
        ("RMS calibration error", "rmsce"),
        ("NLL", "nll"),
        ("Brier score", "brier"),
    ):
        before, after = getattr(test.raw, name), getattr(scaled.test, name)
        lines.append(f"| {label} | {before:.4f} | {after:.4f} |")
    (lo_b, hi_b), (lo_a, hi_a) = (
        (float(i.lower), float(i.upper)) for i in (test.ece_interval, scaled.test_ece_interval)
    )
    lines.append(
        f"| ECE 95 % bootstrap interval | [{lo_b:.4f}, {hi_b:.4f}] | [{lo_a:.4f}, {hi_a:.4f}] |"
    )
    lines += table_rows(test.raw.beyond, scaled.test.beyond)
    lines.append(f"| accuracy | {test.accuracy:.4f} | {test.accuracy:.4f} |")
    if len(study.methods) > 1:
        lines += ["", comparison_table(study)]
    return "\n".join(lines)


def write_text_atomic(path: str | pathlib.Path, text: str) -> pathlib.Path:
    """Writes `text` to `path` through a temporary file and a rename: readers see the old file
    or the new one, never half of one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_figure_atomic(figure: Any, path: str | pathlib.Path) -> str:
    """Writes a matplotlib figure as `path` through a temporary file; returns the file name."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    plotting.save_figure(figure, temporary)
    os.replace(temporary, path)
    return path.name


def metrics_json(metrics: Mapping[str, Any], setup: Mapping[str, Any]) -> str:
    """The text of metrics.json: `metrics` plus the setup table under "setup"."""
    return json.dumps({**metrics, "setup": dict(setup)}, indent=2, default=_json_default) + "\n"


def write_outputs(
    out_dir: str | pathlib.Path,
    *,
    title: str,
    setup: Mapping[str, Any],
    metrics: Mapping[str, Any],
    sections: Sequence[tuple[str, str]],
    figures: Mapping[str, str],
) -> pathlib.Path:
    """Writes metrics.json and report.md (setup, result sections, figures inline), atomically.

    Args:
      out_dir: output folder (created).
      title: the report's heading.
      setup: the run's settings, shown as a table (and stored in metrics.json as "setup").
      metrics: JSON-serialisable results.
      sections: (heading, markdown body) pairs, e.g. ("Calibration", calibration_table(...)).
      figures: {caption: PNG file name inside out_dir}.

    Returns:
      The path of report.md.
    """
    out_dir = pathlib.Path(out_dir)
    lines = [f"# {title}", "", "## Setup", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in setup.items()]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    lines += ["", "## Figures"]
    for caption, name in figures.items():
        lines += ["", f"**{caption}**", "", f"![{caption}]({name})"]
    text = metrics_json(metrics, setup)
    report = write_text_atomic(out_dir / "report.md", "\n".join(lines) + "\n")
    write_text_atomic(out_dir / "metrics.json", text)
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
