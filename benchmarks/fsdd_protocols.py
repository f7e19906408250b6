"""FSDD official split vs leave-one-speaker-out, side by side, from the finished benchmark runs.

Usage: .venv/bin/python benchmarks/fsdd_protocols.py   (after benchmarks/fsdd.py and benchmarks/fsdd_loso.py)
Writes benchmarks/results/fsdd_protocols/leaderboard.md (+ .csv, .png) with `clipwise compare`, whose notes
explain the gap: the official split tests speakers the model has heard.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, run_clipwise, save_result  # noqa: E402


def main() -> None:
    official, loso = RESULTS / "fsdd_run", RESULTS / "fsdd_loso" / "cv"
    for path, script in ((official, "fsdd.py"), (loso, "fsdd_loso.py")):
        if not path.is_dir():
            sys.exit(f"{path} is missing: run benchmarks/{script} first")
    out = RESULTS / "fsdd_protocols"
    run_clipwise(["compare", str(official), str(loso), "--out", str(out)], log=RESULTS / "fsdd_protocols.log")
    import pandas as pd

    board = pd.read_csv(out / "leaderboard.csv")
    save_result("fsdd_protocols", {
        "command": "benchmarks/fsdd_protocols.py (clipwise compare benchmarks/results/fsdd_run "
                   "benchmarks/results/fsdd_loso/cv)",
        "entries": board[["name", "kind", "accuracy", "std", "ci_low", "ci_high", "n", "shared"]]
        .fillna("").to_dict(orient="records"),
    })


if __name__ == "__main__":
    main()
