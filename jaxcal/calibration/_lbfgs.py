"""Unconstrained minimisation of a smooth objective with optax L-BFGS inside one `while_loop`."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class Minimum(NamedTuple):
    """Result of `minimise`.

    Attributes:
      params: the parameters reached (the start when L-BFGS made things worse or non-finite).
      converged: True iff the gradient's largest entry is <= tol at `params` and `params`
        came from L-BFGS (finite and no worse than the start).
      num_iter: L-BFGS iterations taken.
    """

    params: Any
    converged: jax.Array
    num_iter: jax.Array


def _max_abs(tree: Any) -> jax.Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)]))


def minimise(
    objective: Callable[[Any], jax.Array], start: Any, *, max_iter: int, tol: jax.Array
) -> Minimum:
    """Minimises `objective` from `start` with `optax.lbfgs` and its zoom line search.

    Stops when the gradient's largest entry is <= tol, after `max_iter` iterations, or when
    the line search stops moving the parameters (float precision reached). Traceable: call it
    inside `jit`/`vmap`; there are no host syncs.

    Args:
      objective: pytree of arrays -> scalar, smooth.
      start: the initial parameters (a pytree of floating arrays).
      max_iter: maximum L-BFGS iterations (>= 1, static).
      tol: gradient tolerance (scalar > 0).

    Returns:
      Minimum(params, converged, num_iter).
    """
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        params, state, _ = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(
            grad, state, params, value=value, grad=grad, value_fn=objective
        )
        return optax.apply_updates(params, updates), state, params

    def keep_going(carry):
        params, state, previous = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.any(a != b), params, previous))
        moving = (count == 0) | jnp.any(jnp.stack(moved))
        return moving & ((count == 0) | ((count < max_iter) & (_max_abs(grad) > tol)))

    offset = jax.tree.map(lambda x: x + 1.0, start)
    params, state, _ = jax.lax.while_loop(keep_going, step, (start, solver.init(start), offset))
    # L-BFGS only accepts descent steps; the guard makes "never worse than the start, never
    # NaN" explicit.
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))
    kept = finite & (objective(params) <= objective(start))
    params = jax.tree.map(lambda new, old: jnp.where(kept, new, old), params, start)
    converged = kept & (_max_abs(jax.grad(objective)(params)) <= tol)
    return Minimum(params, converged, optax.tree.get(state, "count").astype(jnp.int32))
