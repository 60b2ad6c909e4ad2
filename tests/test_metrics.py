"""Tests for jaxcal.metrics: known answers, parity with scikit-learn, and bad inputs."""

import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcal import metrics

# Counts are exact; float ratios are computed in float64 by both sides, so 1e-12 is loose.
TOL = 1e-12


@st.composite
def class_pairs(draw, max_classes=5, max_size=60):
    """(labels, predictions, num_classes) with values in [0, num_classes)."""
    num_classes = draw(st.integers(1, max_classes))
    size = draw(st.integers(1, max_size))
    ids = st.lists(st.integers(0, num_classes - 1), min_size=size, max_size=size)
    return np.array(draw(ids)), np.array(draw(ids)), num_classes


@st.composite
def binary_scored(draw, max_size=60):
    """(labels, scores) with both classes present and scores on a coarse grid (many ties)."""
    size = draw(st.integers(2, max_size))
    labels = draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))
    labels[0], labels[1] = 0, 1
    levels = draw(st.integers(1, 8))
    scores = draw(st.lists(st.integers(0, levels), min_size=size, max_size=size))
    return np.array(labels), np.array(scores, dtype=np.float64) / levels


def test_confusion_matrix_known_answer():
    labels = [0, 0, 1, 2, 2, 2]
    predictions = [0, 1, 1, 2, 0, 2]
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, predictions, 3), expected)


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=60, deadline=None)
@given(class_pairs())
def test_confusion_matrix_matches_sklearn(pair):
    labels, predictions, k = pair
    ours = metrics.confusion_matrix(labels, predictions, k)
    theirs = skm.confusion_matrix(labels, predictions, labels=np.arange(k))
    np.testing.assert_array_equal(ours, theirs)
    assert ours.sum() == labels.size


def test_accepts_jax_arrays():
    labels = jnp.array([0, 1, 1, 0], dtype=jnp.int32)
    predictions = jnp.array([0, 1, 0, 0], dtype=jnp.int32)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(labels, predictions, 2), [[2, 0], [1, 1]]
    )
    result = metrics.precision_recall_f1(labels, predictions)
    assert result == pytest.approx((1.0, 0.5, 2 / 3), abs=TOL)
    assert metrics.roc_auc(labels, jnp.array([0.1, 0.9, 0.6, 0.4])) == pytest.approx(1.0)


def test_precision_recall_f1_known_answer():
    # TP = 2, FP = 1, FN = 2.
    labels = [1, 1, 1, 1, 0, 0]
    predictions = [1, 1, 0, 0, 1, 0]
    result = metrics.precision_recall_f1(labels, predictions)
    assert result.precision == pytest.approx(2 / 3, abs=TOL)
    assert result.recall == pytest.approx(0.5, abs=TOL)
    assert result.f1 == pytest.approx(4 / 7, abs=TOL)
    # Class 0 as positive: TP = 1, FP = 2, FN = 1.
    assert metrics.precision_recall_f1(labels, predictions, positive=0) == pytest.approx(
        (1 / 3, 0.5, 0.4), abs=TOL
    )


def test_precision_with_no_positive_predictions_is_zero():
    result = metrics.precision_recall_f1([1, 0, 1], [0, 0, 0])
    assert result == (0.0, 0.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(class_pairs(max_classes=2), st.integers(0, 1))
def test_binary_matches_sklearn(pair, positive):
    labels, predictions, _ = pair
    ours = metrics.precision_recall_f1(labels, predictions, positive=positive)
    p, r, f, _ = skm.precision_recall_fscore_support(
        labels, predictions, average="binary", pos_label=positive, labels=[0, 1], zero_division=0
    )
    assert ours == pytest.approx((p, r, f), abs=TOL)


@settings(max_examples=60, deadline=None)
@given(class_pairs())
def test_macro_matches_sklearn(pair):
    labels, predictions, k = pair
    ours_present = metrics.precision_recall_f1(labels, predictions, average="macro")
    p, r, f, _ = skm.precision_recall_fscore_support(
        labels, predictions, average="macro", zero_division=0
    )
    assert ours_present == pytest.approx((p, r, f), abs=TOL)
    ours_all = metrics.precision_recall_f1(labels, predictions, average="macro", num_classes=k)
    p, r, f, _ = skm.precision_recall_fscore_support(
        labels, predictions, average="macro", labels=np.arange(k), zero_division=0
    )
    assert ours_all == pytest.approx((p, r, f), abs=TOL)


def test_per_class_accuracy_known_answer_and_missing_class():
    accuracy = metrics.per_class_accuracy([0, 0, 0, 2, 2], [0, 1, 0, 2, 0], 3)
    np.testing.assert_allclose(accuracy[[0, 2]], [2 / 3, 1 / 2], atol=TOL)
    assert np.isnan(accuracy[1])


@settings(max_examples=40, deadline=None)
@given(class_pairs())
def test_per_class_accuracy_is_sklearn_recall(pair):
    labels, predictions, k = pair
    ours = metrics.per_class_accuracy(labels, predictions, k)
    recall = skm.recall_score(
        labels, predictions, labels=np.arange(k), average=None, zero_division=0
    )
    present = np.isin(np.arange(k), labels)
    np.testing.assert_allclose(ours[present], recall[present], atol=TOL)
    assert np.all(np.isnan(ours[~present]))


def test_roc_curve_known_answer_with_ties():
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.4, 0.8, 0.8, 0.9]
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.4, 0.1])
    # Trapezoids: 1/6 + 5/18 + 1/3 = 7/9 (a tie across classes counts one half).
    assert metrics.roc_auc(labels, scores) == pytest.approx(7 / 9, abs=TOL)


@settings(max_examples=100, deadline=None)
@given(binary_scored(), st.booleans())
def test_roc_curve_matches_sklearn(data, drop):
    labels, scores = data
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores, drop_intermediate=drop)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(labels, scores, drop_intermediate=drop)
    np.testing.assert_allclose(fpr, sk_fpr, atol=TOL)
    np.testing.assert_allclose(tpr, sk_tpr, atol=TOL)
    np.testing.assert_array_equal(thresholds, sk_thresholds)


@settings(max_examples=100, deadline=None)
@given(binary_scored())
def test_roc_auc_matches_sklearn_and_is_invariant_to_the_logit(data):
    labels, scores = data
    auc = metrics.roc_auc(labels, scores)
    assert auc == pytest.approx(skm.roc_auc_score(labels, scores), abs=TOL)
    # P(y = 1) and its logit rank the samples alike, so the AUC is the same.
    probabilities = np.clip(scores, 0.01, 0.99)
    logits = np.log(probabilities) - np.log1p(-probabilities)
    assert metrics.roc_auc(labels, logits) == pytest.approx(
        metrics.roc_auc(labels, probabilities), abs=TOL
    )


def test_roc_auc_extremes():
    labels = [0, 0, 1, 1]
    assert metrics.roc_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: metrics.confusion_matrix([0, 1], [0], 2), ValueError, "same length"),
        (lambda: metrics.confusion_matrix([0, 2], [0, 1], 2), ValueError, "labels must lie"),
        (lambda: metrics.confusion_matrix([0, 1], [0, 5], 2), ValueError, "predictions must"),
        (lambda: metrics.confusion_matrix([0, -1], [0, 1], 2), ValueError, "non-negative"),
        (lambda: metrics.confusion_matrix([0.0, 1.0], [0, 1], 2), TypeError, "integer"),
        (lambda: metrics.confusion_matrix([[0, 1]], [[0, 1]], 2), ValueError, "1-D"),
        (lambda: metrics.confusion_matrix([], [], 2), ValueError, "empty"),
        (lambda: metrics.confusion_matrix([0], [0], 0), ValueError, "num_classes"),
        (lambda: metrics.confusion_matrix([0], [0], 2.0), TypeError, "num_classes"),
        (lambda: metrics.precision_recall_f1([0, 2], [0, 1]), ValueError, "average='macro'"),
        (lambda: metrics.precision_recall_f1([0, 1], [0, 1], average="micro"), ValueError, "av"),
        (lambda: metrics.precision_recall_f1([0, 1], [0, 1], positive=2), ValueError, "positive"),
        (
            lambda: metrics.precision_recall_f1([0, 1], [0, 1], num_classes=2),
            ValueError,
            "num_classes",
        ),
        (
            lambda: metrics.precision_recall_f1([0, 3], [0, 1], average="macro", num_classes=3),
            ValueError,
            "labels must lie",
        ),
        (lambda: metrics.per_class_accuracy([0, 1], [0, 1, 1], 2), ValueError, "same length"),
        (lambda: metrics.roc_curve([1, 1, 1], [0.1, 0.2, 0.3]), ValueError, "both classes"),
        (lambda: metrics.roc_curve([0, 1, 2], [0.1, 0.2, 0.3]), ValueError, "binary"),
        (lambda: metrics.roc_curve([0, 1], [0.1]), ValueError, "same length"),
        (lambda: metrics.roc_curve([0, 1], [0.1, np.nan]), ValueError, "finite"),
        (lambda: metrics.roc_curve([0, 1], [[0.9, 0.1], [0.2, 0.8]]), ValueError, "positive col"),
        (lambda: metrics.roc_auc([0, 1], ["a", "b"]), TypeError, "real numbers"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
