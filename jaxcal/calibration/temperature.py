"""Temperature scaling: fit T by NLL with optax L-BFGS and apply it (sweeps: `sweep.py`)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcal.calibration import _checks
from jaxcal.calibration.metrics import _log_likelihood, _nll
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
    """[N, K] logit of each class minus the logit of the label (binary as logits [0, z])."""
    if logits.ndim == 1:
        logits = jnp.stack([jnp.zeros_like(logits), logits], axis=-1)
    return logits - jnp.take_along_axis(logits, labels[:, None], axis=-1)


def _newton_polish(objective, log_t, count, max_iter, log_lo, log_hi, steps: int = 2):
    """Up to `steps` Newton steps in log T after L-BFGS, within the iteration budget.

    Near the optimum a float32 objective is flatter than its rounding noise, so line searches
    stall there while the gradient still points the way: a step is kept when it shrinks |f'|.

    Returns:
      (log T, iterations used so far, Newton step |f' / f''| at log T: the scale-aware
      estimate of the distance to the optimum in log T, NaN where f'' <= 0).
    """

    def derivatives(x):
        return jax.jvp(jax.grad(objective), (x,), (jnp.ones_like(x),))

    grad, curvature = derivatives(log_t)
    for _ in range(steps):
        usable = (curvature > 0) & (count < max_iter)
        proposal = jnp.clip(log_t - grad / jnp.where(usable, curvature, 1.0), log_lo, log_hi)
        new_grad, new_curvature = derivatives(proposal)
        keep = usable & (jnp.abs(new_grad) < jnp.abs(grad))
        log_t = jnp.where(keep, proposal, log_t)
        grad = jnp.where(keep, new_grad, grad)
        curvature = jnp.where(keep, new_curvature, curvature)
        count = count + keep.astype(count.dtype)
    return log_t, count, jnp.abs(grad) / jnp.where(curvature > 0, curvature, jnp.nan)


@jax.jit
def _fit_temperature(logits, labels, max_iter, tol, lowest, highest):
    # With a = 1/T the NLL f(a) = mean_i logsumexp_k(a * gap_ik) is convex, so the optimum over
    # T > 0 lies at T -> 0 iff every label has the (weakly) largest logit with some strict
    # gap, and at T -> infinity iff f'(0) = mean_ik gap_ik >= 0. Otherwise it is interior.
    gaps = _label_gaps(logits, labels)
    constant = jnp.all(gaps == 0)
    to_zero = jnp.all(gaps <= 0) & jnp.any(gaps < 0)
    to_infinity = (jnp.mean(gaps) >= 0) & ~constant
    decided = constant | to_zero | to_infinity
    log_lo, log_hi = jnp.log(lowest), jnp.log(highest)

    # The objective is the NLL change relative to T = 1, summed from per-sample differences:
    # its float32 rounding noise is ~1e-9 instead of ~1e-6 for the NLL itself, which the line
    # search needs when logits are tiny and the NLL barely moves with T.
    log_lik_unscaled = _log_likelihood(logits, labels, True)

    def nll_change(log_t):
        inside = jnp.clip(log_t, log_lo, log_hi)
        log_lik = _log_likelihood(logits * jnp.exp(-inside), labels, True)
        # The quadratic outside the bounds keeps the objective increasing there, so the line
        # search never mistakes a flat, clipped plateau for a minimum.
        return jnp.mean(log_lik_unscaled - log_lik) + 0.5 * (log_t - inside) ** 2

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(nll_change)

    def step(carry):
        log_t, state, _ = carry
        value, grad = value_and_grad(log_t, state=state)
        updates, state = solver.update(
            grad, state, log_t, value=value, grad=grad, value_fn=nll_change
        )
        return optax.apply_updates(log_t, updates), state, log_t

    def keep_going(carry):
        log_t, state, previous = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        # L-BFGS steps near the optimum are secant (Newton) steps: a step below tol / 10 in
        # log T (relative in T) means the fit is there to float32 precision.
        moving = (count == 0) | (jnp.abs(log_t - previous) > 0.1 * tol)
        improvable = (count == 0) | ((count < max_iter) & (grad != 0))
        return ~decided & moving & improvable

    start = jnp.clip(jnp.zeros((), logits.dtype), log_lo, log_hi)
    log_t, state, _ = jax.lax.while_loop(keep_going, step, (start, solver.init(start), start + 1.0))
    # L-BFGS only accepts descent steps; the guard makes "never worse than the start" explicit.
    worse = nll_change(log_t) > nll_change(start)
    log_t = jnp.where(worse, start, log_t)
    count = jnp.where(decided, 0, optax.tree.get(state, "count"))
    log_t, count, newton_step = _newton_polish(
        nll_change, log_t, count, jnp.where(decided, 0, max_iter), log_lo, log_hi
    )
    interior = (log_t > log_lo) & (log_t < log_hi)
    log_t = jnp.where(
        constant,
        0.0,
        jnp.where(to_zero, log_lo, jnp.where(to_infinity, log_hi, jnp.clip(log_t, log_lo, log_hi))),
    )
    converged = constant | (~decided & ~worse & interior & (newton_step <= tol))
    temperature = jnp.clip(jnp.exp(log_t), lowest, highest)
    return TemperatureFit(
        temperature=temperature,
        converged=converged,
        num_iter=count.astype(jnp.int32),
        nll_before=_nll(logits, labels, True),
        nll_after=_nll(logits / temperature, labels, True),
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
    jitted `lax.while_loop`: a few iterations and no host syncs. Binary [N] logits use the
    sigmoid BCE, [N, K] logits the softmax cross-entropy. When the NLL keeps decreasing towards
    T -> 0 (separable data) or T -> infinity (labels the logits do not predict, e.g. a single
    class), T is set to the corresponding bound and `converged` is False; it is never NaN.

    Args:
      logits: [N] binary logits or [N, K] multiclass logits (fit on a held-out set).
      labels: [N] int labels.
      max_iter: maximum L-BFGS iterations (>= 1).
      tol: relative accuracy of T (> 0): L-BFGS stops when its step in log T is below tol / 10;
        `converged` requires the Newton step |f' / f''| in log T to be <= tol. Scale-aware:
        it does not depend on the size of the NLL, the logits or N.
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
    lo, hi = (jnp.asarray(b, logits.dtype) for b in bounds)
    return _fit_temperature(logits, labels, max_iter, jnp.asarray(tol, logits.dtype), lo, hi)
