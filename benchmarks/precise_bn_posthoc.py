"""Re-estimate a finished run's BatchNorm statistics on clean training clips, after the fact, and score it again.

Usage: .venv/bin/python benchmarks/precise_bn_posthoc.py RUN [--checkpoint best|last] [--clips 256]

What `train.precise_bn` does before every validation, applied once to a run trained without it: the
clips are the ones training would use (a fixed subset of the run's training split, seed = train.seed + 1).
Prints validation and test accuracy before and after, and the seconds the re-estimation took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader

from clipwise.data.dataset import AudioStore, collate_windows
from clipwise.infer.predictor import Predictor
from clipwise.models.classifier import AudioClassifier
from clipwise.training.callbacks import recalibrate_batchnorm
from clipwise.data.prepare import clean_train_indices
from clipwise.training.data import window_subset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--clips", type=int, default=256)
    args = p.parse_args()
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    splits = pd.read_csv(args.run / "splits.csv")
    model = AudioClassifier.load(args.run / "checkpoints" / f"{args.checkpoint}.ckpt")
    hop = max(1, int(model.spec.clip_samples * config["data"]["eval_hop_fraction"]))
    parts = {s: splits[splits.split == s].reset_index(drop=True) for s in ("train", "val", "test")}
    stores = {s: AudioStore.load(df, sample_rate=model.sample_rate) for s, df in parts.items()}

    def accuracy(split: str) -> float:
        probs = Predictor(model, hop_fraction=config["data"]["eval_hop_fraction"]).predict_store(stores[split])
        y = np.array([model.labels.index(v) for v in parts[split]["label"]])
        return float((probs.argmax(1) == y).mean())

    before = {s: accuracy(s) for s in ("val", "test")}
    train = stores["train"]
    idx = clean_train_indices(len(train.waves), args.clips, seed=int(config["train"]["seed"]) + 1)
    subset = window_subset(train, idx, None, clip_samples=model.spec.clip_samples, hop_samples=hop,
                           pad_mode=model.spec.pad_mode)
    loader = DataLoader(subset, batch_size=config["data"]["batch_size"], collate_fn=collate_windows, drop_last=True)
    t0 = time.time()
    layers = recalibrate_batchnorm(model, (batch[0] for batch in loader))
    seconds = time.time() - t0
    after = {s: accuracy(s) for s in ("val", "test")}
    print(json.dumps({"run": str(args.run), "checkpoint": args.checkpoint, "clips": len(idx),
                      "batchnorm_layers": layers, "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
                      "before": before, "after": after}, indent=2))


if __name__ == "__main__":
    main()
