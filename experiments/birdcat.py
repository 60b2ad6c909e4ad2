"""CIFAR-10 birds vs cats: train a classifier, then measure and fix its calibration.

    python -m experiments.birdcat --quick --out runs/birdcat   # embedded real images, offline
    python -m experiments.birdcat --data local --data-dir ../shared/data --out runs/birdcat
    python -m experiments.birdcat --model resnet18 --weights imagenet --out runs/resnet
    python -m experiments.birdcat --model resnet18 --weights imagenet --train all --image-size 32
    python -m experiments.birdcat --model densenet121 --weights imagenet --out runs/densenet
    python -m experiments.birdcat --model densenet121 --quick --weights random   # CPU smoke run

Reproduces the first original notebook: LeNet-5 with one logit, BCE, Adam 1e-3, batch 64,
10 epochs, 80/20 train/validation split, inputs normalised with (0.5, 0.5, 0.5). Then: a
temperature fitted on the validation set by L-BFGS, reliability diagrams and ECE (15 bins,
P(y = cat)) before and after on the test set, the a = 0.5 / optimal / 1.5 panel, the
reliability curves of a thousand temperatures from one `temperature_sweep` call, and
ECE/NLL/Brier versus temperature. `--model resnet18` trains a new one-logit head on a frozen
pretrained backbone (224 x 224 ImageNet-normalised inputs; `--train all --image-size 32` is the
original's full fine-tune at 32 x 32). `--model densenet121` is the second original's:
pretrained DenseNet-121 fine-tuned (by default its last dense block, `norm5` and a new head)
with Adam 1e-3, BCE and random resized crops, flips and rotations. Writes PNGs, metrics.json
and report.md to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Sequence

from flax import nnx

from experiments import cli, outdir, pipeline
from jaxcal import data, models, plotting, study, train

PRETRAINED = {"resnet18": "ResNet18", "densenet121": "DenseNet-121"}
# The second original's augmentation for DenseNet-121: random crops, flips and rotations.
DENSENET_AUGMENT = {"resized_crop_scale": (0.8, 1.0), "flip": True, "rotation_degrees": 10.0}


@dataclasses.dataclass(frozen=True)
class BirdCatRecipe(cli.Recipe):
    """The first notebook's settings (Adam 1e-3, batch 64, 10 epochs) and the model to train.

    Attributes:
      model: "lenet5" (the notebook's), "lenet5_bn" (batch norm + dropout), or a pretrained
        "resnet18" / "densenet121" with a new one-logit head.
      weights: the pretrained model's weights (see `cli.WEIGHTS_HELP`).
      train: what of a pretrained model trains (`cli.TRAIN_CHOICES`); None: "head" for
        resnet18 (the first original), "layer4" for densenet121 (the second).
      image_size: input side of a pretrained model (CIFAR's 32 x 32 is resized).
    """

    model: str = "lenet5"
    weights: str | None = None
    train: str | None = None
    image_size: int = 224

    def quick(self) -> BirdCatRecipe:
        """LeNet-5: long enough on few images that it overfits and turns overconfident
        (T > 1), as the original does on the full data. Pretrained models: a few small images
        for two epochs, a CPU smoke run."""
        if self.model in PRETRAINED:
            return dataclasses.replace(
                self,
                max_train=320,
                max_test=128,
                epochs=2,
                image_size=32,
                num_temperatures=200,
                num_resamples=200,
            )
        return dataclasses.replace(
            self, max_train=4000, max_test=1000, epochs=20, num_temperatures=300, num_resamples=300
        )

    @property
    def trains(self) -> str:
        """What of a pretrained model trains: `train`, or the model's original's default."""
        return self.train or ("layer4" if self.model == "densenet121" else "head")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, BirdCatRecipe]:
    """(run options, recipe), checked (bad ones exit with code 2 and the option's name)."""
    recipe = BirdCatRecipe()
    parser = cli.parser_for(
        "python -m experiments.birdcat", __doc__, recipe, default_out="runs/birdcat"
    )
    cli.add_recipe_option(
        parser, recipe, "--model", str, "model", choices=("lenet5", "lenet5_bn", *PRETRAINED)
    )
    cli.add_recipe_option(parser, recipe, "--weights", str, cli.WEIGHTS_HELP)
    cli.add_recipe_option(parser, recipe, "--train", str, cli.TRAIN_HELP, choices=cli.TRAIN_CHOICES)
    cli.add_recipe_option(
        parser, recipe, "--image-size", cli.positive_int, "input side of a pretrained model"
    )
    cli.add_recipe_option(
        parser, recipe, "--lr", cli.positive_float, "Adam learning rate", dest="learning_rate"
    )
    args = parser.parse_args(argv)
    # The model first, so that --quick picks that model's quick settings.
    recipe = dataclasses.replace(recipe, model=getattr(args, "model", recipe.model))
    recipe = cli.recipe_from_args(recipe, args)
    if recipe.model in PRETRAINED:
        cli.require_weights(parser, recipe.weights, recipe.model)
    else:
        for option in ("weights", "train", "image_size"):
            if option in args:
                parser.error(
                    f"--{option.replace('_', '-')} goes with --model resnet18 or densenet121"
                )
    outdir.check_out(parser, args)
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


def pretrained_preprocess(recipe: BirdCatRecipe, *, augment: bool) -> data.Preprocess:
    """ImageNet normalisation at `recipe.image_size`; DenseNet-121's augmentation in training
    when `augment` (the evaluation path gets its deterministic counterpart)."""
    augmentation = (
        data.AugmentConfig(output_size=recipe.image_size, **DENSENET_AUGMENT)
        if augment and recipe.model == "densenet121"
        else None
    )
    return data.make_preprocess(
        *data.IMAGENET_MEAN_STD, resize_to=recipe.image_size, augment=augmentation
    )


def train_pretrained(
    recipe: BirdCatRecipe, splits: data.DatasetSplits, fit_options
) -> pipeline.Trained:
    """A pretrained model with a new one-logit head; `recipe.trains` says what trains.

    "head" takes the cached-features path (`pipeline.fit_head_on_features`); "layer4" and
    "all" train through the backbone, BatchNorm in train mode where parameters train and in
    eval mode where frozen.
    """
    model = cli.load_pretrained(recipe.model, recipe.weights, 1, seed=recipe.seed)
    if recipe.trains == "head":
        preprocess = pretrained_preprocess(recipe, augment=False)
        return pipeline.fit_head_on_features(
            model, splits, train_config(recipe), fit_options, preprocess=preprocess
        )
    parts = cli.trainable_parts(recipe.model, recipe.trains)
    config = dataclasses.replace(train_config(recipe), trainable=parts)
    trained = models.parameter_count(model, parts)
    return pipeline.fit_on_splits(
        model,
        splits,
        config,
        fit_options,
        preprocess=pretrained_preprocess(recipe, augment=True),
        batch_size=32,
        trained_parameters=trained,
    )


def describe_pretrained(recipe: BirdCatRecipe) -> str:
    """The setup table's model row of a pretrained model."""
    trains = {"head": "frozen but", "layer4": "trained: the last stage and", "all": "all trained,"}
    augmented = (
        ", augmented (random resized crops, flips, rotations)"
        if recipe.model == "densenet121" and recipe.trains != "head"
        else ""
    )
    return (
        f"{PRETRAINED[recipe.model]} (weights: {recipe.weights}), {trains[recipe.trains]} a new "
        f"one-logit head; {recipe.image_size} x {recipe.image_size} ImageNet-normalised "
        f"inputs{augmented}"
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
        describe_pretrained(recipe)
        if recipe.model in PRETRAINED
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
            "training": f"{config.optimizer} lr {config.learning_rate}, "
            f"{pipeline.batch_text(config, history)}, {history.epochs_run} epochs, "
            "BCE with logits",
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
    trainer = train_pretrained if recipe.model in PRETRAINED else train_lenet
    return pipeline.run(
        args,
        recipe,
        load=data.load_birdcat,
        batch_size=recipe.batch_size,
        build_and_train=lambda _, splits, fit_options: trainer(recipe, splits, fit_options),
        describe=lambda out, splits, studied: describe(recipe, out, splits, studied),
    )


if __name__ == "__main__":
    main()
