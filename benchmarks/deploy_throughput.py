"""Deployment throughput on 2 cores: one hour of 5 s ESC-50 clips, end to end (decode + resample + model), for the
default model and the smallest built-in one, through eager torch, the ONNX bundle (fp32 and int8), the batch job
and the plain loop users write by hand; each against the machine's compute limit.

Usage: .venv/bin/python benchmarks/deploy_throughput.py --run RUN [--small-run RUN] [--repeats 3] [--clips 720]

The compute limit of a model is the machine's measured fp32 peak (a large torch matmul on every core, the best an
implementation can reach) over the model's FLOPs per clip (2 x the MACs that torch's FlopCounterMode counts for
the whole model, frontend included): the clips/s that no implementation can exceed. Every figure is also given as
a fraction of it. The runs only need to exist (their weights do not change the timing); missing bundles are
exported next to them (with --int8). ``--small-run`` defaults to a one-epoch run of the built-in model with the
fewest MACs, trained into --work when it is missing.

Engines, each timed over the same files, median of --repeats (after one warm-up pass):
- eager: ``clipwise.load(RUN).predict_proba(files)`` (torch, batches of 32 windows);
- onnx / int8: ``clipwise.runtime.load(BUNDLE[, int8=True]).predict_proba(files)`` (no torch);
- batch job: ``clipwise predict BUNDLE --manifest M --out P.parquet --jobs 2`` as a command, process start
  included (decoding in worker processes);
- plain loop: ``librosa.load`` + the eager model per file, batch 1 (what a notebook does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLIPWISE, dataset_manifest, median_seconds, run_clipwise, save_result  # noqa: E402


def peak_gflops(*, threads: int, repeats: int = 5) -> float:
    """The machine's fp32 matmul peak on ``threads`` threads (GFLOP/s): the median of ``repeats`` 2048^3 products."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        times.append((time.perf_counter() - t0) / 4)
    return 2 * 2048 ** 3 / statistics.median(times) / 1e9


def model_flops(run: Path) -> tuple[str, int]:
    """The model's name and its FLOPs for one clip (2 x MACs, frontend included)."""
    import torch

    from clipwise.kinds import load_run
    from clipwise.models.compare import _macs

    model = load_run(run).model.eval()
    macs = _macs(model, torch.zeros(1, model.spec.clip_samples))
    return str(model.spec.model.get("name")), 2 * int(macs or 0)


def smallest_builtin() -> str:
    import torch

    from clipwise.models.compare import _macs
    from clipwise.models.registry import create_backbone, list_models

    best = None
    for e in list_models():
        if not e.family.startswith("built-in"):
            continue
        model = create_backbone(e.name, num_classes=50, input_size=(64, 501)).eval()
        macs = _macs(model, torch.zeros(1, 1, 64, 501))
        if macs and (best is None or macs < best[1]):
            best = (e.name, macs)
    return best[0]


def plain_loop(run: Path, files: list[str]) -> None:
    import librosa
    import torch

    from clipwise.kinds import load_run

    model = load_run(run).model.eval()
    n = model.spec.clip_samples
    with torch.no_grad():
        for f in files:
            y, _ = librosa.load(f, sr=model.spec.sample_rate)
            y = np.pad(y, (0, max(0, n - len(y))))[:n]
            torch.softmax(model(torch.from_numpy(y)[None]), -1)


def ensure_bundle(run: Path, work: Path) -> tuple[Path, str | None]:
    """The run's bundle, with its int8 graph where export accepts one; else why not (an untrained model's flat
    probabilities change their top label under int8, and export refuses it)."""
    bundle = work / f"{run.name}.bundle"
    if not (bundle / "bundle.json").is_file():
        log = work / "export.log"
        done = subprocess.run([*CLIPWISE, "export", str(run), "--out", str(bundle), "--int8"], capture_output=True,
                              text=True)
        log.write_text(done.stdout + done.stderr)
        if done.returncode:
            run_clipwise(["export", str(run), "--out", str(bundle)], log=log)
            (work / f"{run.name}.no-int8").write_text(done.stderr.strip())
    reason = work / f"{run.name}.no-int8"
    return bundle, (reason.read_text() if reason.is_file() else None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run of the default model on 5 s clips (ESC-50)")
    p.add_argument("--small-run", help="a run of the smallest built-in model (default: trained into --work)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "clipwise-deploy-throughput"))
    p.add_argument("--clips", type=int, default=720, help="720 clips of 5 s: one hour")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default="deploy_throughput")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    threads = len(os.sched_getaffinity(0))
    manifest = dataset_manifest("esc50_16k")
    rows = pd.read_csv(manifest).sort_values("path")
    files = [str((manifest.parent / f).resolve()) for f in rows["path"].head(args.clips)]
    job_manifest = work / "files.csv"
    pd.DataFrame({"path": files}).to_csv(job_manifest, index=False)
    audio_seconds = sum(sf.info(f).duration for f in files)

    small = Path(args.small_run) if args.small_run else work / "small-run"
    if not (small / "summary.json").is_file():
        name = smallest_builtin()
        run_clipwise(["train", "--data", str(manifest), "--test-fold", "1", "--allow-leakage", "--model", name,
                      "--out", str(small), "train.epochs=1", "train.progress=false"], log=work / "train.log")

    peak = peak_gflops(threads=threads)
    result = {"clips": len(files), "audio_seconds": round(audio_seconds, 1), "threads": threads,
              "peak_gflops": round(peak, 1), "repeats": args.repeats, "models": {}}
    partial = work / "partial.json"  # models measured by an interrupted invocation (same clips) are kept
    if partial.is_file() and json.loads(partial.read_text()).get("clips") == len(files):
        result["models"] = json.loads(partial.read_text())["models"]
    for run in (Path(args.run), small):
        if str(run) in [m["run"] for m in result["models"].values()]:
            continue
        import torch

        from clipwise.api import load as load_run_model
        from clipwise.runtime import load as load_bundle

        torch.set_num_threads(threads)
        name, flops = model_flops(run)
        bundle, no_int8 = ensure_bundle(run, work)
        limit = peak * 1e9 / flops if flops else None
        eager, fp32 = load_run_model(run), load_bundle(bundle)
        int8 = None if no_int8 else load_bundle(bundle, int8=True)
        out = work / "job.parquet"

        def job() -> None:
            out.unlink(missing_ok=True)
            subprocess.run([*CLIPWISE, "predict", str(bundle), "--manifest", str(job_manifest), "--out", str(out),
                            "--jobs", str(threads)], check=True, capture_output=True)

        engines = {
            "eager torch (clipwise.load)": lambda: eager.predict_proba(files),
            "onnx fp32 (clipwise.runtime)": lambda: fp32.predict_proba(files),
            **({} if int8 is None else {"onnx int8 (clipwise.runtime)": lambda: int8.predict_proba(files)}),
            "batch job (predict --manifest, onnx fp32)": job,
            "plain loop (librosa + eager, per file)": lambda: plain_loop(run, files),
        }
        figures = {}
        for engine, fn in engines.items():
            seconds = median_seconds(fn, repeats=args.repeats)
            cps = len(files) / seconds
            figures[engine] = {"seconds": round(seconds, 2), "clips_per_second": round(cps, 1),
                               "x_real_time": round(audio_seconds / seconds, 1),
                               "fraction_of_limit": round(cps / limit, 3) if limit else None}
            print(f"{name:16s} {engine:45s} {cps:8.1f} clips/s {audio_seconds / seconds:8.0f}x real time"
                  + (f"  {cps / limit:6.1%} of the limit" if limit else ""), flush=True)
        result["models"][name] = {"run": str(run), "mflops_per_clip": round(flops / 1e6, 1),
                                  "compute_limit_clips_per_second": round(limit, 1) if limit else None,
                                  "engines": figures, "int8_not_exported": no_int8}
        partial.write_text(json.dumps(result))
    save_result(args.name, result)


if __name__ == "__main__":
    main()
