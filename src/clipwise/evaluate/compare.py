"""`clipwise compare`: one leaderboard of runs, cross-validations and Lightning CSV logs, with intervals.

Every entry carries an interval, so a reader sees whether two scores differ by more than their noise:
- a run folder: its test score, with a 95 % Wilson interval for accuracy (a proportion of clips) or a percentile
  bootstrap over the clips of predictions_<split>.csv for any other metric;
- a cross-validation folder: the mean over folds with its standard deviation and Student-t interval;
- a Lightning ``metrics.csv`` (CSVLogger), or a folder holding ``lightning_logs/version_*/metrics.csv``: the
  best epoch's value of the metric column (no interval: a log holds no predictions).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clipwise.errors import RunError
from clipwise.evaluate.metrics import bootstrap_intervals, proportion_interval
from clipwise.evaluate.figures import save_figure
from clipwise.run import RunFolder, atomic_write_text
from clipwise.task import Task, get_task

BOOTSTRAP_SAMPLES = 1000


@dataclass
class Entry:
    """One row of the leaderboard."""

    name: str
    kind: str  # run | cv | lightning
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    std: float | None = None
    n: int | None = None  # clips scored (run), folds (cv), epochs (lightning)
    model: str | None = None
    params: int | None = None
    train_minutes: float | None = None
    source: str = ""
    shared: str = ""  # what its training and test data share (groups, audio), "" when nothing or unknown
    test_set: str = ""  # a fingerprint of the clips a run was scored on ("" when unknown)
    flag: str = ""  # why the entry's value should not be read as it stands (diverged, another test set)


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or metric in ("ece", "error")


def _bootstrap(y: np.ndarray, probs: np.ndarray, metric: str, *, task: Task, labels: list[str],
               seed: int = 0) -> tuple[float, float] | None:
    """A 95 % percentile-bootstrap interval of ``metric`` over the clips; None when the metric is undefined on
    resamples (e.g. a tag never present)."""
    fast = task.resampler(y, probs)
    if metric in fast(np.arange(min(len(y), 1))):
        score = fast
    else:  # a score the resampler does not sum (weighted_f1, ...): re-score each resample
        def score(idx):
            return task.metrics(y[idx], probs[idx], labels=labels)
    found = bootstrap_intervals(len(y), score, [metric], resamples=BOOTSTRAP_SAMPLES, seed=seed)
    return found.get(metric)


def _from_run(path: Path, metric: str, split: str) -> Entry:
    run = RunFolder(path)  # summary.json and run.json (and predictions, for an interval) are what is read
    summary = run.load_summary()
    scores = summary.get(split)
    if not isinstance(scores, dict) or metric not in scores:
        have = sorted(k for k, v in (scores or {}).items() if isinstance(v, (int, float)))
        raise RunError(f"{path}/summary.json has no {split} {metric!r}" + (f"; it has {have}" if have else ""))
    entry = Entry(path.name, "run", float(scores[metric]), n=scores.get("n"),
                  model=(summary.get("model") or {}).get("name"), params=(summary.get("model") or {}).get("params"),
                  train_minutes=round((summary.get("timing") or {}).get("train_seconds", float("nan")) / 60, 2),
                  source=str(path), shared=_shared(summary), test_set=_test_set(run, split))
    if summary.get("diverged") or not np.isfinite(entry.value):
        entry.flag = "diverged"
    if metric == "accuracy" and isinstance(entry.n, int) and entry.n > 0:
        entry.ci_low, entry.ci_high = proportion_interval(round(entry.value * entry.n), entry.n)
    elif run.predictions_path(split).is_file():
        _, probs, y = run.load_predictions(split)
        if y is not None:
            keep = run.task.labelled(y)
            ci = _bootstrap(y[keep], probs[keep], metric, task=run.task, labels=run.load_labels())
            if ci is not None:
                entry.ci_low, entry.ci_high = ci
    return entry


def _test_set(run: RunFolder, split: str) -> str:
    """A short fingerprint of the clips (and their labels) a run's ``split`` was scored on."""
    import hashlib

    if not run.predictions_path(split).is_file():
        return ""
    frame = pd.read_csv(run.predictions_path(split), usecols=["path", "label"], dtype=str, keep_default_na=False)
    rows = sorted(zip(frame["path"].map(lambda p: Path(p).name), frame["label"]))
    return hashlib.sha1(repr(rows).encode()).hexdigest()[:8]


def _shared(summary: dict) -> str:
    """What a run's training and test data share, in words ("" for nothing found or not known)."""
    parts = []
    groups = ((summary.get("data") or {}).get("groups_shared") or {}).get("train_test", 0)
    if groups:
        parts.append(f"{groups} group(s)")
    leaks = (summary.get("leakage") or {}).get("train_test") or {}
    parts += [f"{n} {kind.replace('_', ' ')}" for kind, n in leaks.items() if kind != "group_leak"]
    return ", ".join(parts)


def _from_cv(path: Path, metric: str) -> Entry:
    summary = _cv_summary(path)
    stats = summary["mean"].get(metric)
    if stats is None:
        raise RunError(f"{path}/cv_summary.json has no {metric!r}; it has {sorted(summary['mean'])}")
    leaks = sorted({kind for f in summary["folds"].values() for kind in (f.get("leakage") or {})})
    return Entry(path.name, "cv", stats["mean"], stats["ci_low"], stats["ci_high"], stats["std"], stats["n"],
                 train_minutes=summary.get("train_minutes_total"), source=str(path),
                 shared=", ".join(k.replace("_", " ") for k in leaks))


def _lightning_column(frame: pd.DataFrame, metric: str) -> str | None:
    short = {"accuracy": "acc", "macro_f1": "f1", "balanced_accuracy": "bal_acc"}.get(metric, metric)
    for name in (metric, f"val_{metric}", f"val/{metric}", f"val_{short}", f"val/{short}", f"valid_{metric}",
                 f"{metric}_epoch", f"val_{metric}_epoch"):
        if name in frame.columns:
            return name
    return None


def _from_lightning(path: Path, metric: str) -> Entry:
    frame = pd.read_csv(path)
    column = _lightning_column(frame, metric)
    if column is None:
        raise RunError(f"{path} has no column for {metric!r} (looked for {metric}, val_{metric}, val/{metric}, ...); "
                       f"its columns: {', '.join(map(str, frame.columns))}. Pass --metric with one of them")
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    if values.empty:
        raise RunError(f"{path}: column {column!r} holds no numbers")
    best = values.min() if lower_is_better(metric) else values.max()
    name = path.parent.parent.parent.name if path.parent.parent.name == "lightning_logs" else path.parent.name
    return Entry(f"{name}/{path.parent.name}" if path.parent.name.startswith("version_") else name, "lightning",
                 float(best), n=int(len(values)), source=str(path))


def resolve_metric(paths: Sequence[str | os.PathLike], metric: str = "auto", *, split: str = "test") -> str:
    """``auto``: the main metric of the run and CV folders' task (lwlrap for multi-label runs, else accuracy); any
    other name is returned as given.

    Raises:
        RunError: ``auto`` over a mix of single- and multi-label folders (name the metric both have).
    """
    if metric != "auto":
        return metric
    tasks = {}
    for raw in paths:
        path = Path(raw)
        if RunFolder(path).cv_summary_path.is_file():
            tasks[path] = get_task(_cv_summary(path)["task"])
        elif RunFolder(path).info_path.is_file():
            tasks[path] = RunFolder(path).task
    if len(set(tasks.values())) > 1:
        multi = [str(p) for p, t in tasks.items() if t.multi_label]
        raise RunError(f"{multi} are multi-label and the others single-label: they share no main score; pass "
                       "--metric with one both have (macro_f1, loss)")
    return next(iter(tasks.values())).main_metric if tasks else "accuracy"


def _cv_summary(path: Path) -> dict:
    return json.loads(RunFolder(path).cv_summary_path.read_text())


def collect(paths: Sequence[str | os.PathLike], *, metric: str = "accuracy", split: str = "test") -> list[Entry]:
    """Leaderboard entries for run folders, CV folders and Lightning CSV logs, best first.

    Raises:
        RunError: a path is none of these, or lacks the metric.
    """
    entries = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.suffix == ".csv":
            entries.append(_from_lightning(path, metric))
        elif RunFolder(path).cv_summary_path.is_file():
            entries.append(_from_cv(path, metric))
        elif RunFolder(path).summary_path.is_file():
            entries.append(_from_run(path, metric, split))
        elif path.is_dir() and (logs := sorted(path.glob("**/lightning_logs/version_*/metrics.csv"))
                                or sorted(path.glob("version_*/metrics.csv"))):
            entries.extend(_from_lightning(p, metric) for p in logs)
        else:
            raise RunError(f"{path} is not a run folder (summary.json), a cross-validation folder (cv_summary.json) "
                           "or a Lightning CSV log (metrics.csv)")
    names = [e.name for e in entries]
    for e in entries:  # two folders of one name (fold1 of two CVs): name them by their parent too
        if names.count(e.name) > 1 and e.kind != "lightning":
            e.name = f"{Path(e.source).parent.name}/{e.name}"
    sign = 1.0 if lower_is_better(metric) else -1.0
    # a diverged or non-finite entry ranks last whatever its number says
    entries.sort(key=lambda e: (bool(e.flag) or not np.isfinite(e.value), sign * e.value if np.isfinite(e.value)
                                else 0.0))
    sets = sorted({e.test_set for e in entries if e.test_set})
    if len(sets) > 1:  # runs scored on different clips: their numbers do not rank against each other
        letters = {s: chr(ord("A") + i) for i, s in enumerate(sets)}
        for e in entries:
            if e.test_set:
                e.flag = ", ".join(x for x in (e.flag, f"test set {letters[e.test_set]}") if x)
    return entries


def _fmt(v: float | None, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def leaderboard_markdown(entries: list[Entry], *, metric: str, split: str) -> str:
    lines = [f"| rank | name | kind | {metric} | ± std | 95 % interval | n | model | params | train min | flag |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, e in enumerate(entries, 1):
        ci = f"[{_fmt(e.ci_low)}, {_fmt(e.ci_high)}]" if e.ci_low is not None else ""
        value = _fmt(e.value) or "nan"
        lines.append(f"| {i} | {e.name} | {e.kind} | {value} | {_fmt(e.std)} | {ci} | {e.n or ''} | "
                     f"{e.model or ''} | {f'{e.params:,}' if e.params else ''} | {_fmt(e.train_minutes, 1)} | "
                     f"{e.flag} |")
    notes: list[str] = []
    if any("diverged" in e.flag for e in entries):
        notes += ["", "Diverged entries (training became non-finite) rank last: their scores are not a result."]
    if any("test set" in e.flag for e in entries):
        notes += ["", "The runs were scored on different test sets (the flag column's letters): a ranking across "
                  "letters compares data as much as models; compare runs scored on the same clips."]
    shared = [e for e in entries if e.shared]
    clean = [e for e in entries if not e.shared and e.kind != "lightning"]
    if shared:
        notes += ["", "Protocols differ: " + "; ".join(f"{e.name} was tested on data whose sources its training "
                                                       f"shared ({e.shared})" for e in shared)
                  + ". Such a score measures recognition of sources (speakers, recordings) the model has heard."
                  + (" " + ", ".join(e.name for e in clean) + " kept training and test sources apart, so the gap "
                     "between the two kinds of entry is the cost of meeting new sources, not a difference in "
                     "model quality." if clean else "")]
    notes += ["", f"Runs: the {split} split; intervals are Wilson (accuracy) or a {BOOTSTRAP_SAMPLES}-sample "
             "bootstrap over clips. Cross-validations: mean over folds, Student-t interval (folds share training "
             "data, so it is somewhat narrow). Lightning logs: the best epoch's value, no interval. Intervals that "
             "overlap mean the ranking between those entries is not established."]
    return "\n".join(lines + notes) + "\n"


def plot_leaderboard(entries: list[Entry], path: str | os.PathLike, *, metric: str) -> Path:

    fig = Figure(figsize=(7.5, max(2.5, 0.45 * len(entries) + 1.2)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(entries))[::-1]
    values = [e.value for e in entries]
    # (a Wilson bound at 100 % sits a rounding error below the value: never a negative error bar)
    lo = [max(0.0, e.value - e.ci_low) if e.ci_low is not None else 0 for e in entries]
    hi = [max(0.0, e.ci_high - e.value) if e.ci_high is not None else 0 for e in entries]
    colors = {"run": "C0", "cv": "C2", "lightning": "C7"}
    ax.barh(y, values, xerr=[lo, hi], color=[colors[e.kind] for e in entries], capsize=3)
    ax.set_yticks(y, [e.name for e in entries], fontsize=8)
    ax.set(xlabel=metric, title=f"{metric} (bars: 95 % interval; blue run, green CV, grey log)")
    return save_figure(fig, path, dpi=110)


def leaderboard_csv(entries: list[Entry]) -> str:
    """The entries as CSV, one row each (``clipwise compare --format csv``)."""
    return pd.DataFrame([asdict(e) for e in entries]).to_csv(index=False)


def write_leaderboard(entries: list[Entry], out: str | os.PathLike, *, metric: str, split: str) -> Path:
    """leaderboard.md, leaderboard.csv and leaderboard.png in ``out``; returns the markdown's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = leaderboard_markdown(entries, metric=metric, split=split)
    atomic_write_text(out / "leaderboard.md", f"# Leaderboard: {metric}\n\n![Leaderboard](leaderboard.png)\n\n" + md)
    frame = pd.DataFrame([asdict(e) for e in entries])
    frame.insert(0, "rank", range(1, len(entries) + 1))
    atomic_write_text(out / "leaderboard.csv", frame.rename(columns={"value": metric}).to_csv(index=False))
    plot_leaderboard(entries, out / "leaderboard.png", metric=metric)
    return out / "leaderboard.md"
