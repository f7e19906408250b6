"""ESC-50: train on folds 2-5, test on fold 1, from scratch, with the default CPU model.

Usage: .venv/bin/python benchmarks/esc50.py [--test-fold 1] [--out DIR] [key=value ...]
Bar: >= 70 % test accuracy with <= 60 min of training on 2 cores.
Re-running after an interruption resumes the run from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, dataset_manifest, save_result, train_or_resume  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--test-fold", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default=None)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    out = Path(args.out or RESULTS / f"esc50_fold{args.test_fold}_run")
    name = args.name or f"esc50_fold{args.test_fold}"
    # ESC-50 has near-duplicate clips across its official folds (see BENCHMARKS.md): allowed, the report lists them
    train_or_resume(["--data", str(dataset_manifest("esc50_16k")), "--test-fold", str(args.test_fold),
                     "--allow-leakage"], out=out,
                    overrides=args.overrides, log=out.with_suffix(".log"))
    summary = json.loads((out / "summary.json").read_text())
    save_result(name, {
        "command": " ".join([f"clipwise train --data ../shared/datasets/esc50_16k/manifest.csv --test-fold "
                             f"{args.test_fold}", *args.overrides]),
        "test_accuracy": summary["test"]["accuracy"],
        "test_macro_f1": summary["test"]["macro_f1"],
        "val_accuracy": summary["val"]["accuracy"],
        "train_clean_accuracy": summary["train_clean"]["accuracy"],
        "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
        "train_minutes": round(summary["timing"]["train_seconds"] / 60, 2),
        "train_clips_per_second": summary["timing"]["train_clips_per_second"],
    })


if __name__ == "__main__":
    main()
