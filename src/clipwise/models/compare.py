"""``clipwise models --compare``: measure every model for a given input, and recommend one for a use case.

For each model: parameters, multiply-accumulates (MACs, counted by torch's FlopCounterMode on the configured
spectrogram: FLOPs / 2), CPU latency at batch 1 and batch 32 (median of repeated timed forwards after a warm-up,
in the calling process's torch threads), activation memory (the summed size of every module's output for one
clip: what a forward must hold if nothing is freed, an upper bound of the peak) and, when run folders are
given, the best test accuracy those runs reached with the model. Every recommendation says which of its
inputs were measured and which are missing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from clipwise.config import USE_CASES



@dataclass
class ModelMeasure:
    name: str
    family: str
    params: int
    macs: int | None
    latency_ms_b1: float | None
    latency_ms_b32: float | None
    activation_mib: float | None
    accuracy: float | None = None
    accuracy_runs: int = 0


def _macs(model: torch.nn.Module, x: torch.Tensor) -> int | None:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        # with gradients on: under no_grad an nn.TransformerEncoderLayer in eval mode takes PyTorch's fused fast
        # path, an operator the counter has no formula for, and a transformer's encoder counted as 0 MACs
        with FlopCounterMode(display=False) as counter, torch.enable_grad():
            model(x)
        return int(counter.get_total_flops() // 2)
    except Exception:  # noqa: BLE001 - an operator the counter does not know: report "not measured"
        return None


def _latency_ms(model: torch.nn.Module, x: torch.Tensor, *, repeats: int) -> float:
    with torch.no_grad():
        model(x)  # warm-up: allocator, lazy kernels
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _activation_mib(model: torch.nn.Module, x: torch.Tensor) -> float:
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total / 2**20


def runs_accuracy(roots: list[str | Path]) -> dict[str, tuple[float, int]]:
    """Best test accuracy and number of runs per model name, from the summary.json files under ``roots``."""
    best: dict[str, tuple[float, int]] = {}
    for root in roots:
        for path in Path(root).rglob("summary.json"):
            try:
                s = json.loads(path.read_text())
                name, acc = (s.get("model") or {}).get("name"), (s.get("test") or {}).get("accuracy")
            except (OSError, ValueError):
                continue
            if name and isinstance(acc, (int, float)):
                prev = best.get(name, (-1.0, 0))
                best[name] = (max(prev[0], float(acc)), prev[1] + 1)
    return best


def measure_models(names: list[str] | None = None, *, input_size: tuple[int, int] = (64, 501), num_classes: int = 50,
                   batch: int = 32, repeats: int = 5, runs: list[str | Path] | None = None) -> list[ModelMeasure]:
    """Measure the built-in models (one name per constructor) and the tested timm backbones, or ``names``."""
    from clipwise.models.registry import MODELS, create_backbone, list_models

    entries = {e.name: e for e in list_models() if e.family != "classical"}
    if names is None:
        seen, names = set(), []
        for e in entries.values():
            key = id(MODELS.get(e.name)) if e.name in MODELS else e.name
            if key not in seen:
                seen.add(key)
                names.append(e.name)
    accuracy = runs_accuracy(runs or [])
    out = []
    for name in names:
        torch.manual_seed(0)
        model = create_backbone(name, num_classes=num_classes, input_size=input_size).eval()
        one = torch.randn(1, 1, *input_size)
        acc, n_runs = accuracy.get(name, (None, 0))
        out.append(ModelMeasure(
            name=name, family=entries[name].family if name in entries else "timm",
            params=sum(p.numel() for p in model.parameters()), macs=_macs(model, one),
            latency_ms_b1=_latency_ms(model, one, repeats=repeats),
            latency_ms_b32=_latency_ms(model, torch.randn(batch, 1, *input_size), repeats=max(2, repeats // 2))
            if batch > 1 else None,
            activation_mib=_activation_mib(model, one), accuracy=acc, accuracy_runs=n_runs))
    return out


def recommend(measures: list[ModelMeasure], use_case: str) -> tuple[ModelMeasure, str]:
    """The model for a use case and the reason, naming what was measured.

    - accuracy: the best test accuracy among models with runs (none: the largest by MACs, said to be a guess);
    - speed: the lowest latency per clip at batch 32;
    - edge: the fewest parameters among models within 5 points of the best accuracy (all, without runs);
    - balanced: the highest accuracy minus 5 points per doubling of batch-1 latency over the fastest.
    """
    if use_case not in USE_CASES:
        raise ValueError(f"use case must be one of {USE_CASES}")
    with_acc = [m for m in measures if m.accuracy is not None]
    measured = "measured here: parameters, MACs, latency" + (
        f"; accuracy from runs of {len(with_acc)} model(s)" if with_acc else "; no accuracy (no runs given or found)")
    if use_case == "speed":
        best = min(measures, key=lambda m: (m.latency_ms_b32 or m.latency_ms_b1 or np.inf))
        return best, f"lowest latency per clip ({measured})"
    if use_case == "accuracy":
        if with_acc:
            best = max(with_acc, key=lambda m: m.accuracy)
            return best, f"highest test accuracy in the runs ({measured})"
        best = max(measures, key=lambda m: m.macs or 0)
        return best, f"the most compute (MACs): a guess, since no accuracy was measured ({measured})"
    if use_case == "edge":
        pool = measures
        if with_acc:
            top = max(m.accuracy for m in with_acc)
            pool = [m for m in with_acc if m.accuracy >= top - 0.05]
        best = min(pool, key=lambda m: m.params)
        why = "within 5 points of the best accuracy" if with_acc else "accuracy unknown"
        return best, f"fewest parameters, {why} ({measured})"
    fastest = min(m.latency_ms_b1 or np.inf for m in measures)
    pool = with_acc or measures

    def score(m: ModelMeasure) -> float:
        penalty = 0.05 * np.log2(max(m.latency_ms_b1 or fastest, fastest) / fastest)
        return (m.accuracy if m.accuracy is not None else 0.0) - penalty

    best = max(pool, key=score)
    why = "accuracy traded against latency (-5 points per doubling)" if with_acc else \
        "the fastest, since accuracy is unknown"
    return best, f"{why} ({measured})"


def as_rows(measures: list[ModelMeasure]) -> list[dict]:
    return [asdict(m) for m in measures]


def print_comparison(*, only: list[str] | None, seconds: float, sample_rate: int, n_mels: int, batch: int,
                     runs: list[str | Path], out: str | None, use_case: str | None) -> None:
    """`clipwise models --compare`: measure the models on a ``seconds``-long clip, print the table, optionally
    write it as CSV and recommend a model for ``use_case``."""
    import pandas as pd

    from clipwise.frontends import n_frames, stft_sizes

    _, hop, _ = stft_sizes(sample_rate=sample_rate, win_ms=25.0, hop_ms=10.0, n_fft=None)
    size = (n_mels, n_frames(int(seconds * sample_rate), hop))
    print(f"measuring on a {size[0]} x {size[1]} spectrogram ({seconds} s at {sample_rate} Hz, {n_mels} mels), "
          f"{torch.get_num_threads()} torch threads ...", flush=True)
    measures = measure_models(only, input_size=size, batch=batch, runs=runs)
    frame = pd.DataFrame(as_rows(measures))
    frame["MMACs"] = (frame["macs"] / 1e6).round(1)
    cols = ["name", "family", "params", "MMACs", "latency_ms_b1", "latency_ms_b32", "activation_mib", "accuracy",
            "accuracy_runs"]
    print(frame[cols].round(3).to_string(index=False))
    if out:
        frame.to_csv(out, index=False)
        print(f"wrote {out}")
    if use_case:
        best, why = recommend(measures, use_case)
        print(f"\nrecommended for {use_case}: {best.name} - {why}")
