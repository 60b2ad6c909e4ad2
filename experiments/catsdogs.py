"""Cats vs dogs with a pretrained ResNet18 (transfer learning), and its calibration.

    python -m experiments.catsdogs --data tfds --weights imagenet --out runs/catsdogs  # Colab
    python -m experiments.catsdogs --data local --data-dir ../shared/data --weights resnet18.npz
    python -m experiments.catsdogs --model densenet121 --weights imagenet --train all
    python -m experiments.catsdogs --data synthetic --quick --weights random --out runs/smoke

Reproduces the cats-vs-dogs notebook: ResNet18 with ImageNet weights, everything frozen but
`layer4` and a new 2-class head, Adam 1e-5, batch 32, up to 20 epochs with early stopping
(patience 3 on validation accuracy, keeping the best epoch), inputs resized to 224 and
ImageNet-normalised, augmented on device with a random resized crop (scale 0.8-1), flip,
rotation (10 degrees) and colour jitter (0.3). Reports precision, recall, F1, the confusion
matrix, ROC-AUC, a grid of correct and incorrect predictions and the calibration analysis
before/after temperature scaling. `--model densenet121` and `--train head | layer4 | all`
change the backbone and what of it trains (`head`: the head alone, on features computed once).
`--data local` uses CIFAR-10 cats vs dogs from the
torchvision layout as a small real stand-in for TFDS `cats_vs_dogs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
from collections.abc import Sequence

import jax
import numpy as np

from experiments import cli, outdir, pipeline
from jaxcal import data, metrics, models, plotting, study, train

NAMES = {"resnet18": "ResNet18", "densenet121": "DenseNet-121"}


@dataclasses.dataclass(frozen=True)
class CatsDogsRecipe(cli.Recipe):
    """The cats-vs-dogs notebook's settings: Adam 1e-5, batch 32, up to 20 epochs, patience 3.

    Attributes:
      model: the pretrained backbone, "resnet18" (the notebook's) or "densenet121".
      weights: its weights (see `cli.WEIGHTS_HELP`).
      train: what trains (`cli.TRAIN_CHOICES`): the notebook's "layer4" (and the head).
      image_size: network input side.
      patience: early-stopping patience on validation accuracy.
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-5
    model: str = "resnet18"
    weights: str | None = None
    train: str = "layer4"
    image_size: int = 224
    patience: int = 3

    def quick(self) -> CatsDogsRecipe:
        """A few small images for two epochs."""
        return dataclasses.replace(
            self,
            max_train=256,
            max_test=128,
            epochs=2,
            image_size=64,
            num_temperatures=200,
            num_resamples=200,
        )


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, CatsDogsRecipe]:
    """(run options, recipe), checked (bad ones exit with code 2 and the option's name)."""
    recipe = CatsDogsRecipe()
    parser = cli.parser_for(
        "python -m experiments.catsdogs", __doc__, recipe, default_out="runs/catsdogs"
    )
    cli.add_recipe_option(
        parser, recipe, "--model", str, "pretrained backbone", choices=tuple(cli.HEAD)
    )
    cli.add_recipe_option(parser, recipe, "--weights", str, cli.WEIGHTS_HELP)
    cli.add_recipe_option(parser, recipe, "--train", str, cli.TRAIN_HELP, choices=cli.TRAIN_CHOICES)
    cli.add_recipe_option(parser, recipe, "--image-size", cli.positive_int, "network input side")
    cli.add_recipe_option(
        parser, recipe, "--lr", cli.positive_float, "Adam learning rate", dest="learning_rate"
    )
    cli.add_recipe_option(parser, recipe, "--patience", cli.positive_int, "early-stopping patience")
    args = parser.parse_args(argv)
    recipe = cli.recipe_from_args(recipe, args)
    cli.require_weights(parser, recipe.weights, recipe.model)
    outdir.check_out(parser, args)
    return args, recipe


def load(recipe: CatsDogsRecipe, source: str, data_dir, **kwargs) -> data.DatasetSplits:
    """The cat/dog splits. The CIFAR-sized stand-ins (local, synthetic) stay 32 x 32 and are
    resized on device inside the jitted step, so 224 x 224 copies never sit in memory; TFDS
    photos vary in size and are resized when read."""
    image_size = recipe.image_size if source == "tfds" else None
    return data.load_cats_vs_dogs(source, data_dir, image_size=image_size, **kwargs)


def train_pretrained(recipe: CatsDogsRecipe, splits: data.DatasetSplits, fit_options):
    """The pretrained backbone with a new 2-class head; `recipe.train` says what trains.

    "layer4" and "all" train through the backbone, augmented on device (frozen parts keep
    BatchNorm in eval mode); "head" trains on unaugmented features computed once
    (`pipeline.fit_head_on_features`).
    """
    model = cli.load_pretrained(recipe.model, recipe.weights, 2, seed=recipe.seed)
    parts = cli.trainable_parts(recipe.model, recipe.train)
    config = train.TrainConfig(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        optimizer="adam",
        learning_rate=recipe.learning_rate,
        trainable=None if recipe.train == "head" else parts,
        patience=recipe.patience,
        monitor="val_accuracy",
        seed=recipe.seed,
        eval_batch_size=64,
    )
    if recipe.train == "head":
        preprocess = data.make_preprocess(*data.IMAGENET_MEAN_STD, resize_to=recipe.image_size)
        return pipeline.fit_head_on_features(
            model, splits, config, fit_options, preprocess=preprocess, batch_size=64
        )
    preprocess = data.make_preprocess(
        *data.IMAGENET_MEAN_STD,
        resize_to=recipe.image_size,
        augment=data.AugmentConfig.catsdogs(output_size=recipe.image_size),
    )
    trained = models.parameter_count(model, parts)
    return pipeline.fit_on_splits(
        model,
        splits,
        config,
        fit_options,
        preprocess=preprocess,
        batch_size=64,
        trained_parameters=trained,
    )


@dataclasses.dataclass(frozen=True)
class Classification:
    """Test-set classification with dog as the positive class.

    Attributes:
      precision, recall, f1: of the argmax predictions.
      roc_auc: area under the ROC curve of the score P(dog).
      confusion: [2, 2] confusion matrix (rows: true, columns: predicted).
      roc: (false positive rates, true positive rates) of the ROC curve.
      predictions: [N] argmax predictions.
      p_dog: [N] P(dog).
    """

    precision: float
    recall: float
    f1: float
    roc_auc: float
    confusion: np.ndarray
    roc: tuple[np.ndarray, np.ndarray]
    predictions: np.ndarray
    p_dog: np.ndarray

    def to_json(self, accuracy: float) -> dict:
        """The metrics.json entry (with the study's accuracy)."""
        return {
            "accuracy": accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "roc_auc": self.roc_auc,
            "confusion_matrix": self.confusion.tolist(),
        }


def classify(labels: np.ndarray, test_logits: jax.Array) -> Classification:
    """Precision, recall, F1, ROC and the confusion matrix of [N, 2] test logits."""
    p_dog = np.asarray(jax.nn.softmax(test_logits)[:, 1])
    predictions = np.asarray(test_logits.argmax(-1))
    prf = metrics.precision_recall_f1(labels, predictions)
    fpr, tpr, _ = metrics.roc_curve(labels, p_dog)
    return Classification(
        precision=float(prf.precision),
        recall=float(prf.recall),
        f1=float(prf.f1),
        roc_auc=float(metrics.roc_auc(labels, p_dog)),
        confusion=metrics.confusion_matrix(labels, predictions, 2),
        roc=(fpr, tpr),
        predictions=predictions,
        p_dog=p_dog,
    )


def classification_figures(
    out: pathlib.Path, splits: data.DatasetSplits, result: Classification
) -> dict[str, str]:
    """The confusion matrix, the ROC curve and a grid of correct and incorrect predictions."""
    ax = plotting.confusion_matrix_plot(None, result.confusion, splits.class_names)
    figures = {
        "Confusion matrix (test)": study.save_figure_atomic(ax.figure, out / "confusion_matrix.png")
    }
    ax = plotting.roc_plot(None, *result.roc, result.roc_auc)
    figures["ROC curve (test, P(dog))"] = study.save_figure_atomic(ax.figure, out / "roc.png")
    labels, predictions = splits.test.labels, result.predictions
    correct = np.flatnonzero(predictions == labels)[:8]
    wrong = np.flatnonzero(predictions != labels)[:8]
    shown = np.concatenate([correct, wrong])
    fig = plotting.image_grid(
        None,
        splits.test.images[shown],
        labels[shown],
        splits.class_names,
        predictions=predictions[shown],
        probabilities=np.where(
            predictions[shown] == 1, result.p_dog[shown], 1 - result.p_dog[shown]
        ),
    )
    caption = f"{len(correct)} correct and {len(wrong)} incorrect test predictions"
    figures[caption] = study.save_figure_atomic(fig, out / "predictions.png")
    return figures


def classification_table(result: Classification, accuracy: float, class_names) -> str:
    """The markdown table of the classification metrics."""
    positive = class_names[1]
    rows = [
        ("accuracy", accuracy),
        (f"precision ({positive} = positive)", result.precision),
        (f"recall ({positive} = positive)", result.recall),
        (f"F1 ({positive} = positive)", result.f1),
        (f"ROC-AUC (score P({positive}))", result.roc_auc),
    ]
    return "\n".join(
        ["| metric | value |", "|---|---|"]
        + [f"| {label} | {value:.4f} |" for label, value in rows]
        + [
            "| confusion matrix (rows: true "
            f"{' / '.join(class_names)}, columns: predicted) | {result.confusion.tolist()} |"
        ]
    )


def describe(recipe: CatsDogsRecipe, out: pathlib.Path, splits, studied) -> pipeline.Report:
    """Classification metrics and figures beside the calibration study; setup rows."""
    run = studied[None]
    result = classify(splits.test.labels, run.test_logits)
    accuracy = run.study.test.accuracy
    config, history = run.trained.config, run.trained.history
    parts = cli.trainable_parts(recipe.model, recipe.train) or ("everything",)
    model = (
        f"{NAMES[recipe.model]} (weights: {recipe.weights}), 2-class head; trained: "
        + " + ".join(parts)
    )
    if recipe.weights == "random":
        model += " (random initialisation: a smoke run, not transfer learning)"
    scaled = run.study.temperature
    return pipeline.Report(
        title=f"Cats vs dogs: {NAMES[recipe.model]} transfer learning and its calibration",
        setup={
            "classes": f"{splits.class_names[0]} = 0, {splits.class_names[1]} = 1",
            "model": model,
            "parameters": f"{models.parameter_count(run.trained.model):,} "
            f"(trained: {run.trained.trained_parameters:,})",
            "input": f"{recipe.image_size} x {recipe.image_size}, ImageNet normalisation",
            "training": f"Adam lr {config.learning_rate}, {pipeline.batch_text(config, history)}, "
            f"{history.epochs_run} epochs (best {history.best_epoch}, patience "
            f"{config.patience})",
        },
        metrics={**run.metrics(), "classification": result.to_json(accuracy)},
        sections=[
            (
                "Classification on the test set",
                classification_table(result, accuracy, splits.class_names),
            ),
            ("Calibration on the test set", study.calibration_table(run.study)),
        ],
        figures={**run.figures, **classification_figures(out, splits, result)},
        console=f"test accuracy {accuracy:.4f}, F1 {result.f1:.4f}, AUC {result.roc_auc:.4f}; "
        f"ECE {run.study.test.raw.ece:.4f} -> {scaled.test.ece:.4f}",
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the study with command-line arguments `argv`; returns what metrics.json holds."""
    args, recipe = parse_args(argv)
    return pipeline.run(
        args,
        recipe,
        load=functools.partial(load, recipe),
        batch_size=recipe.batch_size,
        build_and_train=lambda _, splits, fit_options: train_pretrained(
            recipe, splits, fit_options
        ),
        describe=lambda out, splits, studied: describe(recipe, out, splits, studied),
    )


if __name__ == "__main__":
    main()
