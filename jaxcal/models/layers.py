"""torch-equivalent layer constructors the torchvision-layout models share."""

from __future__ import annotations

from flax import nnx


def conv2d(
    in_features: int,
    out_features: int,
    kernel_size: int,
    stride: int,
    padding: int,
    rngs: nnx.Rngs,
    *,
    kernel_init: nnx.Initializer,
) -> nnx.Conv:
    """A bias-free square convolution with torch's explicit symmetric padding (NHWC)."""
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=False,
        kernel_init=kernel_init,
        rngs=rngs,
    )


def batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """torch's BatchNorm2d(eps=1e-5, momentum=0.1), which is Flax momentum 0.9.

    One difference remains in train mode: torch updates running_var with the unbiased batch
    variance, Flax with the biased one (a factor n / (n - 1), n = B * H * W values per channel).
    """
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)
