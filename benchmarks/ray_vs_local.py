"""Batch inference on Ray against the local engine: the same ESC-50 manifest of N files scored by a bundle through
`clipwise predict BUNDLE --manifest CSV --out ...` with `--engine local` and `--engine ray` (a local Ray instance),
each as a fresh process (start-up included) --repeats times; the median seconds of each, and what Ray costs per file
on top of the local engine. The two outputs are checked to hold the same rows.

Usage: .venv/bin/python benchmarks/ray_vs_local.py --bundle BUNDLE [--files 400] [--repeats 3] [--jobs N]

Writes benchmarks/results/ray_vs_local.json; the commands' output goes to benchmarks/results/ray_vs_local.log. The
audio stays in ../shared/datasets/esc50_16k: only a manifest of absolute paths is written (in a temporary folder).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, dataset_manifest, run_clipwise, save_result  # noqa: E402


def _rows(out: Path) -> pd.DataFrame:
    """The scored rows of a local output file or a Ray output folder, in order."""
    if out.is_dir():
        import pyarrow.dataset as pads

        rows = pads.dataset(sorted(str(p) for p in out.glob("*.parquet")), format="parquet").to_table().to_pandas()
        return rows.loc[rows["error"].isna()].drop(columns="error").reset_index(drop=True)
    return pd.read_parquet(out)


def _clear(out: Path) -> None:
    """Remove what an earlier run wrote to ``out`` (a batch job never overwrites its output)."""
    if out.is_dir():
        shutil.rmtree(out)
    out.unlink(missing_ok=True)
    out.with_name(f"{out.stem}.errors.csv").unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="an export bundle (or a run folder) to score with")
    ap.add_argument("--files", type=int, default=400, help="ESC-50 clips in the manifest")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each engine; the median is reported")
    ap.add_argument("--jobs", type=int, help="decoding processes (local) and actors (ray); default: cores - 1")
    args = ap.parse_args()
    bundle = Path(args.bundle).resolve()
    if not bundle.is_dir():
        sys.exit(f"--bundle {bundle} is not a folder: export one with `clipwise export RUN --out BUNDLE`")

    source = dataset_manifest("esc50_16k")
    df = pd.read_csv(source, nrows=args.files, usecols=["path"])
    df["path"] = [str((source.parent / p).resolve()) for p in df["path"]]
    log = RESULTS / "ray_vs_local.log"
    work = Path(tempfile.mkdtemp(prefix="ray_vs_local-"))
    try:
        manifest = work / "manifest.csv"
        df.to_csv(manifest, index=False)
        jobs = ["--jobs", str(args.jobs)] if args.jobs else []
        outs = {"local": work / "local.parquet", "ray": work / "ray"}
        seconds: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(args.repeats):
            for engine, out in outs.items():  # alternated, so that a busy spell of the machine hits both
                _clear(out)
                seconds[engine].append(run_clipwise(
                    ["predict", str(bundle), "--manifest", str(manifest), "--out", str(out), "--engine", engine,
                     "--skip-bad", *jobs], log=log))
        local, ray = _rows(outs["local"]), _rows(outs["ray"])
        same_labels = bool(len(local) == len(ray) and (local["label_1"].to_numpy() == ray["label_1"].to_numpy()).all()
                           and (local["path"].to_numpy() == ray["path"].to_numpy()).all())
        prob_diff = float(np.abs(local["prob_1"].to_numpy() - ray["prob_1"].to_numpy()).max()) if same_labels \
            else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {engine: statistics.median(times) for engine, times in seconds.items()}
    save_result("ray_vs_local", {
        "bundle": str(bundle), "files": len(df), "repeats": args.repeats, "jobs": args.jobs,
        "seconds": {engine: [round(t, 2) for t in times] for engine, times in seconds.items()},
        "median_seconds": {engine: round(t, 2) for engine, t in median.items()},
        "clips_per_second": {engine: round(len(df) / t, 1) for engine, t in median.items()},
        "ray_overhead_ms_per_file": round(1000 * (median["ray"] - median["local"]) / len(df), 2),
        "rows_scored": {"local": len(local), "ray": len(ray)},
        "same_rows_and_top1": same_labels, "largest_prob_1_difference": prob_diff,
        "note": "each run is a fresh `clipwise predict` process: Python, model and (for ray) Ray start-up included",
    })


if __name__ == "__main__":
    main()
