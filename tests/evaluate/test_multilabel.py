"""Multi-label metrics against values worked out by hand, and lwlrap against its definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipwise.errors import ConfigError
from clipwise.evaluate.multilabel import lwlrap, multilabel_metrics, per_class_average_precision, tune_thresholds

TRUTH = np.array([[1, 0, 0], [0, 1, 1]])
SCORES = np.array([[0.9, 0.5, 0.2], [0.8, 0.7, 0.1]])


def test_lwlrap_by_hand():
    # clip 1: its one label ranks first -> 1. clip 2: label 1 ranks 2nd with 1 true label at or above -> 1/2;
    # label 2 ranks 3rd with 2 true labels at or above -> 2/3. Three (clip, label) pairs weigh equally:
    assert lwlrap(TRUTH, SCORES) == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    # (scikit-learn's LRAP weighs clips equally instead: (1 + (1/2 + 2/3) / 2) / 2 = 0.7917)


def test_lwlrap_perfect_and_worst_and_clips_without_labels():
    assert lwlrap(TRUTH, TRUTH.astype(float)) == 1.0
    # one label per clip, always ranked last of 4: precision 1/4 each
    y = np.eye(4, dtype=int)
    assert lwlrap(y, 1.0 - np.eye(4)) == pytest.approx(0.25)
    # a clip with no true label carries no weight
    assert lwlrap(np.vstack([TRUTH, [0, 0, 0]]), np.vstack([SCORES, [0.1, 0.9, 0.3]])) == lwlrap(TRUTH, SCORES)


def test_all_absent_predictions_look_accurate_but_score_low_lwlrap():
    rng = np.random.default_rng(0)
    y = np.zeros((200, 40), dtype=int)
    y[np.arange(200), rng.integers(0, 40, 200)] = 1
    scores = rng.random((200, 40)) * 0.01  # "absent" everywhere, no information
    cell_accuracy = ((scores >= 0.5) == y).mean()
    assert cell_accuracy > 0.97
    assert lwlrap(y, scores) < 0.25


def _lwlrap_by_definition(y: np.ndarray, s: np.ndarray) -> float:
    precisions = []
    for yi, si in zip(y, s):
        for c in np.flatnonzero(yi):
            at_or_above = si >= si[c]
            precisions.append(yi[at_or_above].sum() / at_or_above.sum())
    return float(np.mean(precisions))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 12), st.integers(2, 30))
def test_lwlrap_matches_its_definition(seed, n_classes, n_clips):
    rng = np.random.default_rng(seed)
    y = (rng.random((n_clips, n_classes)) < 0.3).astype(int)
    y[np.arange(n_clips), rng.integers(0, n_classes, n_clips)] = 1
    s = np.round(rng.random((n_clips, n_classes)), 1)  # rounding makes ties: the pessimistic rank counts them
    assert lwlrap(y, s) == pytest.approx(_lwlrap_by_definition(y, s))


def test_average_precision_by_hand():
    ap = per_class_average_precision(TRUTH, SCORES)
    # class 0: its positive (0.9) outranks its negative (0.8) -> 1; class 1 likewise (0.7 > 0.5);
    # class 2: positive 0.1 below negative 0.2 -> precision at the positive is 1/2
    np.testing.assert_allclose(ap, [1.0, 1.0, 0.5])
    assert np.isnan(per_class_average_precision(np.array([[1, 0], [1, 0]]), SCORES[:, :2])[1])
    m = multilabel_metrics(TRUTH, SCORES, labels=["a", "b", "c"])
    assert m["mAP"] == pytest.approx(2.5 / 3) and m["ap_c"] == pytest.approx(0.5)


def test_f1_at_thresholds_by_hand():
    # at 0.5: predictions [[1,1,0],[1,1,0]]; class 0: tp1 fp1 -> 2/3; class 1: tp1 fp1 -> 2/3; class 2: fn1 -> 0
    m = multilabel_metrics(TRUTH, SCORES)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    # per-class thresholds: class 2 at 0.05 finds its clip (and the other, a false positive)
    m = multilabel_metrics(TRUTH, SCORES, thresholds=np.array([0.85, 0.6, 0.05]))
    assert m["macro_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_tuned_thresholds_maximise_f1_and_keep_ties_together():
    y = np.array([[1], [1], [0], [1], [0], [0]])
    s = np.array([[0.9], [0.8], [0.7], [0.6], [0.6], [0.1]])
    t = tune_thresholds(y, s)
    # cutting below 0.8 gives F1 = 2*2/(2+3) = 0.8; below the 0.6 tie: 2*3/(5+3) = 0.75; so 0.75 (midway 0.8/0.7)
    assert t[0] == pytest.approx(0.75)
    assert multilabel_metrics(y, s, thresholds=t)["macro_f1"] == pytest.approx(0.8)
    assert tune_thresholds(np.zeros((3, 1), int), np.ones((3, 1)))[0] == np.inf
    # every validation clip positive: the cut sits midway between the lowest score and 0, not below 0
    t = tune_thresholds(np.ones((3, 1), int), np.array([[0.9], [0.5], [0.3]]))
    assert t[0] == pytest.approx(0.15)


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="one shape"):
        lwlrap(TRUTH, SCORES[:, :2])
    with pytest.raises(ConfigError, match="multi-hot"):
        lwlrap(TRUTH * 2, SCORES)
    with pytest.raises(ConfigError, match="NaN"):
        lwlrap(TRUTH, SCORES * np.nan)
    with pytest.raises(ConfigError, match="without any true label"):
        lwlrap(np.zeros_like(TRUTH), SCORES)


@pytest.mark.parametrize("task_name", ["multiclass", "multilabel"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_bootstrap_resampler_scores_a_resample_as_the_metrics_do(task_name, seed):
    """Each resample's scores come from per-clip sums; they equal a full re-scoring of the resampled clips."""
    from clipwise.task import get_task

    task, rng = get_task(task_name), np.random.default_rng(seed)
    labels = [f"c{i}" for i in range(6)]
    if task.multi_label:
        y = (rng.random((120, 6)) < 0.3).astype(float)
        y[y.sum(axis=1) == 0, 0] = 1
        probs, cut = np.clip(0.5 * y + 0.6 * rng.random(y.shape), 0, 1), rng.uniform(0.3, 0.7, 6)
    else:
        y, probs, cut = rng.integers(0, 6, 120), rng.dirichlet(np.ones(6), 120), None
    resample = task.resampler(y, probs, thresholds=cut)
    for idx in (np.arange(120), rng.integers(0, 120, 120)):
        full = task.metrics(y[idx], probs[idx], labels=labels, thresholds=cut)
        for key, value in resample(idx).items():
            assert value == pytest.approx(full[key], abs=1e-9), key
