"""torchvision DenseNet-121's state_dict keys and shapes, written out by hand with numpy.

Shared by the conversion, parity and hub tests; independent of jaxcal's key table, so that a
wrong table cannot agree with itself.
"""

import numpy as np

GROWTH, BLOCKS, BOTTLENECK = 32, (6, 12, 24, 16), 4


def densenet121_shapes(num_classes=1000):
    """torchvision key -> shape, in torchvision's state_dict order (new-style names)."""
    shapes = {"features.conv0.weight": (64, 3, 7, 7)}

    def batch_norm(key, c):
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.{field}"] = (c,)
        shapes[f"{key}.num_batches_tracked"] = ()

    batch_norm("features.norm0", 64)
    width = 64
    for b, layers in enumerate(BLOCKS, start=1):
        for i in range(1, layers + 1):
            key, inp = f"features.denseblock{b}.denselayer{i}", width + (i - 1) * GROWTH
            batch_norm(f"{key}.norm1", inp)
            shapes[f"{key}.conv1.weight"] = (BOTTLENECK * GROWTH, inp, 1, 1)
            batch_norm(f"{key}.norm2", BOTTLENECK * GROWTH)
            shapes[f"{key}.conv2.weight"] = (GROWTH, BOTTLENECK * GROWTH, 3, 3)
        width += layers * GROWTH
        if b < len(BLOCKS):
            batch_norm(f"features.transition{b}.norm", width)
            shapes[f"features.transition{b}.conv.weight"] = (width // 2, width, 1, 1)
            width //= 2
    batch_norm("features.norm5", width)
    shapes["classifier.weight"] = (num_classes, width)
    shapes["classifier.bias"] = (num_classes,)
    return shapes


def random_state_dict(shapes, seed):
    """Random float32 values for `shapes` that keep activations O(1) through every layer.

    BatchNorm statistics are random too, so a conversion that ignored them would show;
    `num_batches_tracked` entries are int64 scalars, as torch writes them.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = np.array(rng.integers(1, 1000), np.int64)
            continue
        if len(shape) == 4:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif len(shape) == 2:
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 2.0, shape)
        elif key.endswith("weight"):  # BatchNorm scale
            value = rng.uniform(0.5, 1.0, shape)
        else:  # BatchNorm bias, running_mean, head bias
            value = rng.normal(0.0, 0.2, shape)
        out[key] = value.astype(np.float32)
    return out
