"""ConViT on a 64 x 501 log-mel: one training step, the spectrogram zero-padded to a 512 x 512 square (what
clipwise did before 5137071) against resampled to the 192 x 192 square grid it builds now.

Usage: .venv/bin/python benchmarks/convit_grid.py [--batch 2] [--repeats 3] [--threads 1]
Prints the median seconds of a forward and backward pass for each, and the ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_seconds  # noqa: E402


def step_seconds(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    return median_seconds(lambda: net(x).sum().backward(), repeats=repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import timm

    from clipwise.models.registry import _PadToGrid, create_backbone

    padded = _PadToGrid(timm.create_model("convit_tiny", in_chans=1, num_classes=50, img_size=(512, 512)),
                        (512, 512))
    resampled = create_backbone("convit_tiny", num_classes=50, input_size=(64, 501))
    x = torch.randn(args.batch, 1, 64, 501)
    before, now = step_seconds(padded, x, args.repeats), step_seconds(resampled, x, args.repeats)
    print(f"padded to 512x512: {before:.2f} s   resampled to {resampled.size[0]}x{resampled.size[1]}: {now:.2f} s   "
          f"ratio {before / now:.0f}x   (batch {args.batch}, {args.threads} thread(s), median of {args.repeats})")


if __name__ == "__main__":
    main()
