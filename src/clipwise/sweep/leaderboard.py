"""The sweep's leaderboard (markdown and CSV), rewritten after every trial: the trials' values, validation score
(the objective), test and clean-train scores beside it, epochs trained and attempts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from clipwise.run import atomic_write_text
from clipwise.sweep.trials import open_storage


def mean_score(summaries: list[dict[str, Any]], split: str, metric: str) -> float | None:
    """The mean of ``metric`` on ``split`` over run summaries (one run, or a CV's folds); None if one lacks it."""
    scores = [(s.get(split) or {}).get(metric) for s in summaries]
    return float(sum(scores) / len(scores)) if scores and all(v is not None for v in scores) else None


def refresh_leaderboard(out: str | os.PathLike) -> pd.DataFrame:
    """Rewrite and return the leaderboard of the sweep in ``out`` (e.g. after other workers finished)."""
    import optuna

    out = Path(out).absolute()
    study = optuna.load_study(study_name="clipwise", storage=open_storage(out / "study.db"))
    return write_leaderboard(study, out)


def _mean_epochs(run_dir: Path) -> float | None:
    """Epochs trained by a trial's run, or the mean over its CV folds (a time budget makes it differ)."""
    files = [f for f in sorted(run_dir.glob("fold*/summary.json")) or [run_dir / "summary.json"] if f.is_file()]
    epochs = [e for e in (json.loads(f.read_text()).get("epochs_run") for f in files) if e is not None]
    return round(float(sum(epochs) / len(epochs)), 1) if epochs else None


def write_leaderboard(study, out: Path) -> pd.DataFrame:
    """leaderboard.csv and leaderboard.md of the finished trials, best validation score first.

    ``epochs`` is what the trial trained (a mean over CV folds; under ``train.max_minutes`` settings that cost more
    compute get fewer). ``attempts`` counts a trial that was cut off and retried once per attempt; ``minutes`` is
    the wall time of the attempt that finished it (a resumed run or CV goes on from what earlier attempts kept).
    """
    import optuna

    S = optuna.trial.TrialState
    metric = study.user_attrs.get("metric", "accuracy")
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    rows = []
    for t in trials:
        if t.state != S.COMPLETE:
            continue
        attempts, earlier = 1, t.user_attrs.get("retry_of")
        while earlier in by_number:
            attempts, earlier = attempts + 1, by_number[earlier].user_attrs.get("retry_of")
        rows.append({"trial": t.number, "run": t.user_attrs.get("run"), f"val_{metric}": t.value,
                     f"test_{metric}": t.user_attrs.get(f"test_{metric}"),
                     f"train_clean_{metric}": t.user_attrs.get(f"train_clean_{metric}"),
                     **({"folds": t.user_attrs["folds"]} if "folds" in t.user_attrs else {}),
                     "epochs": _mean_epochs(out / t.user_attrs.get("run", "")), "attempts": attempts,
                     "minutes": round((t.duration.total_seconds() if t.duration else 0) / 60, 2), **t.params})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(f"val_{metric}", ascending=study.direction.name == "MINIMIZE", kind="stable")
    atomic_write_text(out / "leaderboard.csv", frame.to_csv(index=False))
    failed = [t for t in trials if t.state == S.FAIL]
    own = sum("error" in t.user_attrs for t in failed)
    cut = len(failed) - own
    pruned = sum(t.state == S.PRUNED and "duplicate_of" not in t.user_attrs for t in trials)
    counts = f"{len(frame)} finished trial{'s' * (len(frame) != 1)}" + (
        f", {pruned} pruned" if pruned else "") + (
        f", {own} failed on {'their' if own > 1 else 'its'} own" if own else "") + (
        f", {cut} attempt{'s' * (cut != 1)} cut off" if cut else "")
    lines = [f"# Sweep leaderboard ({counts})", "",
             f"Ranked by validation {metric}; the test column is reported, never used to choose."
             + (" Each trial is a cross-validation: its scores are means over its folds." if study.user_attrs.get("cv")
                is not None else "")
             + " `minutes` is the wall time of the attempt that finished a trial.", ""]
    if len(frame):
        cols = list(frame.columns)
        scores = {f"{split}_{metric}" for split in ("val", "test", "train_clean")}
        lines += ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
        for _, r in frame.iterrows():
            lines.append("| " + " | ".join(
                (f"{v:.4f}" if c in scores else f"{v:g}") if isinstance(v, float) else str(v)
                for c, v in r.items()) + " |")
    atomic_write_text(out / "leaderboard.md", "\n".join(lines) + "\n")
    return frame.reset_index(drop=True)
