"""Readers for the CIFAR-10 and MNIST files torchvision leaves in `./data` (numpy only)."""

from __future__ import annotations

import gzip
import os
import pathlib
import pickle
import zlib

import numpy as np

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
MNIST_FOLDER = os.path.join("MNIST", "raw")
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# The globals a CIFAR-10 python batch may reference (the official files were pickled by Python 2
# with `numpy.core`, re-pickled copies by Python 3 with `numpy._core` and `_codecs.encode`).
# Anything else is refused: unpickling runs code, and these files come from the user's disk.
_CIFAR_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays"
            )
        # numpy 2 renamed numpy.core to numpy._core; try the name this numpy has first.
        if module.startswith("numpy.core"):
            candidates = ("numpy._core" + module[len("numpy.core") :], module)
        elif module.startswith("numpy._core"):
            candidates = (module, "numpy.core" + module[len("numpy._core") :])
        else:
            candidates = (module,)
        for candidate in candidates[:-1]:
            try:
                return super().find_class(candidate, name)
            except ImportError:
                continue
        return super().find_class(candidates[-1], name)


def cifar10_dir(data_dir: str | os.PathLike) -> pathlib.Path:
    """The `cifar-10-batches-py` folder under data_dir (torchvision's root) or data_dir itself.

    Raises:
        FileNotFoundError: neither data_dir/cifar-10-batches-py nor data_dir holds the batches.
    """
    root = pathlib.Path(data_dir).expanduser()
    for candidate in (root / CIFAR10_FOLDER, root):
        if (candidate / CIFAR10_TEST_FILES[0]).is_file():
            return candidate
    raise FileNotFoundError(
        f"no CIFAR-10 python batches in {root / CIFAR10_FOLDER} or {root} (torchvision's layout: "
        f"DIR/{CIFAR10_FOLDER}/data_batch_1..5 and test_batch)"
    )


def cifar10_files(data_dir: str | os.PathLike, *, train: bool) -> list[pathlib.Path]:
    """Paths of the CIFAR-10 train batches (train=True) or the test batch, checked to exist."""
    folder = cifar10_dir(data_dir)
    paths = [folder / name for name in (CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing CIFAR-10 batch file(s): {', '.join(missing)}")
    return paths


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 python batch (a pickled dict with b'data' and b'labels').

    Args:
        path: a file such as `cifar-10-batches-py/data_batch_1`.

    Returns:
        images: uint8 [N, 32, 32, 3] (the file stores N x 3072 channel-planar rows);
        labels: int32 [N] in 0..9.

    Raises:
        ValueError: the file is truncated, not a CIFAR-10 batch, or has inconsistent contents.
    """
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable CIFAR-10 python batch ({e})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    missing = [k.decode() for k in (b"data", b"labels") if k not in batch]
    if missing:
        raise ValueError(f"{path}: CIFAR-10 batch lacks key(s) {missing}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: b'data' must be a uint8 [N, 3072] array")
    if data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' has shape {data.shape}, expected [N, 3072]")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: b'labels' must hold {data.shape[0]} integers, got shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def read_cifar10(data_dir: str | os.PathLike, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Reads the CIFAR-10 train batches 1..5 (train=True) or the test batch, in file order.

    Args:
        data_dir: torchvision's root (holding `cifar-10-batches-py/`) or that folder itself.
        train: which official split.

    Returns:
        images: uint8 [N, 32, 32, 3]; labels: int32 [N] in 0..9.
    """
    parts = [read_cifar10_batch(p) for p in cifar10_files(data_dir, train=train)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Reads an idx file (MNIST's format), gzip-compressed when the name ends in `.gz`.

    Args:
        path: the file.
        magic: the expected magic number, 2051 for images (3 dims) or 2049 for labels (1 dim).

    Returns:
        uint8 array with the dimensions given in the header.

    Raises:
        ValueError: bad magic number, truncated or corrupt file, or a size that does not match
            the header.
    """
    path = pathlib.Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an idx header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: idx magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(
            f"{path}: {len(raw)} bytes but the header {dims} implies {expected} (truncated or "
            "corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _mnist_raw_dir(data_dir: str | os.PathLike) -> pathlib.Path:
    root = pathlib.Path(data_dir).expanduser()
    for candidate in (root / MNIST_FOLDER, root / "raw", root):
        if any(candidate.glob("t10k-labels-idx1-ubyte*")):
            return candidate
    raise FileNotFoundError(
        f"no MNIST idx files in {root / MNIST_FOLDER} or {root} (torchvision's layout: "
        f"DIR/{MNIST_FOLDER}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz])"
    )


def mnist_files(data_dir: str | os.PathLike, *, train: bool) -> tuple[pathlib.Path, pathlib.Path]:
    """Paths of the MNIST (images, labels) idx files, uncompressed preferred over `.gz`.

    Args:
        data_dir: torchvision's root (holding `MNIST/raw/`), `MNIST/` or `MNIST/raw/` itself.
        train: the `train-*` files (True) or the `t10k-*` files.
    """
    folder = _mnist_raw_dir(data_dir)
    prefix = "train" if train else "t10k"
    paths = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                paths.append(folder / name)
                break
        else:
            raise FileNotFoundError(f"missing MNIST file {folder / stem}[.gz]")
    return paths[0], paths[1]


def read_mnist(data_dir: str | os.PathLike, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Reads the MNIST train (train=True) or t10k idx files of torchvision's layout.

    Returns:
        images: uint8 [N, 28, 28, 1]; labels: int32 [N] in 0..9.

    Raises:
        ValueError: a corrupt or truncated file, or image and label files that disagree.
    """
    image_path, label_path = mnist_files(data_dir, train=train)
    images = read_idx(image_path, IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_path}: labels must be in 0..9, found {labels.max()}")
    return images[..., None].copy(), labels.astype(np.int32)
