"""On-device augmentation: jitted, vmapped over the batch with one random key per image."""

from __future__ import annotations

import dataclasses
import functools
import math

import dm_pix as pix
import jax
import jax.numpy as jnp

from jaxcal._checks import is_int, is_positive_int

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma).
_GREY_WEIGHTS = (0.2989, 0.587, 0.114)
_RESIZED_CROP_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply, with torchvision's meaning; the defaults apply none.

    Applied in this order: random crop, random resized crop, horizontal flip, rotation, colour
    jitter (its three adjustments in random order, as torchvision's ColorJitter).

    Attributes:
        crop_size: side of a random crop (RandomCrop(crop_size, padding=crop_padding)); None
            keeps the input size. A crop happens when crop_size is set or crop_padding > 0.
        crop_padding: zero padding added on every side before the random crop.
        resized_crop_scale: (min, max) fraction of the area for RandomResizedCrop, or None.
        resized_crop_ratio: (min, max) aspect ratio (width / height) of the resized crop.
        output_size: side of the resized crop's output; None keeps the input size.
        flip: random horizontal flip with probability 0.5.
        rotation_degrees: rotation by an angle uniform in [-d, d] (nearest, zero fill); 0 = off.
        jitter: brightness, contrast and saturation factors uniform in [1 - j, 1 + j]; 0 = off.
    """

    crop_size: int | None = None
    crop_padding: int = 0
    resized_crop_scale: tuple[float, float] | None = None
    resized_crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    output_size: int | None = None
    flip: bool = False
    rotation_degrees: float = 0.0
    jitter: float = 0.0

    def __post_init__(self):
        if self.crop_size is not None and (not is_positive_int(self.crop_size)):
            raise ValueError(f"crop_size must be a positive int or None, got {self.crop_size!r}")
        if not is_int(self.crop_padding) or self.crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0, got {self.crop_padding!r}")
        # Pairs are stored as float tuples, so configs compare and hash by value.
        if self.resized_crop_scale is not None:
            lo, hi = _pair(self, "resized_crop_scale")
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(
                    f"resized_crop_scale must satisfy 0 < min <= max <= 1, got {(lo, hi)}"
                )
        lo, hi = _pair(self, "resized_crop_ratio")
        if not 0.0 < lo <= hi:
            raise ValueError(f"resized_crop_ratio must satisfy 0 < min <= max, got {(lo, hi)}")
        if self.output_size is not None and (not is_positive_int(self.output_size)):
            raise ValueError(
                f"output_size must be a positive int or None, got {self.output_size!r}"
            )
        if not 0.0 <= self.rotation_degrees <= 180.0:
            raise ValueError(f"rotation_degrees must be in [0, 180], got {self.rotation_degrees!r}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")

    @classmethod
    def mnist_classic(cls) -> AugmentConfig:
        """RandomCrop(32, padding=4) + horizontal flip: the classic-LeNet MNIST original.

        On 28 x 28 digits this gives 32 x 32 images (at evaluation: the digit centred in 32 x 32,
        the same as `load_mnist(pad_to_32=True)`).
        """
        return cls(crop_size=32, crop_padding=4, flip=True)

    @classmethod
    def catsdogs(cls, output_size: int = 224) -> AugmentConfig:
        """RandomResizedCrop(scale 0.8-1) + flip + rotation 10 + ColorJitter(0.3, 0.3, 0.3)."""
        return cls(
            resized_crop_scale=(0.8, 1.0),
            output_size=output_size,
            flip=True,
            rotation_degrees=10.0,
            jitter=0.3,
        )

    @property
    def crops(self) -> bool:
        """Whether a random crop is configured."""
        return self.crop_size is not None or self.crop_padding > 0


def _check_image(image: jax.Array) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise TypeError(f"image must be float in [0, 1] (see to_float), got {image.dtype}")


def random_crop(image: jax.Array, key: jax.Array, size: int, padding: int) -> jax.Array:
    """Zero-pads every side by `padding`, then crops a random size x size window.

    Args:
        image: float [H, W, C].
        key: PRNG key.
        size: crop side; at most H + 2 * padding and W + 2 * padding.
        padding: zero padding per side.

    Returns:
        [size, size, C].
    """
    _check_image(image)
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    if size > padded.shape[0] or size > padded.shape[1]:
        raise ValueError(f"crop size {size} exceeds the padded image {padded.shape[:2]}")
    return pix.random_crop(key, padded, (size, size, image.shape[2]))


def center_crop(image: jax.Array, size: int, padding: int = 0) -> jax.Array:
    """The deterministic counterpart of random_crop: the centre window of the padded image."""
    _check_image(image)
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    if size > padded.shape[0] or size > padded.shape[1]:
        raise ValueError(f"crop size {size} exceeds the padded image {padded.shape[:2]}")
    top = (padded.shape[0] - size) // 2
    left = (padded.shape[1] - size) // 2
    return padded[top : top + size, left : left + size]


def resized_crop(
    image: jax.Array,
    top: jax.Array,
    left: jax.Array,
    height: jax.Array,
    width: jax.Array,
    size: tuple[int, int],
) -> jax.Array:
    """Crops [top, top + height) x [left, left + width) and resizes it to `size`, bilinear.

    The box may be traced (a different box per image under vmap): the crop and resize are one
    `jax.image.scale_and_translate`, antialiased when shrinking.

    Args:
        image: float [H, W, C].
        top, left, height, width: the box in pixels (scalars).
        size: (out_height, out_width).

    Returns:
        [out_height, out_width, C].
    """
    _check_image(image)
    out_h, out_w = size
    scale = jnp.stack(
        [out_h / jnp.asarray(height, jnp.float32), out_w / jnp.asarray(width, jnp.float32)]
    )
    translation = (
        -jnp.stack([jnp.asarray(top, jnp.float32), jnp.asarray(left, jnp.float32)]) * scale
    )
    return jax.image.scale_and_translate(
        image,
        (out_h, out_w, image.shape[2]),
        spatial_dims=(0, 1),
        scale=scale,
        translation=translation,
        method="linear",
        antialias=True,
    )


def random_resized_crop(
    image: jax.Array,
    key: jax.Array,
    size: tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> jax.Array:
    """torchvision's RandomResizedCrop: a random box of random area and aspect, resized.

    As torchvision: up to 10 draws of (area fraction, log-uniform aspect); the first box that
    fits is used, else a centre crop with the aspect clamped to `ratio`.

    Args:
        image: float [H, W, C].
        key: PRNG key.
        size: (out_height, out_width).
        scale: (min, max) fraction of the image area.
        ratio: (min, max) width / height.

    Returns:
        [out_height, out_width, C].
    """
    _check_image(image)
    h_in, w_in = image.shape[0], image.shape[1]
    k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
    n = _RESIZED_CROP_ATTEMPTS
    area = h_in * w_in * jax.random.uniform(k_area, (n,), minval=scale[0], maxval=scale[1])
    log_ratio = jax.random.uniform(
        k_ratio, (n,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])
    )
    aspect = jnp.exp(log_ratio)
    widths = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    heights = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (widths > 0) & (widths <= w_in) & (heights > 0) & (heights <= h_in)
    first = jnp.argmax(fits)

    in_ratio = w_in / h_in
    if in_ratio < ratio[0]:
        fb_w, fb_h = w_in, int(round(w_in / ratio[0]))
    elif in_ratio > ratio[1]:
        fb_w, fb_h = int(round(h_in * ratio[1])), h_in
    else:
        fb_w, fb_h = w_in, h_in

    found = fits.any()
    height = jnp.where(found, heights[first], fb_h)
    width = jnp.where(found, widths[first], fb_w)
    top = jnp.where(found, jax.random.randint(k_top, (), 0, h_in - height + 1), (h_in - fb_h) // 2)
    left = jnp.where(found, jax.random.randint(k_left, (), 0, w_in - width + 1), (w_in - fb_w) // 2)
    return resized_crop(image, top, left, height, width, size)


def random_flip(image: jax.Array, key: jax.Array) -> jax.Array:
    """Horizontal flip with probability 0.5 (image: [H, W, C])."""
    _check_image(image)
    return pix.random_flip_left_right(key, image)


def rotate(image: jax.Array, degrees: jax.Array) -> jax.Array:
    """Rotates counter-clockwise about the centre, nearest neighbour, zero fill (torchvision).

    Args:
        image: float [H, W, C].
        degrees: angle (scalar, may be traced).
    """
    _check_image(image)
    return pix.rotate(image, jnp.deg2rad(degrees), order=0, mode="constant", cval=0.0)


def random_rotation(image: jax.Array, key: jax.Array, degrees: float) -> jax.Array:
    """Rotation by an angle uniform in [-degrees, degrees]."""
    angle = jax.random.uniform(key, (), minval=-degrees, maxval=degrees)
    return rotate(image, angle)


def _grey(image: jax.Array) -> jax.Array:
    """[H, W, C] -> [H, W, 1] luma (C = 3) or the image itself (C = 1)."""
    if image.shape[-1] == 1:
        return image
    if image.shape[-1] != 3:
        raise ValueError(f"colour adjustments need 1 or 3 channels, got {image.shape[-1]}")
    return (image @ jnp.asarray(_GREY_WEIGHTS, image.dtype))[..., None]


def adjust_brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
    """clip(factor * image, 0, 1), as torchvision's adjust_brightness on float images."""
    return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Blends with the mean grey level of the whole image, clipped to [0, 1] (torchvision)."""
    mean = jnp.mean(_grey(image))
    return jnp.clip(factor * image + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Blends with the grey version of the image, clipped to [0, 1]; grey images unchanged."""
    if image.shape[-1] == 1:
        return image
    return jnp.clip(factor * image + (1.0 - factor) * _grey(image), 0.0, 1.0)


def color_jitter(image: jax.Array, key: jax.Array, strength: float) -> jax.Array:
    """torchvision's ColorJitter(brightness=s, contrast=s, saturation=s) on a float image.

    Each factor is uniform in [max(0, 1 - s), 1 + s]; the three adjustments run in a random
    order per image.
    """
    _check_image(image)
    k_factors, k_order = jax.random.split(key)
    factors = jax.random.uniform(
        k_factors, (3,), minval=max(0.0, 1.0 - strength), maxval=1.0 + strength
    )
    order = jax.random.permutation(k_order, 3)
    branches = (
        lambda x: adjust_brightness(x, factors[0]),
        lambda x: adjust_contrast(x, factors[1]),
        lambda x: adjust_saturation(x, factors[2]),
    )
    for step in range(3):
        image = jax.lax.switch(order[step], branches, image)
    return image


def augment_image(image: jax.Array, key: jax.Array, config: AugmentConfig) -> jax.Array:
    """Applies `config` to one float image [H, W, C] with values in [0, 1].

    Each augmentation draws from its own subkey of `key`, so turning one on or off does not
    change what the others do.
    """
    _check_image(image)
    k_crop, k_resized, k_flip, k_rotate, k_jitter = jax.random.split(key, 5)
    if config.crops:
        size = config.crop_size or image.shape[0]
        image = random_crop(image, k_crop, size, config.crop_padding)
    if config.resized_crop_scale is not None:
        size = (config.output_size or image.shape[0], config.output_size or image.shape[1])
        image = random_resized_crop(
            image, k_resized, size, config.resized_crop_scale, config.resized_crop_ratio
        )
    if config.flip:
        image = random_flip(image, k_flip)
    if config.rotation_degrees > 0:
        image = random_rotation(image, k_rotate, config.rotation_degrees)
    if config.jitter > 0:
        image = color_jitter(image, k_jitter, config.jitter)
    return image


@functools.partial(jax.jit, static_argnames="config")
def augment_batch(images: jax.Array, key: jax.Array, config: AugmentConfig) -> jax.Array:
    """Augments a batch on device, one key per image (split from `key`).

    Args:
        images: float [B, H, W, C] in [0, 1].
        key: PRNG key; the same key gives the same augmentation.
        config: what to apply (static: one compilation per config).

    Returns:
        float [B, H', W', C] in [0, 1] (H' = W' = crop_size or output_size when set).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(augment_image, in_axes=(0, 0, None))(images, keys, config)


@functools.partial(jax.jit, static_argnames="config")
def eval_transform(images: jax.Array, config: AugmentConfig) -> jax.Array:
    """The deterministic counterpart of augment_batch, for evaluation: the same output shape.

    The random crop becomes the centre crop of the padded image, the random resized crop a plain
    resize to output_size (torchvision's Resize); flips, rotation and jitter are skipped.

    Args:
        images: float [B, H, W, C].
        config: the training augmentation.

    Returns:
        float [B, H', W', C].
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images must be float in [0, 1] (see to_float), got {images.dtype}")
    if config.crops:
        size = config.crop_size or images.shape[1]
        images = jax.vmap(lambda x: center_crop(x, size, config.crop_padding))(images)
    if config.resized_crop_scale is not None and config.output_size is not None:
        shape = (images.shape[0], config.output_size, config.output_size, images.shape[3])
        images = jax.image.resize(images, shape, method="linear", antialias=True)
    return images


def _pair(config: AugmentConfig, name: str) -> tuple[float, float]:
    """Stores the (min, max) field `name` of `config` as a tuple of two floats; returns it."""
    values = getattr(config, name)
    pair = tuple(float(v) for v in values)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {values!r}")
    object.__setattr__(config, name, pair)
    return pair
