"""Tests of `experiments.mnist`: the three models' metrics, report and figures, and its options."""

import json
import pathlib
import re
import time

import matplotlib.image
import numpy as np
import pytest

from experiments import mnist
from jaxcal import data

MODEL_FIGURES = {
    "loss_curves.png",
    "per_digit_accuracy.png",
    "predictions.png",
    "reliability_before_after.png",
    "scale_effect.png",
    "temperature_overlay.png",
    "metrics_vs_temperature.png",
    "calibrators.png",
    "smooth_reliability_before_after.png",
}
# torch's parameter counts of the originals' models.
PARAMETERS = {"mlp": 669_706, "cnn": 61_706, "lenet5_classic": 61_706}
MAX_TRAIN, MAX_TEST = 2000, 500
# Plain SGD 0.01 (the originals' recipe) needs ~1,000 steps to leave chance on the synthetic
# digits: batch 8 gives 1,350 steps in 6 epochs of 1,800 images. Every model then scores
# 0.5-0.65 on 500 test digits (chance 0.1; standard error at most 0.022).
RUN = ["--data", "synthetic", "--max-train", str(MAX_TRAIN), "--max-test", str(MAX_TEST)]
RUN += ["--batch-size", "8", "--epochs", "6", "--quick", "--no-progress"]


@pytest.mark.slow
def test_all_models_train_calibrate_and_report(tmp_path):
    out = tmp_path / "run"
    returned = mnist.main([*RUN, "--out", str(out)])
    check_metrics(out, returned)
    check_report(out, returned)


def test_quick_recipe_trains_past_chance_on_the_embedded_digits():
    quick = mnist.MnistRecipe().quick()
    embedded = data.load_mnist("embedded", max_train=quick.max_train, max_test=quick.max_test)
    steps = quick.epochs * (embedded.train.labels.shape[0] // 64)
    assert quick.max_train == mnist.QUICK_TRAIN and steps >= 1500  # plain SGD 0.01's need


@pytest.mark.slow
def test_quick_cnn_on_the_embedded_digits_is_trained(tmp_path):
    # 5 quick epochs (563 steps) left this CNN at 0.429 test accuracy; 14 give 0.900 here.
    returned = mnist.main(["--quick", "--model", "cnn", "--no-progress", "--out", str(tmp_path)])
    cnn = returned["models"]["cnn"]
    assert cnn["training"]["epochs_run"] == 14 and cnn["test"]["size"] == 1000
    assert cnn["test"]["accuracy"] > 0.8  # chance 0.1; standard error ~0.01


def check_metrics(out: pathlib.Path, returned: dict) -> None:
    """Each model's recipe, parameter count, accuracy and calibration metrics."""
    stored = json.loads((out / "metrics.json").read_text())
    assert {k: v for k, v in stored.items() if k != "setup"} == returned
    assert list(returned["models"]) == ["mlp", "cnn", "lenet5_classic"]
    test_labels = data.load_mnist("synthetic", max_train=MAX_TRAIN, max_test=MAX_TEST).test.labels
    counts = np.bincount(test_labels, minlength=10)
    for name, m in returned["models"].items():
        assert m["parameters"] == PARAMETERS[name]
        assert m["binary"] is None and m["num_bins"] == 15  # top-label ECE of [N, 10] logits
        val, test = m["val"], m["test"]
        assert val["size"] == MAX_TRAIN // 10 and test["size"] == MAX_TEST
        # The fitted T minimises the validation NLL: float32 rounding is all it can lose.
        assert val["nll_after"] <= val["nll_before"] + 1e-6
        for key in ("ece_before", "ece_after", "mce_before", "mce_after"):
            assert 0.0 <= test[key] <= 1.0 and 0.0 <= val.get(key, 0.0) <= 1.0
        for when in ("before", "after"):
            lo, hi = test[f"ece_ci_{when}"]
            assert 0.0 <= lo <= hi <= 1.0
            assert 0.0 <= test[f"brier_{when}"] <= 2.0  # multiclass Brier: sum over classes
        assert test["accuracy"] > 0.3, name
        assert m["test_loss"] == test["nll_before"]
        per_digit = np.asarray(m["per_digit_accuracy"])
        assert per_digit.shape == (10,) and np.all((per_digit >= 0) & (per_digit <= 1))
        # Accuracy is the count-weighted mean of the per-digit accuracies (float32 counts).
        assert float(per_digit @ counts / counts.sum()) == pytest.approx(test["accuracy"], abs=1e-6)
        training = m["training"]
        assert training["epochs_run"] == 6 and training["batch_size"] == 8
        assert training["train_loss"][-1] < training["train_loss"][0]
    recipes = {name: m["training"] for name, m in returned["models"].items()}
    assert recipes["mlp"]["optimizer"] == "sgd" and recipes["mlp"]["learning_rate"] == 0.01
    assert recipes["lenet5_classic"]["optimizer"] == "adam"
    assert recipes["lenet5_classic"]["learning_rate"] == 1e-4


def check_report(out: pathlib.Path, returned: dict) -> None:
    """report.md holds the overview, per-model tables and every figure, each a real PNG."""
    pngs = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert pngs == {f"{name}/{figure}" for name in PARAMETERS for figure in MODEL_FIGURES}
    report = (out / "report.md").read_text()
    assert set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)) == pngs
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(out / name)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
        assert pixels[..., :3].std() > 0.01, f"{name} is blank"
    for name, m in returned["models"].items():
        row = f"| {name} | {m['training']['optimizer']} {m['training']['learning_rate']}, batch 8"
        assert row in report
        assert f"accuracy {m['test']['accuracy']:.4f}" in report
    # Per-layer shape tables: the classic LeNet sees 32 x 32 (RandomCrop(32, padding=4) of the
    # 28 x 28 digits), the MLP and the CNN the 28 x 28 digits.
    assert "float32[1,32,32,1]" in report and "float32[1,28,28,1]" in report
    assert "hidden/0" in report
    assert "Per-digit test accuracy: 0: " in report


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        mnist.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model {mlp,cnn,lenet5_classic,all}", "--data", "--epochs", "--quick"):
        assert option in text


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--model", "resnet18"], "--model"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--max-test", "0"], "--max-test"),
    ],
)
def test_bad_options_exit_2_naming_the_option(argv, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mnist.main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_tfds_offline_fails_fast_naming_the_alternatives(tmp_path):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        mnist.main(
            ["--data", "tfds", "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "out")]
        )
    assert time.perf_counter() - started < 30
    message = str(exit_info.value.code)
    assert "--data local" in message and "--data synthetic" in message


def test_too_few_images_is_refused_with_the_loaders_reason(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        mnist.main(["--data", "synthetic", "--max-train", "5", "--out", str(tmp_path)])
    assert "max_train must be at least the number of classes (10)" in str(exit_info.value.code)
