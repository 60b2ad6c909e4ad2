"""Tests for jaxcal.data.tfds_source: mocked TFDS reads and the fail-fast paths."""

import http.server
import socket
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import dataset_builder

from jaxcal.data import datasets, tfds_source
from jaxcal.data.tfds_source import DataUnavailableError, TfdsReader

ALTERNATIVES = ("--data local --data-dir", "--data synthetic")


@pytest.fixture
def can_prepare(monkeypatch):
    """Pretend TensorFlow is installed and the network is up (mock_data makes preparing a no-op)."""
    monkeypatch.setattr(tfds_source, "tensorflow_available", lambda: True)
    monkeypatch.setattr(tfds_source, "url_reachable", lambda url, *a, **k: True)


def _listing(path):
    return sorted(p.relative_to(path) for p in path.rglob("*"))


def test_mock_cifar10_reads_through_the_data_source(can_prepare):
    with tfds.testing.mock_data(num_examples=40):
        reader = TfdsReader("cifar10")
        images, labels = reader.read("train")
        assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
        assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() <= 9
        assert len(reader.class_names) == 10
        part_images, part_labels = reader.read("train", 5, 9)
        np.testing.assert_array_equal(part_images, images[5:9])
        np.testing.assert_array_equal(part_labels, labels[5:9])
        assert "cifar10" in reader.description and "TFDS" in reader.description


def test_mock_birdcat_and_mnist_through_the_public_loaders(can_prepare):
    with tfds.testing.mock_data(num_examples=300):
        raw_images, raw_labels = TfdsReader("cifar10").read("train")
        splits = datasets.load_birdcat("tfds", val_fraction=0.2, seed=3)
        mnist = datasets.load_mnist("tfds", pad_to_32=True, max_test=50)
    keep = np.isin(raw_labels, (2, 3))
    pool_images, pool_labels = raw_images[keep], (raw_labels[keep] == 3).astype(np.int32)
    train_idx, val_idx = datasets.split_indices(int(keep.sum()), 0.2, 3)
    np.testing.assert_array_equal(splits.train.images, pool_images[train_idx])
    np.testing.assert_array_equal(splits.val.labels, pool_labels[val_idx])
    assert splits.source == "tfds" and splits.class_names == ("bird", "cat")
    assert mnist.image_shape == (32, 32, 1) and mnist.test.num_examples == 50
    assert np.all(mnist.train.images[:, :2] == 0)  # the padding


def test_mock_cats_vs_dogs_resizes_variable_sizes(can_prepare):
    with tfds.testing.mock_data(num_examples=30):
        splits = datasets.load_cats_vs_dogs("tfds", image_size=24, max_test=4)
    # 30 records: the first 24 are the train+val pool, the last 6 (20 %) hold the test set.
    assert splits.train.num_examples + splits.val.num_examples == 24
    assert splits.test.num_examples == 4
    assert splits.image_shape == (24, 24, 3)
    assert splits.class_names == ("cat", "dog")


def test_prepared_data_is_read_without_tensorflow(monkeypatch):
    monkeypatch.setattr(tfds_source, "tensorflow_available", lambda: False)
    monkeypatch.setattr(dataset_builder.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=12):
        images, _ = TfdsReader("mnist").read("test")
    assert images.shape == (12, 28, 28, 1)


def test_tfrecord_data_without_tensorflow_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tfds_source, "tensorflow_available", lambda: False)
    monkeypatch.setattr(dataset_builder.DatasetBuilder, "is_prepared", lambda self: True)

    def tfrecord_only(self, *args, **kwargs):
        raise NotImplementedError("Random access data source for file format tfrecord")

    monkeypatch.setattr(dataset_builder.DatasetBuilder, "as_data_source", tfrecord_only)
    reader = TfdsReader("mnist", tmp_path)
    with pytest.raises(DataUnavailableError, match="TFRecord") as error:
        reader.read("test")
    assert all(a in str(error.value) for a in ALTERNATIVES)


def test_without_tensorflow_fails_fast_and_leaves_nothing(tmp_path):
    if tfds_source.tensorflow_available():
        pytest.skip("TensorFlow is installed here")
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError, match="TensorFlow") as error:
        datasets.load_birdcat("tfds", tmp_path / "tfds")
    assert time.perf_counter() - start < 10.0
    assert all(a in str(error.value) for a in ALTERNATIVES)
    assert _listing(tmp_path) == []


def test_offline_fails_fast_with_the_alternatives(monkeypatch, tmp_path):
    monkeypatch.setattr(tfds_source, "tensorflow_available", lambda: True)
    monkeypatch.setattr(tfds_source, "url_reachable", lambda url, *a, **k: False)
    with pytest.raises(DataUnavailableError, match="www.cs.toronto.edu is unreachable") as error:
        TfdsReader("cifar10", tmp_path)
    assert all(a in str(error.value) for a in ALTERNATIVES)
    assert _listing(tmp_path) == []


def test_failed_prepare_removes_only_what_it_created(can_prepare, monkeypatch, tmp_path):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "earlier.tar.gz").write_text("kept")
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
    (tmp_path / "mnist" / "3.0.1" / "from_another_version").write_text("kept")
    before = _listing(tmp_path)

    def half_written(self, **kwargs):
        (
            tmp_path / "cifar10" / "incomplete.AB12CD" / "cifar10-train.array_record-00000"
        ).parent.mkdir(parents=True)
        (
            tmp_path / "cifar10" / "incomplete.AB12CD" / "cifar10-train.array_record-00000"
        ).write_text("partial")
        (tmp_path / "downloads" / "cs.toronto.edu_cifar-10-binary.tar.gz.tmp.1").write_text("x")
        (tmp_path / "downloads" / "extracted").mkdir()
        raise ConnectionError("connection reset")

    monkeypatch.setattr(dataset_builder.DatasetBuilder, "download_and_prepare", half_written)
    with pytest.raises(DataUnavailableError, match="partial files were removed"):
        TfdsReader("cifar10", tmp_path)
    assert _listing(tmp_path) == before


def test_failed_prepare_in_a_new_data_dir_removes_the_dir(can_prepare, monkeypatch, tmp_path):
    data_dir = tmp_path / "new_tfds_dir"

    def half_written(self, **kwargs):
        (data_dir / "mnist" / "incomplete.1").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(dataset_builder.DatasetBuilder, "download_and_prepare", half_written)
    with pytest.raises(DataUnavailableError, match="OSError: disk full"):
        TfdsReader("mnist", data_dir)
    assert not data_dir.exists()


class _Head(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 (the name http.server dispatches to)
        self.send_response(404 if self.path == "/missing" else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_url_reachable_with_a_local_server(no_proxy):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Head)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert tfds_source.url_reachable(url + "/file.tar.gz", timeout_s=2.0)
        assert tfds_source.url_reachable(url + "/missing", timeout_s=2.0)  # an answer all the same
    finally:
        server.shutdown()
        server.server_close()
    assert not tfds_source.url_reachable(url + "/file.tar.gz", timeout_s=2.0)


def test_url_reachable_is_bounded_by_its_timeout(no_proxy):
    # A socket that accepts connections (backlog) but never answers: the request hangs.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        start = time.perf_counter()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x"
        assert not tfds_source.url_reachable(url, timeout_s=0.5)
        assert time.perf_counter() - start < 2.0
    finally:
        silent.close()


def test_reader_rejects_a_bad_name():
    with pytest.raises(ValueError, match="name"):
        TfdsReader("")
