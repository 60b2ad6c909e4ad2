"""CIFAR-10 birds vs cats: train a classifier, then measure and fix its calibration.

    python -m experiments.birdcat --data synthetic --quick --out runs/birdcat   # offline, ~1 min
    python -m experiments.birdcat --data local --data-dir ../shared/data --out runs/birdcat
    python -m experiments.birdcat --model resnet18 --weights resnet18.npz --out runs/resnet

Reproduces the first original notebook: LeNet-5 with one logit, BCE, Adam 1e-3, batch 64,
10 epochs, 80/20 train/validation split, inputs normalised with (0.5, 0.5, 0.5). Then: a
temperature fitted on the validation set by L-BFGS, reliability diagrams and ECE (15 bins,
P(y = cat)) before and after on the test set, the a = 0.5 / optimal / 1.5 panel, the
reliability curves of a thousand temperatures from one `temperature_sweep` call, and
ECE/NLL/Brier versus temperature. `--model resnet18` freezes a pretrained backbone and trains a
new one-logit head on 224 x 224 ImageNet-normalised inputs. Writes PNGs, metrics.json and
report.md to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Sequence

from flax import nnx

from experiments import cli, pipeline
from jaxcal import data, models, plotting, study, train


@dataclasses.dataclass(frozen=True)
class BirdCatRecipe(cli.Recipe):
    """The first notebook's settings (Adam 1e-3, batch 64, 10 epochs) and the model to train.

    Attributes:
      model: "lenet5" (the notebook's), "lenet5_bn" (batch norm + dropout) or "resnet18"
        (frozen pretrained backbone, new one-logit head).
      weights: ResNet18 weights (see `cli.WEIGHTS_HELP`).
    """

    model: str = "lenet5"
    weights: str | None = None

    def quick(self) -> BirdCatRecipe:
        """Long enough on few images that LeNet-5 overfits and turns overconfident (T > 1), as
        the original does on the full data."""
        return dataclasses.replace(
            self, max_train=4000, max_test=1000, epochs=20, num_temperatures=300, num_resamples=300
        )


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, BirdCatRecipe]:
    """(run options, recipe), checked (bad ones exit with code 2 and the option's name)."""
    recipe = BirdCatRecipe()
    parser = cli.parser_for(
        "python -m experiments.birdcat", __doc__, recipe, default_out="runs/birdcat"
    )
    cli.add_recipe_option(
        parser, recipe, "--model", str, "model", choices=("lenet5", "lenet5_bn", "resnet18")
    )
    cli.add_recipe_option(parser, recipe, "--weights", str, cli.WEIGHTS_HELP)
    cli.add_recipe_option(
        parser, recipe, "--lr", cli.positive_float, "Adam learning rate", dest="learning_rate"
    )
    args = parser.parse_args(argv)
    recipe = cli.recipe_from_args(recipe, args)
    if recipe.model == "resnet18":
        cli.require_weights(parser, recipe.weights)
    elif recipe.weights is not None:
        parser.error("--weights goes with --model resnet18")
    cli.check_out_dir(parser, args)
    return args, recipe


def train_config(recipe: BirdCatRecipe) -> train.TrainConfig:
    """The notebook's optimiser: Adam, BCE on one logit."""
    return train.TrainConfig(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        optimizer="adam",
        learning_rate=recipe.learning_rate,
        seed=recipe.seed,
    )


def train_lenet(recipe: BirdCatRecipe, splits: data.DatasetSplits, fit_options) -> pipeline.Trained:
    """LeNet-5 (or its BatchNorm variant) trained end to end on normalised images."""
    preset = "birdcat" if recipe.model == "lenet5" else "lenet5_bn"
    model = models.LeNet5(models.LeNetConfig.preset(preset), rngs=nnx.Rngs(recipe.seed))
    preprocess = data.make_preprocess(*data.CIFAR_MEAN_STD)
    return pipeline.fit_on_splits(
        model, splits, train_config(recipe), fit_options, preprocess=preprocess
    )


def train_resnet_head(
    recipe: BirdCatRecipe, splits: data.DatasetSplits, fit_options
) -> pipeline.Trained:
    """Frozen pretrained backbone, new one-logit head `fc`.

    The frozen backbone runs in eval mode (running BatchNorm statistics) and the inputs are
    not augmented, so its features are fixed: they are computed once and the head is trained
    on the [N, 512] features, which gives the same head as training through the backbone,
    epochs times faster.
    """
    resnet = cli.load_resnet18(recipe.weights, 1, seed=recipe.seed)
    preprocess = data.make_preprocess(*data.IMAGENET_MEAN_STD, resize_to=224)

    def features(images):
        return train.predict_logits(
            resnet, images, batch_size=32, preprocess=preprocess, method="backbone"
        )

    config = train_config(recipe)
    history = train.fit(
        resnet.fc,
        (features(splits.train.images), splits.train.labels),
        (features(splits.val.images), splits.val.labels),
        config,
        **fit_options,
    )
    return pipeline.Trained(
        resnet,
        history,
        config,
        lambda images: train.predict_logits(resnet, images, batch_size=32, preprocess=preprocess),
        models.parameter_count(resnet.fc),
    )


def describe(
    recipe: BirdCatRecipe, out: pathlib.Path, splits: data.DatasetSplits, studied
) -> pipeline.Report:
    """The training images, the setup rows, and the one-line summary."""
    run = studied[None]
    fig = plotting.image_grid(
        None, splits.train.images[:16], splits.train.labels[:16], splits.class_names
    )
    samples = study.save_figure_atomic(fig, out / "samples.png")
    config, history = run.trained.config, run.trained.history
    model = (
        f"ResNet18 (weights: {recipe.weights}), frozen; a new one-logit head trained on "
        "224 x 224 ImageNet-normalised inputs"
        if recipe.model == "resnet18"
        else f"{recipe.model}, one logit, inputs normalised with mean = std = 0.5"
    )
    test = run.study.test
    scaled = run.study.temperature
    return pipeline.Report(
        title=f"Birds vs cats: calibration of {recipe.model}",
        setup={
            "classes": " = 0, ".join(splits.class_names) + " = 1",
            "model": model,
            "parameters": f"{models.parameter_count(run.trained.model):,} "
            f"(trained: {run.trained.trained_parameters:,})",
            "training": f"{config.optimizer} lr {config.learning_rate}, batch "
            f"{config.batch_size}, {history.epochs_run} epochs, BCE with logits",
        },
        metrics=run.metrics(),
        sections=[("Calibration on the test set", study.calibration_table(run.study))],
        figures={"Training images and their labels": samples, **run.figures},
        console=f"test accuracy {test.accuracy:.4f}; ECE {test.raw.ece:.4f} -> "
        f"{scaled.test.ece:.4f} at T = {scaled.temperature:.3f}",
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the study with command-line arguments `argv`; returns what metrics.json holds."""
    args, recipe = parse_args(argv)
    trainer = train_resnet_head if recipe.model == "resnet18" else train_lenet
    return pipeline.run(
        args,
        recipe,
        load=data.load_birdcat,
        batch_size=recipe.batch_size,
        build_and_train=lambda _, splits, fit_options: trainer(recipe, splits, fit_options),
        describe=lambda splits, studied: describe(recipe, args.out, splits, studied),
    )


if __name__ == "__main__":
    main()
