"""Shared pytest fixtures: the real data in ../shared/data and torchvision-shaped weights."""

import os
import pathlib

import numpy as np
import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keeps the experiments' persistent compilation cache out of the user's home folder."""
    os.environ["JAXCAL_COMPILATION_CACHE"] = str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real MNIST/CIFAR-10 files in torchvision's layout; skips when they are absent."""
    if not (SHARED_DATA / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def torchvision_resnet18_state_dict() -> dict[str, np.ndarray]:
    """torchvision ResNet18's state_dict keys and shapes with random values.

    No pretrained weights can be downloaded here; BatchNorm statistics are random too, so a
    conversion that ignored them would show.
    """
    rng = np.random.default_rng(0)
    state = {}

    def conv(key, out, inp, k):
        weight = rng.standard_normal((out, inp, k, k)) * np.sqrt(2.0 / (out * k * k))
        state[f"{key}.weight"] = weight.astype(np.float32)

    def batch_norm(key, c):
        for field, low, high in (("weight", 0.5, 1.5), ("bias", -0.1, 0.1)):
            state[f"{key}.{field}"] = rng.uniform(low, high, c).astype(np.float32)
        state[f"{key}.running_mean"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)
        state[f"{key}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[f"{key}.num_batches_tracked"] = np.array(0, np.int64)

    conv("conv1", 64, 3, 7)
    batch_norm("bn1", 64)
    width = 64
    for layer, features in enumerate((64, 128, 256, 512), start=1):
        for block in (0, 1):
            key, inp = f"layer{layer}.{block}", width if block == 0 else features
            conv(f"{key}.conv1", features, inp, 3)
            batch_norm(f"{key}.bn1", features)
            conv(f"{key}.conv2", features, features, 3)
            batch_norm(f"{key}.bn2", features)
            if block == 0 and layer > 1:
                conv(f"{key}.downsample.0", features, inp, 1)
                batch_norm(f"{key}.downsample.1", features)
        width = features
    state["fc.weight"] = (rng.standard_normal((1000, 512)) * 0.01).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state
