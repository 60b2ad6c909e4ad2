"""Ensemble temperature scaling (Zhang et al. 2020): a mix of softmax(z / T), softmax(z), 1/K."""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcal.calibration.temperature import fit_temperature


class EnsembleTemperatureParams(NamedTuple):
    """p = w[0] softmax(z / T) + w[1] softmax(z) + w[2] / K.

    Attributes:
      temperature: scalar T > 0, the NLL-optimal temperature (fit_temperature).
      weights: [3] on the simplex, NLL-optimal given T.
    """

    temperature: jax.Array
    weights: jax.Array


class EnsembleFit(NamedTuple):
    """What fit_ensemble_temperature returns (scalars besides `params`)."""

    params: EnsembleTemperatureParams
    converged: jax.Array
    nll_before: jax.Array
    nll_after: jax.Array


def _components(logits: jax.Array, temperature: jax.Array) -> jax.Array:
    """[N, K, 3] the three mixed distributions."""
    k = logits.shape[-1]
    return jnp.stack(
        [
            jax.nn.softmax(logits / temperature, axis=-1),
            jax.nn.softmax(logits, axis=-1),
            jnp.full(logits.shape, 1.0 / k, logits.dtype),
        ],
        axis=-1,
    )


def ensemble_probabilities(params: EnsembleTemperatureParams, logits: jax.Array) -> jax.Array:
    """[N, K] calibrated probabilities (rows sum to 1; all > 0 when w[2] > 0)."""
    return _components(logits, params.temperature) @ params.weights


# The seven faces of the 3-simplex: the supports a mixture's optimal weights can have.
_FACES = ((1, 1, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1))


def _mixture_nll(label_probs: jax.Array, weights: jax.Array) -> jax.Array:
    """-mean log(label_probs @ w) for [..., 3] weights (+inf where a mixture is 0)."""
    return 0.0 - jnp.mean(jnp.log(label_probs @ weights.T), axis=0)


def _kkt_gaps(label_probs: jax.Array, weights: jax.Array) -> jax.Array:
    """[3] 1 - mean(p_ij / (p_i . w)): the gradient of the NLL in w, plus 1.

    w . gradient = -1 at every w, so at the optimum the gap is 0 on the support and >= 0 off
    it. Each ratio has 1 subtracted before the mean, so the sum rounds like a small number.
    """
    ratios = label_probs / (label_probs @ weights)[:, None]
    return 0.0 - jnp.mean(ratios - 1.0, axis=0)


def _newton_step(label_probs, weights, free):
    """One damped Newton step of the mixture NLL within the face `free` (0/1 [3])."""
    ratios = label_probs / (label_probs @ weights)[:, None]
    # The gradient plus 1 (`_kkt_gaps`): a step whose entries sum to 0 sees only differences
    # of gradient entries, and these keep their digits.
    grad = -jnp.mean(ratios - 1.0, axis=0) * free
    hess = (ratios.T @ ratios) / ratios.shape[0] * jnp.outer(free, free)
    ridge = 1e-9 * jnp.trace(hess) + jnp.finfo(weights.dtype).tiny
    # Equality-constrained Newton system on the free weights (sum of the step 0; fixed ones
    # get a unit row and no step); the ridge covers duplicate components (T = 1).
    kkt = jnp.zeros((4, 4), weights.dtype)
    kkt = kkt.at[:3, :3].set(hess + jnp.diag(1.0 - free + ridge * free))
    kkt = kkt.at[:3, 3].set(free).at[3, :3].set(free)
    step = jnp.linalg.solve(kkt, jnp.concatenate([-grad, jnp.zeros(1, weights.dtype)]))[:3]
    # Never closer than 1 % of the way to the face's edge, then halve until Armijo holds.
    shrinking = step < 0
    room = jnp.min(jnp.where(shrinking, weights / jnp.where(shrinking, -step, 1.0), jnp.inf))
    largest = jnp.minimum(1.0, 0.99 * room)
    sizes = largest * 0.5 ** jnp.arange(12, dtype=weights.dtype)
    trial = weights + sizes[:, None] * step
    current = _mixture_nll(label_probs, weights[None])[0]
    values = _mixture_nll(label_probs, trial)
    decrease = -jnp.dot(grad, step)  # the Newton decrement squared
    # Strictly lower, so that steps trading rounding errors are not taken; but a decrease the
    # NLL cannot resolve (near the optimum, where the quadratic model is exact enough) is
    # taken on the model's word.
    unresolved = 0.5 * decrease <= 8 * jnp.finfo(weights.dtype).eps * jnp.abs(current)
    ok = (values <= current - 1e-4 * sizes * decrease) & (values < current)
    ok = ok | (unresolved & jnp.isfinite(values))
    return jnp.where(jnp.any(ok), trial[jnp.argmax(ok)], weights)


def _face_minimum(label_probs: jax.Array, free: jax.Array, max_iter: int) -> jax.Array:
    """Weights minimising the mixture NLL over the face `free`, from its centre.

    Newton converges quadratically (about ten steps); it stops when a step moves no weight by
    more than 4 float eps (or not at all), or after `max_iter` steps.
    """
    resolution = 4 * jnp.finfo(label_probs.dtype).eps

    def keep_going(carry):
        count, weights, previous = carry
        return (count < max_iter) & (jnp.max(jnp.abs(weights - previous)) > resolution)

    def step(carry):
        count, weights, _ = carry
        return count + 1, _newton_step(label_probs, weights, free), weights

    centre = free / jnp.sum(free)
    _, weights, _ = jax.lax.while_loop(keep_going, step, (0, centre, centre + 1.0))
    return weights


def _kkt_violation(label_probs: jax.Array, weights: jax.Array) -> jax.Array:
    """Distance from optimality: largest |gap| on the support and -gap off it (0 at the optimum)."""
    gaps = _kkt_gaps(label_probs, weights)
    return jnp.max(jnp.where(weights > 0, jnp.abs(gaps), jnp.maximum(-gaps, 0.0)))


def simplex_weights(
    label_probs: jax.Array, tol: jax.Array, max_iter: int
) -> tuple[jax.Array, jax.Array]:
    """The NLL-optimal mixture weights w on the simplex, and whether they satisfy KKT to `tol`.

    Minimises -mean log(p_i . w) for [N, 3] label probabilities p_i: convex, its optimum
    often on a face (a weight exactly 0). Each of the seven faces gets damped Newton from its
    centre (`_face_minimum`). The optimum is the minimiser of the face that is its support, so
    the candidate chosen is the lowest NLL among those within `tol` of optimality
    (`_kkt_violation`; a face whose own minimum lies on its edge only creeps towards it), or
    else the lowest NLL (then not converged). Every vertex is a candidate, so the result is
    never worse than w = (0, 1, 0), the uncalibrated model.
    """
    faces = jnp.asarray(_FACES, label_probs.dtype)
    candidates = jax.vmap(_face_minimum, in_axes=(None, 0, None))(label_probs, faces, max_iter)
    values = _mixture_nll(label_probs, candidates)
    values = jnp.where(jnp.isnan(values), jnp.inf, values)
    optimal = jax.vmap(_kkt_violation, in_axes=(None, 0))(label_probs, candidates) <= tol
    converged = jnp.any(optimal & jnp.isfinite(values))
    chosen = jnp.argmin(jnp.where(optimal | ~converged, values, jnp.inf))
    return candidates[chosen], converged


@partial(jax.jit, static_argnames=("max_iter",))
def fit_ensemble_temperature(logits, labels, max_iter, tol) -> EnsembleFit:
    """Fits T by NLL (fit_temperature), then the weights by NLL given T (Zhang et al.'s order).

    The weights come from `simplex_weights`: exact zeros where the optimum lies on a face
    (a softmax parametrisation only approaches them, and stalls there: one of 100 fits took
    119 L-BFGS iterations, and two permutations of a data set gave weights 3e-4 apart).
    `max_iter` bounds the Newton steps per face.
    """
    temperature_fit = fit_temperature(logits, labels)
    temperature = temperature_fit.temperature
    label_probs = jnp.take_along_axis(
        _components(logits, temperature), labels[:, None, None], axis=1
    )[:, 0, :]
    weights, converged = simplex_weights(label_probs, tol, max_iter)
    return EnsembleFit(
        params=EnsembleTemperatureParams(temperature, weights),
        converged=temperature_fit.converged & converged,
        nll_before=temperature_fit.nll_before,
        nll_after=_mixture_nll(label_probs, weights[None])[0],
    )
