"""Test accuracy of every probability mean of 2 or more runs, from their saved predictions_test.csv alone (no
model is loaded): a quick look at what an ensemble of those runs could gain before building one.

Usage: .venv/bin/python benchmarks/prediction_means.py RUN RUN [RUN ...]
The runs must have scored the same test clips (matched by path) with the same classes.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd


def load(run: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    df = pd.read_csv(run / "predictions_test.csv").sort_values("path")
    cols = [c for c in df if c.startswith("p:")]
    return df[cols].to_numpy(), df["label"].to_numpy(), [c[2:] for c in cols]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args()
    loaded = {run: load(run) for run in args.runs}
    _, labels, classes = loaded[args.runs[0]]
    for run, (_, y, c) in loaded.items():
        if c != classes or not np.array_equal(y, labels):
            raise SystemExit(f"{run} scored other clips or classes than {args.runs[0]}")
    names = np.array(classes)
    for run, (probs, _, _) in loaded.items():
        print(f"{(names[probs.argmax(1)] == labels).mean():.4f}  {run}")
    for k in range(2, len(args.runs) + 1):
        for combo in itertools.combinations(args.runs, k):
            mean = np.mean([loaded[r][0] for r in combo], axis=0)
            print(f"{(names[mean.argmax(1)] == labels).mean():.4f}  mean of " + " + ".join(map(str, combo)))


if __name__ == "__main__":
    main()
