"""Command-line options and start-up steps the three experiments share."""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys
from collections.abc import Callable
from typing import Any

import jax

from jaxcal import compile_cache, data, models, plotting, train

WEIGHTS_HELP = (
    "ResNet18 ImageNet weights: a torchvision state_dict (.pth, needs torch) or the .npz that "
    "`python -m jaxcal.models.convert resnet18.pth resnet18.npz` writes (no torch needed); "
    "'random' for a smoke run with random initialisation"
)
# Steps in the running mean of the training loss curve, as in the originals.
LOSS_WINDOW = 60


def add_common_arguments(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """Adds --data, --data-dir, --epochs, --batch-size, --seed, --out, --quick, --resume.

    Also turns on JAX's persistent compilation cache (`jaxcal.compile_cache`; the folder is
    `$JAXCAL_COMPILATION_CACHE`, default `~/.cache/jaxcal/jax`), so reruns skip compiling.
    """
    compile_cache.enable_compilation_cache()
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


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Errors out (exit code 2, naming the option) on an out-of-range number.

    Each option in `names`, --max-train, --max-test and (where the parser has it) --lr must be
    > 0; --seed must be in [0, 2**32).
    """
    for name in (*names, "max_train", "max_test", "lr"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")


def check_out_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> pathlib.Path:
    """The checkpoint folder; refuses to overwrite a previous run's unless --resume is given."""
    checkpoints = args.out / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()) and not args.resume:
        parser.error(
            f"{checkpoints} holds a previous run: pass --resume to continue it, or choose "
            "another --out"
        )
    return checkpoints


def require_weights(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Errors out (exit code 2) unless --weights is 'random' or names an existing file."""
    if args.weights is None:
        parser.error(
            "ResNet18 needs pretrained ImageNet weights and none can be downloaded here: pass "
            "--weights resnet18.pth (torchvision's resnet18-f37072fd.pth, e.g. "
            "torchvision.models.resnet18(weights='DEFAULT').state_dict()) or a converted .npz; "
            "or --weights random for a smoke run without pretraining"
        )
    if args.weights != "random" and not pathlib.Path(args.weights).is_file():
        parser.error(f"--weights: no such file {args.weights}")


def load_resnet18(weights: str, num_classes: int, *, seed: int) -> models.ResNet18:
    """A ResNet18 with ImageNet weights from `weights` and a fresh `num_classes` head.

    Args:
      weights: 'random' (no pretraining), a torchvision state_dict `.pth` or a converted `.npz`
        (checked to exist by `require_weights`).
      num_classes: width of the new head (1: a single binary logit).
      seed: seeds the head (and everything, with 'random').

    Raises:
      SystemExit: a `.pth` without torch installed.
    """
    from flax import nnx

    rngs = nnx.Rngs(seed)
    if weights == "random":
        return models.ResNet18(num_classes, rngs=rngs)
    path = pathlib.Path(weights)
    if path.suffix == ".npz":
        state_dict = models.load_npz(path)
    else:
        try:
            import torch
        except ImportError:
            sys.exit(
                f"error: --weights {path}: reading a .pth needs torch (pip install "
                "'jaxcal[torch]'); or convert it once elsewhere with "
                "`python -m jaxcal.models.convert` to .npz"
            )
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        state_dict = state_dict.get("state_dict", state_dict)
    return models.resnet18_from_torchvision(state_dict, num_classes=num_classes, rngs=rngs)


def load_splits(
    loader: Callable[..., data.DatasetSplits],
    args: argparse.Namespace,
    *,
    batch_size: int,
    **kwargs: Any,
) -> data.DatasetSplits:
    """`loader(args.data, args.data_dir, seed=args.seed, **kwargs)` for the command line.

    Data that cannot be read (no TensorFlow or network for tfds, missing or damaged local
    files, too few images) ends the run with the loader's message, which names the other
    sources, instead of a traceback; so does a training split smaller than one batch.

    Raises:
      SystemExit: with the message, exit code 1.
    """
    try:
        splits = loader(args.data, args.data_dir, seed=args.seed, **kwargs)
    except (data.DataUnavailableError, FileNotFoundError, ValueError) as error:
        sys.exit(f"error: --data {args.data}: {error}")
    if splits.train.num_examples < batch_size:
        sys.exit(
            f"error: {splits.train.num_examples} training images are fewer than one batch of "
            f"{batch_size}: raise --max-train or lower --batch-size"
        )
    return splits


def save_loss_curves(history: train.History, out: pathlib.Path) -> dict[str, str]:
    """Writes loss_curves.png (steps, running mean, validation per epoch); {caption: name}.

    The running mean is over 60 steps as in the originals, fewer when a short run would leave
    it a single point.
    """
    window = min(LOSS_WINDOW, max(1, history.step_loss.size // 4))
    ax = plotting.loss_curves(
        None,
        history.step_loss,
        window=window,
        val_epoch_losses=history.val_loss,
        steps_per_epoch=history.steps_per_epoch,
    )
    caption = (
        f"Training loss per step with its running mean over {window} steps, and validation "
        "loss after each epoch"
    )
    return {caption: plotting.save_figure(ax.figure, out / "loss_curves.png").name}


def environment() -> dict[str, str]:
    """The software and hardware a run used, for the report's setup table."""
    devices = jax.devices()
    return {
        "devices": f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})",
        "jax": jax.__version__,
        "python": platform.python_version(),
    }
