"""FSDD, official split (recordings 0-4 of each speaker and digit are test), clipwise defaults only.

Usage: .venv/bin/python benchmarks/fsdd.py [--out DIR] [key=value ...]
Bar: >= 99.0 % test accuracy in <= 10 min on 2 cores.
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
    p.add_argument("--out", default=str(RESULTS / "fsdd_run"))
    p.add_argument("--name", default="fsdd_official")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    out = Path(args.out)
    if (out / "summary.json").is_file():
        print(f"{out} is finished; delete it to re-run")
    # the official split puts every speaker on both sides by design: allowed, and the report says so
    train_or_resume(["--data", str(dataset_manifest("fsdd")), "--allow-leakage"], out=out, overrides=args.overrides,
                    log=out.with_suffix(".log"))
    summary = json.loads((out / "summary.json").read_text())
    save_result(args.name, {
        "command": " ".join(["clipwise train --data ../shared/datasets/fsdd/manifest.csv", *args.overrides]),
        "test_accuracy": summary["test"]["accuracy"],
        "test_macro_f1": summary["test"]["macro_f1"],
        "val_accuracy": summary["val"]["accuracy"],
        "train_clean_accuracy": summary["train_clean"]["accuracy"],
        "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
        "train_minutes": round(summary["timing"]["train_seconds"] / 60, 2),
        "total_minutes": round((summary["timing"]["train_seconds"] + summary["timing"]["prepare_seconds"]) / 60, 2),
        "sample_rate": summary["data"]["sample_rate"], "clip_seconds": summary["data"]["clip_seconds"],
    })


if __name__ == "__main__":
    main()
