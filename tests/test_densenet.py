"""Tests for jaxcal.models.densenet and its conversion table (parity: test_densenet_parity)."""

import re

import jax
import numpy as np
import pytest
from densenet_reference import densenet121_shapes, random_state_dict
from flax import nnx

from jaxcal.models import DenseNet121, densenet121_from_torchvision, parameter_count

# Relative error = max |jax - torch| / max |torch|; both float32, different convolution
# algorithms (XLA vs oneDNN) through 120 convolutions. The spec's bound is 1e-4.
RTOL = 1e-4
PARAMETERS = 7_978_856  # torchvision's documented num_params for densenet121


def _rel_err(out, ref):
    return float(np.max(np.abs(np.asarray(out) - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def state_dict():
    return random_state_dict(densenet121_shapes(), seed=1)


@pytest.fixture(scope="module")
def converted(state_dict):
    return densenet121_from_torchvision(state_dict)


def test_layout_and_parameter_count():
    model = nnx.eval_shape(lambda: DenseNet121(rngs=nnx.Rngs(0)))
    assert parameter_count(model) == PARAMETERS
    assert DenseNet121.head_name == "classifier"
    assert model.classifier.kernel.shape == (1024, 1000)
    assert model.denseblock3.denselayer24.conv1.kernel.shape == (1, 1, 992, 128)
    assert model.transition2.conv.kernel.shape == (1, 1, 512, 256)
    with pytest.raises(ValueError, match="num_classes"):
        DenseNet121(0, rngs=nnx.Rngs(0))


def test_reference_shapes_equal_the_models(state_dict, converted):
    n = sum(v.size for k, v in state_dict.items() if "running" not in k and "batches" not in k)
    assert n == PARAMETERS
    assert converted.classifier.kernel.shape == (1024, 1000)
    assert converted.norm5.use_running_average  # returned in eval mode


def test_every_offending_key_is_named_in_one_line(state_dict):
    bad = dict(state_dict)
    del bad["features.denseblock2.denselayer7.conv2.weight"], bad["features.norm5.running_var"]
    bad["features.denseblock1.denselayer7.conv1.weight"] = np.zeros((128, 256, 1, 1), "f4")
    bad["features.transition4.norm.weight"] = np.zeros(1024, "f4")
    bad["features.conv0.weight"] = state_dict["features.conv0.weight"].transpose(2, 3, 1, 0)
    with pytest.raises(ValueError) as info:
        densenet121_from_torchvision(bad)
    message = str(info.value)
    assert "\n" not in message
    for words in (
        "DenseNet-121",
        "missing keys (2): ",
        "features.norm5.running_var",
        "features.denseblock2.denselayer7.conv2.weight",
        "unexpected keys (2): features.denseblock1.denselayer7.conv1.weight, "
        "features.transition4.norm.weight",
        "mis-shaped keys (1): features.conv0.weight: got (7, 7, 3, 64), expected (64, 3, 7, 7)",
    ):
        assert words in message
    with pytest.raises(
        ValueError, match=r"none of torchvision's DenseNet-121 keys .*'conv1\.weight'"
    ):
        densenet121_from_torchvision({"conv1.weight": np.zeros((64, 3, 7, 7), "f4")}, 1000)


def test_old_style_torchvision_keys_give_the_same_model(state_dict, converted):
    # torchvision's densenet121-a639ec97.pth spells "denselayer1.norm1" as "denselayer1.norm.1".
    old = {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
        for k, v in state_dict.items()
    }
    assert "features.denseblock1.denselayer1.norm.1.running_var" in old
    model = densenet121_from_torchvision(old)
    same = jax.tree.map(np.array_equal, nnx.state(model), nnx.state(converted))
    assert all(jax.tree.leaves(same))
    # Both spellings of one key at once is a duplicate, named as unexpected.
    both = dict(state_dict, **{"features.denseblock1.denselayer1.norm.1.weight": np.ones(64, "f4")})
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): .*denselayer1\.norm\.1\.weight"):
        densenet121_from_torchvision(both)


def test_fresh_head_keeps_the_backbone(state_dict, converted):
    no_stats = {k: v for k, v in state_dict.items() if "num_batches_tracked" not in k}
    model = densenet121_from_torchvision(no_stats, num_classes=1, rngs=nnx.Rngs(3))
    assert model.classifier.kernel.shape == (1024, 1)
    np.testing.assert_array_equal(model.classifier.bias[...], np.zeros(1))  # torchvision's init
    assert np.abs(model.classifier.kernel[...]).max() <= 1 / np.sqrt(1024)
    ours = {p: v for p, v in nnx.to_flat_state(nnx.state(model)) if p[0] != "classifier"}
    theirs = {p: v for p, v in nnx.to_flat_state(nnx.state(converted)) if p[0] != "classifier"}
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[p].get_value(), theirs[p].get_value()) for p in ours)
    backbone_only = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
    with pytest.raises(ValueError, match="num_classes"):
        densenet121_from_torchvision(backbone_only)
