"""Tests for jaxcal.models.winograd: parity with lax.conv_general_dilated, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcal.models.winograd import (
    WINOGRAD_MAX_IN_CHANNELS,
    WINOGRAD_MIN_OUTPUT_PIXELS,
    winograd_conv,
    winograd_is_faster,
)

NHWC = ("NHWC", "HWIO", "NHWC")
HIGHEST = jax.lax.Precision.HIGHEST


def random(shape, seed, dtype=np.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def xla(x, kernel, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=NHWC, precision=HIGHEST
    )


def float64_conv(x, kernel, padding):
    """The exact answer to float64 rounding: numpy, one tap at a time."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:3], (3, 3), (1, 1), padding)
    (top, bottom), (left, right) = padding
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    ho, wo = x.shape[1] - 2, x.shape[2] - 2
    return sum(x[:, i : i + ho, j : j + wo] @ kernel[i, j] for i in range(3) for j in range(3))


@pytest.mark.parametrize(
    "x_shape, out, padding",
    [
        ((2, 56, 56, 8), 8, ((1, 1), (1, 1))),  # ResNet18's layer1, fewer channels
        ((1, 28, 28, 16), 16, "SAME"),  # layer2
        ((3, 7, 9, 4), 5, "VALID"),  # odd output sizes: the last tile row/column cropped
        ((1, 6, 5, 3), 2, ((2, 0), (0, 3))),  # asymmetric padding
        ((1, 3, 3, 2), 3, "VALID"),  # a single output pixel
    ],
)
def test_matches_float64_convolution_to_float32_rounding(x_shape, out, padding):
    x, kernel = random(x_shape, 0), random((3, 3, x_shape[3], out), 1)
    got = jax.jit(lambda x, k: winograd_conv(x, k, padding, HIGHEST))(x, kernel)
    exact = float64_conv(x, kernel, padding)
    # Sums of 9 * C unit-scale products; the transforms add up to 16 inputs and 9 taps first.
    terms = 9 * x_shape[3]
    assert got.shape == exact.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, exact, rtol=0, atol=2e-6 * np.sqrt(terms) + 1e-6)
    err_xla = np.max(np.abs(np.asarray(xla(x, kernel, padding), np.float64) - exact))
    assert np.max(np.abs(np.asarray(got, np.float64) - exact)) <= 4 * err_xla + 1e-6


def test_float64_inputs_stay_float64_and_exact():
    with jax.enable_x64(True):
        x, kernel = random((2, 10, 10, 4), 2, np.float64), random((3, 3, 4, 6), 3, np.float64)
        got = winograd_conv(x, kernel, "SAME")
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, float64_conv(x, kernel, "SAME"), rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 13),
    w=st.integers(1, 13),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    channels=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 1000),
)
def test_any_size_and_padding_matches_xla(h, w, pads, channels, seed):
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    if h + pads[0] + pads[1] < 3 or w + pads[2] + pads[3] < 3:
        return
    x, kernel = random((2, h, w, channels[0]), seed), random((3, 3, *channels), seed + 1)
    np.testing.assert_allclose(
        winograd_conv(x, kernel, padding, HIGHEST), xla(x, kernel, padding), rtol=0, atol=2e-5
    )


def test_gradients_are_the_xla_convolutions():
    x, kernel = random((2, 12, 12, 6), 4), random((3, 3, 6, 7), 5)
    g = random((2, 12, 12, 7), 6)

    def grads(conv):
        loss = lambda x, k: jnp.vdot(conv(x, k), g)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)

    ours = grads(lambda x, k: winograd_conv(x, k, "SAME"))
    ref = grads(lambda x, k: xla(x, k, "SAME").astype(jnp.float32))
    ref_default = grads(
        lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
    )
    for a, b in zip(ours, ref_default, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_vmap_and_nnx_conv_use():
    from flax import nnx

    xs, kernel = random((3, 2, 8, 8, 2), 7), random((3, 3, 2, 4), 8)
    batched = jax.vmap(lambda x: winograd_conv(x, kernel, "SAME", HIGHEST))(xs)
    for x, y in zip(xs, batched, strict=True):
        np.testing.assert_allclose(y, xla(x, kernel, "SAME"), rtol=0, atol=1e-5)
    conv = nnx.Conv(2, 4, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    ref = conv(xs[0])
    conv.conv_general_dilated = lambda lhs, rhs, strides, padding, *a, **k: winograd_conv(
        lhs, rhs, padding
    )
    np.testing.assert_allclose(conv(xs[0]), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "x_shape, k_shape, padding, match",
    [
        ((8, 8, 2), (3, 3, 2, 2), "SAME", r"lhs must be \[B, H, W, C\] and rhs \[3, 3, C, O\]"),
        ((1, 8, 8, 2), (5, 5, 2, 2), "SAME", r"rhs \[3, 3, C, O\], got \(1, 8, 8, 2\) and \(5, 5"),
        ((1, 8, 8, 2), (3, 3, 3, 2), "SAME", "and rhs"),
        ((1, 8, 8, 2), (3, 3, 2, 2), ((-1, 0), (0, 0)), "padding must be a string or two"),
        ((1, 8, 8, 2), (3, 3, 2, 2), ((1, 1),), "padding must be a string or two"),
        (
            (1, 8, 8, 2),
            (3, 3, 2, 2),
            "FULL",
            "padding must be 'SAME', 'SAME_LOWER', 'VALID' or two",
        ),
        ((1, 1, 8, 2), (3, 3, 2, 2), "VALID", "the padded input 1x8 is smaller than the 3x3"),
    ],
)
def test_rejects_bad_arguments_before_any_work(x_shape, k_shape, padding, match):
    with pytest.raises(ValueError, match=match):
        winograd_conv(jnp.zeros(x_shape), jnp.zeros(k_shape), padding)


def test_winograd_is_faster_rule():
    at_least = WINOGRAD_MIN_OUTPUT_PIXELS
    assert winograd_is_faster(at_least, (3, 3), (1, 1), 64, 64)
    assert winograd_is_faster(56 * 56, (3, 3), (1, 1), 64, 128)
    assert not winograd_is_faster(at_least - 1, (3, 3), (1, 1), 64, 64)
    assert not winograd_is_faster(56 * 56, (3, 3), (1, 1), 128, 32)  # DenseNet's 3x3
    assert winograd_is_faster(at_least, (3, 3), (1, 1), WINOGRAD_MAX_IN_CHANNELS, 64)
    assert not winograd_is_faster(at_least, (3, 3), (1, 1), 128, 128)  # ResNet18's layer2
    assert not winograd_is_faster(56 * 56, (3, 3), (2, 2), 64, 64)
    assert not winograd_is_faster(56 * 56, (5, 5), (1, 1), 64, 64)
