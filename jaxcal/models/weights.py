"""A pretrainable model by name, with random, ImageNet (hub) or file weights and a new head."""

from __future__ import annotations

import os

from flax import nnx

from jaxcal.models.convert import LAYOUTS, from_torch
from jaxcal.models.hub import pretrained
from jaxcal.models.weight_files import SUFFIXES, load_state_dict

ARCHITECTURES = tuple(sorted(LAYOUTS))
"""Names `load_model` takes: "densenet121", "resnet18"."""
WEIGHTS_HELP = (
    "'imagenet' (torchvision's ImageNet weights from the Hugging Face hub, cached; needs "
    "pip install 'jaxcal[hub]'), a weights FILE (.safetensors or .npz; .pth needs torch), or "
    "'random' for random initialisation"
)


def load_model(
    name: str,
    weights: str | os.PathLike[str],
    num_classes: int,
    *,
    seed: int = 0,
    cache_dir: str | None = None,
) -> nnx.Module:
    """`name`'s model with `weights` and a freshly initialised `num_classes` head.

    Args:
        name: one of `ARCHITECTURES`.
        weights: "random", "imagenet" (`pretrained`, from the hub cache or the hub) or the
            path of a torchvision/timm state_dict file (`load_state_dict`).
        num_classes: width of the head; a head of another width in the weights is replaced.
        seed: seeds the head (and every parameter with "random").
        cache_dir: the hub cache for "imagenet"; None uses the hub's.

    Returns:
        The model; loaded weights come back in eval mode, random ones in train mode (as the
        constructors leave them).

    Raises:
        ValueError: unknown `name`, a missing or unreadable file, or weights that do not match
            the model (one line naming the keys).
        WeightsUnavailableError: "imagenet" offline or without the hub extra, or a `.pth`
            without torch (one line saying what to do instead).
    """
    if name not in LAYOUTS:
        raise ValueError(f"name must be one of {list(ARCHITECTURES)}, got {name!r}")
    rngs = nnx.Rngs(seed)
    if weights == "random":
        return LAYOUTS[name].build(num_classes, rngs)
    if weights == "imagenet":
        return pretrained(name, num_classes, rngs=rngs, cache_dir=cache_dir)
    if not isinstance(weights, str | os.PathLike) or not str(weights).lower().endswith(SUFFIXES):
        raise ValueError(
            f"weights must be 'random', 'imagenet' or a file ending in {', '.join(SUFFIXES)}, "
            f"got {weights!r}"
        )
    return from_torch(load_state_dict(weights), LAYOUTS[name], num_classes, rngs=rngs)
