"""Smooth ECE (Blasiok & Nakkiran 2023) and the kernel-smoothed reliability curve with its band."""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcal.calibration import _checks
from jaxcal.calibration.metrics import BINARY_MODES, _confidence_and_target, _resample_indices

# The bisection for the bandwidth halves [0, 1] ten times, as relplot's `smECE` does, so its
# result is a multiple of 2^-10; smaller bandwidths are refused.
MIN_BANDWIDTH = 2.0**-10
BISECTION_STEPS = 10
# Below this bandwidth the fixed point counts as found (relplot's eps).
BANDWIDTH_TOL = 1e-3
# relplot's grids: the kernel is evaluated on M = max(2000, round(20 / sigma)) // 2 + 1 points
# and smooth ECE integrated on T = max(200, round(10 / sigma)) points; both are dynamic here,
# padded to their sizes at MIN_BANDWIDTH so that shapes stay static under jit.
MAX_KERNEL_POINTS = round(20 / MIN_BANDWIDTH) // 2 + 1
MAX_EVAL_POINTS = round(10 / MIN_BANDWIDTH)
FFT_SIZE = 1 << int(np.ceil(np.log2(3 * MAX_KERNEL_POINTS)))
# Added to the smoothed density before dividing by it (relplot's eps).
DENSITY_EPS = 1e-4
PLOT_POINTS = 200


class SmoothECE(NamedTuple):
    """Result of `smooth_ece` (scalars).

    Attributes:
      error: the smooth ECE in [0, 1].
      bandwidth: the Gaussian kernel's bandwidth sigma used (the fixed point, or as given).
    """

    error: jax.Array
    bandwidth: jax.Array


class SmoothReliability(NamedTuple):
    """A kernel-smoothed reliability curve with a bootstrap band, for plotting.

    Attributes:
      grid: [G] points in [0, 1] where everything is evaluated.
      curve: [G] smoothed E[target | confidence] (relplot's main line).
      lower: [G] 2.5 % pointwise bootstrap quantile of the curve.
      upper: [G] 97.5 % pointwise bootstrap quantile.
      density: [G] reflected kernel density of the confidences (integrates to ~1).
      error: scalar smooth ECE of the data.
      bandwidth: scalar bandwidth used for the ECE, the curve and the density.
    """

    grid: jax.Array
    curve: jax.Array
    lower: jax.Array
    upper: jax.Array
    density: jax.Array
    error: jax.Array
    bandwidth: jax.Array


def _kernel_points(sigma: jax.Array) -> jax.Array:
    return jnp.maximum(2000, jnp.round(20.0 / sigma).astype(jnp.int32)) // 2 + 1


def _smooth_on_grid(f: jax.Array, weights: jax.Array, sigma: jax.Array) -> jax.Array:
    """[P, C] reflected-Gaussian smoothing of [N, C] weights at f, on the grid k / (M - 1).

    Linear interpolation of the points onto the grid, then a correlation with the Gaussian
    density on [-1/2, 1/2] of the signal reflected at 0 and 1 (relplot's ReflectedGaussian
    kernel), by FFT. Rows k >= M of the [P = MAX_KERNEL_POINTS] result are padding.
    """
    m = _kernel_points(sigma)
    dtype = f.dtype
    scale = (m - 1).astype(dtype)
    lower = jnp.clip(jnp.floor(f * scale).astype(jnp.int32), 0, m - 2)
    frac = (f * scale - lower.astype(dtype))[:, None]
    splat = jax.ops.segment_sum(weights * (1.0 - frac), lower, MAX_KERNEL_POINTS) + (
        jax.ops.segment_sum(weights * frac, lower + 1, MAX_KERNEL_POINTS)
    )
    # The signal reflected at both ends: values[M-1..1], values[0..M-1], values[M-2..0].
    k = jnp.arange(FFT_SIZE) - (m - 1)
    source = jnp.where(k < 0, -k, jnp.where(k > m - 1, 2 * (m - 1) - k, k))
    extended = jnp.where((k < 2 * m - 2)[:, None], splat[jnp.clip(source, 0, m - 1)], 0.0)
    taps = jnp.arange(FFT_SIZE)
    offset = ((m - 1 - taps).astype(dtype) / scale - 0.5) / sigma
    kernel = jnp.where(taps < m, jnp.exp(-0.5 * offset**2) / (np.sqrt(2 * np.pi) * sigma), 0.0)
    spectrum = jnp.fft.rfft(extended, axis=0) * jnp.conj(jnp.fft.rfft(kernel))[:, None]
    correlation = jnp.fft.irfft(spectrum, n=FFT_SIZE, axis=0).astype(dtype)
    return jax.lax.dynamic_slice_in_dim(correlation, m // 2, MAX_KERNEL_POINTS, axis=0)


def _interpolate(smoothed: jax.Array, sigma: jax.Array, t: jax.Array) -> jax.Array:
    """[T, C] linear interpolation at t of the grid values smoothed[k] at k / (M - 1)."""
    m = _kernel_points(sigma)
    scale = (m - 1).astype(t.dtype)
    index = jnp.clip(jnp.floor(t * scale).astype(jnp.int32), 0, m - 2)
    frac = (t - index.astype(t.dtype) / scale)[:, None] * scale
    return smoothed[index] * (1.0 - frac) + smoothed[index + 1] * frac


def _smooth_ece_at(f: jax.Array, residual: jax.Array, sigma: jax.Array) -> jax.Array:
    """Smooth ECE at bandwidth sigma: integral of |smoothed residual| over the density."""
    count = jnp.maximum(200, jnp.round(10.0 / sigma).astype(jnp.int32))
    i = jnp.arange(MAX_EVAL_POINTS)
    t = jnp.minimum(i, count - 1).astype(f.dtype) / (count - 1).astype(f.dtype)
    weights = jnp.stack([residual, jnp.ones_like(residual)], axis=-1)
    values = _interpolate(_smooth_on_grid(f, weights, sigma), sigma, t)
    inside = i < count
    numerator = jnp.sum(jnp.where(inside, jnp.abs(values[:, 0]), 0.0))
    return numerator / jnp.sum(jnp.where(inside, values[:, 1] + DENSITY_EPS, 0.0))


def _fixed_point(f: jax.Array, residual: jax.Array) -> tuple[jax.Array, jax.Array]:
    """relplot's bisection for the smallest sigma (to 2^-10) with sigma >= smECE_sigma."""

    def too_small(sigma, error):
        return (sigma < BANDWIDTH_TOL) | (sigma < error)

    one = jnp.ones((), f.dtype)
    error_at_one = _smooth_ece_at(f, residual, one)

    def step(_, carry):
        start, end, error_at_start = carry
        middle = (start + end) / 2.0
        error = _smooth_ece_at(f, residual, middle)
        move_end = too_small(middle, error)
        return (
            jnp.where(move_end, start, middle),
            jnp.where(move_end, middle, end),
            jnp.where(move_end, error_at_start, error),
        )

    start, _, error = jax.lax.fori_loop(
        0, BISECTION_STEPS, step, (one, jnp.zeros((), f.dtype), error_at_one)
    )
    # relplot keeps sigma = 1 if even that is below its smooth ECE (never, as smECE <= 1).
    keep_one = too_small(one, error_at_one)
    return jnp.where(keep_one, error_at_one, error), jnp.where(keep_one, one, start)


def _check_bandwidth(bandwidth: float | None) -> None:
    if bandwidth is None or not _checks.is_concrete(bandwidth):
        return
    value = float(bandwidth)
    if not MIN_BANDWIDTH <= value <= 1.0:
        raise ValueError(
            f"bandwidth must be in [{MIN_BANDWIDTH}, 1] (or None for the fixed point), got {value}"
        )


@partial(jax.jit, static_argnames=("from_logits", "binary", "fixed_point"))
def _smooth_ece(scores, labels, bandwidth, from_logits, binary, fixed_point):
    f, target = _confidence_and_target(scores, labels, from_logits=from_logits, binary=binary)
    f = jnp.clip(f, 0.0, 1.0)
    if fixed_point:
        error, sigma = _fixed_point(f, f - target)
        return SmoothECE(error, sigma)
    sigma = jnp.asarray(bandwidth, f.dtype)
    return SmoothECE(_smooth_ece_at(f, f - target, sigma), sigma)


def smooth_ece(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    bandwidth: float | jax.Array | None = None,
    from_logits: bool = True,
    binary: str = "positive",
) -> SmoothECE:
    """Smooth ECE of Blasiok & Nakkiran 2023, computed as `relplot.smECE` does.

    The residuals confidence - target are smoothed by Nadaraya-Watson with a Gaussian kernel of
    bandwidth sigma reflected at 0 and 1; smECE_sigma is the integral of their absolute value
    over the smoothed density of the confidences. relplot's discretisation is reproduced:
    points interpolated linearly onto a grid of max(2000, 20 / sigma) / 2 + 1 points, FFT
    correlation with the reflected kernel, integration on max(200, 10 / sigma) points. With
    `bandwidth=None` sigma is the fixed point sigma = smECE_sigma, found by ten bisection steps
    on [0, 1] (so a multiple of 2^-10), as in the paper and relplot. Equals relplot 1.0 to 1e-4
    (float32 or float64). Jittable and vmappable; each call costs 11 smoothings of N points.

    Args:
      scores: [N] binary logits (or p(y=1)) or [N, K] logits (or probabilities), as in `ece`.
      labels: [N] int labels.
      bandwidth: None for the fixed point, or the kernel bandwidth sigma in [2^-10, 1].
      from_logits: whether `scores` are logits or probabilities.
      binary: for [N] scores, "positive" (smooth p(y=1) against y, as relplot.smECE(p, y)) or
        "top_label"; [N, K] scores use the top-label confidence and correctness.

    Returns:
      SmoothECE(error, bandwidth), scalars.
    """
    _checks.check_option("binary", binary, BINARY_MODES)
    _check_bandwidth(bandwidth)
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    fixed_point = bandwidth is None
    return _smooth_ece(
        scores, labels, 0.0 if fixed_point else bandwidth, from_logits, binary, fixed_point
    )


def _curve_and_density(f: jax.Array, target: jax.Array, sigma: jax.Array, grid: jax.Array):
    """[G] smoothed E[target | f] and [G] kernel density of f, on the grid."""
    weights = jnp.stack([target, jnp.ones_like(target)], axis=-1)
    values = _interpolate(_smooth_on_grid(f, weights, sigma), sigma, grid)
    return values[:, 0] / (values[:, 1] + DENSITY_EPS), values[:, 1] / f.shape[0]


@partial(
    jax.jit,
    static_argnames=("num_resamples", "from_logits", "binary", "fixed_point", "batch_size"),
)
def _smooth_reliability(
    scores, labels, key, bandwidth, num_resamples, from_logits, binary, fixed_point, batch_size
):
    f, target = _confidence_and_target(scores, labels, from_logits=from_logits, binary=binary)
    f = jnp.clip(f, 0.0, 1.0)
    if fixed_point:
        error, sigma = _fixed_point(f, f - target)
    else:
        sigma = jnp.asarray(bandwidth, f.dtype)
        error = _smooth_ece_at(f, f - target, sigma)
    grid = jnp.linspace(0.0, 1.0, PLOT_POINTS, dtype=f.dtype)
    curve, density = _curve_and_density(f, target, sigma, grid)
    n = f.shape[0]

    def resample(r):
        index = _resample_indices(jax.random.fold_in(key, r), n)
        return _curve_and_density(f[index], target[index], sigma, grid)[0]

    padded = -(-num_resamples // batch_size) * batch_size
    curves = jax.lax.map(resample, jnp.arange(padded), batch_size=batch_size)[:num_resamples]
    lower, upper = jnp.quantile(curves, jnp.array([0.025, 0.975], f.dtype), axis=0)
    return SmoothReliability(grid, curve, lower, upper, density, error, sigma)


def smooth_reliability(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    key: jax.Array,
    *,
    num_resamples: int = 200,
    bandwidth: float | jax.Array | None = None,
    from_logits: bool = True,
    binary: str = "positive",
) -> SmoothReliability:
    """The smoothed reliability curve of relplot's diagram, with a 95 % bootstrap band.

    The curve is the Nadaraya-Watson estimate of E[target | confidence] with the reflected
    Gaussian kernel of `smooth_ece` (at its fixed-point bandwidth unless one is given), on
    200 points of [0, 1]; the band holds the pointwise 2.5 % and 97.5 % quantiles of the curves
    of `num_resamples` bootstrap resamples (same bandwidth, keys fold_in(key, r)); the density
    is the reflected kernel density of the confidences. Draw it with
    `jaxcal.plotting.smooth_reliability_diagram(ax, curve)`.

    Args:
      scores: [N] or [N, K] scores, as in `smooth_ece`.
      labels: [N] int labels.
      key: a `jax.random` key for the bootstrap.
      num_resamples: bootstrap resamples R >= 1 (static).
      bandwidth: None for the smooth-ECE fixed point, or sigma in [2^-10, 1].
      from_logits: whether `scores` are logits or probabilities.
      binary: "positive" or "top_label" for [N] scores, as in `smooth_ece`.

    Returns:
      SmoothReliability with grid, curve, lower, upper, density [200] and error, bandwidth.
    """
    _checks.check_option("binary", binary, BINARY_MODES)
    _check_bandwidth(bandwidth)
    num_resamples = _checks.check_positive_int("num_resamples", num_resamples)
    key = _checks.check_key("key", key)
    scores, labels = _checks.check_scores_labels(scores, labels, from_logits=from_logits)
    fixed_point = bandwidth is None
    # A resample holds its N samples and the [FFT_SIZE, 2] smoothing buffers.
    batch_size = max(1, min(num_resamples, (1 << 20) // (scores.shape[0] + 4 * FFT_SIZE)))
    return _smooth_reliability(
        scores,
        labels,
        key,
        0.0 if fixed_point else bandwidth,
        num_resamples,
        from_logits,
        binary,
        fixed_point,
        batch_size,
    )
