"""Tests for jaxcal.models: parameter counts, shapes, parity with the originals, train/eval."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcal.models import (
    MLP,
    ConvSpec,
    LeNet5,
    LeNetConfig,
    ResNet18,
    initializers,
    parameter_count,
)
from jaxcal.models.lenet import PRESETS
from jaxcal.models.resnet import BasicBlock

# Parity with torch: both sides compute the same float32 sums in different orders; 61k-parameter
# nets with O(1) activations agree to ~1e-6, so 1e-5 absolute and relative leaves margin.
TOL = 1e-5


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _torch_nets(torch):
    """The originals' networks in torch (NCHW), keyed by the matching preset."""
    nn, F = torch.nn, torch.nn.functional

    class BirdCat(nn.Module):  # 000: CIFAR bird vs cat LeNet5
        def __init__(self, bn=False):
            super().__init__()
            self.bn = bn
            self.conv1 = nn.Conv2d(3, 6, 5, bias=not bn)
            self.conv2 = nn.Conv2d(6, 16, 5, bias=not bn)
            if bn:
                self.bn1, self.bn2 = nn.BatchNorm2d(6), nn.BatchNorm2d(16)
            self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 1)

        def forward(self, x):
            n1 = self.bn1 if self.bn else nn.Identity()
            n2 = self.bn2 if self.bn else nn.Identity()
            x = F.max_pool2d(F.relu(n1(self.conv1(x))), 2)
            x = F.max_pool2d(F.relu(n2(self.conv2(x))), 2)
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc3(F.relu(self.fc2(x)))

    class MnistCNN(nn.Module):  # 002: conv 6 k5 pad 2 ... 10
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, 1, 2), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc3 = (
                nn.Linear(400, 120),
                nn.Linear(120, 84),
                nn.Linear(84, 10),
            )

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))

    class Classic(nn.Module):  # 003: classic LeNet-5 with average pooling and conv3
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
            self.conv3 = nn.Conv2d(16, 120, 5)
            self.fc1, self.fc2 = nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):
            x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
            x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.conv3(x)).flatten(1)
            return self.fc2(F.relu(self.fc1(x)))

    return {
        "birdcat": BirdCat(),
        "lenet5_bn": BirdCat(bn=True),
        "mnist_cnn": MnistCNN(),
        "classic": Classic(),
    }


def _load_torch_weights(model: LeNet5, net) -> None:
    """Copy a torch net's weights into `model` (OIHW -> HWIO; CHW-flatten -> HWC-flatten)."""
    convs = [m for m in net.modules() if m.__class__.__name__ == "Conv2d"]
    linears = [m for m in net.modules() if m.__class__.__name__ == "Linear"]
    for i, c in enumerate(convs, start=1):
        layer = getattr(model, f"conv{i}")
        layer.kernel[...] = jnp.asarray(c.weight.detach().numpy().transpose(2, 3, 1, 0))
        if c.bias is not None:
            layer.bias[...] = jnp.asarray(c.bias.detach().numpy())
    flax_linears = [getattr(model, f"fc{i}") for i in range(1, len(linears))] + [model.head]
    side, channels = model.config.feature_sizes()[-1], model.config.convs[-1].features
    for k, (lin, layer) in enumerate(zip(linears, flax_linears, strict=True)):
        w = lin.weight.detach().numpy()
        if k == 0:  # torch flattens [C, H, W], jaxcal flattens [H, W, C]
            w = w.reshape(-1, channels, side, side).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        layer.kernel[...] = jnp.asarray(w.T)
        layer.bias[...] = jnp.asarray(lin.bias.detach().numpy())


def test_mlp_matches_the_mnist_notebook(torch):
    model = MLP(rngs=nnx.Rngs(0))
    assert parameter_count(model) == 669_706
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    )
    assert sum(p.numel() for p in net.parameters()) == 669_706
    torch_linears = [net[0], net[2], net[4]]
    for layer, lin in zip([*model.hidden, model.head], torch_linears, strict=True):
        layer.kernel[...] = jnp.asarray(lin.weight.detach().numpy().T)
        layer.bias[...] = jnp.asarray(lin.bias.detach().numpy())
    x = np.random.default_rng(0).uniform(size=(5, 28, 28, 1)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x).reshape(5, -1)).numpy()
    out = model(jnp.asarray(x))
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, ref, rtol=TOL, atol=TOL)


def test_mlp_sizes_are_configurable_and_inputs_checked():
    model = MLP(in_features=32 * 32 * 3, hidden_features=(64,), num_classes=1, rngs=nnx.Rngs(0))
    assert parameter_count(model) == 3072 * 64 + 64 + 64 + 1
    assert model(jnp.zeros((3, 32, 32, 3))).shape == (3, 1)
    assert parameter_count(MLP(10, (), 2, rngs=nnx.Rngs(0))) == 22  # logistic regression
    with pytest.raises(ValueError, match="x must be"):
        MLP(rngs=nnx.Rngs(0))(jnp.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match="hidden_features"):
        MLP(784, (512, 0), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_classes"):
        MLP(784, (512,), 0, rngs=nnx.Rngs(0))


def test_torch_default_initialisation():
    # torch.nn.Linear(512, 512): weight and bias ~ U(-1/sqrt(512), 1/sqrt(512)); the sample std
    # of 262,144 uniform draws is within 1% of bound / sqrt(3).
    layer = MLP(rngs=nnx.Rngs(0)).hidden[1]
    bound = 1 / np.sqrt(512)
    kernel = np.asarray(layer.kernel[...])
    assert np.abs(kernel).max() <= bound and np.abs(layer.bias[...]).max() <= bound
    assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.01)
    assert np.abs(layer.bias[...]).max() > bound / 2  # the bias is not zero-initialised
    # torchvision ResNet convs: He normal with fan_out; a 3x3x512 conv -> std sqrt(2 / 4608).
    block = BasicBlock(256, 512, 2, rngs=nnx.Rngs(0))
    conv = np.asarray(block.conv2.kernel[...])
    assert conv.std() == pytest.approx(np.sqrt(2 / (3 * 3 * 512)), rel=0.01)
    assert np.all(np.asarray(block.bn1.scale[...]) == 1)
    assert np.all(np.asarray(block.bn1.bias[...]) == 0)


@pytest.mark.parametrize(
    "shape", [(5, 5, 3, 6), (400, 120), (84, 1), (3, 3, 64, 64), (1024, 2), (7,)]
)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_quickly_compiled_initialisers_equal_the_eager_ones_bit_for_bit(shape, dtype):
    """The torch-default initialisers are compiled at a lower XLA optimisation level; their
    values must not move: they are flax's variance scaling and `jax.random.uniform` run
    eagerly, bit for bit, whether called eagerly or inside a jit with a concrete key."""
    key = jax.random.key(3)
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
    eager_kernel = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    bound = 1.0 / fan_in**0.5
    pairs = [
        (initializers.TORCH_KERNEL_INIT, eager_kernel),
        (
            initializers.torch_bias_init(fan_in),
            lambda k, s, d: jax.random.uniform(k, s, d, -bound, bound),
        ),
    ]
    if len(shape) == 1:
        pairs = pairs[1:]  # flax's fan_in of a 1-d shape is undefined
    for quick, eager in pairs:
        expected = np.asarray(eager(key, shape, dtype)).view(
            np.uint16 if dtype == jnp.bfloat16 else np.uint32
        )
        for got in (
            quick(key, list(shape), dtype),
            jax.jit(lambda f=quick: f(key, shape, dtype))(),  # concrete key in a trace: inlined
        ):
            assert got.dtype == dtype and got.shape == shape
            bits = np.asarray(got).view(expected.dtype)
            np.testing.assert_array_equal(bits, expected)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_he_normal_equals_the_jitted_flax_initialiser_bit_for_bit(mode):
    """torchvision's kaiming_normal_ convolutions: flax's variance scaling compiled as one
    program at the lower level, bit for bit; eager flax (draw and scaling apart) to rounding."""
    flax_init = nnx.initializers.variance_scaling(2.0, mode, "normal")
    jitted = jax.jit(flax_init, static_argnums=(1, 2))
    for i, shape in enumerate([(7, 7, 3, 64), (3, 3, 128, 256), (1, 1, 512, 128)]):
        key = jax.random.key(i)
        got = np.asarray(initializers.he_normal(mode)(key, shape, jnp.float32))
        np.testing.assert_array_equal(got, np.asarray(jitted(key, shape, jnp.float32)))
        eager = np.asarray(flax_init(key, shape, jnp.float32))
        np.testing.assert_allclose(got, eager, rtol=1e-6, atol=1e-6 * np.abs(eager).max())
        fan = np.prod(shape[:-1]) if mode == "fan_in" else np.prod(shape[:2]) * shape[-1]
        assert got.std() == pytest.approx(np.sqrt(2.0 / fan), rel=0.05)


def test_models_built_inside_nnx_jit_trace_the_initialisers():
    """Traced keys inline the initialisers into the caller's program (no nested compile); the
    values then agree with the eager ones to float32 rounding (fused into other arithmetic)."""
    config = LeNetConfig.preset("birdcat")
    eager = nnx.state(LeNet5(config, rngs=nnx.Rngs(7)), nnx.Param)
    traced = nnx.state(nnx.jit(lambda: LeNet5(config, rngs=nnx.Rngs(7)))(), nnx.Param)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(traced), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("preset", PRESETS)
def test_lenet_presets_match_the_originals(torch, preset):
    cfg = LeNetConfig.preset(preset)
    model = LeNet5(cfg, rngs=nnx.Rngs(0))
    net = _torch_nets(torch)[preset].eval()
    assert parameter_count(model) == sum(p.numel() for p in net.parameters())
    _load_torch_weights(model, net)
    if cfg.batch_norm:  # random running statistics and affine, so eval mode is really tested
        gen = torch.Generator().manual_seed(0)
        for i, bn in enumerate([net.bn1, net.bn2], start=1):
            with torch.no_grad():
                for t, lo in ((bn.weight, 0.5), (bn.running_var, 0.5)):
                    t.copy_(torch.rand(t.shape, generator=gen) + lo)
                for t in (bn.bias, bn.running_mean):
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
            ours = getattr(model, f"bn{i}")
            ours.scale[...], ours.bias[...] = bn.weight.detach().numpy(), bn.bias.detach().numpy()
            ours.mean[...], ours.var[...] = bn.running_mean.numpy(), bn.running_var.numpy()
    model.eval()
    x = np.random.default_rng(1).normal(size=(4, cfg.image_size, cfg.image_size, cfg.in_channels))
    x = x.astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    out = model(jnp.asarray(x))
    assert out.shape == (4, cfg.num_classes)
    np.testing.assert_allclose(out, ref, rtol=TOL, atol=TOL)


def test_lenet_parameter_counts_known_values():
    counts = {p: parameter_count(LeNet5(LeNetConfig.preset(p), rngs=nnx.Rngs(0))) for p in PRESETS}
    # (a) 456 + 2,416 + 48,120 + 10,164 + 85; (b) convs lose their biases (22), BatchNorm adds
    # 2 x (6 + 16) = 44; (c) 156 + 2,416 + 48,120 + 10,164 + 850; (d) 156 + 2,416 + 48,120
    # + 10,164 + 850.
    assert counts == {
        "birdcat": 61_241,
        "lenet5_bn": 61_263,
        "mnist_cnn": 61_706,
        "classic": 61_706,
    }
    assert LeNet5.birdcat(rngs=nnx.Rngs(0)).head.kernel.shape == (84, 1)
    assert LeNet5.classic(rngs=nnx.Rngs(0)).conv3.kernel.shape == (5, 5, 16, 120)


@settings(max_examples=10, deadline=None)
@given(
    image_size=st.integers(8, 40),
    paddings=st.lists(st.integers(0, 2), min_size=1, max_size=3),
    pool=st.sampled_from(["max", "avg"]),
    num_classes=st.integers(1, 5),
)
def test_lenet_config_feature_sizes_agree_with_the_traced_model(
    image_size, paddings, pool, num_classes
):
    convs = tuple(ConvSpec(4 + i, padding=p, pool=i < 2) for i, p in enumerate(paddings))
    try:
        cfg = LeNetConfig(
            image_size=image_size, convs=convs, kernel_size=3, pool=pool, num_classes=num_classes
        )
    except ValueError as err:  # too small: the config must say so, never build a broken net
        assert "too small" in str(err)
        return
    model = nnx.eval_shape(lambda: LeNet5(cfg, rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32)
    assert model.fc1.kernel.shape[0] == cfg.flat_features
    logits = nnx.eval_shape(lambda m, v: m(v), model, x)
    assert logits.shape == (2, num_classes)


def test_lenet_config_refuses_bad_values():
    for field, value in [
        ("pool", "min"),
        ("dropout_rate", 1.0),
        ("num_classes", 0),
        ("convs", ()),
        ("hidden", (120, -1)),
        ("image_size", 8),
    ]:
        with pytest.raises(ValueError, match=field if field != "image_size" else "too small"):
            dataclasses.replace(LeNetConfig(), **{field: value})
    with pytest.raises(ValueError, match="name"):
        LeNetConfig.preset("alexnet")
    as_lists = LeNetConfig(convs=[ConvSpec(6), ConvSpec(16)], hidden=[120, 84])
    assert as_lists == LeNetConfig() and hash(as_lists) == hash(LeNetConfig())
    with pytest.raises(TypeError, match="config"):
        LeNet5({"num_classes": 2}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="x must be NHWC"):
        LeNet5.mnist_cnn(rngs=nnx.Rngs(0))(jnp.zeros((2, 1, 28, 28)))


def _with_xla_convolutions(model: LeNet5) -> LeNet5:
    """`model` with every convolution an nnx.Conv holding the same weights."""
    for i in range(1, len(model.config.convs) + 1):
        old = getattr(model, f"conv{i}")
        new = nnx.Conv(
            old.in_features,
            old.out_features,
            old.kernel_size,
            padding=old.padding,
            use_bias=old.use_bias,
            rngs=nnx.Rngs(0),
        )
        nnx.update(new, nnx.state(old, nnx.Param))
        setattr(model, f"conv{i}", new)
    return model


@pytest.mark.parametrize("preset", PRESETS)
def test_lenet_logits_and_gradients_equal_the_nnx_conv_model(preset):
    cfg = LeNetConfig.preset(preset)
    ours = LeNet5(cfg, rngs=nnx.Rngs(0))
    ref = _with_xla_convolutions(LeNet5(cfg, rngs=nnx.Rngs(0)))
    cpu = jax.default_backend() == "cpu"
    # On CPU, presets whose blocks are all conv -> ReLU -> max-pool run channel-major.
    assert ours._channel_major() == (cpu and preset in ("birdcat", "mnist_cnn"))
    assert not ref._channel_major()
    x = jax.random.normal(jax.random.key(2), (8, cfg.image_size, cfg.image_size, cfg.in_channels))
    y = jnp.arange(8) % cfg.num_classes

    @nnx.jit
    def loss_and_grads(model):
        def loss(model):
            logits = model(x, rngs=jax.random.key(3))
            if cfg.num_classes == 1:
                return jnp.mean(jnp.logaddexp(0.0, logits[:, 0]) - y * logits[:, 0])
            return jnp.mean(
                jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
            )

        return nnx.value_and_grad(loss)(model)

    ours.train()
    ref.train()
    (loss_ours, grads_ours), (loss_ref, grads_ref) = loss_and_grads(ours), loss_and_grads(ref)
    np.testing.assert_allclose(loss_ours, loss_ref, rtol=1e-5)
    # Float32 reorderings through two or three convolutions and pools: relative 1e-4.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max()),
        nnx.state(grads_ours, nnx.Param),
        nnx.state(grads_ref, nnx.Param),
    )


def test_lenet_bn_eval_uses_running_statistics_and_train_updates_them():
    model = LeNet5.lenet5_bn(rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (6, 32, 32, 3)) * 2 + 1
    # Train mode: BatchNorm normalises with batch statistics and moves the running ones by
    # momentum 0.9 from (0, 1): mean <- 0.1 * batch mean, var <- 0.9 + 0.1 * batch variance.
    conv1 = np.asarray(model.conv1(x))
    model.train()
    model(x, rngs=nnx.Rngs(dropout=3))
    np.testing.assert_allclose(model.bn1.mean[...], 0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(model.bn1.var[...], 0.9 + 0.1 * conv1.var(axis=(0, 1, 2)), rtol=1e-4)
    model.eval()
    stats = jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))
    batch = model(x)
    alone = model(x[2:3])
    np.testing.assert_allclose(alone, batch[2:3], rtol=1e-5, atol=1e-6)
    same = jax.tree.map(np.array_equal, stats, nnx.state(model, nnx.BatchStat))
    assert all(jax.tree.leaves(same))  # eval mode leaves the statistics alone
    np.testing.assert_array_equal(model(x, rngs=nnx.Rngs(5)), batch)  # no dropout in eval


def test_lenet_dropout_needs_rngs_in_train_mode_and_is_reproducible():
    model = LeNet5.lenet5_bn(rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    with pytest.raises(ValueError, match="rngs"):
        model(x)
    a = model(x, rngs=jax.random.key(1))
    b = model(x, rngs=jax.random.key(1))
    c = model(x, rngs=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Without dropout the model ignores rngs: same key or none, same logits.
    plain = LeNet5.birdcat(rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(plain(x), plain(x, rngs=jax.random.key(9)))


@pytest.fixture(scope="module")
def binary_resnet():
    """A real single-logit ResNet18 (initialising one is the slow part of these tests)."""
    return ResNet18(num_classes=1, rngs=nnx.Rngs(0))


@nnx.jit
def _resnet_outputs(model, x):
    return model.feature_maps(x), model.backbone(x), model(x)


def test_resnet18_counts_shapes_and_heads(binary_resnet):
    assert parameter_count(nnx.eval_shape(lambda: ResNet18(rngs=nnx.Rngs(0)))) == 11_689_512
    assert parameter_count(binary_resnet) == 11_689_512 - 512 * 1000 - 1000 + 512 + 1
    model = nnx.view(binary_resnet, use_running_average=True)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    stages, features, logits = _resnet_outputs(model, x)
    assert {k: v.shape for k, v in stages.items()} == {
        "stem": (2, 8, 8, 64),
        "layer1": (2, 8, 8, 64),
        "layer2": (2, 4, 4, 128),
        "layer3": (2, 2, 2, 256),
        "layer4": (2, 1, 1, 512),
    }
    assert features.shape == (2, 512) and logits.shape == (2, 1)
    np.testing.assert_allclose(features, stages["layer4"][:, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(logits, model.fc(features), rtol=1e-5, atol=1e-6)
    assert model.layer1[0].downsample is None and model.layer2[0].downsample is not None
    with pytest.raises(ValueError, match="num_classes"):
        ResNet18(num_classes=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="NHWC"):
        model(jnp.zeros((2, 3, 32, 32)))


def test_head_names_point_at_the_last_layer():
    models = [
        MLP(rngs=nnx.Rngs(0)),
        LeNet5.classic(rngs=nnx.Rngs(0)),
        nnx.eval_shape(lambda: ResNet18(num_classes=3, rngs=nnx.Rngs(0))),
    ]
    for model in models:
        head = getattr(model, model.head_name)
        assert isinstance(head, nnx.Linear)
        assert head.kernel.shape[-1] == (3 if isinstance(model, ResNet18) else 10)
    top_level = {name for name, _ in nnx.iter_children(models[2])}
    assert {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"} <= top_level


def test_resnet18_eval_uses_running_statistics_and_train_updates_them(binary_resnet):
    model = nnx.clone(binary_resnet)
    x = jax.random.normal(jax.random.key(2), (3, 32, 32, 3))
    other = x.at[1:].set(jax.random.normal(jax.random.key(3), (2, 32, 32, 3)) * 3)
    forward = nnx.jit(lambda m, v: m(v))
    conv1 = np.asarray(model.conv1(x))
    train_x = forward(model, x)  # train mode (the default, as in torch)
    np.testing.assert_allclose(
        model.bn1.mean[...], 0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-7
    )
    assert not np.allclose(model.layer4[1].bn2.var[...], 1.0)
    # Train mode: image 0's logits depend on the rest of its batch; eval mode is what fixes that.
    assert not np.allclose(forward(model, other)[0], train_x[0], atol=1e-3)
    model.eval()
    batch = forward(model, x)
    np.testing.assert_allclose(forward(model, x[:1])[0], batch[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(forward(model, other)[0], batch[0], rtol=1e-5, atol=1e-5)


def test_every_model_accepts_the_same_eval_and_train_views():
    models = [
        MLP(rngs=nnx.Rngs(0)),
        LeNet5.birdcat(rngs=nnx.Rngs(0)),
        LeNet5.lenet5_bn(rngs=nnx.Rngs(0)),
        nnx.eval_shape(lambda: ResNet18(num_classes=1, rngs=nnx.Rngs(0))),
    ]
    # Models without Dropout (or BatchNorm) have no such mode: the views say so, as jaxcal's.
    modes = {"deterministic": True, "use_running_average": True, "raise_if_not_found": False}
    for model in models:
        view = nnx.view(model, **modes)
        assert type(view) is type(model)
    bn = models[2]
    view = nnx.view(bn, **modes)
    assert view.bn1.use_running_average and view.dropout.deterministic
    assert not bn.bn1.use_running_average and not bn.dropout.deterministic  # original untouched
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
    np.testing.assert_allclose(view(x)[:1], view(x[:1]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="use_running_avg"):  # a typo is still caught
        nnx.view(models[0], use_running_avg=True)
