"""Writing files into the Hugging Face hub's cache layout, as a download would leave them."""

import hashlib
import os

from safetensors.numpy import save_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(cache, repo_id, state_dict):
    """Writes `state_dict` as `repo_id`'s model.safetensors in the hub cache layout."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True)
    tmp = folder / "model.tmp"
    # timm's hub files keep torchvision's names and drop the num_batches_tracked counters.
    save_file({k: v for k, v in state_dict.items() if "num_batches" not in k}, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, folder / "blobs" / digest)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    os.symlink(os.path.join("..", "..", "blobs", digest), snapshot / "model.safetensors")
