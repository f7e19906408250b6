"""A sweep on FSDD leave-one-speaker-out over pad mode x clip length x n_mels: every trial is a
6-fold LOSO cross-validation, scored by its mean validation accuracy (validation speakers are held out of
each fold's training speakers); the mean test accuracy on the left-out speakers is reported beside it.

Usage: .venv/bin/python benchmarks/fsdd_loso_sweep.py [--minutes 1.5] [--jobs 2] [key=value ...]
Each fold trains under ``train.max_minutes`` (the schedule is planned to fit), so the grid of 12 trials x 6
folds fits in about 80 minutes with two processes sharing the study (``--jobs 2``: `clipwise sweep --jobs`). The
study is SQLite: re-running continues it, finished folds and trials are kept. Leaderboard: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLIPWISE, RESULTS, fsdd_loso_manifest, save_result  # noqa: E402

SPACE = """\
data.pad_mode: [zeros, wrap, reflect]
data.clip_seconds: [0.5, 1.0]
frontend.n_mels: [40, 64]
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=1.5, help="training budget of each fold (train.max_minutes)")
    p.add_argument("--jobs", type=int, default=2, help="processes working on the study at once")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    work = RESULTS / "fsdd_loso_sweep"
    manifest, _ = fsdd_loso_manifest(work)
    space = work / "space.yaml"
    space.write_text(SPACE)
    # `--jobs N`: the command starts N-1 helper processes on the same study, each with its share of the cores
    cmd = [*CLIPWISE, "sweep", "--data", str(manifest), "--space", str(space), "--out", str(work / "sweep"),
           "--sampler", "grid", f"train.max_minutes={args.minutes}", "train.progress=false", *args.overrides,
           "--cv", "0", "--jobs", str(args.jobs)]
    with open(work / "worker0.log", "a") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        sys.exit(f"the sweep failed (exit code {code}); see {work}/worker0.log and {work}/sweep/worker*.log")
    import pandas as pd

    board = pd.read_csv(work / "sweep" / "leaderboard.csv")
    save_result("fsdd_loso_sweep", {
        "command": " ".join(["benchmarks/fsdd_loso_sweep.py", f"--minutes {args.minutes}", f"--jobs {args.jobs}",
                             *args.overrides]),
        "space": SPACE, "minutes_per_fold": args.minutes,
        "leaderboard": json.loads(board.to_json(orient="records")),
    })


if __name__ == "__main__":
    main()
