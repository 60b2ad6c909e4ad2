"""Tests for jaxcal.data.datasets: splits, the per-dataset loaders and their errors."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcal.data import datasets, local, synthetic
from jaxcal.data.datasets import DatasetSplits, Split, split_indices


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 3000),
    val_fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_indices_partition_and_determinism(n, val_fraction, seed):
    train, val = split_indices(n, val_fraction, seed)
    assert len(val) == round(val_fraction * n)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    again = split_indices(n, val_fraction, seed)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])


def test_split_depends_on_the_seed():
    a = split_indices(1000, 0.2, 0)[1]
    b = split_indices(1000, 0.2, 1)[1]
    assert len(set(a) & set(b)) < 300  # independent draws overlap by 40 on average


def test_mnist_split_is_the_original_notebooks():
    # The original: np.random.seed(0); np.random.shuffle(indices); valid = indices[:6000].
    indices = list(range(60_000))
    np.random.seed(0)
    np.random.shuffle(indices)
    _, val = split_indices(60_000, 0.1, 0)
    np.testing.assert_array_equal(val, np.sort(indices[:6000]))


@pytest.mark.slow
def test_local_birdcat_counts_and_relabelling(shared_data):
    splits = datasets.load_birdcat("local", shared_data)
    # 490 birds + 493 cats in the train batches: 983 -> 786 train + 197 val; test 100 + 104.
    assert (splits.train.num_examples, splits.val.num_examples) == (786, 197)
    assert np.bincount(splits.test.labels).tolist() == [100, 104]
    assert np.bincount(np.concatenate([splits.train.labels, splits.val.labels])).tolist() == [
        490,
        493,
    ]
    assert splits.class_names == ("bird", "cat") and splits.source == "local"
    assert "local torchvision layout" in splits.description
    raw_images, raw_labels = local.read_cifar10(shared_data, train=False)
    keep = np.isin(raw_labels, (2, 3))
    np.testing.assert_array_equal(splits.test.images, raw_images[keep])
    np.testing.assert_array_equal(splits.test.labels, raw_labels[keep] - 2)
    # The same seed gives the same split on every source with the same number of images.
    train_idx, val_idx = split_indices(983, 0.2, 0)
    pool_images, _ = local.read_cifar10(shared_data, train=True)
    pool_images = pool_images[np.isin(local.read_cifar10(shared_data, train=True)[1], (2, 3))]
    np.testing.assert_array_equal(splits.val.images, pool_images[val_idx])
    synth = datasets.load_birdcat("synthetic", max_train=983)
    synth_pool, _ = synthetic.synthetic_cifar(983, classes=(2, 3))
    np.testing.assert_array_equal(synth.val.images, synth_pool[val_idx])
    np.testing.assert_array_equal(synth.train.images, synth_pool[train_idx])


@pytest.mark.slow
def test_local_catdog_mnist_and_cats_vs_dogs(shared_data):
    catdog = datasets.load_catdog("local", shared_data, max_test=50)
    assert catdog.class_names == ("cat", "dog")
    assert catdog.train.num_examples + catdog.val.num_examples == 493 + 475
    assert catdog.test.num_examples == 50
    mnist = datasets.load_mnist("local", shared_data, pad_to_32=True)
    assert mnist.train.num_examples + mnist.val.num_examples == 17_435
    assert mnist.val.num_examples == 1744 and mnist.test.num_examples == 10_000
    assert mnist.image_shape == (32, 32, 1)
    raw_test, raw_labels = local.read_mnist(shared_data, train=False)
    np.testing.assert_array_equal(mnist.test.images[:, 2:30, 2:30], raw_test)
    assert np.all(mnist.test.images[:, :2] == 0) and np.all(mnist.test.images[:, :, 30:] == 0)
    np.testing.assert_array_equal(mnist.test.labels, raw_labels)
    stand_in = datasets.load_cats_vs_dogs("local", shared_data, image_size=40, max_train=100)
    assert stand_in.image_shape == (40, 40, 3)
    assert stand_in.train.num_examples + stand_in.val.num_examples == 100
    native = datasets.load_cats_vs_dogs("local", shared_data, image_size=None, max_train=100)
    assert native.image_shape == (32, 32, 3)


def test_synthetic_sources_have_the_real_shapes_and_say_so():
    birdcat = datasets.load_birdcat("synthetic", max_train=400, max_test=100)
    assert birdcat.image_shape == (32, 32, 3)
    assert (birdcat.train.num_examples, birdcat.val.num_examples) == (320, 80)
    assert set(np.unique(birdcat.train.labels)) == {0, 1}
    assert synthetic.SYNTHETIC_NOTE in birdcat.description
    mnist = datasets.load_mnist("synthetic", max_train=200, max_test=50)
    assert mnist.image_shape == (28, 28, 1) and mnist.val.num_examples == 20
    assert mnist.class_names == tuple("0123456789")
    cats = datasets.load_cats_vs_dogs("synthetic", image_size=48, max_train=60, max_test=20)
    assert cats.image_shape == (48, 48, 3) and cats.class_names == ("cat", "dog")
    assert synthetic.SYNTHETIC_NOTE in cats.description
    cifar10 = datasets.load_dataset("cifar10", "synthetic", max_train=100, max_test=10)
    assert cifar10.num_classes == 10 and cifar10.val.num_examples == 10


def test_synthetic_defaults_are_the_real_split_sizes():
    splits = datasets.load_birdcat("synthetic")
    assert (splits.train.num_examples, splits.val.num_examples) == (8000, 2000)
    assert splits.test.num_examples == 2000
    # data_seed changes the generated images, seed only the split.
    reseeded = datasets.load_birdcat("synthetic", seed=1, max_train=100, max_test=20)
    regenerated = datasets.load_birdcat("synthetic", data_seed=1, max_train=100, max_test=20)
    np.testing.assert_array_equal(reseeded.test.images, splits.test.images[:20])
    assert not np.array_equal(regenerated.test.images, splits.test.images[:20])


def _fake_cifar(root, train_labels, test_labels):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, labels in [
        *zip(local.CIFAR10_TRAIN_FILES, train_labels, strict=True),
        ("test_batch", test_labels),
    ]:
        data = np.zeros((len(labels), 3072), np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": list(labels)}, f, protocol=2)


def test_missing_class_names_the_file(tmp_path):
    _fake_cifar(tmp_path, [[2, 3, 5]] * 5, [3, 5, 5])  # no birds in the test batch
    with pytest.raises(ValueError, match=r"no images of class 2 \(bird\) in .*test_batch"):
        datasets.load_birdcat("local", tmp_path)
    splits = datasets.load_catdog("local", tmp_path, val_fraction=0.4)
    assert splits.train.num_examples + splits.val.num_examples == 10
    assert splits.test.labels.tolist() == [0, 1, 1]


def test_bad_arguments_are_rejected_before_loading(tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        datasets.load_birdcat("torchvision")
    with pytest.raises(ValueError, match="val_fraction"):
        datasets.load_birdcat("synthetic", val_fraction=1.0)
    with pytest.raises(ValueError, match="seed"):
        datasets.load_mnist("synthetic", seed=-1)
    with pytest.raises(ValueError, match="max_train must be at least the number of classes"):
        datasets.load_mnist("synthetic", max_train=5)
    with pytest.raises(ValueError, match="pad_to_32"):
        datasets.load_mnist("synthetic", pad_to_32="yes")
    with pytest.raises(ValueError, match="image_size"):
        datasets.load_cats_vs_dogs("synthetic", image_size=0)
    with pytest.raises(ValueError, match="name must be one of"):
        datasets.load_dataset("imagenet", "synthetic")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        datasets.load_birdcat("local", tmp_path)


def test_dataset_splits_checks_consistency():
    good = Split(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int32))
    other = Split(np.zeros((2, 5, 5, 3), np.uint8), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="shapes differ"):
        DatasetSplits(good, good, other, ("a", "b"), "synthetic", "")
    wrong_labels = Split(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="labels must be int32"):
        DatasetSplits(good, wrong_labels, good, ("a", "b"), "synthetic", "")
