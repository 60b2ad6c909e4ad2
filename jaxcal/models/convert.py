"""torchvision ResNet18 state_dict -> jaxcal `ResNet18`, by a key table; `.npz` I/O and a CLI.

Convert once where torch is installed, then load the `.npz` anywhere (no torch needed):

    python -m jaxcal.models.convert resnet18.pth resnet18.npz

    from jaxcal.models import load_npz, resnet18_from_torchvision
    model = resnet18_from_torchvision(load_npz("resnet18.npz"), num_classes=1)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcal.models.mlp import dense
from jaxcal.models.resnet import ResNet18

# Layout changes, as permutations for `np.transpose`.
CONV_KERNEL = (2, 3, 1, 0)
"""torch conv weight [out, in, kh, kw] (OIHW) -> Flax kernel [kh, kw, in, out] (HWIO)."""
LINEAR_KERNEL = (1, 0)
"""torch Linear weight [out, in] -> Flax kernel [in, out]."""
VECTOR = (0,)
"""Biases and BatchNorm vectors [C] keep their layout."""


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """One row of a conversion table.

    `torch` and `flax` are templates whose `{name}` fields match digits; the same fields must
    appear on both sides, e.g. torch "layer{L}.{B}.conv{N}.weight" <-> Flax
    "layer{L}/{B}/conv{N}/kernel" (Flax paths are "/"-joined, list indices are numbers).

    Attributes:
        torch: template of the torch state_dict key.
        flax: template of the Flax state path.
        axes: the permutation (`np.transpose`) from the torch layout to the Flax layout.
    """

    torch: str
    flax: str
    axes: tuple[int, ...]


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>\\d+)" for i, part in enumerate(parts)
    )
    return re.compile(regex)


_BN_FIELDS = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_BN_MODULES = (
    ("bn1", "bn1"),
    ("layer{L}.{B}.bn{N}", "layer{L}/{B}/bn{N}"),
    ("layer{L}.{B}.downsample.1", "layer{L}/{B}/downsample/layers/1"),
)

TORCHVISION_RESNET18: tuple[KeyRule, ...] = (
    KeyRule("conv1.weight", "conv1/kernel", CONV_KERNEL),
    KeyRule("layer{L}.{B}.conv{N}.weight", "layer{L}/{B}/conv{N}/kernel", CONV_KERNEL),
    KeyRule(
        "layer{L}.{B}.downsample.0.weight", "layer{L}/{B}/downsample/layers/0/kernel", CONV_KERNEL
    ),
    KeyRule("fc.weight", "fc/kernel", LINEAR_KERNEL),
    KeyRule("fc.bias", "fc/bias", VECTOR),
    *(
        KeyRule(f"{torch_module}.{torch_field}", f"{flax_module}/{flax_field}", VECTOR)
        for torch_module, flax_module in _BN_MODULES
        for torch_field, flax_field in _BN_FIELDS.items()
    ),
)
"""torchvision ResNet18 key -> `ResNet18` state path. `num_batches_tracked` keys are dropped."""

_DROPPED = re.compile(r"(.+\.)?num_batches_tracked")
_COMPILED = tuple(
    (_template_regex(r.torch), _template_regex(r.flax), r) for r in TORCHVISION_RESNET18
)

Path = tuple[str | int, ...]


def _to_flax_path(key: str) -> tuple[Path, KeyRule] | None:
    for torch_regex, _, rule in _COMPILED:
        match = torch_regex.fullmatch(key)
        if match:
            path_str = rule.flax.format(**match.groupdict())
            path = tuple(int(p) if p.isdigit() else p for p in path_str.split("/"))
            return path, rule
    return None


def _to_torch_key(path: Path) -> str:
    path_str = "/".join(map(str, path))
    for _, flax_regex, rule in _COMPILED:
        match = flax_regex.fullmatch(path_str)
        if match:
            return rule.torch.format(**match.groupdict())
    return path_str


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch itself is never imported here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _float_array(value: Any, key: str) -> np.ndarray:
    array = _as_numpy(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"state_dict[{key!r}] must be a floating-point array, got {array.dtype}")
    return array


def _fc_classes(state_dict: Mapping[str, Any]) -> int | None:
    weight = state_dict.get("fc.weight")
    shape = getattr(weight, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 2 else None


def resnet18_from_torchvision(
    state_dict: Mapping[str, Any],
    num_classes: int | None = None,
    *,
    rngs: nnx.Rngs | None = None,
) -> ResNet18:
    """A `ResNet18` holding the weights and BatchNorm statistics of a torchvision state_dict.

    Every key goes through `TORCHVISION_RESNET18` onto an abstract model (`nnx.eval_shape`) and
    is shape-checked there. The model is returned in eval mode (BatchNorm uses the running
    statistics); its `model(x)` on NHWC `x` equals torchvision's eval-mode logits on NCHW `x`
    (relative error ~1e-6 on CPU). On GPUs and TPUs, JAX's default float32 precision for
    convolutions may be TF32 / bfloat16 passes, ~1e-3 relative; wrap the call in
    `jax.default_matmul_precision("float32")` where exact parity matters.

    Args:
        state_dict: torchvision key -> array (numpy arrays, torch tensors or anything
            `np.asarray` takes), e.g. `torch.load("resnet18.pth")` or `load_npz(...)`.
        num_classes: None keeps the state_dict's head (`fc.weight` [K, 512] gives K classes).
            A different value builds a freshly initialised [512, num_classes] head, loads the
            backbone and ignores the state_dict's `fc.*`.
        rngs: keys for the fresh head; defaults to `nnx.Rngs(0)`.

    Returns:
        The loaded `ResNet18`, in eval mode.

    Raises:
        TypeError: `state_dict` is not a mapping with string keys, or a value is not floating.
        ValueError: `num_classes` is not a positive int, or keys are missing, unexpected or
            mis-shaped (all of them are named in one message).
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise TypeError(
            f"state_dict must be a mapping of str keys to arrays, got {type(state_dict).__name__}"
        )
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}")
    source_classes = _fc_classes(state_dict)
    if num_classes is None:
        if source_classes is None:
            raise ValueError(
                "state_dict has no 2-d 'fc.weight' to take num_classes from; pass num_classes"
            )
        num_classes = source_classes
    fresh_head = num_classes != source_classes

    abstract = nnx.eval_shape(lambda: ResNet18(num_classes, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    targets = dict(nnx.to_flat_state(abstract_state))

    arrays, unexpected, misshaped, present = {}, [], [], set()
    for key, value in state_dict.items():
        if _DROPPED.fullmatch(key) or (fresh_head and key in ("fc.weight", "fc.bias")):
            continue
        found = _to_flax_path(key)
        if found is None or found[0] not in targets:
            unexpected.append(key)
            continue
        path, rule = found
        present.add(path)
        array = _float_array(value, key)
        target = targets[path]
        expected = tuple(target.shape[i] for i in np.argsort(rule.axes))
        if array.shape != expected:
            misshaped.append(f"{key}: got {tuple(array.shape)}, expected {expected}")
            continue
        arrays[path] = jnp.asarray(array.transpose(rule.axes), dtype=target.dtype)
    head_paths = {p for p in targets if p[0] == "fc"} if fresh_head else set()
    missing = [_to_torch_key(p) for p in targets if p not in present and p not in head_paths]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            "state_dict does not match torchvision's ResNet18:\n  " + "\n  ".join(problems)
        )

    if fresh_head:
        head = dense(512, num_classes, rngs=nnx.Rngs(0) if rngs is None else rngs)
        for path, variable in nnx.to_flat_state(nnx.state(head)):
            arrays[("fc", *path)] = variable.get_value()
    state = nnx.from_flat_state([(p, v.replace(arrays[p])) for p, v in targets.items()])
    model = nnx.merge(graphdef, state)
    model.eval()
    return model


def save_npz(state_dict: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a state_dict (torch key -> array, torch layouts kept) to an uncompressed `.npz`.

    Args:
        state_dict: str key -> numpy array or torch tensor.
        path: the output file.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise TypeError(
            f"state_dict must be a mapping of str keys to arrays, got {type(state_dict).__name__}"
        )
    arrays = {key: _as_numpy(value) for key, value in state_dict.items()}
    for key, array in arrays.items():
        if array.dtype == object:
            raise TypeError(f"state_dict[{key!r}] must be an array, got {type(state_dict[key])}")
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a `.npz` written by `save_npz` into key -> numpy array (torch is not needed).

    Args:
        path: the `.npz` file.

    Returns:
        The state_dict, with numpy arrays, ready for `resnet18_from_torchvision`.
    """
    if not os.path.isfile(path):
        raise ValueError(f"path {os.fspath(path)!r} is not a file")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _load_torch_state_dict(path: str) -> dict[str, Any]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} is not a plain state_dict (torch.load with weights_only=True refused it: "
            f"{str(err).splitlines()[0]}); save model.state_dict(), not the model"
        ) from err
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"{path} holds a {type(loaded).__name__}, not a state_dict (or a "
            "{'state_dict': ...} wrapper); save model.state_dict(), not the model"
        )
    return dict(loaded)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m jaxcal.models.convert resnet18.pth out.npz`: check and convert to `.npz`."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxcal.models.convert",
        description="Convert a torchvision ResNet18 checkpoint (.pth) into an .npz that jaxcal "
        "loads without torch.",
    )
    parser.add_argument("checkpoint", help="torch.save'd state_dict (or {'state_dict': ...})")
    parser.add_argument("output", help="the .npz to write")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        parser.error(f"checkpoint {args.checkpoint!r} is not a file")
    try:
        state_dict = _load_torch_state_dict(args.checkpoint)
        model = resnet18_from_torchvision(state_dict)
    except (TypeError, ValueError) as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    save_npz(state_dict, args.output)
    print(
        f"wrote {args.output}: {len(state_dict)} arrays, ResNet18 with "
        f"{model.num_classes} classes checked"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
