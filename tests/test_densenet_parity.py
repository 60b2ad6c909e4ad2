"""Parity of jaxcal's DenseNet121 with a plain torch.nn DenseNet-121 holding the same weights."""

import collections

import jax.numpy as jnp
import numpy as np
import pytest
from densenet_reference import densenet121_shapes, random_state_dict
from flax import nnx

from jaxcal.models import densenet121_from_torchvision
from jaxcal.models.densenet import STAGES

# Relative error = max |jax - torch| / max |torch|; both float32, different convolution
# algorithms (XLA vs oneDNN) summing in different orders through 120 convolutions. The spec's
# bound is 1e-4.
RTOL = 1e-4
PARAMETERS = 7_978_856

torch = pytest.importorskip("torch")
tnn = torch.nn


class TorchDenseLayer(tnn.Module):
    """torchvision.models.densenet._DenseLayer (memory_efficient=False, drop_rate=0)."""

    def __init__(self, inp):
        super().__init__()
        self.norm1 = tnn.BatchNorm2d(inp)
        self.relu1 = tnn.ReLU(inplace=True)
        self.conv1 = tnn.Conv2d(inp, 4 * 32, 1, 1, bias=False)
        self.norm2 = tnn.BatchNorm2d(4 * 32)
        self.relu2 = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(4 * 32, 32, 3, 1, 1, bias=False)

    def forward(self, features):
        h = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(h)))


class TorchDenseBlock(tnn.ModuleDict):
    def __init__(self, layers, inp):
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", TorchDenseLayer(inp + i * 32))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class TorchTransition(tnn.Sequential):
    def __init__(self, inp):
        super().__init__()
        self.add_module("norm", tnn.BatchNorm2d(inp))
        self.add_module("relu", tnn.ReLU(inplace=True))
        self.add_module("conv", tnn.Conv2d(inp, inp // 2, 1, 1, bias=False))
        self.add_module("pool", tnn.AvgPool2d(2, 2))


class TorchDenseNet121(tnn.Module):
    """torchvision.models.densenet121 in plain torch.nn (torchvision cannot load here)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        stem = [
            ("conv0", tnn.Conv2d(3, 64, 7, 2, 3, bias=False)),
            ("norm0", tnn.BatchNorm2d(64)),
            ("relu0", tnn.ReLU(inplace=True)),
            ("pool0", tnn.MaxPool2d(3, 2, 1)),
        ]
        self.features = tnn.Sequential(collections.OrderedDict(stem))
        width = 64
        for b, layers in enumerate((6, 12, 24, 16), start=1):
            self.features.add_module(f"denseblock{b}", TorchDenseBlock(layers, width))
            width += layers * 32
            if b < 4:
                self.features.add_module(f"transition{b}", TorchTransition(width))
                width //= 2
        self.features.add_module("norm5", tnn.BatchNorm2d(width))
        self.classifier = tnn.Linear(width, num_classes)

    def stages(self, x):
        out, h = {}, x
        for name, module in self.features.named_children():
            h = module(h)
            if name == "pool0":
                out["stem"] = h
            elif name in STAGES:
                out[name] = h
        return out

    def forward(self, x):
        h = torch.relu(self.stages(x)["norm5"])
        return self.classifier(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1))


@pytest.fixture(scope="module")
def state_dict():
    return random_state_dict(densenet121_shapes(), seed=2)


@pytest.fixture(scope="module")
def converted(state_dict):
    return densenet121_from_torchvision(state_dict)


def _rel_err(out, ref):
    return float(np.max(np.abs(np.asarray(out) - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def torch_model(state_dict):
    model = TorchDenseNet121()
    as_torch = {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}
    model.load_state_dict(as_torch, strict=True)  # the hand-written keys are torchvision's
    return model.eval()


@nnx.jit
def _stages_and_logits(model, x):
    return model.feature_maps(x), model(x)


def test_torch_reference_has_torchvision_layout(torch_model):
    assert sum(p.numel() for p in torch_model.parameters()) == PARAMETERS
    shapes = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
    assert shapes == densenet121_shapes()


@pytest.mark.parametrize("size", [224, 64])
def test_logits_and_every_stage_match_torch(torch_model, converted, size):
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        xt = torch.from_numpy(x).permute(0, 3, 1, 2)
        ref_stages = {k: v.permute(0, 2, 3, 1).numpy() for k, v in torch_model.stages(xt).items()}
        ref_logits = torch_model(xt).numpy()
    stages, logits = _stages_and_logits(converted, jnp.asarray(x))
    assert logits.shape == (2, 1000)
    assert np.abs(ref_logits).max() > 0.1  # a meaningful scale, not a vanished signal
    for name in STAGES:
        assert stages[name].shape == ref_stages[name].shape, name
        assert _rel_err(stages[name], ref_stages[name]) < RTOL, name
    assert _rel_err(logits, ref_logits) < RTOL
