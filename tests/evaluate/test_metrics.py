"""Every metric against values computed by hand on small explicit arrays."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from clipwise.errors import ConfigError
from clipwise.evaluate.metrics import (
    classification_metrics,
    confusion,
    majority_baseline,
    per_class_report,
    top_confusions,
)

LABELS = ["a", "b", "c", "d"]  # "d" never occurs in y_true
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array(
    [
        [0.70, 0.10, 0.10, 0.10],  # a -> a
        [0.20, 0.50, 0.20, 0.10],  # a -> b
        [0.10, 0.60, 0.20, 0.10],  # b -> b
        [0.10, 0.20, 0.30, 0.40],  # b -> d
        [0.10, 0.10, 0.80, 0.00],  # c -> c
        [0.25, 0.25, 0.40, 0.10],  # c -> c
    ]
)
Y_PRED = np.array([0, 1, 1, 3, 2, 2])


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's UndefinedMetricWarning would mean an absent class leaked
        yield


def test_classification_metrics_by_hand(no_warnings):
    m = classification_metrics(Y_TRUE, PROBS, labels=LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls a=1/2, b=1/2, c=2/2; "d" has no clips and is left out
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # F1: a = 2*1*0.5/1.5 = 2/3, b = 0.5, c = 1, d = 0 (predicted once, never true); all four count
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0 + 0.0) / 4)
    assert m["weighted_f1"] == pytest.approx((2 * (2 / 3) + 2 * 0.5 + 2 * 1.0) / 6)
    assert m["top5_accuracy"] == 1.0  # 4 classes: top-4 always hits
    p_true = [0.7, 0.2, 0.6, 0.2, 0.8, 0.4]
    assert m["log_loss"] == pytest.approx(-sum(math.log(p) for p in p_true) / 6)
    assert m["log_loss"] == pytest.approx(0.870969, abs=1e-6)
    assert m["n"] == 6 and isinstance(m["n"], int)
    assert sorted(m) == sorted(
        ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "top5_accuracy", "log_loss", "n"]
    )


def test_class_absent_and_never_predicted_does_not_lower_scores(no_warnings):
    probs = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(np.array([0, 0, 1, 1]), probs, labels=["x", "y", "z"])
    assert m["accuracy"] == m["balanced_accuracy"] == m["macro_f1"] == m["weighted_f1"] == 1.0


def test_top5_uses_five_of_seven_classes():
    labels = list("abcdefg")
    probs = np.array(
        [
            [0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02],  # true g ranks 7th: miss
            [0.02, 0.30, 0.25, 0.20, 0.10, 0.08, 0.05],  # true e ranks 4th: hit
        ]
    )
    m = classification_metrics(np.array([6, 4]), probs, labels=labels)
    assert m["top5_accuracy"] == 0.5
    assert m["accuracy"] == 0.0


def test_log_loss_clips_zero_probability():
    m = classification_metrics(np.array([1]), np.array([[1.0, 0.0]]), labels=["a", "b"])
    assert m["log_loss"] == pytest.approx(-math.log(1e-7))


def test_per_class_report_by_hand(no_warnings):
    table = per_class_report(Y_TRUE, PROBS, labels=LABELS)
    assert list(table.index) == LABELS and table.index.name == "label"
    np.testing.assert_allclose(table["precision"], [1.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(table["recall"], [0.5, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(table["f1"], [2 / 3, 0.5, 1.0, 0.0])
    assert table["support"].tolist() == [2, 2, 2, 0]


def test_confusion_counts_and_normalised_rows():
    counts = confusion(Y_TRUE, Y_PRED, n_classes=4, normalize=False)
    expected = [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 2, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(counts, expected)
    norm = confusion(Y_TRUE, Y_PRED, n_classes=4, normalize=True)
    np.testing.assert_allclose(norm, [[0.5, 0.5, 0, 0], [0, 0.5, 0, 0.5], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert not np.isnan(norm).any()  # the row of "d" (no clips) is zeros


def test_top_confusions_most_frequent_first():
    assert top_confusions(Y_TRUE, Y_PRED, labels=LABELS) == [("a", "b", 1), ("b", "d", 1)]
    y_true, y_pred = np.array([0, 0, 0, 1, 1, 2]), np.array([1, 1, 2, 0, 0, 2])
    pairs = top_confusions(y_true, y_pred, labels=["a", "b", "c"], k=2)
    assert pairs == [("a", "b", 2), ("b", "a", 2)]
    assert top_confusions(np.array([0, 1]), np.array([0, 1]), labels=["a", "b"]) == []


def test_majority_baseline_by_hand():
    base = majority_baseline(np.array([0, 1, 1, 2, 1, 0]), np.array([1, 1, 0, 2, 2]))
    assert base["class_index"] == 1
    assert base["accuracy"] == pytest.approx(2 / 5)
    assert base["balanced_accuracy"] == pytest.approx(1 / 3)  # recall 1 for b, 0 for a and c


def test_majority_baseline_ties_and_absent_majority():
    assert majority_baseline(np.array([2, 2, 0, 0]), np.array([0]))["class_index"] == 0
    base = majority_baseline(np.array([1, 1, 0]), np.array([0, 2]))
    assert base["accuracy"] == 0.0 and base["balanced_accuracy"] == 0.0


@pytest.mark.parametrize(
    ("y_true", "probs", "match"),
    [
        (np.array([0, 1]), np.ones((2, 3)) / 3, r"shape \(N, 4\)"),
        (np.array([0, 1, 2]), np.ones((2, 4)) / 4, "3 entries but probs has 2 rows"),
        (np.array([0, 4]), np.ones((2, 4)) / 4, r"class index 4, expected an index in \[0, 4\)"),
        (np.array([0.5, 1]), np.ones((2, 4)) / 4, "integer class indices"),
        (np.array([], dtype=int), np.ones((0, 4)), "no clips to score"),
    ],
)
def test_bad_inputs_raise_config_error(y_true, probs, match):
    with pytest.raises(ConfigError, match=match):
        classification_metrics(y_true, probs, labels=LABELS)


def test_confusion_and_baseline_reject_bad_indices():
    with pytest.raises(ConfigError, match="y_pred holds class index -1"):
        confusion(np.array([0]), np.array([-1]), n_classes=2, normalize=False)
    with pytest.raises(ConfigError, match="y_train is empty"):
        majority_baseline(np.array([], dtype=int), np.array([0]))
