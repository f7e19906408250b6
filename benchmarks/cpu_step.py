"""One training step of a model on this CPU under the settings that decide how to use it: float32 vs bf16
autocast, NCHW vs channels-last, and one 2-thread process vs two 1-thread processes side by side.

Usage: .venv/bin/python benchmarks/cpu_step.py [--model audiocnn] [--batch 16] [--repeats 3]
Each figure is the median of --repeats timed steps (forward, backward, AdamW) after one warm-up step, and every
setting is measured in two interleaved rounds, so a drift of the machine shows as a disagreement between them.
Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_seconds, save_result  # noqa: E402


def step_seconds(model_name: str, *, batch: int, repeats: int, threads: int, bf16: bool = False,
                 channels_last: bool = False) -> float:
    """Median seconds of one training step in this process."""
    import torch

    from clipwise.models.registry import create_backbone

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_backbone(model_name, num_classes=50, input_size=(64, 501)).train()
    x, y = torch.randn(batch, 1, 64, 501), torch.randint(0, 50, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return median_seconds(step, repeats=repeats)


def _side_by_side(args: argparse.Namespace) -> list[float]:
    """Two 1-thread processes started together; each prints its median step time."""
    cmd = [sys.executable, __file__, "--model", args.model, "--batch", str(args.batch), "--repeats",
           str(args.repeats), "--one"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return [float(p.communicate()[0].strip()) for p in procs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="audiocnn")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: one 1-thread figure, printed
    args = p.parse_args()
    if args.one:
        print(step_seconds(args.model, batch=args.batch, repeats=args.repeats, threads=1))
        return
    import torch

    from clipwise.training.fit import cpu_has_native_bf16

    settings = {"float32, 1 thread": dict(threads=1), "bf16 autocast, 1 thread": dict(threads=1, bf16=True),
                "channels-last, 1 thread": dict(threads=1, channels_last=True), "float32, 2 threads": dict(threads=2)}
    rounds: dict[str, list[float]] = {k: [] for k in [*settings, "two 1-thread processes side by side"]}
    for _ in range(2):
        for name, kw in settings.items():
            rounds[name].append(round(step_seconds(args.model, batch=args.batch, repeats=args.repeats, **kw), 3))
            print(name, rounds[name][-1], flush=True)
        pair = _side_by_side(args)
        rounds["two 1-thread processes side by side"].append(round(max(pair), 3))
        print("two 1-thread processes side by side (slower of the two)", pair, flush=True)
    native = cpu_has_native_bf16()
    one, two, pair = (statistics.mean(rounds[k]) for k in
                      ("float32, 1 thread", "float32, 2 threads", "two 1-thread processes side by side"))
    save_result("cpu_step", {
        "command": f"benchmarks/cpu_step.py --model {args.model} --batch {args.batch} --repeats {args.repeats}",
        "model": args.model, "batch": args.batch, "native_bf16": native, "cpu_capability":
        torch.backends.cpu.get_cpu_capability(), "step_seconds_two_rounds": rounds,
        "bf16_slowdown": round(statistics.mean(rounds["bf16 autocast, 1 thread"]) / one, 2),
        "two_processes_vs_two_threads_throughput": round(2 * two / pair, 2),
        "two_threads_speedup": round(one / two, 2),
    })
    print(json.dumps({"native_bf16": native}))


if __name__ == "__main__":
    main()
