"""summary.json: one schema, written by one function, for every kind of run.

A run's summary holds its final scores per split (``val``, ``test``, ``train_clean``), the baseline a model must
clear, what data it saw, what the model is, how long it took and the leakage check's findings; a trained network
adds how its training went (best epoch, epochs run, early stop, divergence, ...). :func:`score_splits` is the
step every kind shares before that: tune the task's decision thresholds on validation, save each split's
predictions and compute its metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipwise.run import RunFolder
from clipwise.task import Task

SCORED_SPLITS = ("val", "test", "train_clean")


@dataclass
class RunSummary:
    """What summary.json says of a finished run (see the module docstring).

    Args:
        kind: the run kind's name (written into ``model.kind``).
        scores: metrics per split.
        baseline: the task's baseline on the evaluation split.
        data: counts and settings of the data.
        model: name and size of the model.
        timing: seconds and throughput.
        leakage: the pre-training check's summary.
        extra: what only this kind has (a network's best epoch and epochs run, an ensemble's members), kept at the top level.
    """

    kind: str
    scores: dict[str, dict[str, Any]]
    baseline: dict[str, Any] | None
    data: dict[str, Any]
    model: dict[str, Any]
    timing: dict[str, Any] = field(default_factory=dict)
    leakage: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {split: self.scores[split] for split in SCORED_SPLITS if split in self.scores}
        out.update(self.extra)
        out.update(baseline=self.baseline, data=self.data, model={**self.model, "kind": self.kind})
        if self.leakage is not None:
            out["leakage"] = self.leakage
        if self.timing:
            out["timing"] = self.timing
        return out


def write_summary(run: RunFolder, summary: RunSummary) -> Path:
    """Write summary.json from ``summary``; the one writer of that file."""
    return run.save_summary(summary.to_dict())


def score_splits(run: RunFolder, task: Task, labels: Sequence[str],
                 scored: Mapping[str, tuple[Sequence[str], np.ndarray | None, np.ndarray]]) -> dict[str, dict]:
    """Save each split's predictions and return its metrics; a multi-label task first tunes its per-class
    thresholds on validation (saved as thresholds.json) and scores every split at them.

    Args:
        run: the run folder written to.
        task: the run's task.
        labels: class names.
        scored: split -> ``(paths, targets or None, probabilities)``.

    Returns:
        split -> metrics, for the splits with targets.
    """
    thresholds = None
    if "val" in scored and scored["val"][1] is not None:
        y, probs = scored["val"][1], scored["val"][2]
        keep = task.labelled(y)
        thresholds = task.tune(y[keep], probs[keep])
    if thresholds is not None:
        run.save_json(run.thresholds_path, {"tuned_on": "val", "objective": "F1 per class",
                                            "thresholds": dict(zip(labels, thresholds.tolist()))})
    metrics = {}
    for split, (paths, y, probs) in scored.items():
        run.save_predictions(split, paths, y, probs, labels=labels, thresholds=thresholds, task=task)
        if y is not None:
            keep = task.labelled(y)
            metrics[split] = task.metrics(y[keep], probs[keep], labels=labels, thresholds=thresholds)
    return metrics
