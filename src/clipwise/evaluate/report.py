"""Run folder -> report.md, report.html and its figures (:mod:`clipwise.evaluate.figures`).

The report is built only from files in the run folder, so every number in it can be recomputed from the
folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from clipwise.evaluate._notes import (
    SPLIT_NAMES,
    RunFacts,
    automatic_notes,
    cell,
    counts,
    find_best_epoch,
    fmt,
    leakage_header,
    section,
)
from clipwise.evaluate.figures import plot_confusion, plot_curves, plot_reliability
from clipwise.evaluate.html import write_html
from clipwise.evaluate.metrics import (
    bootstrap_intervals,
    calibration,
    confusion,
    per_class_report,
    proportion_interval,
    top_confusions,
)
from clipwise.evaluate.multilabel import per_class_average_precision
from clipwise.run import PROB_PREFIX, RunFolder, atomic_write_text

EXAMPLES = 3  # example files listed per confusion pair


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write report.md and its figures for a run folder.

    Args:
        run_dir: a folder written by ``clipwise train``.

    Returns:
        The path of report.md.

    Raises:
        RunError: if the folder is not a run folder or one of its files is unreadable.
    """
    facts = load_facts(RunFolder.open(run_dir))
    notes = automatic_notes(facts)
    lines = _header(facts) + ["## Notes", ""] + [f"- {n}" for n in notes or ["Nothing unusual was found."]]
    if facts.metrics is not None and len(facts.metrics):
        curves = facts.run.figures_dir / "curves.png"
        plot_curves(facts.metrics, curves, monitor=facts.monitor, best_epoch=facts.best)
        lines += ["", "## Learning curves", "", "![Learning curves](figures/curves.png)"]
    if facts.y_true is not None:
        lines += _CLASS_SECTIONS[facts.task.name](facts)
    lines += _ensemble_lines(facts) + _model_lines(facts) + _data_lines(facts)
    atomic_write_text(facts.run.report_path, "\n".join(lines).rstrip() + "\n")
    write_html(facts.run.report_path)
    return facts.run.report_path


def _ensemble_lines(facts: RunFacts) -> list[str]:
    """An ensemble's members: weight, calibration temperature and each member's own scores."""
    spec = facts.ensemble
    if not spec:
        return []
    members = spec.get("members") or []
    temps = spec.get("temperatures") or [1.0] * len(members)
    scored = section(facts.summary, "members")
    keys = sorted({k for v in scored.values() if isinstance(v, dict) for k in v})
    weights_from = {"learn": "learned on validation (log-loss)", "mean": "equal", "given": "given"}.get(
        spec.get("weights_from"), "given")
    calibrated = ("each member temperature-scaled on validation first" if spec.get("calibrated_on")
                  else "members not calibrated")
    out = ["", "## Ensemble members", "", f"Weights {weights_from}; {calibrated}.", "",
           "| member | weight | temperature | " + " | ".join(keys) + " |", "|---" * (3 + len(keys)) + "|"]
    names = spec.get("names") or [Path(m).name for m in spec.get("sources") or members]
    for name, w, t in zip(names, spec.get("weights") or [], temps):
        scores = scored.get(name) or {}
        out.append(f"| {cell(name)} | {w:.3f} | {t:.3f} | " + " | ".join(fmt(scores.get(k)) for k in keys) + " |")
    return out


def _model_lines(facts: RunFacts) -> list[str]:
    model, timing = section(facts.summary, "model"), section(facts.summary, "timing")
    out = []
    if isinstance(model.get("params"), int):
        out.append(f"- parameters: {model['params']:,} ({model['params'] * 4 / 2**20:.1f} MiB as float32)")
    if isinstance(model.get("size_bytes"), int):
        out.append(f"- fitted pipeline: {facts.run.estimator_path.name}, {model['size_bytes'] / 2**20:.2f} MiB ({model.get('estimator')})")
    best = facts.run.best_checkpoint
    if best.is_file():
        out.append(f"- checkpoint: checkpoints/{best.name}, {best.stat().st_size / 2**20:.1f} MiB (weights, "
                   "optimiser state and config)")
    for key, text in (("train_seconds", "training time: {:.1f} min"), ("prepare_seconds", "data preparation: {:.0f} s"),
                      ("train_clips_per_second", "training throughput: {:.1f} clips/s"),
                      ("eval_clips_per_second", "scoring throughput: {:.1f} clips/s (whole clips, all windows)")):
        value = timing.get(key)
        if isinstance(value, (int, float)):
            out.append("- " + text.format(value / 60 if key == "train_seconds" else value))
    return ["", "## Model and timing", "", *out] if out else []


def load_facts(run: RunFolder) -> RunFacts:
    """Everything a report states about a run, read from its folder."""
    facts = RunFacts(run, cfg=run.load_config_dict(), summary=run.load_summary(), task=run.task,
                     sources=["config.yaml", run.info_path.name])
    if run.labels_path.exists():
        facts.labels = run.load_labels()
        facts.sources.append("labels.json")
    if run.metrics_path.exists():
        facts.metrics = run.read_metrics()
        facts.raw_metrics = pd.read_csv(run.metrics_path, dtype=str, keep_default_na=False)
        facts.sources.append("metrics.csv")
    if run.summary_path.exists():
        facts.sources.append("summary.json")
    if run.leakage_path.exists():
        facts.leakage = json.loads(run.leakage_path.read_text())
        facts.sources.append("leakage.json")
    if run.ensemble_path.exists():
        facts.ensemble = json.loads(run.ensemble_path.read_text())
        facts.sources.append(run.ensemble_path.name)
    for split in ("test", "val"):
        if run.predictions_path(split).exists():
            frame, probs, y_true = run.load_predictions(split)
            facts.pred_paths = frame["path"].tolist()
            prob_columns = [c for c in frame.columns if c.startswith(PROB_PREFIX)]
            facts.split, facts.pred_labels = split, [c[len(PROB_PREFIX):] for c in prob_columns]
            if y_true is not None:
                keep = facts.task.labelled(y_true)
                facts.y_true, facts.probs = y_true[keep], probs[keep]
                facts.pred_paths = [p for p, k in zip(facts.pred_paths, keep) if k]
            facts.sources.append(run.predictions_path(split).name)
            break
    for split in ("train", "train_clean"):
        if facts.y_true is not None and run.predictions_path(split).exists():
            y_train = run.load_predictions(split)[2]
            if y_train is not None:
                facts.y_train = y_train[facts.task.labelled(y_train)]
                facts.sources.append(run.predictions_path(split).name)
                break

    summary = facts.summary
    facts.monitor = str(summary.get("monitor") or section(facts.cfg, "train").get("monitor") or facts.monitor)
    facts.best = summary.get("best_epoch")
    facts.epochs_run = summary.get("epochs_run")
    if facts.metrics is not None:
        facts.best = find_best_epoch(facts.metrics, facts.monitor) if facts.best is None else facts.best
        facts.epochs_run = len(facts.metrics) if facts.epochs_run is None else facts.epochs_run
    split = next((s for s in ("test", "val") if isinstance(summary.get(s), dict)), None)
    if split is not None:
        facts.scores = split, summary[split]
    elif facts.y_true is not None:
        facts.scores = str(facts.split), facts.task.metrics(facts.y_true, facts.probs, labels=facts.pred_labels)
    if isinstance(summary.get("baseline"), dict):
        facts.baseline = summary["baseline"]
    elif facts.y_train is not None and facts.scores is not None and facts.scores[0] == facts.split:
        facts.baseline = {**facts.task.baseline(facts.y_train, facts.y_true), "computed_on": facts.split}
    return facts


def _header(facts: RunFacts) -> list[str]:
    model_info = section(facts.summary, "model")
    model = model_info.get("name") or section(facts.cfg, "model").get("name") or "unknown"
    params = model_info.get("params")
    params = f" ({params:,} parameters)" if isinstance(params, int) else ""
    lines = [f"# Run report: {facts.run.name}", "", *leakage_header(facts), f"Model: **{model}**{params}.", ""]
    lines += [f"Built only from files in this run folder: {', '.join(facts.sources)}.", "", "## Results", ""]
    lines += _results_table(facts) + [""]
    if facts.baseline is not None:
        on = f" on {facts.baseline['computed_on']}" if facts.baseline.get("computed_on") else ""
        lines += [facts.task.baseline_sentence(facts.baseline, on=on), ""]
    parts = [f"Best epoch: {facts.best} (chosen by `{facts.monitor}`)"] if facts.best is not None else []
    parts += [f"epochs run: {facts.epochs_run}"] if facts.epochs_run is not None else []
    seconds = section(facts.summary, "timing").get("train_seconds")
    parts += [f"training time: {seconds / 60:.1f} min"] if isinstance(seconds, (int, float)) else []
    return lines + (["; ".join(parts) + ".", ""] if parts else [])


def _results_table(facts: RunFacts) -> list[str]:
    rows = {s: facts.summary[s] for s in SPLIT_NAMES if isinstance(facts.summary.get(s), dict)}
    note = []
    if not rows and facts.scores is not None:
        rows = dict([facts.scores])
        note = ["", f"summary.json has no scores; these are computed from predictions_{facts.split}.csv."]
    if not rows:
        return ["No scores: summary.json has no split results and there are no labelled predictions."]
    table = (*facts.task.report_columns, ("n", "n"))
    out = ["| split | " + " | ".join(title for _, title in table) + " |", "|---" * (1 + len(table)) + "|"]
    for split, values in rows.items():
        # the loss column: summary.json's "loss", or "log_loss" as evaluate.metrics names it
        cells = [fmt(values.get(key, values.get("log_loss") if key == "loss" else None)) for key, _ in table]
        out.append(f"| {SPLIT_NAMES.get(split, split)} | " + " | ".join(cells) + " |")
        if split == facts.split and facts.y_true is not None and len(facts.y_true):
            ci = _intervals(facts)
            out.append(f"| {SPLIT_NAMES.get(split, split)}: 95 % interval | "
                       + " | ".join(f"[{ci[k][0]:.4f}, {ci[k][1]:.4f}]" if k in ci else "" for k, _ in table) + " |")
            note += ["", f"The interval row: Wilson for accuracy, a percentile bootstrap over the "
                     f"{len(facts.y_true)} {SPLIT_NAMES.get(split, split)} clips (1000 resamples) for the others."]
    n_classes = len(facts.labels or facts.pred_labels)
    if facts.task.report_note:
        note += ["", facts.task.report_note]
    elif 0 < n_classes <= 5:
        note += ["", f"With {n_classes} classes, top-5 accuracy counts every prediction as a hit."]
    note += ["", "Macro-F1 averages the F1 of the classes a split holds or the model predicts; a class with "
             "neither does not count (scikit-learn's rule)."]
    return out + note


def _intervals(facts: RunFacts) -> dict[str, tuple[float, float]]:
    """95 % intervals of the evaluated split's scores, recomputed from its saved predictions."""
    y, probs, labels = facts.y_true, facts.probs, facts.pred_labels
    cut = facts.run.threshold_array(labels) if facts.run.thresholds_path.is_file() else None
    keys = [k for k, _ in facts.task.report_columns if k != "accuracy"]
    ci = bootstrap_intervals(len(y), facts.task.resampler(y, probs, thresholds=cut), keys)
    if any(k == "accuracy" for k, _ in facts.task.report_columns):
        hits = int(round(facts.task.score(y, probs) * len(y)))
        ci["accuracy"] = proportion_interval(hits, len(y))
    return ci


def _multilabel_sections(facts: RunFacts) -> list[str]:
    labels, split = facts.pred_labels, facts.split
    ap = per_class_average_precision(facts.y_true, facts.probs)
    cut = facts.run.threshold_array(labels)
    pred = facts.probs >= cut[None, :]
    y = facts.y_true > 0.5
    tp, fp, fn = (pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0)
    out = ["", f"## Per-class results ({SPLIT_NAMES.get(split, split)}, predictions_{split}.csv)", "",
           "| class | AP | threshold | precision | recall | F1 | positives |", "|---|---|---|---|---|---|---|"]
    for i, lab in enumerate(labels):
        prec = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] else float("nan")
        rec = tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else float("nan")
        f1 = 2 * tp[i] / (2 * tp[i] + fp[i] + fn[i]) if 2 * tp[i] + fp[i] + fn[i] else float("nan")
        out.append(f"| {cell(lab)} | {fmt(ap[i])} | {fmt(cut[i])} | {fmt(prec)} | {fmt(rec)} | {fmt(f1)} | "
                   f"{int(y[:, i].sum())} |")
    return out


def _multiclass_sections(facts: RunFacts) -> list[str]:
    labels, split = facts.pred_labels, facts.split
    y_pred = facts.probs.argmax(axis=1)
    cm = confusion(facts.y_true, y_pred, n_classes=len(labels), normalize=True)
    plot_confusion(cm, labels, facts.run.figures_dir / "confusion_matrix.png")
    table = per_class_report(facts.y_true, facts.probs, labels=labels)
    out = ["", f"## Per-class results ({SPLIT_NAMES.get(split, split)}, predictions_{split}.csv)", ""]
    out += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    out += [f"| {cell(lab)} | {r.precision:.4f} | {r.recall:.4f} | {r.f1:.4f} | {int(r.support)} |"
            for lab, r in table.iterrows()]
    out += ["", f"![Confusion matrix ({split})](figures/confusion_matrix.png)", "", "### Top confusions", ""]
    pairs = top_confusions(facts.y_true, y_pred, labels=labels, k=10)
    if not pairs:
        return out + ["No confusions: every clip was classified correctly."]
    out += ["| true | predicted | clips | examples |", "|---|---|---|---|"]
    index = {lab: i for i, lab in enumerate(labels)}
    paths = np.asarray(facts.pred_paths, dtype=object)
    for t, p, count in pairs:
        hits = paths[(facts.y_true == index[t]) & (y_pred == index[p])][:EXAMPLES]
        examples = ", ".join(f"`{cell(os.path.basename(str(x)))}`" for x in hits)
        out.append(f"| {cell(t)} | {cell(p)} | {count} | {examples} |")
    return out + ["", f"Examples are the first {EXAMPLES} files of each pair in predictions_{split}.csv, which holds "
                  "their full paths."] + _reliability_section(facts)


#: the per-class part of a report, by task
_CLASS_SECTIONS = {"multiclass": _multiclass_sections, "multilabel": _multilabel_sections}


def _reliability_section(facts: RunFacts) -> list[str]:
    cal = calibration(facts.y_true, facts.probs)
    plot_reliability(cal, facts.run.figures_dir / "reliability.png")
    return ["", "## Calibration", "",
            f"Expected calibration error (ECE, {cal['n_bins']} equal-width bins of top-1 confidence): "
            f"**{cal['ece']:.4f}**. A perfectly calibrated model's bars sit on the diagonal: among clips predicted "
            "with 80 % confidence, 80 % are right.", "", "![Reliability diagram](figures/reliability.png)"]


def _data_lines(facts: RunFacts) -> list[str]:
    data = section(facts.summary, "data")
    setting = {**data, **section(facts.cfg, "data")}  # the config's data section wins over the summary's
    n_classes = len(facts.labels) if facts.labels is not None else data.get("n_classes")
    out = [f"- classes: {n_classes}"] if n_classes is not None else []
    clips = {s: data[f"n_{s}"] for s in ("train", "val", "test") if isinstance(data.get(f"n_{s}"), int)}
    out += [f"- clips: {counts(clips)}"] if clips else []
    if setting.get("sample_rate") is not None:
        out.append(f"- sample rate: {setting['sample_rate']} Hz")
    if setting.get("clip_seconds") is not None:
        out.append(f"- clip length: {setting['clip_seconds']} s")
    silent = data.get("silent_clips")
    if isinstance(silent, (dict, int)):
        out.append(f"- silent clips: {counts(silent) if isinstance(silent, dict) else silent}")
    if isinstance(data.get("skipped_files"), int):
        out.append(f"- skipped files: {data['skipped_files']}")
    return ["", "## Data", "", *out] if out else []
