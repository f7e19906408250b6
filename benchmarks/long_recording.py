"""Long recordings: `clipwise predict BUNDLE long.flac --window 5 --hop 1 --timeline ... --events ...` on a 1-hour
recording of ESC-50 clips end to end and on a 10-hour synthetic one (low noise, a 1 kHz tone of 2 s every 10
minutes): wall seconds, x real time, the child process's peak RSS, windows and events of each.

Usage: .venv/bin/python benchmarks/long_recording.py --bundle BUNDLE [--run RUN] [--work DIR]
                                                     [--esc50-hours 1] [--synthetic-hours 10] [--name long_recording]

The recordings are built once in --work (default: a folder under the system's temp dir, never the repository),
block by block, so this script's own memory stays bounded too; a re-run reuses them. --run also times the eager
run (torch) on the same files. The command is timed end to end, process start-up and model loading included; the
peak RSS is that of the one child process (os.wait4), so runs do not mask each other.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLIPWISE, dataset_manifest, save_result  # noqa: E402

SR = 16000
BLOCK_SECONDS = 60
TONE_EVERY_SECONDS = 600
TONE_SECONDS = 2.0


def build_esc50(path: Path, *, hours: float) -> Path:
    """ESC-50 clips (5 s each, in manifest order, repeated when more are needed) joined into one FLAC; what sits
    where is written beside it (``<name>.truth.csv``)."""
    if path.is_file():
        return path
    manifest = dataset_manifest("esc50_16k")
    df = pd.read_csv(manifest)
    truth, position = [], 0.0
    tmp = path.with_name(f".{path.name}.partial")
    with sf.SoundFile(tmp, "w", samplerate=SR, channels=1, format="FLAC", subtype="PCM_16") as out:
        i = 0
        while position < hours * 3600:
            row = df.iloc[i % len(df)]
            x, rate = sf.read(manifest.parent / row["path"], dtype="float32")
            if rate != SR:
                sys.exit(f"{row['path']} is at {rate} Hz; this benchmark expects the 16 kHz copy of ESC-50")
            out.write(x)
            truth.append({"start": position, "end": position + len(x) / SR, "label": row["label"],
                          "path": row["path"]})
            position += len(x) / SR
            i += 1
    pd.DataFrame(truth).to_csv(path.with_suffix(".truth.csv"), index=False)
    os.replace(tmp, path)
    return path


def build_synthetic(path: Path, *, hours: float, seed: int = 0) -> Path:
    """Low noise (-60 dBFS) with a 1 kHz tone of TONE_SECONDS at the start of every TONE_EVERY_SECONDS, written a
    block at a time."""
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    total = int(hours * 3600 * SR)
    tmp = path.with_name(f".{path.name}.partial")
    with sf.SoundFile(tmp, "w", samplerate=SR, channels=1, format="FLAC", subtype="PCM_16") as out:
        for first in range(0, total, BLOCK_SECONDS * SR):
            n = min(BLOCK_SECONDS * SR, total - first)
            x = rng.standard_normal(n).astype(np.float32) * 0.001
            t = (first + np.arange(n)) / SR
            on = (t % TONE_EVERY_SECONDS) < TONE_SECONDS
            x[on] += 0.3 * np.sin(2 * np.pi * 1000 * t[on]).astype(np.float32)
            out.write(x)
    os.replace(tmp, path)
    return path


def time_predict(model: Path, audio: Path, *, out: Path, window: float, hop: float) -> dict:
    """One `clipwise predict` over ``audio``: wall seconds, peak RSS of that process, windows and events."""
    timeline, events = out / "timeline.csv", out / "events.csv"
    out.mkdir(parents=True, exist_ok=True)
    for f in (timeline, events):
        f.unlink(missing_ok=True)  # predict never replaces a file: these are the previous run's
    cmd = CLIPWISE + ["predict", str(model), str(audio), "--window", str(window), "--hop", str(hop),
                      "--timeline", str(timeline), "--events", str(events)]
    log = out / "predict.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        # this child's own rusage: RUSAGE_CHILDREN would be the largest of every child waited for so far
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    audio_seconds = sf.info(str(audio)).duration
    with open(timeline) as f:
        windows = sum(1 for _ in f) - 1
    return {"audio": audio.name, "model": str(model), "audio_hours": round(audio_seconds / 3600, 3),
            "seconds": round(seconds, 1), "x_real_time": round(audio_seconds / seconds, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
            "windows": windows, "events": len(pd.read_csv(events))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, type=Path, help="an export bundle (clipwise export RUN --out B)")
    ap.add_argument("--run", type=Path, help="also time the eager run (torch) the bundle came from")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clipwise-long-recording",
                    help="where the long recordings and outputs go (outside the repository)")
    ap.add_argument("--esc50-hours", type=float, default=1.0)
    ap.add_argument("--synthetic-hours", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--hop", type=float, default=1.0)
    ap.add_argument("--name", default="long_recording", help="results file: benchmarks/results/NAME.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    recordings = {
        "esc50": build_esc50(args.work / f"esc50_{args.esc50_hours:g}h.flac", hours=args.esc50_hours),
        "synthetic": build_synthetic(args.work / f"synthetic_{args.synthetic_hours:g}h.flac",
                                     hours=args.synthetic_hours),
    }
    models = {"bundle": args.bundle, **({"run": args.run} if args.run else {})}
    cases = []
    for rec_name, audio in recordings.items():
        for model_name, model in models.items():
            print(f"timing {model_name} on {audio} ...", flush=True)
            result = time_predict(model, audio, out=args.work / f"{rec_name}-{model_name}", window=args.window,
                                  hop=args.hop)
            cases.append({"recording": rec_name, "scorer": model_name, **result})
    save_result(args.name, {"window_seconds": args.window, "hop_seconds": args.hop, "cases": cases,
                            "synthetic_tones": {"every_seconds": TONE_EVERY_SECONDS, "seconds": TONE_SECONDS}})


if __name__ == "__main__":
    main()
