"""Synthetic stand-ins for CIFAR-10 and MNIST, generated offline (not real images)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SYNTHETIC_NOTE = "synthetic (generated, not real images)"

# Each CIFAR-style class has a shape, a hue (degrees) and a stripe angle (degrees). With
# probability `confusion` each cue of an image is that of a class drawn at random instead of its
# own. Clutter, a coloured background, pixel noise and label noise do the rest, so
# that LeNet-5 fits the training set but cannot reach 100 % on held-out data.
_SHAPES = ("disk", "square", "triangle", "ring", "cross", "diamond", "ellipse", "bar")
_CIFAR_CUES = (
    # (shape, hue, stripe angle)
    (5, 210.0, 0.0),  # airplane
    (1, 0.0, 90.0),  # automobile
    (2, 40.0, 30.0),  # bird
    (0, 25.0, 120.0),  # cat
    (6, 100.0, 60.0),  # deer
    (3, 15.0, 150.0),  # dog
    (4, 140.0, 45.0),  # frog
    (7, 60.0, 135.0),  # horse
    (6, 230.0, 90.0),  # ship
    (1, 330.0, 15.0),  # truck
)

# Seven-segment glyphs: segments a (top), b (top right), c (bottom right), d (bottom),
# e (bottom left), f (top left), g (middle), as endpoints in a glyph box x in [0, 1], y in [0, 2].
_SEGMENTS = np.array(
    [
        [[0.0, 0.0], [1.0, 0.0]],
        [[1.0, 0.0], [1.0, 1.0]],
        [[1.0, 1.0], [1.0, 2.0]],
        [[0.0, 2.0], [1.0, 2.0]],
        [[0.0, 1.0], [0.0, 2.0]],
        [[0.0, 0.0], [0.0, 1.0]],
        [[0.0, 1.0], [1.0, 1.0]],
    ],
    dtype=np.float32,
)
_DIGIT_SEGMENTS = np.array(
    [
        [1, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 1, 0, 1],
        [1, 1, 1, 1, 0, 0, 1],
        [0, 1, 1, 0, 0, 1, 1],
        [1, 0, 1, 1, 0, 1, 1],
        [1, 0, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 1, 1],
    ],
    dtype=bool,
)

_SPLIT_STREAMS = {"train": 0, "test": 1}
# Images are generated in chunks of a fixed number of pixels, each from its own random stream,
# so a smaller request returns a prefix of a larger one (same seed, split and image size).
_CHUNK_PIXELS = 1 << 20


def _check_common(n: int, seed: int, split: str, label_noise: float, noise_std: float) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_STREAMS)}, got {split!r}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise!r}")
    if noise_std < 0.0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")


def _uniform(rng: np.random.Generator, low: float, high: float, shape) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def _normal(rng: np.random.Generator, std: float, shape) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def _balanced_labels(rng: np.random.Generator, size: int, num_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(size) % num_classes)


def _other_class(rng: np.random.Generator, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """A class drawn uniformly among the num_classes - 1 classes other than labels."""
    shift = rng.integers(1, num_classes, size=labels.shape)
    return (labels + shift) % num_classes


def _noisy_labels(
    rng: np.random.Generator, labels: np.ndarray, num_classes: int, label_noise: float
) -> np.ndarray:
    flip = rng.random(labels.shape) < label_noise
    return np.where(flip, _other_class(rng, labels, num_classes), labels)


def _hsv_to_rgb(hue_deg: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """hue, sat, val: [N] -> rgb [N, 3] in [0, 1]."""
    h = (hue_deg % 360.0) / 60.0
    c = val * sat
    x = c * (1.0 - np.abs(h % 2.0 - 1.0))
    zero = np.zeros_like(c)
    sector = np.floor(h).astype(np.int64) % 6
    table = np.stack(
        [
            np.stack([c, x, zero], -1),
            np.stack([x, c, zero], -1),
            np.stack([zero, c, x], -1),
            np.stack([zero, x, c], -1),
            np.stack([x, zero, c], -1),
            np.stack([c, zero, x], -1),
        ],
        axis=1,
    )
    rgb = table[np.arange(len(h)), sector]
    return rgb + (val - c)[:, None]


def _shape_distance(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance-like field, <= 0 inside; shape: [N], u, v: [N, H, W] in object units."""

    def radius(u, v):
        return np.sqrt(u * u + v * v)

    fields = (
        lambda u, v: radius(u, v) - 1.0,
        lambda u, v: np.maximum(np.abs(u), np.abs(v)) - 0.8,
        # Triangle: three edges with outward normals at 270, 30 and 150 degrees.
        lambda u, v: np.maximum(np.maximum(-v, 0.866 * u + 0.5 * v), -0.866 * u + 0.5 * v) - 0.5,
        lambda u, v: np.abs(radius(u, v) - 0.75) - 0.25,
        lambda u, v: np.minimum(
            np.maximum(np.abs(u) - 0.3, np.abs(v) - 1.0),
            np.maximum(np.abs(v) - 0.3, np.abs(u) - 1.0),
        ),
        lambda u, v: np.abs(u) + np.abs(v) - 1.1,
        lambda u, v: np.sqrt(u * u + 4.0 * v * v) - 1.0,
        lambda u, v: np.maximum(np.abs(u) - 1.1, np.abs(v) - 0.3),
    )
    out = np.empty_like(u)
    for i, field in enumerate(fields):
        pick = shape == i
        out[pick] = field(u[pick], v[pick])
    return out


def _cifar_chunk(
    rng: np.random.Generator,
    size: int,
    classes: np.ndarray,
    image_size: int,
    confusion: float,
    label_noise: float,
    noise_std: float,
) -> tuple[np.ndarray, np.ndarray]:
    k = len(classes)
    s = image_size
    index = _balanced_labels(rng, size, k)
    cues = np.asarray(_CIFAR_CUES, dtype=np.float32)[classes]

    def cue(column: int) -> np.ndarray:
        if k == 1:
            return cues[index, column]
        source = np.where(rng.random(size) < confusion, rng.integers(0, k, size), index)
        return cues[source, column]

    shape = cue(0).astype(np.int64)
    hue = cue(1) + _normal(rng, 12.0, size)
    stripe = np.deg2rad(cue(2) + _normal(rng, 12.0, size))

    grid = (np.arange(s, dtype=np.float32) + 0.5) / s
    yy, xx = grid[None, :, None], grid[None, None, :]

    # Background: a smooth random colour field (4 x 4 control points, bilinear).
    coarse = _uniform(rng, 0.15, 0.85, (size, 4, 4, 3))
    knots = np.linspace(0.0, 1.0, 4, dtype=np.float32)
    interp = np.maximum(0.0, 1.0 - np.abs(grid[:, None] - knots[None, :]) * 3.0)
    background = (interp @ coarse.transpose(0, 3, 1, 2) @ interp.T).transpose(0, 2, 3, 1)

    def blob(shape_id, hue_deg, angle, radius, cx, cy):
        cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        rad = radius[:, None, None]
        u = (dx * cos + dy * sin) / rad
        v = (-dx * sin + dy * cos) / rad
        dist = _shape_distance(shape_id, u, v)
        edge = 1.5 / (s * radius)[:, None, None]
        mask = np.clip(0.5 - dist / edge, 0.0, 1.0)
        colour = _hsv_to_rgb(
            hue_deg,
            _uniform(rng, 0.45, 0.95, len(hue_deg)),
            _uniform(rng, 0.45, 0.95, len(hue_deg)),
        )
        return mask, colour

    # Clutter: a smaller object with random cues behind the main one.
    clutter_on = (rng.random(size) < 0.6).astype(np.float32)[:, None, None, None]
    mask_c, colour_c = blob(
        rng.integers(0, len(_SHAPES), size),
        _uniform(rng, 0.0, 360.0, size),
        _uniform(rng, 0.0, 2.0 * np.pi, size),
        _uniform(rng, 0.10, 0.18, size),
        _uniform(rng, 0.15, 0.85, size),
        _uniform(rng, 0.15, 0.85, size),
    )
    image = background + clutter_on * mask_c[..., None] * (colour_c[:, None, None, :] - background)

    mask, colour = blob(
        shape,
        hue,
        _uniform(rng, 0.0, 2.0 * np.pi, size),
        _uniform(rng, 0.20, 0.32, size),
        _uniform(rng, 0.32, 0.68, size),
        _uniform(rng, 0.32, 0.68, size),
    )
    frequency = _uniform(rng, 4.0, 6.0, size)[:, None, None]
    phase = _uniform(rng, 0.0, 2.0 * np.pi, size)[:, None, None]
    along = xx * np.cos(stripe)[:, None, None] + yy * np.sin(stripe)[:, None, None]
    stripes = 0.7 + 0.3 * np.sin(2.0 * np.pi * frequency * along + phase)
    texture = colour[:, None, None, :] * stripes[..., None]
    image = image + mask[..., None] * (texture - image)

    image = image + _normal(rng, noise_std, image.shape)
    images = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    labels = classes[_noisy_labels(rng, index, k, label_noise)] if k > 1 else classes[index]
    return images, labels.astype(np.int32)


def _segment_distance(px, py, a, b):
    """Distance from points [N, H, W] to segments a, b: [N, S, 2] -> [N, S, H, W]."""
    ax, ay = a[..., 0][..., None, None], a[..., 1][..., None, None]
    bx, by = b[..., 0][..., None, None], b[..., 1][..., None, None]
    dx, dy = bx - ax, by - ay
    qx, qy = px[:, None] - ax, py[:, None] - ay
    t = np.clip((qx * dx + qy * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
    return np.sqrt((qx - t * dx) ** 2 + (qy - t * dy) ** 2)


def _mnist_chunk(
    rng: np.random.Generator,
    size: int,
    segment_noise: float,
    label_noise: float,
    noise_std: float,
) -> tuple[np.ndarray, np.ndarray]:
    s = 28
    digits = _balanced_labels(rng, size, 10)
    segments_on = _DIGIT_SEGMENTS[digits]
    toggle = rng.random((size, 7)) < segment_noise
    segments_on = segments_on ^ toggle

    # Random affine glyph placement: scale, slant, rotation, translation (pixel units).
    height = _uniform(rng, 15.0, 21.0, size)
    width = height * _uniform(rng, 0.35, 0.6, size)
    slant = _uniform(rng, -0.3, 0.3, size)
    angle = np.deg2rad(_uniform(rng, -12.0, 12.0, size))
    centre = 14.0 + _uniform(rng, -2.5, 2.5, (size, 2))
    gx = (_SEGMENTS[None, :, :, 0] - 0.5) * width[:, None, None]
    gy = (_SEGMENTS[None, :, :, 1] - 1.0) * height[:, None, None] / 2.0
    gx = gx - slant[:, None, None] * gy
    # Wobble the endpoints so the strokes are not ruler-straight.
    gx = gx + _normal(rng, 0.8, gx.shape)
    gy = gy + _normal(rng, 0.8, gy.shape)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    ex = gx * cos - gy * sin + centre[:, None, None, 0]
    ey = gx * sin + gy * cos + centre[:, None, None, 1]
    ends = np.stack([ex, ey], axis=-1).astype(np.float32)

    pix = np.arange(s, dtype=np.float32) + 0.5
    py = np.broadcast_to(pix[None, :, None], (size, s, s))
    px = np.broadcast_to(pix[None, None, :], (size, s, s))
    dist = _segment_distance(px, py, ends[:, :, 0], ends[:, :, 1])
    dist = np.where(segments_on[:, :, None, None], dist, np.inf).min(axis=1)
    thickness = _uniform(rng, 0.8, 1.8, size)[:, None, None]
    image = np.clip(thickness + 0.5 - dist, 0.0, 1.0)
    # Speckle: a few bright random pixels and Gaussian noise on the strokes.
    speckle = rng.random(image.shape, dtype=np.float32) < 0.01
    image = np.where(speckle, _uniform(rng, 0.3, 1.0, image.shape), image)
    image = image + _normal(rng, noise_std, image.shape) * (image > 0)
    images = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)[..., None]
    labels = _noisy_labels(rng, digits, 10, label_noise)
    return images, labels.astype(np.int32)


def _generate(chunk_fn, n: int, per_image_pixels: int, seed: int, split: str):
    chunk = max(16, _CHUNK_PIXELS // per_image_pixels)
    parts = []
    for index in range((n + chunk - 1) // chunk):
        rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], index])
        parts.append(chunk_fn(rng, chunk))
    if not parts:
        return None
    images = np.concatenate([p[0] for p in parts])[:n]
    labels = np.concatenate([p[1] for p in parts])[:n]
    return images, labels


def synthetic_cifar(
    n: int,
    *,
    classes: Sequence[int] = tuple(range(10)),
    image_size: int = 32,
    seed: int = 0,
    split: str = "train",
    confusion: float = 0.3,
    label_noise: float = 0.05,
    noise_std: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Generates CIFAR-10-shaped synthetic images (not real images), deterministic from the seed.

    Each class is a coloured, striped shape on a cluttered background. The class cues (shape,
    hue, stripe angle) are only partly predictive: each is replaced by the cue of a random class
    (among `classes`) with probability `confusion`; a fraction `label_noise` of labels is replaced
    by another class. With the defaults a nearest-class-mean classifier on pixels gets ~70 % on
    bird vs cat, and LeNet-5 ~80 % while it fits its training set.

    Args:
        n: number of images.
        classes: CIFAR-10 class ids (0..9) to generate, balanced; labels keep these ids.
        image_size: side of the square images.
        seed: random seed; `split` selects an independent stream for train and test.
        split: "train" or "test".
        confusion: probability that each cue is that of a random class.
        label_noise: fraction of labels replaced by another class.
        noise_std: standard deviation of the Gaussian pixel noise (on the [0, 1] scale).

    Returns:
        images: uint8 [n, image_size, image_size, 3]; labels: int32 [n], values in `classes`.
    """
    _check_common(n, seed, split, label_noise, noise_std)
    class_ids = np.asarray(classes, dtype=np.int64)
    if class_ids.ndim != 1 or len(class_ids) == 0 or len(set(class_ids.tolist())) != len(class_ids):
        raise ValueError(f"classes must be a non-empty sequence of distinct ids, got {classes!r}")
    if class_ids.min() < 0 or class_ids.max() >= len(_CIFAR_CUES):
        raise ValueError(f"classes must be CIFAR-10 ids in [0, 9], got {classes!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if not 0.0 <= confusion <= 1.0:
        raise ValueError(f"confusion must be in [0, 1], got {confusion!r}")

    def chunk_fn(rng, size):
        return _cifar_chunk(
            rng, size, class_ids, int(image_size), confusion, label_noise, noise_std
        )

    out = _generate(chunk_fn, n, image_size * image_size * 3, seed, split)
    if out is None:
        return np.zeros((0, image_size, image_size, 3), np.uint8), np.zeros((0,), np.int32)
    return out


def synthetic_mnist(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    segment_noise: float = 0.03,
    label_noise: float = 0.05,
    noise_std: float = 0.12,
) -> tuple[np.ndarray, np.ndarray]:
    """Generates MNIST-shaped synthetic digits (not real images), deterministic from the seed.

    Each digit is a seven-segment glyph drawn with random scale, slant, rotation, position and
    stroke width. Each segment is toggled with probability `segment_noise` (a 7 can look like
    a 1 or a 3), and a fraction `label_noise` of labels is replaced by another digit. With the
    defaults LeNet-5 reaches ~86 % test accuracy.

    Args:
        n: number of images.
        seed: random seed; `split` selects an independent stream for train and test.
        split: "train" or "test".
        segment_noise: probability that each of the 7 segments is toggled.
        label_noise: fraction of labels replaced by another digit.
        noise_std: standard deviation of the noise on the strokes (on the [0, 1] scale).

    Returns:
        images: uint8 [n, 28, 28, 1]; labels: int32 [n] in 0..9.
    """
    _check_common(n, seed, split, label_noise, noise_std)
    if not 0.0 <= segment_noise <= 1.0:
        raise ValueError(f"segment_noise must be in [0, 1], got {segment_noise!r}")

    def chunk_fn(rng, size):
        return _mnist_chunk(rng, size, segment_noise, label_noise, noise_std)

    out = _generate(chunk_fn, n, 28 * 28, seed, split)
    if out is None:
        return np.zeros((0, 28, 28, 1), np.uint8), np.zeros((0,), np.int32)
    return out
