"""Tests for jaxcal.models.hub (`models.pretrained`): hub weights via a pre-populated cache.

No weights can be downloaded here: the tests write safetensors files with the exact key sets
and shapes of the `timm/*.tv_in1k` repositories (random values) into the hub's cache layout,
`models--<org>--<name>/{blobs/<sha256>, refs/main, snapshots/<commit>/model.safetensors}`,
and read them back with `HF_HUB_OFFLINE=1`.
"""

import os
import subprocess
import sys
import textwrap
import time
import types

import huggingface_hub
import jax
import numpy as np
import pytest
from densenet_reference import densenet121_shapes, random_state_dict
from flax import nnx
from hub_cache import populate_hub_cache
from huggingface_hub import constants
from safetensors.numpy import save_file

from jaxcal.models import (
    WeightsUnavailableError,
    densenet121_from_torchvision,
    hub,
    load_model,
    pretrained,
    resnet18_from_torchvision,
)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty hub cache with HF_HUB_OFFLINE on, for this process (the hub reads these
    constants at call time; the environment variables only at import)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


_logits = nnx.jit(lambda model, x: model(x))


def test_resnet18_from_a_fresh_process_with_only_the_cache(
    tmp_path, torchvision_resnet18_state_dict
):
    torch = pytest.importorskip("torch")
    home = tmp_path / "hf"
    populate_hub_cache(home / "hub", "timm/resnet18.tv_in1k", torchvision_resnet18_state_dict)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from flax import nnx
        from jaxcal import models
        model = models.pretrained("resnet18", num_classes=1, rngs=nnx.Rngs(5))
        logits = nnx.jit(lambda m, x: m(x))(model, np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "logits.npy")!r}, np.asarray(logits))
        assert "torch" not in sys.modules, "torch was imported"
    """)
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    as_torch = {k: torch.from_numpy(v) for k, v in torchvision_resnet18_state_dict.items()}
    reference = resnet18_from_torchvision(as_torch, num_classes=1, rngs=nnx.Rngs(5))
    # The same jitted program on the same weights and the same fresh head: identical logits.
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), _logits(reference, x))


def test_densenet121_from_the_cache_equals_the_torch_state_dict(offline_hub):
    torch = pytest.importorskip("torch")
    state = random_state_dict(densenet121_shapes(), seed=4)
    populate_hub_cache(offline_hub, "timm/densenet121.tv_in1k", state)
    model = pretrained("densenet121")
    as_torch = {k: torch.from_numpy(v) for k, v in state.items()}
    reference = densenet121_from_torchvision(as_torch)
    same = jax.tree.map(np.array_equal, nnx.state(model), nnx.state(reference))
    assert all(jax.tree.leaves(same))
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
    logits = _logits(model, x)
    assert logits.shape == (1, 1000)
    np.testing.assert_array_equal(logits, _logits(reference, x))


def _assert_names_the_ways_out(message, name):
    assert "\n" not in message
    assert "--weights FILE" in message
    assert "pip install 'jaxcal[hub]'" in message
    assert f"python -m jaxcal.models.convert --model {name} {name}.pth {name}.npz" in message


def test_offline_without_the_files_fails_at_once_and_writes_nothing(offline_hub):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        pretrained("densenet121", num_classes=1)
    assert time.perf_counter() - start < 5
    assert "HF_HUB_OFFLINE is set and timm/densenet121.tv_in1k is not in the hub cache" in str(
        info.value
    )
    _assert_names_the_ways_out(str(info.value), "densenet121")
    assert _files(offline_hub) == []


def test_unreachable_hub_fails_in_seconds_without_retries(offline_hub, monkeypatch):
    # Online mode, but the endpoint refuses connections: the hub client alone would retry
    # for ~25 s before giving up.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        hub.weights_file("resnet18")
    assert time.perf_counter() - start < 5
    assert "the hub cannot be reached" in str(info.value)
    _assert_names_the_ways_out(str(info.value), "resnet18")
    assert _files(offline_hub) == []


def test_failed_download_leaves_no_partial_file(offline_hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    etag = "f" * 64
    monkeypatch.setattr(
        huggingface_hub,
        "get_hf_file_metadata",
        lambda url, timeout: types.SimpleNamespace(etag=etag),
    )
    blobs = offline_hub / "models--timm--resnet18.tv_in1k" / "blobs"
    real_download = huggingface_hub.hf_hub_download

    def interrupted(repo_id, filename, *, cache_dir=None, local_files_only=False):
        if local_files_only:
            return real_download(repo_id, filename, cache_dir=cache_dir, local_files_only=True)
        blobs.mkdir(parents=True)
        (blobs / f"{etag}.incomplete").write_bytes(b"half")
        raise OSError("connection reset\nby peer")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", interrupted)
    with pytest.raises(WeightsUnavailableError, match=r"downloading timm/resnet18.tv_in1k failed"):
        pretrained("resnet18")
    assert _files(blobs) == []


def test_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(WeightsUnavailableError, match="huggingface_hub is not installed") as info:
        pretrained("resnet18")
    _assert_names_the_ways_out(str(info.value), "resnet18")


def test_bad_arguments_and_a_damaged_cache(offline_hub, torchvision_resnet18_state_dict):
    with pytest.raises(ValueError, match=r"name must be one of \['densenet121', 'resnet18'\]"):
        pretrained("resnet50")
    populate_hub_cache(offline_hub, "timm/resnet18.tv_in1k", torchvision_resnet18_state_dict)
    blob = next((offline_hub / "models--timm--resnet18.tv_in1k" / "blobs").iterdir())
    blob.write_bytes(blob.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="is not a readable .safetensors file"):
        pretrained("resnet18")


def test_load_model_resolves_every_kind_of_weights(
    offline_hub, tmp_path, torchvision_resnet18_state_dict
):
    populate_hub_cache(offline_hub, "timm/resnet18.tv_in1k", torchvision_resnet18_state_dict)
    save_file(torchvision_resnet18_state_dict, tmp_path / "r.safetensors")
    from_hub = load_model("resnet18", "imagenet", 1, seed=3)
    from_file = load_model("resnet18", tmp_path / "r.safetensors", 1, seed=3)
    same = jax.tree.map(np.array_equal, nnx.state(from_hub), nnx.state(from_file))
    assert all(jax.tree.leaves(same))
    assert from_hub.fc.kernel.shape == (512, 1)
    with pytest.raises(ValueError, match="name must be one of"):
        load_model("vgg16", "random", 1)
    with pytest.raises(ValueError, match="weights must be 'random', 'imagenet' or a file"):
        load_model("densenet121", "imagenet21k", 1)
    with pytest.raises(WeightsUnavailableError, match="densenet121"):
        load_model("densenet121", "imagenet", 1)
