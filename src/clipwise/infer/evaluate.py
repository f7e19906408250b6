"""Evaluate a trained run on one of its splits or on another manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from clipwise.data.manifest import check_files, parse_labels, read_manifest
from clipwise.errors import ManifestError, RunError
from clipwise.kinds import load_run
from clipwise.run import RunFolder, atomic_write_text, to_jsonable


def _run_split_frame(run: RunFolder, split: str) -> pd.DataFrame:
    path = run.splits_path
    if not path.is_file():
        raise RunError(f"{path} is missing: the run's split assignment is unknown; pass --data MANIFEST instead")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    part = df[df["split"] == split]
    if part.empty:
        raise ManifestError(f"the run has no {split!r} split; choose one of {sorted(set(df['split']))}")
    return part.reset_index(drop=True)


def evaluate_run(
    run_dir: str | Path, *, data: str | Path | None = None, split: str | None = None, checkpoint: str = "best",
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Score a run's checkpoint on a split of its own data or on another manifest, and save the predictions.

    Args:
        run_dir: the run folder.
        data: another manifest (its labels must be among the model's).
        split: which split (default ``test`` for the run's own data; every row of ``data``).
        checkpoint: ``best`` or ``last``.
        skip_bad: score the rows whose audio can be read and report how many were skipped.

    Returns:
        ``{"source", "checkpoint", "metrics", "predictions"}``.

    Raises:
        RunError, ManifestError: missing run files, unknown split, labels the model does not know.
    """
    run = RunFolder.open(run_dir)
    predictor = load_run(run.root, checkpoint=checkpoint)
    labels = predictor.labels
    if data is None:
        split = split or "test"
        df = _run_split_frame(run, split)
        source, name = f"{run.root} [{split}]", split
    else:
        df = read_manifest(data)
        if split is not None:
            if "split" not in df.columns:
                raise ManifestError(f"{data} has no split column, so --split {split} cannot select rows")
            df = df[df["split"] == split].reset_index(drop=True)
        source, name = f"{data}" + (f" [{split}]" if split else ""), Path(data).stem + (f"_{split}" if split else "")
        unknown = sorted({lab for v in df["label"] for lab in parse_labels(v)} - set(labels))
        if unknown:
            raise ManifestError(
                f"{data} has labels the model was not trained on: {unknown}. The model knows {labels}; "
                "drop those rows or retrain with them."
            )
    df, skipped = check_files(df, skip_bad=skip_bad)
    probs = predictor.predict_frame(df)
    task = run.task
    y = task.encode(list(df["label"]), labels)
    thresholds = run.threshold_array(labels) if run.thresholds_path.is_file() else None
    metrics = task.metrics(y, probs, labels=labels, thresholds=thresholds)
    out_dir = run.evaluations_dir
    out_dir.mkdir(exist_ok=True)
    # written straight into evaluations/: going through RUN/predictions_<split>.csv would replace (and then
    # move away) the predictions the training wrote there
    final = RunFolder(out_dir).save_predictions(f"{name}_{checkpoint}", list(df["path"]), y, probs, labels=labels,
                                                thresholds=thresholds, task=task)
    atomic_write_text(out_dir / f"metrics_{name}_{checkpoint}.json",
                      json.dumps(to_jsonable(metrics), indent=2))
    return {"source": source, "checkpoint": checkpoint, "metrics": metrics, "predictions": str(final),
            "skipped": [{"path": p, "reason": r} for p, r in zip(skipped["path"], skipped["reason"])]}
