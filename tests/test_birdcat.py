"""Tests of `experiments.birdcat`: its outputs on synthetic and real data, options and resume."""

import json
import pathlib
import re
import time

import matplotlib.image
import pytest

from experiments import birdcat

VAL_KEYS = {"nll_before", "nll_after", "ece_before", "ece_after"}
TEST_KEYS = {
    "accuracy",
    "ece_before",
    "ece_after",
    "mce_before",
    "mce_after",
    "nll_before",
    "nll_after",
    "brier_before",
    "brier_after",
    "ece_ci_before",
    "ece_ci_after",
}
FIGURES = {
    "samples.png",
    "loss_curves.png",
    "reliability_before_after.png",
    "scale_effect.png",
    "temperature_overlay.png",
    "metrics_vs_temperature.png",
    "calibrators.png",
    "smooth_reliability_before_after.png",
}
# float32 metrics computed from the same logits: the fitted T minimises the validation NLL,
# so it can only exceed the NLL at T = 1 by float32 rounding of a sum over a few hundred terms.
NLL_TOLERANCE = 1e-6
# 600 synthetic images (480 train, 120 val), 300 test, 6 epochs: LeNet-5 reaches ~0.8 here
# (chance 0.5); 0.65 leaves a margin of several binomial standard errors (0.03 at n = 300).
SYNTHETIC_RUN = ["--data", "synthetic", "--max-train", "600", "--max-test", "300"]
SYNTHETIC_EPOCHS = 6


def check_calibration_metrics(metrics: dict, *, min_accuracy: float) -> None:
    """The keys the issue lists, and values a calibration study can produce."""
    assert metrics["val"].keys() >= VAL_KEYS
    assert metrics["test"].keys() >= TEST_KEYS
    assert metrics["temperature"] > 0
    assert metrics["num_bins"] == 15 and metrics["binary"] == "positive"
    val, test = metrics["val"], metrics["test"]
    assert val["nll_after"] <= val["nll_before"] + NLL_TOLERANCE
    for split, name in [(val, "ece_before"), (val, "ece_after")] + [
        (test, f"{m}_{when}") for m in ("ece", "mce") for when in ("before", "after")
    ]:
        assert 0.0 <= split[name] <= 1.0, name
    assert test["ece_before"] <= test["mce_before"] + 1e-7
    for when in ("before", "after"):
        lo, hi = test[f"ece_ci_{when}"]
        assert 0.0 <= lo <= hi <= 1.0
        assert 0.0 <= test[f"brier_{when}"] <= 1.0  # binary Brier: a mean squared probability
    assert min_accuracy < test["accuracy"] <= 1.0


def check_report(out: pathlib.Path, expected_figures: set[str]) -> None:
    """report.md links every PNG in `out`, each link resolves, and each PNG is a real image."""
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == expected_figures
    report = (out / "report.md").read_text()
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report))
    assert linked == pngs
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(out / name)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
        assert pixels[..., :3].std() > 0.01, f"{name} is blank"


@pytest.mark.slow
def test_synthetic_run_then_resume(tmp_path, capsys):
    """A run's outputs; a rerun into its folder is refused, and with --resume it continues."""
    out = tmp_path / "run"
    argv = [*SYNTHETIC_RUN, "--epochs", str(SYNTHETIC_EPOCHS), "--out", str(out), "--no-progress"]
    first = birdcat.main(argv)
    check_synthetic_outputs(out, first)

    with pytest.raises(SystemExit) as exit_info:
        birdcat.main([*SYNTHETIC_RUN, "--epochs", "1", "--out", str(out), "--no-progress"])
    assert exit_info.value.code == 2
    assert "--resume" in capsys.readouterr().err

    epochs = SYNTHETIC_EPOCHS + 1
    argv = [*SYNTHETIC_RUN, "--epochs", str(epochs), "--resume", "--out", str(out)]
    resumed = birdcat.main([*argv, "--no-progress"])
    training = resumed["training"]
    assert training["epochs_run"] == epochs and len(training["val_loss"]) == epochs
    # The first epochs are the earlier run's, read back from its checkpoints, not retrained.
    assert training["train_loss"][:SYNTHETIC_EPOCHS] == first["training"]["train_loss"]
    assert training["val_loss"][:SYNTHETIC_EPOCHS] == first["training"]["val_loss"]
    check_calibration_metrics(resumed, min_accuracy=0.65)
    check_report(out, FIGURES)


def check_synthetic_outputs(out: pathlib.Path, returned: dict) -> None:
    """metrics.json, report.md and the figures of the 6-epoch synthetic run."""
    metrics = json.loads((out / "metrics.json").read_text())
    assert {k: v for k, v in metrics.items() if k != "setup"} == returned
    check_calibration_metrics(metrics, min_accuracy=0.65)
    assert metrics["val"]["size"] == 120 and metrics["test"]["size"] == 300
    training = metrics["training"]
    assert training["epochs_run"] == SYNTHETIC_EPOCHS
    assert len(training["val_loss"]) == SYNTHETIC_EPOCHS
    assert training["train_loss"][-1] < training["train_loss"][0]
    setup = metrics["setup"]
    assert "synthetic" in setup["data"]
    assert setup["images (train / val / test)"] == "480 / 120 / 300"
    assert setup["classes"] == "bird = 0, cat = 1"
    assert setup["parameters"].startswith("61,241 ")  # LeNet-5 with one logit, as in torch
    report = (out / "report.md").read_text()
    assert f"T = {metrics['temperature']:.4f}" in report
    test = metrics["test"]
    assert f"| ECE | {test['ece_before']:.4f} | {test['ece_after']:.4f} |" in report
    check_report(out, FIGURES)


@pytest.mark.slow
def test_real_cifar10_files(shared_data, tmp_path):
    out = tmp_path / "real"
    argv = ["--data", "local", "--data-dir", str(shared_data), "--epochs", "6"]
    argv += ["--calibrators", "temperature"]  # every calibrator: test_synthetic_run_then_resume
    metrics = birdcat.main([*argv, "--out", str(out), "--no-progress"])
    # The shared subset holds 983 bird/cat training and 204 test images. After 6 epochs on 786
    # of them LeNet-5 scores 0.67-0.72 for seeds 0-2 (chance 0.5, standard error 0.035).
    check_calibration_metrics(metrics, min_accuracy=0.6)
    setup = json.loads((out / "metrics.json").read_text())["setup"]
    assert "CIFAR-10 bird vs cat from" in setup["data"] and "synthetic" not in setup["data"]
    assert setup["images (train / val / test)"] == "786 / 197 / 204"
    check_report(out, FIGURES - {"calibrators.png"})  # one calibrator: no comparison


@pytest.fixture(scope="session")
def resnet18_npz(tmp_path_factory, torchvision_resnet18_state_dict) -> pathlib.Path:
    """Converted-format ResNet18 weights (random values; nothing can be downloaded here)."""
    from jaxcal import models

    path = tmp_path_factory.mktemp("weights") / "resnet18.npz"
    models.save_npz(torchvision_resnet18_state_dict, path)
    return path


@pytest.mark.slow
def test_resnet18_trains_only_a_new_head(resnet18_npz, tmp_path):
    out = tmp_path / "resnet"
    argv = ["--data", "synthetic", "--model", "resnet18", "--weights", str(resnet18_npz)]
    metrics = birdcat.main(
        [*argv, "--max-train", "80", "--max-test", "40", "--epochs", "2", "--batch-size", "16"]
        + ["--calibrators", "temperature", "--out", str(out), "--no-progress"]
    )
    setup = json.loads((out / "metrics.json").read_text())["setup"]
    # torchvision's 11,689,512 less the 1000-class head plus a one-logit head (512 + 1).
    assert setup["parameters"] == "11,177,025 (trained: 513)"
    assert "frozen" in setup["model"] and "224 x 224" in setup["model"]
    assert metrics["training"]["epochs_run"] == 2
    assert metrics["val"]["nll_after"] <= metrics["val"]["nll_before"] + NLL_TOLERANCE
    assert metrics["val"]["size"] == 16 and metrics["test"]["size"] == 40
    check_report(out, FIGURES - {"calibrators.png"})  # one calibrator: no comparison


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        birdcat.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--data {tfds,local,embedded,synthetic}",
        "--data-dir",
        "--model {lenet5,lenet5_bn,resnet18,densenet121}",
        "--train {head,layer4,all}",
        "--image-size",
        "--weights",
        "--epochs",
        "--batch-size",
        "--seed",
        "--out",
        "--quick",
        "--resume",
    ):
        assert option in text


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "-4"], "--batch-size"),
        (["--max-train", "0"], "--max-train"),
        (["--max-test", "-1"], "--max-test"),
        (["--lr", "0"], "--lr"),
        (["--seed", "-1"], "--seed"),
        (["--epochs", "two"], "--epochs"),
        (["--model", "vgg16"], "--model"),
        (["--data", "imagenet"], "--data"),
        (["--weights", "resnet18.npz"], "--weights"),
        (["--unknown"], "--unknown"),
    ],
)
def test_bad_options_exit_2_naming_the_option(argv, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        birdcat.main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_resnet18_without_weights_says_how_to_get_them(tmp_path, capsys):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        birdcat.main(["--data", "synthetic", "--model", "resnet18", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "--weights random" in err and ".npz" in err
    assert time.perf_counter() - started < 5  # refused before any data is loaded


def test_resnet18_with_a_missing_weights_file(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(SystemExit) as exit_info:
        birdcat.main(["--model", "resnet18", "--weights", str(missing), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"--weights: no such file {missing}" in capsys.readouterr().err


def test_tfds_offline_fails_fast_naming_the_alternatives(tmp_path):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        birdcat.main(
            ["--data", "tfds", "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "o")]
        )
    assert time.perf_counter() - started < 30
    message = str(exit_info.value.code)
    assert message.startswith("error: --data tfds:")
    assert "--data local" in message and "--data synthetic" in message
    assert not (tmp_path / "o").exists()


def test_too_few_images_for_a_batch(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        birdcat.main(["--data", "synthetic", "--max-train", "40", "--out", str(tmp_path)])
    message = str(exit_info.value.code)
    assert "fewer than one batch of 64" in message and "--max-train" in message
