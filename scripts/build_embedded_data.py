"""Builds jaxcal/data/embedded.npz, the small real subset shipped in the package.

    python scripts/build_embedded_data.py --data-dir ../shared/data

Reads torchvision's files (`cifar-10-batches-py/`, `MNIST/raw/`) under --data-dir and keeps
every CIFAR-10 bird (2), cat (3) and dog (5) image of the batches (with its batch file and
row), the first MNIST_TRAIN images of MNIST's training files and the first MNIST_TEST of its
test files (with their rows). The arrays are exactly what the readers of `jaxcal.data.local`
return, in file order, in a deflate-compressed `.npz` whose zip entries carry a fixed
timestamp, so a rebuild from the same files gives the same bytes (with the same zlib). A JSON
provenance note (files read, their md5, rows kept) is stored under `provenance`. Prints the
new file's sha256: record it in `jaxcal.data.embedded.SHA256` and EMBEDDED.md. Run it from the
repository root with jaxcal installed (`pip install -e .`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys
import zipfile

import numpy as np

from jaxcal.data import local

CIFAR_CLASSES = {2: "bird", 3: "cat", 5: "dog"}
MNIST_TRAIN = 8_000
MNIST_TEST = 2_000
FORMAT_VERSION = 1
DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "jaxcal" / "data" / "embedded.npz"
# md5 of the official files (as torchvision checks them), for comparison with the files read.
OFFICIAL_MD5 = {
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "MNIST/raw/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "MNIST/raw/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "MNIST/raw/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "MNIST/raw/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def md5(path: pathlib.Path) -> str:
    """Hex md5 of a file."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def _source(root: pathlib.Path, path: pathlib.Path, rows_read: int) -> dict:
    name = path.relative_to(root).as_posix()
    found = md5(path)
    return {
        "file": name,
        "md5": found,
        "rows_in_file": rows_read,
        "is_official_file": found == OFFICIAL_MD5.get(name),
    }


def cifar_arrays(root: pathlib.Path, *, train: bool) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The bird/cat/dog images of the CIFAR-10 train batches or test batch, in file order.

    Returns:
        arrays: `{prefix}_images` uint8 [N, 32, 32, 3], `{prefix}_labels` uint8 [N] (CIFAR-10
            ids 2, 3, 5), `{prefix}_row` int32 [N] (row in its batch file) and, for train,
            `{prefix}_batch` uint8 [N] (k of data_batch_k); prefix is cifar_train or cifar_test.
        sources: one provenance entry per file read.
    """
    prefix = "cifar_train" if train else "cifar_test"
    parts: dict[str, list[np.ndarray]] = {"images": [], "labels": [], "row": [], "batch": []}
    sources = []
    for batch, path in enumerate(local.cifar10_files(root, train=train), start=1):
        images, labels = local.read_cifar10_batch(path)
        keep = np.flatnonzero(np.isin(labels, list(CIFAR_CLASSES)))
        parts["images"].append(images[keep])
        parts["labels"].append(labels[keep].astype(np.uint8))
        parts["row"].append(keep.astype(np.int32))
        parts["batch"].append(np.full(len(keep), batch, np.uint8))
        sources.append(_source(root, path, len(labels)))
    if not train:
        del parts["batch"]
    return {f"{prefix}_{k}": np.concatenate(v) for k, v in parts.items()}, sources


def mnist_arrays(
    root: pathlib.Path, *, train: bool, count: int
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The first `count` MNIST images of the train or t10k files.

    Returns:
        arrays: `{prefix}_images` uint8 [count, 28, 28], `{prefix}_labels` uint8 [count] and
            `{prefix}_row` int32 [count] (0..count-1); prefix is mnist_train or mnist_test.
        sources: the images and labels files read.
    """
    prefix = "mnist_train" if train else "mnist_test"
    images, labels = local.read_mnist(root, train=train)
    if len(labels) < count:
        raise ValueError(f"{prefix}: need {count} images, the files hold {len(labels)}")
    arrays = {
        f"{prefix}_images": images[:count, :, :, 0],
        f"{prefix}_labels": labels[:count].astype(np.uint8),
        f"{prefix}_row": np.arange(count, dtype=np.int32),
    }
    sources = [_source(root, p, len(labels)) for p in local.mnist_files(root, train=train)]
    return arrays, sources


def build_arrays(data_dir: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Every array of embedded.npz, the provenance note (a 0-d str array) included."""
    root = pathlib.Path(data_dir).expanduser().resolve()
    arrays: dict[str, np.ndarray] = {}
    sources: dict[str, list[dict]] = {}
    for name, (part, files) in {
        "cifar_train": cifar_arrays(root, train=True),
        "cifar_test": cifar_arrays(root, train=False),
        "mnist_train": mnist_arrays(root, train=True, count=MNIST_TRAIN),
        "mnist_test": mnist_arrays(root, train=False, count=MNIST_TEST),
    }.items():
        arrays.update(part)
        sources[name] = files
    provenance = {
        "format_version": FORMAT_VERSION,
        "built_by": "scripts/build_embedded_data.py",
        "cifar10": {
            "origin": "CIFAR-10 python version (cifar-10-python.tar.gz, "
            "https://www.cs.toronto.edu/~kriz/cifar.html)",
            "classes": {str(k): v for k, v in CIFAR_CLASSES.items()},
            "selection": "every image of these classes in the files read, in file order; "
            "cifar_*_row is its row in its batch file (a row of the official batch too, since "
            "the files read are prefixes of the official batches), cifar_train_batch its k "
            "in data_batch_k",
            "counts": _counts(arrays, "cifar", CIFAR_CLASSES),
        },
        "mnist": {
            "origin": "MNIST (http://yann.lecun.com/exdb/mnist/), torchvision's MNIST/raw files",
            "selection": f"the first {MNIST_TRAIN} images of the training files and the first "
            f"{MNIST_TEST} of the t10k files; mnist_*_row is the row in the file",
        },
        "sources": sources,
    }
    arrays["provenance"] = np.array(json.dumps(provenance, indent=1, sort_keys=True))
    return arrays


def _counts(arrays: dict[str, np.ndarray], prefix: str, classes: dict[int, str]) -> dict:
    counts = {}
    for split in ("train", "test"):
        labels = arrays[f"{prefix}_{split}_labels"]
        counts[split] = {name: int(np.sum(labels == k)) for k, name in classes.items()}
    return counts


def write_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> str:
    """Writes arrays as a deflate-compressed .npz with fixed zip timestamps; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, arrays[name], allow_pickle=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", required=True, help="torchvision's root: cifar-10-batches-py/, MNIST/raw/"
    )
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        arrays = build_arrays(args.data_dir)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    digest = write_npz(args.out, arrays)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB), sha256 {digest}")
    for name in sorted(arrays):
        if name != "provenance":
            print(f"  {name}: {arrays[name].dtype} {list(arrays[name].shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
