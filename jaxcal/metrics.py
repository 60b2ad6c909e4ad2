"""Classification metrics in numpy: confusion matrix, precision/recall/F1, ROC curve and AUC."""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from jaxcal._checks import check_int


class PrecisionRecallF1(NamedTuple):
    """Precision, recall and F1 score, each a Python float in [0, 1]."""

    precision: float
    recall: float
    f1: float


def _class_ids(values: ArrayLike, name: str) -> np.ndarray:
    """Returns `values` as a 1-D int64 array, or raises if it is not a vector of class ids."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise TypeError(f"{name} must hold integer class ids, got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"{name} must be non-negative class ids, got {array.min()}")
    return array.astype(np.int64)


def _paired(labels: ArrayLike, predictions: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validates labels and predictions as class-id vectors of the same length."""
    labels = _class_ids(labels, "labels")
    predictions = _class_ids(predictions, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions must have the same length, got {labels.shape[0]} "
            f"and {predictions.shape[0]}"
        )
    return labels, predictions


def _check_classes(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> None:
    """num_classes an int >= 1 and both arrays in [0, num_classes)."""
    check_int("num_classes", num_classes)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.max() >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes}) for num_classes={num_classes}, "
                f"got {values.max()}"
            )


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
      labels: [N] int true classes in [0, num_classes).
      predictions: [N] int predicted classes in [0, num_classes).
      num_classes: K, the number of classes.

    Returns:
      [K, K] int64 matrix whose entry [i, j] counts samples of true class i predicted as j
      (scikit-learn's layout: rows are true classes, columns are predictions).
    """
    labels, predictions = _paired(labels, predictions)
    _check_classes(labels, predictions, num_classes)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def precision_recall_f1(
    labels: ArrayLike,
    predictions: ArrayLike,
    *,
    average: Literal["binary", "macro"] = "binary",
    positive: int = 1,
    num_classes: int | None = None,
) -> PrecisionRecallF1:
    """Precision, recall and F1 of hard predictions.

    A ratio whose denominator is zero (e.g. precision when nothing is predicted positive) is 0,
    as scikit-learn's default `zero_division` gives. F1 is 2 TP / (2 TP + FP + FN).

    Args:
      labels: [N] int true classes.
      predictions: [N] int predicted classes.
      average: "binary" scores the class `positive` against the other, and needs labels and
        predictions in {0, 1}; "macro" averages the per-class scores with equal weight.
      positive: the positive class for average="binary", 0 or 1.
      num_classes: for average="macro", K: average over classes 0..K-1 (all labels and
        predictions must be below K). None averages over the classes that occur in labels or
        predictions, as scikit-learn does.

    Returns:
      PrecisionRecallF1 of Python floats.
    """
    if average not in ("binary", "macro"):
        raise ValueError(f"average must be 'binary' or 'macro', got {average!r}")
    labels, predictions = _paired(labels, predictions)
    if average == "binary":
        if isinstance(positive, bool) or positive not in (0, 1):
            raise ValueError(f"positive must be 0 or 1 for average='binary', got {positive!r}")
        if num_classes is not None:
            raise ValueError("num_classes is only used with average='macro'")
        for name, values in (("labels", labels), ("predictions", predictions)):
            if values.max() > 1:
                raise ValueError(
                    f"average='binary' needs {name} in {{0, 1}}, got {values.max()}; "
                    "use average='macro' for more classes"
                )
        classes = np.array([positive])
    elif num_classes is None:
        classes = np.union1d(labels, predictions)
    else:
        _check_classes(labels, predictions, num_classes)
        classes = np.arange(num_classes)

    size = int(max(labels.max(), predictions.max(), classes.max())) + 1
    true_positive = np.bincount(labels[labels == predictions], minlength=size)[classes]
    predicted = np.bincount(predictions, minlength=size)[classes]
    actual = np.bincount(labels, minlength=size)[classes]
    precision = _ratio(true_positive, predicted)
    recall = _ratio(true_positive, actual)
    f1 = _ratio(2 * true_positive, predicted + actual)
    return PrecisionRecallF1(float(precision.mean()), float(recall.mean()), float(f1.mean()))


def per_class_accuracy(labels: ArrayLike, predictions: ArrayLike, num_classes: int) -> np.ndarray:
    """Fraction of each true class that is predicted correctly (per-class recall).

    Args:
      labels: [N] int true classes in [0, num_classes).
      predictions: [N] int predicted classes in [0, num_classes).
      num_classes: K, the number of classes.

    Returns:
      [K] float64 accuracies; NaN for a class with no samples in `labels`, whose accuracy is
      undefined.
    """
    matrix = confusion_matrix(labels, predictions, num_classes)
    support = matrix.sum(axis=1)
    correct = np.diag(matrix).astype(np.float64)
    return np.divide(correct, support, out=np.full(num_classes, np.nan), where=support > 0)


def _binary_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validates binary labels with both classes present and finite [N] scores."""
    labels = _class_ids(labels, "labels")
    if labels.max() > 1:
        raise ValueError(f"labels must be binary (0 or 1), got {labels.max()}")
    if labels.min() == labels.max():
        raise ValueError(
            f"labels must contain both classes for a ROC curve, got only class {labels[0]}"
        )
    scores = np.asarray(scores)
    if scores.ndim != 1:
        hint = " (for two columns pass the positive column)" if scores.ndim == 2 else ""
        raise ValueError(f"scores must be a 1-D array [N], got shape {scores.shape}{hint}")
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise TypeError(f"scores must be real numbers, got dtype {scores.dtype}")
    if scores.shape != labels.shape:
        raise ValueError(
            f"labels and scores must have the same length, got {labels.shape[0]} "
            f"and {scores.shape[0]}"
        )
    scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite (no NaN or infinity)")
    return labels, scores


def roc_curve(
    labels: ArrayLike, scores: ArrayLike, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic: false and true positive rates at each threshold.

    Samples with equal scores enter together, so ties give one (diagonal) step, as in
    scikit-learn's `roc_curve`, whose output this matches.

    Args:
      labels: [N] int binary labels (1 is the positive class); both classes must occur.
      scores: [N] float scores that grow with the positive class: P(y = 1) or its logit.
      drop_intermediate: drop thresholds whose point lies on a straight segment between its
        neighbours (the curve and its area are unchanged).

    Returns:
      fpr: [M] false positive rates, non-decreasing from 0 to 1.
      tpr: [M] true positive rates, non-decreasing from 0 to 1.
      thresholds: [M] decreasing; point i predicts positive where score >= thresholds[i].
        thresholds[0] is +inf (nothing predicted positive).
    """
    labels, scores = _binary_scores(labels, scores)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    # The last index of each run of equal scores is where a threshold can sit.
    ends = np.flatnonzero(np.diff(sorted_scores) != 0)
    ends = np.append(ends, scores.size - 1)
    true_positives = np.cumsum(labels[order])[ends]
    false_positives = ends + 1 - true_positives
    thresholds = sorted_scores[ends]
    if drop_intermediate and ends.size > 2:
        bends = (np.diff(false_positives, 2) != 0) | (np.diff(true_positives, 2) != 0)
        keep = np.concatenate([[True], bends, [True]])
        true_positives = true_positives[keep]
        false_positives = false_positives[keep]
        thresholds = thresholds[keep]
    true_positives = np.concatenate([[0], true_positives])
    false_positives = np.concatenate([[0], false_positives])
    thresholds = np.concatenate([[np.inf], thresholds])
    fpr = false_positives / false_positives[-1]
    tpr = true_positives / true_positives[-1]
    return fpr, tpr, thresholds


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (trapezoid rule; a tie between classes counts one half).

    Args:
      labels: [N] int binary labels (1 is the positive class); both classes must occur.
      scores: [N] float scores that grow with the positive class: P(y = 1) or its logit.

    Returns:
      The AUC as a Python float in [0, 1]: the probability that a random positive scores above
      a random negative.
    """
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
