"""Every registered model on ESC-50 (train folds 2-5, test fold 1) from scratch, with one CPU time budget each:
accuracy, parameters, MACs, latency and time in one table.

Usage: .venv/bin/python benchmarks/esc50_zoo.py [--minutes 15] [--models a,b] [key=value ...]
Each model is a run folder benchmarks/results/esc50_zoo/<model>/; a finished one is kept, so the suite can be
trained at different times. With `train.max_minutes`, clipwise plans the epochs that fit the budget after the first
one, so every model's learning rate anneals within it; an interrupted model resumes with that plan and what is
left of its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, dataset_manifest, save_result, train_or_resume  # noqa: E402


def default_models() -> list[str]:
    """Each built-in architecture at its default size (a family's other sizes: --models), then the tested
    timm backbones."""
    from clipwise.models import list_models

    entries = list_models()
    return [e.name for e in entries if e.family != "classical" and (e.variant is None or e.name == e.base)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--models", help="comma-separated (default: every built-in architecture and tested timm backbone)")
    p.add_argument("--jobs", type=int, default=1, help="models trained at once, each with cores/jobs torch threads "
                   "(and the same minutes); latency is measured afterwards, alone")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    from clipwise.frontends import n_frames
    from clipwise.models.compare import measure_models

    models = args.models.split(",") if args.models else default_models()
    work = RESULTS / "esc50_zoo"
    threads = [f"train.threads={max(1, (os.cpu_count() or 1) // args.jobs)}"] if args.jobs > 1 else []

    def train(model: str) -> str | None:
        """Train (or resume) one model; a failure is that model's row, not the end of the suite."""
        try:
            train_or_resume(["--data", str(dataset_manifest("esc50_16k")), "--test-fold", "1", "--model", model,
                             "--allow-leakage"], out=work / model,
                            overrides=[f"train.max_minutes={args.minutes}", "train.epochs=200", *threads,
                                       *args.overrides], log=work / f"{model}.log")
        except SystemExit as err:
            print(f"{model}: {err}", flush=True)
            return str(err)
        return None

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        failed = {m: e for m, e in zip(models, pool.map(train, models)) if e}
    rows: dict[str, dict] = {m: {"failed": e} for m, e in failed.items()}
    for model in (m for m in models if m not in failed):
        s = json.loads((work / model / "summary.json").read_text())
        [m] = measure_models([model], input_size=(64, n_frames(5 * 16000, 160)), batch=32, repeats=3)
        rows[model] = {"test_accuracy": s["test"]["accuracy"], "params": m.params, "macs": m.macs,
                       "latency_ms_b1": round(m.latency_ms_b1, 1), "latency_ms_b32": round(m.latency_ms_b32, 1),
                       "train_minutes": round(s["timing"]["train_seconds"] / 60, 1), "epochs": s["epochs_run"],
                       "threads": yaml.safe_load((work / model / "config.yaml").read_text())["train"]["threads"]}
        print(model, rows[model], flush=True)
    save_result("esc50_zoo", {"command": f"benchmarks/esc50_zoo.py --minutes {args.minutes} --jobs {args.jobs} "
                              + " ".join(args.overrides), "models": rows})


if __name__ == "__main__":
    main()
