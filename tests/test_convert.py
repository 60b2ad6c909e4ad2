"""Tests for jaxcal.models.convert: parity with a torch ResNet18, key checks, .npz and the CLI."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcal.models import ResNet18, load_npz, resnet18_from_torchvision, save_npz
from jaxcal.models.convert import main as convert_main
from jaxcal.models.resnet import STAGES

torch = pytest.importorskip("torch")
tnn = torch.nn

# Relative error = max |jax - torch| / max |torch|. Both sides compute in float32 with different
# convolution algorithms (XLA vs oneDNN) summing in different orders: about 1e-6 relative per
# layer, growing through 20 layers to ~1e-6..1e-5. The spec's bound is 1e-4.
RTOL = 1e-4


class TorchBasicBlock(tnn.Module):
    """torchvision.models.resnet.BasicBlock, with its parameter names."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = tnn.Sequential(
                tnn.Conv2d(inplanes, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TorchResNet18(tnn.Module):
    """torchvision.models.resnet18, written in plain torch.nn (torchvision cannot load here)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        widths, inplanes = (64, 128, 256, 512), 64
        for i, planes in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            blocks = [TorchBasicBlock(inplanes, planes, stride), TorchBasicBlock(planes, planes, 1)]
            setattr(self, f"layer{i}", tnn.Sequential(*blocks))
            inplanes = planes
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512, num_classes)

    def stages(self, x):
        out = {"stem": self.maxpool(self.relu(self.bn1(self.conv1(x))))}
        h = out["stem"]
        for name in STAGES[1:]:
            h = getattr(self, name)(h)
            out[name] = h
        return out

    def forward(self, x):
        h = self.stages(x)["layer4"]
        return self.fc(torch.flatten(self.avgpool(h), 1))


def randomised_state_dict(model, seed):
    """The model's state_dict with every weight AND every BatchNorm statistic redrawn.

    Scales keep activations O(1) through all 8 blocks so that relative errors mean something.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(int(torch.randint(1, 1000, (), generator=gen)))
        elif value.ndim == 4:
            fan_in = value[0].numel()
            out[key] = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key == "fc.weight":
            out[key] = torch.randn(value.shape, generator=gen) / value.shape[1] ** 0.5
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) * 1.5 + 0.5
        elif key.endswith("weight"):  # BatchNorm scale
            out[key] = torch.rand(value.shape, generator=gen) * 0.5 + 0.5
        else:  # BatchNorm bias / running_mean, fc.bias
            out[key] = torch.randn(value.shape, generator=gen) * 0.2
    return out


def _rel_err(out, ref):
    return float(np.max(np.abs(np.asarray(out) - ref)) / np.max(np.abs(ref)))


@nnx.jit
def _stages_and_logits(model, x):
    return model.feature_maps(x), model(x)


def _torch_stages_and_logits(model, x_nhwc):
    with torch.no_grad():
        x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
        stages = {k: v.permute(0, 2, 3, 1).numpy() for k, v in model.stages(x).items()}
        return stages, model(x).numpy()


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    model = TorchResNet18(1000)
    model.load_state_dict(randomised_state_dict(model, seed=1), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def state_dict(torch_model):
    return torch_model.state_dict()


@pytest.fixture(scope="module")
def converted(state_dict):
    return resnet18_from_torchvision(state_dict)


def test_torch_reference_has_torchvision_layout(torch_model, state_dict):
    assert sum(p.numel() for p in torch_model.parameters()) == 11_689_512
    # torchvision's resnet18 state_dict: 62 parameters + 20 BatchNorms x 3 buffers.
    assert len(state_dict) == 122
    for key in ("conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var"):
        assert key in state_dict
    assert tuple(state_dict["layer3.0.downsample.1.num_batches_tracked"].shape) == ()


@pytest.mark.parametrize("size", [224, 64])
def test_logits_and_every_stage_match_torch(torch_model, converted, size):
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
    ref_stages, ref_logits = _torch_stages_and_logits(torch_model, x)
    stages, logits = _stages_and_logits(converted, jnp.asarray(x))
    assert logits.shape == (2, 1000)
    assert np.abs(ref_logits).max() > 0.1  # a meaningful scale, not a vanished signal
    for name in STAGES:
        assert stages[name].shape == ref_stages[name].shape, name
        assert _rel_err(stages[name], ref_stages[name]) < RTOL, name
    assert _rel_err(logits, ref_logits) < RTOL
    # Eval mode: the logits of one image do not depend on the rest of the batch.
    np.testing.assert_allclose(converted(jnp.asarray(x[:1])), logits[:1], rtol=1e-5, atol=1e-5)


def test_single_logit_head_from_state_dict():
    torch.manual_seed(2)
    model = TorchResNet18(num_classes=1)
    model.load_state_dict(randomised_state_dict(model, seed=3), strict=True)
    model.eval()
    sd = model.state_dict()
    assert tuple(sd["fc.weight"].shape) == (1, 512)
    converted = resnet18_from_torchvision(sd)
    assert converted.fc.kernel.shape == (512, 1)
    x = np.random.default_rng(5).normal(size=(3, 64, 64, 3)).astype(np.float32)
    _, ref = _torch_stages_and_logits(model, x)
    assert _rel_err(_stages_and_logits(converted, jnp.asarray(x))[1], ref) < RTOL


def test_new_num_classes_gets_fresh_head_and_loaded_backbone(torch_model, state_dict, converted):
    model = resnet18_from_torchvision(state_dict, num_classes=2, rngs=nnx.Rngs(7))
    assert model.fc.kernel.shape == (512, 2) and model.fc.bias.shape == (2,)
    bound = 1 / np.sqrt(512)  # torch.nn.Linear default init
    assert np.abs(model.fc.kernel[...]).max() <= bound and np.abs(model.fc.bias[...]).max() <= bound
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 64, 64, 3)).astype(np.float32))
    stages, logits = _stages_and_logits(model, x)
    np.testing.assert_array_equal(stages["layer4"], _stages_and_logits(converted, x)[0]["layer4"])
    feats = np.asarray(stages["layer4"]).mean(axis=(1, 2))  # the backbone's [B, 512] output
    expected = feats @ np.asarray(model.fc.kernel[...]) + np.asarray(model.fc.bias[...])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    # Backbone-only state_dicts are accepted when a head size is given.
    backbone_only = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    model2 = resnet18_from_torchvision(backbone_only, num_classes=2, rngs=nnx.Rngs(7))
    np.testing.assert_array_equal(_stages_and_logits(model2, x)[1], logits)


def test_numpy_and_torch_values_give_identical_models(state_dict, converted):
    as_numpy = {k: v.numpy() for k, v in state_dict.items()}
    model = resnet18_from_torchvision(as_numpy)
    same = jax.tree.map(np.array_equal, nnx.state(model), nnx.state(converted))
    assert all(jax.tree.leaves(same))
    assert model.bn1.use_running_average  # returned in eval mode


def test_every_offending_key_is_named_in_one_error(state_dict):
    bad = dict(state_dict)
    del bad["layer3.1.conv2.weight"], bad["bn1.running_var"]
    bad["layer5.0.conv1.weight"] = torch.zeros(8, 8, 3, 3)
    bad["classifier.weight"] = torch.zeros(10, 512)
    bad["layer1.0.downsample.0.weight"] = torch.zeros(64, 64, 1, 1)  # layer1 has no downsample
    bad["fc.bias"] = torch.zeros(999)
    bad["conv1.weight"] = state_dict["conv1.weight"].permute(2, 3, 1, 0)  # already HWIO
    with pytest.raises(ValueError) as info:
        resnet18_from_torchvision(bad)
    message = str(info.value)
    for key in (
        "missing keys (2)",
        "layer3.1.conv2.weight",
        "bn1.running_var",
        "unexpected keys (3)",
        "layer5.0.conv1.weight",
        "classifier.weight",
        "layer1.0.downsample.0.weight",
        "mis-shaped keys (2)",
        "fc.bias: got (999,), expected (1000,)",
        "conv1.weight: got (7, 7, 3, 64), expected (64, 3, 7, 7)",
    ):
        assert key in message


def test_bad_arguments_are_refused(state_dict):
    with pytest.raises(TypeError, match="state_dict"):
        resnet18_from_torchvision([("fc.weight", np.zeros((2, 512)))])
    with pytest.raises(ValueError, match="num_classes"):
        resnet18_from_torchvision(state_dict, num_classes=0)
    no_fc = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    with pytest.raises(ValueError, match="num_classes"):
        resnet18_from_torchvision(no_fc)
    integer = dict(state_dict, **{"bn1.weight": torch.ones(64, dtype=torch.int64)})
    with pytest.raises(TypeError, match="bn1.weight"):
        resnet18_from_torchvision(integer)


def test_spatially_transposed_kernels_pass_shape_checks_but_fail_parity(torch_model, converted):
    # OIHW -> HWIO needs transpose(2, 3, 1, 0); transpose(3, 2, 1, 0) gives [kw, kh, in, out],
    # the same shape for square kernels. Only a numerical comparison catches it.
    x = np.random.default_rng(9).normal(size=(2, 64, 64, 3)).astype(np.float32)
    _, ref = _torch_stages_and_logits(torch_model, x)
    graphdef, state = nnx.split(converted)
    swapped = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.swapaxes(v, 0, 1) if v.ndim == 4 else v, state
    )
    wrong = nnx.merge(graphdef, swapped)
    assert _rel_err(_stages_and_logits(wrong, jnp.asarray(x))[1], ref) > 1e-2


def test_npz_round_trip_keeps_keys_and_values(tmp_path, state_dict):
    path = tmp_path / "r.npz"
    save_npz(state_dict, path)
    loaded = load_npz(path)
    assert list(loaded) == list(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(loaded[key], value.numpy())
    with pytest.raises(ValueError, match="absent.npz' does not exist"):
        load_npz(tmp_path / "absent.npz")


def test_cli_converts_and_npz_loads_without_torch(tmp_path, torch_model, state_dict, converted):
    pth, npz, logits_path = tmp_path / "r.pth", tmp_path / "r.npz", tmp_path / "logits.npy"
    torch.save({"state_dict": state_dict, "epoch": 3}, pth)
    cli = [sys.executable, "-m", "jaxcal.models.convert", str(pth), str(npz)]
    result = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr
    assert "1000 classes" in result.stdout
    x = np.random.default_rng(4).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    # A fresh interpreter loads the .npz and computes logits with torch never imported.
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from jaxcal.models import load_npz, resnet18_from_torchvision
        from flax import nnx
        model = resnet18_from_torchvision(load_npz({str(npz)!r}))
        logits = nnx.jit(lambda m, x: m(x))(model, np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(logits_path)!r}, np.asarray(logits))
        assert "torch" not in sys.modules, "torch was imported"
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # The same jitted program on the same weights: bit-identical logits.
    np.testing.assert_array_equal(np.load(logits_path), nnx.jit(lambda m, x: m(x))(converted, x))


def test_cli_rejects_bad_checkpoints_with_a_message(tmp_path, torch_model, state_dict, capsys):
    out = tmp_path / "o.npz"
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state_dict.items() if k != "layer2.1.bn1.bias"}, partial)
    whole_model = tmp_path / "model.pth"
    torch.save(torch_model, whole_model)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    for checkpoint, code, words in [
        (partial, 1, "missing keys (1): layer2.1.bn1.bias"),
        (whole_model, 1, "save model.state_dict()"),
        (tensor, 1, "holds a Tensor"),
        (tmp_path / "absent.pth", 2, "is not a file"),
    ]:
        with pytest.raises(SystemExit) as info:
            convert_main([str(checkpoint), str(out)])
        assert info.value.code == code
        assert words in capsys.readouterr().err
    assert not out.exists()


def test_resnet18_param_count_matches_torch(torch_model):
    model = nnx.eval_shape(lambda: ResNet18(1000, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == sum(p.numel() for p in torch_model.parameters())
