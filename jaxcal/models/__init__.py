"""Image classifiers as Flax NNX modules, torchvision/timm weight conversion, pretrained weights."""

from typing import Any

from jaxcal.models.densenet import DenseNet121
from jaxcal.models.lenet import ConvSpec, LeNet5, LeNetConfig
from jaxcal.models.mlp import MLP
from jaxcal.models.resnet import ResNet18
from jaxcal.models.summary import parameter_count, summary
from jaxcal.models.weight_files import (
    WeightsUnavailableError,
    load_npz,
    load_safetensors,
    load_state_dict,
    save_npz,
)

_LAZY = {
    "densenet121_from_torchvision": "convert",
    "resnet18_from_torchvision": "convert",
    "pretrained": "hub",
    "PRETRAINED": "hub",
    "weights_file": "hub",
    "ARCHITECTURES": "weights",
    "WEIGHTS_HELP": "weights",
    "load_model": "weights",
}

__all__ = [
    "MLP",
    "ConvSpec",
    "DenseNet121",
    "LeNet5",
    "LeNetConfig",
    "ResNet18",
    "WeightsUnavailableError",
    "load_npz",
    "load_safetensors",
    "load_state_dict",
    "parameter_count",
    "save_npz",
    "summary",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    # `convert` (and `hub`, which imports it) is imported on first use, not here, so that
    # `python -m jaxcal.models.convert` does not find it already imported (runpy warns about that).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"jaxcal.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
