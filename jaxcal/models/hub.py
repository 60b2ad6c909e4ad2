"""torchvision's ImageNet weights from the Hugging Face hub as jaxcal models, without torch.

    from jaxcal import models
    model = models.pretrained("densenet121", num_classes=1)  # pip install 'jaxcal[hub]'

The `timm/<model>.tv_in1k` repositories hold torchvision's original weights as
`model.safetensors`; they are cached in the hub's usual cache (`HF_HUB_CACHE`, by default
`~/.cache/huggingface/hub`) and read with numpy, then converted with the every-key-checked
tables of `jaxcal.models.convert`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from flax import nnx

from jaxcal.models.convert import densenet121_from_torchvision, resnet18_from_torchvision
from jaxcal.models.weight_files import WeightsUnavailableError, load_safetensors

HUB_FILENAME = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class HubWeights:
    """Where one architecture's ImageNet weights live on the hub and how they are converted.

    Attributes:
        repo_id: the hub model repository.
        convert: state_dict, num_classes, rngs= -> the loaded model.
    """

    repo_id: str
    convert: Callable[..., nnx.Module]


PRETRAINED = {
    "resnet18": HubWeights("timm/resnet18.tv_in1k", resnet18_from_torchvision),
    "densenet121": HubWeights("timm/densenet121.tv_in1k", densenet121_from_torchvision),
}
"""Architecture name -> its torchvision ImageNet-1k weights on the hub."""


def _unavailable(name: str, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"ImageNet weights for {name} are unavailable: {reason}. Pass --weights FILE instead "
        "(.safetensors or .npz; .pth needs torch), or install the hub extra "
        f"(pip install 'jaxcal[hub]') and go online; to convert a torchvision checkpoint: "
        f"python -m jaxcal.models.convert --model {name} {name}.pth {name}.npz"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _import_hub(name: str) -> Any:
    try:
        import huggingface_hub
        import safetensors  # noqa: F401  (needed to read the file; checked before downloading)
    except ImportError as err:
        raise _unavailable(name, f"{err.name or 'huggingface_hub'} is not installed") from None
    return huggingface_hub


def _remove_partial_download(cache_dir: str | None, repo_id: str, etag: str | None) -> None:
    # The hub downloads into blobs/<etag>.incomplete and renames it when complete; a failed
    # download would leave that file behind.
    if etag is None:
        return
    from huggingface_hub import constants

    folder = "models--" + repo_id.replace("/", "--")
    partial = os.path.join(
        cache_dir or constants.HF_HUB_CACHE, folder, "blobs", f"{etag}.incomplete"
    )
    if os.path.exists(partial):
        os.remove(partial)


def weights_file(name: str, *, cache_dir: str | None = None) -> str:
    """The local path of `name`'s ImageNet `model.safetensors`, downloaded once into the cache.

    A cached file is used without any network access. Otherwise one metadata request (the
    hub's `HF_HUB_ETAG_TIMEOUT`, 10 s by default, and no retries) decides whether the hub can
    be reached before the download starts, so that offline use fails in seconds rather than
    in the hub client's retry loop. With `HF_HUB_OFFLINE=1` only the cache is read.

    Args:
        name: a key of `PRETRAINED` ("resnet18", "densenet121").
        cache_dir: the hub cache folder; None uses the hub's (`HF_HUB_CACHE` / `HF_HOME`).

    Returns:
        Path of the cached `model.safetensors`.

    Raises:
        ValueError: `name` is not a key of `PRETRAINED`.
        WeightsUnavailableError: the extra is not installed, or the file is neither cached nor
            downloadable (the message names `--weights FILE`, the extra and the convert command).
    """
    if name not in PRETRAINED:
        raise ValueError(f"name must be one of {sorted(PRETRAINED)}, got {name!r}")
    hub = _import_hub(name)
    repo_id = PRETRAINED[name].repo_id
    try:
        return hub.hf_hub_download(
            repo_id, HUB_FILENAME, cache_dir=cache_dir, local_files_only=True
        )
    except FileNotFoundError:  # the hub's LocalEntryNotFoundError: not cached
        pass
    if hub.constants.HF_HUB_OFFLINE:
        raise _unavailable(name, f"HF_HUB_OFFLINE is set and {repo_id} is not in the hub cache")
    try:
        metadata = hub.get_hf_file_metadata(
            hub.hf_hub_url(repo_id, HUB_FILENAME), timeout=hub.constants.HF_HUB_ETAG_TIMEOUT
        )
    except Exception as err:  # connection, timeout, HTTP and proxy errors differ by hub version
        raise _unavailable(name, f"the hub cannot be reached ({_first_line(err)})") from None
    try:
        return hub.hf_hub_download(repo_id, HUB_FILENAME, cache_dir=cache_dir)
    except Exception as err:
        _remove_partial_download(cache_dir, repo_id, metadata.etag)
        raise _unavailable(name, f"downloading {repo_id} failed ({_first_line(err)})") from None


def pretrained(
    name: str,
    num_classes: int | None = None,
    *,
    rngs: nnx.Rngs | None = None,
    cache_dir: str | None = None,
) -> nnx.Module:
    """A model with torchvision's ImageNet weights from the hub, in eval mode; no torch needed.

    Args:
        name: "resnet18" or "densenet121" (the keys of `PRETRAINED`).
        num_classes: None keeps the 1000-class ImageNet head; another value gets a freshly
            initialised head of that width (e.g. 1 for a single binary logit).
        rngs: keys for a fresh head; defaults to `nnx.Rngs(0)`.
        cache_dir: the hub cache folder; None uses the hub's.

    Returns:
        The `ResNet18` or `DenseNet121`, every key of the file checked by the conversion table.

    Raises:
        ValueError: unknown `name`, bad `num_classes`, or a file that does not match the model.
        WeightsUnavailableError: see `weights_file`.
    """
    path = weights_file(name, cache_dir=cache_dir)
    return PRETRAINED[name].convert(load_safetensors(path), num_classes, rngs=rngs)
