"""Ensemble temperature scaling (Zhang et al. 2020): a mix of softmax(z / T), softmax(z), 1/K."""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcal.calibration._lbfgs import minimise
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


@partial(jax.jit, static_argnames=("max_iter",))
def fit_ensemble_temperature(logits, labels, max_iter, tol) -> EnsembleFit:
    """Fits T by NLL (fit_temperature), then the weights by NLL given T (Zhang et al.'s order).

    The weights are w = softmax(v), v fitted by L-BFGS from w = (0, 1, 0) (nearly: the
    uncalibrated model). The NLL is convex in w; at a face of the simplex the gradient in v
    vanishes with the weight that goes to 0, so `tol` bounds w_j |dNLL/dw_j - lambda|.
    """
    temperature_fit = fit_temperature(logits, labels)
    temperature = temperature_fit.temperature
    label_probs = jnp.take_along_axis(
        _components(logits, temperature), labels[:, None, None], axis=1
    )[:, 0, :]

    def nll(v):
        return 0.0 - jnp.mean(jnp.log(label_probs @ jax.nn.softmax(v)))

    # The start gives softmax(z) 98% of the weight: never worse than the uncalibrated model
    # by more than log(1 / 0.98), and L-BFGS only descends from there.
    start = jnp.asarray([0.0, 4.0, 0.0], logits.dtype)
    result = minimise(nll, start, max_iter=max_iter, tol=tol)
    params = EnsembleTemperatureParams(temperature, jax.nn.softmax(result.params))
    return EnsembleFit(
        params=params,
        converged=temperature_fit.converged & result.converged,
        nll_before=temperature_fit.nll_before,
        nll_after=nll(result.params),
    )
