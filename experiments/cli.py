"""The experiments' command line: recipes, options mapped onto them, and start-up checks."""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from typing import Any, TypeVar

from jaxcal import calibration, data, models, study

WEIGHTS_HELP = (
    "ResNet18 ImageNet weights: a torchvision state_dict (.pth, needs torch) or the .npz that "
    "`python -m jaxcal.models.convert resnet18.pth resnet18.npz` writes (no torch needed); "
    "'random' for a smoke run with random initialisation"
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What every experiment computes from: each experiment subclasses it with the defaults of
    its original notebook and a `quick()` variant; explicit options override either.

    Attributes:
      epochs: training epochs.
      batch_size: training batch size; None where each model keeps its notebook's.
      learning_rate: optimiser step size; None where each model keeps its notebook's.
      seed: seeds initialisation, split, batches and the bootstrap.
      max_train: use only the first N training images (None: all).
      max_test: use only N test images (None: all).
      num_temperatures: temperatures in the study's sweep.
      num_resamples: bootstrap resamples of the ECE intervals.
      calibrators: calibration methods the study compares (None: all that apply; temperature
        scaling is always among them).
    """

    epochs: int = 10
    batch_size: int | None = 64
    learning_rate: float | None = 1e-3
    seed: int = 0
    max_train: int | None = None
    max_test: int | None = None
    num_temperatures: int = 1000
    num_resamples: int = 1000
    calibrators: tuple[str, ...] | None = None

    def study_config(self) -> study.StudyConfig:
        """The calibration study's settings."""
        return study.StudyConfig(
            seed=self.seed,
            num_temperatures=self.num_temperatures,
            num_resamples=self.num_resamples,
            calibrators=self.calibrators,
        )


R = TypeVar("R", bound=Recipe)


def positive_int(text: str) -> int:
    """argparse type: an int > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0 (nan and inf are refused)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def calibrator_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated names from `calibration.CALIBRATORS`."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in calibration.CALIBRATORS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated names from {','.join(calibration.CALIBRATORS)}, got {text!r}"
        )
    return names


def seed(text: str) -> int:
    """argparse type: an int in [0, 2**32)."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value}")
    return value


def parser_for(prog: str, doc: str, recipe: Recipe, *, default_out: str) -> argparse.ArgumentParser:
    """A parser with the options every experiment has; recipe options default to `recipe`'s
    values and are left out of the namespace unless given (see `recipe_from_args`)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
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
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(default_out))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast run for trying it out (fewer images, epochs and temperatures)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the checkpoints in OUT/checkpoints",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_recipe_option(parser, recipe, "--epochs", positive_int, "training epochs")
    add_recipe_option(parser, recipe, "--batch-size", positive_int, "training batch size")
    add_recipe_option(parser, recipe, "--seed", seed, "seed of init, split and batches")
    add_recipe_option(
        parser,
        recipe,
        "--calibrators",
        calibrator_list,
        "calibrators the study fits on validation and compares on test, e.g. "
        "temperature,isotonic (the default None: every one that applies)",
    )
    add_recipe_option(
        parser, recipe, "--max-train", positive_int, "use only the first N training images"
    )
    add_recipe_option(parser, recipe, "--max-test", positive_int, "use only N test images")
    return parser


def add_recipe_option(
    parser: argparse.ArgumentParser,
    recipe: Recipe,
    flag: str,
    kind: Any,
    help_text: str,
    *,
    dest: str | None = None,
    **kwargs: Any,
) -> None:
    """Adds `flag` for the recipe field `dest` (default: the flag's name); the help shows the
    recipe's default, and the option stays out of the namespace unless given."""
    dest = dest or flag.removeprefix("--").replace("-", "_")
    default = getattr(recipe, dest)
    shown = "the model's own" if default is None else default
    parser.add_argument(
        flag,
        type=kind,
        dest=dest,
        default=argparse.SUPPRESS,
        help=f"{help_text} (default {shown}; --quick may change it)",
        **kwargs,
    )


def recipe_from_args(recipe: R, args: argparse.Namespace) -> R:
    """`recipe` (its `quick()` variant with --quick), with every option given overriding."""
    base = recipe.quick() if args.quick else recipe
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(base) if f.name in args}
    return dataclasses.replace(base, **given)


def require_weights(parser: argparse.ArgumentParser, weights: str | None) -> None:
    """Errors out (exit code 2) unless `weights` is 'random' or names an existing file."""
    if weights is None:
        parser.error(
            "ResNet18 needs pretrained ImageNet weights and none can be downloaded here: pass "
            "--weights resnet18.pth (torchvision's resnet18-f37072fd.pth, e.g. "
            "torchvision.models.resnet18(weights='DEFAULT').state_dict()) or a converted .npz; "
            "or --weights random for a smoke run without pretraining"
        )
    if weights != "random" and not pathlib.Path(weights).is_file():
        parser.error(f"--weights: no such file {weights}")


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


def check_out_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses (exit code 2) an --out that holds a previous run's checkpoints, unless --resume."""
    checkpoints = args.out / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()) and not args.resume:
        parser.error(
            f"{checkpoints} holds a previous run: pass --resume to continue it, or choose "
            "another --out"
        )
