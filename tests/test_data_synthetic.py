"""Tests for jaxcal.data.synthetic: determinism, shapes, balance and difficulty."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcal.data.synthetic import synthetic_cifar, synthetic_mnist


def _nearest_class_mean_accuracy(train, test):
    """Accuracy of the nearest class mean (on raw pixels) fitted on train, scored on test."""
    (x, y), (xt, yt) = train, test
    x = x.reshape(len(x), -1).astype(np.float32)
    xt = xt.reshape(len(xt), -1).astype(np.float32)
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    distances = (xt**2).sum(1)[:, None] - 2 * xt @ means.T + (means**2).sum(1)[None]
    return float((classes[distances.argmin(1)] == yt).mean())


def test_cifar_shapes_labels_and_determinism():
    images, labels = synthetic_cifar(300, classes=(2, 3), seed=5)
    assert images.shape == (300, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (300,) and labels.dtype == np.int32
    assert set(np.unique(labels)) == {2, 3}
    again = synthetic_cifar(300, classes=(2, 3), seed=5)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(labels, again[1])
    other_seed = synthetic_cifar(300, classes=(2, 3), seed=6)[0]
    test_split = synthetic_cifar(300, classes=(2, 3), seed=5, split="test")[0]
    assert np.mean(images != other_seed) > 0.5 and np.mean(images != test_split) > 0.5
    # Pixels use the whole range, like photographs.
    assert images.min() < 20 and images.max() > 235


def test_smaller_requests_are_prefixes():
    big_images, big_labels = synthetic_cifar(700, classes=(3, 5))
    small_images, small_labels = synthetic_cifar(123, classes=(3, 5))
    np.testing.assert_array_equal(small_images, big_images[:123])
    np.testing.assert_array_equal(small_labels, big_labels[:123])
    digits, digit_labels = synthetic_mnist(2000)
    np.testing.assert_array_equal(synthetic_mnist(50)[0], digits[:50])
    np.testing.assert_array_equal(synthetic_mnist(50)[1], digit_labels[:50])


def test_label_balance_and_label_noise_rate():
    _, labels = synthetic_cifar(4000, classes=(2, 3))
    # Balanced before noise; symmetric noise keeps it balanced up to binomial error (sd ~ 14).
    assert abs(np.sum(labels == 2) - 2000) < 80
    clean_images, clean = synthetic_cifar(4000, classes=(2, 3), label_noise=0.0)
    noisy_images, noisy = synthetic_cifar(4000, classes=(2, 3), label_noise=0.2)
    # Labels are noised after drawing the images: same images, about 20 % of labels changed.
    np.testing.assert_array_equal(clean_images, noisy_images)
    assert abs(np.mean(clean != noisy) - 0.2) < 0.025  # binomial sd 0.0063
    _, digits = synthetic_mnist(5000)
    counts = np.bincount(digits, minlength=10)
    assert counts.min() > 430 and counts.max() < 570


def test_mnist_shapes_and_dark_background():
    images, labels = synthetic_mnist(400, seed=1)
    assert images.shape == (400, 28, 28, 1) and images.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))
    # Like MNIST: mostly black, strokes near white.
    assert np.mean(images == 0) > 0.6
    assert np.percentile(images[images > 0], 90) > 200


def test_a_simple_classifier_is_above_chance_but_not_perfect():
    birdcat = _nearest_class_mean_accuracy(
        synthetic_cifar(2000, classes=(2, 3)), synthetic_cifar(1000, classes=(2, 3), split="test")
    )
    assert 0.6 < birdcat < 0.9  # measured 0.70; chance 0.5
    cifar10 = _nearest_class_mean_accuracy(
        synthetic_cifar(3000), synthetic_cifar(1000, split="test")
    )
    assert 0.15 < cifar10 < 0.8  # measured 0.29; chance 0.1
    mnist = _nearest_class_mean_accuracy(synthetic_mnist(3000), synthetic_mnist(1000, split="test"))
    assert 0.3 < mnist < 0.9  # measured 0.55; chance 0.1


def test_generation_is_fast():
    start = time.perf_counter()
    synthetic_cifar(10_000, classes=(2, 3))
    elapsed = time.perf_counter() - start
    # About 1.5 s on an idle 2-core machine; generous for shared CI runners.
    assert elapsed < 10.0


def test_other_image_sizes():
    images, _ = synthetic_cifar(20, classes=(3, 5), image_size=48)
    assert images.shape == (20, 48, 48, 3)
    _, labels = synthetic_cifar(5, classes=(7,))
    assert set(labels.tolist()) == {7}
    assert synthetic_cifar(0)[0].shape == (0, 32, 32, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": -1}, "n must be"),
        ({"n": 4, "classes": (2, 2)}, "distinct"),
        ({"n": 4, "classes": (10,)}, r"\[0, 9\]"),
        ({"n": 4, "split": "val"}, "split"),
        ({"n": 4, "seed": -3}, "seed"),
        ({"n": 4, "label_noise": 1.0}, "label_noise"),
        ({"n": 4, "confusion": 1.5}, "confusion"),
        ({"n": 4, "image_size": 4}, "image_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_cifar(**kwargs)


class _LeNet5(nnx.Module):
    """LeNet-5 with one output logit, as in the bird-vs-cat original."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 6, (5, 5), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(400, 120, rngs=rngs)
        self.fc2 = nnx.Linear(120, 84, rngs=rngs)
        self.fc3 = nnx.Linear(84, 1, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(jax.nn.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), (2, 2))
        x = jax.nn.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.fc3(jax.nn.relu(self.fc2(x)))[:, 0]


@pytest.mark.slow
def test_lenet_overfits_and_becomes_overconfident():
    x, y = synthetic_cifar(2000, classes=(2, 3))
    xt, yt = synthetic_cifar(1000, classes=(2, 3), split="test")
    y, yt = (y == 3).astype(np.float32), (yt == 3).astype(np.float32)
    graph, params = nnx.split(_LeNet5(rngs=nnx.Rngs(0)))
    tx = optax.adam(1e-3)

    def logits(p, images):
        return nnx.merge(graph, p)((images.astype(jnp.float32) / 255.0 - 0.5) / 0.5)

    @jax.jit
    def step(p, state, images, targets):
        grads = jax.grad(
            lambda q: optax.sigmoid_binary_cross_entropy(logits(q, images), targets).mean()
        )(p)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    state, xs, ys = tx.init(params), jnp.asarray(x), jnp.asarray(y)
    rng = np.random.default_rng(0)
    for _ in range(20):
        for batch in rng.permutation(len(x)).reshape(-1, 50):
            params, state = step(params, state, xs[batch], ys[batch])
    evaluate = jax.jit(logits)
    train_acc = float(((np.asarray(evaluate(params, xs)) > 0) == y).mean())
    p_test = np.asarray(jax.nn.sigmoid(evaluate(params, jnp.asarray(xt))))
    test_acc = float(((p_test > 0.5) == yt).mean())
    confidence = float(np.maximum(p_test, 1 - p_test).mean())
    # Measured: train 1.000, test 0.79, mean confidence 0.95.
    assert train_acc > 0.97
    assert 0.7 < test_acc < 0.9
    assert confidence - test_acc > 0.08
