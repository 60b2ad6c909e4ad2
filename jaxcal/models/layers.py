"""torch-equivalent layer constructors the torchvision-layout models share."""

from __future__ import annotations

from flax import nnx

from jaxcal.models.im2col import conv_function_for_backend


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
    """A bias-free square convolution with torch's explicit symmetric padding (NHWC).

    Lowered for the default backend: on CPU the 1x1 convolutions and those of small maps run
    as im2col + GEMM, the 3x3 stride-1 ones of large maps (with no fewer channels out than in)
    as Winograd F(2x2, 3x3) (`jaxcal.models.im2col.conv_general_dilated_for_cpu`), elsewhere
    as XLA's convolution. The parameters are nnx.Conv's either way.
    """
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=False,
        kernel_init=kernel_init,
        conv_general_dilated=conv_function_for_backend(),
        rngs=rngs,
    )


def batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """torch's BatchNorm2d(eps=1e-5, momentum=0.1), which is Flax momentum 0.9.

    One difference remains in train mode: torch updates running_var with the unbiased batch
    variance, Flax with the biased one (a factor n / (n - 1), n = B * H * W values per channel).
    """
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)
