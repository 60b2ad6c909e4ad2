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
import time
from collections.abc import Sequence

import jax
from flax import nnx

from experiments import cli
from jaxcal import data, models, plotting, study, train

# Long enough on few images that LeNet-5 overfits and turns overconfident (T > 1), as the
# original does on the full data.
QUICK = {"max_train": 4000, "max_test": 1000, "epochs": 20}
QUICK_STUDY = {"num_temperatures": 300, "num_resamples": 300}


class Head(nnx.Module):
    """A linear head on precomputed backbone features (the frozen-backbone fast path)."""

    def __init__(self, fc: nnx.Linear):
        self.fc = fc

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits [B, K] of features x: [B, 1, 1, 512] (stored as 1 x 1 images for `fit`)."""
        return self.fc(x.reshape(x.shape[0], -1))


class Backbone(nnx.Module):
    """ResNet18's pooled features, as a model `train.predict_logits` can run in eval mode."""

    def __init__(self, resnet: models.ResNet18):
        self.resnet = resnet

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.resnet.backbone(x)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options, checked (bad ones exit with code 2 and the option's name)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.birdcat", description=__doc__.split("\n\n")[0]
    )
    cli.add_common_arguments(parser, default_out="runs/birdcat")
    parser.add_argument("--model", choices=("lenet5", "lenet5_bn", "resnet18"), default="lenet5")
    parser.add_argument("--weights", default=None, help=cli.WEIGHTS_HELP)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    args = parser.parse_args(argv)
    cli.check_numbers(parser, args, "epochs", "batch_size")
    if args.model == "resnet18":
        cli.require_weights(parser, args)
    elif args.weights is not None:
        parser.error("--weights goes with --model resnet18")
    args.checkpoints = cli.check_out_dir(parser, args)
    return args


def train_lenet(args, splits, config, preprocess):
    """LeNet-5 (or its BatchNorm variant) trained end to end; returns (model, history, predict)."""
    preset = "birdcat" if args.model == "lenet5" else "lenet5_bn"
    model = models.LeNet5(models.LeNetConfig.preset(preset), rngs=nnx.Rngs(args.seed))
    history = train.fit(
        model,
        (splits.train.images, splits.train.labels),
        (splits.val.images, splits.val.labels),
        config,
        preprocess=preprocess,
        checkpoint_dir=args.checkpoints,
        resume=args.resume,
        progress=not args.no_progress,
    )
    return model, history, lambda images: train.predict_logits(model, images, preprocess=preprocess)


def train_resnet_head(args, splits, config, preprocess):
    """Frozen pretrained backbone, new one-logit head; returns (model, history, predict).

    The frozen backbone runs in eval mode (running BatchNorm statistics) and the inputs are
    not augmented, so its features are fixed: they are computed once and the head is trained
    on them, which gives the same head as training through the backbone, epochs times faster.
    """
    resnet = cli.load_resnet18(args.weights, 1, seed=args.seed)
    backbone = Backbone(resnet)

    def features(images):
        pooled = train.predict_logits(backbone, images, batch_size=32, preprocess=preprocess)
        return pooled[:, None, None, :]

    train_x, val_x = features(splits.train.images), features(splits.val.images)
    head = Head(resnet.fc)
    history = train.fit(
        head,
        (train_x, splits.train.labels),
        (val_x, splits.val.labels),
        config,
        checkpoint_dir=args.checkpoints,
        resume=args.resume,
        progress=not args.no_progress,
    )
    resnet.fc = head.fc
    return (
        resnet,
        history,
        lambda images: train.predict_logits(resnet, images, batch_size=32, preprocess=preprocess),
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the study with command-line arguments `argv`; returns what metrics.json holds."""
    args = parse_args(argv)
    quick = QUICK if args.quick else {}
    started = time.perf_counter()
    config = train.TrainConfig(
        epochs=args.epochs or quick.get("epochs", 10),
        batch_size=args.batch_size or 64,
        optimizer="adam",
        learning_rate=args.lr,
        seed=args.seed,
    )
    splits = cli.load_splits(
        data.load_birdcat,
        args,
        batch_size=config.batch_size,
        max_train=args.max_train or quick.get("max_train"),
        max_test=args.max_test or quick.get("max_test"),
    )
    if args.model == "resnet18":
        preprocess = data.make_preprocess(*data.IMAGENET_MEAN_STD, resize_to=224)
        model, history, predict = train_resnet_head(args, splits, config, preprocess)
    else:
        preprocess = data.make_preprocess(*data.CIFAR_MEAN_STD)
        model, history, predict = train_lenet(args, splits, config, preprocess)

    val_logits, test_logits = predict(splits.val.images), predict(splits.test.images)
    result = study.run_study(
        val_logits,
        splits.val.labels,
        test_logits,
        splits.test.labels,
        study.StudyConfig(seed=args.seed, **(QUICK_STUDY if args.quick else {})),
    )

    out = args.out
    figures = {}
    fig = plotting.image_grid(
        None, splits.train.images[:16], splits.train.labels[:16], splits.class_names
    )
    figures["Training images and their labels"] = plotting.save_figure(
        fig, out / "samples.png"
    ).name
    figures.update(cli.save_loss_curves(history, out))
    figures.update(study.save_study_figures(result, out))

    setup = {
        "data": splits.description,
        "images (train / val / test)": (
            f"{len(splits.train.labels)} / {len(splits.val.labels)} / {len(splits.test.labels)}"
        ),
        "classes": " = 0, ".join(splits.class_names) + " = 1",
        "model": (
            f"ResNet18 (weights: {args.weights}), frozen; a new one-logit head trained on "
            "224 x 224 ImageNet-normalised inputs"
            if args.model == "resnet18"
            else f"{args.model}, one logit, inputs normalised with mean = std = 0.5"
        ),
        "parameters": f"{models.parameter_count(model):,} "
        f"(trained: {models.parameter_count(model.fc if args.model == 'resnet18' else model):,})",
        "training": f"{config.optimizer} lr {config.learning_rate}, batch {config.batch_size}, "
        f"{history.epochs_run} epochs, BCE with logits",
        "seed": args.seed,
        "quick": args.quick,
        **cli.environment(),
    }
    metrics = {
        **result.metrics,
        "training": {
            "epochs_run": history.epochs_run,
            "train_loss": history.train_loss,
            "val_loss": history.val_loss,
            "val_accuracy": history.val_accuracy,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    report = study.write_outputs(
        out,
        title=f"Birds vs cats: calibration of {args.model}",
        setup=setup,
        metrics=metrics,
        sections=[("Calibration on the test set", study.calibration_table(result.metrics))],
        figures=figures,
    )
    print(
        f"test accuracy {metrics['test']['accuracy']:.4f}; ECE "
        f"{metrics['test']['ece_before']:.4f} -> {metrics['test']['ece_after']:.4f} at "
        f"T = {metrics['temperature']:.3f}; report: {report}"
    )
    return metrics


if __name__ == "__main__":
    main()
