"""Throughput of the default model on 5 s clips: training clips/s and `clipwise predict` clips/s, each against a
plain librosa + timm loop (the baseline below), on the same clips and the same machine.

Usage: .venv/bin/python benchmarks/throughput.py [--clips 200] [--repeats 3]

The baseline is what users write by hand in notebooks: librosa.load + librosa log-mel per clip in a Dataset,
timm mobilenetv4_conv_small on the spectrogram, a plain AdamW loop; prediction loads and featurises file by file.
clipwise is measured through its public API (train: steps of its LightningModule's training_step on its own
datasets; predict: the `clipwise predict` command end to end, process start-up included, and its Predictor alone).
Each figure is the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLIPWISE, dataset_manifest, save_result  # noqa: E402

SR = 16000


def baseline_train(paths: list[str], labels: np.ndarray, *, epochs: int = 1, batch: int = 32) -> float:
    """Clips/s of the plain loop: librosa decode + log-mel per item, timm model, AdamW."""
    import timm

    model = timm.create_model("mobilenetv4_conv_small", in_chans=1, num_classes=int(labels.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            y, _ = librosa.load(paths[i], sr=SR)
            m = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=SR, n_fft=512, hop_length=160, n_mels=64))
            return torch.from_numpy(m).float()[None], int(labels[i])

    loader = torch.utils.data.DataLoader(DS(), batch_size=batch, shuffle=True)
    model.train()
    t0 = time.time()
    n = 0
    for _ in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(y)
    return n / (time.time() - t0)


def baseline_predict(paths: list[str], *, n_classes: int) -> float:
    import timm

    model = timm.create_model("mobilenetv4_conv_small", in_chans=1, num_classes=n_classes).eval()
    t0 = time.time()
    with torch.no_grad():
        for p in paths:
            y, _ = librosa.load(p, sr=SR)
            m = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=SR, n_fft=512, hop_length=160, n_mels=64))
            model(torch.from_numpy(m).float()[None, None]).softmax(-1)
    return len(paths) / (time.time() - t0)


def clipwise_train(manifest: Path, run_dir: Path) -> tuple[float, Path]:
    """Training clips/s of the default model: one epoch through `clipwise train` (its summary's own timing)."""
    cmd = CLIPWISE + ["train", "--data", str(manifest), "--out", str(run_dir), "--epochs", "2",
                      "train.progress=false", "data.clean_train_clips=0", "train.patience=null"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import json

    s = json.loads((run_dir / "summary.json").read_text())
    return s["timing"]["train_clips_per_second"], run_dir


def clipwise_predict(run_dir: Path, folder: Path, n: int) -> tuple[float, float]:
    """(clips/s of the `clipwise predict` command end to end, clips/s of the Predictor alone)."""
    t0 = time.time()
    subprocess.run(CLIPWISE + ["predict", str(run_dir), str(folder), "--format", "csv"], check=True,
                   stdout=subprocess.DEVNULL)
    command = n / (time.time() - t0)
    from clipwise.infer.predictor import find_audio
    from clipwise.kinds import load_run

    predictor = load_run(run_dir)
    files = find_audio([folder])
    t0 = time.time()
    predictor.predict_files(files)
    return command, n / (time.time() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    src = dataset_manifest("esc50_16k")
    df = pd.read_csv(src)
    df = df.groupby("label", group_keys=False).head(max(2, args.clips // df["label"].nunique())).head(args.clips)
    df["path"] = [str((src.parent / x).resolve()) for x in df["path"]]
    codes, _ = pd.factorize(df["label"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        man = tmp / "m.csv"
        # a fixed split: with 4 clips a class, a held-out split by recording would leave classes out of training
        df["split"] = np.where(df.groupby("label").cumcount() < 3, "train", "val")
        df[["path", "label", "split"]].to_csv(man, index=False)
        folder = tmp / "clips"
        folder.mkdir()
        for path in df["path"]:
            (folder / Path(path).name).symlink_to(path)
        res: dict[str, list[float]] = {k: [] for k in ("cw_train", "base_train", "cw_cmd", "cw_predictor", "base_predict")}
        for r in range(args.repeats):
            cps, run = clipwise_train(man, tmp / f"run{r}")
            res["cw_train"].append(cps)
            res["base_train"].append(baseline_train(list(df["path"]), codes))
            cmd, pred = clipwise_predict(run, folder, len(df))
            res["cw_cmd"].append(cmd)
            res["cw_predictor"].append(pred)
            res["base_predict"].append(baseline_predict(list(df["path"]), n_classes=len(set(codes))))
            print({k: round(v[-1], 1) for k, v in res.items()}, flush=True)
    med = {k: round(statistics.median(v), 1) for k, v in res.items()}
    save_result("throughput", {
        "command": f"benchmarks/throughput.py --clips {args.clips} --repeats {args.repeats}",
        "clips": len(df), "clip_seconds": 5.0, "median_of": args.repeats,
        "train_clips_per_second": {"clipwise_default": med["cw_train"], "baseline_librosa_timm": med["base_train"],
                                   "ratio": round(med["cw_train"] / med["base_train"], 2)},
        "predict_clips_per_second": {"clipwise_predict_command": med["cw_cmd"], "clipwise_predictor": med["cw_predictor"],
                                     "baseline_librosa_timm": med["base_predict"],
                                     "ratio_command": round(med["cw_cmd"] / med["base_predict"], 2),
                                     "ratio_predictor": round(med["cw_predictor"] / med["base_predict"], 2)},
        "raw": res,
    })


if __name__ == "__main__":
    main()
