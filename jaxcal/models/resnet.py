"""ResNet18 laid out exactly like torchvision's, in NHWC, with a replaceable head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcal.models.initializers import he_normal
from jaxcal.models.layers import batch_norm, conv2d
from jaxcal.models.mlp import dense

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for every convolution.
_CONV_INIT = he_normal("fan_out")
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _conv(
    in_features: int, out_features: int, kernel_size: int, stride: int, padding: int, rngs: nnx.Rngs
) -> nnx.Conv:
    return conv2d(
        in_features, out_features, kernel_size, stride, padding, rngs, kernel_init=_CONV_INIT
    )


class BasicBlock(nnx.Module):
    """torchvision's `BasicBlock`: two 3x3 convs with BatchNorm and an identity or 1x1 shortcut.

    The stride sits on `conv1` and on the shortcut `downsample` (1x1 conv + BatchNorm, present
    when the stride or the width changes), as in torchvision.
    """

    def __init__(self, in_features: int, features: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(in_features, features, 3, stride, 1, rngs)
        self.bn1 = batch_norm(features, rngs)
        self.conv2 = _conv(features, features, 3, 1, 1, rngs)
        self.bn2 = batch_norm(features, rngs)
        if stride != 1 or in_features != features:
            self.downsample = nnx.Sequential(
                _conv(in_features, features, 1, stride, 0, rngs), batch_norm(features, rngs)
            )
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, in_features] -> [B, ceil(H / stride), ceil(W / stride), features]."""
        shortcut = x if self.downsample is None else self.downsample(x)
        h = nnx.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return nnx.relu(h + shortcut)


class ResNet18(nnx.Module):
    """ResNet18 with torchvision's exact layout, parameter shapes and padding, NHWC.

    Top-level submodules use torchvision's names: `conv1`, `bn1` (the stem), `layer1` ...
    `layer4` (each an `nnx.List` of two `BasicBlock`s) and `fc`, the head
    (`ResNet18.head_name`). 11,689,512 parameters with `num_classes=1000`. Construction puts
    it in train mode like torch; call `model.eval()` (or use `nnx.view`) before computing
    logits for calibration, so BatchNorm uses its running statistics.

    Args:
        num_classes: number of logits; 1 means a single binary logit.
        rngs: parameter initialisation keys (torchvision's init: He-normal fan-out convs,
            BatchNorm scale 1 bias 0, torch-default Linear head).
    """

    head_name = "fc"

    def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.conv1 = _conv(3, 64, 7, 2, 3, rngs)
        self.bn1 = batch_norm(64, rngs)
        widths = (64, 128, 256, 512)
        in_features = 64
        for i, features in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            blocks = [
                BasicBlock(in_features, features, stride, rngs=rngs),
                BasicBlock(features, features, 1, rngs=rngs),
            ]
            setattr(self, f"layer{i}", nnx.List(blocks))
            in_features = features
        self.fc = dense(512, num_classes, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> dict[str, jax.Array]:
        """The output of every stage, keyed by `STAGES`.

        Args:
            x: [B, H, W, 3] float32 NHWC images (ImageNet-normalised for pretrained weights).

        Returns:
            "stem": [B, H/4, W/4, 64] (after the max-pool), "layer1": [B, H/4, W/4, 64],
            "layer2": [B, H/8, W/8, 128], "layer3": [B, H/16, W/16, 256],
            "layer4": [B, H/32, W/32, 512] (sizes rounded up, as in torch).
        """
        return self._feature_maps(x)

    def backbone(self, x: jax.Array) -> jax.Array:
        """Globally average-pooled `layer4` features.

        Args:
            x: [B, H, W, 3] float32 NHWC images.

        Returns:
            [B, 512] features (the input of `fc`).
        """
        return jnp.mean(self._feature_maps(x)["layer4"], axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of a batch of images.

        Args:
            x: [B, H, W, 3] float32 NHWC images.

        Returns:
            [B, num_classes] logits.
        """
        return self.fc(jnp.mean(self._feature_maps(x)["layer4"], axis=(1, 2)))

    # The public methods call this private one rather than each other, so that nnx.tabulate
    # (which records every public method call) shows one row for the whole model.
    def _feature_maps(self, x: jax.Array) -> dict[str, jax.Array]:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"x must be NHWC [B, H, W, 3], got shape {x.shape}")
        h = nnx.relu(self.bn1(self.conv1(x)))
        # torchvision's MaxPool2d(3, 2, padding=1) pads with -inf; nnx.max_pool pads with its
        # reduction's identity, -inf, too.
        h = nnx.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        features = {"stem": h}
        for name in STAGES[1:]:
            for block in getattr(self, name):
                h = block(h)
            features[name] = h
        return features
