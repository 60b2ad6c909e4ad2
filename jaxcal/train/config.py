"""What `fit` is told (TrainConfig) and what it measured (History); the optimiser they name."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import optax

from jaxcal._checks import check_float, check_int

_OPTIMIZERS = ("adam", "adamw", "sgd")
_MONITORS = ("val_loss", "val_accuracy")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How `fit` trains. The defaults are the first original notebook's (Adam 1e-3, batch 64,
    10 epochs).

    Attributes:
      epochs: number of passes over the training set.
      batch_size: global batch size (split over devices; must divide by the device count). The
        ragged last batch of an epoch is dropped so every step has the same shape; a new
        permutation each epoch means every example is still seen.
      optimizer: "adam", "adamw" (decoupled weight decay) or "sgd".
      learning_rate: step size.
      momentum: SGD momentum (0 = plain SGD); ignored by Adam.
      weight_decay: for "adam" and "sgd", L2 added to the gradient (PyTorch's `weight_decay`);
        for "adamw", decoupled decay.
      trainable: None trains every `nnx.Param`; a tuple of top-level submodule names (e.g.
        ("fc",) or ("layer4", "fc")) trains only those. The other submodules are frozen: their
        parameters never move, have no optimiser state, and they run in eval mode (BatchNorm
        uses and keeps its running statistics, Dropout is off).
      patience: stop after this many epochs without improvement of `monitor` and restore the
        best epoch's parameters; None trains all epochs and keeps the last ones.
      monitor: "val_loss" (lower is better) or "val_accuracy" (higher is better).
      seed: seeds the per-epoch permutations, augmentation and dropout.
      eval_batch_size: batch size for validation.
      steps_per_call: training steps fused into one jitted call with `lax.scan`. None picks
        per backend and model (`jaxcal.models.conv.steps_per_call_for`): 8, except 1 on CPU
        for models with XLA convolutions (XLA:CPU compiles their gradients inside loops into
        slow kernels); then a divisor of the epoch's steps down to half that, when there is
        one, so no second program runs the steps left over (`loop.steps_dividing_the_epoch`).
      max_to_keep: how many latest epoch checkpoints to keep (the best one is kept besides).
      micro_batch_size: examples per forward and backward pass within a step (must divide
        batch_size, and by the device count); their gradients are summed into the step's one
        update, so it is the same step up to float32 rounding. None picks per backend and model
        (`jaxcal.models.conv.micro_batch_for`): micro-batches of up to 128 for a PatchConv model
        on one CPU device, whose temporaries at larger batches cost page faults and cache
        misses; the whole batch otherwise. Refused with BatchNorm layers in training mode.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    trainable: tuple[str, ...] | None = None
    patience: int | None = None
    monitor: str = "val_loss"
    seed: int = 0
    eval_batch_size: int = 256
    steps_per_call: int | None = None
    max_to_keep: int = 3
    micro_batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "max_to_keep"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, minimum=None)
        for name in ("patience", "steps_per_call", "micro_batch_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size must divide batch_size {self.batch_size}, "
                f"got {self.micro_batch_size}"
            )
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.monitor not in _MONITORS:
            raise ValueError(f"monitor must be one of {_MONITORS}, got {self.monitor!r}")
        check_float("learning_rate", self.learning_rate, positive=True)
        check_float("momentum", self.momentum)
        check_float("weight_decay", self.weight_decay)
        if self.trainable is not None:
            if isinstance(self.trainable, str) or not isinstance(self.trainable, (tuple, list)):
                raise TypeError(
                    f"trainable must be None or a tuple of submodule names such as ('fc',), "
                    f"got {self.trainable!r}"
                )
            if not self.trainable or not all(isinstance(n, str) for n in self.trainable):
                raise ValueError(f"trainable must hold at least one name, got {self.trainable!r}")
            object.__setattr__(self, "trainable", tuple(self.trainable))

    def to_json(self) -> dict[str, Any]:
        """The configuration as plain JSON types (what a checkpoint records)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(eq=False)
class History:
    """What `fit` measured.

    Attributes:
      step_loss: [num_steps] training loss of every step (train mode, before the update).
      step_accuracy: [num_steps] training accuracy of every step's batch.
      steps_per_epoch: steps in one epoch.
      train_loss: per epoch, the mean of its step losses.
      train_accuracy: per epoch, the mean of its step accuracies.
      val_loss: per epoch, mean validation loss in eval mode (empty without validation data).
      val_accuracy: per epoch, validation accuracy (empty without validation data).
      best_epoch: 1-based epoch with the best `monitor` value, None without validation data.
      stopped_early: whether early stopping ended the run before `epochs`.
      micro_batch_size: the micro-batches this `fit` call ran each batch in (see
        `TrainConfig.micro_batch_size`); None when it ran whole batches.
    """

    step_loss: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    step_accuracy: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    steps_per_epoch: int = 0
    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_accuracy: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    val_accuracy: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    micro_batch_size: int | None = None

    def record_train(self, metrics: np.ndarray) -> None:
        """Appends one epoch's training metrics: float32 [steps, 2] of (loss, accuracy)."""
        self.step_loss = np.concatenate([self.step_loss, metrics[:, 0]])
        self.step_accuracy = np.concatenate([self.step_accuracy, metrics[:, 1]])
        self.train_loss.append(float(np.mean(metrics[:, 0])))
        self.train_accuracy.append(float(np.mean(metrics[:, 1])))

    def record_validation(self, means: np.ndarray, config: TrainConfig) -> bool:
        """Appends validation (loss, accuracy) `means` [2] of the epoch just recorded, updates
        the best epoch and early stopping; returns whether this epoch is the best so far."""
        self.val_loss.append(float(means[0]))
        self.val_accuracy.append(float(means[1]))
        higher = config.monitor == "val_accuracy"
        values = self.val_accuracy if higher else self.val_loss
        improved = self.best_epoch is None or (
            values[-1] > values[self.best_epoch - 1]
            if higher
            else values[-1] < values[self.best_epoch - 1]
        )
        if improved:
            self.best_epoch = self.epochs_run
        if config.patience is not None and self.epochs_run - self.best_epoch >= config.patience:
            self.stopped_early = True
        return improved

    @property
    def epochs_run(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (arrays become lists)."""
        return {
            "step_loss": [float(x) for x in self.step_loss],
            "step_accuracy": [float(x) for x in self.step_accuracy],
            "steps_per_epoch": self.steps_per_epoch,
            "train_loss": list(self.train_loss),
            "train_accuracy": list(self.train_accuracy),
            "val_loss": list(self.val_loss),
            "val_accuracy": list(self.val_accuracy),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "epochs_run": self.epochs_run,
            "micro_batch_size": self.micro_batch_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """The inverse of `to_dict`."""
        return cls(
            step_loss=np.asarray(data["step_loss"], np.float32),
            step_accuracy=np.asarray(data["step_accuracy"], np.float32),
            steps_per_epoch=int(data["steps_per_epoch"]),
            train_loss=list(data["train_loss"]),
            train_accuracy=list(data["train_accuracy"]),
            val_loss=list(data["val_loss"]),
            val_accuracy=list(data["val_accuracy"]),
            best_epoch=data["best_epoch"],
            stopped_early=bool(data["stopped_early"]),
            micro_batch_size=data.get("micro_batch_size"),
        )


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax transformation `config` names (PyTorch semantics for `weight_decay`)."""
    if config.optimizer == "adamw":
        return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        base = optax.adam(config.learning_rate)
    else:
        base = optax.sgd(config.learning_rate, momentum=config.momentum or None)
    if config.weight_decay:
        return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
    return base
