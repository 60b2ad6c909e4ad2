"""The LeNet-5 family of the original notebooks: one module configured by a frozen dataclass."""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from jaxcal._checks import check_positive_ints, is_positive_int
from jaxcal.models.conv import PatchConv, avg_pool_2x2, conv_impl_for_backend, max_pool_2x2
from jaxcal.models.initializers import TORCH_KERNEL_INIT, torch_bias_init
from jaxcal.models.mlp import dense

PRESETS = ("birdcat", "lenet5_bn", "mnist_cnn", "classic")


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    padding: int = 0,
    use_bias: bool = True,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """The one place LeNet builds a stride-1 convolution, chosen per backend.

    On CPU a `PatchConv` (patches + one matmul: XLA:CPU's own convolution gradients are slow
    for LeNet-sized layers; see benchmarks/README.md), elsewhere `nnx.Conv` (cuDNN / TPU
    convolutions). Both hold the same parameters, so checkpoints move between backends.
    Initialised like `torch.nn.Conv2d`. The returned module maps [B, H, W, in_features] to
    [B, H + 2 * padding - kernel_size + 1, ..., out_features] and holds `kernel`
    [kernel_size, kernel_size, in_features, out_features] and, with `use_bias`, `bias`
    [out_features].
    """
    module = PatchConv if conv_impl_for_backend() == "patches" else nnx.Conv
    return module(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        padding=((padding, padding), (padding, padding)),
        use_bias=use_bias,
        kernel_init=TORCH_KERNEL_INIT,
        bias_init=torch_bias_init(in_features * kernel_size * kernel_size),
        rngs=rngs,
    )


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution of the feature extractor.

    Attributes:
        features: output channels.
        padding: zero padding on every side (torch's `padding=`).
        pool: whether a 2x2, stride-2 pooling (`LeNetConfig.pool`) follows the ReLU.
    """

    features: int
    padding: int = 0
    pool: bool = True


@dataclasses.dataclass(frozen=True)
class LeNetConfig:
    """A LeNet-5 variant: convolutions (+ optional batch norm) -> ReLU -> pool, then FC layers.

    Each block is conv -> BatchNorm (if `batch_norm`) -> ReLU -> 2x2/2 pool (if `ConvSpec.pool`).
    The feature map is then flattened (in NHWC order) and fed through `hidden` ReLU layers and a
    linear head. With `dropout_rate > 0`, dropout is applied to the input of every FC layer
    (fc1, fc2, ..., head). With `batch_norm`, convolutions have no bias (BatchNorm's own bias
    replaces it); BatchNorm uses eps 1e-5 and Flax momentum 0.9 (torch momentum 0.1).

    Attributes:
        in_channels: image channels (3 for CIFAR-10, 1 for MNIST).
        image_size: height = width of the input images.
        convs: the convolutions, in order.
        kernel_size: square kernel size of every convolution.
        pool: "max" or "avg".
        hidden: widths of the hidden FC layers.
        num_classes: number of logits; 1 means a single binary logit.
        batch_norm: BatchNorm after every convolution.
        dropout_rate: dropout probability before every FC layer; 0 disables dropout.
    """

    in_channels: int = 3
    image_size: int = 32
    convs: tuple[ConvSpec, ...] = (ConvSpec(6), ConvSpec(16))
    kernel_size: int = 5
    pool: str = "max"
    hidden: tuple[int, ...] = (120, 84)
    num_classes: int = 1
    batch_norm: bool = False
    dropout_rate: float = 0.0

    def __post_init__(self):
        # Lists are accepted; tuples keep the config hashable (it is static under jit).
        for name in ("convs", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{name} must be a tuple, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        for name in ("in_channels", "image_size", "kernel_size", "num_classes"):
            if not is_positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.convs or not all(isinstance(c, ConvSpec) for c in self.convs):
            raise ValueError(f"convs must be a non-empty tuple of ConvSpec, got {self.convs!r}")
        for c in self.convs:
            if not is_positive_int(c.features) or not isinstance(c.padding, int) or c.padding < 0:
                raise ValueError(f"convs: bad {c!r} (features >= 1 and padding >= 0 expected)")
        check_positive_ints("hidden", self.hidden, allow_empty=True)
        if self.pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {self.pool!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        sizes = self.feature_sizes()
        if min(sizes) < 1:
            raise ValueError(
                f"image_size {self.image_size} is too small for these convs: spatial sizes "
                f"after each block would be {sizes}"
            )

    def feature_sizes(self) -> tuple[int, ...]:
        """Height (= width) of the feature map after each conv block (conv, then pool)."""
        size, sizes = self.image_size, []
        for c in self.convs:
            size = size + 2 * c.padding - self.kernel_size + 1
            if c.pool:
                size //= 2
            sizes.append(size)
        return tuple(sizes)

    @property
    def flat_features(self) -> int:
        """Size of the flattened feature map that feeds the first FC layer."""
        return self.feature_sizes()[-1] ** 2 * self.convs[-1].features

    @classmethod
    def birdcat(cls) -> LeNetConfig:
        """(a) CIFAR-10 bird vs cat: conv 3->6 k5, max-pool, conv 6->16 k5, max-pool, 120, 84, 1.

        61,241 parameters, as the first original notebook's `LeNet5`.
        """
        return cls()

    @classmethod
    def lenet5_bn(cls) -> LeNetConfig:
        """(b) `birdcat` with BatchNorm after each conv and dropout 0.3 before each FC layer.

        The second original names "dropout + batch norm" without placement or rates; these are
        the usual choices for a net this small.
        """
        return cls(batch_norm=True, dropout_rate=0.3)

    @classmethod
    def mnist_cnn(cls) -> LeNetConfig:
        """(c) MNIST CNN on 28x28x1: conv 6 k5 pad 2, max-pool, conv 16 k5, max-pool, 120, 84, 10.

        61,706 parameters, as the MNIST practice notebook's `CNN`.
        """
        return cls(
            in_channels=1,
            image_size=28,
            convs=(ConvSpec(6, padding=2), ConvSpec(16)),
            num_classes=10,
        )

    @classmethod
    def classic(cls) -> LeNetConfig:
        """(d) Classic LeNet-5 on 32x32x1: conv 6 k5, avg-pool, conv 16 k5, avg-pool, conv 120 k5,
        84, 10.

        61,706 parameters, as the classic-LeNet notebook's `LeNet`.
        """
        return cls(
            in_channels=1,
            convs=(ConvSpec(6), ConvSpec(16), ConvSpec(120, pool=False)),
            pool="avg",
            hidden=(84,),
            num_classes=10,
        )

    @classmethod
    def preset(cls, name: str) -> LeNetConfig:
        """The preset called `name`, one of `PRESETS`."""
        if name not in PRESETS:
            raise ValueError(f"name must be one of {PRESETS}, got {name!r}")
        return getattr(cls, name)()


class LeNet5(nnx.Module):
    """A LeNet-5 family network (see `LeNetConfig` and its presets).

    Top-level submodules: `conv1`, `conv2`, ... (one per `ConvSpec`), `bn1`, `bn2`, ... (with
    `batch_norm`), `fc1`, `fc2`, ... (hidden FC layers), `head` (`LeNet5.head_name`) and
    `dropout` (or None). Train / eval mode: `model.train()` / `model.eval()` (or `nnx.view`)
    switch BatchNorm between batch and running statistics and turn dropout on and off.

    Args:
        config: the architecture; defaults to `LeNetConfig.birdcat()`.
        rngs: parameter initialisation keys.
    """

    head_name = "head"

    def __init__(self, config: LeNetConfig | None = None, *, rngs: nnx.Rngs):
        config = LeNetConfig() if config is None else config
        if not isinstance(config, LeNetConfig):
            raise TypeError(f"config must be a LeNetConfig, got {type(config).__name__}")
        self.config = config
        channels = config.in_channels
        for i, spec in enumerate(config.convs, start=1):
            layer = conv(
                channels,
                spec.features,
                config.kernel_size,
                padding=spec.padding,
                use_bias=not config.batch_norm,
                rngs=rngs,
            )
            setattr(self, f"conv{i}", layer)
            if config.batch_norm:
                setattr(self, f"bn{i}", nnx.BatchNorm(spec.features, momentum=0.9, rngs=rngs))
            channels = spec.features
        width = config.flat_features
        for i, features in enumerate(config.hidden, start=1):
            setattr(self, f"fc{i}", dense(width, features, rngs=rngs))
            width = features
        self.head = dense(width, config.num_classes, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate) if config.dropout_rate > 0 else None

    @classmethod
    def birdcat(cls, *, rngs: nnx.Rngs) -> LeNet5:
        """`LeNet5(LeNetConfig.birdcat(), rngs=rngs)`."""
        return cls(LeNetConfig.birdcat(), rngs=rngs)

    @classmethod
    def lenet5_bn(cls, *, rngs: nnx.Rngs) -> LeNet5:
        """`LeNet5(LeNetConfig.lenet5_bn(), rngs=rngs)`."""
        return cls(LeNetConfig.lenet5_bn(), rngs=rngs)

    @classmethod
    def mnist_cnn(cls, *, rngs: nnx.Rngs) -> LeNet5:
        """`LeNet5(LeNetConfig.mnist_cnn(), rngs=rngs)`."""
        return cls(LeNetConfig.mnist_cnn(), rngs=rngs)

    @classmethod
    def classic(cls, *, rngs: nnx.Rngs) -> LeNet5:
        """`LeNet5(LeNetConfig.classic(), rngs=rngs)`."""
        return cls(LeNetConfig.classic(), rngs=rngs)

    def _pool(self, h: jax.Array, *, patches: bool) -> jax.Array:
        """2x2/2 pooling: reshape-based next to PatchConv (CPU), reduce_window elsewhere."""
        if patches:
            return max_pool_2x2(h) if self.config.pool == "max" else avg_pool_2x2(h)
        pool = nnx.max_pool if self.config.pool == "max" else nnx.avg_pool
        return pool(h, (2, 2), strides=(2, 2))

    def _channel_major(self) -> bool:
        """Whether the blocks run channel-major: every one PatchConv -> ReLU -> max-pool."""
        cfg = self.config
        return (
            cfg.pool == "max"
            and not cfg.batch_norm
            and all(spec.pool for spec in cfg.convs)
            and all(
                isinstance(getattr(self, f"conv{i}"), PatchConv)
                for i in range(1, len(cfg.convs) + 1)
            )
        )

    def _features(self, x: jax.Array) -> jax.Array:
        """The conv blocks: [B, H, W, C] -> [B, H', W', C'] (NHWC, as `nnx.Conv`'s path).

        max-pool(relu(conv + b)) = relu(max-pool(conv) + b), so next to PatchConv the pool is
        computed inside the convolution's matmul (`PatchConv.conv_max_pool`). When every block
        allows it, the blocks run channel-major, batch last ([C, H, W, B],
        `PatchConv.conv_max_pool_chwn`, faster on CPU), between one transpose in and one out.
        """
        cfg = self.config
        if self._channel_major():
            h = x.transpose(3, 1, 2, 0)
            for i in range(1, len(cfg.convs) + 1):
                h = nnx.relu(getattr(self, f"conv{i}").conv_max_pool_chwn(h))
            return h.transpose(3, 1, 2, 0)
        h = x
        for i, spec in enumerate(cfg.convs, start=1):
            layer = getattr(self, f"conv{i}")
            if (
                isinstance(layer, PatchConv)
                and spec.pool
                and cfg.pool == "max"
                and not cfg.batch_norm
            ):
                h = nnx.relu(layer.conv_max_pool(h))
                continue
            h = layer(h)
            if cfg.batch_norm:
                h = getattr(self, f"bn{i}")(h)
            h = nnx.relu(h)
            if spec.pool:
                h = self._pool(h, patches=isinstance(layer, PatchConv))
        return h

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        """Logits of a batch of images.

        Args:
            x: [B, image_size, image_size, in_channels] float32 NHWC images.
            rngs: dropout randomness (an `nnx.Rngs`, whose `dropout` stream or default stream
                is used, or a PRNG key); required in train mode when `dropout_rate > 0`,
                ignored otherwise.

        Returns:
            [B, num_classes] logits.
        """
        cfg = self.config
        expected = (cfg.image_size, cfg.image_size, cfg.in_channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must be NHWC [B, {', '.join(map(str, expected))}], got {x.shape}")
        dropout_on = self.dropout is not None and not self.dropout.deterministic
        if dropout_on and rngs is None:
            raise ValueError(
                "rngs is required in train mode (dropout_rate > 0); pass rngs=nnx.Rngs(...) or a "
                "key, or call model.eval()"
            )
        if isinstance(rngs, jax.Array):
            rngs = nnx.Rngs(dropout=rngs)
        h = self._features(x)
        h = h.reshape(h.shape[0], -1)
        for i in range(1, len(cfg.hidden) + 1):
            if dropout_on:
                h = self.dropout(h, rngs=rngs)
            h = nnx.relu(getattr(self, f"fc{i}")(h))
        if dropout_on:
            h = self.dropout(h, rngs=rngs)
        return self.head(h)
