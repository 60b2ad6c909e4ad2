"""The original bird/cat notebook's PyTorch pipeline and jaxcal's main job on the same images.

    python -m benchmarks.original_vs_jaxcal                      # 5 seeds x 10 epochs, ~3 min
    python -m benchmarks.original_vs_jaxcal --seeds 2 --epochs 2 --json out.json --markdown out.md

Both sides train on the 1,187 real CIFAR-10 bird/cat images shipped with jaxcal (983 training
images split 80/20 into train and validation, 204 test images), for each seed:

- original: the first notebook's code path in PyTorch: the filtered training set split by
  `random_split` (after `torch.manual_seed(seed)`), a DataLoader (batch 64, shuffled) over
  per-image ToTensor + Normalize(0.5, 0.5), the single-logit LeNet-5, BCEWithLogits, Adam 1e-3,
  10 epochs; then `a = 1/T` fitted by torch LBFGS on the validation logits, once converged
  (lr=1, max_iter=100, strong_wolfe) and once with the notebook's lr=0.01, max_iter=50, which
  stops far from the optimum (reported apart as `T_notebook_lbfgs`). DataLoader workers: 0 (the
  notebook's 2 change only which process does the same work).
- jaxcal: what `experiments.birdcat` does on `--data embedded --seed SEED`: `load_birdcat`
  (split by `split_indices`), LeNet-5 "birdcat" initialised from the seed, `train.fit` with the
  same recipe, `calibration.fit_temperature` on the validation logits.

Test accuracy, ECE (15 equal bins, p(y = cat), `calibration.ece`, the same function for both
sides) before and after temperature scaling, and T, as mean +- sample std over the seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.timing import cpu_counters, machine_info, run_conditions, steal_note
from jaxcal import calibration, data
from jaxcal.data import embedded

BIRD, CAT = 2, 3
NUM_BINS = 15
FIELDS = ("accuracy", "ece_before", "ece_after", "temperature")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One seed of one side: test metrics, the fitted temperature and the wall time."""

    seed: int
    accuracy: float
    ece_before: float
    ece_after: float
    temperature: float
    seconds: float
    temperature_notebook_lbfgs: float | None = None


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of each field over the seeds."""

    mean: dict[str, float]
    std: dict[str, float]


def birdcat_images() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The embedded bird (0) and cat (1) images as the notebook filters them, in file order.

    Returns:
        (train images uint8 [983, 32, 32, 3], labels int64 [983]), (test [204, ...], [204]).
    """
    out = []
    for train in (True, False):
        images, labels = embedded.read_cifar10(train=train)
        keep = np.isin(labels, (BIRD, CAT))
        out.append((np.ascontiguousarray(images[keep]), (labels[keep] == CAT).astype(np.int64)))
    return out[0], out[1]


def _metrics(test_logits, test_labels, temperature: float) -> dict[str, float]:
    kw = {"num_bins": NUM_BINS}
    logits = np.asarray(test_logits, np.float32)
    return {
        "accuracy": float(calibration.accuracy(logits, test_labels)),
        "ece_before": float(calibration.ece(logits, test_labels, **kw)),
        "ece_after": float(calibration.ece(logits / np.float32(temperature), test_labels, **kw)),
    }


def run_original(seed: int, epochs: int) -> RunResult:
    """The notebook's PyTorch pipeline for one seed (imports torch)."""
    import torch
    from torch.utils.data import DataLoader, random_split

    from benchmarks import torch_reference as ref

    started = time.perf_counter()
    (train_images, train_labels), (test_images, test_labels) = birdcat_images()
    torch.manual_seed(seed)
    pool = ref.UInt8ImageDataset(train_images, train_labels)
    train_size = int(0.8 * len(pool))
    train_set, val_set = random_split(pool, [train_size, len(pool) - train_size])
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    net = ref.LeNet5().to(ref.DEVICE)
    criterion = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        net.train()
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels.float().view(-1, 1))
            loss.backward()
            optimizer.step()

    def logits_of(dataset) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            batches = [net(x)[:, 0] for x, _ in DataLoader(dataset, batch_size=64)]
        return torch.cat(batches).numpy()

    val_logits = logits_of(val_set)
    val_labels = train_labels[np.asarray(val_set.indices)]
    test_logits = logits_of(ref.UInt8ImageDataset(test_images, test_labels))
    temperature = ref.fit_scale_lbfgs(
        val_logits, val_labels, lr=1.0, max_iter=100, line_search_fn="strong_wolfe"
    )
    notebook_t = ref.fit_scale_lbfgs(val_logits, val_labels, lr=0.01, max_iter=50)
    return RunResult(
        seed=seed,
        temperature=temperature,
        seconds=time.perf_counter() - started,
        temperature_notebook_lbfgs=notebook_t,
        **_metrics(test_logits, test_labels, temperature),
    )


def run_jaxcal(seed: int, epochs: int) -> RunResult:
    """jaxcal's main job (experiments.birdcat's LeNet-5 path) for one seed."""
    from flax import nnx

    from jaxcal import models, train

    started = time.perf_counter()
    splits = data.load_birdcat("embedded", seed=seed)
    config = train.TrainConfig(
        epochs=epochs, batch_size=64, optimizer="adam", learning_rate=1e-3, seed=seed
    )
    preprocess = data.make_preprocess(*data.CIFAR_MEAN_STD)
    model = models.LeNet5(models.LeNetConfig.preset("birdcat"), rngs=nnx.Rngs(seed))
    train.fit(
        model,
        (splits.train.images, splits.train.labels),
        (splits.val.images, splits.val.labels),
        config,
        preprocess=preprocess,
        progress=False,
    )
    val_logits = train.predict_logits(model, splits.val.images, preprocess=preprocess)
    test_logits = train.predict_logits(model, splits.test.images, preprocess=preprocess)
    fit = calibration.fit_temperature(val_logits, splits.val.labels)
    temperature = float(fit.temperature)
    return RunResult(
        seed=seed,
        temperature=temperature,
        seconds=time.perf_counter() - started,
        **_metrics(test_logits, splits.test.labels, temperature),
    )


def summarize(results: Sequence[RunResult]) -> Summary:
    """Mean and sample std (ddof 1; 0 for one seed) of every numeric field over `results`."""
    if not results:
        raise ValueError("results must hold at least one run")
    names = [f.name for f in dataclasses.fields(RunResult) if f.name != "seed"]
    columns = {n: [getattr(r, n) for r in results] for n in names}
    columns = {n: v for n, v in columns.items() if None not in v}
    return Summary(
        mean={n: statistics.fmean(v) for n, v in columns.items()},
        std={n: statistics.stdev(v) if len(v) > 1 else 0.0 for n, v in columns.items()},
    )


def _cell(summary: Summary, name: str) -> str:
    return f"{summary.mean[name]:.3f} ± {summary.std[name]:.3f}"


def markdown(report: dict[str, Any]) -> str:
    """The README table: one row per side, mean ± std over the seeds."""
    seeds, epochs = len(report["seeds"]), report["epochs"]
    lines = [
        f"| {seeds} seeds x {epochs} epochs | test accuracy | ECE before | ECE after | T "
        "| s / run |",
        "|---|---|---|---|---|---|",
    ]
    for side, title in (("original", "original notebook (PyTorch)"), ("jaxcal", "jaxcal")):
        summary = Summary(**report["summary"][side])
        cells = " | ".join(_cell(summary, n) for n in FIELDS)
        lines.append(f"| {title} | {cells} | {summary.mean['seconds']:.1f} |")
    original = Summary(**report["summary"]["original"])
    machine = report["machine"]
    lines += [
        "",
        f"The notebook's own LBFGS setting (lr=0.01, max_iter=50) stops at T = "
        f"{_cell(original, 'temperature_notebook_lbfgs')} instead of the converged "
        f"{_cell(original, 'temperature')}. {machine['cores']} cores ({machine['cpu']}), load "
        f"average {machine['load_average_at_start']} at start, {machine['load_average_at_end']} "
        f"at end; {steal_note(machine)}.",
    ]
    return "\n".join(lines)


def run(seeds: Sequence[int], epochs: int) -> dict[str, Any]:
    """Both sides for every seed, alternating (original, jaxcal) so load hits both alike."""
    from benchmarks import torch_reference

    threads = torch_reference.set_threads()
    machine = machine_info()
    machine["torch_threads"] = threads
    start = cpu_counters()
    results: dict[str, list[RunResult]] = {"original": [], "jaxcal": []}
    for seed in seeds:
        results["original"].append(run_original(seed, epochs))
        results["jaxcal"].append(run_jaxcal(seed, epochs))
        print(f"seed {seed}: " + "; ".join(f"{k} {v[-1]}" for k, v in results.items()))
    return {
        "seeds": list(seeds),
        "epochs": epochs,
        "num_bins": NUM_BINS,
        "images": "CIFAR-10 bird/cat, embedded subset: 983 train+val (80/20), 204 test",
        "machine": machine | run_conditions(start),
        "runs": {k: [dataclasses.asdict(r) for r in v] for k, v in results.items()},
        "summary": {k: dataclasses.asdict(summarize(v)) for k, v in results.items()},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.original_vs_jaxcal", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    parser.add_argument("--markdown", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    for name in ("seeds", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    report = run(range(args.seeds), args.epochs)
    table = markdown(report)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return report


if __name__ == "__main__":
    main()
