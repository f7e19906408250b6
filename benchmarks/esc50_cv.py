"""ESC-50 5-fold cross-validation with the default CPU model: mean +/- std and a 95 % interval.

Usage: .venv/bin/python benchmarks/esc50_cv.py [--only 1,2] [key=value ...]
Bar: >= 72 % mean accuracy, <= 60 min of training per fold on 2 cores. Each fold is a resumable run folder in
benchmarks/results/esc50_cv/fold<k>: a finished fold survives an interruption and is skipped on re-run,
so the five folds can be trained at different times with --only. ESC-50's official folds hold two near-duplicate
pairs across folds (see BENCHMARKS.md), so the run passes --allow-leakage and each fold's report lists them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, dataset_manifest, run_clipwise, save_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", help="comma-separated folds to train now")
    p.add_argument("--out", default=str(RESULTS / "esc50_cv"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    out = Path(args.out)
    cmd = ["cv", "--data", str(dataset_manifest("esc50_16k")), "--out", str(out), "--allow-leakage",
           "train.progress=false", *args.overrides] + (["--only", args.only] if args.only else [])
    run_clipwise(cmd, log=out.with_suffix(".log"))
    summary = json.loads((out / "cv_summary.json").read_text())
    save_result("esc50_cv", {
        "command": "clipwise cv --data ../shared/datasets/esc50_16k/manifest.csv --allow-leakage "
                   + " ".join(args.overrides),
        "folds_finished": summary["finished"],
        "mean_accuracy": summary["mean"]["accuracy"],
        "pooled": {k: summary["pooled"][k] for k in ("accuracy", "accuracy_ci", "macro_f1", "n")},
        "folds": {k: {"accuracy": f["accuracy"], "train_minutes": f["train_minutes"]}
                  for k, f in summary["folds"].items()},
    })


if __name__ == "__main__":
    main()
