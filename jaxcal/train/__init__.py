"""Training: configuration and history, jitted steps, the `fit` loop, eval-mode prediction."""

from jaxcal.data.transforms import Preprocess
from jaxcal.train.config import History, TrainConfig, make_optimizer
from jaxcal.train.loop import fit
from jaxcal.train.predict import Evaluation, evaluate, make_mesh, padded_batches, predict_logits
from jaxcal.train.steps import (
    TrainState,
    create_train_state,
    epoch_batches,
    is_correct,
    make_eval_step,
    make_train_step,
    per_example_loss,
)

__all__ = [
    "Evaluation",
    "History",
    "Preprocess",
    "TrainConfig",
    "TrainState",
    "create_train_state",
    "epoch_batches",
    "evaluate",
    "fit",
    "is_correct",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "padded_batches",
    "per_example_loss",
    "predict_logits",
]
