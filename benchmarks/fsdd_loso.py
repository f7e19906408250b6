"""FSDD leave-one-speaker-out: 6 folds (one per speaker), mean +/- std test accuracy, clipwise defaults.

Usage: .venv/bin/python benchmarks/fsdd_loso.py [key=value ...]
Bar (issue 2): >= 80 % mean. Finished folds are kept and skipped on re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, dataset_manifest, run_clipwise, save_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    work = RESULTS / "fsdd_loso"
    work.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(dataset_manifest("fsdd"))
    df["path"] = [str((dataset_manifest("fsdd").parent / x).resolve()) for x in df["path"]]
    speakers = sorted(df["group"].unique())
    # one fold per speaker; the official split column is dropped so the fold decides the test set
    df = df.drop(columns=["split"]).assign(fold=[speakers.index(g) + 1 for g in df["group"]])
    manifest = work / "manifest_loso.csv"
    df.to_csv(manifest, index=False)
    folds = {}
    for k, speaker in enumerate(speakers, start=1):
        out = work / f"fold{k}_{speaker}"
        if not (out / "summary.json").is_file():
            run_clipwise(["train", "--data", str(manifest), "--test-fold", str(k), "--out", str(out),
                          "train.progress=false", *args.overrides], log=work / f"fold{k}.log")
        s = json.loads((out / "summary.json").read_text())
        folds[speaker] = {"test_accuracy": s["test"]["accuracy"], "train_minutes": round(s["timing"]["train_seconds"] / 60, 2)}
        print(speaker, folds[speaker], flush=True)
    acc = np.array([f["test_accuracy"] for f in folds.values()])
    save_result("fsdd_loso", {
        "command": " ".join(["benchmarks/fsdd_loso.py", *args.overrides]),
        "mean_accuracy": round(float(acc.mean()), 4), "std_accuracy": round(float(acc.std(ddof=1)), 4),
        "folds": folds,
    })


if __name__ == "__main__":
    main()
