"""Tests for jaxcal.models.im2col: parity with lax.conv_general_dilated, CPU choice, ResNet18."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcal.models import DenseNet121, ResNet18
from jaxcal.models.im2col import (
    IM2COL_MAX_OUTPUT_PIXELS,
    conv_function_for_backend,
    conv_general_dilated_for_cpu,
    im2col_conv,
    im2col_is_faster,
    use_xla_convolutions,
)

NHWC = ("NHWC", "HWIO", "NHWC")
HIGHEST = jax.lax.Precision.HIGHEST


def random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def xla(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=NHWC, precision=HIGHEST
    )


def ours(x, kernel, strides, padding):
    return im2col_conv(x, kernel, strides, padding, dimension_numbers=NHWC, precision=HIGHEST)


def assert_same_conv_and_gradients(x, kernel, strides, padding, seed):
    """Forward and both gradients of a random projection agree (jitted). Both sides sum
    K = kh * kw * C (forward, input gradient) or B * Ho * Wo (kernel gradient) float32
    products of unit-scale numbers in different orders: error ~ sqrt(K) * eps * sqrt(K); the
    input gradient sums kh * kw * O products. Outputs far above sqrt(K) (a few in 10^4) also
    get rtol 4e-7, ~3 float32 ulps of their own size (seen: 2.3e-5 at 85 on one AMD EPYC)."""
    run = [jax.jit(lambda x, k, f=f: f(x, k, strides, padding)) for f in (ours, xla)]
    expected = run[1](x, kernel)
    k_terms = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
    np.testing.assert_allclose(run[0](x, kernel), expected, rtol=0, atol=4e-7 * k_terms + 1e-6)
    g = random(expected.shape, seed + 1)
    grads = [
        jax.jit(jax.grad(lambda x, k, f=f: jnp.vdot(f(x, k), g), argnums=(0, 1)))(x, kernel)
        for f in run
    ]
    out_terms = expected.shape[0] * expected.shape[1] * expected.shape[2]
    x_terms = kernel.shape[0] * kernel.shape[1] * kernel.shape[3]
    np.testing.assert_allclose(
        grads[0][0], grads[1][0], rtol=4e-7, atol=4e-7 * max(k_terms, x_terms) + 1e-6
    )
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=0, atol=4e-7 * out_terms + 1e-6)


# Every convolution shape of ResNet18 at 224 (batch 1, fewer channels where they are wide).
RESNET_SHAPES = [
    ((1, 224, 224, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3))),  # stem
    ((1, 56, 56, 8), (3, 3, 8, 8), (1, 1), ((1, 1), (1, 1))),  # layer1
    ((1, 56, 56, 8), (3, 3, 8, 16), (2, 2), ((1, 1), (1, 1))),  # layer2.0.conv1
    ((1, 56, 56, 8), (1, 1, 8, 16), (2, 2), ((0, 0), (0, 0))),  # layer2.0.downsample
    ((2, 14, 14, 32), (3, 3, 32, 64), (2, 2), ((1, 1), (1, 1))),  # layer4.0.conv1
    ((2, 7, 7, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1))),  # layer4
    ((2, 14, 14, 32), (1, 1, 32, 64), (2, 2), ((0, 0), (0, 0))),  # layer4.0.downsample
]


@pytest.mark.parametrize("x_shape, k_shape, strides, padding", RESNET_SHAPES)
def test_resnet_convolutions_and_gradients_match_xla(x_shape, k_shape, strides, padding):
    seed = sum(x_shape) + sum(k_shape)
    x, kernel = random(x_shape, seed), random(k_shape, seed + 1)
    assert_same_conv_and_gradients(x, kernel, strides, padding, seed)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    pads=st.tuples(*[st.integers(0, 3)] * 4),
    channels=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
)
def test_any_shape_stride_and_padding_matches_xla(h, w, kh, kw, sh, sw, pads, channels, seed):
    top, bottom, left, right = pads
    if h + top + bottom < kh or w + left + right < kw:
        return  # the kernel does not fit (rejected, tested below)
    x = random((2, h, w, channels[0]), seed)
    kernel = random((kh, kw, channels[0], channels[1]), seed + 1)
    assert_same_conv_and_gradients(x, kernel, (sh, sw), ((top, bottom), (left, right)), seed)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (3, 2)])
def test_string_paddings_match_xla(padding, strides):
    x, kernel = random((2, 9, 8, 3), 0), random((3, 4, 3, 5), 1)
    assert_same_conv_and_gradients(x, kernel, strides, padding, 2)


def test_conv_dimension_numbers_object_and_nnx_conv_are_accepted():
    x = random((2, 9, 9, 4), 3)
    ref = nnx.Conv(4, 6, (3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0))
    conv = nnx.Conv(
        4,
        6,
        (3, 3),
        strides=2,
        padding=((1, 1), (1, 1)),
        conv_general_dilated=im2col_conv,
        rngs=nnx.Rngs(0),
    )
    np.testing.assert_allclose(conv(x), ref(x), rtol=0, atol=2e-5)  # nnx passes its own numbers


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dimension_numbers": ("NCHW", "OIHW", "NCHW")}, "dimension_numbers must be"),
        ({"dimension_numbers": None}, "dimension_numbers must be"),
        ({"lhs_dilation": (2, 1)}, "lhs_dilation must be 1"),
        ({"rhs_dilation": (1, 2)}, "rhs_dilation must be 1"),
        ({"feature_group_count": 2}, "feature_group_count must be 1"),
        ({"out_sharding": "something"}, "only None is supported for \\['out_sharding'\\]"),
        ({"padding": ((1, 1),)}, "padding must be a string or two"),
        ({"padding": ((1, -1), (0, 0))}, "padding must be a string or two"),
    ],
)
def test_rejects_what_it_does_not_cover(kwargs, match):
    args = {"padding": "VALID", "dimension_numbers": NHWC, **kwargs}
    with pytest.raises(ValueError, match=match):
        im2col_conv(random((1, 5, 5, 4), 0), random((3, 3, 4, 2), 1), (1, 1), **args)


def test_rejects_mismatched_operands_and_kernels_larger_than_the_input():
    with pytest.raises(ValueError, match=r"lhs must be \[B, H, W, C\] and rhs"):
        im2col_conv(random((1, 5, 5, 4), 0), random((3, 3, 3, 2), 1), (1, 1), "VALID")
    with pytest.raises(ValueError, match="kernel 7x7 is larger than the padded input 6x6"):
        im2col_conv(random((1, 4, 4, 2), 0), random((7, 7, 2, 2), 1), (1, 1), ((1, 1), (1, 1)))


def _primitives(fn, *args):
    return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).eqns}


def _lowering(fn, *args) -> str:
    primitives = _primitives(fn, *args)
    if "conv_general_dilated" in primitives:
        return "xla"
    return "winograd" if "custom_vjp_call" in primitives else "im2col"


@pytest.mark.parametrize(
    "x_shape, k_shape, strides, lowered",
    [
        ((2, 56, 56, 4), (3, 3, 4, 4), (1, 1), "winograd"),  # 56 x 56 out, 3x3 stride 1
        ((2, 56, 56, 8), (3, 3, 8, 4), (1, 1), "xla"),  # fewer channels out than in
        ((2, 56, 56, 4), (3, 3, 4, 4), (2, 2), "xla"),  # 28 x 28 out, stride 2
        ((2, 28, 28, 4), (3, 3, 4, 4), (2, 2), "im2col"),  # 14 x 14 out
        ((2, 15, 15, 4), (3, 3, 4, 4), (1, 1), "xla"),  # 15 x 15 out
        ((2, 30, 30, 4), (3, 3, 4, 4), (1, 1), "winograd"),  # 30 x 30 out, odd tile count
        ((2, 56, 56, 4), (5, 5, 4, 4), (1, 1), "xla"),  # 5x5 kernel
        ((2, 56, 56, 4), (1, 1, 4, 4), (1, 1), "im2col"),  # 1x1 kernel
    ],
)
def test_cpu_function_chooses_by_shape(x_shape, k_shape, strides, lowered):
    x, kernel = random(x_shape, 0), random(k_shape, 1)

    def conv(x, k):
        return conv_general_dilated_for_cpu(
            x, k, strides, ((1, 1), (1, 1)), dimension_numbers=NHWC, precision=HIGHEST
        )

    assert _lowering(conv, x, kernel) == lowered
    np.testing.assert_allclose(
        conv(x, kernel), xla(x, kernel, strides, ((1, 1), (1, 1))), rtol=0, atol=2e-5
    )


def test_cpu_function_sends_what_im2col_does_not_cover_to_xla():
    x, kernel = random((1, 3, 6, 6), 0), random((2, 3, 3, 3), 1)  # NCHW / OIHW, 4x4 out
    numbers = ("NCHW", "OIHW", "NCHW")
    got = conv_general_dilated_for_cpu(x, kernel, (1, 1), "VALID", dimension_numbers=numbers)
    ref = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=numbers)
    np.testing.assert_array_equal(got, ref)
    dilated = jax.make_jaxpr(
        lambda x, k: conv_general_dilated_for_cpu(
            x, k, (1, 1), "VALID", rhs_dilation=(2, 2), dimension_numbers=NHWC
        )
    )(random((1, 6, 6, 2), 0), random((2, 2, 2, 3), 1))
    assert "conv_general_dilated" in {e.primitive.name for e in dilated.eqns}
    cropped = conv_general_dilated_for_cpu(  # negative padding crops: XLA's, not im2col's
        random((1, 6, 6, 2), 0),
        random((3, 3, 2, 3), 1),
        (1, 1),
        ((-1, 0), (0, 0)),
        dimension_numbers=NHWC,
    )
    assert cropped.shape == (1, 3, 4, 3)


def test_im2col_is_faster_threshold_and_backend_choice():
    assert im2col_is_faster(IM2COL_MAX_OUTPUT_PIXELS, (3, 3))
    assert not im2col_is_faster(IM2COL_MAX_OUTPUT_PIXELS + 1, (3, 3))
    assert im2col_is_faster(112 * 112, (1, 1))
    assert conv_function_for_backend("cpu") is conv_general_dilated_for_cpu
    assert conv_function_for_backend("CPU") is conv_general_dilated_for_cpu
    for backend in ("gpu", "cuda", "tpu"):
        assert conv_function_for_backend(backend) is jax.lax.conv_general_dilated
    with pytest.raises(TypeError, match="backend must be a platform name"):
        conv_function_for_backend("")


@pytest.mark.parametrize("build", [ResNet18, DenseNet121])
def test_torchvision_models_lower_every_convolution_for_the_backend(build):
    model = nnx.eval_shape(lambda: build(num_classes=2, rngs=nnx.Rngs(0)))
    convs = [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Conv)]
    assert len(convs) == (20 if build is ResNet18 else 120)
    assert all(conv.conv_general_dilated is conv_function_for_backend() for conv in convs)


def test_use_xla_convolutions_switches_every_conv_and_checks_its_argument():
    model = use_xla_convolutions(nnx.eval_shape(lambda: ResNet18(num_classes=2, rngs=nnx.Rngs(0))))
    convs = [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Conv)]
    assert len(convs) == 20
    assert all(conv.conv_general_dilated is jax.lax.conv_general_dilated for conv in convs)
    with pytest.raises(TypeError, match="model must be an nnx.Module, got dict"):
        use_xla_convolutions({})


def test_resnet18_logits_and_gradients_equal_the_xla_convolution_model():
    model = ResNet18(num_classes=3, rngs=nnx.Rngs(0))
    ref = use_xla_convolutions(ResNet18(num_classes=3, rngs=nnx.Rngs(0)))
    x = random((2, 112, 112, 3), 5)  # layer1 28 x 28 (Winograd), layer3/4 7 and 4 (im2col)

    def loss_and_grads(m):
        def loss(m):
            return jnp.mean(m(x) ** 2)

        return nnx.jit(nnx.value_and_grad(loss))(m)

    (value, grads), (ref_value, ref_grads) = loss_and_grads(model), loss_and_grads(ref)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for name in ("layer4", "layer3", "layer1", "conv1"):
        ours_g = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads[name])])
        ref_g = np.concatenate([np.ravel(g) for g in jax.tree.leaves(ref_grads[name])])
        assert np.abs(ours_g - ref_g).max() <= 1e-4 * np.abs(ref_g).max(), name
