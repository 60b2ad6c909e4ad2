"""Tests of `experiments.catsdogs`: a transfer-learning run, its classification and calibration."""

import json
import pathlib
import re

import matplotlib.image
import numpy as np
import pytest

from experiments import catsdogs

FIGURES = {
    "loss_curves.png",
    "confusion_matrix.png",
    "roc.png",
    "predictions.png",
    "reliability_before_after.png",
    "scale_effect.png",
    "temperature_overlay.png",
    "metrics_vs_temperature.png",
    "calibrators.png",
    "smooth_reliability_before_after.png",
}
EPOCHS, PATIENCE = 4, 1


@pytest.mark.slow
def test_transfer_learning_run(tmp_path, torchvision_resnet18_state_dict):
    """One run on torchvision-format weights (.pth, read with torch.load as users do).

    Random weights carry no features that tell the synthetic cats from dogs, so accuracy is
    not asserted to beat chance here; the classification, early-stopping and calibration
    outputs are checked against each other instead.
    """
    torch = pytest.importorskip("torch")
    weights = tmp_path / "resnet18.pth"
    state = torchvision_resnet18_state_dict
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, weights)
    out = tmp_path / "run"
    argv = ["--data", "synthetic", "--weights", str(weights), "--image-size", "32"]
    argv += ["--max-train", "120", "--max-test", "60", "--batch-size", "16", "--lr", "1e-4"]
    argv += ["--epochs", str(EPOCHS), "--patience", str(PATIENCE), "--out", str(out)]
    metrics = catsdogs.main([*argv, "--no-progress"])
    check_classification(metrics)
    check_early_stopping(metrics)
    check_calibration_and_report(out, metrics)


def check_classification(metrics: dict) -> None:
    """Accuracy, precision, recall and F1 agree with the confusion matrix (dog = positive)."""
    c = metrics["classification"]
    (tn, fp), (fn, tp) = c["confusion_matrix"]
    assert tn + fp + fn + tp == metrics["test"]["size"] == 60
    # float32 accuracy from the logits vs exact counts.
    assert c["accuracy"] == pytest.approx((tp + tn) / 60, abs=1e-6)
    assert c["accuracy"] == metrics["test"]["accuracy"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    assert c["precision"] == pytest.approx(precision, abs=1e-12)
    assert c["recall"] == pytest.approx(recall, abs=1e-12)
    assert c["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0, abs=1e-12)
    assert 0.0 <= c["roc_auc"] <= 1.0


def check_early_stopping(metrics: dict) -> None:
    """The best epoch is the one with the highest validation accuracy, and it is kept."""
    t = metrics["training"]
    assert t["best_epoch"] == int(np.argmax(t["val_accuracy"])) + 1
    assert t["stopped_early"] == (t["epochs_run"] < EPOCHS)
    if t["stopped_early"]:
        assert t["epochs_run"] - t["best_epoch"] == PATIENCE
    # The calibration study's validation logits come from the restored best epoch: their mean
    # cross-entropy is that epoch's validation loss (both eval mode; float32, 48 images).
    assert metrics["val"]["nll_before"] == pytest.approx(
        t["val_loss"][t["best_epoch"] - 1], rel=1e-4
    )


def check_calibration_and_report(out: pathlib.Path, metrics: dict) -> None:
    """Calibration metrics in range, the setup and tables in report.md, every figure linked."""
    val, test = metrics["val"], metrics["test"]
    assert val["nll_after"] <= val["nll_before"] + 1e-6  # T minimises the validation NLL
    assert metrics["binary"] is None  # a 2-class softmax head: top-label ECE
    for key in ("ece_before", "ece_after", "mce_before", "mce_after"):
        assert 0.0 <= test[key] <= 1.0
    for when in ("before", "after"):
        lo, hi = test[f"ece_ci_{when}"]
        assert 0.0 <= lo <= hi <= 1.0
    setup = json.loads((out / "metrics.json").read_text())["setup"]
    # torchvision's 11,689,512 less the 1000-class head plus a 2-class one; layer4 + fc train.
    assert setup["parameters"] == "11,177,538 (trained: 8,394,754)"
    assert setup["input"] == "32 x 32, ImageNet normalisation"
    report = (out / "report.md").read_text()
    assert "| precision (dog = positive) |" in report
    assert f"{metrics['classification']['confusion_matrix']}" in report
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == FIGURES
    assert set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)) == pngs
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(out / name)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
        assert pixels[..., :3].std() > 0.01, f"{name} is blank"


def test_weights_are_required(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        catsdogs.main(["--data", "synthetic", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--weights random" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--image-size", "0"], "--image-size"),
        (["--patience", "0"], "--patience"),
        (["--lr", "-1e-5"], "--lr"),
        (["--data", "imagenet"], "--data"),
    ],
)
def test_bad_options_exit_2_naming_the_option(argv, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        catsdogs.main([*argv, "--weights", "random", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        catsdogs.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--weights", "--image-size", "--patience", "--lr", "--data", "--resume"):
        assert option in text


def test_tfds_offline_fails_fast_naming_the_alternatives(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        catsdogs.main(
            [
                "--weights",
                "random",
                "--data",
                "tfds",
                "--data-dir",
                str(tmp_path / "tfds"),
                "--out",
                str(tmp_path),
            ]
        )
    message = str(exit_info.value.code)
    assert "--data local" in message and "--data synthetic" in message
