"""Multi-label ESC-50: mixtures of 2-3 clips of different classes, scored by lwlrap and mAP.

Usage: .venv/bin/python benchmarks/esc50_mixtures.py [--train N] [--test N] [key=value ...]
Training mixtures are built from folds 2-5 only, test mixtures from fold 1 only, so no source clip is on both
sides (clipwise holds validation out of the training mixtures). Defaults of `clipwise train`: the task is
detected as multi-label from the ';'-separated labels. Bar: lwlrap >= 0.70. The mixtures are written once
under benchmarks/results/esc50_mixtures/ and the run resumes after an interruption.
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
    p.add_argument("--train", type=int, default=2000, help="training mixtures (from folds 2-5)")
    p.add_argument("--test", type=int, default=400, help="test mixtures (from fold 1)")
    p.add_argument("--name", default="run", help="run folder under results/esc50_mixtures (screens of other "
                   "settings use their own; the result file is esc50_mixtures.json for 'run', else _NAME.json)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    from clipwise.data.manifest import read_manifest
    from clipwise.data.mixtures import make_mixtures

    work = RESULTS / "esc50_mixtures"
    # the first 2,000 / 400 set keeps its folder name; the test mixtures are drawn first, so every set made
    # with the same --test count shares them whatever --train is
    data = work / ("data" if (args.train, args.test) == (2000, 400) else f"data_{args.train}_{args.test}")
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        df = read_manifest(dataset_manifest("esc50_16k"))
        df = df.assign(split=["test" if f == 1 else "train" for f in df["fold"]]).drop(columns=["fold"])
        make_mixtures(df, data, n_per_side={"train": args.train, "test": args.test}, seed=0)
    out = work / args.name
    train_or_resume(["--data", str(manifest)], out=out, overrides=args.overrides, log=work / f"{args.name}.log")
    s = json.loads((out / "summary.json").read_text())
    save_result("esc50_mixtures" if args.name == "run" else f"esc50_mixtures_{args.name}", {
        "command": f"benchmarks/esc50_mixtures.py --name {args.name} --train {args.train} --test {args.test} " + " ".join(args.overrides),
        "test": {k: s["test"][k] for k in ("lwlrap", "mAP", "macro_f1", "micro_f1", "n")},
        "prior_baseline": s["baseline"],
        "train_minutes": round(s["timing"]["train_seconds"] / 60, 1),
        "epochs_run": s["epochs_run"], "best_epoch": s["best_epoch"],
    })


if __name__ == "__main__":
    main()
