"""The task of a run: single-label (multiclass) or multi-label classification, as one object.

A :class:`Task` owns everything that differs between the two: how label cells become targets, the output
activation, the loss and mixup rule (named here, computed by the training module), the metrics and the main
one, the monitor that picks the best checkpoint, the baseline a model must beat, the decision rule (arg-max,
or each label at its tuned threshold) and the columns a report or a console prints. The task is resolved once
from the training data (or ``data.task``), written into the run folder (``run.json``) and asked by every reader;
nothing else decides it. The module needs numpy only (no torch), so the torch-free runtime can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from clipwise.data.manifest import parse_labels
from clipwise.errors import ConfigError, RegistryError
from clipwise.evaluate.metrics import LOG_LOSS_EPS, classification_metrics, majority_baseline, proportion_interval
from clipwise.evaluate.multilabel import (
    lwlrap,
    multilabel_metrics,
    per_class_average_precision,
    prior_baseline,
    tune_thresholds,
)
from clipwise.registry import Registry

def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and np.isfinite(value) else "n/a"


class Task:
    """What single- and multi-label classification do differently. Instances hold no state."""

    name: ClassVar[str]
    multi_label: ClassVar[bool]
    main_metric: ClassVar[str]
    #: the scores a console or a leaderboard shows, main metric first
    headline: ClassVar[tuple[str, ...]]
    #: the validation metrics train.monitor may name for this task
    monitors: ClassVar[tuple[str, ...]]
    activation: ClassVar[str]  # "softmax" or "sigmoid"
    baseline_name: ClassVar[str]
    #: (metric, column title) of the scores a report tabulates, loss last
    report_columns: ClassVar[tuple[tuple[str, str], ...]]
    #: what a report says under its results table about how this task is scored
    report_note: ClassVar[str] = ""

    @property
    def monitor(self) -> str:
        """The default checkpoint monitor: the main metric on validation."""
        return f"val_{self.main_metric}"

    def check_monitor(self, monitor: str) -> str:
        """``monitor`` resolved (``auto`` -> :attr:`monitor`).

        Raises:
            ConfigError: a monitor this task's runs do not log.
        """
        if monitor == "auto":
            return self.monitor
        if monitor not in self.monitors:
            raise ConfigError(f"train.monitor={monitor} does not fit a {self.name} task; use "
                              f"{', '.join(self.monitors)} (or auto)")
        return monitor

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    # -- targets ---------------------------------------------------------------------------------------------
    def encode(self, cells: Sequence[object], labels: Sequence[str]) -> np.ndarray:
        """Targets of manifest label cells: class indices ``(N,)`` or a multi-hot matrix ``(N, C)``."""
        raise NotImplementedError

    def labelled(self, y: np.ndarray) -> np.ndarray:
        """Rows with a known truth (a negative class index marks an unknown single-label row)."""
        raise NotImplementedError

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The activation applied to logits ``(N, C)``, in numpy."""
        raise NotImplementedError

    # -- scores ----------------------------------------------------------------------------------------------
    def metrics(self, y: np.ndarray, probs: np.ndarray, *, labels: Sequence[str],
                thresholds: np.ndarray | float | None = None) -> dict[str, float]:
        """Every metric of one split (loss included), as logged per epoch and written to summary.json."""
        raise NotImplementedError

    def score(self, y: np.ndarray, probs: np.ndarray) -> float:
        """The main metric alone (a member's score in an ensemble, a bootstrap replicate)."""
        raise NotImplementedError

    def baseline(self, y_train: np.ndarray, y_eval: np.ndarray) -> dict[str, float]:
        """Scores of a model that ignores the audio: the floor every run must clear."""
        raise NotImplementedError

    def tune(self, y_val: np.ndarray, probs_val: np.ndarray) -> np.ndarray | None:
        """Decision thresholds tuned on validation (multi-label), or None where the rule is the arg-max."""
        return None

    def decide(self, probs: np.ndarray, labels: Sequence[str],
               thresholds: np.ndarray | float | None = None) -> list[list[str]]:
        """The labels decided for each row: the arg-max, or every label at or above its threshold."""
        raise NotImplementedError

    def baseline_sentence(self, baseline: dict[str, float], *, on: str = "") -> str:
        """The report's sentence about :meth:`baseline`'s scores (``on``: where they were computed)."""
        raise NotImplementedError

    def resampler(self, y: np.ndarray, probs: np.ndarray, *,
                  thresholds: np.ndarray | float | None = None) -> Callable[[np.ndarray], dict[str, float]]:
        """A function of clip indices (a bootstrap resample, repeats allowed) to the scores of :attr:`headline`
        on those clips. Per-clip terms are computed once, so each resample costs sums, not a re-scoring; the
        scores equal :meth:`metrics`' on the same clips (average-precision ties aside)."""
        raise NotImplementedError

    def pooled(self, y: np.ndarray, probs: np.ndarray, *, labels: Sequence[str]) -> dict[str, Any]:
        """Scores over pooled out-of-fold predictions (each fold tuned its own thresholds, so no F1 for tags)."""
        raise NotImplementedError

    def pooled_sentence(self, pooled: dict[str, Any]) -> str:
        """The report's words for :meth:`pooled`'s scores."""
        raise NotImplementedError


class MultiClass(Task):
    """One label per clip: softmax outputs, cross-entropy, accuracy, arg-max decisions."""

    name = "multiclass"
    multi_label = False
    main_metric = "accuracy"
    headline = ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "loss")
    monitors = ("val_accuracy", "val_macro_f1", "val_balanced_accuracy", "val_loss")
    activation = "softmax"
    baseline_name = "Majority-class baseline"
    report_columns = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro-F1"),
                      ("top5_accuracy", "top-5"), ("loss", "loss"))

    def encode(self, cells: Sequence[object], labels: Sequence[str]) -> np.ndarray:
        index = {name: i for i, name in enumerate(labels)}
        return np.array([index[str(v)] for v in cells], dtype=np.int64)

    def labelled(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y) >= 0

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def metrics(self, y, probs, *, labels, thresholds=None):
        m = classification_metrics(y, probs, labels=labels)
        m["loss"] = m.pop("log_loss")
        return m

    def score(self, y, probs):
        return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(y)))

    def baseline(self, y_train, y_eval):
        return majority_baseline(y_train, y_eval)

    def decide(self, probs, labels, thresholds=None):
        return [[labels[int(i)]] for i in np.asarray(probs).argmax(axis=1)]

    def baseline_sentence(self, baseline, *, on=""):
        return (f"Majority-class baseline (always predict the most frequent training class){on}: accuracy "
                f"{_fmt(baseline.get('accuracy'))}, balanced accuracy {_fmt(baseline.get('balanced_accuracy'))}.")

    def resampler(self, y, probs, *, thresholds=None):
        y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
        n, c = probs.shape
        pred = probs.argmax(axis=1)
        hit = pred == y
        top = np.argsort(-probs, axis=1, kind="stable")[:, :min(5, c)]
        hit5 = (top == y[:, None]).any(axis=1)
        nll = -np.log(np.clip(probs[np.arange(n), y], LOG_LOSS_EPS, 1.0))

        def scores(idx):
            cm = np.bincount(y[idx] * c + pred[idx], minlength=c * c).reshape(c, c)
            tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
            present, scored = support > 0, support + predicted > 0  # scikit-learn's classes for each score
            return {"accuracy": hit[idx].mean(), "balanced_accuracy": (tp[present] / support[present]).mean(),
                    "macro_f1": (2 * tp[scored] / (support + predicted)[scored]).mean(),
                    "top5_accuracy": hit5[idx].mean(), "loss": nll[idx].mean()}

        return scores

    def pooled(self, y, probs, *, labels):
        pooled: dict[str, Any] = classification_metrics(y, probs, labels=labels)
        hits = int((np.asarray(probs).argmax(axis=1) == y).sum())
        pooled["accuracy_ci"] = list(proportion_interval(hits, len(y)))
        return pooled

    def pooled_sentence(self, pooled):
        lo, hi = pooled["accuracy_ci"]
        return (f"accuracy {pooled['accuracy']:.4f} (95 % Wilson interval [{lo:.4f}, {hi:.4f}]), balanced accuracy "
                f"{pooled['balanced_accuracy']:.4f}, macro-F1 {pooled['macro_f1']:.4f}")


class MultiLabel(Task):
    """Any number of labels per clip: sigmoid outputs, binary cross-entropy, lwlrap, per-class thresholds."""

    name = "multilabel"
    multi_label = True
    main_metric = "lwlrap"
    headline = ("lwlrap", "mAP", "macro_f1", "micro_f1", "loss")
    monitors = ("val_lwlrap", "val_mAP", "val_loss")
    activation = "sigmoid"
    baseline_name = "Prior baseline (every clip ranked by label frequency)"
    report_columns = (("lwlrap", "lwlrap"), ("mAP", "mAP"), ("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"),
                      ("loss", "loss"))
    report_note = ("Multi-label: lwlrap (label-weighted label-ranking average precision, the Freesound Audio "
                   "Tagging 2019 metric) and mAP rank the labels of each clip; the F1 scores use per-class thresholds "
                   "tuned on validation (thresholds.json). Accuracy is not reported: it rewards predicting nothing.")

    def encode(self, cells: Sequence[object], labels: Sequence[str]) -> np.ndarray:
        index = {name: i for i, name in enumerate(labels)}
        out = np.zeros((len(cells), len(labels)), dtype=np.float32)
        for r, value in enumerate(cells):
            for name in parse_labels(value):
                out[r, index[name]] = 1.0
        return out

    def labelled(self, y: np.ndarray) -> np.ndarray:
        return np.ones(len(y), dtype=bool)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def metrics(self, y, probs, *, labels, thresholds=None):
        m = multilabel_metrics(y, probs, thresholds=0.5 if thresholds is None else thresholds)
        p = np.clip(np.asarray(probs, dtype=np.float64), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
        t = np.asarray(y, dtype=np.float64)
        m["loss"] = float(-np.mean(t * np.log(p) + (1 - t) * np.log1p(-p)))
        return m

    def score(self, y, probs):
        return lwlrap(y, probs)

    def baseline(self, y_train, y_eval):
        return prior_baseline(y_train, y_eval)

    def tune(self, y_val, probs_val):
        return tune_thresholds(y_val, probs_val)

    def decide(self, probs, labels, thresholds=None):
        cut = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, dtype=np.float64),
                              (len(labels),))
        return [[lab for lab, p, c in zip(labels, row, cut) if p >= c] for row in np.asarray(probs)]

    def baseline_sentence(self, baseline, *, on=""):
        return (f"Prior baseline (rank the labels by their training frequency, whatever the audio){on}: "
                f"lwlrap {_fmt(baseline.get('lwlrap'))}, mAP {_fmt(baseline.get('mAP'))}.")

    def resampler(self, y, probs, *, thresholds=None):
        y, s = np.asarray(y) > 0.5, np.asarray(probs, dtype=np.float64)
        n, c = s.shape
        # lwlrap is a ratio of per-clip sums: each clip's precision at its labels, over its number of labels
        weights = y.sum(axis=1).astype(np.float64)
        precision_sums = np.zeros(n)
        for i in np.flatnonzero(weights):
            ranks = (s[i][None, :] >= s[i][y[i]][:, None])  # (labels of clip i, classes): scored at least as high
            precision_sums[i] = np.sum(ranks[:, y[i]].sum(axis=1) / ranks.sum(axis=1))
        cut = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, dtype=np.float64), (c,))
        decided = s >= cut[None, :]
        tp, fp, fn = decided & y, decided & ~y, ~decided & y
        p = np.clip(s, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
        bce = -np.mean(np.where(y, np.log(p), np.log1p(-p)), axis=1)
        order = np.argsort(-s, axis=0, kind="stable")  # each class's clips, best scored first

        def scores(idx):
            count = np.bincount(idx, minlength=n).astype(np.float64)
            w = count[order]  # (clips in each class's order, classes)
            pos = w * y[order, np.arange(c)]
            seen, found = np.cumsum(w, axis=0), np.cumsum(pos, axis=0)
            total = pos.sum(axis=0)
            has = total > 0
            ap = (pos * found / np.maximum(seen, 1e-12)).sum(axis=0)[has] / total[has]
            t, f_p, f_n = ((count[:, None] * m).sum(axis=0) for m in (tp, fp, fn))
            denom = 2 * t + f_p + f_n
            return {"lwlrap": (count * precision_sums).sum() / max((count * weights).sum(), 1e-12),
                    "mAP": ap.mean() if len(ap) else np.nan,
                    "macro_f1": (2 * t[denom > 0] / denom[denom > 0]).mean() if (denom > 0).any() else 0.0,
                    "micro_f1": 2 * t.sum() / max(1.0, denom.sum()), "loss": (count * bce).sum() / count.sum()}

        return scores

    def pooled(self, y, probs, *, labels):
        ap = per_class_average_precision(y, probs)
        return {"lwlrap": lwlrap(y, probs), "mAP": float(np.nanmean(ap)) if np.isfinite(ap).any() else None,
                "n": int(len(y)), **{f"ap_{lab}": float(v) for lab, v in zip(labels, ap)}}

    def pooled_sentence(self, pooled):
        return (f"lwlrap {pooled['lwlrap']:.4f}, mAP {_fmt(pooled['mAP'])} (ranking scores; F1 is left out because "
                "each fold tuned its own thresholds on its validation clips)")


TASKS: Registry = Registry("task")
TASKS.register(MultiClass.name)(MultiClass)
TASKS.register(MultiLabel.name)(MultiLabel)


def get_task(name: str) -> Task:
    """The task called ``name`` (``multiclass`` or ``multilabel``).

    Raises:
        ConfigError: an unknown name.
    """
    try:
        return TASKS.get(name)()
    except RegistryError as e:
        raise ConfigError(str(e)) from None


def resolve_task(setting: str, train_cells: Sequence[object]) -> Task:
    """``data.task`` resolved: ``auto`` is multi-label when any training cell holds several labels."""
    if setting != "auto":
        return get_task(setting)
    several = any(len(parse_labels(v)) > 1 for v in train_cells)
    return get_task(MultiLabel.name if several else MultiClass.name)
