"""INT8 against fp32 for one bundle: file size, latency of one 5 s window on one thread (the edge case), and the
accuracy of both on the run's test clips (ESC-50 fold 1 for a fold-1 run).

Usage: .venv/bin/python benchmarks/int8.py --run RUN [--calibration 512] [--repeats 50]

The bundle is exported with ``clipwise export RUN --out RUN.int8-bundle --int8`` (kept in --work); the accuracy
change is the one export measures and writes into bundle.json (every test clip, scored as `clipwise predict`
scores it). Latency: onnxruntime with one intra-op thread, batch 1, median of --repeats after 5 warm-up calls,
the two graphs timed alternately so that a busy moment of the machine hits both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_clipwise, save_result  # noqa: E402


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "clipwise-int8"))
    p.add_argument("--calibration", type=int, default=512)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--name", default="int8")
    args = p.parse_args()
    run, work = Path(args.run), Path(args.work)
    bundle = work / f"{run.name}.int8-bundle"
    if not (bundle / "bundle.json").is_file():
        seconds = run_clipwise(["export", str(run), "--out", str(bundle), "--int8", "--calibration",
                                str(args.calibration)], log=work / "export.log")
        print(f"export with --int8: {seconds:.0f} s")
    meta = json.loads((bundle / "bundle.json").read_text())
    q = meta["int8"]
    x = np.random.default_rng(0).standard_normal((1, meta["clip_samples"])).astype(np.float32) * 0.1
    graphs = {"fp32": session(bundle / "model.onnx"), "int8": session(bundle / q["file"])}
    for s in graphs.values():
        for _ in range(5):
            s.run(None, {"waveform": x})
    times = {k: [] for k in graphs}
    for _ in range(args.repeats):
        for k, s in graphs.items():
            t0 = time.perf_counter()
            s.run(None, {"waveform": x})
            times[k].append(time.perf_counter() - t0)
    ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result = {
        "run": str(run), "model": meta.get("model"), "calibration_clips": q["calibration_clips"],
        "test_clips": q["clips"], "metric": q["metric"],
        "fp32": {"size_mb": round(q["fp32_size_bytes"] / 1e6, 2), "latency_ms_b1_1thread": round(ms["fp32"], 2),
                 "score": q["fp32_score"]},
        "int8": {"size_mb": round(q["size_bytes"] / 1e6, 2), "latency_ms_b1_1thread": round(ms["int8"], 2),
                 "score": q["int8_score"]},
        "size_ratio": round(q["fp32_size_bytes"] / q["size_bytes"], 2),
        "latency_ratio_fp32_over_int8": round(ms["fp32"] / ms["int8"], 2),
        "top1_agreement": q["top1_agreement"], "score_change_points": round(100 * q["score_change"], 2),
    }
    save_result(args.name, result)


if __name__ == "__main__":
    main()
