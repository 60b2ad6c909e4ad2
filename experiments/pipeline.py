"""The one pipeline every experiment runs: load, train, predict, study, figures, report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from experiments import outdir
from experiments.cli import Recipe
from jaxcal import checkpoint, compile_cache, data, models, plotting, study, train

# Steps in the running mean of the training loss curve, as in the originals.
LOSS_WINDOW = 60


@dataclasses.dataclass(frozen=True)
class Trained:
    """A model an experiment trained, and how to get its logits.

    Attributes:
      model: the trained model.
      history: what `train.fit` measured.
      config: how it was trained.
      predict: inputs [N, ...] (as the splits hold them) -> logits [N] or [N, K].
      trained_parameters: how many of its parameters were trained.
    """

    model: nnx.Module
    history: train.History
    config: train.TrainConfig
    predict: Callable[[Any], jax.Array]
    trained_parameters: int


@dataclasses.dataclass(frozen=True)
class Studied:
    """A trained model's test logits and calibration study, and the figures written of them.

    Attributes:
      trained: the model and its training.
      test_logits: [N] or [N, K] logits of the test split.
      study: the calibration study (temperature fitted on the validation logits).
      figures: {caption: file} of the loss curves and the study's figures.
    """

    trained: Trained
    test_logits: jax.Array
    study: study.CalibrationStudy
    figures: dict[str, str]

    def metrics(self) -> dict[str, Any]:
        """The study's metrics and the training history, as metrics.json holds them."""
        config, history = self.trained.config, self.trained.history
        return {
            **self.study.to_json(),
            "calibrators": study.comparison_rows(self.study),
            "training": {
                "optimizer": config.optimizer,
                "learning_rate": config.learning_rate,
                "batch_size": config.batch_size,
                "micro_batch_size": history.micro_batch_size,
                "epochs_run": history.epochs_run,
                "best_epoch": history.best_epoch,
                "stopped_early": history.stopped_early,
                "train_loss": history.train_loss,
                "val_loss": history.val_loss,
                "val_accuracy": history.val_accuracy,
            },
        }


@dataclasses.dataclass(frozen=True)
class Report:
    """What an experiment adds to its report.

    Attributes:
      title: the report's heading.
      setup: its rows of the setup table (data, sizes, seed and environment are added).
      metrics: what metrics.json holds (the run time is added).
      sections: (heading, markdown) pairs.
      figures: {caption: file inside --out}, in report order.
      console: the summary printed at the end (the report's path follows).
    """

    title: str
    setup: Mapping[str, Any]
    metrics: Mapping[str, Any]
    sections: Sequence[tuple[str, str]]
    figures: Mapping[str, str]
    console: str


def batch_text(config: train.TrainConfig, history: train.History) -> str:
    """ "batch 64", or "batch 256 in micro-batches of 128" where `fit` split the batches."""
    text = f"batch {config.batch_size}"
    if history.micro_batch_size is not None:
        text += f" in micro-batches of {history.micro_batch_size}"
    return text


def fit_on_splits(
    model: nnx.Module,
    splits: data.DatasetSplits,
    config: train.TrainConfig,
    fit_options: Mapping[str, Any],
    *,
    preprocess: data.Preprocess,
    batch_size: int = 256,
    trained_parameters: int | None = None,
) -> Trained:
    """Trains `model` on the train split, validating on the val split, and wraps it with its
    eval-mode predictor (`batch_size` images per call).

    Args:
      trained_parameters: how many parameters train; default all of the model's.
    """
    history = train.fit(
        model,
        (splits.train.images, splits.train.labels),
        (splits.val.images, splits.val.labels),
        config,
        preprocess=preprocess,
        **fit_options,
    )
    return Trained(
        model,
        history,
        config,
        lambda images: train.predict_logits(
            model, images, batch_size=batch_size, preprocess=preprocess
        ),
        models.parameter_count(model) if trained_parameters is None else trained_parameters,
    )


def fit_head_on_features(
    model: nnx.Module,
    splits: data.DatasetSplits,
    config: train.TrainConfig,
    fit_options: Mapping[str, Any],
    *,
    preprocess: data.Preprocess,
    batch_size: int = 32,
) -> Trained:
    """Trains only `model`'s head (`model.head_name`) on features computed once.

    The frozen backbone runs in eval mode (running BatchNorm statistics) on unaugmented
    inputs, so its features are fixed: `model.backbone` computes them once per split and the
    head trains on those [N, D] features, which gives the same head as training through the
    backbone, epochs times faster.

    Args:
      preprocess: the evaluation preprocessing (no augmentation: it would be ignored).
      batch_size: images per call when computing features and predicting.
    """
    head = getattr(model, model.head_name)

    def features(images):
        return train.predict_logits(
            model, images, batch_size=batch_size, preprocess=preprocess, method="backbone"
        )

    history = train.fit(
        head,
        (features(splits.train.images), splits.train.labels),
        (features(splits.val.images), splits.val.labels),
        config,
        **fit_options,
    )
    return Trained(
        model,
        history,
        config,
        lambda images: train.predict_logits(
            model, images, batch_size=batch_size, preprocess=preprocess
        ),
        models.parameter_count(head),
    )


BuildAndTrain = Callable[[str | None, data.DatasetSplits, dict[str, Any]], Trained]
Describe = Callable[[pathlib.Path, data.DatasetSplits, dict[str | None, Studied]], Report]


def run(
    args: argparse.Namespace,
    recipe: Recipe,
    *,
    load: Callable[..., data.DatasetSplits],
    batch_size: int,
    build_and_train: BuildAndTrain,
    describe: Describe,
    names: Sequence[str | None] = (None,),
) -> dict[str, Any]:
    """Runs one experiment from its parsed options; returns what metrics.json holds.

    The run owns --out while it works (`outdir.own`); only process 0 writes figures and
    reports, so several processes can run the same command (checkpoints are shared). Ctrl-C
    says where the last checkpoint is and how to resume, and exits with code 130.

    Args:
      args: the parsed run options (--data, --data-dir, --out, --resume, --no-progress, ...).
      recipe: the experiment's recipe.
      load: `load(source, data_dir, seed=..., max_train=..., max_test=...)`, a `jaxcal.data`
        loader (with the experiment's own arguments bound).
      batch_size: the largest training batch: the training split must hold one.
      build_and_train: `(name, splits, fit_options) -> Trained` builds a model and trains
        it, passing `fit_options` (checkpoints, resume, progress, run identity) on to
        `train.fit`.
      describe: `(out, splits, {name: Studied}) -> Report`: the experiment's own figures
        (written into `out`), tables, metrics and summary line.
      names: the models to train, each into OUT/<name>; (None,) for one model in OUT.

    JAX's persistent compilation cache is on (`jaxcal.compile_cache`; the folder is
    `$JAXCAL_COMPILATION_CACHE`, default `~/.cache/jaxcal/jax`), so a rerun skips compiling.
    """
    compile_cache.enable_compilation_cache()
    writer = outdir.writes_outputs()
    with contextlib.ExitStack() as stack:
        report_dir = args.out
        if writer:
            try:
                stack.enter_context(
                    outdir.own(args.out, overwrite=args.overwrite, command=" ".join(sys.argv))
                )
            except outdir.FolderInUseError as error:
                sys.exit(f"error: {error}")
        else:  # the same figures, written where nobody reads them
            report_dir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            return _run(
                args, recipe, report_dir, load, batch_size, build_and_train, describe, names
            )
        except KeyboardInterrupt:
            _interrupted(args.out / "checkpoints")


def _run(args, recipe, report_dir, load, batch_size, build_and_train, describe, names) -> dict:
    """The pipeline of `run` inside the owned folder."""
    started = time.perf_counter()
    splits = load_splits(load, args, recipe, batch_size=batch_size)
    identity = {"data": fingerprint(args.data, splits), "recipe": _recipe_identity(recipe)}
    studied = {
        name: _train_and_study(name, splits, args, recipe, build_and_train, identity, report_dir)
        for name in names
    }
    report = describe(report_dir, splits, studied)
    sizes = [len(split.labels) for split in (splits.train, splits.val, splits.test)]
    setup = {
        "data": splits.description,
        "images (train / val / test)": " / ".join(map(str, sizes)),
        **report.setup,
        "seed": recipe.seed,
        "quick": args.quick,
        **environment(),
    }
    metrics = {**report.metrics, "seconds": round(time.perf_counter() - started, 1)}
    path = study.write_outputs(
        report_dir,
        title=report.title,
        setup=setup,
        metrics=metrics,
        sections=report.sections,
        figures=report.figures,
    )
    if report_dir == args.out:
        print(f"{report.console}\nreport: {path}")
    return metrics


def _train_and_study(name, splits, args, recipe, build_and_train, identity, report_dir) -> Studied:
    """Trains model `name`, predicts both held-out splits, runs the study, writes its figures."""
    out = report_dir if name is None else report_dir / name
    checkpoints = args.out / "checkpoints"
    checkpoints = checkpoints if name is None else checkpoints / name
    if args.resume and not _saved_epochs(checkpoints):
        print(
            f"note: --resume: no checkpoint in {checkpoints}; training from scratch",
            file=sys.stderr,
        )
    fit_options = {
        "checkpoint_dir": checkpoints,
        "resume": args.resume,
        "progress": not args.no_progress,
        "run_info": identity,
    }
    try:
        trained = build_and_train(name, splits, fit_options)
    except (checkpoint.ResumeMismatchError, checkpoint.CheckpointMismatchError) as error:
        lines = str(error).splitlines()
        more = f" ({len(lines) - 1} more lines)" if len(lines) > 1 else ""
        sys.exit(
            f"error: --resume: {lines[0]}{more}; resume with the run's own options, or pass "
            "--overwrite (or another --out) to start afresh"
        )
    val_logits = trained.predict(splits.val.images)
    test_logits = trained.predict(splits.test.images)
    result = study.run_study(
        val_logits, splits.val.labels, test_logits, splits.test.labels, recipe.study_config()
    )
    figures = {**save_loss_curves(trained.history, out), **study.save_study_figures(result, out)}
    if name is not None:
        figures = {caption: f"{name}/{file}" for caption, file in figures.items()}
    return Studied(trained, test_logits, result, figures)


# Recipe fields a resumed run may change: more epochs, or another study of the same model.
RESUMABLE_RECIPE_FIELDS = ("epochs", "num_temperatures", "num_resamples")


def _recipe_identity(recipe: Recipe) -> dict[str, Any]:
    """The recipe fields that must match for a run to resume."""
    fields = dataclasses.asdict(recipe)
    return {k: v for k, v in fields.items() if k not in RESUMABLE_RECIPE_FIELDS}


def fingerprint(source: str, splits: data.DatasetSplits) -> dict[str, Any]:
    """What identifies a run's data: the source, the split sizes and a SHA-256 of the arrays."""
    digest = hashlib.sha256()
    for split in (splits.train, splits.val, splits.test):
        for array in (split.images, split.labels):
            digest.update(np.ascontiguousarray(array).tobytes())
    sizes = {name: len(getattr(splits, name).labels) for name in ("train", "val", "test")}
    return {"source": source, "sizes": sizes, "sha256": digest.hexdigest()}


def _saved_epochs(checkpoints: pathlib.Path) -> list[int]:
    """The epochs with a complete checkpoint in `checkpoints` (orbax names them by number)."""
    if not checkpoints.is_dir():
        return []
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


def _interrupted(checkpoints: pathlib.Path) -> None:
    """Says where the last checkpoint is and how to continue; exits with code 130."""
    saved = sorted(
        (epoch, folder)
        for folder in [checkpoints, *sorted(p for p in checkpoints.glob("*") if p.is_dir())]
        for epoch in _saved_epochs(folder)[-1:]
    )
    if saved:
        where = ", ".join(f"{folder / str(epoch)} (epoch {epoch})" for epoch, folder in saved)
        advice = (
            f"interrupted; the last checkpoint is {where}: run the same command with --resume "
            "to continue"
        )
    else:
        advice = "interrupted before the first checkpoint: nothing to resume"
    print(advice, file=sys.stderr)
    raise SystemExit(130)


def load_splits(
    loader: Callable[..., data.DatasetSplits],
    args: argparse.Namespace,
    recipe: Recipe,
    *,
    batch_size: int,
) -> data.DatasetSplits:
    """`loader(args.data, args.data_dir, seed=..., max_train=..., max_test=...)`.

    Data that cannot be read (no TensorFlow or network for tfds, missing or damaged local
    files, too few images) ends the run with the loader's message, which names the other
    sources, instead of a traceback; so does a training split smaller than one batch.

    Raises:
      SystemExit: with the message, exit code 1.
    """
    try:
        splits = loader(
            args.data,
            args.data_dir,
            seed=recipe.seed,
            max_train=recipe.max_train,
            max_test=recipe.max_test,
        )
    except (data.DataUnavailableError, FileNotFoundError, ValueError) as error:
        sys.exit(f"error: --data {args.data}: {error}")
    if splits.train.num_examples < batch_size:
        sys.exit(
            f"error: {splits.train.num_examples} training images are fewer than one batch of "
            f"{batch_size}: raise --max-train or lower --batch-size"
        )
    return splits


def save_loss_curves(history: train.History, out: Any) -> dict[str, str]:
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
    return {caption: study.save_figure_atomic(ax.figure, out / "loss_curves.png")}


def environment() -> dict[str, str]:
    """The software and hardware a run used, for the report's setup table."""
    devices = jax.devices()
    return {
        "devices": f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})",
        "jax": jax.__version__,
        "python": platform.python_version(),
    }
