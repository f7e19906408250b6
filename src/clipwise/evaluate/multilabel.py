"""Multi-label metrics: lwlrap, per-class and macro average precision, F1 at per-class thresholds (a run's
task, :mod:`clipwise.task`, decides which metrics score it).

Pure functions of a multi-hot truth matrix ``(clips, classes)`` and a score matrix of the same shape (sigmoid
outputs, or any monotone score). Accuracy means little here: a model that predicts "absent" everywhere is
right on almost every cell of a sparse matrix, which is how "98 % accuracy" reports arise where lwlrap is 0.25.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score

from clipwise.errors import ConfigError

__all__ = ["lwlrap", "per_class_average_precision", "tune_thresholds", "multilabel_metrics"]


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise ConfigError(f"multi-label metrics need truth and scores of one shape (clips, classes); got "
                          f"{y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ConfigError("multi-label truth must be multi-hot (0/1 values)")
    if not np.isfinite(s).all():
        raise ConfigError("scores hold NaN or infinite values")
    return y.astype(np.int64), s


def lwlrap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Label-weighted label-ranking average precision (Freesound Audio Tagging 2019).

    For every (clip, true label) pair: the share of true labels among the labels the clip scores at least as
    high as that one; averaged over all pairs, so every true label counts once however many a clip has. This
    is scikit-learn's LRAP with each clip weighted by its number of true labels. Clips without a true label
    carry no weight.

    Raises:
        ConfigError: shapes differ, truth is not 0/1, or no clip has a true label.
    """
    y, s = _check(y_true, scores)
    weights = y.sum(axis=1)
    if weights.sum() == 0:
        raise ConfigError("lwlrap is undefined without any true label")
    keep = weights > 0
    return float(label_ranking_average_precision_score(y[keep], s[keep], sample_weight=weights[keep]))


def per_class_average_precision(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of every class (NaN for a class with no positive clip)."""
    y, s = _check(y_true, scores)
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        if y[:, c].any():
            out[c] = average_precision_score(y[:, c], s[:, c])
    return out


def _best_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The threshold on one class's scores that maximises F1 (midway between neighbouring scores)."""
    if not y.any():
        return float(np.inf)  # never predict a class validation never shows
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    predicted = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (predicted + y.sum())
    # only cut where the score changes, so tied clips are always on the same side
    last_of_tie = np.append(s_sorted[1:] != s_sorted[:-1], True)
    k = int(np.flatnonzero(last_of_tie)[np.argmax(f1[last_of_tie])])
    # when every clip is best called positive, the lowest score's neighbour is 0 (a probability's floor): a clip
    # scored near 0 is still not tagged (the cut used to fall below 0 and tag every clip, whatever its score)
    below = s_sorted[k + 1] if k + 1 < len(s) else (0.0 if s_sorted[k] > 0 else s_sorted[k] - 1.0)
    return float((s_sorted[k] + below) / 2)


def tune_thresholds(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-class decision thresholds that maximise each class's F1 on (validation) data.

    Returns:
        ``(classes,)`` thresholds: predict class c when ``score >= threshold[c]``; ``inf`` for a class without
        positives.
    """
    y, s = _check(y_true, scores)
    return np.array([_best_threshold(y[:, c], s[:, c]) for c in range(y.shape[1])])


def multilabel_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    thresholds: np.ndarray | float = 0.5,
) -> dict[str, float]:
    """lwlrap, macro mAP (over classes with positives), and macro / micro F1 at ``thresholds``.

    Args:
        y_true: multi-hot truth ``(clips, classes)``.
        scores: ``(clips, classes)``.
        labels: class names; adds ``ap_<name>`` entries.
        thresholds: one per class (e.g. from :func:`tune_thresholds` on validation data) or one for all.
    """
    y, s = _check(y_true, scores)
    ap = per_class_average_precision(y, s)
    pred = s >= np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (y.shape[1],))[None, :]
    tp = (pred & (y == 1)).sum(axis=0)
    fp = (pred & (y == 0)).sum(axis=0)
    fn = (~pred & (y == 1)).sum(axis=0)
    denom = 2 * tp + fp + fn
    # macro-F1 over the classes the split holds or the model predicts, as for single-label runs (scikit-learn's
    # rule when no label list is given): a class with nothing to find and nothing claimed does not count
    scored = denom > 0
    f1 = 2 * tp[scored] / denom[scored]
    out = {
        "lwlrap": lwlrap(y, s),
        "mAP": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "micro_f1": float(2 * tp.sum() / max(1, 2 * tp.sum() + fp.sum() + fn.sum())),
        "n": int(len(y)),
    }
    if labels is not None:
        out.update({f"ap_{name}": float(v) for name, v in zip(labels, ap)})
    return out


def prior_baseline(y_train: np.ndarray, y_eval: np.ndarray) -> dict[str, float]:
    """Scores of a model that ignores the audio and ranks labels by their training frequency for every clip:
    the floor a multi-label model must clear (its lwlrap is far above 0 when a few labels dominate)."""
    prior = np.asarray(y_train, dtype=np.float64).mean(axis=0)
    y = np.asarray(y_eval)
    # ties broken by a tiny, fixed offset so equal frequencies do not share a rank
    scores = np.broadcast_to(prior - 1e-9 * np.arange(len(prior)), y.shape)
    return {"lwlrap": lwlrap(y, scores), "mAP": float(np.nanmean(per_class_average_precision(y, scores)))}
