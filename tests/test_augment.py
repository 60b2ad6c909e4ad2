"""Tests for jaxcal.data.augment: known answers, invariants and key handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcal.data import augment as A
from jaxcal.data.augment import AugmentConfig, augment_batch, eval_transform

# Float32 tolerance for interpolations that should reproduce their input exactly up to rounding
# of the weights (products of a few float32 numbers near 1): a few ulps of values in [0, 1].
EXACT_TOL = 1e-6


def _image(h=12, w=12, c=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((h, w, c), dtype=np.float32))


def _key(i=0):
    return jax.random.key(i)


def _per_key(fn, n):
    """fn(key) for keys 0..n-1, jitted and vmapped (eager calls in a loop are slow)."""
    keys = jax.vmap(jax.random.key)(jnp.arange(n))
    return np.asarray(jax.jit(jax.vmap(fn))(keys))


def test_flip_twice_is_identity_and_flip_is_mirror():
    image = _image(w=9)
    once = A.random_flip(image, _key(3))
    twice = A.random_flip(once, _key(3))
    np.testing.assert_array_equal(twice, image)
    mirrored = np.asarray(image)[:, ::-1]
    flips = _per_key(lambda k: A.random_flip(image, k), 40)
    n_flipped = sum(np.array_equal(f, mirrored) for f in flips)
    n_same = sum(np.array_equal(f, image) for f in flips)
    assert n_flipped + n_same == 40
    assert 8 <= n_flipped <= 32  # Binomial(40, 0.5): outside [8, 32] has probability < 1e-4.


def test_random_crop_is_a_window_of_the_zero_padded_image():
    h, pad, size = 28, 4, 32
    # Values 1..784 so that every pixel, and the zero padding, can be told apart.
    image = jnp.arange(1, h * h + 1, dtype=jnp.float32).reshape(h, h, 1)
    padded = np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)))
    offsets = set()
    crops = _per_key(lambda k: A.random_crop(image, k, size, pad), 300)
    assert crops.shape == (300, size, size, 1)
    for crop in crops:
        rows, cols = np.nonzero(crop[..., 0] == 1.0)  # where the image's first pixel landed
        top, left = pad - int(rows[0]), pad - int(cols[0])
        np.testing.assert_array_equal(crop, padded[top : top + size, left : left + size])
        offsets.add((top, left))
    # 5 x 5 possible windows (36 - 32 + 1 offsets per axis); 300 uniform draws miss one with
    # probability 25 * (24 / 25)^300 < 1e-4, and the keys are fixed, so this is deterministic.
    assert len(offsets) == 25
    assert min(offsets) == (0, 0) and max(offsets) == (4, 4)


def test_center_crop_of_padded_mnist_equals_pad_to_32():
    image = _image(28, 28, 1)
    expected = np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)))
    np.testing.assert_array_equal(A.center_crop(image, 32, 4), expected)


def test_rotation_by_zero_is_identity_and_by_90_is_rot90():
    image = _image(7, 7)
    np.testing.assert_array_equal(A.rotate(image, 0.0), image)
    np.testing.assert_array_equal(A.rotate(image, 90.0), np.rot90(np.asarray(image), 1))
    np.testing.assert_array_equal(A.rotate(image, 180.0), np.asarray(image)[::-1, ::-1])
    # Nearest neighbour with zero fill: a 45 degree turn blanks the corners of a constant image.
    turned = np.asarray(A.rotate(jnp.ones((9, 9, 1)), 45.0))
    assert turned[0, 0, 0] == 0.0 and turned[4, 4, 0] == 1.0
    assert set(np.unique(turned)) == {0.0, 1.0}


def test_random_rotation_stays_within_the_angle():
    # A single bright pixel at distance 10 from the centre moves along a circle; its angle
    # tells the rotation (nearest neighbour: within half a pixel, about 3 degrees).
    image = np.zeros((25, 25, 1), np.float32)
    image[12, 22, 0] = 1.0
    angles = []
    for out in _per_key(lambda k: A.random_rotation(jnp.asarray(image), k, 10.0), 60):
        rows, cols = np.nonzero(out[..., 0])
        angles.append(np.degrees(np.arctan2(12 - rows.mean(), cols.mean() - 12)))
    angles = np.asarray(angles)
    assert np.all(np.abs(angles) <= 13.0)
    assert angles.min() < -5.0 and angles.max() > 5.0


def _torchvision_jitter_reference(image, brightness, contrast, saturation):
    """torchvision's float formulas, written in numpy, applied in the fixed order b, c, s."""
    grey_w = np.array([0.2989, 0.587, 0.114], np.float32)
    x = np.clip(image * brightness, 0, 1)
    x = np.clip(contrast * x + (1 - contrast) * (x @ grey_w).mean(), 0, 1)
    return np.clip(saturation * x + (1 - saturation) * (x @ grey_w)[..., None], 0, 1)


def test_colour_adjustments_match_torchvision_formulas():
    image = _image(10, 10)
    out = A.adjust_saturation(A.adjust_contrast(A.adjust_brightness(image, 1.2), 0.8), 1.3)
    expected = _torchvision_jitter_reference(np.asarray(image), 1.2, 0.8, 1.3)
    np.testing.assert_allclose(out, expected, atol=EXACT_TOL)
    # Factor 0: brightness -> black, contrast -> the mean grey, saturation -> grey.
    np.testing.assert_array_equal(A.adjust_brightness(image, 0.0), np.zeros_like(image))
    grey = np.asarray(image) @ np.array([0.2989, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(
        A.adjust_contrast(image, 0.0), np.full(image.shape, grey.mean()), atol=EXACT_TOL
    )
    np.testing.assert_allclose(
        A.adjust_saturation(image, 0.0), np.repeat(grey[..., None], 3, -1), atol=EXACT_TOL
    )
    # Grey (1-channel) images: saturation is a no-op, contrast uses the image's own mean.
    grey_image = _image(6, 6, 1)
    np.testing.assert_array_equal(A.adjust_saturation(grey_image, 0.3), grey_image)
    np.testing.assert_allclose(
        A.adjust_contrast(grey_image, 0.5),
        0.5 * np.asarray(grey_image) + 0.5 * np.asarray(grey_image).mean(),
        atol=EXACT_TOL,
    )


def test_jitter_factor_one_is_identity():
    image = _image()
    for adjust in (A.adjust_brightness, A.adjust_contrast, A.adjust_saturation):
        np.testing.assert_allclose(adjust(image, 1.0), image, atol=EXACT_TOL)
    np.testing.assert_allclose(A.color_jitter(image, _key(0), 0.0), image, atol=EXACT_TOL)


def test_jitter_brightness_factor_range_on_a_grey_image():
    # On a constant grey image contrast and saturation change nothing, so out / in is the
    # brightness factor, uniform in [0.7, 1.3].
    image = jnp.full((4, 4, 3), 0.5)
    ratios = _per_key(lambda k: A.color_jitter(image, k, 0.3), 200)[:, 0, 0, 0] / 0.5
    assert ratios.min() >= 0.7 - 1e-6 and ratios.max() <= 1.3 + 1e-6
    assert ratios.min() < 0.75 and ratios.max() > 1.25
    assert abs(ratios.mean() - 1.0) < 0.05  # std of the mean: 0.35 / sqrt(12 * 200) = 0.007


def test_resized_crop_box_of_output_size_is_a_slice():
    image = _image(20, 16)
    out = jax.jit(A.resized_crop, static_argnums=5)(image, 3, 5, 10, 8, (10, 8))
    np.testing.assert_allclose(out, np.asarray(image)[3:13, 5:13], atol=EXACT_TOL)


def test_random_resized_crop_with_full_scale_and_unit_ratio_is_a_plain_resize():
    image = _image(16, 16)
    out = jax.jit(lambda x, k: A.random_resized_crop(x, k, (40, 40), (1.0, 1.0), (1.0, 1.0)))(
        image, _key(5)
    )
    expected = jax.image.resize(image, (40, 40, 3), "linear", antialias=True)
    np.testing.assert_allclose(out, expected, atol=EXACT_TOL)


def test_random_resized_crop_box_respects_scale():
    # On an image whose value is the column index, a crop of width w starting at column j gives
    # an output row from about j to j + w - 1: the box area fraction is within [0.5, 1].
    cols = jnp.broadcast_to(jnp.arange(32, dtype=jnp.float32)[None, :, None], (32, 32, 1))
    rows = jnp.broadcast_to(jnp.arange(32, dtype=jnp.float32)[:, None, None], (32, 32, 1))
    image = jnp.concatenate([rows, cols, jnp.zeros((32, 32, 1))], axis=-1)
    areas = []
    for out in _per_key(lambda k: A.random_resized_crop(image, k, (32, 32), scale=(0.5, 1.0)), 50):
        height = out[-1, 0, 0] - out[0, 0, 0] + 1
        width = out[0, -1, 1] - out[0, 0, 1] + 1
        areas.append(height * width / 32**2)
    areas = np.asarray(areas)
    # Edge interpolation makes the estimate up to ~1 px short on each side.
    assert areas.min() > 0.5 - 0.1 and areas.max() <= 1.0 + 1e-5
    assert areas.max() - areas.min() > 0.2


def test_augment_batch_keys_same_key_same_output_different_keys_differ():
    images = jnp.stack([_image(seed=0)] * 4)
    config = AugmentConfig(crop_padding=2, flip=True, rotation_degrees=10.0, jitter=0.3)
    a = augment_batch(images, _key(1), config)
    b = augment_batch(images, _key(1), config)
    c = augment_batch(images, _key(2), config)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # One key per example: identical inputs in a batch get different augmentations.
    assert not np.allclose(a[0], a[1])


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_outputs_stay_in_unit_range(channels):
    rng = np.random.default_rng(channels)
    images = rng.random((8, 16, 16, channels), dtype=np.float32)
    images[0] = 1.0  # saturated pixels are where clipping matters
    images[1] = 0.0
    images[2] = rng.integers(0, 2, images[2].shape)  # a hard black/white pattern
    config = AugmentConfig(
        crop_padding=2,
        resized_crop_scale=(0.8, 1.0),
        output_size=20,
        flip=True,
        rotation_degrees=10.0,
        jitter=0.3,
    )
    for seed in range(3):
        out = np.asarray(augment_batch(jnp.asarray(images), _key(seed), config))
        assert out.shape == (8, 20, 20, channels)
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_presets_and_eval_transform_shapes():
    mnist = AugmentConfig.mnist_classic()
    assert (mnist.crop_size, mnist.crop_padding, mnist.flip) == (32, 4, True)
    digits = jnp.asarray(np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32))
    assert augment_batch(digits, _key(0), mnist).shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(
        eval_transform(digits, mnist), np.pad(np.asarray(digits), ((0, 0), (2, 2), (2, 2), (0, 0)))
    )
    cats = AugmentConfig.catsdogs(output_size=24)
    assert cats.resized_crop_scale == (0.8, 1.0) and cats.rotation_degrees == 10.0
    assert cats.jitter == 0.3 and cats.flip
    photos = jnp.asarray(np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32))
    assert augment_batch(photos, _key(0), cats).shape == (2, 24, 24, 3)
    np.testing.assert_allclose(
        eval_transform(photos, cats),
        jax.image.resize(photos, (2, 24, 24, 3), "linear", antialias=True),
        atol=EXACT_TOL,
    )
    # No augmentation configured: both paths return the input.
    np.testing.assert_array_equal(augment_batch(photos, _key(0), AugmentConfig()), photos)
    np.testing.assert_array_equal(eval_transform(photos, AugmentConfig()), photos)


def test_augment_batch_compiles_once_per_shape_and_config():
    config = AugmentConfig(crop_padding=1, flip=True)
    images = jnp.zeros((2, 8, 8, 3))
    before = augment_batch._cache_size()
    for i in range(3):
        augment_batch(images, _key(i), config)
    assert augment_batch._cache_size() == before + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"crop_padding": -1},
        {"crop_size": 0},
        {"resized_crop_scale": (0.0, 1.0)},
        {"resized_crop_scale": (0.9, 0.8)},
        {"resized_crop_ratio": (2.0, 1.0)},
        {"resized_crop_scale": [0.5]},
        {"resized_crop_ratio": (0.5, 1.0, 2.0)},
        {"output_size": 0},
        {"rotation_degrees": -1.0},
        {"jitter": 1.0},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AugmentConfig(**kwargs)


def test_configs_compare_and_hash_by_value_whatever_the_pair_types():
    # Pipelines, and the jitted steps cached on them, are keyed by these configs.
    from_lists = AugmentConfig(resized_crop_scale=[0.5, 1], resized_crop_ratio=np.array([1, 2]))
    from_tuples = AugmentConfig(resized_crop_scale=(0.5, 1.0), resized_crop_ratio=(1.0, 2.0))
    assert from_lists == from_tuples and hash(from_lists) == hash(from_tuples)
    assert from_lists.resized_crop_scale == (0.5, 1.0)
    assert from_lists != AugmentConfig(resized_crop_scale=(0.5, 1.0))


def test_bad_inputs_raise_before_work():
    with pytest.raises(TypeError, match="float"):
        augment_batch(jnp.zeros((2, 8, 8, 3), jnp.uint8), _key(0), AugmentConfig(flip=True))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        augment_batch(jnp.zeros((8, 8, 3)), _key(0), AugmentConfig(flip=True))
    with pytest.raises(ValueError, match="exceeds"):
        A.random_crop(_image(8, 8), _key(0), 20, 2)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        A.adjust_contrast(_image(4, 4, 2), 0.5)
