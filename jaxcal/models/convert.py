"""torchvision/timm state_dicts -> jaxcal `ResNet18` / `DenseNet121`, by key tables; and a CLI.

Convert once where torch is installed, then load the `.npz` anywhere (no torch needed):

    python -m jaxcal.models.convert resnet18.pth resnet18.npz
    python -m jaxcal.models.convert --model densenet121 densenet121.pth densenet121.npz

    from jaxcal.models import load_npz, resnet18_from_torchvision
    model = resnet18_from_torchvision(load_npz("resnet18.npz"), num_classes=1)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcal.models import densenet
from jaxcal.models.densenet import DenseNet121
from jaxcal.models.mlp import dense
from jaxcal.models.resnet import ResNet18
from jaxcal.models.weight_files import (
    WeightsUnavailableError,
    as_numpy,
    load_state_dict,
    save_npz,
)

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


@dataclasses.dataclass(frozen=True)
class TorchLayout:
    """How one architecture's torch state_dict maps onto its jaxcal model.

    Attributes:
        name: the architecture, for messages ("ResNet18").
        rules: the key table.
        head: the head's torch key prefix, also its top-level Flax name ("fc", "classifier").
        build: num_classes, rngs -> the model.
        new_head: num_classes, rngs -> a freshly initialised head module.
        renames: (regex, replacement) pairs applied to a torch key before the table, for older
            spellings of the same keys.
    """

    name: str
    rules: tuple[KeyRule, ...]
    head: str
    build: Callable[[int, nnx.Rngs], nnx.Module]
    new_head: Callable[[int, nnx.Rngs], nnx.Module]
    renames: tuple[tuple[str, str], ...] = ()


_BN_FIELDS = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _batch_norm_rules(modules: Sequence[tuple[str, str]]) -> tuple[KeyRule, ...]:
    return tuple(
        KeyRule(f"{torch_module}.{torch_field}", f"{flax_module}/{flax_field}", VECTOR)
        for torch_module, flax_module in modules
        for torch_field, flax_field in _BN_FIELDS.items()
    )


TORCHVISION_RESNET18: tuple[KeyRule, ...] = (
    KeyRule("conv1.weight", "conv1/kernel", CONV_KERNEL),
    KeyRule("layer{L}.{B}.conv{N}.weight", "layer{L}/{B}/conv{N}/kernel", CONV_KERNEL),
    KeyRule(
        "layer{L}.{B}.downsample.0.weight", "layer{L}/{B}/downsample/layers/0/kernel", CONV_KERNEL
    ),
    KeyRule("fc.weight", "fc/kernel", LINEAR_KERNEL),
    KeyRule("fc.bias", "fc/bias", VECTOR),
    *_batch_norm_rules(
        [
            ("bn1", "bn1"),
            ("layer{L}.{B}.bn{N}", "layer{L}/{B}/bn{N}"),
            ("layer{L}.{B}.downsample.1", "layer{L}/{B}/downsample/layers/1"),
        ]
    ),
)
"""torchvision (and timm) ResNet18 key -> `ResNet18` state path. `num_batches_tracked` keys are
dropped."""

TORCHVISION_DENSENET121: tuple[KeyRule, ...] = (
    KeyRule("features.conv0.weight", "conv0/kernel", CONV_KERNEL),
    KeyRule(
        "features.denseblock{D}.denselayer{L}.conv{N}.weight",
        "denseblock{D}/denselayer{L}/conv{N}/kernel",
        CONV_KERNEL,
    ),
    KeyRule("features.transition{T}.conv.weight", "transition{T}/conv/kernel", CONV_KERNEL),
    KeyRule("classifier.weight", "classifier/kernel", LINEAR_KERNEL),
    KeyRule("classifier.bias", "classifier/bias", VECTOR),
    *_batch_norm_rules(
        [
            ("features.norm0", "norm0"),
            ("features.denseblock{D}.denselayer{L}.norm{N}", "denseblock{D}/denselayer{L}/norm{N}"),
            ("features.transition{T}.norm", "transition{T}/norm"),
            ("features.norm5", "norm5"),
        ]
    ),
)
"""torchvision (and timm) DenseNet-121 key -> `DenseNet121` state path."""

# torchvision's own densenet121-a639ec97.pth predates its module names: "denselayer1.norm.1"
# for today's "denselayer1.norm1" (torchvision and timm rename these keys when loading it).
_OLD_DENSE_LAYER_KEY = (r"(.*\.denselayer\d+\.(?:norm|conv))\.([12])\.(\w+)", r"\1\2.\3")

RESNET18 = TorchLayout(
    "ResNet18",
    TORCHVISION_RESNET18,
    head="fc",
    build=lambda k, rngs: ResNet18(k, rngs=rngs),
    new_head=lambda k, rngs: dense(512, k, rngs=rngs),
)
DENSENET121 = TorchLayout(
    "DenseNet-121",
    TORCHVISION_DENSENET121,
    head="classifier",
    build=lambda k, rngs: DenseNet121(k, rngs=rngs),
    new_head=lambda k, rngs: densenet.classifier(k, rngs=rngs),
    renames=(_OLD_DENSE_LAYER_KEY,),
)
LAYOUTS = {"resnet18": RESNET18, "densenet121": DENSENET121}
"""Architecture name (as on the command line) -> its `TorchLayout`."""

_DROPPED = re.compile(r"(.+\.)?num_batches_tracked")
Path = tuple[str | int, ...]


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>\\d+)" for i, part in enumerate(parts)
    )
    return re.compile(regex)


@functools.cache
def _compiled(rules: tuple[KeyRule, ...]) -> tuple[tuple[re.Pattern, re.Pattern, KeyRule], ...]:
    return tuple((_template_regex(r.torch), _template_regex(r.flax), r) for r in rules)


def _to_flax_path(key: str, rules: tuple[KeyRule, ...]) -> tuple[Path, KeyRule] | None:
    for torch_regex, _, rule in _compiled(rules):
        match = torch_regex.fullmatch(key)
        if match:
            path_str = rule.flax.format(**match.groupdict())
            path = tuple(int(p) if p.isdigit() else p for p in path_str.split("/"))
            return path, rule
    return None


def _to_torch_key(path: Path, rules: tuple[KeyRule, ...]) -> str:
    path_str = "/".join(map(str, path))
    for _, flax_regex, rule in _compiled(rules):
        match = flax_regex.fullmatch(path_str)
        if match:
            return rule.torch.format(**match.groupdict())
    return path_str


def _float_array(value: Any, key: str) -> np.ndarray:
    array = as_numpy(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"state_dict[{key!r}] must be a floating-point array, got {array.dtype}")
    return array


def _head_classes(state_dict: Mapping[str, Any], head: str) -> int | None:
    shape = getattr(state_dict.get(f"{head}.weight"), "shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 2 else None


def _check_arguments(state_dict: Any, num_classes: Any, layout: TorchLayout) -> int:
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise TypeError(
            f"state_dict must be a mapping of str keys to arrays, got {type(state_dict).__name__}"
        )
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}")
    if num_classes is None:
        num_classes = _head_classes(state_dict, layout.head)
        if num_classes is None:
            raise ValueError(
                f"state_dict has no 2-d '{layout.head}.weight' to take num_classes from; pass "
                "num_classes"
            )
    return num_classes


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in renames:
        key = re.sub(f"^{pattern}$", replacement, key)
    return key


def _match_keys(
    state_dict: Mapping[str, Any],
    layout: TorchLayout,
    targets: Mapping[Path, Any],
    skip: Callable[[str], bool],
) -> dict[Path, jnp.ndarray]:
    """Every kept key mapped, transposed and shape-checked; one ValueError naming every problem."""
    arrays, unexpected, misshaped = {}, [], []
    for key, value in state_dict.items():
        name = _rename(key, layout.renames)
        if _DROPPED.fullmatch(name) or skip(name):
            continue
        found = _to_flax_path(name, layout.rules)
        if found is None or found[0] not in targets or found[0] in arrays:
            unexpected.append(key)
            continue
        path, rule = found
        array = _float_array(value, key)
        target = targets[path]
        expected = tuple(target.shape[i] for i in np.argsort(rule.axes))
        if array.shape != expected:
            misshaped.append(f"{key}: got {tuple(array.shape)}, expected {expected}")
            arrays[path] = None
            continue
        arrays[path] = jnp.asarray(array.transpose(rule.axes), dtype=target.dtype)
    missing = [_to_torch_key(p, layout.rules) for p in targets if p not in arrays]
    if len(missing) == len(targets) and state_dict:
        first = ", ".join(repr(k) for k in list(state_dict)[:3])
        raise ValueError(
            f"state_dict holds none of torchvision's {layout.name} keys ({len(state_dict)} keys, "
            f"beginning {first}; expected e.g. {layout.rules[0].torch!r})"
        )
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
            f"state_dict does not match torchvision's {layout.name}: " + "; ".join(problems)
        )
    return arrays


def from_torch(
    state_dict: Mapping[str, Any],
    layout: TorchLayout,
    num_classes: int | None = None,
    *,
    rngs: nnx.Rngs | None = None,
) -> nnx.Module:
    """The model of `layout` holding a torch state_dict's weights and BatchNorm statistics.

    Every key goes through `layout.rules` onto an abstract model (`nnx.eval_shape`) and is
    shape-checked there; `num_batches_tracked` keys are dropped. `resnet18_from_torchvision`
    and `densenet121_from_torchvision` document the rest.
    """
    num_classes = _check_arguments(state_dict, num_classes, layout)
    fresh_head = num_classes != _head_classes(state_dict, layout.head)
    head_keys = (f"{layout.head}.weight", f"{layout.head}.bias")

    abstract = nnx.eval_shape(lambda: layout.build(num_classes, nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    targets = dict(nnx.to_flat_state(abstract_state))
    if fresh_head:
        head = layout.new_head(num_classes, nnx.Rngs(0) if rngs is None else rngs)
        head_arrays = {
            (layout.head, *path): variable.get_value()
            for path, variable in nnx.to_flat_state(nnx.state(head))
        }
        kept = {p: v for p, v in targets.items() if p not in head_arrays}
        arrays = _match_keys(state_dict, layout, kept, lambda key: key in head_keys)
        arrays.update(head_arrays)
    else:
        arrays = _match_keys(state_dict, layout, targets, lambda key: False)
    state = nnx.from_flat_state([(p, v.replace(arrays[p])) for p, v in targets.items()])
    model = nnx.merge(graphdef, state)
    model.eval()
    return model


def resnet18_from_torchvision(
    state_dict: Mapping[str, Any],
    num_classes: int | None = None,
    *,
    rngs: nnx.Rngs | None = None,
) -> ResNet18:
    """A `ResNet18` holding the weights and BatchNorm statistics of a torchvision state_dict.

    timm's `resnet18` uses the same key names (`timm/resnet18.tv_in1k` holds torchvision's
    weights). Every key goes through `TORCHVISION_RESNET18` onto an abstract model
    (`nnx.eval_shape`) and is shape-checked there. The model is returned in eval mode
    (BatchNorm uses the running statistics); its `model(x)` on NHWC `x` equals torchvision's
    eval-mode logits on NCHW `x` (relative error ~1e-6 on CPU). On GPUs and TPUs, JAX's default
    float32 precision for convolutions may be TF32 / bfloat16 passes, ~1e-3 relative; wrap the
    call in `jax.default_matmul_precision("float32")` where exact parity matters.

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
            mis-shaped (all of them are named in one single-line message).
    """
    return from_torch(state_dict, RESNET18, num_classes, rngs=rngs)


def densenet121_from_torchvision(
    state_dict: Mapping[str, Any],
    num_classes: int | None = None,
    *,
    rngs: nnx.Rngs | None = None,
) -> DenseNet121:
    """A `DenseNet121` holding the weights and BatchNorm statistics of a torchvision state_dict.

    Takes torchvision's and timm's key names (`features.denseblock1.denselayer1.norm1.weight`,
    ..., `classifier.weight`; `timm/densenet121.tv_in1k` holds torchvision's weights) and the
    older spelling of torchvision's own `densenet121-a639ec97.pth` (`...denselayer1.norm.1.weight`).
    Every key goes through `TORCHVISION_DENSENET121` onto an abstract model and is
    shape-checked there; the model is returned in eval mode, its logits on NHWC `x` equal
    torchvision's on NCHW `x` (see `resnet18_from_torchvision` on accelerator precision).

    Args:
        state_dict: torch key -> array (numpy arrays, torch tensors, ...).
        num_classes: None keeps the state_dict's head (`classifier.weight` [K, 1024]). A
            different value builds a fresh [1024, num_classes] head (torchvision's init) and
            ignores the state_dict's `classifier.*`.
        rngs: keys for the fresh head; defaults to `nnx.Rngs(0)`.

    Returns:
        The loaded `DenseNet121`, in eval mode.

    Raises:
        TypeError: `state_dict` is not a mapping with string keys, or a value is not floating.
        ValueError: `num_classes` is not a positive int, or keys are missing, unexpected,
            duplicated (old and new spelling of one key) or mis-shaped, all named in one line.
    """
    return from_torch(state_dict, DENSENET121, num_classes, rngs=rngs)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m jaxcal.models.convert [--model M] in.pth out.npz`: check and convert."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxcal.models.convert",
        description="Check a torchvision/timm checkpoint (.pth needs torch; .safetensors and "
        ".npz do not) against jaxcal's model and write it as an .npz that jaxcal loads without "
        "torch.",
    )
    parser.add_argument("checkpoint", help="torch.save'd state_dict (or {'state_dict': ...})")
    parser.add_argument("output", help="the .npz to write")
    parser.add_argument("--model", choices=sorted(LAYOUTS), default="resnet18")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        parser.error(f"checkpoint {args.checkpoint!r} is not a file")
    try:
        state_dict = load_state_dict(args.checkpoint)
        model = from_torch(state_dict, LAYOUTS[args.model])
    except (TypeError, ValueError, WeightsUnavailableError) as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    save_npz(state_dict, args.output)
    print(
        f"wrote {args.output}: {len(state_dict)} arrays, {LAYOUTS[args.model].name} with "
        f"{model.num_classes} classes checked"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
