"""DenseNet-121 laid out exactly like torchvision's, in NHWC, with a replaceable head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcal.models.initializers import TORCH_KERNEL_INIT, he_normal
from jaxcal.models.layers import batch_norm, conv2d

# torchvision's DenseNet: kaiming_normal_ (fan_in, gain sqrt(2)) for every convolution,
# BatchNorm scale 1 bias 0, Linear weight torch-default and bias 0.
_CONV_INIT = he_normal("fan_in")
GROWTH_RATE = 32
BLOCK_LAYERS = (6, 12, 24, 16)
BOTTLENECK = 4
"""The 1x1 bottleneck conv of each dense layer has BOTTLENECK * GROWTH_RATE outputs."""
STEM_FEATURES = 2 * GROWTH_RATE
NUM_FEATURES = 1024
"""Width of the last dense block's output, the input of the head."""
STAGES = (
    "stem",
    "denseblock1",
    "transition1",
    "denseblock2",
    "transition2",
    "denseblock3",
    "transition3",
    "denseblock4",
    "norm5",
)


def _conv(
    in_features: int, out_features: int, kernel_size: int, stride: int, padding: int, rngs: nnx.Rngs
) -> nnx.Conv:
    return conv2d(
        in_features, out_features, kernel_size, stride, padding, rngs, kernel_init=_CONV_INIT
    )


class DenseLayer(nnx.Module):
    """torchvision's `_DenseLayer`: BN-ReLU-conv1x1 to 128, BN-ReLU-conv3x3 to 32 new features."""

    def __init__(self, in_features: int, *, rngs: nnx.Rngs):
        width = BOTTLENECK * GROWTH_RATE
        self.norm1 = batch_norm(in_features, rngs)
        self.conv1 = _conv(in_features, width, 1, 1, 0, rngs)
        self.norm2 = batch_norm(width, rngs)
        self.conv2 = _conv(width, GROWTH_RATE, 3, 1, 1, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, in_features] -> the [B, H, W, GROWTH_RATE] new features."""
        h = self.conv1(nnx.relu(self.norm1(x)))
        return self.conv2(nnx.relu(self.norm2(h)))


class DenseBlock(nnx.Module):
    """torchvision's `_DenseBlock`: `denselayer1` ... `denselayerN`, each fed every earlier output.

    Attribute names follow torchvision's (1-based), so that a layer's Flax path holds the same
    number as its torch key.
    """

    def __init__(self, in_features: int, num_layers: int, *, rngs: nnx.Rngs):
        self.num_layers = num_layers
        for i in range(num_layers):
            layer = DenseLayer(in_features + i * GROWTH_RATE, rngs=rngs)
            setattr(self, f"denselayer{i + 1}", layer)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, H, W, C + num_layers * GROWTH_RATE]: the input, then each layer's."""
        features = [x]
        for i in range(self.num_layers):
            layer = getattr(self, f"denselayer{i + 1}")
            features.append(layer(jnp.concatenate(features, axis=-1)))
        return jnp.concatenate(features, axis=-1)


class Transition(nnx.Module):
    """torchvision's `_Transition`: BN-ReLU-conv1x1 halving the width, then 2x2 average pooling."""

    def __init__(self, in_features: int, *, rngs: nnx.Rngs):
        self.norm = batch_norm(in_features, rngs)
        self.conv = _conv(in_features, in_features // 2, 1, 1, 0, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, floor(H / 2), floor(W / 2), C // 2]."""
        h = self.conv(nnx.relu(self.norm(x)))
        return nnx.avg_pool(h, (2, 2), strides=(2, 2))


def classifier(num_classes: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """DenseNet-121's head as torchvision initialises it: kernel [1024, num_classes]
    torch-default uniform, bias zero."""
    return nnx.Linear(
        NUM_FEATURES,
        num_classes,
        kernel_init=TORCH_KERNEL_INIT,
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


class DenseNet121(nnx.Module):
    """DenseNet-121 (DenseNet-BC, growth 32, blocks 6/12/24/16) with torchvision's exact layout.

    Top-level submodules carry the names of torchvision's `features.*` children without the
    `features.` prefix: `conv0`, `norm0` (the stem, followed by a 3x3/2 max-pool),
    `denseblock1` ... `denseblock4` (each a `DenseBlock` of `denselayerN`s), `transition1` ...
    `transition3`, `norm5`, and the head `classifier` (`DenseNet121.head_name`). 7,978,856
    parameters with `num_classes=1000`. Construction puts it in train mode like torch; call
    `model.eval()` (or use `nnx.view`) before computing logits for calibration, so BatchNorm
    uses its running statistics.

    Args:
        num_classes: number of logits; 1 means a single binary logit.
        rngs: parameter initialisation keys (torchvision's init: He-normal fan-in convs,
            BatchNorm scale 1 bias 0, torch-default Linear weight with a zero bias).
    """

    head_name = "classifier"

    def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.conv0 = _conv(3, STEM_FEATURES, 7, 2, 3, rngs)
        self.norm0 = batch_norm(STEM_FEATURES, rngs)
        features = STEM_FEATURES
        for i, num_layers in enumerate(BLOCK_LAYERS, start=1):
            setattr(self, f"denseblock{i}", DenseBlock(features, num_layers, rngs=rngs))
            features += num_layers * GROWTH_RATE
            if i < len(BLOCK_LAYERS):
                setattr(self, f"transition{i}", Transition(features, rngs=rngs))
                features //= 2
        self.norm5 = batch_norm(features, rngs)
        self.classifier = classifier(num_classes, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> dict[str, jax.Array]:
        """The output of every stage, keyed by `STAGES`.

        Args:
            x: [B, H, W, 3] float32 NHWC images (ImageNet-normalised for pretrained weights).

        Returns:
            "stem": [B, H/4, W/4, 64] (after the max-pool), "denseblock1": [B, H/4, W/4, 256],
            "transition1": [B, H/8, W/8, 128], "denseblock2": [.., 512], "transition2":
            [B, H/16, W/16, 256], "denseblock3": [.., 1024], "transition3": [B, H/32, W/32, 512],
            "denseblock4" and "norm5" (before its ReLU): [B, H/32, W/32, 1024]. Sizes as in torch
            (the stem rounds up, the transitions round down).
        """
        return self._feature_maps(x)

    def backbone(self, x: jax.Array) -> jax.Array:
        """Globally average-pooled features after `norm5` and its ReLU.

        Args:
            x: [B, H, W, 3] float32 NHWC images.

        Returns:
            [B, 1024] features (the input of `classifier`).
        """
        return jnp.mean(nnx.relu(self._feature_maps(x)["norm5"]), axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of a batch of images.

        Args:
            x: [B, H, W, 3] float32 NHWC images.

        Returns:
            [B, num_classes] logits.
        """
        return self.classifier(jnp.mean(nnx.relu(self._feature_maps(x)["norm5"]), axis=(1, 2)))

    # The public methods call this private one rather than each other, so that nnx.tabulate
    # (which records every public method call) shows one row for the whole model.
    def _feature_maps(self, x: jax.Array) -> dict[str, jax.Array]:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"x must be NHWC [B, H, W, 3], got shape {x.shape}")
        h = nnx.relu(self.norm0(self.conv0(x)))
        # torchvision's MaxPool2d(3, 2, padding=1) pads with -inf, as nnx.max_pool does.
        h = nnx.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        features = {"stem": h}
        for name in STAGES[1:]:
            h = getattr(self, name)(h)
            features[name] = h
        return features
