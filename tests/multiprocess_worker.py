"""One process of the multi-process runs that tests/test_multiprocess.py starts.

Usage: python multiprocess_worker.py [--coordinator HOST:PORT --num-processes N --process-id I]
  train CHECKPOINTS OUT | birdcat WRITES -- OPTIONS...

With --coordinator, the process joins a run of N processes with `jax.distributed.initialize`
(CPU collectives over gloo); without it, it runs alone. Each process sees the CPU devices that
XLA_FLAGS gives it, and `fit` builds its mesh over the devices of every process.

`train` trains LeNet-5 (bird/cat preset) for one epoch on a small synthetic bird/cat set with
checkpoints in CHECKPOINTS (one folder shared by every process), resumes it for a second epoch
from those checkpoints into a fresh model, reads the second epoch's parameters back with
`restore_model`, and computes the test logits with `predict_logits`. It writes to OUT (.npz):
the process and device counts, both histories, the parameters after each epoch, the restored
parameters and the test logits.

`birdcat` runs `python -m experiments.birdcat OPTIONS...` in this process and writes to WRITES
(JSON) every file the process opened for writing, renamed or replaced, seen by Python's audit
hooks (orbax writes checkpoints through tensorstore, which they do not see).
"""

import argparse
import dataclasses
import json
import os
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxcal import checkpoint, data, models, train  # noqa: E402

# 320 images: 256 train (8 steps of 32 per epoch) and 64 validation.
SPLITS_ARGS = {"max_train": 320, "max_test": 48}
CONFIG = train.TrainConfig(epochs=1, batch_size=32, eval_batch_size=32)
PREPROCESS = data.make_preprocess(*data.CIFAR_MEAN_STD)


def fresh_model() -> models.LeNet5:
    """The bird/cat LeNet-5 with the same initialisation in every process."""
    return models.LeNet5(models.LeNetConfig.birdcat(), rngs=nnx.Rngs(0))


def model_arrays(model: nnx.Module, prefix: str) -> dict[str, np.ndarray]:
    """The model's parameters as numpy arrays keyed by `prefix/path`."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join((prefix, *map(str, path))): np.asarray(v.get_value()) for path, v in flat}


def run(directory: str) -> dict[str, object]:
    """Trains, resumes and predicts as the module docstring says; returns what OUT holds."""
    splits = data.load_birdcat("synthetic", **SPLITS_ARGS)
    train_data = (splits.train.images, splits.train.labels)
    val_data = (splits.val.images, splits.val.labels)
    fit_args = {"preprocess": PREPROCESS, "checkpoint_dir": directory, "progress": False}
    model = fresh_model()
    first = train.fit(model, train_data, val_data, CONFIG, **fit_args)
    out = model_arrays(model, "epoch1")
    resumed = fresh_model()
    second_config = dataclasses.replace(CONFIG, epochs=2)
    second = train.fit(resumed, train_data, val_data, second_config, resume=True, **fit_args)
    out |= model_arrays(resumed, "epoch2")
    out |= model_arrays(checkpoint.restore_model(fresh_model(), directory, epoch=2), "restored")
    logits = train.predict_logits(resumed, splits.test.images, preprocess=PREPROCESS)
    out["logits"] = np.asarray(logits)
    out["history"] = json.dumps({"first": first.to_dict(), "second": second.to_dict()})
    out["counts"] = np.array([jax.process_count(), jax.device_count(), jax.local_device_count()])
    return out


class WriteRecorder:
    """Records, through an audit hook, the paths this process writes from Python."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.active = True
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1] or "", args[2] or 0
            if set(mode) & set("wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                self.paths.append(os.path.abspath(os.fsdecode(args[0])))
        elif event in ("os.rename", "os.replace"):
            self.paths.append(os.path.abspath(os.fsdecode(args[1])))

    def save(self, path: str) -> None:
        self.active = False
        with open(path, "w") as handle:
            json.dump(self.paths, handle)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    modes = parser.add_subparsers(dest="mode", required=True)
    train_mode = modes.add_parser("train")
    train_mode.add_argument("checkpoints")
    train_mode.add_argument("out")
    birdcat_mode = modes.add_parser("birdcat")
    birdcat_mode.add_argument("writes")
    birdcat_mode.add_argument("options", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.coordinator is not None:
        jax.distributed.initialize(
            args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=60,
        )
    if args.mode == "train":
        np.savez(args.out, **run(args.checkpoints))
        return
    from experiments import birdcat

    recorder = WriteRecorder()
    options = args.options[1:] if args.options[:1] == ["--"] else args.options
    birdcat.main(options)
    recorder.save(args.writes)


if __name__ == "__main__":
    main(sys.argv[1:])
