"""The study's datasets from three sources (tfds, local, synthetic), split train/val/test."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from jaxcal._checks import is_int
from jaxcal.data import local, synthetic
from jaxcal.data.tfds_source import TfdsReader
from jaxcal.data.transforms import resize_uint8

SOURCES = ("tfds", "local", "synthetic")
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))
DEFAULT_LOCAL_DIR = "./data"  # torchvision's root in the original notebooks
# Sizes (train + validation pool, test) of the synthetic stand-ins, like the real datasets.
SYNTHETIC_SIZES = {
    "birdcat": (10_000, 2_000),
    "catdog": (10_000, 2_000),
    "cifar10": (50_000, 10_000),
    "mnist": (60_000, 10_000),
    "cats_vs_dogs": (4_000, 1_000),
}


class Split(NamedTuple):
    """One split: uint8 images [N, H, W, C] and int32 labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Train, validation and test splits of one dataset, with where they came from.

    Attributes:
        train, val, test: the splits (val is drawn from the official training data; test is
            the official test data, or a fixed held-out part when there is none).
        class_names: name of each label, label i -> class_names[i].
        source: "tfds", "local" or "synthetic".
        description: human-readable origin, e.g. "CIFAR-10 bird vs cat from ./data (local
            torchvision layout)" or one that says "synthetic (generated, not real images)".

    Compared and hashed by identity (it holds arrays).
    """

    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    source: str
    description: str

    def __post_init__(self):
        shapes = {s.images.shape[1:] for s in (self.train, self.val, self.test)}
        if len(shapes) != 1:
            raise ValueError(f"train, val and test image shapes differ: {sorted(shapes)}")
        for name in ("train", "val", "test"):
            split = getattr(self, name)
            if split.images.dtype != np.uint8 or split.images.ndim != 4:
                raise ValueError(f"{name}.images must be uint8 [N, H, W, C]")
            if split.labels.dtype != np.int32 or split.labels.shape != split.images.shape[:1]:
                raise ValueError(f"{name}.labels must be int32 [N] matching the images")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(self.train.images.shape[1:])


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of range(n).

    The permutation is numpy's legacy `RandomState(seed).permutation(n)` (a stream numpy
    keeps fixed across versions); the first round(val_fraction * n) indices are validation,
    the rest train, each returned sorted. It depends only on (n, val_fraction, seed), so the
    same seed gives the same split on every source holding the same number of examples, and
    for MNIST (n = 60,000, 0.1, seed 0) it is the split of the original notebook.

    Returns:
        train_idx: int64 [n - n_val]; val_idx: int64 [n_val].
    """
    _check_fraction("val_fraction", val_fraction)
    _check_seed(seed)
    if not is_int(n) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    permutation = np.random.RandomState(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(permutation[n_val:]), np.sort(permutation[:n_val])


def train_val_split(pool: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Splits a pool into (train, val) with split_indices."""
    train_idx, val_idx = split_indices(pool.num_examples, val_fraction, seed)
    return (
        Split(pool.images[train_idx], pool.labels[train_idx]),
        Split(pool.images[val_idx], pool.labels[val_idx]),
    )


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")


def _check_seed(seed: int) -> None:
    if not is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")


def _check_common(
    source: str,
    val_fraction: float,
    seed: int,
    data_seed: int,
    max_train: int | None,
    max_test: int | None,
    num_classes: int,
) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    _check_fraction("val_fraction", val_fraction)
    _check_seed(seed)
    if not is_int(data_seed) or data_seed < 0:
        raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
    for name, value in (("max_train", max_train), ("max_test", max_test)):
        if value is None:
            continue
        if not is_int(value):
            raise ValueError(f"{name} must be an int or None, got {value!r}")
        if value < num_classes:
            raise ValueError(f"{name} must be at least the number of classes ({num_classes})")


def _local_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
    return pathlib.Path(DEFAULT_LOCAL_DIR if data_dir is None else data_dir).expanduser()


def _select_classes(
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[int],
    names: Sequence[str],
    origin: str | None,
) -> Split:
    """Keeps `classes` (in file order) and relabels them 0..K-1.

    With an origin (files read in full), every class must be present: a missing class means a
    wrong or damaged file, reported with its name. origin None skips the check (generated data
    or a few records read for a quick run, where a class may legitimately be absent).
    """
    keep = np.isin(labels, classes)
    if origin is not None:
        for class_id, name in zip(classes, names, strict=True):
            if not np.any(labels == class_id):
                raise ValueError(f"no images of class {class_id} ({name}) in {origin}")
    relabel = np.full(max(int(labels.max(initial=0)), max(classes)) + 1, -1, np.int32)
    relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
    return Split(np.ascontiguousarray(images[keep]), relabel[labels[keep]])


def _limit(split: Split, limit: int | None) -> Split:
    if limit is None or limit >= split.num_examples:
        return split
    return Split(split.images[:limit], split.labels[:limit])


def _finish(
    pool: Split,
    test: Split,
    *,
    val_fraction: float,
    seed: int,
    max_train: int | None,
    max_test: int | None,
    class_names: Sequence[str],
    source: str,
    description: str,
) -> DatasetSplits:
    train, val = train_val_split(_limit(pool, max_train), val_fraction, seed)
    return DatasetSplits(
        train=train,
        val=val,
        test=_limit(test, max_test),
        class_names=tuple(class_names),
        source=source,
        description=description,
    )


def _cifar_subset(
    title: str,
    classes: Sequence[int],
    source: str,
    data_dir: str | os.PathLike | None,
    *,
    val_fraction: float,
    seed: int,
    data_seed: int,
    max_train: int | None,
    max_test: int | None,
    image_size: int | None = None,
    synthetic_key: str,
) -> DatasetSplits:
    names = [CIFAR10_CLASSES[c] for c in classes]
    _check_common(source, val_fraction, seed, data_seed, max_train, max_test, len(classes))
    if source == "synthetic":
        n_pool, n_test = SYNTHETIC_SIZES[synthetic_key]
        # Rendered at 32 x 32 like CIFAR-10 and resized below (rendering at 224 is ~7x slower).
        kwargs = {"classes": classes, "seed": data_seed}
        train_raw = synthetic.synthetic_cifar(min(n_pool, max_train or n_pool), **kwargs)
        test_raw = synthetic.synthetic_cifar(
            min(n_test, max_test or n_test), split="test", **kwargs
        )
        train_origin = test_origin = None
        description = f"CIFAR-10-shaped {title}, {synthetic.SYNTHETIC_NOTE}, data_seed {data_seed}"
    elif source == "local":
        root = _local_dir(data_dir)
        train_raw = local.read_cifar10(root, train=True)
        test_raw = local.read_cifar10(root, train=False)
        train_origin = ", ".join(map(str, local.cifar10_files(root, train=True)))
        test_origin = ", ".join(map(str, local.cifar10_files(root, train=False)))
        description = f"CIFAR-10 {title} from {local.cifar10_dir(root)} (local torchvision layout)"
    else:
        reader = TfdsReader("cifar10", data_dir)
        train_raw, test_raw = reader.read("train"), reader.read("test")
        train_origin, test_origin = f"{reader.description} (train)", f"{reader.description} (test)"
        description = f"CIFAR-10 {title}: {reader.description}"
    pool = _limit(_select_classes(*train_raw, classes, names, train_origin), max_train)
    test = _limit(_select_classes(*test_raw, classes, names, test_origin), max_test)
    if image_size is not None and pool.images.shape[1] != image_size:
        pool = Split(resize_uint8(pool.images, image_size), pool.labels)
        test = Split(resize_uint8(test.images, image_size), test.labels)
    return _finish(
        pool,
        test,
        val_fraction=val_fraction,
        seed=seed,
        max_train=max_train,
        max_test=max_test,
        class_names=names,
        source=source,
        description=description,
    )


def load_birdcat(
    source: str = "tfds",
    data_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    data_seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> DatasetSplits:
    """CIFAR-10 bird (class 2) vs cat (class 3), relabelled bird = 0, cat = 1: the main study.

    Args:
        source: "tfds" (tensorflow_datasets), "local" (torchvision's files under data_dir) or
            "synthetic" (generated, not real images; offline).
        data_dir: TFDS data dir (None: tfds's default) or torchvision's root for "local"
            (None: ./data, as in the originals); ignored by "synthetic".
        val_fraction: fraction of the training data held out for validation (the originals:
            80/20), by a permutation seeded with `seed` (see split_indices).
        seed: seed of the train/validation split.
        data_seed: seed of the synthetic generator (the same synthetic dataset by default);
            ignored by real sources.
        max_train: keep only the first max_train training images (before the split), for
            quick runs; synthetic data then generates only that many.
        max_test: keep only the first max_test test images.

    Returns:
        DatasetSplits with 32 x 32 x 3 images (real: 10,000 train+val, 2,000 test).

    Raises:
        ValueError: bad arguments, or data files that are corrupt or lack a class.
        FileNotFoundError: "local" without the CIFAR-10 batches under data_dir.
        DataUnavailableError: "tfds" cannot prepare the data here (no TensorFlow, offline).
    """
    return _cifar_subset(
        "bird vs cat",
        (2, 3),
        source,
        data_dir,
        val_fraction=val_fraction,
        seed=seed,
        data_seed=data_seed,
        max_train=max_train,
        max_test=max_test,
        synthetic_key="birdcat",
    )


def load_catdog(
    source: str = "tfds",
    data_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    data_seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> DatasetSplits:
    """CIFAR-10 cat (class 3) vs dog (class 5), relabelled cat = 0, dog = 1.

    A small real stand-in for cats vs dogs; arguments as load_birdcat.
    """
    return _cifar_subset(
        "cat vs dog",
        (3, 5),
        source,
        data_dir,
        val_fraction=val_fraction,
        seed=seed,
        data_seed=data_seed,
        max_train=max_train,
        max_test=max_test,
        synthetic_key="catdog",
    )


def load_cifar10(
    source: str = "tfds",
    data_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> DatasetSplits:
    """All ten CIFAR-10 classes (labels 0..9); arguments as load_birdcat."""
    return _cifar_subset(
        "10 classes",
        tuple(range(10)),
        source,
        data_dir,
        val_fraction=val_fraction,
        seed=seed,
        data_seed=data_seed,
        max_train=max_train,
        max_test=max_test,
        synthetic_key="cifar10",
    )


def load_mnist(
    source: str = "tfds",
    data_dir: str | os.PathLike | None = None,
    *,
    pad_to_32: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> DatasetSplits:
    """MNIST digits (labels 0..9), 28 x 28 x 1, or zero-padded to 32 x 32 for the classic LeNet.

    Args:
        pad_to_32: pad 2 pixels of zeros on every side (the digit centred in 32 x 32).
        val_fraction: 10 % by default, as the original; with seed 0 and the full 60,000 training
            images the validation indices are exactly the original notebook's.
        Others: as load_birdcat (data_dir for "local": torchvision's root holding MNIST/raw/).

    Returns:
        DatasetSplits (real: 60,000 train+val, 10,000 test).
    """
    if not isinstance(pad_to_32, bool):
        raise ValueError(f"pad_to_32 must be a bool, got {pad_to_32!r}")
    _check_common(source, val_fraction, seed, data_seed, max_train, max_test, 10)
    if source == "synthetic":
        n_pool, n_test = SYNTHETIC_SIZES["mnist"]
        train_raw = synthetic.synthetic_mnist(min(n_pool, max_train or n_pool), seed=data_seed)
        test_raw = synthetic.synthetic_mnist(
            min(n_test, max_test or n_test), seed=data_seed, split="test"
        )
        train_origin = test_origin = None
        description = f"MNIST-shaped digits, {synthetic.SYNTHETIC_NOTE}, data_seed {data_seed}"
    elif source == "local":
        root = _local_dir(data_dir)
        train_raw = local.read_mnist(root, train=True)
        test_raw = local.read_mnist(root, train=False)
        train_origin = ", ".join(map(str, local.mnist_files(root, train=True)))
        test_origin = ", ".join(map(str, local.mnist_files(root, train=False)))
        folder = local.mnist_files(root, train=False)[0].parent
        description = f"MNIST from {folder} (local torchvision layout)"
    else:
        reader = TfdsReader("mnist", data_dir)
        train_raw, test_raw = reader.read("train"), reader.read("test")
        train_origin, test_origin = f"{reader.description} (train)", f"{reader.description} (test)"
        description = f"MNIST: {reader.description}"
    pool = _select_classes(*train_raw, range(10), MNIST_CLASSES, train_origin)
    test = _select_classes(*test_raw, range(10), MNIST_CLASSES, test_origin)
    if pad_to_32:
        pad = ((0, 0), (2, 2), (2, 2), (0, 0))
        pool = Split(np.pad(pool.images, pad), pool.labels)
        test = Split(np.pad(test.images, pad), test.labels)
        description += ", zero-padded to 32 x 32"
    return _finish(
        pool,
        test,
        val_fraction=val_fraction,
        seed=seed,
        max_train=max_train,
        max_test=max_test,
        class_names=MNIST_CLASSES,
        source=source,
        description=description,
    )


def load_cats_vs_dogs(
    source: str = "tfds",
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int | None = 224,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    data_seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> DatasetSplits:
    """Cats (0) vs dogs (1) at image_size x image_size x 3.

    - "tfds": TFDS `cats_vs_dogs` (23,262 photos of varying size, one split), resized on the
      host like torchvision's Resize((s, s)). Its last `test_fraction` of records (in TFDS's
      order) is the test set, whatever the seed; validation comes from the rest. At 224 the
      full set takes about 3.5 GB; use max_train, or a smaller image_size and resize on device
      (make_preprocess(resize_to=224)).
    - "local": the CIFAR-10 cat vs dog stand-in (load_catdog), resized to image_size
      (None keeps 32 x 32).
    - "synthetic": synthetic cats and dogs rendered at 32 x 32 and resized to image_size.

    Other arguments as load_birdcat; test_fraction is used by "tfds" only.
    """
    _check_fraction("test_fraction", test_fraction)
    if image_size is not None and (not is_int(image_size) or image_size < 8):
        raise ValueError(f"image_size must be an int >= 8 or None, got {image_size!r}")
    _check_common(source, val_fraction, seed, data_seed, max_train, max_test, 2)
    if source != "tfds":
        return _cifar_subset(
            "cat vs dog" + (" (stand-in for cats vs dogs)" if source == "local" else ""),
            (3, 5),
            source,
            data_dir,
            val_fraction=val_fraction,
            seed=seed,
            data_seed=data_seed,
            max_train=max_train,
            max_test=max_test,
            image_size=image_size,
            synthetic_key="cats_vs_dogs",
        )
    if image_size is None:
        raise ValueError("image_size is required for tfds cats_vs_dogs (its images vary in size)")
    reader = TfdsReader("cats_vs_dogs", data_dir)
    total = reader.num_examples("train")
    n_pool = total - int(round(test_fraction * total))
    pool_stop = n_pool if max_train is None else min(n_pool, max_train)
    test_stop = total if max_test is None else min(total, n_pool + max_test)
    pool = reader.read("train", 0, pool_stop, image_size=image_size)
    test = reader.read("train", n_pool, test_stop, image_size=image_size)
    names = ("cat", "dog")
    origin = reader.description
    pool_origin = f"{origin} (records 0..{pool_stop - 1})" if max_train is None else None
    test_origin = f"{origin} (records {n_pool}..{test_stop - 1})" if max_test is None else None
    return _finish(
        _select_classes(*pool, (0, 1), names, pool_origin),
        _select_classes(*test, (0, 1), names, test_origin),
        val_fraction=val_fraction,
        seed=seed,
        max_train=max_train,
        max_test=max_test,
        class_names=names,
        source=source,
        description=f"cats vs dogs: {origin}, resized to {image_size} x {image_size}",
    )


DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "birdcat": load_birdcat,
    "catdog": load_catdog,
    "cifar10": load_cifar10,
    "mnist": load_mnist,
    "cats_vs_dogs": load_cats_vs_dogs,
}


def load_dataset(
    name: str,
    source: str = "tfds",
    data_dir: str | os.PathLike | None = None,
    **kwargs,
) -> DatasetSplits:
    """Loads a dataset by name ("birdcat", "catdog", "cifar10", "mnist", "cats_vs_dogs").

    Keyword arguments go to the dataset's function (e.g. seed, max_train, pad_to_32).
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {tuple(DATASETS)}, got {name!r}")
    return DATASETS[name](source, data_dir, **kwargs)
