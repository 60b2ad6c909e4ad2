"""A resumable training run that tests/test_checkpoint.py starts in a subprocess and kills.

Usage: python resume_worker.py DIR OUT [--pause-after-save K] [--pause-in-save K]

Trains TinyCNN for EPOCHS epochs with `fit(..., checkpoint_dir=DIR, resume=True)`, printing
`SAVED k` after each checkpoint is on disk; writes the final parameters, batch statistics and
history to OUT (.npz). `--pause-after-save K` sleeps after epoch K's checkpoint is written;
`--pause-in-save K` sleeps inside orbax while epoch K is written, after its files are in the
temporary folder and before the rename that commits it. The test kills the paused process.
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from orbax.checkpoint._src.path import atomicity

from jaxcal import checkpoint, train

EPOCHS = 4


class TinyCNN(nnx.Module):
    """conv -> BatchNorm -> ReLU -> global mean -> Dropout -> fc."""

    def __init__(self, width: int = 4, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, width, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.drop = nnx.Dropout(0.3)
        self.fc = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, x, *, rngs=None):
        h = nnx.relu(self.bn(self.conv(x))).mean((1, 2))
        return self.fc(self.drop(h, rngs=rngs))


def scale(images, key):
    """uint8 -> float32 in [-1, 1], with a random horizontal flip of training batches."""
    x = images.astype(jnp.float32) / 127.5 - 1.0
    if key is None:
        return x
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1], x)


def make_data(n: int, seed: int):
    """uint8 [n, 8, 8, 3] images whose binary class shifts the first channel."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int32)
    images = rng.integers(0, 160, (n, 8, 8, 3))
    images[..., 0] += 90 * labels[:, None, None]
    return images.astype(np.uint8), labels


TRAIN = make_data(120, seed=0)
VAL = make_data(40, seed=1)
CONFIG = train.TrainConfig(
    epochs=EPOCHS, batch_size=20, learning_rate=0.02, patience=10, max_to_keep=2
)


def _announce_saves(pause_after: int | None) -> None:
    original = checkpoint.RunCheckpoints.save

    def save(self, epoch, **kwargs):
        original(self, epoch, **kwargs)
        print(f"SAVED {epoch}", flush=True)
        if epoch == pause_after:
            time.sleep(600)

    checkpoint.RunCheckpoints.save = save


def _pause_inside_save(epoch: int) -> None:
    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
        if self._final_path.name == str(epoch):
            print(f"FINALIZING {epoch}", flush=True)
            time.sleep(600)
        await original(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("out")
    parser.add_argument("--pause-after-save", type=int)
    parser.add_argument("--pause-in-save", type=int)
    args = parser.parse_args(argv)
    _announce_saves(args.pause_after_save)
    if args.pause_in_save is not None:
        _pause_inside_save(args.pause_in_save)
    model = TinyCNN(rngs=nnx.Rngs(0))
    history = train.fit(
        model,
        TRAIN,
        VAL,
        CONFIG,
        preprocess=scale,
        checkpoint_dir=args.directory,
        resume=True,
        progress=False,
    )
    flat = nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.RngState)))
    arrays = {"/".join(map(str, path)): np.asarray(v.get_value()) for path, v in flat}
    np.savez(args.out, history=json.dumps(history.to_dict()), **arrays)


if __name__ == "__main__":
    main(sys.argv[1:])
