"""Shared helpers of the benchmark scripts: locating ../shared, running clipwise, saving results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLIPWISE_SHARED", ROOT.parent / "shared")) / "datasets"
RESULTS = ROOT / "benchmarks" / "results"
CLIPWISE = [sys.executable, "-m", "clipwise"]


def median_seconds(fn, *, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls, after one untimed warm-up call."""
    import statistics

    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dataset_manifest(name: str) -> Path:
    path = SHARED / name / "manifest.csv"
    if not path.is_file():
        sys.exit(f"{path} not found: set CLIPWISE_SHARED to the folder holding datasets/")
    return path


def run_clipwise(args: list[str], *, log: Path) -> float:
    """Run a clipwise command, tee its output to ``log``; return the wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ clipwise {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run(CLIPWISE + args, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"clipwise {' '.join(args)} failed (exit {proc.returncode}); see {log}")
    return time.time() - t0


def train_or_resume(train_args: list[str], *, out: Path, overrides: list[str], log: Path) -> None:
    """Train into ``out`` unless it is finished; an interrupted run continues from its last checkpoint."""
    if (out / "summary.json").is_file():
        return
    quiet = ["train.progress=false", *overrides]
    if (out / "checkpoints" / "last.ckpt").is_file():
        run_clipwise(["train", "--resume", str(out), *quiet], log=log)
    else:
        run_clipwise(["train", *train_args, "--out", str(out), *quiet], log=log)


def save_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), **result}
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def fsdd_loso_manifest(work: Path) -> tuple[Path, list[str]]:
    """FSDD with one fold per speaker (leave-one-speaker-out) written to ``work/manifest_loso.csv``; the
    official split column is dropped so the fold decides the test set. Returns the path and the speakers."""
    import pandas as pd

    src = dataset_manifest("fsdd")
    df = pd.read_csv(src)
    df["path"] = [str((src.parent / x).resolve()) for x in df["path"]]
    speakers = sorted(df["group"].unique())
    df = df.drop(columns=["split"]).assign(fold=[speakers.index(g) + 1 for g in df["group"]])
    work.mkdir(parents=True, exist_ok=True)
    df.to_csv(work / "manifest_loso.csv", index=False)
    return work / "manifest_loso.csv", speakers
