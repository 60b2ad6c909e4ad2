"""Cats vs dogs with a pretrained ResNet18 (transfer learning), and its calibration.

    python -m experiments.catsdogs --weights resnet18.npz --out runs/catsdogs     # TFDS (Colab)
    python -m experiments.catsdogs --data local --data-dir ../shared/data --weights resnet18.npz
    python -m experiments.catsdogs --data synthetic --quick --weights random --out runs/smoke

Reproduces the cats-vs-dogs notebook: ResNet18 with ImageNet weights, everything frozen but
`layer4` and a new 2-class head, Adam 1e-5, batch 32, up to 20 epochs with early stopping
(patience 3 on validation accuracy, keeping the best epoch), inputs resized to 224 and
ImageNet-normalised, augmented on device with a random resized crop (scale 0.8-1), flip,
rotation (10 degrees) and colour jitter (0.3). Reports precision, recall, F1, the confusion
matrix, ROC-AUC, a grid of correct and incorrect predictions and the calibration analysis
before/after temperature scaling. `--data local` uses CIFAR-10 cats vs dogs from the
torchvision layout as a small real stand-in for TFDS `cats_vs_dogs`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import numpy as np

from experiments import cli
from jaxcal import data, metrics, models, plotting, study, train

QUICK = {"max_train": 256, "max_test": 128, "epochs": 2, "image_size": 64}
QUICK_STUDY = {"num_temperatures": 200, "num_resamples": 200}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options, checked (bad ones exit with code 2 and the option's name)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.catsdogs", description=__doc__.split("\n\n")[0]
    )
    cli.add_common_arguments(parser, default_out="runs/catsdogs")
    parser.add_argument("--weights", default=None, help=cli.WEIGHTS_HELP)
    parser.add_argument(
        "--image-size", type=int, default=None, help="network input side (default 224)"
    )
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience")
    args = parser.parse_args(argv)
    cli.check_numbers(parser, args, "epochs", "batch_size", "image_size", "patience")
    cli.require_weights(parser, args)
    args.checkpoints = cli.check_out_dir(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the study with command-line arguments `argv`; returns what metrics.json holds."""
    args = parse_args(argv)
    quick = QUICK if args.quick else {}
    image_size = args.image_size or quick.get("image_size", 224)
    batch_size = args.batch_size or 32
    started = time.perf_counter()
    # The CIFAR-sized stand-ins (local, synthetic) stay 32 x 32 and are resized on device inside
    # the jitted step, so 224 x 224 copies never sit in memory; TFDS photos vary in size and
    # are resized when read.
    splits = cli.load_splits(
        data.load_cats_vs_dogs,
        args,
        batch_size=batch_size,
        image_size=image_size if args.data == "tfds" else None,
        max_train=args.max_train or quick.get("max_train"),
        max_test=args.max_test or quick.get("max_test"),
    )
    model = cli.load_resnet18(args.weights, 2, seed=args.seed)
    train_preprocess = data.make_preprocess(
        *data.IMAGENET_MEAN_STD,
        resize_to=image_size,
        augment=data.AugmentConfig.catsdogs(output_size=image_size),
    )
    config = train.TrainConfig(
        epochs=args.epochs or quick.get("epochs", 20),
        batch_size=batch_size,
        optimizer="adam",
        learning_rate=args.lr,
        trainable=("layer4", "fc"),
        patience=args.patience,
        monitor="val_accuracy",
        seed=args.seed,
        eval_batch_size=64,
    )
    history = train.fit(
        model,
        (splits.train.images, splits.train.labels),
        (splits.val.images, splits.val.labels),
        config,
        preprocess=train_preprocess,
        checkpoint_dir=args.checkpoints,
        resume=args.resume,
        progress=not args.no_progress,
    )

    def predict(images):
        return train.predict_logits(model, images, batch_size=64, preprocess=train_preprocess)

    val_logits, test_logits = predict(splits.val.images), predict(splits.test.images)
    labels = splits.test.labels
    p_dog = np.asarray(jax.nn.softmax(test_logits)[:, 1])
    predictions = np.asarray(test_logits.argmax(-1))
    prf = metrics.precision_recall_f1(labels, predictions)
    confusion = metrics.confusion_matrix(labels, predictions, 2)
    fpr, tpr, _ = metrics.roc_curve(labels, p_dog)
    auc = metrics.roc_auc(labels, p_dog)
    result = study.run_study(
        val_logits,
        splits.val.labels,
        test_logits,
        labels,
        study.StudyConfig(seed=args.seed, **(QUICK_STUDY if args.quick else {})),
    )

    out = args.out
    figures = {}
    figures.update(cli.save_loss_curves(history, out))
    ax = plotting.confusion_matrix_plot(None, confusion, splits.class_names)
    figures["Confusion matrix (test)"] = plotting.save_figure(
        ax.figure, out / "confusion_matrix.png"
    ).name
    ax = plotting.roc_plot(None, fpr, tpr, auc)
    figures["ROC curve (test, P(dog))"] = plotting.save_figure(ax.figure, out / "roc.png").name
    correct = np.flatnonzero(predictions == labels)[:8]
    wrong = np.flatnonzero(predictions != labels)[:8]
    shown = np.concatenate([correct, wrong])
    fig = plotting.image_grid(
        None,
        splits.test.images[shown],
        labels[shown],
        splits.class_names,
        predictions=predictions[shown],
        probabilities=np.where(predictions[shown] == 1, p_dog[shown], 1 - p_dog[shown]),
    )
    figures[f"{len(correct)} correct and {len(wrong)} incorrect test predictions"] = (
        plotting.save_figure(fig, out / "predictions.png").name
    )
    figures.update(study.save_study_figures(result, out))

    classification = {
        "accuracy": result.metrics["test"]["accuracy"],
        "precision": float(prf.precision),
        "recall": float(prf.recall),
        "f1": float(prf.f1),
        "roc_auc": float(auc),
        "confusion_matrix": confusion.tolist(),
    }
    all_metrics = {
        **result.metrics,
        "classification": classification,
        "training": {
            "epochs_run": history.epochs_run,
            "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early,
            "train_loss": history.train_loss,
            "val_loss": history.val_loss,
            "val_accuracy": history.val_accuracy,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    setup = {
        "data": splits.description,
        "images (train / val / test)": (
            f"{len(splits.train.labels)} / {len(splits.val.labels)} / {len(labels)}"
        ),
        "classes": f"{splits.class_names[0]} = 0, {splits.class_names[1]} = 1",
        "model": f"ResNet18 (weights: {args.weights}), 2-class head; trained: layer4 + fc"
        + (
            " (random initialisation: a smoke run, not transfer learning)"
            if args.weights == "random"
            else ""
        ),
        "parameters": f"{models.parameter_count(model):,} (trained: "
        f"{sum(models.parameter_count(getattr(model, name)) for name in config.trainable):,})",
        "input": f"{image_size} x {image_size}, ImageNet normalisation",
        "training": f"Adam lr {config.learning_rate}, batch {config.batch_size}, "
        f"{history.epochs_run} epochs (best {history.best_epoch}, patience {config.patience})",
        "seed": args.seed,
        "quick": args.quick,
        **cli.environment(),
    }
    positive = splits.class_names[1]
    rows = [
        ("accuracy", "accuracy"),
        (f"precision ({positive} = positive)", "precision"),
        (f"recall ({positive} = positive)", "recall"),
        (f"F1 ({positive} = positive)", "f1"),
        (f"ROC-AUC (score P({positive}))", "roc_auc"),
    ]
    table = "\n".join(
        ["| metric | value |", "|---|---|"]
        + [f"| {label} | {classification[key]:.4f} |" for label, key in rows]
        + [
            "| confusion matrix (rows: true "
            f"{' / '.join(splits.class_names)}, columns: predicted) | {confusion.tolist()} |"
        ]
    )
    report = study.write_outputs(
        out,
        title="Cats vs dogs: ResNet18 transfer learning and its calibration",
        setup=setup,
        metrics=all_metrics,
        sections=[
            ("Classification on the test set", table),
            ("Calibration on the test set", study.calibration_table(result.metrics)),
        ],
        figures=figures,
    )
    print(
        f"test accuracy {classification['accuracy']:.4f}, F1 {classification['f1']:.4f}, "
        f"AUC {classification['roc_auc']:.4f}; ECE {result.metrics['test']['ece_before']:.4f} "
        f"-> {result.metrics['test']['ece_after']:.4f}; report: {report}"
    )
    return all_metrics


if __name__ == "__main__":
    main()
