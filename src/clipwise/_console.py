"""What the commands print: run summaries, prediction tables, cross-validation and recompute results.

Every function takes plain results (a run folder, dicts, lists) and writes to stdout (warnings to stderr); the
numbers shown are the ones the run folder holds. The main score of each line is the run's task's.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipwise.run import RunFolder
from clipwise.task import get_task


def print_run_summary(run_dir: Path) -> None:
    """Scores per split, the best epoch and where the report is."""
    run = RunFolder(run_dir)
    if not run.summary_path.is_file():
        return
    summary = run.load_summary()
    task = run.task
    main = task.headline[:2] if task.multi_label else task.headline[:1]
    print(f"\nrun folder: {run.root}")
    for split in ("train_clean", "val", "test"):
        if split in summary:
            m = summary[split]
            head = "  ".join(f"{key} {m[key]:.4f}" for key in main)
            print(f"  {split:12s} {head}  macro-F1 {m['macro_f1']:.4f}  n={m['n']}")
    print(f"  best epoch {summary.get('best_epoch')} of {summary.get('epochs_run')}; report: {run.report_path}")
    for warning in (summary.get("data") or {}).get("split_warnings") or []:
        print(f"note: {warning}", file=sys.stderr)
    if summary.get("diverged"):
        print(f"warning: training diverged: {summary['diverged']}", file=sys.stderr)


def print_predictions(files: Sequence[Path], top: list[list[tuple[str, float]]], *, fmt: str,
                      tags: list[list[str]] | None = None) -> None:
    """One row per file: the top-k labels and probabilities (``tags``: a multi-label run's decided labels)."""
    if fmt == "json":
        rows = [{"path": str(f), **({"tags": tags[i]} if tags is not None else {}),
                 "top": [{"label": lab, "probability": round(p, 6)} for lab, p in t]}
                for i, (f, t) in enumerate(zip(files, top))]
        print(json.dumps(rows, indent=2))
    elif fmt == "csv":
        k = len(top[0]) if top else 0
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path"] + (["tags"] if tags is not None else [])
                        + [c for i in range(1, k + 1) for c in (f"label_{i}", f"prob_{i}")])
        for i, (f, t) in enumerate(zip(files, top)):
            writer.writerow([str(f)] + ([";".join(tags[i])] if tags is not None else [])
                            + [c for lab, p in t for c in (lab, f"{p:.6f}")])
    else:
        from rich.console import Console
        from rich.table import Table

        names = short_names(files)
        table = Table("file", *(["tags"] if tags is not None else []),
                      *[f"#{i + 1}" for i in range(len(top[0]) if top else 0)])
        for i, (f, t) in enumerate(zip(files, top)):
            table.add_row(names[i], *(["; ".join(tags[i]) or "-"] if tags is not None else []),
                          *[f"{lab} {p:.3f}" for lab, p in t])
        Console().print(table)


def short_names(files: Sequence[Path]) -> list[str]:
    """What tells the files apart in a narrow column: each path relative to the folder they share (the file name
    for one file), so the part that differs is what shows."""
    if len(files) < 2:
        return [Path(f).name for f in files]
    common = os.path.commonpath([os.path.abspath(f) for f in files])
    return [os.path.relpath(os.path.abspath(f), common) for f in files]


def print_cv_summary(root: Path) -> None:
    """Mean, std and 95 % interval of the main scores over the folds."""
    cv = RunFolder(root)
    summary = json.loads(cv.cv_summary_path.read_text())
    print(f"\ncross-validation folder: {root}")
    for key in get_task(summary["task"]).headline[:3]:
        if key not in summary["mean"]:
            continue
        m = summary["mean"][key]
        print(f"  {key:18s} {m['mean']:.4f} ± {m['std']:.4f}  95 % interval [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"
              f"  ({m['n']} folds)")
    print(f"  report: {root / 'report.md'}")


def print_evaluation(result: dict[str, Any], *, task_name: str, fmt: str) -> None:
    """``clipwise evaluate``'s scores of one split or manifest."""
    if fmt == "json":
        print(json.dumps(result, indent=2))
        return
    m = result["metrics"]
    print(f"{result['source']} ({m['n']} clips, checkpoint {result['checkpoint']})")
    for key in get_task(task_name).headline:
        print(f"  {key:18s} {m[key]:.4f}")
    print(f"predictions: {result['predictions']}")
    for row in result.get("skipped", []):
        print(f"skipped {row['path']}: {row['reason']}", file=sys.stderr)


def print_recompute(result: dict[str, Any], *, fmt: str) -> None:
    """``clipwise evaluate --recompute``: which numbers differ, and whether the report regenerates."""
    if fmt == "json":
        print(json.dumps(result, indent=2))
        return
    bad = [c for c in result["checks"] if not c["ok"]]
    print(f"{len(result['checks'])} numbers recomputed from the predictions and the checkpoint "
          f"(tolerance {result['tolerance']:g}): {len(bad)} differ")
    for c in bad:
        print(f"  {c['check']}: {c['key']} stated {c['stated']:.6g}, recomputed {c['recomputed']:.6g}")
    for c in (c for c in result["checks"] if c["key"] == "max |probability|"):
        print(f"  {c['check']}: largest probability difference {c['recomputed']:.2e}")
    if result["report_diff"]:
        print(f"report.md differs from a regenerated one in {len(result['report_diff'])} line(s):")
        print("\n".join(f"  {ln}" for ln in result["report_diff"][:20]))
    else:
        print("report.md regenerates identically")
    print("all numbers reproduce" if result["ok"] else "some numbers do NOT reproduce (details: recompute.json)")


def print_ensemble(out: Path) -> None:
    """Each member's weight, temperature and scores, and the ensemble's."""
    run = RunFolder(out)
    summary = run.load_summary()
    spec = json.loads(run.ensemble_path.read_text())
    main = run.task.main_metric
    print(f"ensemble folder: {out}")
    for name, w, t in zip(spec["names"], spec["weights"], spec["temperatures"]):
        scores = summary["members"].get(name, {})
        print(f"  {name:30s} weight {w:.3f}  temperature {t:.3f}  "
              + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    for split in ("val", "test"):
        if split in summary:
            print(f"  {'ensemble ' + split:30s} {main} {summary[split][main]:.4f}  "
                  f"macro-F1 {summary[split]['macro_f1']:.4f}")


def print_export(out: Path) -> None:
    """What an export wrote: the bundle's graphs and the parity measured for each."""
    meta = json.loads((Path(out) / "bundle.json").read_text())

    def parity_line(name: str, p: dict[str, Any]) -> str:
        return (f"  {name}: parity on {p['windows']} windows of the run's clips: largest probability difference "
                f"{p['max_abs_difference']:.2e}, top-1 agreement {p['top1_agreement']:.4f}")

    if meta["format"] == "ensemble":
        print(f"bundle: {out} (ensemble of {len(meta['members'])} bundles in {out}/members)")
        for m in meta["members"]:
            print(f"  {m['name']}: weight {m['weight']:.3f}, temperature {m['temperature']:.3f}")
        p = meta["parity"]
        print(f"  parity with the ensemble run on {p['clips']} clips: largest probability difference "
              f"{p['max_abs_difference']:.2e}, top-1 agreement {p['top1_agreement']:.4f}")
    else:
        print(f"bundle: {out} (onnx, {meta['sample_rate']} Hz, {meta['clip_seconds']} s windows)")
        print(parity_line("model.onnx", meta["parity"]))
        if "torchscript" in meta:
            print(parity_line("model.pt (TorchScript)", meta["torchscript"]))
    if "int8" in meta:
        q = meta["int8"]
        change = "" if q["score_change"] is None else (f"; {q['metric']} {q['fp32_score']:.4f} -> "
                                                        f"{q['int8_score']:.4f} ({q['score_change']:+.4f})")
        print(f"  model.int8.onnx: {q['size_bytes'] / 1e6:.2f} MB (fp32 {q['fp32_size_bytes'] / 1e6:.2f} MB), top-1 "
              f"agreement {q['top1_agreement']:.4f} on {q['clips']} test clips{change}")
    print(f"  use: clipwise predict {out} FILES   or, without torch: clipwise.runtime.load({str(out)!r})")


def print_model_list(models: Sequence[tuple[str, str, str]], *, default: str) -> None:
    """`clipwise models`: name, family and description of every model."""
    print(f"{'name':26s} {'family':14s} description")
    for name, family, description in models:
        print(f"{name:26s} {family:14s} {description}{' (default)' if name == default else ''}")
    print("\nAny other timm model name also works as a backbone (see timm.list_models()).")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """clipwise's own warnings as one plain line (`clipwise: warning: ...`), others as Python prints them."""
    if "clipwise" in str(filename) and issubclass(category, UserWarning):
        return f"clipwise: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def quiet_third_party() -> None:
    """Keep the terminal for what the user needs: no tips or shim warnings of other packages, and clipwise's
    own warnings as one plain line each."""
    # Lightning advertises services on every run and torch's pytree shim warns on each step; neither helps users
    os.environ.setdefault("LIGHTNING_DISABLE_TIPS", "1")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.formatwarning = _format_warning
