"""Image preprocessing: uint8 to float, normalisation and resizing, jittable and batched."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcal.data.augment import AugmentConfig, augment_batch, eval_transform

# The (mean, std) pairs of the originals: (0.5, 0.5, 0.5) maps [0, 1] to [-1, 1] (the LeNet
# notebooks); ImageNet's statistics go with torchvision's pretrained ResNet18.
CIFAR_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

Preprocess = Callable[[jax.Array, "jax.Array | None"], jax.Array]
"""`preprocess(inputs [B, ...], key or None) -> float32 [B, ...]`, run inside jit.

A key is given for training batches (augmentation), None for evaluation."""


def to_float(images: jax.Array) -> jax.Array:
    """uint8 images [..., H, W, C] -> float32 in [0, 1] (torchvision's ToTensor, kept NHWC)."""
    images = jnp.asarray(images)
    if images.dtype != jnp.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    return images.astype(jnp.float32) / 255.0


def normalize(x: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """(x - mean) / std per channel.

    Args:
        x: float images [..., C].
        mean, std: C values each (or one value, applied to every channel).

    Returns:
        float32 [..., C].
    """
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(-1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(-1)
    channels = x.shape[-1]
    for label, arr in (("mean", mean_arr), ("std", std_arr)):
        if arr.size not in (1, channels):
            raise ValueError(f"{label} needs 1 or {channels} values, got {arr.size}")
    if np.any(std_arr <= 0):
        raise ValueError(f"std must be positive, got {tuple(std_arr)}")
    return (jnp.asarray(x, jnp.float32) - mean_arr) / std_arr


def resize(x: jax.Array, size: int | tuple[int, int], *, antialias: bool = True) -> jax.Array:
    """Bilinear resize of a batch on device (antialiased when shrinking, like PIL/torchvision).

    Args:
        x: float images [B, H, W, C].
        size: output side, or (height, width).
        antialias: low-pass filter when downsampling.

    Returns:
        float32 [B, size, size, C]; x itself when it already has that size.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, H, W, C], got shape {x.shape}")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    if (height, width) == tuple(x.shape[1:3]):
        return x
    shape = (x.shape[0], height, width, x.shape[3])
    return jax.image.resize(x, shape, method="linear", antialias=antialias)


def resize_uint8(images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Resizes uint8 images of any sizes to size x size on the host, for loading.

    Uses PIL's bilinear filter (antialiased when shrinking), what torchvision's Resize does on
    PIL images; grey images [H, W] or [H, W, 1] stay single-channel.

    Args:
        images: uint8 arrays [H_i, W_i, C].
        size: output side.

    Returns:
        uint8 [N, size, size, C].
    """
    from PIL import Image

    if not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"image {i} must be uint8 [H, W, C], got {image.dtype} {image.shape}")
        squeeze = image.ndim == 3 and image.shape[-1] == 1
        pil = Image.fromarray(image[..., 0] if squeeze else image)
        resized = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
        out.append(resized[..., None] if resized.ndim == 2 else resized)
    if not out:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(out)


def make_preprocess(
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    resize_to: int | None = None,
    augment: AugmentConfig | None = None,
) -> Pipeline:
    """Builds the on-device input pipeline the training engine calls inside its jitted step.

    The returned fn(images, key) converts uint8 to [0, 1] floats, resizes to resize_to, then
    augments with `augment` when key is given (training) or applies its deterministic
    evaluation counterpart when key is None (centre crop, plain resize, no flips), and
    finally normalises with mean/std (skipped when both are None, as in the MNIST originals).
    Pipelines built with equal arguments compare equal, so the jitted steps built from them
    (cached on the pipeline) compile once, e.g. across the seeds of a study.

    Args:
        mean, std: per-channel statistics, e.g. CIFAR_MEAN_STD or IMAGENET_MEAN_STD.
        resize_to: output side of a resize applied before augmentation (224 for ResNet18).
        augment: augmentation config, or None for none.

    Returns:
        fn(images uint8 [B, H, W, C], key PRNGKey or None) -> float32 [B, H', W', C].
    """
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std, or neither")
    if resize_to is not None and (not isinstance(resize_to, int) or resize_to <= 0):
        raise ValueError(f"resize_to must be a positive int or None, got {resize_to!r}")
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise TypeError(f"augment must be an AugmentConfig or None, got {type(augment).__name__}")
    if mean is not None:
        mean, std = _channel_values("mean", mean), _channel_values("std", std)
    return Pipeline(mean, std, resize_to, augment)


def _channel_values(name: str, values: Sequence[float]) -> tuple[float, ...]:
    """`values` as a tuple of floats (hashable, so pipelines compare by value)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ValueError(f"{name} must hold one value per channel (or one value), got none")
    return tuple(float(v) for v in flat)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The input pipeline `make_preprocess` builds (see there); a `Preprocess`."""

    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    resize_to: int | None
    augment: AugmentConfig | None

    def __call__(self, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        x = to_float(images)
        if self.resize_to is not None:
            x = resize(x, self.resize_to)
        if self.augment is not None:
            x = (
                eval_transform(x, self.augment)
                if key is None
                else augment_batch(x, key, self.augment)
            )
        if self.mean is not None:
            x = normalize(x, self.mean, self.std)
        return x
