"""The experiments' pretrained-model options: --weights imagenet|FILE, --model densenet121,
--train head|layer4|all and --image-size, and their one-line errors."""

import os
import time

import numpy as np
import pytest
from densenet_reference import densenet121_shapes, random_state_dict
from flax import nnx
from hub_cache import populate_hub_cache
from huggingface_hub import constants
from safetensors.numpy import save_file

from experiments import birdcat, catsdogs
from jaxcal import data, models

TINY = ["--data", "synthetic", "--max-train", "100", "--max-test", "40", "--no-progress"]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.mark.parametrize("option", [["--train", "all"], ["--image-size", "64"], ["--weights", "x"]])
def test_pretrained_options_go_with_a_pretrained_model(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        birdcat.main([*option, "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert f"{option[0]} goes with --model resnet18 or densenet121" in capsys.readouterr().err


@pytest.mark.parametrize("main", [birdcat.main, catsdogs.main])
def test_imagenet_offline_fails_at_once_before_loading_data(main, offline_hub, tmp_path, capsys):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        main(["--model", "densenet121", "--weights", "imagenet", "--out", str(tmp_path / "o")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --weights imagenet: ")
    assert "--weights FILE" in err and "pip install 'jaxcal[hub]'" in err
    assert "python -m jaxcal.models.convert --model densenet121" in err
    assert time.perf_counter() - started < 5  # the default --data tfds was never touched
    assert not (tmp_path / "o").exists() and not any(offline_hub.iterdir())


def test_garbage_and_mismatched_weights_files_are_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(4000))
    wrong = tmp_path / "wrong.npz"
    models.save_npz({"conv.weight": np.zeros((2, 3), np.float32)}, wrong)
    for path, words in [
        (garbage, "is not an .npz archive of plain arrays"),
        (wrong, "holds none of torchvision's ResNet18 keys"),
    ]:
        argv = [*TINY, "--model", "resnet18", "--weights", str(path)]
        with pytest.raises(SystemExit) as info:
            birdcat.main([*argv, "--out", str(tmp_path / path.stem)])
        message = str(info.value.code)
        assert message.startswith(f"error: --weights {path}: ") and "\n" not in message
        assert words in message and "pickle" not in message


def _flat(model):
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


@pytest.mark.slow
def test_densenet121_layer4_trains_the_last_block_with_its_batchnorm(tmp_path):
    state = random_state_dict(densenet121_shapes(), seed=5)
    weights = tmp_path / "densenet121.safetensors"
    save_file(state, weights)
    before = _flat(models.densenet121_from_torchvision(state, num_classes=1))
    recipe = birdcat.BirdCatRecipe(
        model="densenet121", weights=str(weights), epochs=1, batch_size=16, image_size=32
    )
    assert recipe.trains == "layer4"  # the second original's fine-tune
    splits = data.load_birdcat("synthetic", max_train=80, max_test=16)
    trained = birdcat.train_pretrained(recipe, splits, {"progress": False})
    after = _flat(trained.model)
    parts = ("denseblock4", "norm5", "classifier")
    assert trained.trained_parameters == sum(
        models.parameter_count(getattr(trained.model, p)) for p in parts
    )
    changed = {
        p for p in before if p[0] != "classifier" and not np.array_equal(before[p], after[p])
    }
    # Frozen parts keep their weights and, in eval mode, their BatchNorm statistics; the last
    # block's weights and running statistics (train mode) move.
    assert all(p[0] in parts for p in changed)
    assert ("denseblock4", "denselayer16", "conv2", "kernel") in changed
    assert ("norm5", "mean") in changed and (
        "denseblock4",
        "denselayer1",
        "norm1",
        "var",
    ) in changed
    assert trained.predict(splits.test.images).shape == (16,)


@pytest.mark.slow
def test_resnet18_full_fine_tune_from_the_hub_cache(offline_hub, torchvision_resnet18_state_dict):
    populate_hub_cache(offline_hub, "timm/resnet18.tv_in1k", torchvision_resnet18_state_dict)
    recipe = birdcat.BirdCatRecipe(
        model="resnet18", weights="imagenet", train="all", epochs=1, batch_size=16, image_size=32
    )
    splits = data.load_birdcat("synthetic", max_train=80, max_test=16)
    trained = birdcat.train_pretrained(recipe, splits, {"progress": False})
    before = _flat(models.load_model("resnet18", "imagenet", 1))
    after = _flat(trained.model)
    assert trained.trained_parameters == models.parameter_count(trained.model)
    for path in [("conv1", "kernel"), ("bn1", "mean"), ("layer1", 0, "conv1", "kernel")]:
        assert not np.array_equal(before[path], after[path]), path


@pytest.mark.slow
def test_catsdogs_head_on_cached_features(tmp_path, torchvision_resnet18_state_dict):
    weights = tmp_path / "resnet18.safetensors"
    save_file(torchvision_resnet18_state_dict, weights)
    argv = [*TINY, "--weights", str(weights), "--train", "head", "--image-size", "32"]
    argv += ["--calibrators", "temperature"]  # the study's calibrators: tests/test_catsdogs.py
    metrics = catsdogs.main([*argv, "--epochs", "1", "--out", str(tmp_path / "o")])
    assert metrics["training"]["epochs_run"] == 1
    report = (tmp_path / "o" / "report.md").read_text()
    assert "ResNet18 (weights: " in report and "trained: fc" in report
    assert f"(trained: {512 * 2 + 2:,})" in report
