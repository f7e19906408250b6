"""Ensemble of the three best ESC-50 fold-1 runs: >= 2 points above the best single run.

Usage: .venv/bin/python benchmarks/esc50_ensemble.py [--top 3] [--weights learn|mean] [RUN ...]
Without RUN arguments the candidates are every finished fold-1 run under benchmarks/results: the model zoo
(esc50_zoo/<model>), the recipe runs (esc50_recipe*, esc50_fold1_run) and fold 1 of the cross-validation
(esc50_cv/fold1). All of them test on fold 1 and hold out the same validation clips (same seed and split
rules), which `clipwise ensemble` checks. The members are the --top runs by *validation* accuracy: choosing
them by test accuracy would make the ensemble's test score optimistic. The comparison is with the best single
run by test accuracy among all candidates, the strictest reading of the bar.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, run_clipwise, save_result  # noqa: E402


def candidates() -> list[Path]:
    found = [*sorted((RESULTS / "esc50_zoo").glob("*/summary.json")),
             *sorted(RESULTS.glob("esc50_recipe*/summary.json")),
             RESULTS / "esc50_fold1_run" / "summary.json", RESULTS / "esc50_cv" / "fold1" / "summary.json"]
    return [p.parent for p in found if p.is_file()]


def scores(run: Path) -> dict[str, float]:
    s = json.loads((run / "summary.json").read_text())
    return {"val_accuracy": s["val"]["accuracy"], "test_accuracy": s["test"]["accuracy"]}


def _name(run: Path) -> str:
    return str(run.relative_to(RESULTS)) if run.is_relative_to(RESULTS) else str(run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--weights", default="learn", help="learn (on validation), mean, or comma-separated numbers")
    p.add_argument("--out", default=str(RESULTS / "esc50_ensemble"))
    p.add_argument("runs", nargs="*", help="candidate run folders (default: every finished fold-1 run)")
    args = p.parse_args()
    pool = [Path(r).resolve() for r in args.runs] or candidates()
    if len(pool) < args.top:
        sys.exit(f"{len(pool)} finished fold-1 run(s) found, {args.top} needed: run benchmarks/esc50_zoo.py first")
    ranked = sorted(pool, key=lambda r: scores(r)["val_accuracy"], reverse=True)
    members = ranked[:args.top]
    out = Path(args.out)
    run_clipwise(["ensemble", *map(str, members), "--out", str(out), "--weights", args.weights],
                 log=out.with_suffix(".log"))
    summary = json.loads((out / "summary.json").read_text())
    spec = json.loads((out / "ensemble.json").read_text())
    best_single = max(pool, key=lambda r: scores(r)["test_accuracy"])
    gain = summary["test"]["accuracy"] - scores(best_single)["test_accuracy"]
    save_result("esc50_ensemble", {
        "command": f"benchmarks/esc50_ensemble.py --top {args.top} --weights {args.weights}",
        "members": {_name(m): {**scores(m), "weight": w, "temperature": t}
                    for m, w, t in zip(members, spec["weights"], spec["temperatures"])},
        "ensemble_val_accuracy": summary["val"]["accuracy"],
        "ensemble_test_accuracy": summary["test"]["accuracy"],
        "best_single_run": {"run": _name(best_single), **scores(best_single)},
        "gain_points": round(100 * gain, 2),
        "candidates": len(pool),
    })


if __name__ == "__main__":
    main()
