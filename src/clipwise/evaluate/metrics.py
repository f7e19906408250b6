"""Classification metrics as pure functions on numpy arrays.

Conventions: ``y_true`` holds class indices (N,), ``probs`` holds class probabilities (N, C) whose column
``c`` belongs to ``labels[c]``, and a prediction is the arg-max of a row. Classes that are absent from
``y_true`` (common in small test splits) never raise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from clipwise.errors import ConfigError

#: Probabilities are clipped to [LOG_LOSS_EPS, 1] so one confident mistake costs at most ~16 nats.
LOG_LOSS_EPS = 1e-7


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, *, labels: Sequence[str]
) -> dict[str, float]:
    """Single-label classification scores of one split.

    Args:
        y_true: true class indices, shape (N,).
        probs: predicted probabilities, shape (N, C), C = ``len(labels)``.
        labels: class names, index = class id.

    Returns:
        ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in ``y_true``),
        ``macro_f1`` (mean F1 over the classes present in ``y_true`` or predicted, so a class the split
        does not contain and the model never predicts does not count), ``weighted_f1``,
        ``top5_accuracy`` (top-k with k = min(5, C)), ``log_loss`` (natural log, clipped probabilities)
        and ``n`` (an int).

    Raises:
        ConfigError: if the shapes disagree, the split is empty or an index is out of range.
    """
    y_true, probs = _check(y_true, probs, n_classes=len(labels))
    n, n_classes = probs.shape
    y_pred = probs.argmax(axis=1)
    k = min(5, n_classes)
    # Top-k and log-loss by hand, not scikit-learn's: a stable sort on -probs keeps tied classes in class order
    # (top_k_accuracy_score breaks ties the other way, so a uniform prediction scores differently), and the
    # log-loss clips at LOG_LOSS_EPS without renormalising rows (log_loss renormalises and clips at machine
    # epsilon), which bounds what one confident mistake costs the same way in training logs and reports.
    top_k = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    p_true = np.clip(probs[np.arange(n), y_true], LOG_LOSS_EPS, 1.0)
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred, n_classes=n_classes),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(
            f1_score(y_true, y_pred, labels=range(n_classes), average="weighted", zero_division=0)
        ),
        "top5_accuracy": float(np.mean((top_k == y_true[:, None]).any(axis=1))),
        "log_loss": float(-np.mean(np.log(p_true))),
        "n": int(n),
    }


def per_class_report(y_true: np.ndarray, probs: np.ndarray, *, labels: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support of every class.

    Args:
        y_true: true class indices, shape (N,).
        probs: predicted probabilities, shape (N, C).
        labels: class names, index = class id.

    Returns:
        A DataFrame indexed by label (every class, in class order) with columns ``precision``,
        ``recall``, ``f1`` (0 where undefined) and ``support`` (int).

    Raises:
        ConfigError: if the shapes disagree or an index is out of range.
    """
    y_true, probs = _check(y_true, probs, n_classes=len(labels))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, probs.argmax(axis=1), labels=range(len(labels)), zero_division=0
    )
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)},
        index=pd.Index(list(labels), name="label"),
    )


def confusion(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int, normalize: bool) -> np.ndarray:
    """Confusion matrix with rows = true class and columns = predicted class.

    Args:
        y_true: true class indices, shape (N,).
        y_pred: predicted class indices, shape (N,).
        n_classes: number of classes C.
        normalize: divide each row by its count, so a row is the distribution of predictions for one
            true class; rows of classes without samples stay all zero.

    Returns:
        A (C, C) array: int counts, or floats when ``normalize``.

    Raises:
        ConfigError: if the arrays differ in length or hold an index outside [0, C).
    """
    y_true = _indices(y_true, "y_true", n_classes)
    y_pred = _indices(y_pred, "y_pred", n_classes)
    if len(y_true) != len(y_pred):
        raise ConfigError(
            f"y_true has {len(y_true)} entries but y_pred has {len(y_pred)}; pass one prediction per clip"
        )
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
    if not normalize:
        return counts
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)


def top_confusions(
    y_true: np.ndarray, y_pred: np.ndarray, *, labels: Sequence[str], k: int = 10
) -> list[tuple[str, str, int]]:
    """The most frequent mistakes.

    Args:
        y_true: true class indices, shape (N,).
        y_pred: predicted class indices, shape (N,).
        labels: class names, index = class id.
        k: how many pairs to return at most.

    Returns:
        Up to ``k`` ``(true_label, predicted_label, count)`` tuples with count > 0, most frequent first
        (ties in class order).

    Raises:
        ConfigError: as :func:`confusion`.
    """
    counts = confusion(y_true, y_pred, n_classes=len(labels), normalize=False)
    np.fill_diagonal(counts, 0)
    true_idx, pred_idx = np.nonzero(counts)
    order = sorted(zip(true_idx, pred_idx), key=lambda tp: (-counts[tp], tp[0], tp[1]))
    return [(labels[t], labels[p], int(counts[t, p])) for t, p in order[:k]]


def majority_baseline(y_train: np.ndarray, y_eval: np.ndarray) -> dict[str, float]:
    """Scores of always predicting the most frequent training class.

    Args:
        y_train: class indices of the training split (the baseline's only "training").
        y_eval: class indices of the split to score.

    Returns:
        ``accuracy``, ``balanced_accuracy`` and ``class_index`` (the majority class; ties go to the
        lowest index).

    Raises:
        ConfigError: if either array is empty or holds a negative index.
    """
    y_train = _indices(y_train, "y_train", None)
    y_eval = _indices(y_eval, "y_eval", None)
    for name, y in (("y_train", y_train), ("y_eval", y_eval)):
        if len(y) == 0:
            raise ConfigError(f"{name} is empty; the majority baseline needs a clip in each split")
    majority = int(np.bincount(y_train).argmax())
    return {
        "accuracy": float(np.mean(y_eval == majority)),
        "balanced_accuracy": _balanced_accuracy(
            y_eval, np.full_like(y_eval, majority), n_classes=max(majority, int(y_eval.max())) + 1
        ),
        "class_index": majority,
    }


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> float:
    # Mean recall over the classes that occur; sklearn agrees but warns about absent classes.
    support = np.bincount(y_true, minlength=n_classes)
    hits = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def _indices(y: np.ndarray, name: str, n_classes: int | None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D array of class indices, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ConfigError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        allowed = "a non-negative index" if n_classes is None else f"an index in [0, {n_classes})"
        raise ConfigError(f"{name} holds class index {bad}, expected {allowed}; check the label list")
    return y


def _check(y_true: np.ndarray, probs: np.ndarray, *, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ConfigError(
            f"probs must have shape (N, {n_classes}) to match {n_classes} labels, got {probs.shape}"
        )
    y_true = _indices(y_true, "y_true", n_classes)
    if len(y_true) != len(probs):
        raise ConfigError(
            f"y_true has {len(y_true)} entries but probs has {len(probs)} rows; pass one row per clip"
        )
    if len(y_true) == 0:
        raise ConfigError("no clips to score: y_true and probs are empty")
    return y_true, probs


def mean_interval(values: Sequence[float], *, confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation and a Student-t confidence interval of per-fold (or per-seed) scores.

    Cross-validation folds share training data, so their scores are not independent and this interval is
    somewhat narrower than the truth (Nadeau & Bengio, 2003); it is the customary summary, read it as such.

    Returns:
        ``mean``, ``std`` (ddof=1; 0 for one value), ``ci_low``, ``ci_high`` (both the mean for one value), ``n``.
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ConfigError(f"mean_interval needs a non-empty list of scores, got shape {x.shape}")
    n = len(x)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    if n == 1 or std == 0.0:
        return {"mean": mean, "std": std, "ci_low": mean, "ci_high": mean, "n": n}
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / np.sqrt(n))
    return {"mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high), "n": n}


def proportion_interval(hits: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (e.g. accuracy over ``n`` clips): sound at 0 %, 100 % and small n."""
    from scipy import stats

    if n <= 0:
        raise ConfigError("proportion_interval needs n > 0")
    ci = stats.binomtest(int(hits), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(max(0.0, ci.low)), float(min(1.0, ci.high))


def calibration(y_true: np.ndarray, probs: np.ndarray, *, n_bins: int = 15) -> dict:
    """Reliability of the top-1 confidence: equal-width confidence bins, and the expected calibration error.

    ECE = sum over bins of (clips in bin / N) * |accuracy in bin - mean confidence in bin| (Guo et al., 2017).

    Returns:
        ``ece``, ``n_bins`` and ``bins``: a list of ``{"low", "high", "count", "confidence", "accuracy"}`` (the
        last two None for an empty bin).
    """
    y_true, probs = _check(y_true, probs, n_classes=np.asarray(probs).shape[1])
    conf = probs.max(axis=1)
    hit = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        if count:
            c, a = float(conf[inside].mean()), float(hit[inside].mean())
            ece += count / len(conf) * abs(a - c)
        else:
            c = a = None
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count, "confidence": c,
                     "accuracy": a})
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def bootstrap_intervals(n: int, score: Callable[[np.ndarray], dict[str, float]], keys: Sequence[str], *,
                        resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals (scipy.stats.bootstrap) of several scores of ``n`` clips at once.

    Args:
        n: the number of clips.
        score: maps the indices of a resample to its scores (all of ``keys``; a missing or failing one is NaN).
        keys: the scores to give intervals for.

    Returns:
        key -> (low, high), for the keys whose interval is finite.
    """
    from scipy import stats

    def statistic(idx: np.ndarray) -> np.ndarray:
        try:
            values = score(idx)
        except ValueError:  # a resample without what a score needs (ConfigError is a ValueError)
            return np.full(len(keys), np.nan)
        return np.array([float(values[k]) if values.get(k) is not None else np.nan for k in keys])

    res = stats.bootstrap((np.arange(n),), statistic, vectorized=False, n_resamples=resamples,
                          confidence_level=confidence, method="percentile", random_state=np.random.default_rng(seed))
    low, high = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    return {k: (float(lo), float(hi)) for k, lo, hi in zip(keys, low, high) if np.isfinite(lo) and np.isfinite(hi)}
