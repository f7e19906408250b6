"""``clipwise evaluate RUN --recompute``: regenerate every number of a run's report and report any difference.

Three independent checks, each against what the run folder states:
1. metrics: summary.json's scores recomputed from the saved predictions_<split>.csv;
2. checkpoint: the best checkpoint re-scores the audio of every saved prediction (the rows of splits.csv,
   and the clean-training subset drawn with the run's seed); its probabilities and scores are compared with
   the saved ones;
3. report: report.md regenerated in a scratch copy of the folder and compared line by line.
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipwise.data.prepare import clean_train_indices
from clipwise.errors import RunError
from clipwise.evaluate.report import write_report
from clipwise.kinds import load_run
from clipwise.run import RunFolder

SPLITS = ("val", "test", "train_clean")


def _metrics(run: RunFolder, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    labels = run.load_labels()
    thresholds = run.threshold_array(labels) if run.thresholds_path.is_file() else None
    keep = run.task.labelled(y)
    return run.task.metrics(y[keep], probs[keep], labels=labels, thresholds=thresholds)


def _compare(name: str, stated: dict, recomputed: dict, tolerance: float) -> list[dict[str, Any]]:
    rows = []
    for key, value in recomputed.items():
        if key not in stated or not isinstance(value, (int, float)) or not isinstance(stated[key], (int, float)):
            continue
        a, b = float(stated[key]), float(value)
        both_nan = bool(np.isnan(a) and np.isnan(b))
        diff = 0.0 if both_nan else abs(a - b)
        rows.append({"check": name, "key": key, "stated": a, "recomputed": b, "difference": diff,
                     "ok": both_nan or bool(np.isfinite(diff) and diff <= tolerance)})
    return rows


def _split_frames(run: RunFolder) -> dict[str, pd.DataFrame]:
    """The rows each saved prediction file was made from, in the same order."""
    if not run.splits_path.is_file():
        raise RunError(f"{run.splits_path} is missing: the run's clips are unknown, so the checkpoint cannot re-score "
                       "them")
    df = run.load_splits()
    frames = {s: df[df["split"] == s].reset_index(drop=True) for s in ("val", "test")}
    cfg = run.load_config_dict()
    train = df[df["split"] == "train"].reset_index(drop=True)
    clean = clean_train_indices(len(train), int(cfg["data"]["clean_train_clips"]), seed=int(cfg["train"]["seed"]))
    frames["train_clean"] = train.iloc[clean].reset_index(drop=True)
    return frames


def recompute_run(run_dir: str | Path, *, tolerance: float = 1e-4, checkpoint: bool = True) -> dict[str, Any]:
    """Recompute a run's numbers; returns ``{"ok", "checks": [...], "report_diff": [...]}`` and writes it to
    ``recompute.json`` in the run folder.

    Args:
        run_dir: a finished run folder.
        tolerance: largest absolute difference accepted for a score (and for a probability).
        checkpoint: also re-score the audio with the best checkpoint (the slow part).
    """
    run = RunFolder.open(run_dir)
    summary = run.load_summary()
    if not summary:
        raise RunError(f"{run.root} has no summary.json: the run has not finished")
    checks: list[dict[str, Any]] = []
    saved = {}
    for split in SPLITS:
        if run.predictions_path(split).is_file():
            frame, probs, y = run.load_predictions(split)
            saved[split] = (frame, probs, y)
            if y is not None and isinstance(summary.get(split), dict):
                checks += _compare(f"{split}: summary.json vs predictions_{split}.csv", summary[split],
                                   _metrics(run, y, probs), tolerance)
    if checkpoint:
        predictor = load_run(run.root)
        frames = _split_frames(run)
        for split, (frame, probs, y) in saved.items():
            source = frames[split]
            if list(source["path"]) != list(frame["path"]):
                checks.append({"check": f"{split}: clips", "key": "paths", "stated": len(frame),
                               "recomputed": len(source), "difference": float("inf"), "ok": False})
                continue
            fresh = predictor.predict_frame(source)
            diff = float(np.max(np.abs(fresh - probs))) if len(probs) else 0.0
            checks.append({"check": f"{split}: checkpoint vs predictions_{split}.csv", "key": "max |probability|",
                           "stated": 0.0, "recomputed": diff, "difference": diff, "ok": diff <= tolerance})
            if y is not None and isinstance(summary.get(split), dict):
                checks += _compare(f"{split}: summary.json vs checkpoint", summary[split],
                                   _metrics(run, y, fresh), tolerance)
    report_diff: list[str] = []
    if run.report_path.is_file():
        old = run.report_path.read_text().splitlines()
        # the report is titled by the folder's name when written: a copied or renamed run regenerates under that
        title = old[0].removeprefix("# Run report: ").strip() if old and old[0].startswith("# Run report: ") else ""
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / (title if title and "/" not in title and title not in (".", "..") else run.root.name)
            shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("checkpoints", "figures", "evaluations"))
            (copy / "checkpoints").symlink_to(run.checkpoints_dir.resolve(), target_is_directory=True)
            new = write_report(copy).read_text().splitlines()
        diff = list(difflib.unified_diff(old, new, "report.md", "regenerated", lineterm="", n=0))[2:]
        report_diff = [ln for ln in diff if not ln.startswith("@@")]
    result = {"ok": all(c["ok"] for c in checks) and not report_diff, "tolerance": tolerance, "checks": checks,
              "report_diff": report_diff}
    run.save_json(run.recompute_path, result)
    return result
