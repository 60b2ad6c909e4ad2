"""Tests for jaxcal.data.local on the real files in ../shared/data and on corrupted copies."""

import gzip
import os
import pickle
import shutil

import numpy as np
import pytest

from jaxcal.data import local


def _write_cifar_batch(path, images_nhwc, labels, **extra):
    data = images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)
    batch = {b"data": data, b"labels": list(map(int, labels)), b"batch_label": b"test"}
    batch.update(extra)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def _write_idx(path, magic, array, *, compress):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") if compress else open(path, "wb") as f:
        f.write(raw)


@pytest.mark.slow
def test_real_cifar10_counts_and_known_labels(shared_data):
    images, labels = local.read_cifar10(shared_data, train=True)
    assert images.shape == (5 * 1017, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    counts = np.bincount(labels, minlength=10)
    # From ../shared/data/README.md: bird 490, cat 493, dog 475.
    assert (counts[2], counts[3], counts[5]) == (490, 493, 475)
    # The official data_batch_1 starts frog, truck, truck, deer, automobile.
    np.testing.assert_array_equal(labels[:5], [6, 9, 9, 4, 1])
    test_images, test_labels = local.read_cifar10(shared_data / "cifar-10-batches-py", train=False)
    assert test_images.shape == (1017, 32, 32, 3)
    assert np.bincount(test_labels, minlength=10)[[2, 3, 5]].tolist() == [100, 104, 87]
    # The official test_batch starts cat, ship, ship, airplane, frog.
    np.testing.assert_array_equal(test_labels[:5], [3, 8, 8, 0, 6])


@pytest.mark.slow
def test_real_cifar10_is_converted_from_planar_to_nhwc(shared_data):
    with open(shared_data / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    images, _ = local.read_cifar10(shared_data, train=False)
    # Row i stores 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    for channel in range(3):
        plane = raw[7, channel * 1024 : (channel + 1) * 1024].reshape(32, 32)
        np.testing.assert_array_equal(images[7, :, :, channel], plane)


@pytest.mark.slow
def test_real_mnist_counts_labels_and_pixel_statistics(shared_data):
    images, labels = local.read_mnist(shared_data, train=True)
    assert images.shape == (17_435, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels[:5], [5, 0, 4, 1, 9])
    test_images, test_labels = local.read_mnist(shared_data / "MNIST", train=False)
    assert test_images.shape == (10_000, 28, 28, 1)
    np.testing.assert_array_equal(test_labels[:5], [7, 2, 1, 0, 4])
    # The official test set: 980 zeros, 1135 ones; mean pixel 0.1325 * 255 = 33.79.
    assert np.bincount(test_labels)[:2].tolist() == [980, 1135]
    assert abs(test_images.mean() - 33.79) < 0.01
    raw_dir_images, _ = local.read_mnist(shared_data / "MNIST" / "raw", train=False)
    np.testing.assert_array_equal(raw_dir_images, test_images)


@pytest.mark.slow
def test_uncompressed_mnist_is_preferred_and_identical(shared_data, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(shared_data / "MNIST" / "raw" / f"{name}.gz") as src:
            (raw / name).write_bytes(src.read())
    assert local.mnist_files(tmp_path, train=False)[0].name == "t10k-images-idx3-ubyte"
    np.testing.assert_array_equal(
        local.read_mnist(tmp_path, train=False)[0], local.read_mnist(shared_data, train=False)[0]
    )


@pytest.mark.slow
def test_truncated_gzip_names_the_file(shared_data, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = shared_data / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    (raw / source.name).write_bytes(source.read_bytes()[: os.path.getsize(source) // 2])
    shutil.copy(shared_data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", raw)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*(corrupt|truncated)"):
        local.read_mnist(tmp_path, train=False)


def test_idx_header_checks(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    wrong_magic = tmp_path / "a-images-idx3-ubyte"
    _write_idx(wrong_magic, local.IDX_LABELS_MAGIC, images, compress=False)
    with pytest.raises(ValueError, match="a-images-idx3-ubyte: idx magic number 2049"):
        local.read_idx(wrong_magic, local.IDX_IMAGES_MAGIC)
    short = tmp_path / "b-images-idx3-ubyte"
    _write_idx(short, local.IDX_IMAGES_MAGIC, images, compress=False)
    short.write_bytes(short.read_bytes()[:-10])
    with pytest.raises(ValueError, match="b-images-idx3-ubyte: .*implies"):
        local.read_idx(short, local.IDX_IMAGES_MAGIC)
    good = tmp_path / "c-images-idx3-ubyte.gz"
    _write_idx(
        good, local.IDX_IMAGES_MAGIC, np.arange(2 * 28 * 28).reshape(2, 28, 28), compress=True
    )
    out = local.read_idx(good, local.IDX_IMAGES_MAGIC)
    assert out.shape == (2, 28, 28)
    np.testing.assert_array_equal(out.ravel(), np.arange(2 * 28 * 28) % 256)


def test_mnist_image_and_label_counts_must_agree(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "t10k-images-idx3-ubyte", 2051, np.zeros((4, 28, 28)), compress=False)
    _write_idx(raw / "t10k-labels-idx1-ubyte", 2049, np.zeros(3), compress=False)
    with pytest.raises(ValueError, match="4 images but .*t10k-labels-idx1-ubyte holds 3 labels"):
        local.read_mnist(tmp_path, train=False)
    _write_idx(raw / "t10k-labels-idx1-ubyte", 2049, np.array([0, 1, 2, 12]), compress=False)
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        local.read_mnist(tmp_path, train=False)


def test_cifar_batch_problems_name_the_file(tmp_path):
    images = np.zeros((4, 32, 32, 3), np.uint8)
    missing_key = tmp_path / "missing_key"
    with open(missing_key, "wb") as f:
        pickle.dump({b"data": images.reshape(4, -1)}, f, protocol=2)
    with pytest.raises(ValueError, match="missing_key: CIFAR-10 batch lacks key.*labels"):
        local.read_cifar10_batch(missing_key)

    truncated = tmp_path / "truncated"
    _write_cifar_batch(truncated, images, [0, 1, 2, 3])
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated: not a readable CIFAR-10 python batch"):
        local.read_cifar10_batch(truncated)

    mismatch = tmp_path / "mismatch"
    _write_cifar_batch(mismatch, images, [0, 1, 2])
    with pytest.raises(ValueError, match="mismatch: b'labels' must hold 4 integers"):
        local.read_cifar10_batch(mismatch)

    wrong_shape = tmp_path / "wrong_shape"
    with open(wrong_shape, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"wrong_shape: b'data' has shape \(2, 100\)"):
        local.read_cifar10_batch(wrong_shape)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch should_not_exist",))


def test_cifar_pickle_refuses_arbitrary_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil"
    with open(evil, "wb") as f:
        pickle.dump({b"data": _RunsCode(), b"labels": []}, f, protocol=2)
    with pytest.raises(ValueError, match="evil: .*refusing to load"):
        local.read_cifar10_batch(evil)
    assert not (tmp_path / "should_not_exist").exists()


def test_missing_folders_and_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        local.read_cifar10(tmp_path, train=True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _write_cifar_batch(folder / "test_batch", np.zeros((2, 32, 32, 3), np.uint8), [0, 1])
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        local.read_cifar10(tmp_path, train=True)
    with pytest.raises(FileNotFoundError, match="MNIST"):
        local.read_mnist(tmp_path, train=False)


def test_small_written_cifar_round_trips(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    _write_cifar_batch(folder / "test_batch", images, [0, 1, 2, 3, 4, 9])
    out_images, out_labels = local.read_cifar10(tmp_path, train=False)
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels, [0, 1, 2, 3, 4, 9])
