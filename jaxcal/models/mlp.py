"""Multilayer perceptron for flattened images, with PyTorch's default initialisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from flax import nnx

from jaxcal._checks import check_positive_ints
from jaxcal.models.initializers import TORCH_KERNEL_INIT, torch_bias_init


def dense(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """An `nnx.Linear` initialised like `torch.nn.Linear(in_features, out_features)`.

    Parameters are `kernel` [in_features, out_features] and `bias` [out_features].
    """
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=TORCH_KERNEL_INIT,
        bias_init=torch_bias_init(in_features),
        rngs=rngs,
    )


class MLP(nnx.Module):
    """Fully connected ReLU network on flattened inputs (the MNIST notebook's `MultiLayerNN`).

    The default 784-512-512-10 has 669,706 parameters. Top-level submodules: `hidden` (an
    `nnx.List` of `nnx.Linear`) and `head` (the output layer; `MLP.head_name`).

    Args:
        in_features: size of one flattened input, e.g. 28 * 28 * 1 = 784 for MNIST.
        hidden_features: width of each hidden layer, in order (may be empty: logistic regression).
        num_classes: number of logits; 1 means a single binary logit.
        rngs: parameter initialisation keys.
    """

    head_name = "head"

    def __init__(
        self,
        in_features: int = 784,
        hidden_features: Sequence[int] = (512, 512),
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
    ):
        check_positive_ints("in_features", [in_features], allow_empty=False)
        check_positive_ints("hidden_features", list(hidden_features), allow_empty=True)
        check_positive_ints("num_classes", [num_classes], allow_empty=False)
        self.in_features = in_features
        self.num_classes = num_classes
        widths = [in_features, *hidden_features]
        self.hidden = nnx.List(
            [dense(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.head = dense(widths[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of a batch.

        Args:
            x: [B, ...] float32 inputs (e.g. NHWC images [B, 28, 28, 1]); everything after the
                batch axis is flattened and must hold `in_features` values.

        Returns:
            [B, num_classes] logits.
        """
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.in_features:
            raise ValueError(
                f"x must be [B, ...] with {self.in_features} values per example, got shape "
                f"{x.shape}"
            )
        h = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            h = nnx.relu(layer(h))
        return self.head(h)
