"""Tests for jaxcal.data.transforms: known answers and parity with PIL's bilinear resize."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcal.data.augment import AugmentConfig
from jaxcal.data.transforms import (
    CIFAR_MEAN_STD,
    IMAGENET_MEAN_STD,
    make_preprocess,
    normalize,
    resize,
    resize_uint8,
    to_float,
)

# Float32 arithmetic on values in [0, 1] or [-3, 3]: a few ulps.
TOL = 1e-6


def _uint8_images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_to_float_known_values():
    out = to_float(jnp.asarray([[0, 51, 255]], jnp.uint8))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=TOL)
    with pytest.raises(TypeError, match="uint8"):
        to_float(jnp.zeros((2, 2), jnp.float32))


def test_normalize_with_the_originals_statistics():
    x = jnp.asarray([[[[0.0, 0.5, 1.0]]]])
    np.testing.assert_allclose(normalize(x, *CIFAR_MEAN_STD), [[[[-1.0, 0.0, 1.0]]]], atol=TOL)
    mean, std = IMAGENET_MEAN_STD
    expected = (np.array([0.0, 0.5, 1.0]) - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(normalize(x, mean, std)[0, 0, 0], expected, atol=TOL)
    # A single value applies to every channel (grey images with one channel too).
    np.testing.assert_allclose(normalize(jnp.ones((1, 2, 2, 1)), (0.5,), (0.25,)), 2.0, atol=TOL)
    with pytest.raises(ValueError, match="mean needs 1 or 3 values"):
        normalize(x, (0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="std must be positive"):
        normalize(x, (0.5,), (0.0,))


@pytest.mark.parametrize("size", [(24, 20), (100, 90)])
def test_resize_matches_pil_bilinear(size):
    # PIL's BILINEAR on float images widens the triangle filter when shrinking, like
    # jax.image.resize(antialias=True); they agree to float32 rounding of the weights.
    x = np.random.default_rng(0).random((64, 48), dtype=np.float32)
    pil = np.asarray(Image.fromarray(x, mode="F").resize(size[::-1], Image.Resampling.BILINEAR))
    out = resize(jnp.asarray(x)[None, ..., None], size)
    assert out.shape == (1, *size, 1)
    np.testing.assert_allclose(out[0, ..., 0], pil, atol=1e-5)


def test_resize_to_224_keeps_constants_and_skips_same_size():
    x = jnp.full((2, 32, 32, 3), 0.25)
    out = jax.jit(lambda v: resize(v, 224))(x)
    assert out.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(out, 0.25, atol=TOL)
    assert resize(x, 32) is x
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        resize(jnp.zeros((32, 32, 3)), 64)


def test_resize_uint8_handles_mixed_sizes_and_grey():
    images = [_uint8_images((30, 50, 3)), _uint8_images((64, 20, 3), 1)]
    out = resize_uint8(images, 16)
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(images[1]).resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out[1], expected)
    grey = resize_uint8(np.full((3, 10, 10, 1), 77, np.uint8), 25)
    assert grey.shape == (3, 25, 25, 1)
    np.testing.assert_array_equal(grey, 77)
    with pytest.raises(ValueError, match="uint8"):
        resize_uint8([np.zeros((4, 4, 3), np.float32)], 8)


def test_preprocess_eval_is_to_float_then_normalise():
    images = _uint8_images((4, 8, 8, 3))
    preprocess = make_preprocess(*CIFAR_MEAN_STD)
    out = jax.jit(preprocess)(jnp.asarray(images), None)
    np.testing.assert_allclose(out, (images / 255.0 - 0.5) / 0.5, atol=TOL)
    # Without statistics (the MNIST originals: ToTensor only) values stay in [0, 1].
    np.testing.assert_allclose(make_preprocess()(jnp.asarray(images)), images / 255.0, atol=TOL)


def test_preprocess_resizes_for_the_pretrained_resnet():
    images = _uint8_images((2, 32, 32, 3))
    preprocess = make_preprocess(*IMAGENET_MEAN_STD, resize_to=224)
    out = jax.jit(preprocess)(jnp.asarray(images), None)
    assert out.shape == (2, 224, 224, 3)
    expected = normalize(resize(jnp.asarray(images / 255.0, jnp.float32), 224), *IMAGENET_MEAN_STD)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_preprocess_augments_only_with_a_key():
    digits = _uint8_images((3, 28, 28, 1))
    preprocess = jax.jit(make_preprocess(augment=AugmentConfig.mnist_classic()))
    centred = preprocess(jnp.asarray(digits), None)
    padded = np.pad(digits, ((0, 0), (2, 2), (2, 2), (0, 0))) / 255.0
    np.testing.assert_allclose(centred, padded, atol=TOL)
    a = preprocess(jnp.asarray(digits), jax.random.key(0))
    b = preprocess(jnp.asarray(digits), jax.random.key(0))
    assert a.shape == (3, 32, 32, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, centred)


def test_pipelines_built_alike_are_equal_and_compute_alike():
    # Equal pipelines hash alike, so the train and eval steps cached on them compile once.
    flip = AugmentConfig(flip=True)
    a = make_preprocess(*CIFAR_MEAN_STD, augment=flip)
    b = make_preprocess([0.5, 0.5, 0.5], np.full(3, 0.5), augment=AugmentConfig(flip=True))
    assert a == b and hash(a) == hash(b)
    assert a != make_preprocess(*CIFAR_MEAN_STD)
    assert a != make_preprocess(*IMAGENET_MEAN_STD, augment=flip)
    assert a != make_preprocess(*CIFAR_MEAN_STD, resize_to=16, augment=flip)
    images = jnp.asarray(_uint8_images((4, 8, 8, 3)))
    key = jax.random.key(1)
    np.testing.assert_array_equal(a(images, key), b(images, key))
    np.testing.assert_array_equal(a(images, None), b(images, None))


def test_make_preprocess_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mean must hold"):
        make_preprocess((), ())
    with pytest.raises(ValueError, match="both mean and std"):
        make_preprocess((0.5,))
    with pytest.raises(ValueError, match="resize_to"):
        make_preprocess(resize_to=0)
    with pytest.raises(TypeError, match="AugmentConfig"):
        make_preprocess(augment={"flip": True})
    with pytest.raises(TypeError, match="uint8"):
        make_preprocess()(jnp.zeros((1, 4, 4, 3)), None)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        make_preprocess()(jnp.zeros((4, 4, 3), jnp.uint8), None)
