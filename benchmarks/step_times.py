"""jaxcal against the original PyTorch notebooks: step, epoch and temperature-scaling times.

Run `python -m benchmarks.step_times [--quick | --accelerator] [--json PATH] [--markdown PATH]`.
Every task times jaxcal and its reference interleaved (A B A B ...) after warm-up and reports
medians; first calls (JAX: trace + compile) are reported separately. Without torch, the torch
references are skipped and the reason is printed; the numpy reference of the temperature sweep
still runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import (
    cpu_counters,
    first_call_ms,
    machine_info,
    median,
    run_conditions,
    steal_note,
    time_interleaved,
)
from jaxcal import calibration, train
from jaxcal.data import transforms
from jaxcal.models import MLP, LeNet5, ResNet18
from jaxcal.models.conv import PatchConv, micro_batch_for, steps_per_call_for
from jaxcal.models.im2col import use_xla_convolutions
from jaxcal.train.loop import steps_dividing_the_epoch

REQUIRED_KEYS = ("task", "jaxcal_ms", "reference", "reference_ms", "speedup")
# The notebooks' batch size: the step rows' first batch and the epoch's.
NOTEBOOK_BATCH = 64


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeat counts of one benchmark run.

    Attributes:
        repeats: timed rounds per task (the median is reported).
        step_batches: batch sizes of the small step tasks (`lenet_step`, `mlp_step`); the
            notebooks' 64 first, whose rows keep their plain names.
        step_number: steps per timed sample for the small step tasks.
        step_settle: untimed steps before each timed sample of the small step tasks, so that
            a sample times steps as a training loop runs them, back to back. The first step
            after torch's block waits for its OpenMP threads, which spin on both cores for a
            while after each parallel region: +4.5 ms on LeNet's ~5.5 ms step, +1.5-2.5 ms on
            the MLP's ~3 ms; `OMP_WAIT_POLICY=PASSIVE` or settling calls take it out.
        resnet_batch: ResNet18 batch size (8 as the originals; smaller in quick mode).
        resnet_repeats: timed rounds for ResNet18.
        epoch_train: training images in `lenet_epoch` (the bird/cat split's 8,000).
        epoch_val: validation images in `lenet_epoch`.
        epoch_repeats: timed epochs per side.
        sweep_samples: samples of the `temperature_sweep` comparison.
        sweep_temperatures: temperatures of the sweep.
        big_sweep_samples: samples of the jaxcal-only sweep.
        fit_samples: samples of the `temperature_fit` comparison.
    """

    repeats: int = 9
    step_batches: tuple[int, ...] = (NOTEBOOK_BATCH,)
    step_number: int = 10
    step_settle: int = 2
    resnet_batch: int = 8
    resnet_repeats: int = 5
    epoch_train: int = 8000
    epoch_val: int = 2000
    epoch_repeats: int = 5
    sweep_samples: int = 10_000
    sweep_temperatures: int = 1000
    big_sweep_samples: int = 1_000_000
    fit_samples: int = 10_000

    @classmethod
    def quick(cls) -> BenchConfig:
        """A run of a few minutes on 2 cores: fewer repeats, ResNet18 at batch 2, quarter epochs."""
        return cls(
            repeats=5,
            step_number=5,
            step_settle=1,
            resnet_batch=2,
            resnet_repeats=3,
            epoch_train=2000,
            epoch_val=500,
            epoch_repeats=2,
            big_sweep_samples=200_000,
        )

    @classmethod
    def accelerator(cls) -> BenchConfig:
        """The full run plus what a GPU or TPU is for: steps at batch 64 and 256, the jaxcal-only
        sweep at 10,000,000 samples (15-19 s a call on 2 EPYC cores, ~2 more minutes in all)."""
        return cls(step_batches=(NOTEBOOK_BATCH, 256), big_sweep_samples=10_000_000)

    def __post_init__(self) -> None:
        batches = self.step_batches
        if (
            not isinstance(batches, tuple)
            or not batches
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches)
        ):
            raise ValueError(
                f"step_batches must be a non-empty tuple of positive ints, got {batches!r}"
            )


def load_torch_reference() -> tuple[ModuleType | None, str]:
    """(benchmarks.torch_reference, "") or (None, why torch cannot be used)."""
    try:
        from benchmarks import torch_reference
    except ImportError as error:
        return (
            None,
            f"torch is not importable ({error}); install it with `pip install -e '.[torch]'`",
        )
    return torch_reference, ""


def _row(
    task: str,
    variant: str,
    jaxcal_samples: list[float],
    reference: str | None,
    reference_samples: list[float] | None,
    **extra: Any,
) -> dict[str, Any]:
    jaxcal_ms = median(jaxcal_samples)
    reference_ms = None if reference_samples is None else median(reference_samples)
    return {
        "task": task,
        "variant": variant,
        "jaxcal_ms": jaxcal_ms,
        "reference": reference,
        "reference_ms": reference_ms,
        "speedup": None if reference_ms is None else round(reference_ms / jaxcal_ms, 3),
        "jaxcal_samples_ms": [round(v, 3) for v in jaxcal_samples],
        "reference_samples_ms": None
        if reference_samples is None
        else [round(v, 3) for v in reference_samples],
        **extra,
    }


def _time_all(
    runs: dict[str, Callable[[], Any] | None],
    *,
    repeats: int,
    number: int = 1,
    settle: int = 0,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """First-call ms of each run, then interleaved samples of all; `None` runs are skipped."""
    runs = {name: run for name, run in runs.items() if run is not None}
    first = {name: first_call_ms(run) for name, run in runs.items()}
    samples = time_interleaved(runs, repeats=repeats, number=number, warmup=2, settle=settle)
    return samples, first


def _compare(
    jaxcal_run: Callable[[], Any],
    reference_run: Callable[[], Any] | None,
    *,
    repeats: int,
    number: int = 1,
) -> tuple[list[float], list[float] | None, float, float | None]:
    """(jaxcal samples, reference samples, jaxcal first call ms, reference first call ms)."""
    samples, first = _time_all(
        {"jaxcal": jaxcal_run, "reference": reference_run}, repeats=repeats, number=number
    )
    return samples["jaxcal"], samples.get("reference"), first["jaxcal"], first.get("reference")


def _rows_against_reference(
    task: str,
    variants: dict[str, Callable[[], Any]],
    reference_name: str | None,
    reference: Callable[[], Any] | None,
    *,
    repeats: int,
    number: int = 1,
    settle: int = 0,
) -> list[dict[str, Any]]:
    """One row per jaxcal variant, all timed interleaved with the one reference."""
    samples, first = _time_all(
        {**variants, "reference": reference}, repeats=repeats, number=number, settle=settle
    )
    return [
        _row(
            task,
            name,
            samples[name],
            None if reference is None else reference_name,
            samples.get("reference"),
            jaxcal_first_call_ms=round(first[name], 1),
            reference_first_call_ms=None if reference is None else round(first["reference"], 1),
        )
        for name in variants
    ]


def jaxcal_step_runner(
    model: nnx.Module,
    config: train.TrainConfig,
    preprocess: train.Preprocess | None,
    image_shape: tuple[int, int, int],
    num_classes: int,
    batches: int = 4,
    seed: int = 0,
    micro_batch_size: int | None = None,
) -> Callable[[], Any]:
    """One call of jaxcal's jitted train step (gather, preprocess, forward, backward, update).

    The step reads its batch from uint8 images held on the device, as `train.fit` does, in the
    micro-batches `fit` picks (`micro_batch_for`) unless `micro_batch_size` is given.
    """
    micro = micro_batch_size or micro_batch_for(model, config.batch_size)
    rng = np.random.default_rng(seed)
    n = batches * config.batch_size
    images = jnp.asarray(rng.integers(0, 256, (n, *image_shape), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, max(num_classes, 2), n).astype(np.int32))
    graphdef, state = train.create_train_state(model, config)
    step = train.make_train_step(graphdef, config, preprocess, micro_batch_size=micro)
    order = train.epoch_batches(jax.random.key(seed), n, config.batch_size)
    holder = [state]

    def run():
        holder[0], metrics = step(holder[0], images, labels, order)
        return metrics.block_until_ready()

    return run


def with_other_convolutions(model: LeNet5) -> LeNet5:
    """`model` with its convolutions switched between `PatchConv` and `nnx.Conv`, same weights.

    jaxcal's LeNet5 builds PatchConv on CPU and nnx.Conv on GPU/TPU (XLA's convolutions); the
    switched model times the other lowering inside the very same training code.
    """
    for i in range(1, len(model.config.convs) + 1):
        old = getattr(model, f"conv{i}")
        other = nnx.Conv if isinstance(old, PatchConv) else PatchConv
        new = other(
            old.in_features,
            old.out_features,
            old.kernel_size,
            padding=old.padding,
            use_bias=old.use_bias,
            rngs=nnx.Rngs(0),
        )
        new.kernel = old.kernel
        if old.use_bias:
            new.bias = old.bias
        setattr(model, f"conv{i}", new)
    return model


def _lowering(model: LeNet5) -> str:
    if isinstance(model.conv1, PatchConv):
        return "PatchConv, patches + GEMM"
    return "nnx.Conv, XLA convolutions"


def _batch_label(name: str, batch_size: int) -> str:
    """A step row's variant: `name` at the notebooks' batch, `name, batch B` at any other."""
    return name if batch_size == NOTEBOOK_BATCH else f"{name}, batch {batch_size}"


def _small_step_rows(
    task: str,
    batch_size: int,
    variants: dict[str, Callable[[], Any]],
    reference_name: str,
    reference: Callable[[], Any] | None,
    cfg: BenchConfig,
) -> list[dict[str, Any]]:
    """The rows of one batch size of a small step task, each carrying its `batch_size`."""
    rows = _rows_against_reference(
        task,
        variants,
        reference_name,
        reference,
        repeats=cfg.repeats,
        number=cfg.step_number,
        settle=cfg.step_settle,
    )
    return [row | {"batch_size": batch_size} for row in rows]


def bench_lenet_step(cfg: BenchConfig, torch_ref: ModuleType | None) -> list[dict[str, Any]]:
    """LeNet-5 bird/cat step, Adam 1e-3, at each of `cfg.step_batches`: jaxcal's train step vs
    torch eager.

    Rows per batch: jaxcal's LeNet5 as built for this backend, and with the other convolution
    lowering, each in the micro-batches `fit` picks; where those split the batch, the same
    model with the whole batch at once besides. Each row carries its `batch_size`.
    """
    preprocess = transforms.make_preprocess(*transforms.CIFAR_MEAN_STD)
    rows = []
    for batch in cfg.step_batches:
        config = train.TrainConfig(batch_size=batch)
        variants = {}
        for model in (
            LeNet5.birdcat(rngs=nnx.Rngs(0)),
            with_other_convolutions(LeNet5.birdcat(rngs=nnx.Rngs(0))),
        ):
            micro = micro_batch_for(model, batch)
            split = "" if micro == batch else f", micro-batches of {micro}"
            variants[_batch_label(f"jaxcal LeNet5 ({_lowering(model)}{split})", batch)] = (
                jaxcal_step_runner(model, config, preprocess, (32, 32, 3), 1)
            )
            if split:
                whole = _batch_label(f"jaxcal LeNet5 ({_lowering(model)}, whole batch)", batch)
                variants[whole] = jaxcal_step_runner(
                    model, config, preprocess, (32, 32, 3), 1, micro_batch_size=batch
                )
        reference = None if torch_ref is None else torch_ref.lenet_step(batch)
        rows += _small_step_rows(
            "lenet_step", batch, variants, "torch eager, notebook LeNet5", reference, cfg
        )
    return rows


def mlp_gemm_floor_runner(widths: tuple[int, ...], batch_size: int, seed: int = 0):
    """The matmuls of one MLP train step alone, in one jitted call: the step's GEMM floor.

    For layers `widths[i] -> widths[i + 1]` at batch B, with the step's data dependencies:
    the forward chain a_{i+1} = a_i @ W_i, then backward from g = the last output, every
    weight gradient a_i^T @ g_i and every input gradient g_{i-1} = g_i @ W_i^T except the
    first layer's (the step never needs the gradient of its input). No bias, activation, loss
    or update. The chain matters: independent products would run side by side on the cores,
    which the step's products cannot.

    Args:
        widths: layer widths, e.g. (784, 512, 512, 10).
        batch_size: B.
        seed: seeds the random operands.

    Returns:
        A zero-argument callable that runs the products once, waits for them and returns
        (forward outputs [B, widths[i + 1]], weight gradients [widths[i], widths[i + 1]],
        input gradients [B, widths[i]] for i >= 1), each a list in layer order.
    """
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch_size, widths[0]), dtype=np.float32))
    kernels = [
        jnp.asarray(rng.standard_normal((a, b), dtype=np.float32) / np.sqrt(a))
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]

    @jax.jit
    def products(x, kernels):
        activations = [x]
        for w in kernels:
            activations.append(activations[-1] @ w)
        g = activations[-1]
        weight_grads, input_grads = [], []
        for i in reversed(range(len(kernels))):
            weight_grads.append(activations[i].T @ g)
            if i:
                g = g @ kernels[i].T
                input_grads.append(g)
        return activations[1:], weight_grads[::-1], input_grads[::-1]

    return lambda: jax.block_until_ready(products(x, kernels))


def mlp_nnx_jit_runner(model: MLP, config: train.TrainConfig, seed: int = 0):
    """The same step through `nnx.jit` on the model and an `nnx.Optimizer` (graph traversal
    on every call), for REFERENCE's "split + jax.jit vs nnx.jit" question; the batch is a
    float32 array already on the device."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.random((config.batch_size, 28, 28, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, model.num_classes, config.batch_size).astype(np.int32))
    optimizer = nnx.Optimizer(model, train.make_optimizer(config), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return train.per_example_loss(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return lambda: step(model, optimizer, x, y).block_until_ready()


def bench_mlp_step(cfg: BenchConfig, torch_ref: ModuleType | None) -> list[dict[str, Any]]:
    """MLP 784-512-512-10 step, SGD 0.01, at each of `cfg.step_batches`: jaxcal's train step
    vs torch eager.

    Rows per batch, all timed interleaved: jaxcal's step, the same step through `nnx.jit`,
    and the step's matmuls alone (its GEMM floor; `floor_ratio` = step / floor).
    """
    rows = []
    for batch in cfg.step_batches:
        rows += _mlp_rows(cfg, torch_ref, batch)
    return rows


def _mlp_rows(cfg: BenchConfig, torch_ref: ModuleType | None, batch: int) -> list[dict[str, Any]]:
    config = train.TrainConfig(batch_size=batch, optimizer="sgd", learning_rate=0.01)
    model = MLP(rngs=nnx.Rngs(0))
    widths = (
        model.in_features,
        *(layer.out_features for layer in model.hidden),
        model.head.out_features,
    )
    names = (
        "jaxcal MLP",
        "same step via nnx.jit + nnx.Optimizer",
        "GEMM floor: the step's 8 matmuls alone, chained as in the step",
    )
    runners = (
        jaxcal_step_runner(model, config, transforms.make_preprocess(), (28, 28, 1), 10),
        mlp_nnx_jit_runner(MLP(rngs=nnx.Rngs(0)), config),
        mlp_gemm_floor_runner(widths, config.batch_size),
    )
    variants = {_batch_label(n, batch): r for n, r in zip(names, runners, strict=True)}
    reference = None if torch_ref is None else torch_ref.mlp_step(batch)
    rows = _small_step_rows(
        "mlp_step", batch, variants, "torch eager, notebook MultiLayerNN", reference, cfg
    )
    floor_ms = rows[-1]["jaxcal_ms"]
    for row in rows[:-1]:
        row["floor_ratio"] = round(row["jaxcal_ms"] / floor_ms, 3)
    return rows


def bench_resnet18_step(cfg: BenchConfig, torch_ref: ModuleType | None) -> list[dict[str, Any]]:
    """ResNet18 at 224: head-only (1 logit, Adam 1e-3) and layer4+head (2 classes, Adam 1e-5).

    Each as built for this backend and with XLA's convolutions throughout, interleaved with
    torch.
    """
    rows = []
    preprocess = transforms.make_preprocess(*transforms.IMAGENET_MEAN_STD)
    for variant, trainable, num_classes, lr in (
        ("head-only", ("fc",), 1, 1e-3),
        ("layer4+head", ("layer4", "fc"), 2, 1e-5),
    ):
        config = train.TrainConfig(
            batch_size=cfg.resnet_batch, trainable=trainable, learning_rate=lr
        )
        size = f"224x224, batch {cfg.resnet_batch}"
        variants = {
            f"{variant}, {size}{suffix}": jaxcal_step_runner(
                build(ResNet18(num_classes, rngs=nnx.Rngs(0))),
                config,
                preprocess,
                (224, 224, 3),
                num_classes,
                batches=2,
            )
            for suffix, build in (("", lambda m: m), (", XLA convolutions", use_xla_convolutions))
        }
        reference = (
            None
            if torch_ref is None
            else torch_ref.resnet18_step(cfg.resnet_batch, 224, trainable, num_classes, lr)
        )
        rows += _rows_against_reference(
            "resnet18_step",
            variants,
            "torch eager, torchvision-layout ResNet18",
            reference,
            repeats=cfg.resnet_repeats,
        )
    return rows


def _birdcat_shaped(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images [n, 32, 32, 3] and labels in {0, 1} (timing needs no real data)."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 2, n).astype(np.int64),
    )


def bench_lenet_epoch(cfg: BenchConfig, torch_ref: ModuleType | None) -> list[dict[str, Any]]:
    """One bird/cat epoch + validation: `train.fit` vs the notebook's DataLoader pipeline."""
    train_data = _birdcat_shaped(cfg.epoch_train, 1)
    val_data = _birdcat_shaped(cfg.epoch_val, 2)
    preprocess = transforms.make_preprocess(*transforms.CIFAR_MEAN_STD)
    config = train.TrainConfig(epochs=1, batch_size=NOTEBOOK_BATCH)

    def epoch_of(model: nnx.Module, config: train.TrainConfig = config) -> Callable[[], float]:
        def epoch() -> float:
            history = train.fit(
                model, train_data, val_data, config, preprocess=preprocess, progress=False
            )
            return history.val_accuracy[-1]

        return epoch

    model = LeNet5.birdcat(rngs=nnx.Rngs(0))
    fused = steps_dividing_the_epoch(
        steps_per_call_for(model), cfg.epoch_train // config.batch_size
    )
    unfused = dataclasses.replace(config, steps_per_call=1)
    variants = {
        f"jaxcal LeNet5 ({_lowering(model)}), train.fit, {fused} steps per call": epoch_of(model),
        "same, 1 step per call": epoch_of(LeNet5.birdcat(rngs=nnx.Rngs(0)), unfused),
    }
    other = with_other_convolutions(LeNet5.birdcat(rngs=nnx.Rngs(0)))
    variants[
        f"jaxcal LeNet5 ({_lowering(other)}), train.fit, {steps_per_call_for(other)} per call"
    ] = epoch_of(other)
    reference, reference_name = None, None
    if torch_ref is not None:
        ok, why = torch_ref.workers_can_start()
        workers = 2 if ok else 0
        reference = torch_ref.lenet_epoch(train_data, val_data, num_workers=workers)
        reference_name = f"torch DataLoader + eager loop, num_workers={workers}" + (
            "" if ok else f" (2 workers failed: {why})"
        )
    rows = _rows_against_reference(
        "lenet_epoch", variants, reference_name, reference, repeats=cfg.epoch_repeats
    )
    for row in rows:
        row["images"] = {
            "train": cfg.epoch_train,
            "val": cfg.epoch_val,
            "batch_size": NOTEBOOK_BATCH,
        }
    return rows


def overconfident_logits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary logits 3x too confident: labels ~ Bernoulli(sigmoid(z)), logits = 3 z.

    Returns:
        (float32 logits [n], int32 labels [n]); the NLL-optimal temperature is near 3.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int32)
    return (3.0 * z).astype(np.float32), labels


def ece_numpy_loop(
    logits: np.ndarray, labels: np.ndarray, temperatures: np.ndarray, num_bins: int = 15
) -> np.ndarray:
    """The notebooks' way: numpy per temperature, a Python loop over the bins.

    Same convention as `jaxcal.calibration.ece` defaults: confidence p(y=1) of binary logits,
    equal-width bins [lo, hi) with 1.0 in the last bin, weights n_bin / N.

    Args:
        logits: float32 [N] binary logits.
        labels: [N] in {0, 1}.
        temperatures: [T].
        num_bins: bins (15).

    Returns:
        float64 [T] ECE of logits / T.
    """
    edges = (np.arange(num_bins + 1) / num_bins).astype(logits.dtype)
    targets = labels.astype(np.float64)
    out = np.empty(len(temperatures))
    for t, temperature in enumerate(temperatures):
        probs = 1.0 / (1.0 + np.exp(-(logits / logits.dtype.type(temperature))))
        ece = 0.0
        for b in range(num_bins):
            upper = probs <= edges[b + 1] if b == num_bins - 1 else probs < edges[b + 1]
            in_bin = (probs >= edges[b]) & upper
            count = int(in_bin.sum())
            if count:
                gap = targets[in_bin].mean() - probs[in_bin].astype(np.float64).mean()
                ece += count / len(probs) * abs(gap)
        out[t] = ece
    return out


@jax.jit
def log_sigmoid_floor(logits: jax.Array, labels: jax.Array, temperatures: jax.Array) -> jax.Array:
    """The sweep's floor: one fused pass of log sigmoid(±z / T) over every (T, sample) pair.

    The issue's floor, "no exact sweep can do less". The pass uses the cheapest accurate
    per-pair form: -log sigmoid(±x) = log1p(exp(-|x|)) + the wrong-side part max(∓x, 0),
    whose sum is linear in 1 / T and computed once; per pair that leaves one multiply, one exp
    and one log1p (`jax.nn.log_sigmoid` costs ~7x more on CPU). Same chunks of temperatures as
    the sweep, each reduced to a mean. The sweep itself now takes one log1p per 32 samples (of
    the product of their 1 + exp(-|x|)), so its NLL costs less than this floor.

    Returns:
        [T] mean NLL of logits / T (equal to the sweep's `nll`).
    """
    signed = jnp.where(labels == 1, logits, -logits)
    decay = -jnp.abs(logits)
    wrong_side = jnp.sum(jnp.maximum(-signed, 0.0))
    chunk = max(1, min(temperatures.shape[0], (1 << 17) // logits.shape[0]))

    def at(temperature):
        inverse = 1.0 / temperature
        return jnp.sum(jnp.log1p(jnp.exp(decay * inverse))) + wrong_side * inverse

    return jax.lax.map(at, temperatures, batch_size=chunk) / logits.shape[0]


PEAK_RSS_SCRIPT = """
import sys
import jax.numpy as jnp
import numpy as np
from benchmarks.timing import peak_rss_mib
from jaxcal import calibration
samples, temperatures, num_bins = (int(a) for a in sys.argv[1:])
rng = np.random.default_rng(0)  # as overconfident_logits, without importing the benchmarks
z = rng.normal(0.0, 1.5, samples)
labels = jnp.asarray((rng.random(samples) < 1.0 / (1.0 + np.exp(-z))).astype(np.int32))
logits = jnp.asarray((3.0 * z).astype(np.float32))
grid = jnp.asarray(jnp.geomspace(0.25, 8.0, temperatures), jnp.float32)
before = peak_rss_mib()
calibration.temperature_sweep(logits, labels, grid, num_bins=num_bins).ece.block_until_ready()
print(before, peak_rss_mib())
"""


def sweep_peak_rss_mb(samples: int, temperatures: int, num_bins: int) -> dict[str, float]:
    """Peak RSS of a fresh process running one sweep: before it (imports, data) and overall."""
    root = pathlib.Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", PEAK_RSS_SCRIPT, str(samples), str(temperatures)]
    result = subprocess.run(
        [*command, str(num_bins)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"},  # beside this process
    )
    before, peak = (float(v) for v in result.stdout.split())
    return {"before_sweep_mb": round(before, 1), "peak_mb": round(peak, 1)}


def bench_temperature_sweep(cfg: BenchConfig, torch_ref: ModuleType | None) -> list[dict[str, Any]]:
    """ECE at 1,000 temperatures: `temperature_sweep` vs the numpy loop and vs its floor.

    Rows: 10,000 samples against the numpy loop; 1,000,000 (quick: 200,000) jaxcal only.
    Both rows carry `floor_ms` (`log_sigmoid_floor`, timed interleaved in the same run) and
    `over_floor`; the small row also both timed back to back (`*_back_to_back*`, warm
    threads), the big row the peak RSS of a fresh process at 15 and 1,000 bins.
    """
    del torch_ref  # the reference is numpy
    temperatures = np.geomspace(0.25, 8.0, cfg.sweep_temperatures).astype(np.float32)
    logits, labels = overconfident_logits(cfg.sweep_samples)
    logits_d, labels_d, temps_d = (
        jnp.asarray(logits),
        jnp.asarray(labels),
        jnp.asarray(temperatures),
    )

    def jaxcal_sweep():
        return calibration.temperature_sweep(logits_d, labels_d, temps_d).ece.block_until_ready()

    loop = np.zeros(0)

    def floor():
        return log_sigmoid_floor(logits_d, labels_d, temps_d).block_until_ready()

    def numpy_sweep():
        nonlocal loop
        loop = ece_numpy_loop(logits, labels, temperatures)
        return loop

    samples, first = _time_all(
        {
            "jaxcal": jaxcal_sweep,
            "reference": numpy_sweep,
            "floor": floor,
        },
        repeats=cfg.repeats,
    )
    # After the reference's 0.7 s on one core, XLA's threads start cold (measured: +40 % on
    # the sweep, +30 % on the floor); the same calls back to back show the warm speed.
    warm = time_interleaved(
        {"jaxcal": jaxcal_sweep, "floor": floor}, repeats=cfg.repeats, number=5, warmup=1
    )
    sweep = np.asarray(jaxcal_sweep(), np.float64)
    sweep_nll = calibration.temperature_sweep(logits_d, labels_d, temps_d).nll
    floor_nll = log_sigmoid_floor(logits_d, labels_d, temps_d)
    floor_ms = median(samples["floor"])
    rows = [
        _row(
            "temperature_sweep",
            f"{cfg.sweep_temperatures} temperatures x {cfg.sweep_samples} samples, 15 bins",
            samples["jaxcal"],
            "numpy per temperature, Python loop over bins",
            samples["reference"],
            jaxcal_first_call_ms=round(first["jaxcal"], 1),
            reference_first_call_ms=round(first["reference"], 1),
            max_abs_ece_difference=float(np.max(np.abs(sweep - loop))),
            floor_nll_max_relative_difference=float(
                jnp.max(jnp.abs(floor_nll - sweep_nll) / sweep_nll)
            ),
            floor_ms=floor_ms,
            over_floor=round(median(samples["jaxcal"]) / floor_ms, 2),
            jaxcal_back_to_back_ms=median(warm["jaxcal"]),
            floor_back_to_back_ms=median(warm["floor"]),
            speedup_back_to_back=round(median(samples["reference"]) / median(warm["jaxcal"]), 2),
            over_floor_back_to_back=round(median(warm["jaxcal"]) / median(warm["floor"]), 2),
        )
    ]
    big_logits, big_labels = (jnp.asarray(a) for a in overconfident_logits(cfg.big_sweep_samples))

    def big_sweep():
        return calibration.temperature_sweep(
            big_logits, big_labels, temps_d
        ).ece.block_until_ready()

    def big_floor():
        return log_sigmoid_floor(big_logits, big_labels, temps_d).block_until_ready()

    runs = {"big": big_sweep, "floor": big_floor}
    first = {name: first_call_ms(run) for name, run in runs.items()}
    big = time_interleaved(runs, repeats=3, warmup=0)
    floor_ms = median(big["floor"])
    rows.append(
        _row(
            "temperature_sweep",
            f"{cfg.sweep_temperatures} temperatures x {cfg.big_sweep_samples} samples, jaxcal only",
            big["big"],
            None,
            None,
            jaxcal_first_call_ms=round(first["big"], 1),
            floor_ms=floor_ms,
            over_floor=round(median(big["big"]) / floor_ms, 2),
            peak_rss=[
                {"num_bins": bins}
                | sweep_peak_rss_mb(cfg.big_sweep_samples, cfg.sweep_temperatures, bins)
                for bins in (15, 1000)
            ],
            peak_rss_note="VmHWM of a fresh process: before the sweep (imports and data), "
            "and overall",
        )
    )
    return rows


def exact_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The NLL-optimal T of binary logits, to float64 precision.

    The mean BCE of a * logits is convex in a = 1/T, so its derivative is increasing: bracket
    its root, then take Newton steps, bisecting whenever a step would leave the bracket.
    """
    z = logits.astype(np.float64)
    y = labels.astype(np.float64)

    def derivatives(a: float) -> tuple[float, float]:
        p = 0.5 * (1.0 + np.tanh(0.5 * a * z))  # sigmoid without overflow
        return float(np.mean((p - y) * z)), float(np.mean(p * (1.0 - p) * z * z))

    if derivatives(0.0)[0] >= 0.0:
        raise ValueError("the optimal temperature is infinite (the logits do not predict)")
    if np.all((z == 0) | ((z > 0) == (y == 1))):
        raise ValueError("the logits separate the labels: the optimal temperature is 0")
    lo, hi = 0.0, 1.0
    while derivatives(hi)[0] < 0.0:
        lo, hi = hi, 2.0 * hi
    a = 0.5 * (lo + hi)
    for _ in range(200):
        grad, hess = derivatives(a)
        if grad < 0.0:
            lo = a
        else:
            hi = a
        step = a - grad / hess if hess > 0.0 else 0.5 * (lo + hi)
        following = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(following - a) <= 1e-15 * a:
            break
        a = following
    return 1.0 / a


def bench_temperature_fit(cfg: BenchConfig, torch_ref: ModuleType | None) -> list[dict[str, Any]]:
    """`fit_temperature` vs torch LBFGS with the notebook's and with converging settings.

    Each row times single calls interleaved (jaxcal, torch, jaxcal, ...) and, as the step rows
    do, `step_number` calls per timed sample (`*_repeated_*`).
    """
    logits, labels = overconfident_logits(cfg.fit_samples, seed=1)
    exact = exact_temperature(logits, labels)
    logits_d, labels_d = jnp.asarray(logits), jnp.asarray(labels)
    found: dict[str, float] = {}

    def jaxcal_fit():
        fit = calibration.fit_temperature(logits_d, labels_d)
        found["jaxcal"] = float(fit.temperature)
        return found["jaxcal"]

    settings = {
        "notebook": ("torch LBFGS lr=0.01, max_iter=50 (the notebook)", 0.01, 50, None),
        "converged": (
            "torch LBFGS lr=1, max_iter=100, strong_wolfe",
            1.0,
            100,
            "strong_wolfe",
        ),
    }
    rows = []
    for key, (name, lr, max_iter, line_search) in settings.items():
        reference = None
        if torch_ref is not None:

            def reference(lr=lr, max_iter=max_iter, line_search=line_search, key=key):
                found[key] = torch_ref.fit_scale_lbfgs(
                    logits, labels, lr=lr, max_iter=max_iter, line_search_fn=line_search
                )
                return found[key]

        ours, theirs, first, first_ref = _compare(jaxcal_fit, reference, repeats=cfg.repeats)
        # A lone call after the other side's starts with cold caches on these machines (+1.4
        # ms on jaxcal's 0.9 ms fit); `step_number` fits per sample, as the step rows, show
        # both sides warm.
        ours_repeated, theirs_repeated, _, _ = _compare(
            jaxcal_fit, reference, repeats=cfg.repeats, number=cfg.step_number
        )
        rows.append(
            _row(
                "temperature_fit",
                f"{cfg.fit_samples} binary logits, vs {key} LBFGS",
                ours,
                None if reference is None else name,
                theirs,
                jaxcal_first_call_ms=round(first, 1),
                reference_first_call_ms=None if first_ref is None else round(first_ref, 1),
                exact_temperature=exact,
                jaxcal_temperature=found["jaxcal"],
                jaxcal_relative_error=abs(found["jaxcal"] - exact) / exact,
                reference_temperature=found.get(key),
                reference_relative_error=None
                if key not in found
                else abs(found[key] - exact) / exact,
                jaxcal_repeated_ms=median(ours_repeated),
                reference_repeated_ms=None if theirs_repeated is None else median(theirs_repeated),
                speedup_repeated=None
                if theirs_repeated is None
                else round(median(theirs_repeated) / median(ours_repeated), 2),
                fits_per_repeated_sample=cfg.step_number,
            )
        )
    return rows


TASKS: dict[str, Callable[[BenchConfig, ModuleType | None], list[dict[str, Any]]]] = {
    "lenet_step": bench_lenet_step,
    "mlp_step": bench_mlp_step,
    "resnet18_step": bench_resnet18_step,
    "lenet_epoch": bench_lenet_epoch,
    "temperature_sweep": bench_temperature_sweep,
    "temperature_fit": bench_temperature_fit,
}


def run(
    quick: bool = False,
    tasks: tuple[str, ...] | None = None,
    config: BenchConfig | None = None,
    torch_ref: ModuleType | None = None,
    torch_reason: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the benchmark and returns {"machine", "config", "torch", "rows"}.

    Args:
        quick: `BenchConfig.quick()` instead of the full sizes.
        tasks: subset of `TASKS` (default all, in order).
        config: explicit sizes (overrides `quick`).
        torch_ref: the torch reference module; default: imported here when torch is installed.
        torch_reason: with `torch_ref=None`, why torch is not used (skips the import attempt).
        log: progress messages.
    """
    tasks = tuple(TASKS) if tasks is None else tuple(tasks)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    if torch_ref is None and torch_reason is None:
        torch_ref, torch_reason = load_torch_reference()
    threads = None
    if torch_ref is not None:
        threads = torch_ref.set_threads()
        torch_reason = ""
    else:
        log(f"PyTorch references skipped: {torch_reason}")
    if config is not None and not isinstance(config, BenchConfig):
        raise TypeError(f"config must be a BenchConfig or None, got {type(config).__name__}")
    cfg = config or (BenchConfig.quick() if quick else BenchConfig())
    machine = machine_info()
    machine["torch_threads"] = threads
    start = cpu_counters()
    rows: list[dict[str, Any]] = []
    for task in tasks:
        log(f"{task} ...")
        rows.extend(TASKS[task](cfg, torch_ref))
    machine |= run_conditions(start)
    return {
        "machine": machine,
        "config": {"quick": quick, **dataclasses.asdict(cfg)},
        "torch": torch_reason or f"ok, torch.set_num_threads({threads}), device {torch_ref.DEVICE}",
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table with a line on the machine."""
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [
        f"{machine['cores']} cores ({machine['cpu']}), {machine['jax_backend']} backend; "
        f"{versions}; torch: {report['torch']}; quick={report['config']['quick']}; "
        f"{steal_note(machine)}",
        "",
        "| task | variant | jaxcal ms | first call ms | reference | reference ms | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        ref_ms = "" if row["reference_ms"] is None else f"{row['reference_ms']:.2f}"
        speedup = "" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        lines.append(
            f"| {row['task']} | {row['variant']} | {row['jaxcal_ms']:.2f} | "
            f"{row.get('jaxcal_first_call_ms', 0):.0f} | {row['reference'] or '-'} | {ref_ms} | "
            f"{speedup} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="a few minutes on 2 cores")
    sizes.add_argument(
        "--accelerator",
        action="store_true",
        help="the full sizes plus the steps at batch 256 and the sweep at 10^7 samples",
    )
    parser.add_argument("--json", type=pathlib.Path, help="write the report as JSON here")
    parser.add_argument("--markdown", type=pathlib.Path, help="write the table here")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), help="default: all")
    args = parser.parse_args(argv)
    # Lets the torch reference and the peak-memory subprocesses allocate on a GPU too.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    config = BenchConfig.accelerator() if args.accelerator else None
    report = run(
        quick=args.quick,
        tasks=args.tasks,
        config=config,
        log=lambda m: print(m, file=sys.stderr),
    )
    table = markdown(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
