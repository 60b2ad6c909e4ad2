"""Temperature scaling: fit T by NLL with optax L-BFGS and apply it (sweeps: `sweep.py`)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcal.calibration import _checks
from jaxcal.calibration.sweep import TemperatureSweep, temperature_sweep

# The sweep lives in sweep.py; it is re-exported here, where it was first defined.
__all__ = [
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "TemperatureFit",
    "TemperatureSweep",
    "apply_temperature",
    "fit_temperature",
    "temperature_sweep",
]

# Default bounds on the fitted temperature. Beyond them the NLL is flat to float32 precision for
# any realistic logits, and they keep separable data (T -> 0) and labels the logits cannot
# predict (T -> infinity) finite.
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 1e2
# A Newton step within this many float32 roundings of log T is not taken (it cannot move T).
NEWTON_RESOLUTION = 4


class TemperatureFit(NamedTuple):
    """Result of `fit_temperature` (scalars; a pytree, so it passes through jit/vmap).

    Attributes:
      temperature: fitted T > 0; calibrated logits are logits / T.
      converged: True iff T lies strictly inside the bounds and the Newton step in log T,
        |f'(log T) / f''(log T)| for the NLL f, is <= tol, i.e. T is within a relative ~tol
        of the optimum (or the NLL does not depend on T at all, when T = 1). False when T
        sits at a bound because the NLL keeps falling beyond it (separable data: T -> 0;
        labels the logits do not predict, e.g. one class only: T -> infinity), or when
        max_iter ran out first.
      num_iter: L-BFGS iterations plus Newton polishing steps taken, <= max_iter (0 when the
        optimum is known to lie at a bound).
      nll_before: mean NLL of the unscaled logits (T = 1).
      nll_after: mean NLL at the fitted T (<= nll_before when 1 lies within the bounds).
    """

    temperature: jax.Array
    converged: jax.Array
    num_iter: jax.Array
    nll_before: jax.Array
    nll_after: jax.Array

    @property
    def scale(self) -> jax.Array:
        """a = 1 / T, the logit multiplier of the original notebook."""
        return 1.0 / self.temperature


def apply_temperature(logits: jax.typing.ArrayLike, temperature: jax.typing.ArrayLike) -> jax.Array:
    """Calibrated logits `logits / temperature`, checked like `fit_temperature`'s inputs.

    Args:
      logits: [N] binary or [N, K] multiclass logits (any leading shape is accepted); finite.
      temperature: scalar T > 0 and finite, such that logits / T stays finite (e.g. a
        `TemperatureFit.temperature`).

    Returns:
      Logits of the same shape divided by T.

    Raises:
      ValueError: (eagerly, on concrete arrays) NaN/inf logits, T not finite and > 0, or a T
        so small that some logits / T overflow to inf; TypeError for non-real input.
    """
    logits = _checks.as_float_array("logits", logits)
    temperature = _checks.as_float_array("temperature", temperature)
    if temperature.ndim != 0:
        raise ValueError(f"temperature must be a scalar, got shape {temperature.shape}")
    _checks.check_finite("logits", logits)
    if _checks.is_concrete(temperature) and not (0.0 < float(temperature) < float("inf")):
        raise ValueError(f"temperature must be finite and > 0, got {float(temperature)}")
    scaled = logits / temperature
    if _checks.is_concrete(scaled) and not np.all(np.isfinite(np.asarray(scaled))):
        raise ValueError(
            f"temperature {float(temperature):.3g} is too small for these logits: logits / "
            f"temperature overflows {scaled.dtype} (max |logit| "
            f"{float(np.abs(np.asarray(logits)).max()):.3g}); fit_temperature returns "
            f"T in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}] by default"
        )
    return scaled


def _label_gaps(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Logit of each class minus the logit of the label: [N, K], or [N] for binary logits z
    (the other class's gap: -z for label 1, z for label 0; the label's own gap is 0)."""
    if logits.ndim == 1:
        return jnp.where(labels == 1, -logits, logits)
    return logits - jnp.take_along_axis(logits, labels[:, None], axis=-1)


def _optimum_at_bound(gaps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(NLL constant in T, optimum at T -> 0, optimum at T -> infinity), from one reduction.

    With a = 1/T the NLL f(a) = mean_i logsumexp_k(a * gap_ik) is convex, so the optimum over
    T > 0 lies at T -> 0 iff every label has the (weakly) largest logit with some strict gap,
    and at T -> infinity iff f'(0), the sign of sum_ik gap_ik, is >= 0. Otherwise it is
    interior. A sum of terms of one sign is 0 only when every term is.
    """
    flat = gaps.reshape(-1)
    above, below, total = jnp.sum(
        jnp.stack([jnp.maximum(flat, 0.0), jnp.minimum(flat, 0.0), flat]), axis=-1
    )
    constant = (above == 0) & (below == 0)
    return constant, (above == 0) & (below < 0), (total >= 0) & ~constant


class _Derivatives(NamedTuple):
    """f(log T), f' and f'' of the objective (scalars)."""

    value: jax.Array
    slope: jax.Array
    curvature: jax.Array


def _binary_terms(gaps: jax.Array, scale: jax.Array):
    """Per-sample BCE, its d/d log T and d2/d log T2 at u = gaps * scale, in one pass.

    The BCE is softplus(u), and with u = gap exp(-log T) its derivatives in log T are
    -u sigmoid(u) and u sigmoid(u) (1 + u sigmoid(-u)): one exp, one log1p and one division
    per sample give all three.
    """
    u = gaps * scale
    e = jnp.exp(-jnp.abs(u))
    r = 1.0 / (1.0 + e)
    right = jnp.where(u >= 0, r, e * r)  # sigmoid(u)
    wrong = jnp.where(u >= 0, e * r, r)  # sigmoid(-u)
    slope = u * right
    return jnp.maximum(u, 0.0) + jnp.log1p(e), -slope, slope * (1.0 + u * wrong)


def _multiclass_terms(gaps: jax.Array, scale: jax.Array):
    """Per-sample cross-entropy, its d/d log T and d2/d log T2 at u = gaps * scale.

    The cross-entropy is logsumexp(u) (u = 0 at the label), and with u = gaps exp(-log T)
    and p = softmax(u) its derivatives in log T are -E_p[u] and Var_p[u] + E_p[u].
    """
    u = gaps * scale
    top = jnp.max(u, axis=-1, keepdims=True)
    weights = jnp.exp(u - top)
    total = jnp.sum(weights, axis=-1)
    mean = jnp.sum(weights * u, axis=-1) / total
    second = jnp.sum(weights * u * u, axis=-1) / total
    return top[:, 0] + jnp.log(total), -mean, second - mean * mean + mean


def _nll_change(gaps: jax.Array, log_lo: jax.Array, log_hi: jax.Array):
    """The objective: mean NLL(logits / T) - mean NLL(logits), as a function of log T.

    The change is summed from per-sample differences: its float32 rounding noise is ~1e-9
    instead of ~1e-6 for the NLL itself, which the line search needs when logits are tiny
    and the NLL barely moves with T. Outside [log_lo, log_hi] the loss is held at the bound
    plus a quadratic, which keeps the objective increasing there, so the line search never
    mistakes a flat, clipped plateau for a minimum.

    Returns:
      (log T -> _Derivatives of the objective, [N] NLL(logits), _Derivatives at log T = 0),
      the last two from one pass.
    """
    terms = _binary_terms if gaps.ndim == 1 else _multiclass_terms
    unscaled, slope_at_one, curvature_at_one = terms(gaps, jnp.ones((), gaps.dtype))

    def derivatives(log_t):
        inside = jnp.clip(log_t, log_lo, log_hi)
        loss, slope, curvature = terms(gaps, jnp.exp(-inside))
        outside = log_t - inside
        within = (outside == 0).astype(log_t.dtype)
        return _Derivatives(
            jnp.mean(loss - unscaled) + 0.5 * outside**2,
            jnp.mean(slope) * within + outside,
            jnp.mean(curvature) * within + (1.0 - within),
        )

    zero = jnp.zeros((), gaps.dtype)
    at_one = _Derivatives(zero, jnp.mean(slope_at_one), jnp.mean(curvature_at_one))
    return derivatives, unscaled, at_one


def _differentiable(derivatives):
    """The objective's value as a function whose jvp reuses its own pass (for optax)."""

    @jax.custom_jvp
    def value(log_t):
        return derivatives(log_t).value

    @value.defjvp
    def _(primals, tangents):
        result = derivatives(primals[0])
        return result.value, result.slope * tangents[0]

    return value


def _newton_polish(derivatives, log_t, count, max_iter, log_lo, log_hi, steps: int = 2):
    """Up to `steps` Newton steps in log T after L-BFGS, within the iteration budget.

    Near the optimum a float32 objective is flatter than its rounding noise, so line searches
    stall there while the gradient still points the way: a step is kept when it shrinks |f'|.
    A step within a few float rounding errors of log T could not move it: such a step is
    skipped, and its pass over the logits with it.

    Returns:
      (log T, iterations used so far, Newton step |f' / f''| at log T: the scale-aware
      estimate of the distance to the optimum in log T, NaN where f'' <= 0, and the
      objective's value at log T).
    """

    def step(log_t, at, usable):
        # The guard keeps a vmapped cond (both branches run) free of divisions by f'' <= 0.
        proposal = jnp.clip(log_t - at.slope / jnp.where(usable, at.curvature, 1.0), log_lo, log_hi)
        new = derivatives(proposal)
        keep = jnp.abs(new.slope) < jnp.abs(at.slope)
        chosen = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, at)
        return jnp.where(keep, proposal, log_t), chosen, keep

    def skip(log_t, at, usable):
        return log_t, at, jnp.zeros((), bool)

    at = derivatives(log_t)
    for _ in range(steps):
        usable = (at.curvature > 0) & (count < max_iter)
        resolution = (
            NEWTON_RESOLUTION * jnp.finfo(log_t.dtype).eps * jnp.maximum(1.0, jnp.abs(log_t))
        )
        needed = usable & (jnp.abs(at.slope) > resolution * at.curvature)
        log_t, at, kept = jax.lax.cond(needed, step, skip, log_t, at, usable)
        count = count + kept.astype(count.dtype)
    newton_step = jnp.abs(at.slope) / jnp.where(at.curvature > 0, at.curvature, jnp.nan)
    return log_t, count, newton_step, at.value


# One-dimensional L-BFGS is the secant method: the newest (step, gradient change) pair fixes the
# inverse curvature completely, so older pairs add nothing but work.
_SOLVER = optax.lbfgs(memory_size=1)


@jax.jit
def _fit_temperature(logits, labels, max_iter, tol, lowest, highest):
    gaps = _label_gaps(logits, labels)
    constant, to_zero, to_infinity = _optimum_at_bound(gaps)
    decided = constant | to_zero | to_infinity
    log_lo, log_hi = jnp.log(lowest), jnp.log(highest)
    derivatives, unscaled, at_one = _nll_change(gaps, log_lo, log_hi)
    nll_change = _differentiable(derivatives)
    value_and_grad = optax.value_and_grad_from_state(nll_change)

    def step(carry):
        log_t, state, _ = carry
        value, grad = value_and_grad(log_t, state=state)
        updates, state = _SOLVER.update(
            grad, state, log_t, value=value, grad=grad, value_fn=nll_change
        )
        return optax.apply_updates(log_t, updates), state, log_t

    def keep_going(carry):
        log_t, state, previous = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        # Near the optimum L-BFGS steps are secant steps, converging superlinearly: once one
        # is below sqrt(tol) in log T, the Newton polish reaches tol in a step or two.
        moving = (count == 0) | (jnp.abs(log_t - previous) > jnp.sqrt(tol))
        improvable = (count == 0) | ((count < max_iter) & (grad != 0))
        return ~decided & moving & improvable

    start = jnp.clip(jnp.zeros((), logits.dtype), log_lo, log_hi)
    # T = 1 within the bounds (the usual case): the start's derivatives came with `unscaled`.
    at_start = jax.lax.cond(start == 0, lambda: at_one, lambda: derivatives(start))
    # The first iteration reuses the value and slope at the start from the state.
    state = optax.tree.set(_SOLVER.init(start), value=at_start.value, grad=at_start.slope)
    log_t, state, _ = jax.lax.while_loop(keep_going, step, (start, state, start + 1.0))
    # L-BFGS only accepts descent steps; the guard makes "never worse than the start" explicit.
    worse = optax.tree.get(state, "value") > at_start.value
    log_t = jnp.where(worse, start, log_t)
    count = jnp.where(decided, 0, optax.tree.get(state, "count"))
    polished, count, newton_step, change = _newton_polish(
        derivatives, log_t, count, jnp.where(decided, 0, max_iter), log_lo, log_hi
    )
    interior = (polished > log_lo) & (polished < log_hi)
    log_t = jnp.where(
        constant,
        0.0,
        jnp.where(
            to_zero, log_lo, jnp.where(to_infinity, log_hi, jnp.clip(polished, log_lo, log_hi))
        ),
    )
    converged = constant | (~decided & ~worse & interior & (newton_step <= tol))
    temperature = jnp.clip(jnp.exp(log_t), lowest, highest)
    # The NLL at the fitted T from the polish's last pass, unless T was set to a bound since.
    change = jax.lax.cond(log_t == polished, lambda: change, lambda: derivatives(log_t).value)
    nll_before = jnp.mean(unscaled)
    return TemperatureFit(
        temperature=temperature,
        converged=converged,
        num_iter=count.astype(jnp.int32),
        nll_before=nll_before,
        nll_after=nll_before + change,
    )


def fit_temperature(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    max_iter: int = 100,
    tol: float = 1e-5,
    bounds: tuple[float, float] = (MIN_TEMPERATURE, MAX_TEMPERATURE),
) -> TemperatureFit:
    """Fits the temperature T minimising the NLL of `logits / T` (Guo et al. 2017).

    Optimises log T (so T stays positive) with `optax.lbfgs` and a zoom line search inside one
    jitted `lax.while_loop`, then up to two Newton steps: a few iterations, each one fused pass
    over the logits for the NLL and its derivatives, and no host syncs. Binary [N] logits use the
    sigmoid BCE, [N, K] logits the softmax cross-entropy. When the NLL keeps decreasing towards
    T -> 0 (separable data) or T -> infinity (labels the logits do not predict, e.g. a single
    class), T is set to the corresponding bound and `converged` is False; it is never NaN.

    Args:
      logits: [N] binary logits or [N, K] multiclass logits (fit on a held-out set).
      labels: [N] int labels.
      max_iter: maximum L-BFGS iterations (>= 1).
      tol: relative accuracy of T (> 0): L-BFGS hands over to up to two Newton steps once
        its step in log T is below sqrt(tol); `converged` requires the Newton step
        |f' / f''| in log T to be <= tol. Scale-aware: it does not depend on the size of the
        NLL, the logits or N.
      bounds: (lowest, highest) temperature, 0 < lowest < highest < inf; default (1e-2, 1e2).

    Returns:
      TemperatureFit(temperature, converged, num_iter, nll_before, nll_after); `.scale` is
      a = 1 / T.

    Raises:
      ValueError / TypeError: bad shapes, options or (eagerly) values, as in `ece`.
    """
    max_iter = _checks.check_positive_int("max_iter", max_iter)
    if not (isinstance(tol, (int, float)) and 0.0 < tol < float("inf")):
        raise ValueError(f"tol must be a finite float > 0, got {tol!r}")
    if (
        not isinstance(bounds, tuple)
        or len(bounds) != 2
        or not all(isinstance(b, (int, float)) for b in bounds)
        or not 0.0 < bounds[0] < bounds[1] < float("inf")
    ):
        raise ValueError(
            f"bounds must be (lowest, highest) with 0 < lowest < highest, got {bounds}"
        )
    logits, labels = _checks.check_scores_labels(logits, labels, from_logits=True, name="logits")
    # numpy scalars: jit moves them to the device itself, far cheaper than jnp.asarray.
    tol, lo, hi = (np.asarray(x, logits.dtype) for x in (tol, *bounds))
    return _fit_temperature(logits, labels, max_iter, tol, lo, hi)
