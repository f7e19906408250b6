"""The task of a run: single-label (multiclass) or multi-label classification, as one object.

A :class:`Task` owns everything that differs between the two: how label cells become targets, the output
activation, the loss and mixup rule (named here, computed by the training module), the metrics and the main
one, the monitor that picks the best checkpoint, the baseline a model must beat, the decision rule (arg-max,
or each label at its tuned threshold) and the columns a report or a console prints. The task is resolved once
from the training data (or ``data.task``), written into the run folder (``run.json``) and asked by every reader;
nothing else decides it. The module needs numpy only (no torch), so the torch-free runtime can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from clipwise.data.manifest import parse_labels
from clipwise.errors import ConfigError, RegistryError
from clipwise.evaluate.metrics import LOG_LOSS_EPS, classification_metrics, majority_baseline
from clipwise.evaluate.multilabel import lwlrap, multilabel_metrics, prior_baseline, tune_thresholds
from clipwise.registry import Registry

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


class MultiClass(Task):
    """One label per clip: softmax outputs, cross-entropy, accuracy, arg-max decisions."""

    name = "multiclass"
    multi_label = False
    main_metric = "accuracy"
    headline = ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "loss")
    monitors = ("val_accuracy", "val_macro_f1", "val_balanced_accuracy", "val_loss")
    activation = "softmax"
    baseline_name = "Majority-class baseline"

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


class MultiLabel(Task):
    """Any number of labels per clip: sigmoid outputs, binary cross-entropy, lwlrap, per-class thresholds."""

    name = "multilabel"
    multi_label = True
    main_metric = "lwlrap"
    headline = ("lwlrap", "mAP", "macro_f1", "micro_f1", "loss")
    monitors = ("val_lwlrap", "val_mAP", "val_loss")
    activation = "sigmoid"
    baseline_name = "Prior baseline (every clip ranked by label frequency)"

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
