"""Tests for jaxcal.models.conv: parity of patch convolutions and pools with XLA's and nnx's."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcal.models.conv import (
    PatchConv,
    avg_pool_2x2,
    conv_impl_for_backend,
    max_pool_2x2,
    micro_batch_for,
    patch_conv,
    patch_conv_max_pool,
    patch_conv_max_pool_chwn,
    steps_per_call_for,
)

HIGHEST = jax.lax.Precision.HIGHEST
# One compilation per shape instead of one per primitive (eager mode), to keep the tests fast.
jit_patch_conv = jax.jit(patch_conv, static_argnames=("padding", "block", "precision"))


@functools.partial(jax.jit, static_argnames="padding")
def xla_conv(x, kernel, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST
    )


def tolerance(kernel):
    # Both sides sum K = kh * kw * C float32 products of unit-scale numbers in different orders;
    # the rounding error of such a sum grows like sqrt(K) * eps * |sum| (|sum| ~ sqrt(K) here).
    k = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
    return 4e-7 * k + 1e-6


def assert_matches_with_gradients(ours, ref, x, kernel, *, seed):
    """ours(x, kernel) equals ref(x, kernel), and so do both gradients of a random projection
    (jitted); the kernel gradient sums B x H' x W' terms, hence its wider tolerance."""
    expected = ref(x, kernel)
    np.testing.assert_allclose(ours(x, kernel), expected, rtol=0, atol=tolerance(kernel))
    g = random(expected.shape, seed)
    grads = [
        jax.jit(jax.grad(lambda x, k, f=f: jnp.vdot(f(x, k), g), argnums=(0, 1)))(x, kernel)
        for f in (ours, ref)
    ]
    dk_terms = expected.shape[0] * expected.shape[1] * expected.shape[2]
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=0, atol=tolerance(kernel))
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=0, atol=4e-7 * dk_terms + 1e-6)


def random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


# (input [B, H, W, C], kernel [kh, kw, C, O], padding): the LeNet cases of the originals.
LENET_CASES = [
    ((4, 32, 32, 3), (5, 5, 3, 6), ((0, 0), (0, 0))),  # bird/cat conv1
    ((4, 14, 14, 6), (5, 5, 6, 16), ((0, 0), (0, 0))),  # conv2
    ((4, 28, 28, 1), (5, 5, 1, 6), ((2, 2), (2, 2))),  # MNIST CNN conv1, padding 2
    ((4, 5, 5, 16), (5, 5, 16, 120), ((0, 0), (0, 0))),  # classic LeNet conv3: 1x1 output
]


@pytest.mark.parametrize(
    "x_shape, k_shape, padding, block",
    [(*case, 2) for case in LENET_CASES] + [(*LENET_CASES[0], b) for b in (1, 3, 4)],
)
def test_lenet_convolutions_and_gradients_match_xla(x_shape, k_shape, padding, block):
    x, kernel = random(x_shape, 0), random(k_shape, 1)
    ours = jit_patch_conv(x, kernel, padding=padding, block=block, precision=HIGHEST)
    ref = xla_conv(x, kernel, padding)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tolerance(kernel))
    cotangent = random(ref.shape, 2)

    def loss(conv):
        return lambda x, k: jnp.vdot(conv(x, k), cotangent)

    ours_dx, ours_dk = jax.grad(
        loss(lambda x, k: patch_conv(x, k, padding=padding, block=block, precision=HIGHEST)),
        argnums=(0, 1),
    )(x, kernel)
    ref_dx, ref_dk = jax.grad(loss(lambda x, k: xla_conv(x, k, padding)), argnums=(0, 1))(x, kernel)
    # dX sums O * kh * kw products per entry, dK sums B * H' * W' products: scale accordingly.
    dx_terms = k_shape[0] * k_shape[1] * k_shape[3]
    dk_terms = ref.shape[0] * ref.shape[1] * ref.shape[2]
    np.testing.assert_allclose(ours_dx, ref_dx, rtol=0, atol=4e-7 * dx_terms + 1e-6)
    np.testing.assert_allclose(ours_dk, ref_dk, rtol=0, atol=4e-7 * dk_terms + 1e-6)


@settings(max_examples=15, deadline=None)
@given(
    height=st.integers(1, 11),
    width=st.integers(1, 11),
    channels=st.integers(1, 3),
    features=st.integers(1, 3),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    block=st.integers(1, 3),
)
def test_any_shape_padding_and_block_matches_xla(
    height, width, channels, features, kh, kw, pads, block
):
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    if height + pads[0] + pads[1] < kh or width + pads[2] + pads[3] < kw:
        with pytest.raises(ValueError, match="larger than the padded input"):
            patch_conv(random((2, height, width, channels), 0), random((kh, kw, channels, 1), 1))
        return
    x = random((2, height, width, channels), height * 100 + width)
    kernel = random((kh, kw, channels, features), kh * 10 + kw)
    ours = jit_patch_conv(x, kernel, padding=padding, block=block, precision=HIGHEST)
    ref = xla_conv(x, kernel, padding)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tolerance(kernel))


@pytest.mark.parametrize(
    "x_shape, k_shape, padding",
    [
        ((4, 32, 32, 3), (5, 5, 3, 6), "VALID"),  # bird/cat conv1 + pool
        ((4, 14, 14, 6), (5, 5, 6, 16), "VALID"),  # conv2 + pool
        ((4, 28, 28, 1), (5, 5, 1, 6), 2),  # MNIST CNN conv1 + pool
        ((2, 12, 9, 2), (3, 4, 2, 3), ((1, 0), (0, 2))),  # odd output rows: dropped, as VALID
    ],
)
def test_fused_conv_max_pool_matches_xla_conv_then_nnx_max_pool(x_shape, k_shape, padding):
    x, kernel = random(x_shape, 20), random(k_shape, 21)
    pads = {"VALID": ((0, 0), (0, 0)), 2: ((2, 2), (2, 2))}.get(padding, padding)

    def ref(x, k):
        return nnx.max_pool(xla_conv(x, k, pads), (2, 2), strides=(2, 2))

    def ours(x, k):
        return patch_conv_max_pool(x, k, padding=padding, precision=HIGHEST)

    assert_matches_with_gradients(ours, ref, x, kernel, seed=22)


def test_conv_max_pool_method_equals_the_layer_then_the_pool():
    layer = PatchConv(3, 6, 5, padding="VALID", rngs=nnx.Rngs(3))
    layer.bias[...] = random((6,), 23)
    x = random((2, 16, 16, 3), 24)
    np.testing.assert_allclose(layer.conv_max_pool(x), max_pool_2x2(layer(x)), atol=1e-5)
    with pytest.raises(ValueError, match="too small to pool"):
        patch_conv_max_pool(random((1, 5, 5, 3), 25), random((5, 5, 3, 2), 26))
    with pytest.raises(ValueError, match="NHWC"):
        layer.conv_max_pool(x[0])


def to_chwn(x):
    return jnp.transpose(x, (3, 1, 2, 0))


@pytest.mark.parametrize(
    "x_shape, k_shape, padding, kernel_scale",
    [
        ((4, 32, 32, 3), (5, 5, 3, 6), "VALID", 1.0),  # bird/cat conv1 + pool
        ((4, 14, 14, 6), (5, 5, 6, 16), "VALID", 1.0),  # conv2 + pool
        ((4, 28, 28, 1), (5, 5, 1, 6), 2, 1.0),  # MNIST CNN conv1 + pool
        ((2, 12, 9, 2), (3, 4, 2, 3), ((1, 0), (0, 2)), 1.0),  # odd output rows: dropped
        ((3, 10, 10, 2), (5, 5, 2, 4), "VALID", 0.0),  # all outputs tie: first max gets it
    ],
)
def test_channel_major_conv_max_pool_matches_xla_conv_then_nnx_max_pool(
    x_shape, k_shape, padding, kernel_scale
):
    x, kernel = random(x_shape, 30), random(k_shape, 31) * kernel_scale
    pads = {"VALID": ((0, 0), (0, 0)), 2: ((2, 2), (2, 2))}.get(padding, padding)

    def ref(x, k):  # NHWC
        return nnx.max_pool(xla_conv(x, k, pads), (2, 2), strides=(2, 2))

    def ours(x, k):  # NHWC in and out, channel-major inside
        y = patch_conv_max_pool_chwn(to_chwn(x), k, padding=padding, precision=HIGHEST)
        return to_chwn(y)

    assert_matches_with_gradients(ours, ref, x, kernel, seed=32)


def test_channel_major_method_equals_conv_max_pool_and_checks_its_input():
    layer = PatchConv(3, 6, 5, padding=1, rngs=nnx.Rngs(4))
    layer.bias[...] = random((6,), 33)
    x = random((2, 16, 16, 3), 34)
    np.testing.assert_allclose(
        to_chwn(layer.conv_max_pool_chwn(to_chwn(x))), layer.conv_max_pool(x), atol=1e-5
    )
    half = PatchConv(3, 6, 5, padding="VALID", dtype=jnp.bfloat16, use_bias=False, rngs=nnx.Rngs(4))
    assert half.conv_max_pool_chwn(to_chwn(x)).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="channel-major"):
        layer.conv_max_pool_chwn(x)  # NHWC: 3 channels last, 2 first
    with pytest.raises(ValueError, match="channel-major"):
        layer.conv_max_pool_chwn(to_chwn(x)[0])
    with pytest.raises(ValueError, match="too small to pool"):
        patch_conv_max_pool_chwn(random((3, 5, 5, 1), 35), random((5, 5, 3, 2), 36))
    with pytest.raises(ValueError, match="channels"):
        patch_conv_max_pool_chwn(random((2, 8, 8, 3), 35), random((5, 5, 3, 2), 36))
    with pytest.raises(ValueError, match="kernel must be"):
        patch_conv_max_pool_chwn(random((3, 8, 8, 3), 35), random((5, 5, 3), 36))


@pytest.mark.parametrize(
    "padding, expected",
    [
        ("VALID", ((0, 0), (0, 0))),
        ("SAME", ((2, 2), (1, 1))),  # kernel 5x3: (k - 1) // 2 before, the rest after
        (1, ((1, 1), (1, 1))),
        ((1, 2), ((1, 1), (2, 2))),
        (((0, 1), (2, 0)), ((0, 1), (2, 0))),
    ],
)
def test_padding_forms_match_their_explicit_pairs(padding, expected):
    x, kernel = random((2, 8, 9, 2), 3), random((5, 3, 2, 4), 4)
    ours = jit_patch_conv(x, kernel, padding=padding, precision=HIGHEST)
    np.testing.assert_allclose(ours, xla_conv(x, kernel, expected), rtol=0, atol=tolerance(kernel))


@pytest.mark.parametrize("padding", ["VALID", "SAME", 2])
def test_patch_conv_module_is_a_drop_in_for_nnx_conv(padding):
    patch = PatchConv(3, 6, 5, padding=padding, rngs=nnx.Rngs(0))
    conv = nnx.Conv(3, 6, (5, 5), padding=padding, rngs=nnx.Rngs(0))
    patch_params, conv_params = nnx.state(patch, nnx.Param), nnx.state(conv, nnx.Param)
    assert jax.tree.structure(patch_params) == jax.tree.structure(conv_params)
    # Same initialisers drawing keys in the same order: identical parameters.
    jax.tree.map(np.testing.assert_array_equal, patch_params, conv_params)
    # nnx.Conv's batch conventions: one batch axis, none, or several.
    shapes = (
        [(4, 12, 12, 3)] if padding != "VALID" else [(4, 12, 12, 3), (12, 12, 3), (2, 3, 9, 9, 3)]
    )
    for x_shape in shapes:
        x = random(x_shape, 5)
        ours, ref = patch(x), conv(x)
        assert ours.shape == ref.shape
        # Default precision on both sides: float32 on CPU (75 products per output).
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_weights_move_between_patch_conv_and_nnx_conv_and_gradients_agree():
    patch = PatchConv(6, 16, (5, 3), padding="VALID", rngs=nnx.Rngs(1))
    conv = nnx.Conv(6, 16, (5, 3), padding="VALID", rngs=nnx.Rngs(2))
    nnx.update(conv, nnx.state(patch))
    x = random((3, 10, 9, 6), 6)
    target = random((3, 6, 7, 16), 7)

    def loss(model):
        return jnp.mean((model(x) - target) ** 2)

    ours, ref = nnx.grad(loss)(patch), nnx.grad(loss)(conv)
    np.testing.assert_allclose(ours["kernel"][...], ref["kernel"][...], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["bias"][...], ref["bias"][...], rtol=1e-4, atol=1e-6)


def test_no_bias_and_dtype_follow_nnx_conv():
    patch = PatchConv(2, 3, 3, use_bias=False, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    conv = nnx.Conv(2, 3, (3, 3), use_bias=False, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert patch.bias is None
    x = random((2, 6, 6, 2), 8)
    ours, ref = patch(x), conv(x)
    assert ours.dtype == ref.dtype == jnp.bfloat16
    # bfloat16 keeps 8 mantissa bits: outputs of size ~3 agree to a few 1e-2.
    np.testing.assert_allclose(ours.astype(np.float32), ref.astype(np.float32), atol=0.1)


class TinyLeNet(nnx.Module):
    def __init__(self, patches: bool, *, rngs: nnx.Rngs):
        if patches:
            self.conv1 = PatchConv(3, 6, 5, padding="VALID", rngs=rngs)
            self.conv2 = PatchConv(6, 16, 5, padding="VALID", rngs=rngs)
            self.pool = max_pool_2x2
        else:
            self.conv1 = nnx.Conv(3, 6, (5, 5), padding="VALID", rngs=rngs)
            self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
            self.pool = lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2))
        self.head = nnx.Linear(400, 1, rngs=rngs)

    def __call__(self, x):
        x = self.pool(nnx.relu(self.conv1(x)))
        x = self.pool(nnx.relu(self.conv2(x)))
        return self.head(x.reshape(x.shape[0], -1))[:, 0]


def test_lenet_forward_and_parameter_gradients_match_the_xla_lenet():
    ours, ref = TinyLeNet(True, rngs=nnx.Rngs(0)), TinyLeNet(False, rngs=nnx.Rngs(0))
    jax.tree.map(np.testing.assert_array_equal, nnx.state(ours), nnx.state(ref))
    x = random((8, 32, 32, 3), 9)
    y = jnp.asarray(np.arange(8) % 2, jnp.float32)

    @nnx.jit
    def loss_and_grads(model):
        def loss(model):
            logits = model(x)
            return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

        return nnx.value_and_grad(loss)(model)

    (loss_ours, grads_ours), (loss_ref, grads_ref) = loss_and_grads(ours), loss_and_grads(ref)
    np.testing.assert_allclose(loss_ours, loss_ref, rtol=1e-5)
    # Gradients go through two convolutions and pools: float32 reorderings, relative 1e-4.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max()),
        nnx.state(grads_ours),
        nnx.state(grads_ref),
    )


def test_patch_conv_gradient_is_the_same_inside_lax_scan():
    x, kernel = random((3, 4, 14, 14, 6), 10), random((5, 5, 6, 16), 11)

    def loss(kernel, x):
        return jnp.sum(patch_conv(x, kernel) ** 2)

    looped = jax.lax.scan(lambda c, xi: (c, jax.grad(loss)(kernel, xi)), 0, x)[1]
    direct = jnp.stack([jax.grad(loss)(kernel, xi) for xi in x])
    np.testing.assert_allclose(looped, direct, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 2), (1, 2, 3, 1)])
def test_pools_match_nnx_pools_forward_and_backward(shape):
    x = random(shape, 12)
    g = random((shape[0], shape[1] // 2, shape[2] // 2, shape[3]), 13)
    for ours, ref in (
        (max_pool_2x2, lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2))),
        (avg_pool_2x2, lambda x: nnx.avg_pool(x, (2, 2), strides=(2, 2))),
    ):
        np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6)
        grad_ours = jax.grad(lambda x, f=ours: jnp.vdot(f(x), g))(x)
        grad_ref = jax.grad(lambda x, f=ref: jnp.vdot(f(x), g))(x)
        np.testing.assert_allclose(grad_ours, grad_ref, rtol=1e-6)


def test_max_pool_gradient_goes_to_the_first_tied_maximum():
    # Values in {0, 1}: most windows hold ties, as after a ReLU.
    rng = np.random.default_rng(14)
    x = jnp.asarray(rng.integers(0, 2, (3, 6, 6, 4)).astype(np.float32))
    g = random((3, 3, 3, 4), 15)
    ours = jax.grad(lambda x: jnp.vdot(max_pool_2x2(x), g))(x)
    ref = jax.grad(lambda x: jnp.vdot(nnx.max_pool(x, (2, 2), strides=(2, 2)), g))(x)
    np.testing.assert_array_equal(ours, ref)
    # Exactly one entry per window receives the window's gradient.
    windows = (ours != 0).reshape(3, 3, 2, 3, 2, 4).sum(axis=(2, 4))
    np.testing.assert_array_equal(windows, np.ones((3, 3, 3, 4)))


def test_max_pool_gradient_matches_torch_at_ties():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(16)
    x = rng.integers(0, 2, (2, 6, 8, 3)).astype(np.float32)
    g = rng.standard_normal((2, 3, 4, 3)).astype(np.float32)
    x_t = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    torch.nn.functional.max_pool2d(x_t, 2, 2).backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    ours = jax.grad(lambda x: jnp.vdot(max_pool_2x2(x), jnp.asarray(g)))(jnp.asarray(x))
    np.testing.assert_array_equal(ours, x_t.grad.numpy().transpose(0, 2, 3, 1))


def test_conv_impl_for_backend_picks_patches_on_cpu_only():
    assert conv_impl_for_backend("cpu") == "patches"
    for backend in ("gpu", "cuda", "rocm", "tpu"):
        assert conv_impl_for_backend(backend) == "xla"
    expected = "patches" if jax.default_backend() == "cpu" else "xla"
    assert conv_impl_for_backend() == expected
    with pytest.raises(TypeError, match="backend"):
        conv_impl_for_backend(3)
    with pytest.raises(TypeError, match="backend"):
        conv_impl_for_backend("")


def test_steps_per_call_fuses_steps_unless_xla_convolutions_run_on_cpu():
    from jaxcal.models import MLP, LeNet5

    patch_lenet = LeNet5.birdcat(rngs=nnx.Rngs(0))  # PatchConv on CPU
    xla_lenet = nnx.Sequential(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)))
    transposed = nnx.Sequential(nnx.ConvTranspose(3, 4, (3, 3), rngs=nnx.Rngs(0)))
    mlp = MLP(rngs=nnx.Rngs(0))
    assert steps_per_call_for(mlp, "cpu") == 8
    assert steps_per_call_for(xla_lenet, "cpu") == 1
    assert steps_per_call_for(transposed, "cpu") == 1
    for backend in ("gpu", "tpu"):
        assert steps_per_call_for(xla_lenet, backend) == 8
    if jax.default_backend() == "cpu":
        assert steps_per_call_for(patch_lenet) == 8
    with pytest.raises(TypeError, match="model must be an nnx.Module"):
        steps_per_call_for(lambda x: x, "cpu")


def test_micro_batches_only_for_patch_conv_models_without_batch_norm_on_cpu():
    """Batches above 128 split into the largest divisor up to 128 (at least 32), for models
    with PatchConv and no BatchNorm, on CPU only."""
    from jaxcal.models import MLP

    patch = nnx.Sequential(PatchConv(3, 4, 3, rngs=nnx.Rngs(0)))
    normed = nnx.Sequential(
        PatchConv(3, 4, 3, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0))
    )
    for batch, micro in (
        (64, 64),
        (128, 128),
        (256, 128),
        (512, 128),
        (200, 100),
        (248, 124),
        (192, 96),
        (257, 257),
        (262, 262),
        (160, 80),
    ):
        assert micro_batch_for(patch, batch, "cpu") == micro, batch
    assert micro_batch_for(patch, 256, "gpu") == 256
    assert micro_batch_for(patch, 256, "tpu") == 256
    assert micro_batch_for(normed, 256, "cpu") == 256
    assert micro_batch_for(MLP(rngs=nnx.Rngs(0)), 256, "cpu") == 256
    assert (
        micro_batch_for(nnx.Sequential(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))), 256, "cpu") == 256
    )
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        micro_batch_for(patch, 0, "cpu")
    with pytest.raises(TypeError, match="batch_size must be an int"):
        micro_batch_for(patch, 256.0, "cpu")
    with pytest.raises(TypeError, match="model must be an nnx.Module"):
        micro_batch_for(lambda x: x, 256, "cpu")


@pytest.mark.parametrize(
    "x_shape, k_shape, kwargs, match",
    [
        ((2, 8, 8), (3, 3, 1, 1), {}, "NHWC"),
        ((2, 8, 8, 2), (3, 3, 1), {}, "kernel must be"),
        ((2, 8, 8, 2), (3, 3, 3, 1), {}, "channels"),
        ((2, 4, 4, 1), (5, 5, 1, 1), {}, "larger than the padded input"),
        ((2, 8, 8, 1), (3, 3, 1, 1), {"block": 0}, "block"),
        ((2, 8, 8, 1), (3, 3, 1, 1), {"padding": "FULL"}, "padding"),
        ((2, 8, 8, 1), (3, 3, 1, 1), {"padding": -1}, "padding"),
        ((2, 8, 8, 1), (3, 3, 1, 1), {"padding": (1, 2, 3)}, "padding"),
    ],
)
def test_patch_conv_rejects_bad_input(x_shape, k_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        patch_conv(jnp.zeros(x_shape), jnp.zeros(k_shape), **kwargs)


def test_module_and_pools_reject_bad_input():
    with pytest.raises(ValueError, match="in_features"):
        PatchConv(0, 3, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_size"):
        PatchConv(1, 3, (3, 3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="padding"):
        PatchConv(1, 3, 3, padding="CIRCULAR", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="block"):
        PatchConv(1, 3, 3, block=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 2\]"):
        PatchConv(2, 3, 3, rngs=nnx.Rngs(0))(jnp.zeros((1, 5, 5, 3)))
    for pool in (max_pool_2x2, avg_pool_2x2):
        with pytest.raises(ValueError, match="NHWC"):
            pool(jnp.zeros((4, 4, 3)))
        with pytest.raises(ValueError, match="at least 2x2"):
            pool(jnp.zeros((1, 1, 4, 3)))
