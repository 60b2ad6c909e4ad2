"""Tests for the embedded real subset: checksum, contents, rebuild, splits equal to local's."""

import hashlib
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxcal import data
from jaxcal.data import embedded

REPO = pathlib.Path(__file__).resolve().parents[1]
# The sha256 scripts/build_embedded_data.py printed for the shipped file.
RECORDED_SHA256 = "e9a0ae9ec70888011ea47d5cb183577f78e847f08e16092a2781ba7d5df1bc62"


def _build_script():
    spec = importlib.util.spec_from_file_location(
        "build_embedded_data", REPO / "scripts" / "build_embedded_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_splits_equal(a: data.DatasetSplits, b: data.DatasetSplits) -> None:
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name).images, getattr(b, name).images)
        np.testing.assert_array_equal(getattr(a, name).labels, getattr(b, name).labels)
    assert a.class_names == b.class_names


def test_shipped_file_matches_recorded_sha256():
    digest = hashlib.sha256(embedded.path().read_bytes()).hexdigest()
    assert digest == RECORDED_SHA256 == embedded.SHA256
    assert embedded.path().stat().st_size < 8_000_000


def test_contents_counts_and_provenance():
    images, labels = embedded.read_cifar10(train=True)
    assert images.shape == (1458, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    # ../shared/data/README.md: bird 490 / 493 cat / 475 dog (train), 100 / 104 / 87 (test).
    assert np.bincount(labels, minlength=6)[[2, 3, 5]].tolist() == [490, 493, 475]
    test_labels = embedded.read_cifar10(train=False)[1]
    assert np.bincount(test_labels, minlength=6)[[2, 3, 5]].tolist() == [100, 104, 87]
    batch, row = embedded.cifar10_rows(train=True)
    assert set(np.unique(batch).tolist()) == {1, 2, 3, 4, 5}
    # File order: sorted by (batch, row), rows within the 1,017 read from each batch.
    order = batch.astype(np.int64) * 10_000 + row
    assert np.all(np.diff(order) > 0) and row.min() >= 0 and row.max() < 1017
    digits, digit_labels = embedded.read_mnist(train=True)
    assert digits.shape == (8000, 28, 28, 1) and digit_labels.shape == (8000,)
    assert set(np.unique(digit_labels).tolist()) == set(range(10))
    np.testing.assert_array_equal(embedded.mnist_rows(train=False), np.arange(2000))
    note = embedded.provenance()
    assert note["cifar10"]["counts"]["train"] == {"bird": 490, "cat": 493, "dog": 475}
    files = [s["file"] for s in note["sources"]["cifar_train"]]
    assert files == [f"cifar-10-batches-py/data_batch_{k}" for k in range(1, 6)]
    assert all(s["is_official_file"] for s in note["sources"]["mnist_test"])


def test_arrays_are_read_only():
    images, _ = embedded.read_cifar10(train=True)
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0, 0, 0] = 1


def test_damaged_file_is_refused(monkeypatch):
    embedded._arrays.cache_clear()
    monkeypatch.setattr(embedded, "SHA256", "0" * 64)
    try:
        with pytest.raises(ValueError, match="damaged or was rebuilt"):
            embedded.read_mnist(train=True)
    finally:
        embedded._arrays.cache_clear()


def test_description_says_small_real_subset_with_split_sizes():
    splits = data.load_birdcat("embedded", seed=3)
    assert splits.source == "embedded"
    assert "1,187 real images" in splits.description
    assert "small subset, not the full dataset" in splits.description
    assert splits.description.endswith("786 train / 197 val / 204 test")
    assert splits.class_names == ("bird", "cat")
    digits = data.load_mnist("embedded", max_train=1000, max_test=500)
    assert digits.description.endswith("900 train / 100 val / 500 test")


def test_classes_outside_the_subset_raise():
    with pytest.raises(ValueError, match="bird, cat and dog only, not .*airplane"):
        data.load_cifar10("embedded")


def test_embedded_ignores_data_dir_and_pads_mnist():
    digits = data.load_mnist("embedded", "/nonexistent", pad_to_32=True, max_train=100)
    assert digits.image_shape == (32, 32, 1)
    assert digits.description.endswith("zero-padded to 32 x 32; 90 train / 10 val / 2,000 test")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 11])
def test_split_is_the_local_split_for_the_same_seed(shared_data, seed):
    _assert_splits_equal(
        data.load_birdcat("embedded", seed=seed), data.load_birdcat("local", shared_data, seed=seed)
    )
    _assert_splits_equal(
        data.load_catdog("embedded", seed=seed, max_train=500),
        data.load_catdog("local", shared_data, seed=seed, max_train=500),
    )
    _assert_splits_equal(
        data.load_mnist("embedded", seed=seed),
        data.load_mnist("local", shared_data, seed=seed, max_train=8000, max_test=2000),
    )


@pytest.mark.slow
def test_rebuild_from_source_files_reproduces_every_array(shared_data):
    rebuilt = _build_script().build_arrays(shared_data)
    with np.load(embedded.path(), allow_pickle=False) as shipped:
        assert sorted(shipped.files) == sorted(rebuilt)
        for name, array in rebuilt.items():
            assert shipped[name].dtype == array.dtype, name
            np.testing.assert_array_equal(shipped[name], array, err_msg=name)


@pytest.mark.slow
def test_non_editable_install_ships_and_loads_the_file(tmp_path):
    source, wheels, target = tmp_path / "source", tmp_path / "wheels", tmp_path / "site"
    # A copy of the project, so that building leaves nothing in the checkout.
    shutil.copytree(
        REPO / "jaxcal", source / "jaxcal", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("jaxcal-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", target, wheel], check=True)
    code = (
        "from jaxcal.data import embedded; "
        "print(embedded.__file__); print(embedded.read_cifar10(train=False)[0].shape)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    ).stdout.split("\n")
    assert out[0].startswith(str(target)) and out[1] == "(291, 32, 32, 3)"


def test_cats_vs_dogs_uses_the_cifar_cat_dog_stand_in():
    stand_in = data.load_cats_vs_dogs("embedded", image_size=None, seed=2)
    _assert_splits_equal(stand_in, data.load_catdog("embedded", seed=2))
    assert stand_in.class_names == ("cat", "dog")
    assert "cat vs dog (stand-in for cats vs dogs): 1,159 real images" in stand_in.description
    assert stand_in.description.endswith("774 train / 194 val / 191 test")


def test_experiments_default_to_the_embedded_subset(tmp_path, capsys):
    from experiments import birdcat, mnist

    args, _ = birdcat.parse_args(["--out", str(tmp_path)])
    assert args.data == "embedded"
    args, _ = mnist.parse_args(["--out", str(tmp_path)])
    assert args.data == "embedded"
    with pytest.raises(SystemExit):
        birdcat.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: embedded, never a download" in text
    assert "983 train+val / 204 test" in text
