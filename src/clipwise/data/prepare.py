"""From a config to prepared data: manifest -> checked files -> splits -> decoded audio, and the ``auto`` settings
resolved from the training split.

:func:`prepare_data` never changes the config it is given (scikit-learn's rule: parameters are not modified):
it returns a resolved copy, with every ``auto`` replaced by what was chosen, beside the prepared data. Every kind
of run that trains on a manifest (deep networks, classical baselines) prepares its data here, and writes the
files that describe it into the run folder with :func:`write_run_files`.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clipwise.config import AUTO_EPOCH_RANGE, AUTO_EPOCH_STEPS, Config
from clipwise.data.audio import audio_info
from clipwise.data.check import SHORT_CLIP_SECONDS
from clipwise.data.dataset import AudioStore
from clipwise.data.leakage import check_split_leakage
from clipwise.data.manifest import check_files, label_names, parse_labels, read_manifest
from clipwise.data.splits import assign_splits, rows_in_shared_groups, shared_groups, split_warnings
from clipwise.errors import AudioError, ConfigError, ManifestError
from clipwise.run import RunFolder
from clipwise.task import Task, resolve_task

RUN_DIR_ENV = "CLIPWISE_RUN_DIR"  # shared with DDP child processes, which re-run the same command
SPLITS = ("train", "val", "test")


@dataclass
class PreparedData:
    """The manifest split three ways, decoded, with the task's targets."""

    frame: pd.DataFrame
    labels: list[str]
    task: Task
    stores: dict[str, AudioStore]
    targets: dict[str, np.ndarray]
    skipped: pd.DataFrame
    leakage: dict = field(default_factory=lambda: {"checked": False})
    auto: dict = field(default_factory=dict)  # what the auto settings were set from (the report explains them)

    def part(self, split: str) -> pd.DataFrame:
        """The manifest rows of ``split``, in the order of its store and targets."""
        return self.frame[self.frame["split"] == split]


def default_run_dir(config: Config, *, kind: str = "") -> Path:
    """``runs/<manifest>-<model>[-<kind>]-<timestamp>``, the same in every DDP process of one launch."""
    if os.environ.get(RUN_DIR_ENV) and not kind:
        return Path(os.environ[RUN_DIR_ENV])
    stem = Path(config.data.manifest).stem if config.data.manifest else "data"
    if stem == "manifest" and config.data.manifest:
        stem = Path(config.data.manifest).parent.name
    return Path("runs") / f"{stem}-{config.model.name}{'-' + kind if kind else ''}-{time.strftime('%Y%m%d-%H%M%S')}"


def auto_sample_rate(paths: list[str], *, cap_hz: int = 16000, sample: int = 500) -> int:
    """The most common native sample rate of the files, at most ``cap_hz`` (16 kHz covers most sound
    classification needs and keeps the STFT cheap on CPU)."""
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(paths), size=min(sample, len(paths)), replace=False)
    rates = Counter(audio_info(paths[i]).sample_rate for i in chosen)
    return int(min(cap_hz, rates.most_common(1)[0][0]))


def auto_clip_seconds(durations: np.ndarray, *, percentile: float = 95, lo: float = 0.5, hi: float = 10.0) -> float:
    """A clip length that holds 95 % of the training clips whole, rounded up to 0.1 s, within [lo, hi].

    Longer clips are randomly cropped in training and scored by windows in evaluation, so nothing is lost;
    a much longer input would mostly show the model padding.
    """
    # "lower": a value some clip has, so a few outliers (one 10-minute recording among short clips) cannot lift it
    value = float(np.percentile(durations, percentile, method="lower"))
    return float(min(hi, max(lo, math.ceil(value * 10 - 1e-6) / 10)))


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one pass over ``n_train`` clips (the last partial batch is dropped)."""
    return max(1, n_train // batch_size)


def auto_epochs(n_train: int, batch_size: int, *, steps: int = AUTO_EPOCH_STEPS,
                bounds: tuple[int, int] = AUTO_EPOCH_RANGE) -> int:
    """Epochs that give about ``steps`` optimiser steps, within ``bounds``.

    What a model needs to converge is closer to a number of updates than to a number of passes: a set of 1,400
    clips gets about 37 epochs, one of 2,300 about 23, one of 80,000 the minimum of 10.
    """
    return int(min(bounds[1], max(bounds[0], round(steps / steps_per_epoch(n_train, batch_size)))))


def clean_train_indices(n: int, k: int, *, seed: int) -> np.ndarray:
    """The fixed training subset scored without augmentation every epoch."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def _check_labels(df: pd.DataFrame) -> list[str]:
    train = df[df["split"] == "train"]
    known = set(label_names(train))
    for split in ("val", "test"):
        part = df[df["split"] == split]
        unknown = sorted({lab for v in part["label"] for lab in parse_labels(v)} - known)
        if unknown:
            rows = part[part["label"].map(lambda v: bool(set(parse_labels(v)) & set(unknown)))]
            raise ManifestError(
                f"label(s) {unknown} occur in the {split} split ({len(rows)} rows, e.g. {rows['path'].iloc[0]}) "
                "but never in train, so no model can learn them. Add training clips of those classes or drop "
                "the rows from the manifest."
            )
    return sorted(known)


def prepare_data(config: Config) -> tuple[Config, PreparedData]:
    """Read, check, split and decode the manifest named in ``config.data.manifest``.

    Args:
        config: the run's config; it is not modified. Nothing is written: see :func:`write_run_files`.

    Returns:
        ``(resolved, data)``: a copy of ``config`` with every ``auto`` setting (task, monitor, sample rate, clip
        length, epochs) resolved, and the prepared data.

    Raises:
        ConfigError: no manifest, or settings that contradict each other or the data.
        ManifestError, AudioError, LeakageError: bad manifest rows or files, or leaking splits.
    """
    if not config.data.manifest:
        raise ConfigError("no training data: pass --data MANIFEST.csv (make one with `clipwise prepare`)")
    resolved = config.model_copy(deep=True)
    data, train = resolved.data, resolved.train
    df = read_manifest(data.manifest)
    df, bad = check_files(df, skip_bad=data.skip_bad)
    df = assign_splits(df, test_fold=data.test_fold, val_fraction=data.val_fraction,
                       test_fraction=data.test_fraction, seed=train.seed, val_groups=data.val_groups)
    labels = _check_labels(df)
    if len(labels) < 2:
        raise ManifestError(f"the training split of {data.manifest} holds a single class ({labels[0] if labels else 'none'}"
                            "): a classifier needs at least two to tell apart. Add clips of other classes, or check "
                            "the label column")
    task = resolve_task(data.task, list(df.loc[df["split"] == "train", "label"]))
    data.task = task.name
    train.monitor = task.check_monitor(train.monitor)
    leakage = {"checked": False}
    if data.leakage_check:
        leakage = check_split_leakage(df, allow=data.allow_leakage, progress=train.progress)
    if data.sample_rate == "auto":
        data.sample_rate = auto_sample_rate(list(df.loc[df["split"] == "train", "path"]))
    stores, failed = {}, []
    for split in SPLITS:
        stores[split], bad_rows = AudioStore.load_checked(df[df["split"] == split], sample_rate=data.sample_rate,
                                                          progress=train.progress, stop_at_first=not data.skip_bad)
        if len(bad_rows) and not data.skip_bad:
            raise AudioError(f"{bad_rows['reason'].iloc[0]}\nfix or remove it, or pass --skip-bad to skip every file "
                             "that cannot be decoded (they are listed in the run folder)",
                             path=str(bad_rows["path"].iloc[0]))
        failed.append(bad_rows)
    if any(len(f) for f in failed):  # header fine, audio not: skipped like the files check_files found
        dropped = pd.concat(failed)
        bad = pd.concat([bad, dropped.drop(columns=["split"], errors="ignore")], ignore_index=True)
        df = df.drop(index=dropped.index)
        labels = _check_labels(df)
    targets = {split: task.encode(list(df.loc[df["split"] == split, "label"]), labels) for split in SPLITS}
    auto = {}
    if data.clip_seconds == "auto":
        durations = stores["train"].durations()
        data.clip_seconds = auto_clip_seconds(durations)
        auto["clip_seconds"] = {"value": data.clip_seconds, "longer": int((durations > data.clip_seconds + 1e-6).sum()),
                                "max": float(durations.max())}
    if resolved.optim.phases:
        planned = sum(ph.epochs for ph in resolved.optim.phases)
        if train.epochs not in ("auto", planned):
            raise ConfigError(f"train.epochs={train.epochs} disagrees with optim.phases, whose epochs add up "
                              f"to {planned}; leave train.epochs out")
        train.epochs = planned
    elif train.epochs == "auto":
        train.epochs = auto_epochs(len(targets["train"]), data.batch_size)
    return resolved, PreparedData(df, labels, task, stores, targets, bad, leakage, auto)


def check_resumable(run: RunFolder, data: PreparedData) -> None:
    """Before a run is resumed: the data must be what it started with (labels and the split of every clip), or
    its checkpoint does not fit and its numbers would mix two datasets. Nothing is written.

    Raises:
        ConfigError: what changed, and the two ways on.
    """
    problems = []
    saved = run.load_labels()
    if saved != data.labels:
        gone, new = sorted(set(saved) - set(data.labels)), sorted(set(data.labels) - set(saved))
        problems.append("labels " + "; ".join(p for p in (f"removed {gone[:5]}" if gone else "",
                                                          f"added {new[:5]}" if new else "") if p)
                        if gone or new else "labels in another order")
    if run.splits_path.is_file():
        before = pd.read_csv(run.splits_path, dtype=str, keep_default_na=False)
        now = data.frame.astype({"path": str, "split": str, "label": str})
        rows = lambda f: set(zip(f["path"], f["split"], f["label"]))  # noqa: E731
        lost, added = rows(before) - rows(now), rows(now) - rows(before)
        if lost or added:
            example = next(iter(lost or added))
            problems.append(f"{len(lost)} clip(s) left or changed split or label, {len(added)} arrived (e.g. "
                            f"{example[0]} [{example[1]}])")
    if problems:
        raise ConfigError(f"cannot resume {run.root}: the data changed since the run started ({'; '.join(problems)}); "
                          f"nothing was written. Restore the manifest it was trained on ({run.splits_path} lists "
                          "every clip), or train a new run with --out NEW_FOLDER")


def data_facts(config: Config, data: PreparedData) -> dict:
    """summary.json's ``data`` section of a run trained on ``data``: counts per split and class, the settings the
    data decided, silent and skipped clips, groups shared across splits and the test split's groups."""
    frame, split = data.frame, data.frame["split"]
    per_class: dict[str, dict[str, int]] = {lab: {} for lab in data.labels}
    for cell, s in zip(frame["label"], split):
        for lab in parse_labels(cell):
            per_class[lab][s] = per_class[lab].get(s, 0) + 1
    facts = {
        **{f"n_{s}": int(len(data.targets[s])) for s in SPLITS}, "n_classes": len(data.labels),
        "sample_rate": int(config.data.sample_rate), "clip_seconds": float(config.data.clip_seconds),
        "class_counts": per_class,
        "silent_clips": {s: int(sum(data.stores[s].silent)) for s in SPLITS},
        # clips shorter than one 25 ms analysis window: padded with silence, so next to nothing to learn from
        "short_clips": {s: int(sum(len(w) < SHORT_CLIP_SECONDS * data.stores[s].sample_rate
                                   for w in data.stores[s].waves)) for s in SPLITS},
        "skipped_files": int(len(data.skipped)),
        "groups_shared": {**{f"train_{s}": len(shared_groups(frame, split, "train", s)) for s in ("val", "test")},
                          "test_rows": rows_in_shared_groups(frame, split)},
    }
    if "group" in frame:
        facts["test_groups"] = int(frame.loc[split == "test", "group"].nunique())
    if "clip_seconds" in data.auto:
        facts["clip_seconds_auto"] = data.auto["clip_seconds"]
    facts["split_warnings"] = split_warnings(frame)
    return facts


def write_run_files(run: RunFolder, config: Config, data: PreparedData, *, kind: str) -> None:
    """What every run trained on a manifest records about itself: run.json (kind and task), the resolved
    config, the labels, the split of every clip, the leakage check's findings and the files ``--skip-bad``
    skipped."""
    run.root.mkdir(parents=True, exist_ok=True)
    if len(data.skipped):
        data.skipped.to_csv(run.skipped_files_path, index=False)
    run.write_info(kind=kind, task=data.task)
    run.save_config_yaml(config.to_dict())
    run.save_labels(data.labels)
    kept = [c for c in ("path", "label", "split", "start", "end") if c in data.frame]
    data.frame[kept].to_csv(run.splits_path, index=False)
    run.save_json(run.leakage_path, data.leakage)
