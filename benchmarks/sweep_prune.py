"""What `clipwise sweep --prune` saves: the same learning-rate grid on FSDD (test: speaker 1 of the
leave-one-speaker-out folds, validation speakers held out of training), swept twice side by side (one core each),
with and without pruning. Every trial trains a fixed number of epochs, so the two sweeps
differ only by the pruner: compare the epochs trained, the trials' time and the best trial each finds.

Usage: .venv/bin/python benchmarks/sweep_prune.py [--epochs 6]
Resumable: each sweep is a SQLite study under benchmarks/results/sweep_prune/; re-running continues both. The
grid's points run in an order Optuna draws from the sweep's seed, the same in both sweeps; the first five to
finish are the startup trials the median rule needs, and the others are judged against them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLIPWISE, RESULTS, fsdd_loso_manifest, save_result  # noqa: E402

SPACE = "optim.lr: [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2, 3.0e-2, 0.1, 0.3, 1.0, 3.0]\n"
SETTINGS = ["data.test_fold=1", "model.name=audiocnn_small", "data.clip_seconds=0.5", "frontend.n_mels=40", "train.max_minutes=null",
            "train.patience=null", "train.progress=false", "train.threads=1"]


def _summary(out: Path) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="clipwise", storage=f"sqlite:///{out / 'study.db'}")
    rows = []
    for t in study.trials:
        if t.state.name not in ("COMPLETE", "PRUNED") or "duplicate_of" in t.user_attrs:
            continue
        metrics = out / t.user_attrs["run"] / "metrics.csv"
        rows.append({"lr": t.params["optim.lr"], "state": t.state.name.lower(), "val_accuracy": t.value,
                     "test_accuracy": t.user_attrs.get("test_accuracy"),
                     "epochs": len(pd.read_csv(metrics)) if metrics.is_file() else 0,
                     "minutes": round(t.duration.total_seconds() / 60, 2)})
    done = [r for r in rows if r["state"] == "complete"]
    best = max(done, key=lambda r: r["val_accuracy"]) if done else None
    return {"trials": rows, "epochs_total": sum(r["epochs"] for r in rows),
            "minutes_total": round(sum(r["minutes"] for r in rows), 2),
            "pruned": sum(r["state"] == "pruned" for r in rows), "best": best}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    work = RESULTS / "sweep_prune"
    work.mkdir(parents=True, exist_ok=True)
    space = work / "space.yaml"
    space.write_text(SPACE)
    manifest, _ = fsdd_loso_manifest(work)
    procs = {}
    for name, extra in (("pruned", ["--prune"]), ("full", [])):
        cmd = [*CLIPWISE, "sweep", "--data", str(manifest), "--space", str(space), "--out",
               str(work / name), "--sampler", "grid", "--epochs", str(args.epochs), *SETTINGS, *extra]
        procs[name] = subprocess.Popen(cmd, stdout=open(work / f"{name}.log", "a"), stderr=subprocess.STDOUT)
    codes = {name: proc.wait() for name, proc in procs.items()}
    if any(codes.values()):
        sys.exit(f"a sweep failed ({codes}); see {work}/*.log")
    result = {name: _summary(work / name) for name in procs}
    save_result("sweep_prune", {
        "command": f"benchmarks/sweep_prune.py --epochs {args.epochs}", "space": SPACE, "settings": SETTINGS,
        "epochs": args.epochs, **result,
        "epochs_saved": 1 - result["pruned"]["epochs_total"] / max(1, result["full"]["epochs_total"]),
        "same_best": json.dumps((result["pruned"]["best"] or {}).get("lr")) == json.dumps(
            (result["full"]["best"] or {}).get("lr")),
    })


if __name__ == "__main__":
    main()
