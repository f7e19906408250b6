"""The cross-validation report: per-fold scores, mean +/- std with a 95 % interval, pooled out-of-fold results.

Built only from the fold run folders (their summary.json, predictions_test.csv, leakage.json and reports), so
every number can be recomputed from the CV folder. Written by ``clipwise cv`` after each invocation, also
when only some folds are finished (the report says which).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clipwise.errors import RunError
from clipwise.evaluate._notes import automatic_notes, cell, fmt
from clipwise.evaluate.figures import plot_confusion, save_figure
from clipwise.evaluate.html import write_html
from clipwise.evaluate.metrics import confusion, mean_interval, per_class_report, top_confusions
from clipwise.evaluate.report import load_facts
from clipwise.run import PROB_PREFIX, RunFolder, atomic_write_text, to_jsonable
from clipwise.task import Task, get_task

_FOLD_DIR = re.compile(r"^fold(\d+)$")


def fold_runs(root: str | os.PathLike) -> dict[int, RunFolder]:
    """The fold run folders of a CV folder that have finished (have a summary.json), by fold id."""
    out = {}
    for child in Path(root).iterdir() if Path(root).is_dir() else []:
        m = _FOLD_DIR.match(child.name)
        if m and (child / "summary.json").is_file():
            out[int(m.group(1))] = RunFolder(child)
    return dict(sorted(out.items()))


def _pooled_predictions(runs: dict[int, RunFolder], task: Task
                        ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str]]:
    """Every fold's test predictions in one frame, probabilities aligned on the union of the folds' labels, and the
    task's targets of the rows with a known truth."""
    frames = []
    for k, run in runs.items():
        frame = run.load_predictions("test")[0]
        frames.append(frame.assign(fold=k))
    labels = sorted({c[len(PROB_PREFIX):] for f in frames for c in f.columns if c.startswith(PROB_PREFIX)})
    cols = [PROB_PREFIX + lab for lab in labels]
    pooled = pd.concat(frames, ignore_index=True)
    probs = pooled.reindex(columns=cols).astype(float).fillna(0.0).to_numpy()
    keep = (pooled["label"] != "").to_numpy()  # rows without a known label have nothing to score
    pooled, probs = pooled[keep].reset_index(drop=True), probs[keep]
    return pooled, probs, task.encode(list(pooled["label"]), labels), labels


def _summarise(root: Path) -> tuple[dict, dict[int, RunFolder], tuple[np.ndarray, np.ndarray, list[str]]]:
    """The summary, the finished fold runs and the pooled (probs, y, labels): read once for the report."""
    runs = fold_runs(root)
    if not runs:
        raise RunError(f"{root} has no finished fold (no fold<k>/summary.json); run `clipwise cv` first")
    expected = None
    folds_path = RunFolder(root).folds_path
    if folds_path.is_file():
        expected = sorted(int(f) for f in pd.read_csv(folds_path, usecols=["fold"])["fold"].unique())
    task = runs[next(iter(runs))].task
    scores, main = task.report_columns, task.main_metric
    folds = {}
    for k, run in runs.items():
        s = run.load_summary()
        test = s.get("test") or {}
        folds[k] = {**{key: test.get(key) for key, _ in scores}, "n": test.get("n"),
                    f"val_{main}": (s.get("val") or {}).get(main),
                    f"train_clean_{main}": (s.get("train_clean") or {}).get(main),
                    f"baseline_{main}": (s.get("baseline") or {}).get(main),
                    "best_epoch": s.get("best_epoch"), "epochs_run": s.get("epochs_run"),
                    "train_minutes": round((s.get("timing") or {}).get("train_seconds", 0.0) / 60, 2),
                    "leakage": (s.get("leakage") or {}).get("train_test", {})}
    stats = {key: mean_interval([f[key] for f in folds.values() if f[key] is not None])
             for key, _ in scores if any(f[key] is not None for f in folds.values())}
    for key, st in stats.items():
        if key != "loss":  # scores live in [0, 1]; a t-interval does not know that
            st["ci_low"], st["ci_high"] = max(0.0, st["ci_low"]), min(1.0, st["ci_high"])
    _, probs, y, labels = _pooled_predictions(runs, task)
    summary = {
        "metric": main, "task": task.name,
        "folds": {str(k): v for k, v in folds.items()},
        "finished": sorted(runs), "expected": expected,
        "mean": stats,
        "pooled": task.pooled(y, probs, labels=labels),
        "labels": labels,
        "train_minutes_total": round(sum(f["train_minutes"] for f in folds.values()), 2),
    }
    return summary, runs, (probs, y, labels)


def plot_folds(summary: dict, path: str | os.PathLike) -> Path:
    """Per-fold accuracy (lwlrap for multi-label folds) and macro-F1 as bars, with each metric's mean and 95 %
    interval as a line and band."""
    folds = list(summary["folds"])
    fig = Figure(figsize=(max(5.0, 1.1 * len(folds) + 2.5), 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(folds))
    main = summary.get("metric", "accuracy")
    for i, (key, title) in enumerate(((main, main), ("macro_f1", "macro-F1"))):
        values = [summary["folds"][k][key] or 0.0 for k in folds]
        ax.bar(x + (i - 0.5) * 0.38, values, width=0.38, color=f"C{i}", label=title)
        st = summary["mean"].get(key)
        if st:
            ax.axhline(st["mean"], color=f"C{i}", lw=1.2)
            ax.axhspan(st["ci_low"], st["ci_high"], color=f"C{i}", alpha=0.12, lw=0)
    ax.set_xticks(x, [f"fold {k}" for k in folds])
    ax.set(ylim=(0, 1.05), ylabel="test score", title="Test score per fold (line: mean, band: 95 % interval)")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, dpi=110)


def write_cv_report(root: str | os.PathLike) -> Path:
    """Write cv_summary.json, cv_folds.csv, report.md and figures/ for a CV folder; returns report.md's path."""
    root = Path(root)
    summary, runs, (probs, y, labels) = _summarise(root)
    task = get_task(summary["task"])
    scores, main = task.report_columns, task.main_metric
    cv = RunFolder(root)
    atomic_write_text(cv.cv_summary_path, json.dumps(to_jsonable(summary), indent=2, allow_nan=False) + "\n")
    table = pd.DataFrame.from_dict(summary["folds"], orient="index").drop(columns=["leakage"])
    table.index.name = "fold"
    atomic_write_text(cv.cv_folds_path, table.to_csv(lineterminator="\n"))
    figures = root / "figures"
    plot_folds(summary, figures / "folds.png")

    first = runs[next(iter(runs))]
    cfg = first.load_config_dict()
    model = (cfg.get("model") or {}).get("name", "unknown")
    done, expected = summary["finished"], summary["expected"]
    lines = [f"# Cross-validation report: {root.name}", ""]
    leaks = {k: f["leakage"] for k, f in summary["folds"].items() if f["leakage"]}
    if leaks:
        lines += ["> **Trained with --allow-leakage: in some folds training and test data share audio or sources** "
                  "(" + "; ".join(f"fold {k}: " + ", ".join(f"{n} {kind}" for kind, n in v.items())
                                  for k, v in leaks.items())
                  + "). Those folds' scores are for material the model has heard; each fold's report lists the "
                  "files.", ""]
    lines += [f"Model: **{model}**. Folds finished: {len(done)}"
              + (f" of {len(expected)}" if expected else "") + f" ({', '.join(map(str, done))}).", ""]
    if expected and len(done) < len(expected):
        missing = sorted(set(expected) - set(done))
        lines += [f"**Incomplete:** fold(s) {', '.join(map(str, missing))} have not finished; the figures below "
                  "cover the finished folds only. Re-run the same `clipwise cv` command to finish them.", ""]
    lines += ["Built only from the fold run folders (summary.json, predictions_test.csv, leakage.json of each).", "",
              "## Results", "", "| fold | " + " | ".join(t for _, t in scores) + " | n | best epoch | minutes |",
              "|---" * (len(scores) + 4) + "|"]
    for k, f in summary["folds"].items():
        lines.append(f"| {k} | " + " | ".join(fmt(f[key]) for key, _ in scores)
                     + f" | {f['n']} | {f['best_epoch']} of {f['epochs_run']} | {f['train_minutes']:.1f} |")
    m = summary["mean"]
    lines.append("| **mean ± std** | " + " | ".join(
        f"{m[key]['mean']:.4f} ± {m[key]['std']:.4f}" if key in m else "" for key, _ in scores) + " | | | |")
    lines.append("| 95 % interval | " + " | ".join(
        f"[{m[key]['ci_low']:.4f}, {m[key]['ci_high']:.4f}]" if key in m else "" for key, _ in scores) + " | | | |")
    p = summary["pooled"]
    lines += ["", f"Pooled over all {p['n']} out-of-fold test clips: {task.pooled_sentence(p)}.", "",
              "The interval over folds is a Student-t interval of the fold means. Folds share training data, so "
              "their scores are not independent and the interval is somewhat too narrow (Nadeau & Bengio, 2003).",
              "", f"Total training time: {summary['train_minutes_total']:.1f} min.", "",
              "![Per-fold scores](figures/folds.png)", ""]
    baselines = [f[f"baseline_{main}"] for f in summary["folds"].values() if f[f"baseline_{main}"] is not None]
    if baselines:
        lines += [f"{task.baseline_name}, mean over folds: {main} {np.mean(baselines):.4f}.", ""]
    notes = []
    for k, run in runs.items():
        notes += [f"fold {k}: {n}" for n in automatic_notes(load_facts(run))]
    lines += ["## Notes", ""] + [f"- {n}" for n in notes or ["Nothing unusual was found in any fold."]]

    lines += _CLASS_SECTIONS[task.name](p, y, probs, labels, figures)
    return _finish_report(root, runs, lines)


def _multilabel_classes(p: dict, y: np.ndarray, probs: np.ndarray, labels: list[str], figures: Path) -> list[str]:
    lines = ["", "## Per-class results (pooled out-of-fold test predictions)", "",
             "| class | AP | positives |", "|---|---|---|"]
    return lines + [f"| {cell(lab)} | {fmt(p.get(f'ap_{lab}'))} | {int(y[:, i].sum())} |"
                    for i, lab in enumerate(labels)]


def _multiclass_classes(p: dict, y: np.ndarray, probs: np.ndarray, labels: list[str], figures: Path) -> list[str]:
    y_pred = probs.argmax(axis=1)
    plot_confusion(confusion(y, y_pred, n_classes=len(labels), normalize=True), labels,
                   figures / "confusion_matrix.png")
    per_class = per_class_report(y, probs, labels=labels)
    lines = ["", "## Per-class results (pooled out-of-fold test predictions)", "",
              "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [f"| {cell(lab)} | {r.precision:.4f} | {r.recall:.4f} | {r.f1:.4f} | {int(r.support)} |"
              for lab, r in per_class.iterrows()]
    lines += ["", "![Pooled confusion matrix](figures/confusion_matrix.png)", "", "### Top confusions", ""]
    pairs = top_confusions(y, y_pred, labels=labels, k=10)
    lines += (["| true | predicted | clips |", "|---|---|---|"] + [f"| {cell(t)} | {cell(q)} | {c} |"
                                                                  for t, q, c in pairs]
              if pairs else ["No confusions."])
    return lines


#: the per-class part of a CV report, by task
_CLASS_SECTIONS = {"multiclass": _multiclass_classes, "multilabel": _multilabel_classes}


def _finish_report(root: Path, runs: dict[int, RunFolder], lines: list[str]) -> Path:
    lines += ["", "## Fold runs", ""] + [f"- fold {k}: [{run.root.name}/report.md]({run.root.name}/report.md)"
                                         for k, run in runs.items()]
    path = root / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    write_html(path)
    return path
