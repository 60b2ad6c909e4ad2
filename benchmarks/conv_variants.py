"""What makes jaxcal's LeNet-5 train step fast on CPU: every lowering tried, timed in one run.

Run `python -m benchmarks.conv_variants [--quick] [--json PATH]`. Each variant is the bird/cat
LeNet-5 (conv 3->6 k5, max-pool, conv 6->16 k5, max-pool, 120, 84, 1 logit) trained with
BCE and Adam 1e-3 at batch 64, as a local copy of the forward pass with the convolution and
pooling swapped; all variants and PyTorch eager are timed interleaved, after warm-up.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.timing import (
    cpu_counters,
    first_call_ms,
    machine_info,
    median,
    run_conditions,
    time_interleaved,
)
from jaxcal.models.conv import PatchConv, max_pool_2x2

Pool = Callable[[jax.Array], jax.Array]


class DilatedPatchesConv(nnx.Module):
    """A VALID stride-1 conv as `lax.conv_general_dilated_patches` + matmul (nnx.Conv's params)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, *, rngs: nnx.Rngs):
        shape = (kernel_size, kernel_size, in_features, out_features)
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_features,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, H - k + 1, W - k + 1, O]."""
        kh, kw, cin, cout = self.kernel.shape
        patches = jax.lax.conv_general_dilated_patches(
            x, (kh, kw), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        # The patch features come channel-major: (c, i, j).
        kernel = self.kernel[...].transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout)
        return patches @ kernel + self.bias[...]


def reduce_window_max_pool(x: jax.Array) -> jax.Array:
    """`nnx.max_pool` 2x2/2 (lax.reduce_window)."""
    return nnx.max_pool(x, (2, 2), strides=(2, 2))


def plain_max_pool(x: jax.Array) -> jax.Array:
    """2x2/2 max pool as reshape + jnp.max (autodiff splits the gradient between ties)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def xla_conv(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Module:
    """nnx.Conv, VALID."""
    return nnx.Conv(cin, cout, (5, 5), padding="VALID", rngs=rngs)


def patch_conv(block: int) -> Callable[[int, int, nnx.Rngs], nnx.Module]:
    """A PatchConv factory with this space-to-depth block."""

    def make(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Module:
        return PatchConv(cin, cout, 5, padding="VALID", block=block, rngs=rngs)

    return make


def dilated_patches_conv(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Module:
    """DilatedPatchesConv, VALID."""
    return DilatedPatchesConv(cin, cout, 5, rngs=rngs)


class LocalLeNet(nnx.Module):
    """The bird/cat LeNet-5 with a pluggable conv factory and pooling function.

    With `pool=None` the convolutions must be PatchConv and each block is computed as
    `relu(conv.conv_max_pool(x))` (the pool fused into the convolution's matmul).
    """

    def __init__(
        self,
        make_conv: Callable[[int, int, nnx.Rngs], nnx.Module],
        pool: Pool | None,
        *,
        rngs: nnx.Rngs,
    ):
        self.conv1 = make_conv(3, 6, rngs)
        self.conv2 = make_conv(6, 16, rngs)
        self.fc1 = nnx.Linear(400, 120, rngs=rngs)
        self.fc2 = nnx.Linear(120, 84, rngs=rngs)
        self.head = nnx.Linear(84, 1, rngs=rngs)
        self.pool = pool

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, 32, 32, 3] -> [B] logits."""
        for conv in (self.conv1, self.conv2):
            if self.pool is None:
                x = nnx.relu(conv.conv_max_pool(x))
            else:
                x = self.pool(nnx.relu(conv(x)))
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.fc1(x))
        x = nnx.relu(self.fc2(x))
        return self.head(x)[:, 0]


class ChannelMajorLeNet(LocalLeNet):
    """LocalLeNet with fused PatchConv blocks run channel-major ([C, H, W, B]), as jaxcal's
    LeNet5 on CPU: one transpose in, `conv_max_pool_chwn` per block, one transpose out."""

    def __init__(self, *, rngs: nnx.Rngs):
        super().__init__(patch_conv(2), None, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, 32, 32, 3] -> [B] logits."""
        h = x.transpose(3, 1, 2, 0)
        for conv in (self.conv1, self.conv2):
            h = nnx.relu(conv.conv_max_pool_chwn(h))
        h = h.transpose(3, 1, 2, 0).reshape(x.shape[0], -1)
        h = nnx.relu(self.fc1(h))
        h = nnx.relu(self.fc2(h))
        return self.head(h)[:, 0]


def _normalise(images: jax.Array) -> jax.Array:
    """uint8 -> ToTensor + Normalize(0.5, 0.5), NHWC."""
    return (images.astype(jnp.float32) / 255.0 - 0.5) / 0.5


def pure_step(model: LocalLeNet, *, uint8_input: bool, scan: int = 1) -> tuple[Callable, Any]:
    """A `jax.jit` step over split state (no NNX graph traversal per call), donating its state.

    Returns:
        (step, state); `step(state, x, y) -> (state, loss)`; with `scan` > 1, x and y carry a
        leading [scan] axis and the call runs that many steps in a `lax.scan`.
    """
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(1e-3)

    def one(carry, batch):
        params, opt_state = carry
        x, y = batch
        x = _normalise(x) if uint8_input else x

        def loss_fn(params):
            logits = nnx.merge(graphdef, params)(x)
            return optax.sigmoid_binary_cross_entropy(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, x, y):
        if scan == 1:
            return one(state, (x, y))
        state, losses = jax.lax.scan(one, state, (x, y))
        return state, losses[-1]

    return step, (params, tx.init(params))


def nnx_jit_step(model: LocalLeNet) -> Callable:
    """The same step through `nnx.jit` on the model and an `nnx.Optimizer` (graph traversal)."""
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.sigmoid_binary_cross_entropy(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return lambda x, y: step(model, optimizer, x, y)


def _batch(batch_size: int, uint8_input: bool, scan: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (batch_size, 32, 32, 3) if scan == 1 else (scan, batch_size, 32, 32, 3)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    x = jnp.asarray(images) if uint8_input else _normalise(jnp.asarray(images))
    y = jnp.asarray(rng.integers(0, 2, shape[:-3]).astype(np.float32))
    return x, y


def _jax_runner(step: Callable, state: Any, x: jax.Array, y: jax.Array) -> Callable[[], Any]:
    holder = [state]

    def run():
        holder[0], loss = step(holder[0], x, y)
        return loss.block_until_ready()

    return run


VARIANTS: dict[str, tuple[Callable, Pool | None, str]] = {
    "xla_conv+reduce_window": (xla_conv, reduce_window_max_pool, "nnx.Conv + nnx.max_pool"),
    "xla_conv+max_pool_2x2": (xla_conv, max_pool_2x2, "nnx.Conv + reshape max-pool"),
    "im2col_b1+max_pool_2x2": (patch_conv(1), max_pool_2x2, "plain im2col (slices+concat) + GEMM"),
    "dilated_patches+max_pool_2x2": (
        dilated_patches_conv,
        max_pool_2x2,
        "lax.conv_general_dilated_patches + GEMM",
    ),
    "patches_b2+reduce_window": (
        patch_conv(2),
        reduce_window_max_pool,
        "PatchConv + reduce_window",
    ),
    "patches_b2+plain_max": (patch_conv(2), plain_max_pool, "PatchConv + reshape max (tie split)"),
    "patches_b2+max_pool_2x2": (patch_conv(2), max_pool_2x2, "PatchConv + max_pool_2x2"),
    "patches_b2_fused_pool": (
        patch_conv(2),
        None,
        "PatchConv.conv_max_pool: pool = max over the matmul's 4 output groups, NHWC",
    ),
    "patches_b4+max_pool_2x2": (patch_conv(4), max_pool_2x2, "PatchConv block 4"),
}


def run(quick: bool = False) -> dict[str, Any]:
    """Times every variant at batch 64 (and batch-size and scan effects); returns the report."""
    repeats, number = (5, 5) if quick else (11, 10)
    machine, start = machine_info(), cpu_counters()
    runs: dict[str, Callable[[], Any]] = {}
    first: dict[str, float] = {}
    notes: dict[str, str] = {}
    steps_per_call: dict[str, int] = {}
    x_f32, y = _batch(64, uint8_input=False)
    x_u8, _ = _batch(64, uint8_input=True)
    for name, (make_conv, pool, note) in VARIANTS.items():
        step, state = pure_step(LocalLeNet(make_conv, pool, rngs=nnx.Rngs(0)), uint8_input=False)
        runs[name] = _jax_runner(step, state, x_f32, y)
        notes[name] = note
    step, state = pure_step(ChannelMajorLeNet(rngs=nnx.Rngs(0)), uint8_input=False)
    runs["patches_b2_fused_pool_chwn"] = _jax_runner(step, state, x_f32, y)
    notes["patches_b2_fused_pool_chwn"] = (
        "fused pool, blocks channel-major [C, H, W, B] (conv_max_pool_chwn: jaxcal's LeNet5)"
    )
    chosen = (patch_conv(2), None)
    step, state = pure_step(LocalLeNet(*chosen, rngs=nnx.Rngs(0)), uint8_input=True)
    runs["chosen+uint8_preprocess_in_step"] = _jax_runner(step, state, x_u8, y)
    notes["chosen+uint8_preprocess_in_step"] = "uint8 batch, ToTensor+Normalize inside the jit"
    nnx_step = nnx_jit_step(LocalLeNet(*chosen, rngs=nnx.Rngs(0)))
    runs["chosen+nnx.jit"] = lambda: nnx_step(x_f32, y).block_until_ready()
    notes["chosen+nnx.jit"] = "nnx.jit(model, nnx.Optimizer) instead of split + jax.jit"
    scan = 4 if quick else 8
    for name, make_conv, pool in (
        ("xla_conv+reduce_window", xla_conv, reduce_window_max_pool),
        ("patches_b2_fused_pool", *chosen),
    ):
        xs, ys = _batch(64, uint8_input=False, scan=scan)
        step, state = pure_step(
            LocalLeNet(make_conv, pool, rngs=nnx.Rngs(0)), uint8_input=False, scan=scan
        )
        runs[f"{name} in lax.scan"] = _jax_runner(step, state, xs, ys)
        notes[f"{name} in lax.scan"] = f"{scan} steps fused in one jitted call"
        steps_per_call[f"{name} in lax.scan"] = scan
    try:
        from benchmarks import torch_reference
    except ImportError as error:
        torch_reason = f"torch not importable: {error}"
    else:
        torch_reason = ""
        torch_reference.set_threads()
        runs["torch eager"] = torch_reference.lenet_step(64)
        notes["torch eager"] = "the notebook's LeNet5, BCEWithLogits, Adam"
    for name, fn in runs.items():
        first[name] = first_call_ms(fn)
    samples = time_interleaved(runs, repeats=repeats, number=number, warmup=2)
    batch_rows = _batch_size_effects(quick)
    reference = median(samples["torch eager"]) if "torch eager" in samples else None
    rows = []
    for name, values in samples.items():
        steps = steps_per_call.get(name, 1)
        ms = median(values) / steps
        rows.append(
            {
                "variant": name,
                "what": notes[name],
                "ms_per_step": round(ms, 4),
                "first_call_ms": round(first[name], 1),
                "speedup_vs_torch": None if reference is None else round(reference / ms, 3),
                "samples_ms_per_call": [round(v, 3) for v in values],
            }
        )
    return {
        "machine": machine | run_conditions(start),
        "repeats": repeats,
        "steps_per_sample": number,
        "torch": torch_reason or "ok",
        "rows": rows,
        "batch_size_rows": batch_rows,
    }


def _batch_size_effects(quick: bool) -> list[dict[str, Any]]:
    """ms per step and per 1000 images of XLA conv, PatchConv (NHWC and channel-major) and torch
    at several batch sizes."""
    sizes = (32, 64, 128) if quick else (32, 64, 128, 256)
    rows = []
    try:
        from benchmarks import torch_reference
    except ImportError:
        torch_reference = None
    for batch_size in sizes:
        runs: dict[str, Callable[[], Any]] = {}
        x, y = _batch(batch_size, uint8_input=False)
        for name, make_conv, pool in (
            ("xla_conv+reduce_window", xla_conv, reduce_window_max_pool),
            ("patches_b2_fused_pool", patch_conv(2), None),
        ):
            step, state = pure_step(
                LocalLeNet(make_conv, pool, rngs=nnx.Rngs(0)), uint8_input=False
            )
            runs[name] = _jax_runner(step, state, x, y)
        step, state = pure_step(ChannelMajorLeNet(rngs=nnx.Rngs(0)), uint8_input=False)
        runs["patches_b2_fused_pool_chwn"] = _jax_runner(step, state, x, y)
        if torch_reference is not None:
            runs["torch eager"] = torch_reference.lenet_step(batch_size)
        samples = time_interleaved(runs, repeats=3 if quick else 7, number=5, warmup=2)
        for name, values in samples.items():
            ms = median(values)
            rows.append(
                {
                    "batch_size": batch_size,
                    "variant": name,
                    "ms_per_step": ms,
                    "ms_per_1000_images": round(ms * 1000 / batch_size, 3),
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The report as two Markdown tables."""
    lines = [
        "| variant | what | ms/step | first call ms | speedup vs torch |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        speedup = "" if row["speedup_vs_torch"] is None else f"{row['speedup_vs_torch']:.2f}"
        lines.append(
            f"| {row['variant']} | {row['what']} | {row['ms_per_step']:.2f} | "
            f"{row['first_call_ms']:.0f} | {speedup} |"
        )
    lines += ["", "| batch | variant | ms/step | ms per 1000 images |", "|---|---|---|---|"]
    for row in report["batch_size_rows"]:
        lines.append(
            f"| {row['batch_size']} | {row['variant']} | {row['ms_per_step']:.2f} | "
            f"{row['ms_per_1000_images']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m benchmarks.conv_variants [--quick] [--json PATH]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes")
    parser.add_argument("--json", type=pathlib.Path, help="write the report here")
    args = parser.parse_args(argv)
    report = run(quick=args.quick)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
