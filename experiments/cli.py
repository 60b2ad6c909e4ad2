"""Command-line options and start-up steps the three experiments share."""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys

import jax

from jaxcal import data, models

WEIGHTS_HELP = (
    "ResNet18 ImageNet weights: a torchvision state_dict (.pth, needs torch) or the .npz that "
    "`python -m jaxcal.models.convert resnet18.pth resnet18.npz` writes (no torch needed); "
    "'random' for a smoke run with random initialisation"
)


def add_common_arguments(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """Adds --data, --data-dir, --epochs, --batch-size, --seed, --out, --quick, --resume."""
    parser.add_argument(
        "--data",
        choices=data.SOURCES,
        default="tfds",
        help="tfds (tensorflow_datasets, the Colab path), local (torchvision's ./data layout: "
        "cifar-10-batches-py/, MNIST/raw/) or synthetic (generated offline, not real images)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="tfds data_dir, or the torchvision root for --data local (default ./data)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of init, split and batches")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(default_out))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast run for trying it out (fewer images, epochs and temperatures)",
    )
    parser.add_argument(
        "--max-train", type=int, default=None, help="use only the first N training images"
    )
    parser.add_argument("--max-test", type=int, default=None, help="use only N test images")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the checkpoints in OUT/checkpoints",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Errors out (exit code 2, naming the option) unless each given option is >= 1."""
    for name in (*names, "max_train", "max_test"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def check_out_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> pathlib.Path:
    """The checkpoint folder; refuses to overwrite a previous run's unless --resume is given."""
    checkpoints = args.out / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()) and not args.resume:
        parser.error(
            f"{checkpoints} holds a previous run: pass --resume to continue it, or choose "
            "another --out"
        )
    return checkpoints


def load_resnet18(weights: str | None, num_classes: int, *, seed: int) -> models.ResNet18:
    """A ResNet18 with ImageNet weights from `weights` and a fresh `num_classes` head.

    Raises:
      SystemExit: no weights given (the message says how to get them), or the file is missing.
    """
    from flax import nnx

    if weights is None:
        sys.exit(
            "--model resnet18 needs pretrained ImageNet weights and none can be downloaded here. "
            "Pass --weights resnet18.pth (torchvision's resnet18-f37072fd.pth, e.g. from "
            "torchvision.models.resnet18(weights='DEFAULT').state_dict()) or a converted "
            ".npz; or --weights random for a smoke run without pretraining."
        )
    rngs = nnx.Rngs(seed)
    if weights == "random":
        return models.ResNet18(num_classes, rngs=rngs)
    path = pathlib.Path(weights)
    if not path.is_file():
        sys.exit(f"--weights: no such file {path}")
    if path.suffix == ".npz":
        state_dict = models.load_npz(path)
    else:
        try:
            import torch
        except ImportError:
            sys.exit(
                f"--weights {path}: reading a .pth needs torch (pip install 'jaxcal[torch]'); "
                "or convert it once elsewhere with `python -m jaxcal.models.convert` to .npz"
            )
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        state_dict = state_dict.get("state_dict", state_dict)
    return models.resnet18_from_torchvision(state_dict, num_classes=num_classes, rngs=rngs)


def environment() -> dict[str, str]:
    """The software and hardware a run used, for the report's setup table."""
    devices = jax.devices()
    return {
        "devices": f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})",
        "jax": jax.__version__,
        "python": platform.python_version(),
    }
