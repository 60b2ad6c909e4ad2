"""Parameter initialisers of the models, compiled quickly: torch's defaults and He normal."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

QUICK_COMPILE = {"xla_backend_optimization_level": 2}
"""XLA options of the initialisers: backend optimisation level 2 instead of the default 3.

They run once per parameter shape, and at level 3 LLVM spends most of a random initialiser's
compile optimising the threefry hash. Measured on the 2-core EPYC, each model built eagerly in
a fresh process: LeNet-5 4.3 -> 2.0 s (compiles 3.8 -> 1.5 s), ResNet18 8.9 -> 4.1 s,
DenseNet-121 16.7 -> 11.1 s. The values are those of level 3 bit for bit (level 0 would
change their last bits: no fused multiply-adds); tests/test_models.py checks the values."""


@functools.cache
def compiled_quickly(init: nnx.Initializer) -> nnx.Initializer:
    """`init`, jitted per (shape, dtype) with `QUICK_COMPILE` when called eagerly.

    Equals `jax.jit(init, static_argnums=(1, 2))` bit for bit, and its outputs are committed to
    a device only if the key is (as a plain jit's). Inside a trace (a jit, nnx.jit or
    eval_shape) `init` is inlined into the caller's program instead: JAX refuses compiler
    options on a nested jit. Cached: one jitted function per `init`.
    """
    compiled = jax.jit(init, static_argnums=(1, 2), compiler_options=QUICK_COMPILE)

    def quick(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        if isinstance(key, jax.core.Tracer):
            return init(key, shape, dtype)
        try:
            return compiled(key, shape, dtype)
        except ValueError:  # a concrete key inside a trace (a nested jit); bad input raises again
            return init(key, shape, dtype)

    return quick


@functools.cache
def _symmetric_uniform(bound: float) -> nnx.Initializer:
    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# torch.nn.Linear / Conv2d initialise their weights with kaiming_uniform(a=sqrt(5)), which is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): a variance scaling of 1/3 with a uniform distribution.
# Flax's fan_in for a conv kernel [kh, kw, in, out] is kh * kw * in, as in torch.
TORCH_KERNEL_INIT = compiled_quickly(
    nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
)


def torch_bias_init(fan_in: int) -> nnx.Initializer:
    """The bias initialiser of torch.nn.Linear / Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Args:
        fan_in: number of inputs feeding each output unit (in_features, or kh * kw * in).

    Returns:
        An initialiser `(key, shape, dtype) -> array`.
    """
    return compiled_quickly(_symmetric_uniform(1.0 / float(fan_in) ** 0.5))


def he_normal(mode: str) -> nnx.Initializer:
    """torch's kaiming_normal_(mode=mode, nonlinearity="relu"): N(0, 2 / fan) per weight.

    Compiled as one program (`compiled_quickly`): the draw and its scaling fused, so values
    differ from flax's `variance_scaling(2.0, mode, "normal")` run eagerly (two programs) by
    float32 rounding (< 2e-7 relative), and equal it jitted bit for bit.
    """
    return compiled_quickly(_variance_scaling_normal(mode))


@functools.cache
def _variance_scaling_normal(mode: str) -> nnx.Initializer:
    return nnx.initializers.variance_scaling(2.0, mode, "normal")
