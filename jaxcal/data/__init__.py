"""Datasets from tfds, local files, the embedded subset or synthetic; splits, preprocessing."""

from jaxcal.data.augment import AugmentConfig, augment_batch, eval_transform
from jaxcal.data.datasets import (
    CIFAR10_CLASSES,
    DATASETS,
    MNIST_CLASSES,
    SOURCES,
    DatasetSplits,
    Split,
    load_birdcat,
    load_catdog,
    load_cats_vs_dogs,
    load_cifar10,
    load_dataset,
    load_mnist,
    split_indices,
    train_val_split,
)
from jaxcal.data.synthetic import SYNTHETIC_NOTE, synthetic_cifar, synthetic_mnist
from jaxcal.data.tfds_source import DataUnavailableError, TfdsReader
from jaxcal.data.transforms import (
    CIFAR_MEAN_STD,
    IMAGENET_MEAN_STD,
    make_preprocess,
    normalize,
    resize,
    resize_uint8,
    to_float,
)

__all__ = [
    "AugmentConfig",
    "CIFAR10_CLASSES",
    "CIFAR_MEAN_STD",
    "DATASETS",
    "DataUnavailableError",
    "DatasetSplits",
    "IMAGENET_MEAN_STD",
    "MNIST_CLASSES",
    "SOURCES",
    "SYNTHETIC_NOTE",
    "Split",
    "TfdsReader",
    "augment_batch",
    "eval_transform",
    "load_birdcat",
    "load_catdog",
    "load_cats_vs_dogs",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
    "make_preprocess",
    "normalize",
    "resize",
    "resize_uint8",
    "split_indices",
    "synthetic_cifar",
    "synthetic_mnist",
    "to_float",
    "train_val_split",
]
