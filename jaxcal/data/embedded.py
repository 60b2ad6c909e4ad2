"""Reader for the small real CIFAR-10/MNIST subset shipped inside the package (embedded.npz)."""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import json
from typing import Any

import numpy as np

FILE_NAME = "embedded.npz"
# sha256 of the shipped file, as scripts/build_embedded_data.py printed it.
SHA256 = "e9a0ae9ec70888011ea47d5cb183577f78e847f08e16092a2781ba7d5df1bc62"
CIFAR10_CLASSES = (2, 3, 5)  # bird, cat, dog
NOTE = "a small subset, not the full dataset"


def path() -> importlib.resources.abc.Traversable:
    """Where the shipped embedded.npz is (inside the installed package)."""
    return importlib.resources.files("jaxcal.data") / FILE_NAME


@functools.cache
def _arrays() -> dict[str, np.ndarray]:
    """Every array of embedded.npz, read-only, after checking the file's sha256."""
    try:
        raw = path().read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{FILE_NAME} is missing from the installed jaxcal package (a build without its "
            "package data?): reinstall jaxcal, or rebuild it with scripts/build_embedded_data.py"
        ) from e
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{path()} is damaged or was rebuilt: sha256 {digest}, expected {SHA256}")
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


def provenance() -> dict[str, Any]:
    """The provenance note stored in the file: files read, their md5, rows kept, counts."""
    return json.loads(str(_arrays()["provenance"]))


def read_cifar10(*, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The embedded CIFAR-10 bird, cat and dog images, in the order of the original files.

    They are every image of these classes among the first 1,017 of each official batch, so
    selecting a pair of classes from them gives what `local.read_cifar10` of those files
    gives after the same selection.

    Args:
        train: the images from data_batch_1..5 (1,458) or from test_batch (291).

    Returns:
        images: uint8 [N, 32, 32, 3]; labels: int32 [N], CIFAR-10 ids (2, 3 or 5).
    """
    prefix = "cifar_train" if train else "cifar_test"
    arrays = _arrays()
    return arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"].astype(np.int32)


def cifar10_rows(*, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Where each embedded CIFAR-10 image comes from.

    Returns:
        batch: uint8 [N], k of data_batch_k (train) or 0 (test_batch);
        row: int32 [N], the image's row in that batch file.
    """
    arrays = _arrays()
    if train:
        return arrays["cifar_train_batch"], arrays["cifar_train_row"]
    row = arrays["cifar_test_row"]
    return np.zeros(row.shape, np.uint8), row


def read_mnist(*, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The embedded MNIST digits: the first 8,000 training or the first 2,000 test images.

    Returns:
        images: uint8 [N, 28, 28, 1]; labels: int32 [N] in 0..9.
    """
    prefix = "mnist_train" if train else "mnist_test"
    arrays = _arrays()
    return arrays[f"{prefix}_images"][..., None], arrays[f"{prefix}_labels"].astype(np.int32)


def mnist_rows(*, train: bool) -> np.ndarray:
    """int32 [N]: each embedded MNIST image's row in its idx file."""
    return _arrays()["mnist_train_row" if train else "mnist_test_row"]
