"""The facts a report reads from a run folder, and the plain-language notes drawn from them.

Kept apart from report.py so that each check is a small function of :class:`RunFacts` that a test can
reach, and report.py stays about layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clipwise.data.splits import mostly_seen_groups
from clipwise.run import RunFolder
from clipwise.task import Task

#: A validation score must beat the clean-training score by more than this to be noted (noise guard).
VAL_ABOVE_TRAIN_MARGIN = 0.01
#: a test split below this many clips, or from fewer groups than this, gets a note that its score is uncertain
SMALL_TEST_CLIPS = 100
FEW_TEST_GROUPS = 5
SPLIT_NAMES = {"test": "test", "val": "validation", "train_clean": "train (clean)", "train": "train"}


@dataclass
class RunFacts:
    """What a report reads from the run folder, and what is derived from it once."""

    run: RunFolder
    cfg: dict[str, Any]
    summary: dict[str, Any]
    task: Task
    sources: list[str]  # the files read, named in the report
    metrics: pd.DataFrame | None = None
    raw_metrics: pd.DataFrame | None = None  # metrics.csv as text, to tell "nan" from an empty cell
    labels: list[str] | None = None
    split: str | None = None  # the split whose predictions are evaluated (test, else val)
    pred_labels: list[str] = field(default_factory=list)
    y_true: np.ndarray | None = None  # rows of that split with a known label
    probs: np.ndarray | None = None
    y_train: np.ndarray | None = None
    monitor: str = "val_accuracy"
    best: int | None = None
    epochs_run: int | None = None
    scores: tuple[str, dict[str, Any]] | None = None  # the evaluated split and its scores
    baseline: dict[str, Any] | None = None
    leakage: dict[str, Any] | None = None  # leakage.json: what the pre-training check found
    pred_paths: list[str] = field(default_factory=list)  # the file of each row of y_true / probs
    ensemble: dict[str, Any] | None = None  # ensemble.json: members, weights, temperatures


def leakage_header(facts: RunFacts) -> list[str]:
    """The warning that opens a report whose training and test data share audio or sources (or that was
    never checked); empty for a clean, checked run."""
    found = facts.leakage
    if found is None:
        return []
    if not found.get("checked"):
        return ["> **Leakage not checked** (`data.leakage_check=false`): nothing vouches that training and test "
                "data share no audio or source.", ""]
    shared = found.get("train_test") or []
    if not shared:
        return []
    lines = ["> **Trained with --allow-leakage: training and test data share audio or sources.** The test score "
             "below is for material the model has heard, not for new recordings or sources. Found before "
             "training:", ">"]
    lines += [f"> - {f['message']}" for f in shared]
    return lines + [""]


def automatic_notes(facts: RunFacts) -> list[str]:
    """Every note that applies to the run, in a fixed order; an empty list when nothing is unusual."""
    notes = [_val_above_train(facts), _best_at_edge(facts), *_at_or_below_baseline(facts)]
    if facts.summary.get("diverged"):
        notes.append(f"Training diverged: {facts.summary['diverged']}.")
    bad = _nonfinite_losses(facts.raw_metrics)
    if bad:
        notes.append(f"Non-finite losses in metrics.csv ({bad}): training diverged; lower the learning rate "
                     "or look for NaN/Inf in the input audio.")
    data = section(facts.summary, "data")
    silent = data.get("silent_clips")
    total = sum(v for v in silent.values() if isinstance(v, int)) if isinstance(silent, dict) else silent
    if isinstance(total, int) and total > 0:
        detail = f" ({counts(silent)})" if isinstance(silent, dict) else ""
        clips = "1 clip is" if total == 1 else f"{total} clips are"
        notes.append(f"{clips} silent{detail}: silence carries no class to learn; check those files or their "
                     "start/end times.")
    shared = data.get("groups_shared")
    if isinstance(shared, dict) and shared.get("train_test", 0) > 0:
        rows, n_test = shared.get("test_rows"), data.get("n_test")
        of = f" ({rows} of {n_test} test clips)" if isinstance(rows, int) and isinstance(n_test, int) else ""
        if of and not mostly_seen_groups(rows, n_test):
            notes.append(f"{shared['train_test']} group(s) have clips in both train and test{of}: those clips are "
                         "scored on sources seen in training. Few enough to be metadata slips (a recording filed "
                         "under two folds or two labels) rather than a protocol: validation keeps groups whole, "
                         "and the leakage check lists them.")
        else:
            how = (" Validation mirrors that protocol (held out by clip, not by group)."
                   if shared.get("train_val", 0) > 0 else "")
            notes.append(f"{shared['train_test']} group(s) have clips in both train and test{of}, as the "
                         "manifest's split says: the test score is for groups (speakers, recordings) seen in "
                         f"training, not for new ones.{how} Use a grouped split or leave-one-group-out folds to "
                         "measure unseen groups.")
    dups = [f for f in (facts.leakage or {}).get("train_val", []) if f.get("kind") != "group_leak"]
    if dups:
        notes.append("Training and validation share audio (" + "; ".join(f["message"] for f in dups) + "): "
                     "validation scores, and the checkpoint they chose, are optimistic.")
    notes += _class_and_length_notes(facts, data)
    skipped = data.get("skipped_files")
    if isinstance(skipped, int) and skipped > 0:
        files = "1 file" if skipped == 1 else f"{skipped} files"
        notes.append(f"{files} could not be read and {'was' if skipped == 1 else 'were'} skipped (listed in "
                     "skipped_files.csv).")
    return [note for note in notes if note]


def _class_and_length_notes(facts: RunFacts, data: dict[str, Any]) -> list[str]:
    """Classes too rare to learn or evaluate, an automatic clip length set by a few long clips, a small test set."""
    notes = []
    per_class = data.get("class_counts")
    if isinstance(per_class, dict):
        single = sorted(lab for lab, c in per_class.items() if isinstance(c, dict) and c.get("train", 0) == 1)
        if single:
            notes.append(f"{len(single)} class(es) have a single training clip ({', '.join(single[:10])}): too "
                         "few to learn from; their scores are noise.")
        unseen = sorted(lab for lab, c in per_class.items() if isinstance(c, dict)
                        and c.get("train", 0) and not c.get("val", 0) and not c.get("test", 0))
        if unseen:
            notes.append(f"{len(unseen)} class(es) occur only in training ({', '.join(unseen[:10])}): nothing "
                         "here measures how well they are recognised.")
    short = data.get("short_clips")
    if isinstance(short, dict) and sum(v for v in short.values() if isinstance(v, int)):
        notes.append(f"Clips shorter than one 25 ms analysis window ({counts(short)}) were padded with silence: "
                     "they hold almost nothing to learn from or to score; `clipwise check` lists them.")
    for warning in data.get("split_warnings") or []:
        notes.append(warning[0].upper() + warning[1:] + ".")
    auto = data.get("clip_seconds_auto")
    if isinstance(auto, dict) and auto.get("longer", 0):
        notes.append(f"The automatic clip length is {fmt(auto.get('value'))} s, which holds 95 % of the training "
                     f"clips whole; {auto['longer']} clip(s) are longer (up to {fmt(auto.get('max'))} s) and are "
                     "cropped at random in training and scored by windows. Set data.clip_seconds to choose "
                     "otherwise.")
    n_test = data.get("n_test")
    if isinstance(n_test, int) and 0 < n_test < SMALL_TEST_CLIPS:
        notes.append(f"The test split holds only {n_test} clips: its scores are uncertain (see the intervals), "
                     "so compare runs by a cross-validation (`clipwise cv`) rather than by this split.")
    groups = data.get("test_groups")
    if isinstance(groups, int) and 0 < groups < FEW_TEST_GROUPS:
        notes.append(f"The test clips come from {groups} group(s) only (speakers, recordings): the score says "
                     "how the model does on those, not on sources in general; `clipwise cv` over groups says more.")
    return notes


def _val_above_train(facts: RunFacts) -> str | None:
    # The monitored metric if both curves have it, else accuracy; metrics.csv first, summary.json second.
    for name in dict.fromkeys((facts.monitor.removeprefix("val_"), "accuracy")):
        val, train = _at_best(facts, f"val_{name}"), _at_best(facts, f"train_clean_{name}")
        if val is None or train is None:
            val = section(facts.summary, "val").get(name)
            train = section(facts.summary, "train_clean").get(name)
        if finite(val) and finite(train):
            break
    else:
        return None
    if ((train - val) if "loss" in name else (val - train)) <= VAL_ABOVE_TRAIN_MARGIN:
        return None
    aug = section(facts.cfg, "augment")
    knobs = {"mixup_alpha": "mixup alpha", "cutmix_alpha": "cutmix alpha"}
    knobs["label_smoothing"] = "label smoothing"
    used = [f"{title} {aug[key]}" for key, title in knobs.items() if finite(aug.get(key)) and aug[key] > 0]
    used += ["SpecAugment"] if aug.get("specaugment") else []
    text = (f"At the best epoch ({facts.best}) the validation {name} ({fmt(val)}) is better than the "
            f"clean-training {name} ({fmt(train)}). ")
    if used:
        return text + (f"Augmentation was on ({', '.join(used)}); it holds the training fit back and can "
                       "explain a small gap, but a large one also points at an easier or leaked validation "
                       "split.")
    return text + ("No augmentation (mixup, cutmix, SpecAugment) was on, so this is unexpected: check that "
                   "validation clips do not share recordings or speakers with training clips.")


def _at_best(facts: RunFacts, column: str) -> float | None:
    """``column`` of metrics.csv at the best epoch, or None when absent or not finite."""
    m = facts.metrics
    if m is None or facts.best is None or column not in m or "epoch" not in m:
        return None
    values = numeric(m[column])[numeric(m["epoch"]) == facts.best]
    return float(values[0]) if len(values) and np.isfinite(values[0]) else None


def _best_at_edge(facts: RunFacts) -> str | None:
    if facts.best is None:
        return None
    metrics = facts.metrics
    epochs = numeric(metrics["epoch"]) if metrics is not None and "epoch" in metrics else np.array([])
    if np.isfinite(epochs).any():
        first, last = np.nanmin(epochs), np.nanmax(epochs)
    elif isinstance(facts.epochs_run, int):
        first, last = 0, facts.epochs_run - 1
    else:
        return None
    if first == last:
        return f"Only one epoch ({facts.best}) was run, so the curves say nothing about convergence."
    if facts.best == first:
        text = f"The best epoch is the first one ({facts.best}): "
        val = _at_best(facts, facts.monitor) if facts.monitor else None
        majority = (facts.baseline or {}).get("accuracy")
        if facts.monitor == "val_accuracy" and finite(val) and finite(majority) and val <= majority + 0.01:
            return text + (f"validation accuracy ({fmt(val)}) was already at the majority-class rate "
                           f"({fmt(majority)}), so no later epoch could beat it on accuracy: with classes this "
                           "imbalanced, choose the checkpoint by train.monitor=val_balanced_accuracy (or "
                           "val_macro_f1) and weight the classes (train.class_weights=balanced or "
                           "data.sampler=balanced).")
        return text + "the model may not have learned — check the learning rate."
    if facts.best == last:
        return f"The best epoch is the last one ({facts.best}): still improving — more epochs may help."
    return None


def _at_or_below_baseline(facts: RunFacts) -> list[str]:
    if facts.scores is None or facts.baseline is None:
        return []
    split, values = facts.scores
    notes = []
    majority = ("majority-class baseline", "always predicting the most frequent training class")
    prior = ("prior baseline", "ranking the labels by their training frequency, whatever the audio")
    for key, name, (base_name, what) in (("accuracy", "accuracy", majority),
                                         ("balanced_accuracy", "balanced accuracy", majority),
                                         ("lwlrap", "lwlrap", prior), ("mAP", "mAP", prior)):
        score, base = values.get(key), facts.baseline.get(key)
        if finite(score) and finite(base) and score <= base:
            notes.append(f"The {SPLIT_NAMES.get(split, split)} {name} ({fmt(score)}) is at or below the "
                         f"{base_name} ({fmt(base)}): the model does no better than {what}.")
    return notes


def _nonfinite_losses(raw: pd.DataFrame | None) -> str:
    """Loss cells written as nan/inf (an empty cell is a value not computed, not a divergence)."""
    if raw is None:
        return ""
    found = []
    for col in [c for c in raw.columns if "loss" in c]:
        text = raw[col].str.strip()
        values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(float)
        bad = (text != "").to_numpy() & ~np.isfinite(values)
        if bad.any():
            epochs = raw["epoch"][bad] if "epoch" in raw else pd.Series(np.flatnonzero(bad))
            found.append(f"{col} at epoch {', '.join(map(str, epochs))}")
    return "; ".join(found)


def find_best_epoch(metrics: pd.DataFrame, monitor: str) -> int | None:
    """The epoch with the highest ``monitor`` (lowest if it names a loss); None when it has no values."""
    if monitor not in metrics:
        return None
    values = numeric(metrics[monitor])
    if not np.isfinite(values).any():
        return None
    lower_is_better = "loss" in monitor
    values = np.where(np.isfinite(values), values, np.inf if lower_is_better else -np.inf)
    row = int(np.argmin(values) if lower_is_better else np.argmax(values))
    return int(metrics["epoch"].iloc[row]) if "epoch" in metrics else row


def finite(value: Any) -> bool:
    """True for a finite int or float (not a bool, not None)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def numeric(series: pd.Series) -> np.ndarray:
    """A column as floats, with anything unparsable as NaN."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def section(mapping: Any, key: str) -> dict[str, Any]:
    """``mapping[key]`` when it is a dict, else an empty dict (configs and summaries are read loosely)."""
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return value if isinstance(value, dict) else {}


def counts(values: Mapping[str, Any]) -> str:
    """``{"train": 3, "val": 1}`` -> ``"train 3, val 1"``."""
    return ", ".join(f"{key} {value}" for key, value in values.items())


def fmt(value: Any) -> str:
    """A number for a report cell: floats with 4 decimals, None as a dash."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return "—" if value is None else str(value)


def cell(text: str) -> str:
    """``text`` safe inside a markdown table cell."""
    return str(text).replace("|", "\\|")
