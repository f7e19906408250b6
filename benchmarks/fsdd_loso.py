"""FSDD leave-one-speaker-out: 6 folds (one per speaker), mean +/- std test accuracy, clipwise defaults.

Usage: .venv/bin/python benchmarks/fsdd_loso.py [--jobs 2] [key=value ...]
Bar: >= 80 % mean. Finished folds are kept and skipped on re-run.

--jobs N trains N folds at once, each with cores/N torch threads: small convolutions scale poorly across
threads, so on 2 cores two one-thread folds finish sooner than two two-thread folds one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, fsdd_loso_manifest, save_result, train_or_resume  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=1, help="folds trained at once")
    p.add_argument("--name", default="fsdd_loso", help="results folder and JSON name (to keep variants apart)")
    p.add_argument("--speakers", default=None, help="comma-separated speakers to run (a quick look; the mean "
                   "is only saved for all six)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    work = RESULTS / args.name
    manifest, speakers = fsdd_loso_manifest(work)
    threads = [f"train.threads={max(1, (os.cpu_count() or 1) // args.jobs)}"] if args.jobs > 1 else []

    def run_fold(k: int, speaker: str) -> Path:
        out = work / f"fold{k}_{speaker}"
        train_or_resume(["--data", str(manifest), "--test-fold", str(k)], out=out,
                        overrides=[*threads, *args.overrides], log=work / f"fold{k}.log")
        return out

    chosen = args.speakers.split(",") if args.speakers else speakers
    unknown = sorted(set(chosen) - set(speakers))
    if unknown:
        sys.exit(f"unknown speakers {unknown}; FSDD has {speakers}")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outs = list(pool.map(run_fold, [speakers.index(s) + 1 for s in chosen], chosen))
    folds = {}
    for speaker, out in zip(chosen, outs):
        s = json.loads((out / "summary.json").read_text())
        folds[speaker] = {"test_accuracy": s["test"]["accuracy"], "train_minutes": round(s["timing"]["train_seconds"] / 60, 2)}
        print(speaker, folds[speaker], flush=True)
    if len(folds) < len(speakers):
        return
    # the folds as a `clipwise cv` folder (fold<k> -> the run), so the CV report (mean, std, interval, pooled
    # confusions) and `clipwise compare` read them like any cross-validation
    cv = work / "cv"
    cv.mkdir(exist_ok=True)
    shutil.copy(manifest, cv / "folds.csv")
    for k, (speaker, out) in enumerate(zip(speakers, outs), start=1):
        link = cv / f"fold{k}"
        if not link.exists():
            link.symlink_to(Path("..") / out.name, target_is_directory=True)
    from clipwise.evaluate.cv_report import write_cv_report

    print("CV report:", write_cv_report(cv))
    acc = np.array([f["test_accuracy"] for f in folds.values()])
    save_result(args.name, {
        "command": " ".join(["benchmarks/fsdd_loso.py", f"--jobs {args.jobs}", f"--name {args.name}", *args.overrides]),
        "mean_accuracy": round(float(acc.mean()), 4), "std_accuracy": round(float(acc.std(ddof=1)), 4),
        "folds": folds,
    })


if __name__ == "__main__":
    main()
