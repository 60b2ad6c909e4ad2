"""ResNet18's convolutions one by one on CPU: XLA's layouts and precisions, im2col, torch.

Run `python -m benchmarks.resnet_convolutions [--quick] [--json PATH]`. For every distinct
convolution of ResNet18 at 224x224 (batch 8), times, interleaved after warm-up: the forward
pass as XLA's convolution in NHWC and NCHW, float32 and bfloat16, as `im2col_conv`, as
`winograd_conv` (3x3 stride 1 only) and as torch's `Conv2d`; for layer4's convolutions (the
trainable ones of a layer4+head fine-tune) also the gradients (input and kernel; kernel only
where the input is layer3's frozen output). The im2col and Winograd results are checked
against XLA's before timing. Every timed sample follows one untimed call of the same
variant, so that no variant pays for following another.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import cpu_counters, machine_info, median, run_conditions, time_interleaved
from jaxcal.models.im2col import conv_general_dilated_for_cpu, im2col_conv
from jaxcal.models.winograd import winograd_conv

NHWC, NCHW = ("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NCHW")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One convolution: name, input map size, channels in and out, kernel, stride, padding,
    and which gradients a layer4+head fine-tune needs ("" forward only, "w" kernel, "xw")."""

    name: str
    size: int
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    grads: str = ""


SHAPES = (
    Shape("stem conv1 7x7/2", 224, 3, 64, 7, 2, 3),
    Shape("layer1 3x3", 56, 64, 64, 3, 1, 1),
    Shape("layer2.0.conv1 3x3/2", 56, 64, 128, 3, 2, 1),
    Shape("layer2 3x3", 28, 128, 128, 3, 1, 1),
    Shape("layer2.0.downsample 1x1/2", 56, 64, 128, 1, 2, 0),
    Shape("layer3.0.conv1 3x3/2", 28, 128, 256, 3, 2, 1),
    Shape("layer3 3x3", 14, 256, 256, 3, 1, 1),
    Shape("layer3.0.downsample 1x1/2", 28, 128, 256, 1, 2, 0),
    Shape("layer4.0.conv1 3x3/2", 14, 256, 512, 3, 2, 1, "w"),
    Shape("layer4 3x3", 7, 512, 512, 3, 1, 1, "xw"),
    Shape("layer4.0.downsample 1x1/2", 14, 256, 512, 1, 2, 0, "w"),
)


def _xla(x, w, shape: Shape, layout=NHWC, dtype=jnp.float32):
    pad = ((shape.padding, shape.padding),) * 2
    x, w = x.astype(dtype), w.astype(dtype)
    if layout == NCHW:
        x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    stride = (shape.stride, shape.stride)
    return jax.lax.conv_general_dilated(x, w, stride, pad, dimension_numbers=layout)


def _im2col(x, w, shape: Shape):
    pad = ((shape.padding, shape.padding),) * 2
    return im2col_conv(x, w, (shape.stride, shape.stride), pad, dimension_numbers=NHWC)


def _waiting(fn: Callable, *args) -> Callable[[], Any]:
    return lambda: jax.block_until_ready(fn(*args))


def _gradient(conv: Callable, grads: str) -> Callable:
    """jit of the gradients `grads` needs of <conv(x, w), g> (kernel, or input and kernel)."""
    argnums = (1,) if grads == "w" else (0, 1)
    return jax.jit(jax.grad(lambda x, w, g: jnp.vdot(conv(x, w), g), argnums=argnums))


def _torch_runs(shape: Shape, x: np.ndarray, w: np.ndarray) -> dict[str, Callable]:
    try:
        import torch
    except ImportError:
        return {}
    from benchmarks import torch_reference

    torch_reference.set_threads()
    conv = torch.nn.Conv2d(
        shape.cin, shape.cout, shape.kernel, shape.stride, shape.padding, bias=False
    )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_("x" in shape.grads)

    def forward():
        with torch.no_grad():
            conv(xt)

    runs = {"torch NCHW float32": forward}
    if shape.grads:
        out = conv(xt)
        g = torch.ones_like(out)

        def backward():
            conv.zero_grad(set_to_none=True)
            xt.grad = None
            conv(xt).backward(g)  # includes the forward, as a training step runs it

        runs["torch forward + gradients"] = backward
    return runs


def _runs(shape: Shape, batch: int, seed: int) -> dict[str, Callable[[], Any]]:
    """name -> zero-argument callable timing one variant of `shape` (checked first)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, shape.size, shape.size, shape.cin), np.float32)
    w = rng.standard_normal((shape.kernel, shape.kernel, shape.cin, shape.cout), np.float32)
    w /= np.sqrt(shape.kernel * shape.kernel * shape.cin)
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    xla = jax.jit(lambda x, w: _xla(x, w, shape))
    ours = jax.jit(lambda x, w: _im2col(x, w, shape))
    lowerings = {"im2col float32": ours}
    if shape.kernel == 3 and shape.stride == 1:
        pad = ((shape.padding, shape.padding),) * 2
        lowerings["Winograd float32"] = jax.jit(lambda x, w: winograd_conv(x, w, pad))
    expected = xla(xj, wj)
    scale = float(jnp.abs(expected).max())
    for name, fn in lowerings.items():
        error = float(jnp.abs(fn(xj, wj) - expected).max()) / scale
        if error > 1e-5:
            raise AssertionError(f"{shape.name}: {name} differs from XLA by {error:.2e}")
    runs = {"XLA NHWC float32": _waiting(xla, xj, wj)}
    for name, layout, dtype in (
        ("XLA NCHW float32", NCHW, jnp.float32),
        ("XLA NHWC bfloat16", NHWC, jnp.bfloat16),
        ("XLA NCHW bfloat16", NCHW, jnp.bfloat16),
    ):
        fn = jax.jit(lambda x, w, layout=layout, dtype=dtype: _xla(x, w, shape, layout, dtype))
        runs[name] = _waiting(fn, xj, wj)
    runs.update({name: _waiting(fn, xj, wj) for name, fn in lowerings.items()})
    if shape.grads:
        g = jnp.ones_like(expected)
        for name, conv in (("XLA", lambda x, w: _xla(x, w, shape)), ("im2col", ours)):
            runs[f"{name} gradients ({shape.grads})"] = _waiting(
                _gradient(conv, shape.grads), xj, wj, g
            )
    runs.update(_torch_runs(shape, x, w))
    return runs


def run(quick: bool = False, shapes: tuple[Shape, ...] = SHAPES, batch: int = 8) -> dict:
    """Times every variant of every shape; returns the report."""
    repeats, number = (3, 1) if quick else (7, 2)
    machine, start = machine_info(), cpu_counters()
    rows = []
    for seed, shape in enumerate(shapes):
        runs = _runs(shape, batch, seed)
        samples = time_interleaved(runs, repeats=repeats, number=number, settle=1)
        times = {name: median(values) for name, values in samples.items()}
        rows.append(
            {
                **dataclasses.asdict(shape),
                "batch": batch,
                "ms": times,
                "cpu_choice": _cpu_choice(shape, batch),
            }
        )
    machine |= run_conditions(start)
    return {"machine": machine, "repeats": repeats, "number": number, "rows": rows}


def _cpu_choice(shape: Shape, batch: int) -> str:
    """Which lowering `conv_general_dilated_for_cpu` (ResNet18 on CPU) picks for `shape`."""
    x = jax.ShapeDtypeStruct((batch, shape.size, shape.size, shape.cin), jnp.float32)
    w = jax.ShapeDtypeStruct((shape.kernel, shape.kernel, shape.cin, shape.cout), jnp.float32)
    pad = ((shape.padding, shape.padding),) * 2
    jaxpr = jax.make_jaxpr(
        lambda x, w: conv_general_dilated_for_cpu(
            x, w, (shape.stride, shape.stride), pad, dimension_numbers=NHWC
        )
    )(x, w)
    names = {eqn.primitive.name for eqn in jaxpr.eqns}
    if "conv_general_dilated" in names:
        return "XLA"
    return "Winograd" if "custom_vjp_call" in names else "im2col"


def markdown(report: dict[str, Any]) -> str:
    """The forward table and the gradient table."""
    forward = [
        "XLA NHWC float32",
        "XLA NCHW float32",
        "XLA NHWC bfloat16",
        "XLA NCHW bfloat16",
        "im2col float32",
        "Winograd float32",
        "torch NCHW float32",
    ]
    lines = [
        "| convolution | " + " | ".join(forward) + " | CPU choice |",
        "|---" * (len(forward) + 2) + "|",
    ]
    for row in report["rows"]:
        cells = [f"{row['ms'][k]:.2f}" if k in row["ms"] else "" for k in forward]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {row['cpu_choice']} |")
    lines += [
        "",
        "| convolution | gradients | XLA | im2col | torch forward + gradients |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if row["grads"]:
            ms, grads = row["ms"], row["grads"]
            torch_ms = ms.get("torch forward + gradients")
            lines.append(
                f"| {row['name']} | {grads} | {ms[f'XLA gradients ({grads})']:.2f} "
                f"| {ms[f'im2col gradients ({grads})']:.2f} | "
                f"{'' if torch_ms is None else f'{torch_ms:.2f}'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m benchmarks.resnet_convolutions [--quick] [--json PATH]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", type=pathlib.Path, help="write the report here")
    args = parser.parse_args(argv)
    report = run(quick=args.quick)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
