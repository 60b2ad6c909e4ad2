"""3x3 stride-1 NHWC convolutions as Winograd F(2x2, 3x3), for the large maps of early stages.

On ResNet18's layer1 (56x56, 64 -> 64 channels, batch 8) XLA:CPU's convolution runs near the
speed of one im2col-sized GEMM and the patch matrix costs more than it saves. Winograd's
minimal filtering computes each 2x2 output tile from a 4x4 input tile with 16 products
instead of 36: the input tiles are transformed (B^T d B, additions only), multiplied per
position by the transformed kernel (G g G^T) in 16 GEMMs of [B * tiles, C] x [C, O], and the
products folded back (A^T m A). That is 2.25x fewer multiplications; the forward pass measured
about 2x faster than XLA's there (`python -m benchmarks.resnet_convolutions`). The gradients
are XLA's convolution gradients (a custom VJP): differentiated through the transforms they
were no faster.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_NHWC = ("NHWC", "HWIO", "NHWC")

# Kernel transform G: the 3 taps of a row (or column) to the 4 tile positions.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def _input_transform(d: list[jax.Array]) -> list[jax.Array]:
    """B^T applied along one axis: four input rows to four transformed rows."""
    return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _output_transform(m: list[jax.Array]) -> list[jax.Array]:
    """A^T applied along one axis: four products to the two outputs of a tile."""
    return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def winograd_padding(
    padding: str | Sequence[tuple[int, int]], spatial: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) of a 3x3 stride-1 convolution, checked.

    Raises:
        ValueError: padding that is neither "SAME", "SAME_LOWER", "VALID" nor two pairs of
            ints >= 0.
    """
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "SAME_LOWER", "VALID"):
            raise ValueError(
                f"winograd_conv: padding must be 'SAME', 'SAME_LOWER', 'VALID' or two "
                f"(low, high) pairs >= 0, got {padding!r}"
            )
        return tuple(jax.lax.padtype_to_pads(spatial, (3, 3), (1, 1), padding))
    try:
        pairs = tuple(tuple(int(p) for p in pair) for pair in padding)
    except TypeError:
        pairs = ()
    if len(pairs) != 2 or any(len(pair) != 2 or min(pair) < 0 for pair in pairs):
        raise ValueError(
            f"winograd_conv: padding must be a string or two (low, high) pairs >= 0, got {padding}"
        )
    return pairs


def winograd_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    padding: str | Sequence[tuple[int, int]] = "SAME",
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """A 3x3, stride-1 `lax.conv_general_dilated` (NHWC input, HWIO kernel) as Winograd F(2x2, 3x3).

    Same result as the convolution up to float32 rounding (the transforms add and subtract up
    to 16 inputs and 9 kernel taps before the products: errors ~1e-6 of the output's scale);
    its gradients are those of `lax.conv_general_dilated`, exactly.

    Args:
        lhs: [B, H, W, C] input.
        rhs: [3, 3, C, O] kernel.
        padding: "SAME", "VALID" or ((top, bottom), (left, right)), each >= 0.
        precision: precision of the products and of the gradients' convolutions.

    Returns:
        [B, Ho, Wo, O], Ho = H + top + bottom - 2 (Wo likewise).

    Raises:
        ValueError: operands of other ranks or kernel sizes, mismatched channels, bad padding,
            or an output with no pixels.
    """
    if lhs.ndim != 4 or rhs.ndim != 4 or rhs.shape[:2] != (3, 3) or lhs.shape[3] != rhs.shape[2]:
        raise ValueError(
            f"winograd_conv: lhs must be [B, H, W, C] and rhs [3, 3, C, O], got {lhs.shape} "
            f"and {rhs.shape}"
        )
    pairs = winograd_padding(padding, lhs.shape[1:3])
    (top, bottom), (left, right) = pairs
    if lhs.shape[1] + top + bottom < 3 or lhs.shape[2] + left + right < 3:
        raise ValueError(
            f"winograd_conv: the padded input {lhs.shape[1] + top + bottom}x"
            f"{lhs.shape[2] + left + right} is smaller than the 3x3 kernel"
        )
    return _winograd(pairs, precision, lhs, rhs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _winograd(pairs, precision, lhs, rhs):
    (top, bottom), (left, right) = pairs
    n, h, w, c = lhs.shape
    out = rhs.shape[3]
    ho, wo = h + top + bottom - 2, w + left + right - 2
    th, tw = -(-ho // 2), -(-wo // 2)  # 2x2 output tiles, the last row/column cropped
    # Tile (i, j) reads padded rows 2i .. 2i+3: the row pairs i and i + 1 of a [th + 1, 2] split.
    x = jnp.pad(lhs, ((0, 0), (top, 2 * th + 2 - h - top), (left, 2 * tw + 2 - w - left), (0, 0)))
    x = x.reshape(n, th + 1, 2, tw + 1, 2, c)
    rows = _input_transform([x[:, a // 2 : a // 2 + th, a % 2] for a in range(4)])
    tiles = [
        v.reshape(n * th * tw, c)
        for row in rows
        for v in _input_transform([row[:, :, b // 2 : b // 2 + tw, b % 2] for b in range(4)])
    ]
    g = jnp.asarray(_G, rhs.dtype)
    kernel = jnp.einsum("ai,ijco,bj->abco", g, rhs, g, precision=precision).reshape(16, c, out)
    # 16 separate GEMMs: stacking the 16 transformed inputs into one batched GEMM's operand
    # measured 2-3x slower on XLA:CPU (a concatenation that does not fuse with the transform).
    products = [
        jnp.matmul(tiles[k], kernel[k], precision=precision).reshape(n, th, tw, out)
        for k in range(16)
    ]
    cols = [_output_transform([products[4 * a + b] for a in range(4)]) for b in range(4)]
    y = [_output_transform([cols[b][i] for b in range(4)]) for i in range(2)]  # y[i][j]
    y = jnp.stack([jnp.stack(y[i], axis=3) for i in range(2)], axis=2)  # [n, th, 2, tw, 2, O]
    return y.reshape(n, 2 * th, 2 * tw, out)[:, :ho, :wo]


def _xla(pairs, precision, lhs, rhs):
    return jax.lax.conv_general_dilated(
        lhs, rhs, (1, 1), pairs, dimension_numbers=_NHWC, precision=precision
    )


def _winograd_forward(pairs, precision, lhs, rhs):
    return _winograd(pairs, precision, lhs, rhs), (lhs, rhs)


def _winograd_backward(pairs, precision, residuals, cotangent):
    _, vjp = jax.vjp(functools.partial(_xla, pairs, precision), *residuals)
    return vjp(cotangent)


_winograd.defvjp(_winograd_forward, _winograd_backward)


# Where Winograd beat XLA:CPU's 3x3 convolution (AMD EPYC): 56 x 56 maps, 64 -> 64 channels,
# 1.9-2.1x at batch 8 (1.5x at batch 2, 1.16x at 64). At 128 input channels the four
# transformed copies of the input cost what the GEMMs save: 28 x 28, 128 -> 128 moved
# between 0.88x and 1.2x over three runs; 56 x 56, 128 -> 32 (DenseNet-121) 0.65x; 14 x 14
# maps are im2col's.
WINOGRAD_MIN_OUTPUT_PIXELS = 28 * 28
WINOGRAD_MAX_IN_CHANNELS = 64


def winograd_is_faster(
    output_pixels: int,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    in_channels: int,
    out_channels: int,
) -> bool:
    """Whether Winograd beats XLA:CPU: 3x3 stride 1, maps from 28x28 up, at most 64 channels
    in and no fewer out (ResNet18's layer1)."""
    return (
        tuple(kernel_size) == (3, 3)
        and tuple(strides) == (1, 1)
        and output_pixels >= WINOGRAD_MIN_OUTPUT_PIXELS
        and in_channels <= WINOGRAD_MAX_IN_CHANNELS
        and out_channels >= in_channels
    )
