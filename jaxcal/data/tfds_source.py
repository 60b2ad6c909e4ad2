"""Reads datasets with tensorflow_datasets, failing within seconds when it cannot prepare them."""

from __future__ import annotations

import http.client
import importlib.util
import os
import pathlib
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

import numpy as np

from jaxcal.data.transforms import resize_uint8

ALTERNATIVES = (
    "Alternatives: the small real subset shipped with jaxcal with `--data embedded` "
    "(source='embedded'; bird/cat, cat/dog and MNIST, offline), the files torchvision keeps in "
    "./data with `--data local --data-dir DIR` (source='local', data_dir=DIR; DIR holds "
    "cifar-10-batches-py/ or MNIST/raw/), or generated images with `--data synthetic` "
    "(source='synthetic'; not real images)."
)
# A file each dataset's TFDS builder downloads; probed with a short HEAD request before
# downloading, because tfds itself retries for minutes when offline.
DOWNLOAD_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz",
    "cats_vs_dogs": (
        "https://download.microsoft.com/download/3/E/1/"
        "3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
    ),
}
PROBE_TIMEOUT_S = 3.0


class DataUnavailableError(RuntimeError):
    """A data source cannot provide the dataset on this machine; the message names alternatives."""


def tensorflow_available() -> bool:
    """Whether TensorFlow is importable (tfds needs it to prepare CIFAR-10 and MNIST)."""
    return importlib.util.find_spec("tensorflow") is not None


def url_reachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether an HTTP(S) HEAD request to url gets any HTTP answer (even an error status).

    DNS failures, refused or hanging connections and TLS failures count as unreachable; the
    proxy in HTTPS_PROXY/HTTP_PROXY is used when set. Returns within about timeout_s seconds,
    DNS lookup included.
    """
    outcome: list[bool] = []

    def attempt() -> None:
        request = urllib.request.Request(url, method="HEAD")
        try:
            urllib.request.urlopen(request, timeout=timeout_s).close()
            outcome.append(True)
        except urllib.error.HTTPError:
            outcome.append(True)
        except (OSError, ValueError, http.client.HTTPException):
            outcome.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(outcome and outcome[0])


def _snapshot(root: pathlib.Path, name: str) -> set[pathlib.Path]:
    """Paths (to depth 3) that download_and_prepare may add under root for dataset `name`."""
    found = {root}
    for top in (root / name, root / "downloads"):
        found.add(top)
        for pattern in ("*", "*/*", "*/*/*"):
            found.update(top.glob(pattern))
    return {p for p in found if p.exists() or p.is_symlink()}


def _remove_new(root: pathlib.Path, name: str, before: set[pathlib.Path]) -> None:
    for path in sorted(_snapshot(root, name) - before, key=lambda p: len(p.parts)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)


class TfdsReader:
    """A TFDS dataset, prepared on first use and read as numpy arrays.

    Reading goes through `builder.as_data_source` (ArrayRecord, no TensorFlow needed) when the
    data were prepared in that format, and through `tf.data` otherwise (TensorFlow needed).
    Preparing (download + conversion) needs TensorFlow and the network; when either is missing
    the constructor raises DataUnavailableError within seconds and removes what it created.

    Args:
        name: a TFDS dataset name, e.g. "cifar10", "mnist", "cats_vs_dogs".
        data_dir: TFDS data directory; None uses tfds's default (TFDS_DATA_DIR or
            ~/tensorflow_datasets).
    """

    def __init__(self, name: str, data_dir: str | os.PathLike | None = None):
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a TFDS dataset name, got {name!r}")
        try:
            import tensorflow_datasets as tfds
        except ImportError as e:
            raise DataUnavailableError(
                f"tensorflow_datasets cannot be imported ({e}). {ALTERNATIVES}"
            ) from e
        self._tfds = tfds
        self.name = name
        data_dir = None if data_dir is None else os.fspath(pathlib.Path(data_dir).expanduser())
        self._builder = tfds.builder(name, data_dir=data_dir)
        if not self._builder.is_prepared():
            self._prepare()
        self._sources: dict[str, Sequence] = {}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The label names of the dataset's `label` feature."""
        return tuple(self._builder.info.features["label"].names)

    @property
    def description(self) -> str:
        """E.g. "cifar10 3.0.2 from TFDS at /root/tensorflow_datasets/cifar10/3.0.2"."""
        return f"{self.name} {self._builder.version} from TFDS at {self._builder.data_dir}"

    def _prepare(self) -> None:
        builder, name = self._builder, self.name
        if not tensorflow_available():
            raise DataUnavailableError(
                f"TFDS needs TensorFlow to prepare '{name}', which is not yet prepared in "
                f"{builder.data_dir_root}, and TensorFlow is not installed (on Colab it is). "
                f"Install tensorflow or prepare the data elsewhere. {ALTERNATIVES}"
            )
        url = DOWNLOAD_URLS.get(name)
        if url is not None and not url_reachable(url):
            raise DataUnavailableError(
                f"cannot download '{name}' with TFDS: {urllib.parse.urlsplit(url).hostname} is "
                f"unreachable within {PROBE_TIMEOUT_S:.0f} s (offline?). {ALTERNATIVES}"
            )
        root = pathlib.Path(builder.data_dir_root)
        before = _snapshot(root, name)
        file_format = "array_record" if importlib.util.find_spec("array_record") else None
        try:
            builder.download_and_prepare(file_format=file_format)
        except BaseException as e:
            _remove_new(root, name, before)
            if not isinstance(e, Exception):
                raise
            raise DataUnavailableError(
                f"TFDS failed to prepare '{name}' in {root} ({type(e).__name__}: {e}); the "
                f"partial files were removed. {ALTERNATIVES}"
            ) from e

    def _source(self, split: str) -> Sequence | None:
        """The random-access data source of a split, or None when only tf.data can read it."""
        if split not in self._sources:
            try:
                self._sources[split] = self._builder.as_data_source(split)
            except NotImplementedError:
                self._sources[split] = None
        return self._sources[split]

    def num_examples(self, split: str) -> int:
        """Number of records in a split."""
        source = self._source(split)
        if source is not None:
            return len(source)
        return self._builder.info.splits[split].num_examples

    def read(
        self,
        split: str,
        start: int = 0,
        stop: int | None = None,
        *,
        image_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reads records [start, stop) of a split in TFDS's order.

        Args:
            split: "train" or "test".
            start, stop: record range; stop None reads to the end.
            image_size: resize every image to image_size x image_size on the host (bilinear,
                antialiased, like torchvision's Resize on PIL images); required when the
                dataset's images differ in size.

        Returns:
            images: uint8 [N, H, W, C]; labels: int32 [N].

        Raises:
            DataUnavailableError: the data are stored as TFRecord and TensorFlow is missing.
            ValueError: records that cannot be decoded, or images of different sizes with
                image_size None.
        """
        source = self._source(split)
        if source is None and not tensorflow_available():
            raise DataUnavailableError(
                f"'{self.name}' is prepared in {self._builder.data_dir} as TFRecord, which only "
                "TensorFlow can read, and TensorFlow is not installed. Install tensorflow, or "
                f"prepare it again with file_format='array_record'. {ALTERNATIVES}"
            )
        total = self.num_examples(split)
        stop = total if stop is None else min(stop, total)
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        try:
            if source is not None:
                examples = (source[i] for i in range(start, stop))
            else:
                dataset = self._builder.as_dataset(split=f"{split}[{start}:{stop}]")
                examples = self._tfds.as_numpy(dataset)
            images, labels = [], []
            for example in examples:
                images.append(np.asarray(example["image"]))
                labels.append(int(example["label"]))
        except Exception as e:
            raise ValueError(
                f"failed to read '{self.name}' split {split!r} from {self._builder.data_dir} "
                f"({type(e).__name__}: {e})"
            ) from e
        labels_array = np.asarray(labels, dtype=np.int32)
        if image_size is not None:
            return resize_uint8(images, image_size), labels_array
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(
                f"'{self.name}' images have {len(shapes)} different shapes; pass image_size"
            )
        if not images:
            shape = tuple(d or 0 for d in self._builder.info.features["image"].shape)
            return np.zeros((0, *shape), np.uint8), labels_array
        return np.stack(images).astype(np.uint8, copy=False), labels_array
