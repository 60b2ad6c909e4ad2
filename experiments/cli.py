"""The experiments' command line: recipes, options mapped onto them, and start-up checks."""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from typing import Any, TypeVar

from flax import nnx

from jaxcal import calibration, data, models, study

WEIGHTS_HELP = models.WEIGHTS_HELP
TRAIN_CHOICES = ("head", "layer4", "all")
TRAIN_HELP = (
    "what trains: head (the new head, on features computed once), layer4 (the last stage and "
    "the head: ResNet18's layer4, DenseNet-121's denseblock4 + norm5) or all; frozen parts "
    "keep BatchNorm in eval mode"
)
HEAD = {"resnet18": models.ResNet18.head_name, "densenet121": models.DenseNet121.head_name}
LAST_STAGE = {"resnet18": ("layer4",), "densenet121": ("denseblock4", "norm5")}


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
        default="embedded",
        help="where the images come from (default: embedded, never a download). embedded: a "
        "small real subset shipped in the package, offline (CIFAR-10 bird/cat 983 train+val / "
        "204 test, cat/dog 968 / 191, MNIST 8,000 / 2,000); tfds: the full datasets through "
        "tensorflow_datasets (the Colab path; preparing them needs TensorFlow and the network); "
        "local: torchvision's ./data files (cifar-10-batches-py/, MNIST/raw/) under --data-dir; "
        "synthetic: generated offline, not real images",
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
        help="continue the run in OUT from its checkpoints in OUT/checkpoints (refused when "
        "its data or options differ; with no checkpoint there it says so and trains from "
        "scratch)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs and checkpoints of a previous run in OUT",
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
        "calibrators the study fits on validation and compares on test, e.g. temperature,isotonic",
        shown="every one that applies",
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
    shown: str | None = None,
    **kwargs: Any,
) -> None:
    """Adds `flag` for the recipe field `dest` (default: the flag's name); the help shows the
    recipe's default (or `shown`, what a None default means), and the option stays out of the
    namespace unless given."""
    dest = dest or flag.removeprefix("--").replace("-", "_")
    default = getattr(recipe, dest)
    if shown is None:
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


def require_weights(parser: argparse.ArgumentParser, weights: str | None, model: str) -> None:
    """Errors out (exit code 2) unless `weights` is 'random', 'imagenet' or an existing file.

    'imagenet' is fetched into the hub cache here, before any data is loaded, so that a run
    without the weights (offline, no hub extra) ends at once (exit code 1, one line).
    """
    if weights is None:
        parser.error(
            "a pretrained model needs --weights: --weights imagenet (torchvision's ImageNet "
            "weights from the Hugging Face hub, cached; pip install 'jaxcal[hub]'), --weights "
            "FILE (.safetensors, .npz, or .pth with torch), or --weights random for a smoke run "
            "without pretraining"
        )
    if weights not in ("random", "imagenet") and not pathlib.Path(weights).is_file():
        parser.error(f"--weights: no such file {weights}")
    if weights == "imagenet":
        try:
            models.weights_file(model)
        except models.WeightsUnavailableError as error:
            parser.exit(1, f"error: --weights imagenet: {error}\n")


def load_pretrained(name: str, weights: str, num_classes: int, *, seed: int) -> nnx.Module:
    """`models.load_model(name, weights, num_classes, seed=seed)`, ending the run with a
    one-line error (exit code 1) when the weights cannot be had or do not fit the model.

    Raises:
      SystemExit: an unreadable or mismatched weights file, `imagenet` offline or without the
        hub extra, or a `.pth` without torch; the message says what to do instead.
    """
    try:
        return models.load_model(name, weights, num_classes, seed=seed)
    except (TypeError, ValueError, models.WeightsUnavailableError) as error:
        sys.exit(f"error: --weights {weights}: {error}")


def trainable_parts(model: str, train: str) -> tuple[str, ...] | None:
    """The top-level submodules `--train` names for `model`; None: all of it.

    "head" is the new head only, "layer4" the last stage and the head (ResNet18's `layer4`;
    DenseNet-121's `denseblock4` and `norm5`), "all" everything.
    """
    if train not in TRAIN_CHOICES:
        raise ValueError(f"train must be one of {TRAIN_CHOICES}, got {train!r}")
    if train == "all":
        return None
    return LAST_STAGE[model] + (HEAD[model],) if train == "layer4" else (HEAD[model],)
