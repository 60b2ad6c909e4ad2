"""MNIST digits with the MLP, the CNN and the classic LeNet-5, and their multiclass calibration.

    python -m experiments.mnist --data synthetic --quick --out runs/mnist      # offline, ~2 min
    python -m experiments.mnist --data local --data-dir ../shared/data --out runs/mnist
    python -m experiments.mnist --model lenet5_classic --out runs/mnist         # TFDS (Colab)

Reproduces the two MNIST notebooks: the MLP 784-512-512-10 (SGD 0.01, 10 epochs, batch 64),
the CNN (conv 6@5x5 pad 2 -> max-pool -> conv 16@5x5 -> max-pool -> 120 -> 84 -> 10, SGD
0.01), and the classic LeNet-5 on 32 x 32 digits with RandomCrop(32, padding 4) + flip,
Adam 1e-4, batch 32; a 10 % validation split with a fixed seed. Per model: the loss curve
with its running mean (window 60) and validation loss per epoch, test loss and accuracy,
per-digit accuracy, parameter count and per-layer shape table, a grid of predictions and,
beyond the originals, the multiclass (top-label) ECE and reliability diagrams before and
after temperature scaling. Writes PNGs, metrics.json and report.md to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from experiments import cli
from jaxcal import data, metrics, models, plotting, study, train

MODELS = ("mlp", "cnn", "lenet5_classic")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How each original notebook trains its model."""

    optimizer: str
    learning_rate: float
    batch_size: int
    augment: data.AugmentConfig | None


RECIPES = {
    "mlp": Recipe("sgd", 0.01, 64, None),
    "cnn": Recipe("sgd", 0.01, 64, None),
    # RandomCrop(32, padding=4) on the 28 x 28 digits gives the classic LeNet its 32 x 32 input;
    # evaluation takes the centre crop (the digit centred in 32 x 32).
    "lenet5_classic": Recipe("adam", 1e-4, 32, data.AugmentConfig.mnist_classic()),
}
# Plain SGD 0.01 needs ~1,500 steps on the synthetic digits to get well above chance.
QUICK = {"max_train": 20000, "max_test": 1000, "epochs": 5}
QUICK_STUDY = {"num_temperatures": 200, "num_resamples": 200}


def build_model(name: str, seed: int) -> nnx.Module:
    """The model of recipe `name`, initialised from `seed`."""
    rngs = nnx.Rngs(seed)
    if name == "mlp":
        return models.MLP(rngs=rngs)
    preset = "mnist_cnn" if name == "cnn" else "classic"
    return models.LeNet5(models.LeNetConfig.preset(preset), rngs=rngs)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options, checked (bad ones exit with code 2 and the option's name)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.mnist", description=__doc__.split("\n\n")[0]
    )
    cli.add_common_arguments(parser, default_out="runs/mnist")
    parser.add_argument("--model", choices=(*MODELS, "all"), default="all")
    args = parser.parse_args(argv)
    cli.check_numbers(parser, args, "epochs", "batch_size")
    args.checkpoints = cli.check_out_dir(parser, args)
    return args


def run_model(name: str, args: argparse.Namespace, splits: data.DatasetSplits) -> tuple:
    """Trains one model and runs its study; returns (metrics, figures, summary table)."""
    recipe = RECIPES[name]
    quick = QUICK if args.quick else {}
    out = args.out / name
    model = build_model(name, args.seed)
    config = train.TrainConfig(
        epochs=args.epochs or quick.get("epochs", 10),
        batch_size=args.batch_size or recipe.batch_size,
        optimizer=recipe.optimizer,
        learning_rate=recipe.learning_rate,
        seed=args.seed,
    )
    # The originals feed ToTensor() pixels in [0, 1] without normalisation.
    preprocess = data.make_preprocess(augment=recipe.augment)
    history = train.fit(
        model,
        (splits.train.images, splits.train.labels),
        (splits.val.images, splits.val.labels),
        config,
        preprocess=preprocess,
        checkpoint_dir=args.checkpoints / name,
        resume=args.resume,
        progress=not args.no_progress,
    )
    val_logits = train.predict_logits(model, splits.val.images, preprocess=preprocess)
    test_logits = train.predict_logits(model, splits.test.images, preprocess=preprocess)
    test_labels = splits.test.labels
    predictions = np.asarray(test_logits.argmax(-1))
    per_digit = metrics.per_class_accuracy(test_labels, predictions, 10)
    result = study.run_study(
        val_logits,
        splits.val.labels,
        test_logits,
        test_labels,
        study.StudyConfig(seed=args.seed, **(QUICK_STUDY if args.quick else {})),
    )

    figures = {}
    figures.update(cli.save_loss_curves(history, out))
    ax = plotting.per_class_accuracy_plot(
        None, per_digit, splits.class_names, overall=result.metrics["test"]["accuracy"]
    )
    figures["Test accuracy per digit"] = plotting.save_figure(
        ax.figure, out / "per_digit_accuracy.png"
    ).name
    fig = plotting.image_grid(
        None,
        splits.test.images[:24],
        test_labels[:24],
        splits.class_names,
        predictions=predictions[:24],
        probabilities=np.asarray(jax.nn.softmax(test_logits[:24]).max(-1)),
    )
    figures["Test digits: label / prediction (green right, red wrong)"] = plotting.save_figure(
        fig, out / "predictions.png"
    ).name
    figures.update(study.save_study_figures(result, out))
    figures = {caption: f"{name}/{file}" for caption, file in figures.items()}

    model_metrics = {
        **result.metrics,
        "parameters": models.parameter_count(model),
        "test_loss": result.metrics["test"]["nll_before"],
        "per_digit_accuracy": [float(a) for a in per_digit],
        "training": {
            "optimizer": config.optimizer,
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "epochs_run": history.epochs_run,
            "train_loss": history.train_loss,
            "val_loss": history.val_loss,
            "val_accuracy": history.val_accuracy,
        },
    }
    input_shape = preprocess(splits.train.images[:1], None).shape
    return model_metrics, figures, models.summary(model, input_shape, width=110)


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the study with command-line arguments `argv`; returns what metrics.json holds."""
    args = parse_args(argv)
    quick = QUICK if args.quick else {}
    started = time.perf_counter()
    names = MODELS if args.model == "all" else (args.model,)
    splits = cli.load_splits(
        data.load_mnist,
        args,
        batch_size=args.batch_size or max(RECIPES[name].batch_size for name in names),
        max_train=args.max_train or quick.get("max_train"),
        max_test=args.max_test or quick.get("max_test"),
    )
    results, figures, sections = {}, {}, []
    for name in names:
        results[name], model_figures, table = run_model(name, args, splits)
        figures.update({f"{name}: {caption}": path for caption, path in model_figures.items()})
        m = results[name]
        sections.append(
            (
                f"{name}: {m['parameters']:,} parameters, test loss {m['test_loss']:.4f}, "
                f"accuracy {m['test']['accuracy']:.4f}",
                "Per-digit test accuracy: "
                + ", ".join(f"{d}: {a:.3f}" for d, a in enumerate(m["per_digit_accuracy"]))
                + "\n\n"
                + study.calibration_table(m)
                + "\n\nLayers, output shapes and parameters:\n\n```\n"
                + table
                + "\n```",
            )
        )
    overview = [
        "| model | training | parameters | test loss | accuracy | ECE before | ECE after | T |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        t = m["training"]
        overview.append(
            f"| {name} | {t['optimizer']} {t['learning_rate']}, batch {t['batch_size']}, "
            f"{t['epochs_run']} epochs | {m['parameters']:,} | {m['test_loss']:.4f} | "
            f"{m['test']['accuracy']:.4f}"
            f" | {m['test']['ece_before']:.4f} | {m['test']['ece_after']:.4f} |"
            f" {m['temperature']:.3f} |"
        )
    setup = {
        "data": splits.description,
        "images (train / val / test)": (
            f"{len(splits.train.labels)} / {len(splits.val.labels)} / {len(splits.test.labels)}"
        ),
        "models": ", ".join(names),
        "calibration": "top-label ECE, 15 bins; T fitted on the validation split",
        "seed": args.seed,
        "quick": args.quick,
        **cli.environment(),
    }
    all_metrics = {"models": results, "seconds": round(time.perf_counter() - started, 1)}
    report = study.write_outputs(
        args.out,
        title="MNIST: MLP, CNN and classic LeNet-5, and their calibration",
        setup=setup,
        metrics=all_metrics,
        sections=[("Overview", "\n".join(overview)), *sections],
        figures=figures,
    )
    print("\n".join(overview))
    print(f"report: {report}")
    return all_metrics


if __name__ == "__main__":
    main()
