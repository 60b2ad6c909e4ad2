"""Strided NHWC convolutions as im2col + one GEMM, for the small feature maps of deep stages.

XLA:CPU (jaxlib 0.10) runs every convolution as a YNNPACK convolution and each gradient as a
second one after a transposing copy of a whole activation or kernel. On the 7x7 and 14x14
maps of ResNet18's last stages a patch matrix (k*k shifted, strided views side by side) and
one matmul are faster, forward and above all backward; on large maps the patch matrix (k*k
times the input) costs more than the convolution, and the 3x3 stride-1 convolutions of maps
from 28x28 up go to Winograd (`jaxcal.models.winograd`). `conv_general_dilated_for_cpu`
chooses among the three per convolution from its shapes, at trace time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcal.models.winograd import winograd_conv, winograd_is_faster

# The largest output map (pixels per image) where im2col keeps up with XLA:CPU's convolution
# for ResNet18's 3x3 convolutions (batch 8, AMD EPYC): level at 14 x 14 (layer3), faster at
# 7 x 7, forward and above all gradients; 2-3x slower at 28 x 28 and up. 1x1 convolutions are
# a plain (strided) matmul and always go to im2col (`benchmarks/resnet_convolutions.py`).
IM2COL_MAX_OUTPUT_PIXELS = 14 * 14
_NHWC = ("NHWC", "HWIO", "NHWC")


def _dimension_numbers_are_nhwc(dimension_numbers: Any) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, jax.lax.ConvDimensionNumbers):
        return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    return tuple(dimension_numbers) == _NHWC


def _padding_pairs(
    padding: str | Sequence[tuple[int, int]],
    spatial: tuple[int, int],
    window: tuple[int, int],
    strides: tuple[int, int],
) -> tuple[tuple[int, int], ...] | None:
    """((top, bottom), (left, right)), or None when `padding` is not two pairs of ints >= 0."""
    if isinstance(padding, str):
        return tuple(jax.lax.padtype_to_pads(spatial, window, strides, padding))
    try:
        pairs = tuple(tuple(int(p) for p in pair) for pair in padding)
    except TypeError:
        return None
    if len(pairs) != 2 or any(len(pair) != 2 or min(pair) < 0 for pair in pairs):
        return None
    return pairs


def _output_size(spatial, window, strides, pairs) -> tuple[int, int]:
    """(Ho, Wo) of a convolution; < 1 when the window does not fit the padded input."""
    return tuple(
        (size + low + high - k) // stride + 1
        for size, k, stride, (low, high) in zip(spatial, window, strides, pairs, strict=True)
    )


def _unsupported(lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra):
    """Why im2col cannot run these arguments, or None."""
    if not _dimension_numbers_are_nhwc(dimension_numbers):
        return f"dimension_numbers must be {_NHWC}, got {dimension_numbers}"
    for name, dilation in (("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)):
        if dilation is not None and any(int(d) != 1 for d in dilation):
            return f"{name} must be 1, got {dilation}"
    if feature_group_count != 1:
        return f"feature_group_count must be 1, got {feature_group_count}"
    if any(value is not None for value in extra.values()):
        return f"only None is supported for {sorted(extra)}"
    return None


def im2col_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = _NHWC,
    feature_group_count: int = 1,
    precision: jax.lax.PrecisionLike = None,
    **extra: Any,
) -> jax.Array:
    """`lax.conv_general_dilated` for NHWC inputs and HWIO kernels, as im2col and one matmul.

    The padded input's kh * kw strided views (one per kernel tap) are concatenated along the
    channels into a [B * Ho * Wo, kh * kw * C] patch matrix and multiplied by the kernel
    reshaped to [kh * kw * C, O]. Same result as the convolution up to float32 summation
    order; its gradients are those of slices, a concatenation and a matmul. Takes the
    arguments `nnx.Conv` passes (`conv_general_dilated=im2col_conv`). The patch matrix holds
    kh * kw values per input value it reads (9x for a 3x3 stride-1 convolution): ResNet18's
    layer3 at batch 64, 115 MB.

    Args:
        lhs: [B, H, W, C] input.
        rhs: [kh, kw, C, O] kernel.
        window_strides: (sh, sw).
        padding: "VALID", "SAME" or ((top, bottom), (left, right)).
        lhs_dilation, rhs_dilation: None or all ones.
        dimension_numbers: ("NHWC", "HWIO", "NHWC") (or the equivalent ConvDimensionNumbers).
        feature_group_count: 1.
        precision: matmul precision.
        **extra: other `conv_general_dilated` options (`out_sharding`, ...); only None.

    Returns:
        [B, Ho, Wo, O].

    Raises:
        ValueError: arguments outside the above, or a kernel larger than the padded input.
    """
    why = _unsupported(lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra)
    if why is not None:
        raise ValueError(f"im2col_conv: {why}")
    if lhs.ndim != 4 or rhs.ndim != 4 or lhs.shape[3] != rhs.shape[2]:
        raise ValueError(
            f"im2col_conv: lhs must be [B, H, W, C] and rhs [kh, kw, C, O], got {lhs.shape} "
            f"and {rhs.shape}"
        )
    n, h, w, cin = lhs.shape
    kh, kw, _, cout = rhs.shape
    sh, sw = (int(s) for s in window_strides)
    pairs = _padding_pairs(padding, (h, w), (kh, kw), (sh, sw))
    if pairs is None:
        raise ValueError(
            f"im2col_conv: padding must be a string or two (low, high) pairs >= 0, got {padding}"
        )
    (top, bottom), (left, right) = pairs
    ho, wo = _output_size((h, w), (kh, kw), (sh, sw), pairs)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"im2col_conv: kernel {kh}x{kw} is larger than the padded input "
            f"{h + top + bottom}x{w + left + right}"
        )
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    taps = [
        jax.lax.slice(
            x,
            (0, i, j, 0),
            (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin),
            (1, sh, sw, 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    y = jnp.matmul(
        patches.reshape(n * ho * wo, kh * kw * cin),
        rhs.reshape(kh * kw * cin, cout),
        precision=precision,
    )
    return y.reshape(n, ho, wo, cout)


def im2col_is_faster(output_pixels: int, kernel_size: tuple[int, int]) -> bool:
    """Whether im2col beats XLA:CPU's convolution: 1x1 kernels and maps up to 14x14 pixels."""
    return kernel_size == (1, 1) or output_pixels <= IM2COL_MAX_OUTPUT_PIXELS


def conv_general_dilated_for_cpu(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: jax.lax.PrecisionLike = None,
    **extra: Any,
) -> jax.Array:
    """`lax.conv_general_dilated`, lowered as `im2col_conv` or `winograd_conv` where faster on CPU.

    Decided per convolution from its static shapes (`im2col_is_faster`, then
    `winograd_is_faster`: the large-map 3x3 stride-1 convolutions); anything neither covers
    (other layouts, dilation, groups, negative padding) goes to `lax.conv_general_dilated`.
    """
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers)
    covered = (
        _unsupported(lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra)
        is None
        and lhs.ndim == 4
        and rhs.ndim == 4
    )
    pairs = covered and _padding_pairs(padding, lhs.shape[1:3], rhs.shape[:2], window_strides)
    if pairs:
        ho, wo = _output_size(lhs.shape[1:3], rhs.shape[:2], window_strides, pairs)
        kernel, strides = tuple(rhs.shape[:2]), tuple(int(s) for s in window_strides)
        if ho >= 1 and wo >= 1 and im2col_is_faster(ho * wo, kernel):
            return im2col_conv(*args, feature_group_count, precision, **extra)
        if ho >= 1 and wo >= 1 and winograd_is_faster(ho * wo, kernel, strides, *rhs.shape[2:]):
            return winograd_conv(lhs, rhs, pairs, precision)
    return jax.lax.conv_general_dilated(
        *args, feature_group_count=feature_group_count, precision=precision, **extra
    )


def conv_function_for_backend(backend: str | None = None):
    """The `conv_general_dilated` for `nnx.Conv` on `backend` (default: the default backend).

    CPU: `conv_general_dilated_for_cpu`; GPU/TPU: `lax.conv_general_dilated` (cuDNN and TPU
    convolutions beat any matmul lowering there).
    """
    if backend is None:
        backend = jax.default_backend()
    if not isinstance(backend, str) or not backend:
        raise TypeError(f"backend must be a platform name such as 'cpu' or None, got {backend!r}")
    if backend.lower() == "cpu":
        return conv_general_dilated_for_cpu
    return jax.lax.conv_general_dilated


def use_xla_convolutions(model: nnx.Module) -> nnx.Module:
    """Lowers every `nnx.Conv` of `model` with `lax.conv_general_dilated` (in place).

    Opts a ResNet18 or DenseNet-121 built on CPU out of im2col (to compare, or to avoid the
    patch matrices' memory at large batch sizes). Parameters and state are untouched.

    Returns:
        `model`.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Conv):
            node.conv_general_dilated = jax.lax.conv_general_dilated
    return model
