"""Eager input validation for jaxcal.calibration: shapes and options always, values if concrete."""

import warnings
from collections.abc import Collection
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Rows of [N, K] probabilities must sum to one within this tolerance (float32 softmax rows are
# off by ~1e-6 * K; anything beyond 1e-3 is unnormalised scores, not probabilities).
ROW_SUM_ATOL = 1e-3
# Above this many [N, K] entries the value checks read the scores once on the device, in
# `_value_summary` (10^6 x 10: ~3 ms, against 6.1 ms for the numpy passes that smaller CPU
# inputs get, where they cost less than a dispatch).
ROW_SUMMARY_ENTRIES = 1 << 20


def is_concrete(x: Any) -> bool:
    """True when `x` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_option(name: str, value: Any, allowed: Collection[str]) -> None:
    """Raises ValueError unless `value` is one of the `allowed` strings."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def check_positive_int(name: str, value: Any) -> int:
    """Returns `value` as an int; raises TypeError/ValueError unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a Python int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_probability(name: str, value: Any) -> float:
    """Returns `value` as a float; raises ValueError unless 0 < value < 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def check_key(name: str, key: Any) -> jax.Array:
    """Returns `key` if it is a single jax.random key (typed, or raw uint32 [2]); else TypeError."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
    raw = key.dtype == jnp.uint32 and key.shape == (2,)
    if not (typed or raw):
        raise TypeError(
            f"{name} must be one jax.random key (jax.random.key(seed)), got dtype {key.dtype} "
            f"and shape {key.shape}"
        )
    return key


def as_float_array(name: str, x: Any) -> jax.Array:
    """Converts `x` to a floating jax array (at least float32); TypeError for non-real input."""
    if not isinstance(x, (jax.Array, jax.core.Tracer)):
        x = jnp.asarray(x)  # ~45 us even for a jax array: skipped for those
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return x


def check_finite(name: str, x: jax.Array) -> None:
    """Raises ValueError if concrete `x` has NaN or inf entries (skipped for tracers)."""
    if not is_concrete(x):
        return
    bad = ~np.isfinite(np.asarray(x))
    if bad.any():
        where = np.argwhere(bad)[:3].tolist()
        raise ValueError(
            f"{name} must be finite; found {int(bad.sum())} NaN/inf entries (first at {where})"
        )


def as_int_labels(labels: Any) -> jax.Array:
    """`labels` as a jax array; ValueError for concrete integers that jax's int type cannot hold.

    With 64-bit types off, jax stores int64 as int32 and 2**32 + 1 would silently become 1.
    """
    if isinstance(labels, (jax.Array, jax.core.Tracer)):
        return labels
    host = np.asarray(labels)
    if np.issubdtype(host.dtype, np.integer) and host.size:
        stored = jax.dtypes.canonicalize_dtype(host.dtype)
        info = np.iinfo(stored)
        if host.min() < info.min or host.max() > info.max:
            raise ValueError(
                f"labels must fit in {stored.name} (jax stores {host.dtype.name} as {stored.name} "
                f"with 64-bit types off), got values in [{host.min()}, {host.max()}]"
            )
    return jnp.asarray(host)


def _warn_probabilities(name: str, what: str) -> None:
    warnings.warn(
        f"{name} {what}: they look like probabilities, but from_logits=True treats them as "
        "logits (pass from_logits=False)",
        stacklevel=5,
    )


def check_scores_labels(
    scores: Any, labels: Any, *, from_logits: bool, name: str = "scores"
) -> tuple[jax.Array, jax.Array]:
    """Validates classifier outputs and labels and returns them as jax arrays.

    Shape, rank and dtype checks always run (also under `jit`/`vmap`); value checks (finite
    scores, probabilities in [0, 1] summing to one, labels in range) run only on concrete arrays.

    Args:
      scores: [N] binary logits (or p(y=1) with from_logits=False), or [N, K] multiclass
        logits (or probabilities), K >= 2.
      labels: [N] integer class labels in [0, 2) for [N] scores, [0, K) for [N, K] scores.
      from_logits: whether `scores` are logits (any finite value) or probabilities.
      name: what the caller calls `scores` ("logits" in temperature scaling), for messages.

    Returns:
      (scores, labels): floating [N] or [N, K] and int32 [N] jax arrays.
    """
    scores, labels = _checked_shapes(scores, labels, from_logits, name)
    if is_concrete(scores) and is_concrete(labels):
        _check_values(name, scores, labels, from_logits)
    return scores, _as_int32(labels)


def check_scores_labels_and_rows(
    scores: Any, labels: Any, *, from_logits: bool, name: str = "scores"
) -> tuple[jax.Array, jax.Array, "RowSummary | None"]:
    """`check_scores_labels`, also returning the RowSummary its value checks computed.

    Large [N, K] scores (and any on an accelerator) are checked in one device pass that
    computes their `row_summary`; a caller that needs each row's maximum or argmax takes them
    from it instead of reading the scores again.

    Returns:
      (scores, labels, rows): as `check_scores_labels`, and the [N, K] scores' RowSummary, or
      None where the checks did not compute one ([N] scores, small CPU inputs cleared in numpy,
      traced inputs).
    """
    scores, labels = _checked_shapes(scores, labels, from_logits, name)
    rows = None
    if is_concrete(scores) and is_concrete(labels):
        rows = _check_values(name, scores, labels, from_logits)
    return scores, _as_int32(labels), rows


def _checked_shapes(
    scores: Any, labels: Any, from_logits: bool, name: str
) -> tuple[jax.Array, jax.Array]:
    """The option, dtype and shape checks of `check_scores_labels` (labels not yet int32)."""
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be a bool, got {from_logits!r}")
    scores = as_float_array(name, scores)
    labels = as_int_labels(labels)
    if scores.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape [N] (binary) or [N, K] (multiclass), got {scores.shape}"
        )
    if scores.ndim == 2 and scores.shape[1] < 2:
        raise ValueError(
            f"{name} of shape {scores.shape}: [N, K] needs K >= 2 classes; pass a single binary "
            "logit as shape [N] (e.g. scores[:, 0])"
        )
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [N], got {labels.shape}")
    if not (jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_):
        raise TypeError(
            f"labels must be integers, got dtype {labels.dtype}; cast with labels.astype(int)"
        )
    if scores.shape[0] == 0:
        raise ValueError(f"{name} must be non-empty, got 0 samples")
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels must have one entry per sample: {name} has {scores.shape[0]} samples, "
            f"labels has {labels.shape[0]}"
        )
    return scores, labels


def _as_int32(labels: jax.Array) -> jax.Array:
    """Checked labels as int32 (cast after the value checks, which see the original values)."""
    return labels if labels.dtype == jnp.int32 else labels.astype(jnp.int32)


def _on_one_cpu(x: jax.Array) -> bool:
    """True when `x` lives on a single CPU device, where np.asarray(x) is a zero-copy view."""
    devices = x.devices()
    return len(devices) == 1 and next(iter(devices)).platform == "cpu"


def _as_unsigned(x: np.ndarray) -> np.ndarray:
    """The bits of `x` as unsigned integers of the same width (a view, no copy)."""
    return x.view(np.dtype(f"u{x.dtype.itemsize}"))


def _labels_in_range(labels: np.ndarray, num_classes: int) -> bool:
    """True when every label is in [0, num_classes), in one pass: negatives wrap to huge."""
    if labels.dtype == np.bool_:
        return True
    if np.issubdtype(labels.dtype, np.signedinteger):
        labels = _as_unsigned(labels)
    return int(labels.max()) < num_classes


def _all_probabilities(scores: np.ndarray) -> bool:
    """True when every score is in [+0.0, 1.0], in one pass over the bits.

    Non-negative floats order as their bits do; -0.0, negatives, NaN and inf all have bits
    above those of 1.0 (a False here is rechecked exactly, so -0.0 still counts as 0).
    """
    one = np.ones((), scores.dtype)
    return bool(_as_unsigned(scores.reshape(-1)).max() <= _as_unsigned(one))


def _row_error_bound(scores: jax.Array) -> float:
    """max |row sum - 1| of finite [N, K] scores on one CPU device, within K * eps (numpy)."""
    host = np.asarray(scores)
    rows = host @ np.ones(host.shape[1], host.dtype)
    return float(max(rows.max() - 1.0, 1.0 - rows.min()))


class RowSummary(NamedTuple):
    """Per-row statistics of [N, K] scores, from one pass over them (`row_summary`).

    Attributes:
      max: [N] the largest score of each row (unspecified for a row holding a NaN).
      argmax: [N] int32 column of the first largest score, as `jnp.argmax` (unspecified for a
        row holding a NaN).
      min: [N] the smallest score of each row, NaN where the row holds a NaN.
      sum: [N] the row sums, NaN where the row holds a NaN.
    """

    max: jax.Array
    argmax: jax.Array
    min: jax.Array
    sum: jax.Array


def _combine_rows(a: tuple, b: tuple) -> tuple:
    """The reduction of `row_summary`: (max, its first column, min, sum) of two partial rows."""
    a_max, a_arg, a_min, a_sum = a
    b_max, b_arg, b_min, b_sum = b
    take_b = (b_max > a_max) | ((b_max == a_max) & (b_arg < a_arg))
    return (
        jnp.where(take_b, b_max, a_max),
        jnp.where(take_b, b_arg, a_arg),
        jnp.minimum(a_min, b_min),
        a_sum + b_sum,
    )


@jax.jit
def row_summary(scores: jax.Array) -> RowSummary:
    """Max, argmax, min and sum of each row of [N, K] scores in one pass (one variadic reduce).

    XLA:CPU reduces a minor axis of K = 10 slowly one statistic at a time (max, argmax, min
    and sum of 10^6 x 10 floats: 2.2 ms together, ~7 ms as separate reductions).
    """
    column = jax.lax.broadcasted_iota(jnp.int32, scores.shape, 1)
    inf = jnp.array(jnp.inf, scores.dtype)
    init = (-inf, jnp.int32(0), inf, jnp.zeros((), scores.dtype))
    stats = jax.lax.reduce((scores, column, scores, scores), init, _combine_rows, (1,))
    return RowSummary(*stats)


def _host_values_pass(
    scores: jax.Array, labels: jax.Array, num_classes: int, from_logits: bool
) -> bool:
    """True when arrays on one CPU device surely pass every value check with no warning.

    Cheap one-pass tests in numpy (no dispatch, no sync; large row sums excepted); anything
    near a threshold, or any input that would raise or warn, gives False and is rechecked
    exactly on the device.
    """
    if not _labels_in_range(np.asarray(labels), num_classes):
        return False
    host = np.asarray(scores)
    # A row sum within ROW_SUM_ATOL / 2 of 1 (rounding error <= K * eps) is surely within
    # ROW_SUM_ATOL; one beyond 2 * ROW_SUM_ATOL surely beyond it.
    rows_checkable = scores.ndim == 2 and scores.shape[1] * np.finfo(scores.dtype).eps < (
        ROW_SUM_ATOL / 4
    )
    if not from_logits:
        if not _all_probabilities(host):
            return False
        return scores.ndim == 1 or (rows_checkable and _row_error_bound(scores) <= ROW_SUM_ATOL / 2)
    low, high = host.min(), host.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        return False
    if low < 0.0 or low == high:
        return True
    if scores.ndim == 1:
        return high > 1.0
    return rows_checkable and _row_error_bound(scores) > 2 * ROW_SUM_ATOL


def _extremes(lows: tuple, highs: tuple) -> tuple[tuple, tuple]:
    """(min over axis 0 of each of `lows`, max of each of `highs`) in one variadic reduce.

    XLA:CPU's plain min and max reductions (NaN-propagating) run at a fraction of a variadic
    reduce's speed: over 10^6 floats ~1.6 ms each, against 0.2-0.6 ms for six together here.
    NaN propagates here too.
    """
    n = len(lows)

    def combine(a: tuple, b: tuple) -> tuple:
        smaller = tuple(jnp.minimum(x, y) for x, y in zip(a[:n], b[:n], strict=True))
        return smaller + tuple(jnp.maximum(x, y) for x, y in zip(a[n:], b[n:], strict=True))

    def bound(x: jax.Array, sign: int) -> jax.Array:
        if jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.array(sign * jnp.inf, x.dtype)
        info = jnp.iinfo(x.dtype)
        return jnp.array(info.max if sign > 0 else info.min, x.dtype)

    init = tuple(bound(x, 1) for x in lows) + tuple(bound(x, -1) for x in highs)
    out = jax.lax.reduce(lows + highs, init, combine, (0,))
    return out[:n], out[n:]


@jax.jit
def _value_summary(
    scores: jax.Array, labels: jax.Array
) -> tuple[RowSummary | None, tuple[jax.Array, ...]]:
    """One device pass over the inputs: the [N, K] scores' RowSummary (None for [N]) and the
    scores' min and max (NaN or inf if any entry is), max |row sum - 1|, labels' min and max.
    """
    labels = labels.astype(jnp.int32) if labels.dtype == jnp.bool_ else labels
    if scores.ndim == 1:
        (low, lab_min), (high, lab_max) = _extremes((scores, labels), (scores, labels))
        return None, (low, high, jnp.zeros((), scores.dtype), lab_min, lab_max)
    rows = row_summary(scores)  # a NaN shows in rows.min and rows.sum
    (low, sum_low, lab_min), (high, sum_high, lab_max) = _extremes(
        (rows.min, rows.sum, labels), (rows.max, rows.sum, labels)
    )
    row_error = jnp.maximum(sum_high - 1.0, 1.0 - sum_low)
    return rows, (low, high, row_error, lab_min, lab_max)


def _check_values(
    name: str, scores: jax.Array, labels: jax.Array, from_logits: bool
) -> RowSummary | None:
    """The value checks of `check_scores_labels`; returns the RowSummary if it made one.

    Small inputs on one CPU device that surely pass are cleared in numpy (no dispatch); the
    rest (large [N, K] scores, accelerator arrays, bad or borderline values) get the exact
    device pass `_value_summary`, whose [N, K] row statistics the caller may reuse. Then it
    raises or warns.
    """
    num_classes = 2 if scores.ndim == 1 else scores.shape[1]
    large_rows = scores.ndim == 2 and scores.size > ROW_SUMMARY_ENTRIES
    if (
        not large_rows
        and _on_one_cpu(scores)
        and _on_one_cpu(labels)
        and _host_values_pass(scores, labels, num_classes, from_logits)
    ):
        return None
    rows, summary = _value_summary(scores, labels)
    low, high, row_error, lab_min, lab_max = (v.item() for v in jax.device_get(summary))
    if not (np.isfinite(low) and np.isfinite(high)):  # min and max propagate NaN and inf
        check_finite(name, scores)
    if from_logits and low >= 0.0 and low != high:
        if scores.ndim == 1 and high <= 1.0:
            _warn_probabilities(name, "all lie in [0, 1]")
        elif scores.ndim == 2 and row_error <= ROW_SUM_ATOL:
            _warn_probabilities(name, "rows are non-negative and sum to 1")
    if not from_logits:
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name} must be probabilities in [0, 1] when from_logits=False, got values in "
                f"[{low:.6g}, {high:.6g}] (pass from_logits=True for logits)"
            )
        if scores.ndim == 2 and row_error > ROW_SUM_ATOL:
            raise ValueError(
                f"{name} rows must sum to 1 when from_logits=False (max deviation "
                f"{row_error:.3g}); pass from_logits=True for logits"
            )
    if lab_min < 0 or lab_max >= num_classes:
        raise ValueError(
            f"labels must be in [0, {num_classes - 1}] for {name} of shape {scores.shape}, "
            f"got values in [{lab_min}, {lab_max}]"
        )
    return rows
