"""Stride-1 convolutions as space-to-depth patches + one matmul, and 2x2 pooling by reshape."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import dtypes

from jaxcal._checks import check_int

ConvImpl = Literal["patches", "xla"]
PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]
# nnx.Conv's default initialisers.
_DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()
_DEFAULT_BIAS_INIT = nnx.initializers.zeros_init()


def conv_impl_for_backend(backend: str | None = None) -> ConvImpl:
    """Which convolution lowering is fastest for LeNet-sized models on `backend`.

    Args:
        backend: a JAX platform name ("cpu", "gpu", "cuda", "rocm", "tpu", ...); default
            `jax.default_backend()`.

    Returns:
        "patches" on CPU (`PatchConv`, `max_pool_2x2`), "xla" elsewhere (`nnx.Conv`,
        `nnx.max_pool`: cuDNN / TPU convolutions are faster than any matmul lowering there).
    """
    if backend is None:
        backend = jax.default_backend()
    if not isinstance(backend, str) or not backend:
        raise TypeError(f"backend must be a platform name such as 'cpu' or None, got {backend!r}")
    return "patches" if backend.lower() == "cpu" else "xla"


def steps_per_call_for(model: nnx.Module, backend: str | None = None) -> int:
    """How many training steps to fuse into one jitted call (`lax.scan`) for `model`.

    Fusing saves a dispatch and a host round trip per step. On CPU, XLA compiles convolution
    gradients inside a loop into slow kernels (a LeNet-5 step with `nnx.Conv`: 19 -> 70 ms),
    so a model holding an `nnx.Conv` or `nnx.ConvTranspose` gets 1 there; models without them
    (`PatchConv`, MLPs) and every model on GPU/TPU get 8 (`benchmarks/README.md` has the
    measurements).

    Args:
        model: the model to train.
        backend: a JAX platform name; default `jax.default_backend()`.

    Returns:
        1 or 8.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    if conv_impl_for_backend(backend) == "patches" and any(
        isinstance(node, (nnx.Conv, nnx.ConvTranspose)) for _, node in nnx.iter_graph(model)
    ):
        return 1
    return 8


# Examples per micro-batch of a PatchConv model's CPU train step (see `micro_batch_for`).
CPU_MICRO_BATCH = 128
# Smaller micro-batches cost more per example than the caches save.
MIN_MICRO_BATCH = 32


def micro_batch_for(model: nnx.Module, batch_size: int, backend: str | None = None) -> int:
    """How many examples of a training batch `fit` runs through forward and backward at once.

    A PatchConv model's temporaries grow with the batch: LeNet-5's first patch matrix holds
    85 KB per example, 22 MB at batch 256. XLA:CPU allocates a call's temporaries afresh and
    glibc hands blocks that large back to the OS between calls, so a one-step call at batch
    256 faults in 5,000-10,000 fresh pages (32.6 ms against 10.8 at batch 128, 2-core EPYC);
    at 512 the matrices also outgrow the 32 MB L3 (77 ms). On CPU such a model runs a batch
    above CPU_MICRO_BATCH as micro-batches whose gradients are summed before the one
    optimiser update, the same step up to float32 rounding: one-step calls 32.6 -> 18.2 ms
    at 256 and 77 -> 41 ms at 512; in `fit`'s calls of 8 steps, whose loop reuses its
    buffers, 18.1 -> 18.8 ms at 256 (no gain) and 43.6 -> 40.9 ms at 512
    (`benchmarks/README.md`). Not split: models without PatchConv (an MLP's matmuls only get
    faster with the batch: 7.5 -> 8.0 ms at 256 when split), models with BatchNorm (each
    micro-batch would be normalised by its own statistics), every model on GPU/TPU.

    Args:
        model: the model to train.
        batch_size: examples per optimiser step on one device.
        backend: a JAX platform name; default `jax.default_backend()`.

    Returns:
        The largest divisor of `batch_size` up to CPU_MICRO_BATCH when the batch is split and
        one of at least MIN_MICRO_BATCH exists; otherwise `batch_size`.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    batch_size = check_int("batch_size", batch_size)
    if batch_size <= CPU_MICRO_BATCH or conv_impl_for_backend(backend) != "patches":
        return batch_size
    nodes = [node for _, node in nnx.iter_graph(model)]
    if not any(isinstance(n, PatchConv) for n in nodes) or any(
        isinstance(n, nnx.BatchNorm) for n in nodes
    ):
        return batch_size
    divisor = max(d for d in range(1, CPU_MICRO_BATCH + 1) if batch_size % d == 0)
    return divisor if divisor >= MIN_MICRO_BATCH else batch_size


def _explicit_padding(
    padding: PaddingLike, kernel_size: tuple[int, int]
) -> tuple[tuple[int, int], ...]:
    """((top, bottom), (left, right)) for nnx.Conv-style `padding` of a stride-1 convolution."""
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        if padding.upper() == "SAME":
            return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size)
        raise ValueError(f"padding must be 'VALID', 'SAME', an int or pairs, got {padding!r}")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        pads = ((int(padding), int(padding)),) * 2
    elif isinstance(padding, Sequence) and len(padding) == 2:
        if all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in padding):
            pads = tuple((int(p), int(p)) for p in padding)
        elif all(isinstance(p, Sequence) and len(p) == 2 for p in padding):
            pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        else:
            raise ValueError(f"padding pairs must be (lo, hi) ints, got {padding!r}")
    else:
        raise ValueError(
            f"padding must be 'VALID', 'SAME', an int, 2 ints or 2 (lo, hi) pairs, got {padding!r}"
        )
    if any(p < 0 for pair in pads for p in pair):
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return pads


@dataclasses.dataclass(frozen=True)
class _Blocks:
    """How `patch_conv` cuts a stride-1 convolution into s x s pixel blocks.

    Attributes:
        pads: ((top, bottom), (left, right)) padding of the input, rows and columns added so
            the padded input is a whole number of blocks.
        ho, wo: the convolution's output size.
        s: the block side.
        th, tw: block taps, ceil((k - 1 + s) / s) per axis.
        hb, wb: output blocks per axis, ceil(ho / s) and ceil(wo / s).
    """

    pads: tuple[tuple[int, int], tuple[int, int]]
    ho: int
    wo: int
    s: int
    th: int
    tw: int
    hb: int
    wb: int


def _blocks(
    h: int, w: int, kernel_shape: tuple[int, ...], padding: PaddingLike, block: int
) -> _Blocks:
    """The blocking of an h x w input for a [kh, kw, C, O] kernel; checks block and sizes."""
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be an int >= 1, got {block!r}")
    kh, kw = kernel_shape[:2]
    (top, bottom), (left, right) = _explicit_padding(padding, (kh, kw))
    ho, wo = h + top + bottom - kh + 1, w + left + right - kw + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"kernel {kh}x{kw} is larger than the padded input {h + top + bottom}x"
            f"{w + left + right}"
        )
    s = int(min(block, ho, wo))
    th, tw = (kh - 2 + s) // s + 1, (kw - 2 + s) // s + 1
    hb, wb = -(-ho // s), -(-wo // s)
    # Pad to whole blocks: s * (hb + th - 1) >= ho + kh - 1 rows, so nothing is ever cropped.
    rows, cols = s * (hb + th - 1), s * (wb + tw - 1)
    pads = ((top, rows - h - top), (left, cols - w - left))
    return _Blocks(pads, ho, wo, s, th, tw, hb, wb)


def _block_kernel(kernel: jax.Array, blocks: _Blocks, *, transposed: bool = False) -> jax.Array:
    """The kernel that maps a block neighbourhood to one block's s * s output pixels.

    Output pixel (s * u + a, s * v + b) reads input pixel (s * (u + p) + r, s * (v + q) + t)
    through kernel tap (s * p + r - a, s * q + t - b): for each output phase (a, b) the kernel
    is padded into the (s * th) x (s * tw) block neighbourhood at offset (a, b). Pads,
    reshapes and one stack, all exact copies that XLA fuses into one pass (forward and
    gradient).

    Args:
        kernel: [kh, kw, C, O].
        blocks: the blocking.
        transposed: False gives [th * tw * s*s*C, s*s*O] (rows (p, q, r, t, c), columns
            (a, b, o): for patches as rows), True its transpose (for patches as columns).
    """
    kh, kw, cin, cout = kernel.shape
    s, th, tw = blocks.s, blocks.th, blocks.tw
    phases = []
    for a in range(s):
        for b in range(s):
            padded = jnp.pad(
                kernel, ((a, s * th - kh - a), (b, s * tw - kw - b), (0, 0), (0, 0))
            )  # [(p, r), (q, t), c, o]
            phases.append(padded.reshape(th, s, tw, s, cin, cout).transpose(0, 2, 1, 3, 4, 5))
    if transposed:  # [(a, b), o, (p, q, r, t, c)]
        stacked = jnp.stack(phases).transpose(0, 6, 1, 2, 3, 4, 5)
        return stacked.reshape(s * s * cout, th * tw * s * s * cin)
    stacked = jnp.stack(phases, axis=-2)  # [p, q, r, t, c, (a, b), o]
    return stacked.reshape(th * tw * s * s * cin, s * s * cout)


def _check_conv_operands(x: jax.Array, kernel: jax.Array, channel_axis: int, layout: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be {layout}, got shape {x.shape}")
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be [kh, kw, C, O], got shape {kernel.shape}")
    if x.shape[channel_axis] != kernel.shape[2]:
        raise ValueError(
            f"x has {x.shape[channel_axis]} channels but kernel expects {kernel.shape[2]}: "
            f"{kernel.shape}"
        )


def _block_products(
    x: jax.Array,
    kernel: jax.Array,
    padding: PaddingLike,
    block: int,
    precision: jax.lax.PrecisionLike,
) -> tuple[jax.Array, int, int]:
    """The matmul at the heart of `patch_conv`.

    Returns:
        (y [B, hb, wb, s, s, O], ho, wo): output pixel (s * u + a, s * v + b) is y[:, u, v, a, b]
        for u < ceil(ho / s), v < ceil(wo / s); entries beyond (ho, wo) are padding.
    """
    _check_conv_operands(x, kernel, -1, "NHWC [B, H, W, C]")
    n, h, w, cin = x.shape
    cout = kernel.shape[3]
    blocks = _blocks(h, w, kernel.shape, padding, block)
    s, th, tw, hb, wb = blocks.s, blocks.th, blocks.tw, blocks.hb, blocks.wb
    x = jnp.pad(x, ((0, 0), *blocks.pads, (0, 0)))
    rows, cols = x.shape[1], x.shape[2]
    x = x.reshape(n, rows // s, s, cols // s, s, cin).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, rows // s, cols // s, s * s * cin)
    patches = jnp.concatenate(
        [x[:, p : p + hb, q : q + wb, :] for p in range(th) for q in range(tw)], axis=-1
    )
    block_kernel = _block_kernel(kernel, blocks)
    y = jnp.matmul(patches.reshape(n * hb * wb, -1), block_kernel, precision=precision)
    return y.reshape(n, hb, wb, s, s, cout), blocks.ho, blocks.wo


def patch_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    padding: PaddingLike = "VALID",
    block: int = 2,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """Stride-1 NHWC convolution (cross-correlation, as `lax.conv_general_dilated`) as one matmul.

    XLA:CPU runs LeNet's small convolutions slowly, above all their gradients (and slower still
    inside `lax.scan`); reshapes, slices, a concatenation and one GEMM run fast, and so do their
    gradients. Plain im2col (`block=1`) writes a patch matrix k*k times the input's size; cutting
    the input into blocks first shrinks it about 3x for a 5x5 kernel and makes the GEMM wider.

    The padded input [B, H, W, C] is cut into `s` x `s` pixel blocks ([B, H/s, W/s, s*s*C]);
    the kernel [kh, kw, C, O] is rearranged into the equivalent kernel of t_h x t_w taps
    (t = ceil((k - 1 + s) / s)) that maps a block neighbourhood to the `s * s` output pixels
    of one block ([t_h * t_w * s*s*C, s*s*O], mostly zeros on its edges); the t_h * t_w shifted
    block views are concatenated into a patch matrix and multiplied by it. `block=1` is plain
    im2col. The block is reduced where the output is smaller than it.

    Args:
        x: [B, H, W, C] float input.
        kernel: [kh, kw, C, O] (HWIO, nnx.Conv's layout).
        padding: "VALID", "SAME", an int, (ph, pw) or ((top, bottom), (left, right)).
        block: space-to-depth block size s >= 1 (2 was fastest for LeNet on CPU).
        precision: matmul precision (`lax.Precision`), as nnx.Conv's.

    Returns:
        [B, H + top + bottom - kh + 1, W + left + right - kw + 1, O].
    """
    y, ho, wo = _block_products(x, kernel, padding, block, precision)
    n, hb, wb, s, _, cout = y.shape
    y = y.transpose(0, 1, 3, 2, 4, 5).reshape(n, hb * s, wb * s, cout)
    return y[:, :ho, :wo]


def patch_conv_max_pool(
    x: jax.Array,
    kernel: jax.Array,
    *,
    padding: PaddingLike = "VALID",
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """`max_pool_2x2(patch_conv(x, kernel, ...))` in one pass.

    With 2x2 blocks, the four outputs of a block are exactly one pooling window, so the pool is
    a max over the matmul's four output groups: the output is never rearranged into an image.
    Since max(z + bias) = max(z) + bias and ReLU is monotonic, LeNet's
    `max_pool(relu(conv(x) + bias))` equals `relu(patch_conv_max_pool(x, kernel) + bias)`
    (without a BatchNorm in between, whose scale may be negative).

    Args:
        x: [B, H, W, C] float input.
        kernel: [kh, kw, C, O].
        padding: as `patch_conv`.
        precision: matmul precision.

    Returns:
        [B, H' // 2, W' // 2, O] for the convolution's output size H' x W' (>= 2 x 2); as the
        'VALID' pool, a trailing odd row or column of the convolution is dropped.
    """
    y, ho, wo = _block_products(x, kernel, padding, 2, precision)
    if ho < 2 or wo < 2:
        raise ValueError(f"the convolution's output {ho}x{wo} is too small to pool 2x2")
    return _first_max(y[:, : ho // 2, : wo // 2], (3, 4))


def patch_conv_max_pool_chwn(
    x: jax.Array,
    kernel: jax.Array,
    *,
    padding: PaddingLike = "VALID",
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """`patch_conv_max_pool` on channel-major, batch-last arrays [C, H, W, B].

    The same blocks, kernel and matmul as `patch_conv_max_pool`, transposed: the patch matrix
    is [features, H'/2 * W'/2 * B] and the GEMM `block_kernel^T @ patches`. Every copy then
    moves runs of B contiguous values instead of C, and the patches are built by shifting along
    W and then along H (two concatenations of t slices along the leading axis, each slice a run
    of whole rows) rather than one concatenation of t * t slices along the last axis, which
    XLA:CPU copies element by element. The difference grows with the batch: LeNet-5's
    forward pass at batch 256 (`fit`'s validation) takes 12 instead of 28 ms, the train step
    at batch 64 about the same time. Stacked blocks stay in this layout, so a model
    transposes once before the first and once after the last (`LeNet5` on CPU).

    Args:
        x: [C, H, W, B] float input.
        kernel: [kh, kw, C, O].
        padding: as `patch_conv`.
        precision: matmul precision.

    Returns:
        [O, H' // 2, W' // 2, B] for the convolution's output size H' x W' (>= 2 x 2).
    """
    _check_conv_operands(x, kernel, 0, "[C, H, W, B] (channel-major, batch last)")
    cin, h, w, n = x.shape
    cout = kernel.shape[3]
    blocks = _blocks(h, w, kernel.shape, padding, 2)
    if blocks.ho < 2 or blocks.wo < 2:
        raise ValueError(
            f"the convolution's output {blocks.ho}x{blocks.wo} is too small to pool 2x2"
        )
    th, tw, hb, wb = blocks.th, blocks.tw, blocks.hb, blocks.wb
    x = jnp.pad(x, ((0, 0), *blocks.pads, (0, 0)))
    rows, cols = x.shape[1], x.shape[2]
    x = x.reshape(cin, rows // 2, 2, cols // 2, 2, n).transpose(2, 4, 0, 1, 3, 5)
    x = x.reshape(4 * cin, rows // 2, cols // 2, n)
    shifted = jnp.concatenate([x[:, :, q : q + wb] for q in range(tw)], axis=0)
    patches = jnp.concatenate([shifted[:, p : p + hb] for p in range(th)], axis=0)
    block_kernel = _block_kernel(kernel, blocks, transposed=True)
    y = jnp.matmul(block_kernel, patches.reshape(-1, hb * wb * n), precision=precision)
    y = y.reshape(2, 2, cout, hb, wb, n)
    return _first_max(y[:, :, :, : blocks.ho // 2, : blocks.wo // 2], (0, 1))


class PatchConv(nnx.Module):
    """A drop-in `nnx.Conv` for stride-1 2-D convolutions, computed by `patch_conv`.

    Parameters have nnx.Conv's names and shapes (`kernel` [kh, kw, in, out], `bias` [out]), so
    weights, checkpoints and conversions carry over between the two; outputs agree to float32
    rounding. No strides, dilations or feature groups (use nnx.Conv for those).

    Args:
        in_features: input channels C.
        out_features: output channels O.
        kernel_size: k or (kh, kw).
        padding: "SAME" (nnx.Conv's default), "VALID", an int, (ph, pw) or
            ((top, bottom), (left, right)).
        use_bias: add a learned bias.
        dtype: computation dtype (default: promoted from inputs and parameters, as nnx.Conv).
        param_dtype: parameter dtype.
        precision: matmul precision.
        kernel_init, bias_init: initialisers (nnx.Conv's defaults).
        block: space-to-depth block size of `patch_conv`.
        rngs: parameter initialisation keys.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        padding: PaddingLike = "SAME",
        use_bias: bool = True,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        precision: jax.lax.PrecisionLike = None,
        kernel_init: nnx.Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: nnx.Initializer = _DEFAULT_BIAS_INIT,
        block: int = 2,
        rngs: nnx.Rngs,
    ):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(size) != 2 or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in size):
            raise ValueError(f"kernel_size must be k or (kh, kw) with k >= 1, got {kernel_size!r}")
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise ValueError(f"block must be an int >= 1, got {block!r}")
        _explicit_padding(padding, size)  # validate now, not at the first call
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.kernel_size = size
        self.padding = padding
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.block = int(block)
        shape = (*size, self.in_features, self.out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias: nnx.Param | None
        if use_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), (self.out_features,), param_dtype))
        else:
            self.bias = nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Convolves a batch.

        Args:
            x: [..., H, W, in_features] NHWC input; leading batch axes (none, one or several)
                are kept, as nnx.Conv does.

        Returns:
            [..., H', W', out_features] with H' = H + top + bottom - kh + 1 (likewise W').
        """
        if x.ndim < 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must be [..., H, W, {self.in_features}] (NHWC), got shape {x.shape}"
            )
        bias = self.bias[...] if self.bias is not None else None
        x, kernel, bias = dtypes.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
        batch_shape = x.shape[:-3]
        y = patch_conv(
            x.reshape(-1, *x.shape[-3:]),
            kernel,
            padding=self.padding,
            block=self.block,
            precision=self.precision,
        )
        if bias is not None:
            y = y + bias
        return y.reshape(*batch_shape, *y.shape[1:])

    def conv_max_pool(self, x: jax.Array) -> jax.Array:
        """`max_pool_2x2(self(x))`, computed by `patch_conv_max_pool` (no image rearranging).

        Args:
            x: [B, H, W, in_features].

        Returns:
            [B, H' // 2, W' // 2, out_features] for this layer's output size H' x W'.
        """
        if x.ndim != 4 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must be [B, H, W, {self.in_features}] (NHWC), got shape {x.shape}")
        bias = self.bias[...] if self.bias is not None else None
        x, kernel, bias = dtypes.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
        y = patch_conv_max_pool(x, kernel, padding=self.padding, precision=self.precision)
        return y if bias is None else y + bias

    def conv_max_pool_chwn(self, x: jax.Array) -> jax.Array:
        """`conv_max_pool` on channel-major, batch-last arrays (`patch_conv_max_pool_chwn`).

        Args:
            x: [in_features, H, W, B].

        Returns:
            [out_features, H' // 2, W' // 2, B] for this layer's output size H' x W'.
        """
        if x.ndim != 4 or x.shape[0] != self.in_features:
            raise ValueError(
                f"x must be [{self.in_features}, H, W, B] (channel-major, batch last), got shape "
                f"{x.shape}"
            )
        bias = self.bias[...] if self.bias is not None else None
        x, kernel, bias = dtypes.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
        y = patch_conv_max_pool_chwn(x, kernel, padding=self.padding, precision=self.precision)
        return y if bias is None else y + bias[:, None, None, None]


def _windows(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H//2, 2, W//2, 2, C] (a trailing odd row or column is dropped)."""
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC [B, H, W, C], got shape {x.shape}")
    n, h, w, c = x.shape
    if h < 2 or w < 2:
        raise ValueError(f"x must be at least 2x2 to pool, got shape {x.shape}")
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


def _window_max(windows: jax.Array, axes: tuple[int, int]) -> jax.Array:
    """Max over the two length-2 window axes `axes` (ay < ax) of `windows`.

    With leading window axes (channel-major blocks), three elementwise maxima of the four
    contiguous window entries: XLA:CPU's reduction over leading axes is slow (1 ms for conv1's
    [2, 2, 6, 14, 14, 64] in `patch_conv_max_pool_chwn`). Elsewhere the reduction, which is
    faster there than maxima of strided entries.
    """
    if axes != (0, 1):
        return windows.max(axis=axes)
    return jnp.maximum(
        jnp.maximum(windows[0, 0], windows[0, 1]), jnp.maximum(windows[1, 0], windows[1, 1])
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _first_max(windows: jax.Array, axes: tuple[int, int]) -> jax.Array:
    """`_window_max`, whose gradient goes to the first maximum of each window."""
    return _window_max(windows, axes)


def _first_max_forward(windows: jax.Array, axes: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    # The residual is which entry won, decided by comparing the entries with each other (no
    # `entry == max` test): XLA may recompute `windows` in several fusions that round
    # differently (contracting a BatchNorm into FMAs, say), and an equality test against a
    # max computed elsewhere can then miss every entry of a window and drop its gradient.
    ay, ax = axes
    rows = [jax.lax.index_in_dim(windows, dy, ay, keepdims=False) for dy in range(2)]
    e = [jax.lax.index_in_dim(row, dx, ax - 1, keepdims=False) for row in rows for dx in range(2)]
    # Strict comparisons keep the first of equal entries, in row-major order (0, 0), (0, 1),
    # (1, 0), (1, 1), as reduce_window and torch do.
    first_pair = jnp.where(e[1] > e[0], 1, 0).astype(jnp.int8)
    second_pair = jnp.where(e[3] > e[2], 3, 2).astype(jnp.int8)
    second_wins = jnp.maximum(e[2], e[3]) > jnp.maximum(e[0], e[1])
    return _window_max(windows, axes), jnp.where(second_wins, second_pair, first_pair)


def _first_max_backward(axes: tuple[int, int], winner: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    # g goes to the winning entry of each window. Elementwise only: XLA fuses it into one loop.
    ay, ax = axes
    zeros = jnp.zeros_like(g)
    rows = [
        jnp.stack([jnp.where(winner == 2 * dy + dx, g, zeros) for dx in range(2)], axis=ax - 1)
        for dy in range(2)
    ]
    return (jnp.stack(rows, axis=ay),)


_first_max.defvjp(_first_max_forward, _first_max_backward)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2, stride-2 max pooling ('VALID', as `nnx.max_pool(x, (2, 2), strides=(2, 2))`).

    A reshape and a max instead of `lax.reduce_window`, whose gradient is slow on XLA:CPU. The
    gradient goes to the first maximum of each window in row-major order, as with
    reduce_window, nnx.max_pool and torch's MaxPool2d (a plain `jnp.max` would split it between
    tied entries, e.g. the zeros after a ReLU).

    Args:
        x: [B, H, W, C].

    Returns:
        [B, H // 2, W // 2, C].
    """
    return _first_max(_windows(x), (2, 4))


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2, stride-2 average pooling ('VALID', as `nnx.avg_pool(x, (2, 2), strides=(2, 2))`).

    Args:
        x: [B, H, W, C].

    Returns:
        [B, H // 2, W // 2, C].
    """
    return _windows(x).mean(axis=(2, 4))
