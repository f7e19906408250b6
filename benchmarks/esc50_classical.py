"""Classical baselines on ESC-50, 5-fold cross-validation: summary features + scikit-learn.

Usage: .venv/bin/python benchmarks/esc50_classical.py [--models svm_rbf,logreg,...] [key=value ...]
Bar: the best baseline >= 47 % mean accuracy (RBF SVM on MFCC statistics scored 47.0 % here). Features are
computed once per clip and cached, so each further model costs only its fits. Each model's CV folder is
benchmarks/results/esc50_classical/<model>/ (finished folds are kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, dataset_manifest, run_clipwise, save_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default="svm_rbf,logreg,svm_linear,hgb,mlp")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    work = RESULTS / "esc50_classical"
    results = {}
    for model in args.models.split(","):
        out = work / model
        run_clipwise(["cv", "--data", str(dataset_manifest("esc50_16k")), "--model", model, "--out", str(out),
                      "--allow-leakage", "train.progress=false", *args.overrides], log=work / f"{model}.log")
        s = json.loads((out / "cv_summary.json").read_text())
        results[model] = {"mean_accuracy": s["mean"]["accuracy"], "pooled_accuracy": s["pooled"]["accuracy"],
                          "folds": {k: f["accuracy"] for k, f in s["folds"].items()},
                          "fit_minutes_total": s["train_minutes_total"]}
        print(model, results[model]["mean_accuracy"], flush=True)
    best = max(results, key=lambda m: results[m]["mean_accuracy"]["mean"])
    save_result("esc50_classical", {
        "command": f"benchmarks/esc50_classical.py --models {args.models} " + " ".join(args.overrides),
        "best": best, "models": results,
    })


if __name__ == "__main__":
    main()
