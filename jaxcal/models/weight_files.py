"""Reading and writing state_dict files (.npz, .safetensors, .pth) with one-line errors.

`.npz` and `.safetensors` are read with numpy only (safetensors' numpy API); only `.pth` needs
torch. Every failure is a `ValueError` (the file is not what it claims) or a
`WeightsUnavailableError` (a package this format needs is not installed), each a single line.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

SUFFIXES = (".npz", ".safetensors", ".pth", ".pt")
_CONVERT_HINT = (
    "or convert it once where torch is installed: python -m jaxcal.models.convert FILE.pth FILE.npz"
)


class WeightsUnavailableError(RuntimeError):
    """Weights cannot be had here: a package is missing or the hub cannot be reached.

    The message says in one line what to install or which other way to pass weights.
    """


def as_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (torch is never imported) or a list."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _check_state_dict(state_dict: Any) -> None:
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise TypeError(
            f"state_dict must be a mapping of str keys to arrays, got {type(state_dict).__name__}"
        )


def save_npz(state_dict: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a state_dict (torch key -> array, torch layouts kept) to an uncompressed `.npz`.

    Args:
        state_dict: str key -> numpy array or torch tensor.
        path: the output file.
    """
    _check_state_dict(state_dict)
    arrays = {key: as_numpy(value) for key, value in state_dict.items()}
    for key, array in arrays.items():
        if array.dtype == object:
            raise TypeError(f"state_dict[{key!r}] must be an array, got {type(state_dict[key])}")
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _require_file(path: str | os.PathLike[str]) -> str:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise ValueError(f"weights file {os.fspath(path)!r} does not exist (or is not a file)")
    return os.fspath(path)


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a `.npz` of arrays (e.g. written by `save_npz`) into key -> numpy array.

    Pickled content is never loaded: a file that is not a zip of plain arrays is refused.

    Args:
        path: the `.npz` file.

    Returns:
        The state_dict, with numpy arrays, ready for `resnet18_from_torchvision` and its twins.

    Raises:
        ValueError: the file is missing, not an `.npz`, holds object arrays or no arrays.
    """
    path = _require_file(path)
    # numpy's own messages for these cases advise loading with allow_pickle=True, which would
    # run code from the file: they are replaced, not chained.
    arrays = None
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        arrays = None
    # A zip member that is not an .npy comes back as raw bytes, not an array.
    if arrays is None or not all(isinstance(a, np.ndarray) for a in arrays.values()):
        raise ValueError(
            f"weights file {path!r} is not an .npz archive of plain arrays; write one with "
            "jaxcal.models.save_npz or python -m jaxcal.models.convert"
        )
    if not arrays:
        raise ValueError(f"weights file {path!r} holds no arrays")
    return arrays


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a `.safetensors` file into key -> numpy array, without torch.

    Args:
        path: the `.safetensors` file (e.g. a Hugging Face hub `model.safetensors`).

    Returns:
        The state_dict, with numpy arrays.

    Raises:
        ValueError: the file is missing or not a readable safetensors file.
        WeightsUnavailableError: the `safetensors` package is not installed.
    """
    path = _require_file(path)
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise WeightsUnavailableError(
            f"reading {path!r} needs the safetensors package: pip install 'jaxcal[hub]'"
        ) from None
    try:
        arrays = load_file(path)
    except Exception as err:  # safetensors raises its own SafetensorError, or OSError
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"weights file {path!r} is not a readable .safetensors file ({first_line})"
        ) from None
    if not arrays:
        raise ValueError(f"weights file {path!r} holds no arrays")
    return arrays


def load_torch(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a `torch.save`d state_dict (or `{'state_dict': ...}`) with `weights_only=True`.

    Raises:
        ValueError: the file is missing, pickles more than tensors, or holds no state_dict.
        WeightsUnavailableError: torch is not installed.
    """
    path = _require_file(path)
    try:
        import torch
    except ImportError:
        raise WeightsUnavailableError(
            f"reading {path!r} needs torch: pip install 'jaxcal[torch]' torch==2.13.0 (the CPU "
            f"build), pass a .safetensors or .npz file instead, {_CONVERT_HINT}"
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"{path} is not a plain state_dict (torch.load with weights_only=True refused it: "
            f"{first_line}); save model.state_dict(), not the model"
        ) from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"{path} holds a {type(loaded).__name__}, not a state_dict (or a "
            "{'state_dict': ...} wrapper); save model.state_dict(), not the model"
        )
    return dict(loaded)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state_dict from `.npz`, `.safetensors` (numpy only) or `.pth`/`.pt` (needs torch).

    Args:
        path: the weights file; its suffix picks the reader.

    Returns:
        torch key -> array (numpy arrays; torch tensors for `.pth`), ready for the converters.

    Raises:
        ValueError: the file is missing, has another suffix, or is not what its suffix says.
        WeightsUnavailableError: the package its format needs is not installed.
    """
    path = _require_file(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".safetensors":
        return load_safetensors(path)
    if suffix in (".pth", ".pt"):
        return load_torch(path)
    raise ValueError(
        f"weights file {path!r} must end in one of {', '.join(SUFFIXES)}, got {suffix or 'none'!r}"
    )
