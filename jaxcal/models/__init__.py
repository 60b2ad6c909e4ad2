"""Image classifiers as Flax NNX modules and the torchvision ResNet18 weight conversion."""

from typing import Any

from jaxcal.models.lenet import ConvSpec, LeNet5, LeNetConfig
from jaxcal.models.mlp import MLP
from jaxcal.models.resnet import ResNet18
from jaxcal.models.summary import parameter_count, summary

_FROM_CONVERT = ("load_npz", "resnet18_from_torchvision", "save_npz")

__all__ = [
    "MLP",
    "ConvSpec",
    "LeNet5",
    "LeNetConfig",
    "ResNet18",
    "parameter_count",
    "summary",
    *_FROM_CONVERT,
]


def __getattr__(name: str) -> Any:
    # `convert` is imported on first use, not here, so that `python -m jaxcal.models.convert`
    # does not find it already imported (runpy warns about that).
    if name in _FROM_CONVERT:
        from jaxcal.models import convert

        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
