"""Tests for jaxcal.train: losses, optimisers, the jitted steps, fit, freezing, early stopping,
prediction and data parallelism."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcal import train
from jaxcal.train import loop, predict, steps

# float32 tolerances: the same arithmetic fused differently by XLA differs in the last bits,
# a few ulps of values of order 1 after several steps.
TIGHT = 1e-6
LOOSE = 1e-5


class TinyCNN(nnx.Module):
    """conv -> BatchNorm -> ReLU -> global mean -> Dropout -> fc."""

    def __init__(self, num_classes: int = 1, *, dropout: float = 0.5, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), use_bias=False, rngs=rngs)  # BatchNorm has the bias
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(dropout)
        self.fc = nnx.Linear(4, num_classes, rngs=rngs)

    def __call__(self, x, *, rngs=None):
        h = nnx.relu(self.bn(self.conv(x))).mean((1, 2))
        return self.fc(self.drop(h, rngs=rngs))


class TinyMLP(nnx.Module):
    """flatten -> Linear -> ReLU -> Linear."""

    def __init__(self, num_classes: int = 3, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(8 * 8 * 3, 16, rngs=rngs)
        self.fc = nnx.Linear(16, num_classes, rngs=rngs)

    def __call__(self, x, *, rngs=None):
        del rngs
        return self.fc(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


def scale(images, key):
    """uint8 -> float32 in [-1, 1]; the same for training and evaluation."""
    del key
    return images.astype(jnp.float32) / 127.5 - 1.0


def make_data(n: int, num_classes: int = 2, seed: int = 0):
    """uint8 [n, 8, 8, 3] images whose class is set by the mean of one channel."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    images = rng.integers(0, 160, (n, 8, 8, 3))
    images[..., 0] += (labels * 90 // max(num_classes - 1, 1))[:, None, None]
    return images.clip(0, 255).astype(np.uint8), labels


TRAIN = make_data(100)
VAL = make_data(40, seed=1)


def params_of(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def stats_of(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


# ---------------------------------------------------------------- config, losses, optimisers


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
        ({"learning_rate": 0.0}, ValueError, "learning_rate"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay"),
        ({"momentum": float("nan")}, ValueError, "momentum"),
        ({"trainable": "fc"}, TypeError, "trainable"),
        ({"trainable": ()}, ValueError, "trainable"),
        ({"patience": 0}, ValueError, "patience"),
        ({"monitor": "accuracy"}, ValueError, "monitor"),
        ({"steps_per_call": 0}, ValueError, "steps_per_call"),
        ({"micro_batch_size": 0}, ValueError, "micro_batch_size"),
        ({"micro_batch_size": True}, TypeError, "micro_batch_size"),
        ({"batch_size": 64, "micro_batch_size": 48}, ValueError, "divide batch_size 64"),
    ],
)
def test_config_rejects_bad_values(kwargs, error, name):
    with pytest.raises(error, match=name):
        train.TrainConfig(**kwargs)


def test_config_defaults_are_the_first_notebook():
    config = train.TrainConfig()
    assert (config.optimizer, config.learning_rate, config.batch_size, config.epochs) == (
        "adam",
        1e-3,
        64,
        10,
    )
    assert train.TrainConfig(trainable=["layer4", "fc"]).trainable == ("layer4", "fc")


def test_losses_known_values():
    labels = jnp.array([1, 0, 1])
    single = jnp.array([0.0, 2.0, -3.0])
    # BCE with logits: log(1 + exp(-z)) for y = 1, log(1 + exp(z)) for y = 0.
    expected = [np.log(2.0), np.log1p(np.exp(2.0)), np.log1p(np.exp(3.0))]
    np.testing.assert_allclose(train.per_example_loss(single, labels), expected, rtol=TIGHT)
    np.testing.assert_allclose(
        train.per_example_loss(single[:, None], labels), expected, rtol=TIGHT
    )
    np.testing.assert_array_equal(train.is_correct(single, labels), [False, False, False])
    multi = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    np.testing.assert_allclose(
        train.per_example_loss(multi, jnp.array([0, 2])),
        [np.log(np.exp([1.0, 2.0, 3.0]).sum()) - 1.0, np.log(2.0 + np.exp(5.0)) - 5.0],
        atol=TIGHT,  # logsumexp(...) - 5 cancels: float32 keeps ~1e-7 absolute, not relative
    )
    np.testing.assert_array_equal(train.is_correct(multi, jnp.array([0, 2])), [False, True])
    with pytest.raises(ValueError, match="logits"):
        train.per_example_loss(jnp.zeros((2, 3, 4)), jnp.zeros(2, jnp.int32))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-30, 30, allow_nan=False), min_size=16, max_size=16),
    st.lists(st.integers(0, 1), min_size=16, max_size=16),
)
def test_single_logit_equals_two_class_softmax(logits, labels):
    """sigmoid BCE of z is softmax CE of [0, z]; both predict class 1 iff z > 0."""
    z = jnp.asarray(logits, jnp.float32)
    single, two, correct_single, correct_two = _both_forms(z, jnp.asarray(labels))
    # Both are log-sum-exp of two terms computed in float32 by different formulas.
    np.testing.assert_allclose(single, two, rtol=LOOSE, atol=LOOSE)
    np.testing.assert_array_equal(correct_single, correct_two)


@jax.jit
def _both_forms(z, y):
    two = jnp.stack([jnp.zeros_like(z), z], axis=1)
    return (
        train.per_example_loss(z, y),
        train.per_example_loss(two, y),
        train.is_correct(z, y),
        train.is_correct(two, y),  # argmax picks class 0 on a tie, as z > 0 does
    )


def _torch_rule(name, lr, momentum, weight_decay, steps):
    """PyTorch's update rules written out in numpy, on the loss 0.5 * |p - 1|^2."""
    p = np.array([0.5, -2.0, 3.0])
    buf, m, v = None, np.zeros(3), np.zeros(3)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        g = p - 1.0
        if name == "sgd":
            g = g + weight_decay * p
            buf = g if buf is None else momentum * buf + g
            p = p - lr * (buf if momentum else g)
            continue
        if name == "adam":
            g = g + weight_decay * p
        else:  # adamw: decoupled decay
            p = p * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize(
    ("name", "momentum", "weight_decay"),
    [
        ("sgd", 0.0, 0.0),
        ("sgd", 0.9, 5e-4),
        ("adam", 0.0, 0.0),
        ("adam", 0.0, 1e-2),
        ("adamw", 0.0, 1e-2),
    ],
)
def test_optimizers_follow_pytorch_update_rules(name, momentum, weight_decay):
    config = train.TrainConfig(
        optimizer=name, learning_rate=0.1, momentum=momentum, weight_decay=weight_decay
    )
    tx = train.make_optimizer(config)
    p = jnp.array([0.5, -2.0, 3.0])
    state = tx.init(p)
    for _ in range(5):
        updates, state = tx.update(p - 1.0, state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(p, _torch_rule(name, 0.1, momentum, weight_decay, 5), rtol=LOOSE)


@settings(max_examples=6, deadline=None)  # each (N, B) compiles once
@given(st.integers(1, 200), st.data())
def test_epoch_batches_are_a_permutation_cut_into_batches(n, data):
    b = data.draw(st.integers(1, n))
    rows = np.asarray(train.epoch_batches(jax.random.key(n), n, b))
    assert rows.shape == (n // b, b) and rows.dtype == np.int32
    flat = rows.ravel()
    assert len(np.unique(flat)) == flat.size and flat.min() >= 0 and flat.max() < n
    np.testing.assert_array_equal(rows, train.epoch_batches(jax.random.key(n), n, b))


def test_epoch_batches_change_with_the_key():
    a = train.epoch_batches(jax.random.key(0), 50, 10)
    b = train.epoch_batches(jax.random.key(1), 50, 10)
    assert not np.array_equal(a, b)


# ---------------------------------------------------------------- the jitted step


@settings(max_examples=6, deadline=None)  # each shape compiles once per mode
@given(st.integers(1, 40), st.integers(1, 12), st.sampled_from(["uint8", "float32"]), st.data())
def test_batch_rows_copies_the_rows_a_gather_takes(n, b, dtype, data):
    """The CPU row-copy loop and the gather both give images[index], repeats included."""
    rng = np.random.default_rng(n * 100 + b)
    shape = data.draw(st.sampled_from([(n, 4, 3, 2), (n, 7)]))
    images = rng.integers(0, 256, shape).astype(dtype)
    index = rng.integers(0, n, b).astype(np.int32)
    for copy_rows in (True, False):
        rows = jax.jit(lambda x, i, c=copy_rows: steps.batch_rows(x, i, copy_rows=c))
        np.testing.assert_array_equal(rows(jnp.asarray(images), jnp.asarray(index)), images[index])


def test_rows_are_copied_on_one_cpu_device_and_gathered_on_a_mesh():
    assert jax.default_backend() == "cpu"
    assert steps._copies_rows(None)
    assert steps._copies_rows(train.make_mesh(jax.devices()[:1]))
    # Several devices (the 8-device run below) keep the gather: a loop would copy the whole
    # batch on every device before sharding it.


@pytest.mark.parametrize(
    "preferred, steps_per_epoch, expected",
    [
        (8, 12, 6),
        (8, 125, 5),
        (8, 16, 8),
        (8, 13, 8),
        (8, 9, 8),
        (8, 3, 3),
        (1, 7, 1),
        (16, 20, 10),
    ],
)
def test_automatic_steps_per_call_divide_the_epoch_when_they_can(
    preferred, steps_per_epoch, expected
):
    assert loop.steps_dividing_the_epoch(preferred, steps_per_epoch) == expected


def test_steps_dividing_the_epoch_rejects_bad_counts():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        loop.steps_dividing_the_epoch(8, 0)
    with pytest.raises(TypeError, match="preferred"):
        loop.steps_dividing_the_epoch(8.0, 12)


def test_fit_with_12_steps_an_epoch_compiles_no_single_step(monkeypatch):
    """An MLP on CPU prefers 8 steps per call; with 12 steps an epoch `fit` fuses 6, so no
    single-step program runs, and an explicit `steps_per_call` is kept as given."""
    made = []

    def recording(
        graphdef, config, preprocess=None, *, steps_per_call=1, micro_batch_size=None, mesh=None
    ):
        step = steps.make_train_step(
            graphdef,
            config,
            preprocess,
            steps_per_call=steps_per_call,
            micro_batch_size=micro_batch_size,
            mesh=mesh,
        )
        calls = [steps_per_call, 0]
        made.append(calls)

        def counted(*args):
            calls[1] += 1
            return step(*args)

        return counted

    monkeypatch.setattr(loop, "make_train_step", recording)
    images, labels = make_data(12 * 8)
    for steps_per_call, expected in ((None, [[6, 4], [1, 0]]), (8, [[8, 2], [1, 8]])):
        made.clear()
        config = train.TrainConfig(epochs=2, batch_size=8, steps_per_call=steps_per_call)
        history = train.fit(
            TinyMLP(rngs=nnx.Rngs(0)), (images, labels), config=config, progress=False
        )
        assert history.epochs_run == 2 and history.steps_per_epoch == 12
        assert made == expected


def test_runs_over_seeds_share_one_compiled_step():
    """The seed's key is an argument of the compiled step, not a constant in it: a step for
    another seed reuses the compiled program, draws other dropout masks, and a step for the
    same seed again repeats the first exactly."""
    images, labels = jnp.asarray(TRAIN[0]), jnp.asarray(TRAIN[1])
    batches = train.epoch_batches(jax.random.key(3), 100, 16)

    def one_step(seed):
        config = train.TrainConfig(optimizer="sgd", learning_rate=0.1, seed=seed)
        graphdef, state = train.create_train_state(TinyCNN(rngs=nnx.Rngs(0)), config)
        before = steps._train_step.cache_info()
        step = train.make_train_step(graphdef, config, scale)
        _, metrics = step(state, images, labels, batches)
        return float(metrics[0, 0]), before

    first, _ = one_step(0)
    other, before = one_step(1)
    again, _ = one_step(0)
    after = steps._train_step.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 2
    assert other != first
    assert again == first


def test_train_step_matches_a_plain_nnx_loop():
    """Six donated steps equal nnx.Optimizer + nnx.value_and_grad on the same batches, BatchNorm
    statistics included."""
    config = train.TrainConfig(optimizer="sgd", learning_rate=0.1, momentum=0.9)
    model = TinyCNN(dropout=0.0, rngs=nnx.Rngs(0))
    reference = TinyCNN(dropout=0.0, rngs=nnx.Rngs(0))
    graphdef, state = train.create_train_state(model, config)
    step = train.make_train_step(graphdef, config, scale)
    images, labels = jnp.asarray(TRAIN[0]), jnp.asarray(TRAIN[1])
    batches = train.epoch_batches(jax.random.key(3), 100, 16)  # 6 batches

    optimizer = nnx.Optimizer(reference, train.make_optimizer(config), wrt=nnx.Param)
    reference.train()
    expected = []

    @nnx.jit
    def reference_step(model, optimizer, x, y):
        def loss_fn(m):
            return train.per_example_loss(m(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for row in np.asarray(batches):
        loss = reference_step(reference, optimizer, scale(images[row], None), labels[row])
        expected.append(float(loss))

    losses = []
    for _ in range(6):
        state, metrics = step(state, images, labels, batches)
        assert metrics.shape == (1, 2)
        losses.append(float(metrics[0, 0]))
    assert int(state.step) == 6
    np.testing.assert_allclose(losses, expected, rtol=LOOSE)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=LOOSE, atol=TIGHT),
        state.params,
        nnx.to_pure_dict(nnx.state(reference, nnx.Param)),
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=LOOSE, atol=TIGHT),
        state.rest["bn"],
        nnx.to_pure_dict(nnx.state(reference, nnx.BatchStat))["bn"],
    )
    # The model handed to create_train_state still owns intact (undonated) arrays.
    assert float(jnp.sum(model.fc.kernel[...])) == pytest.approx(
        float(jnp.sum(TinyCNN(dropout=0.0, rngs=nnx.Rngs(0)).fc.kernel[...]))
    )


# ---------------------------------------------------------------- fit


KEYS_SEEN = set()


def augment(images, key):
    """`scale`, plus Gaussian noise on training batches; notes which kinds of call it saw."""
    KEYS_SEEN.add("eval" if key is None else "train")
    x = scale(images, None)
    return x if key is None else x + 0.1 * jax.random.normal(key, x.shape)


@pytest.fixture(scope="module")
def fitted():
    """TinyCNN (BatchNorm + dropout) trained 4 epochs on TRAIN with augmentation and validation."""
    model = TinyCNN(rngs=nnx.Rngs(0))
    config = train.TrainConfig(epochs=4, batch_size=32, learning_rate=0.05, eval_batch_size=16)
    KEYS_SEEN.clear()
    history = train.fit(model, TRAIN, VAL, config, preprocess=augment, progress=False)
    return model, history, config, set(KEYS_SEEN)


def test_fit_history(fitted):
    model, history, *_ = fitted
    assert history.steps_per_epoch == 3  # 100 // 32; the ragged 4 are dropped
    assert history.step_loss.shape == (12,) and history.epochs_run == 4
    np.testing.assert_allclose(
        history.train_loss, history.step_loss.reshape(4, 3).mean(1), rtol=TIGHT
    )
    np.testing.assert_allclose(
        history.train_accuracy, history.step_accuracy.reshape(4, 3).mean(1), rtol=TIGHT
    )
    assert history.best_epoch == int(np.argmin(history.val_loss)) + 1
    assert not history.stopped_early
    assert history.train_loss[-1] < history.train_loss[0]
    # The last validation numbers are those of the returned model, all 40 examples counted.
    final = train.evaluate(model, *VAL, batch_size=16, preprocess=augment)
    assert final.loss == pytest.approx(history.val_loss[-1], rel=LOOSE)
    assert final.accuracy == pytest.approx(history.val_accuracy[-1], abs=1e-7)
    restored = train.History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert restored.to_dict() == history.to_dict()
    np.testing.assert_array_equal(restored.step_loss, history.step_loss)


def test_fit_is_reproducible_and_seeded(fitted):
    """Permutations, augmentation noise and dropout masks all come from `config.seed`."""
    _, history, config, _ = fitted
    again = TinyCNN(rngs=nnx.Rngs(0))
    history_again = train.fit(again, TRAIN, VAL, config, preprocess=augment, progress=False)
    np.testing.assert_array_equal(history_again.step_loss, history.step_loss)
    other = TinyCNN(rngs=nnx.Rngs(0))
    reseeded = dataclasses.replace(config, seed=1)
    history_other = train.fit(other, TRAIN, VAL, reseeded, preprocess=augment, progress=False)
    assert not np.array_equal(history_other.step_loss, history.step_loss)


def test_preprocess_gets_a_key_in_training_and_none_in_evaluation(fitted):
    *_, keys_seen = fitted
    assert keys_seen == {"train", "eval"}


def test_steps_per_call_fuses_steps_without_changing_them():
    config = train.TrainConfig(epochs=2, batch_size=20, optimizer="sgd", learning_rate=0.1)
    one = TinyMLP(rngs=nnx.Rngs(0))
    fused = TinyMLP(rngs=nnx.Rngs(0))
    data = make_data(100, num_classes=3)
    h_one = train.fit(one, data, None, config, preprocess=scale, progress=False)
    fused_config = dataclasses.replace(config, steps_per_call=2)  # 5 steps: 2 fused calls + 1
    h_fused = train.fit(fused, data, None, fused_config, preprocess=scale, progress=False)
    assert h_fused.step_loss.shape == (10,)
    np.testing.assert_allclose(h_fused.step_loss, h_one.step_loss, rtol=LOOSE)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=LOOSE, atol=TIGHT),
        params_of(fused),
        params_of(one),
    )


class TinyDropoutCNN(nnx.Module):
    """TinyCNN without BatchNorm: conv -> ReLU -> global mean -> Dropout -> fc."""

    def __init__(self, *, dropout: float = 0.0, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.drop = nnx.Dropout(dropout)
        self.fc = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x, *, rngs=None):
        return self.fc(self.drop(nnx.relu(self.conv(x)).mean((1, 2)), rngs=rngs))


@pytest.mark.parametrize("steps_per_call", [1, 2])
def test_micro_batches_sum_to_the_whole_batch_step(steps_per_call):
    """Gradients, losses and accuracies of 4 micro-batches of 5 equal those of the batch of 20
    (float32 rounding: the sums run in another order)."""
    config = train.TrainConfig(batch_size=20, learning_rate=0.05)
    images, labels = make_data(60, num_classes=3)
    order = train.epoch_batches(jax.random.key(0), 60, 20)
    results = []
    for micro in (None, 5):
        graphdef, state = train.create_train_state(TinyDropoutCNN(rngs=nnx.Rngs(0)), config)
        step = train.make_train_step(
            graphdef, config, scale, steps_per_call=steps_per_call, micro_batch_size=micro
        )
        metrics = []
        for _ in range(3):
            state, step_metrics = step(state, images, labels, order)
            metrics.append(np.asarray(step_metrics))
        results.append((state.params, np.concatenate(metrics), int(state.step)))
    (whole, whole_metrics, n), (micro, micro_metrics, m) = results
    assert n == m == 3 * steps_per_call
    assert whole_metrics.shape == (3 * steps_per_call, 2)
    assert not np.allclose(whole_metrics[0], whole_metrics[-1])  # the steps learned
    np.testing.assert_allclose(micro_metrics, whole_metrics, rtol=LOOSE, atol=TIGHT)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=LOOSE, atol=TIGHT), micro, whole
    )


def test_micro_batches_draw_dropout_keys_of_their_own():
    """With dropout, micro-batches differ from the whole-batch step (other keys) but a run
    repeats exactly."""
    config = train.TrainConfig(epochs=2, batch_size=20, learning_rate=0.05)
    data = make_data(60, num_classes=3)
    losses = []
    for micro in (None, 4, 4):
        model = TinyDropoutCNN(dropout=0.5, rngs=nnx.Rngs(0))
        fitted = train.fit(
            model,
            data,
            None,
            dataclasses.replace(config, micro_batch_size=micro),
            preprocess=scale,
            progress=False,
        )
        losses.append(fitted.step_loss)
    assert np.all(np.isfinite(losses))
    np.testing.assert_array_equal(losses[1], losses[2])
    assert not np.allclose(losses[0][1:], losses[1][1:])


class OwnRngsDropout(nnx.Module):
    """Dropout drawing from the model's own RNG stream (no call-time keys)."""

    def __init__(self, rngs: nnx.Rngs):
        self.fc = nnx.Linear(8 * 8 * 3, 3, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.fc(self.drop(x.reshape(x.shape[0], -1)))


def test_micro_batches_carry_the_model_state_from_one_to_the_next():
    """A model's own RNG stream advances once per micro-batch (4 draws for 4 micro-batches),
    so no two micro-batches share a dropout mask."""
    config = train.TrainConfig(batch_size=20)
    order = train.epoch_batches(jax.random.key(0), 100, 20)
    counts = {}
    for micro in (None, 5):
        graphdef, state = train.create_train_state(OwnRngsDropout(nnx.Rngs(0)), config)
        step = train.make_train_step(graphdef, config, scale, micro_batch_size=micro)
        state, _ = step(state, *TRAIN, order)
        counts[micro] = int(state.rngs["drop"]["rngs"]["count"])
    assert counts == {None: 1, 5: 4}


def test_micro_batches_refuse_batch_norm_in_training_mode(tmp_path):
    """BatchNorm would normalise each micro-batch alone: refused before any work (no
    checkpoint folder written), by `fit` and by the step itself; a frozen one is fine."""
    config = train.TrainConfig(epochs=1, batch_size=20, micro_batch_size=10)
    with pytest.raises(ValueError, match="micro_batch_size must be None.*BatchNorm"):
        train.fit(
            TinyCNN(rngs=nnx.Rngs(0)),
            TRAIN,
            None,
            config,
            preprocess=scale,
            progress=False,
            checkpoint_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()
    graphdef, state = train.create_train_state(TinyCNN(rngs=nnx.Rngs(0)), config)
    step = train.make_train_step(graphdef, config, scale, micro_batch_size=10)
    order = train.epoch_batches(jax.random.key(0), 100, 20)
    with pytest.raises(ValueError, match="micro_batch_size must be None.*BatchNorm"):
        step(state, *TRAIN, order)
    frozen = dataclasses.replace(config, trainable=("fc",))
    history = train.fit(
        TinyCNN(rngs=nnx.Rngs(0)), TRAIN, None, frozen, preprocess=scale, progress=False
    )
    assert np.all(np.isfinite(history.step_loss))


def test_make_train_step_checks_micro_batches():
    """The type when the step is made; the division by the rows of `batches` when traced."""
    config = train.TrainConfig(batch_size=20)
    graphdef, state = train.create_train_state(TinyMLP(rngs=nnx.Rngs(0)), config)
    with pytest.raises(TypeError, match="micro_batch_size must be an int"):
        train.make_train_step(graphdef, config, micro_batch_size=5.0)
    with pytest.raises(ValueError, match="micro_batch_size must be >= 1"):
        train.make_train_step(graphdef, config, micro_batch_size=0)
    step = train.make_train_step(graphdef, config, scale, micro_batch_size=8)
    order = train.epoch_batches(jax.random.key(0), 100, 20)
    with pytest.raises(
        ValueError, match="micro_batch_size must divide the batch of 20 rows, got 8"
    ):
        step(state, *TRAIN, order)


def test_fit_picks_micro_batches_for_patch_conv_on_cpu(monkeypatch):
    """On one CPU device `fit` asks `conv.micro_batch_for` (here shrunk to split batches above
    8, in micro-batches of at least 4); an explicit `micro_batch_size` wins (several devices:
    `test_data_parallel_matches_one_device`)."""
    from jaxcal.models import conv

    made = []
    real = steps.make_train_step

    def recording(*args, micro_batch_size=None, **kwargs):
        made.append(micro_batch_size)
        return real(*args, micro_batch_size=micro_batch_size, **kwargs)

    monkeypatch.setattr(loop, "make_train_step", recording)
    monkeypatch.setattr(conv, "CPU_MICRO_BATCH", 8)
    monkeypatch.setattr(conv, "MIN_MICRO_BATCH", 4)

    class PatchNet(nnx.Module):
        def __init__(self, rngs):
            self.conv = conv.PatchConv(3, 4, 3, rngs=rngs)
            self.fc = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.fc(nnx.relu(self.conv(x)).mean((1, 2)))

    automatic = 5 if jax.default_backend() == "cpu" else 20  # 20's largest divisor up to 8
    for micro, expected in ((None, automatic), (10, 10)):
        made.clear()
        config = train.TrainConfig(epochs=1, batch_size=20, micro_batch_size=micro)
        history = train.fit(
            PatchNet(nnx.Rngs(0)), TRAIN, None, config, preprocess=scale, progress=False
        )
        assert set(made) == {expected}
        assert np.all(np.isfinite(history.step_loss))
        assert history.micro_batch_size == (None if expected == 20 else expected)
        restored = train.History.from_dict(json.loads(json.dumps(history.to_dict())))
        assert restored.micro_batch_size == history.micro_batch_size


def test_freezing_the_backbone_keeps_it_exactly():
    """trainable=("fc",): conv and BatchNorm parameters and statistics do not move, fc does, and
    only fc has optimiser state."""
    model = TinyCNN(rngs=nnx.Rngs(0))
    before_params, before_stats = params_of(model), stats_of(model)
    config = train.TrainConfig(epochs=2, batch_size=25, learning_rate=0.05, trainable=("fc",))
    train.fit(model, TRAIN, None, config, preprocess=scale, progress=False)
    after_params, after_stats = params_of(model), stats_of(model)
    assert_trees_equal(after_params["conv"], before_params["conv"])
    assert_trees_equal(after_params["bn"], before_params["bn"])
    assert_trees_equal(after_stats, before_stats)  # frozen BatchNorm runs in eval mode
    assert not np.array_equal(after_params["fc"]["kernel"], before_params["fc"]["kernel"])

    _, state = train.create_train_state(model, config)
    assert set(state.params) == {"fc"}
    assert set(state.opt_state[0].mu) == {"fc"}

    unfrozen = TinyCNN(rngs=nnx.Rngs(0))
    train.fit(
        unfrozen,
        TRAIN,
        None,
        dataclasses.replace(config, trainable=None),
        preprocess=scale,
        progress=False,
    )
    assert not np.array_equal(stats_of(unfrozen)["bn"]["mean"], before_stats["bn"]["mean"])


def test_trainable_names_must_exist():
    with pytest.raises(ValueError, match=r"\['head'\].*\['bn', 'conv', 'fc'\]"):
        train.create_train_state(TinyCNN(rngs=nnx.Rngs(0)), train.TrainConfig(trainable=("head",)))


def test_early_stopping_restores_the_best_epoch():
    """Validation labels are the training labels flipped, so validation loss rises as the model
    learns: training stops `patience` epochs after the best one and returns its parameters."""
    flipped = (TRAIN[0], 1 - TRAIN[1])
    config = train.TrainConfig(
        epochs=12, batch_size=25, learning_rate=0.05, patience=2, eval_batch_size=32
    )
    model = TinyCNN(rngs=nnx.Rngs(0))
    history = train.fit(model, TRAIN, flipped, config, preprocess=scale, progress=False)
    best = history.best_epoch
    assert history.stopped_early and history.epochs_run == best + 2 < 12
    assert history.val_loss[best - 1] == min(history.val_loss)
    # The same run stopped after `best` epochs ends with the same parameters.
    short = TinyCNN(rngs=nnx.Rngs(0))
    train.fit(
        short,
        TRAIN,
        flipped,
        dataclasses.replace(config, epochs=best, patience=None),
        preprocess=scale,
        progress=False,
    )
    assert_trees_equal(params_of(model), params_of(short))
    assert_trees_equal(stats_of(model), stats_of(short))


def test_early_stopping_on_accuracy_counts_only_strict_improvements():
    history = train.History()
    config = train.TrainConfig(patience=2, monitor="val_accuracy")
    for accuracy in (0.5, 0.7, 0.7, 0.6):
        history.train_loss.append(0.0)
        history.record_validation(np.array([1.0, accuracy]), config)
    assert history.best_epoch == 2 and history.stopped_early


@pytest.mark.parametrize(
    ("train_data", "val", "config", "kwargs", "match"),
    [
        ((TRAIN[0][:, :, :, 0], TRAIN[1]), None, {}, {}, "NHWC"),
        ((TRAIN[0], TRAIN[1][:50]), None, {}, {}, "labels must be"),
        ((TRAIN[0], TRAIN[1].astype(np.float32)), None, {}, {}, "integers"),
        ((TRAIN[0], TRAIN[1] * 2), None, {}, {}, r"single logit.*\{0, 1\}"),
        (TRAIN, None, {"batch_size": 101}, {}, "batch_size"),
        (TRAIN, None, {"patience": 2}, {}, "validation"),
        (TRAIN, None, {}, {"resume": True}, "checkpoint_dir"),
        (TRAIN, (VAL[0][:, :4], VAL[1]), {}, {}, "val images"),
    ],
)
def test_fit_rejects_bad_input(train_data, val, config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.fit(
            TinyCNN(rngs=nnx.Rngs(0)),
            train_data,
            val,
            train.TrainConfig(**config),
            progress=False,
            **kwargs,
        )


# ---------------------------------------------------------------- prediction


def test_predict_logits_is_eval_mode_and_independent_of_the_batch():
    model = TinyCNN(num_classes=3, rngs=nnx.Rngs(0))
    # Running statistics far from the batch statistics make any use of the batch visible.
    nnx.update(model, {"bn": {"mean": jnp.full(4, 0.3), "var": jnp.full(4, 2.0)}})
    images = TRAIN[0][:20]
    logits = train.predict_logits(model, images, batch_size=64, preprocess=scale)
    assert logits.shape == (20, 3) and logits.dtype == jnp.float32
    assert model.drop.deterministic is False  # the model's own mode is left alone
    np.testing.assert_allclose(
        train.predict_logits(model, images, batch_size=7, preprocess=scale), logits, atol=TIGHT
    )
    alone = train.predict_logits(model, images[11:12], preprocess=scale)
    np.testing.assert_allclose(alone[0], logits[11], atol=TIGHT)
    np.testing.assert_array_equal(
        train.predict_logits(model, images, batch_size=64, preprocess=scale), logits
    )
    expected = nnx.view(model, deterministic=True, use_running_average=True)(scale(images, None))
    np.testing.assert_allclose(logits, expected, atol=TIGHT)


@pytest.mark.parametrize(
    "examples, batch, devices, expected",
    [
        (197, 256, 1, 256),
        (204, 256, 1, 256),
        (300, 256, 1, 256),
        (64, 256, 1, 64),
        (65, 256, 1, 128),
        (5, 256, 1, 8),
        (1, 256, 1, 1),
        (20, 7, 1, 7),
        (3, 256, 8, 8),
        (20, 256, 8, 32),
        (20, 12, 8, 16),
    ],
)
def test_prediction_batch_is_a_power_of_two_below_the_batch(examples, batch, devices, expected):
    assert predict.prediction_batch(examples, batch, devices) == expected


def test_small_sets_of_nearby_sizes_share_one_prediction_program():
    model = TinyCNN(num_classes=3, rngs=nnx.Rngs(1))
    images = TRAIN[0][:40]
    expected = nnx.view(model, deterministic=True, use_running_average=True)(scale(images, None))
    compiled = predict._logits._cache_size()
    for size in (33, 40, 37):  # one 64-example batch each
        logits = train.predict_logits(model, images[:size], preprocess=scale)
        assert logits.shape == (size, 3)
        np.testing.assert_allclose(logits, expected[:size], atol=TIGHT)
    assert predict._logits._cache_size() == compiled + 1


def test_predict_logits_single_logit_is_flat():
    model = TinyCNN(num_classes=1, rngs=nnx.Rngs(0))
    logits = train.predict_logits(model, jnp.asarray(TRAIN[0][:5]), preprocess=scale)
    assert logits.shape == (5,)
    with pytest.raises(ValueError, match="images"):
        train.predict_logits(model, TRAIN[0][0])


# ---------------------------------------------------------------- the real LeNet-5


def test_real_lenet5_head_only():
    models = pytest.importorskip("jaxcal.models")
    model = models.LeNet5.lenet5_bn(rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, 48).astype(np.int32)
    before_params, before_stats = params_of(model), stats_of(model)
    config = train.TrainConfig(epochs=1, batch_size=16, trainable=(model.head_name,))
    history = train.fit(model, (images, labels), None, config, preprocess=scale, progress=False)
    assert history.step_loss.shape == (3,) and np.isfinite(history.step_loss).all()
    after = params_of(model)
    for name in before_params:
        if name != "head":
            assert_trees_equal(after[name], before_params[name])
    assert_trees_equal(stats_of(model), before_stats)
    assert not np.array_equal(after["head"]["kernel"], before_params["head"]["kernel"])
    assert train.predict_logits(model, images[:5], preprocess=scale).shape == (5,)


# ---------------------------------------------------------------- data parallel

_DATA_PARALLEL = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from flax import nnx
    sys.path.insert(0, sys.argv[1])
    import dataclasses
    from test_train import TinyCNN, TinyMLP, TRAIN, VAL, scale, params_of
    from jaxcal import train

    assert jax.device_count() == 8, jax.devices()
    from jaxcal.train import loop, steps
    assert not steps._copies_rows(train.make_mesh(jax.devices()))
    config = train.TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, eval_batch_size=12)
    runs = {}
    for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        model = TinyCNN(rngs=nnx.Rngs(0))
        history = train.fit(
            model, TRAIN, VAL, config, preprocess=scale, progress=False, devices=devices
        )
        logits = train.predict_logits(model, VAL[0], batch_size=12, preprocess=scale)
        runs[name] = {
            "step_loss": history.step_loss.tolist(),
            "val_loss": history.val_loss,
            "params": jax.tree.map(lambda a: a.tolist(), params_of(model)),
            "logits": np.asarray(logits).tolist(),
            "replicated_on": len(model.fc.kernel[...].sharding.device_set)
            if model.fc.kernel[...].sharding.is_fully_replicated
            else 0,
        }
    try:
        train.fit(TinyCNN(rngs=nnx.Rngs(0)), TRAIN, None, train.TrainConfig(batch_size=12),
                  progress=False)
    except ValueError as error:
        runs["error"] = str(error)
    # Micro-batches over 8 devices: each micro-batch of 8 rows sharded one row per device.
    micro = dataclasses.replace(config, micro_batch_size=8)
    for name, devices in (("micro_one", jax.devices()[:1]), ("micro_eight", jax.devices())):
        model = TinyMLP(rngs=nnx.Rngs(0))
        history = train.fit(model, TRAIN, VAL, micro, preprocess=scale, progress=False,
                            devices=devices)
        runs[name] = {"step_loss": history.step_loss.tolist(),
                      "params": jax.tree.map(lambda a: a.tolist(), params_of(model))}
    model = TinyMLP(rngs=nnx.Rngs(0))
    runs["whole"] = train.fit(model, TRAIN, VAL, config, preprocess=scale, progress=False,
                              devices=jax.devices()[:1]).step_loss.tolist()
    try:
        train.fit(TinyMLP(rngs=nnx.Rngs(0)), TRAIN, None,
                  dataclasses.replace(config, micro_batch_size=4), progress=False)
    except ValueError as error:
        runs["micro_error"] = str(error)
    print("RESULT " + json.dumps(runs))
    """
)


@pytest.mark.slow
def test_data_parallel_matches_one_device(tmp_path):
    """8 simulated CPU devices (a fresh process: the flag must precede importing jax)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    script = tmp_path / "data_parallel.py"
    script.write_text(_DATA_PARALLEL)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run(
        [sys.executable, str(script), tests_dir],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(s for s in done.stdout.splitlines() if s.startswith("RESULT "))
    runs = json.loads(line[len("RESULT ") :])
    one, eight = runs["one"], runs["eight"]
    # Same arithmetic, summed in a different order across devices.
    np.testing.assert_allclose(eight["step_loss"], one["step_loss"], rtol=LOOSE, atol=LOOSE)
    np.testing.assert_allclose(eight["val_loss"], one["val_loss"], rtol=LOOSE, atol=LOOSE)
    np.testing.assert_allclose(eight["logits"], one["logits"], rtol=LOOSE, atol=LOOSE)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=LOOSE, atol=LOOSE),
        eight["params"],
        one["params"],
    )
    assert (one["replicated_on"], eight["replicated_on"]) == (1, 8)
    assert "batch_size 12 must divide by the 8 devices" in runs["error"]
    micro_one, micro_eight = runs["micro_one"], runs["micro_eight"]
    for micro in (micro_one, micro_eight):
        np.testing.assert_allclose(micro["step_loss"], runs["whole"], rtol=LOOSE, atol=LOOSE)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=LOOSE, atol=LOOSE),
        micro_eight["params"],
        micro_one["params"],
    )
    assert "micro_batch_size must divide by the 8 devices, got 4" in runs["micro_error"]


class _CountingLinear(nnx.Module):
    """A linear model that counts how often it is traced (Python runs only when tracing)."""

    traces = 0

    def __init__(self, rngs):
        self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        type(self).traces += 1
        return self.dense(x.reshape(x.shape[0], -1))


def test_output_width_traces_once_per_model_and_input_shape():
    from jaxcal.train.inputs import output_width

    graphdef, state = nnx.split(_CountingLinear(nnx.Rngs(0)))
    _CountingLinear.traces = 0
    inputs = np.zeros((10, 4), np.float32)
    assert output_width("train", graphdef, (state,), inputs, None) == 3
    assert output_width("train", graphdef, (state,), inputs[:5], None) == 3  # same [*, 4]
    assert _CountingLinear.traces == 1
    with pytest.raises(ValueError, match=r"train inputs \[N, 5\] do not fit the model"):
        output_width("train", graphdef, (state,), np.zeros((10, 5), np.float32), None)
    with pytest.raises(ValueError, match=r"train inputs \[N, 5\] do not fit the model"):
        output_width("train", graphdef, (state,), np.zeros((10, 5), np.float32), None)
    assert _CountingLinear.traces == 3  # errors are not remembered
