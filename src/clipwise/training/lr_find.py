"""``clipwise lr-find``: the learning-rate range test (Smith, 2017) on the run's own data and augmentation.

The learning rate grows exponentially from ``start`` to ``end`` over ``steps`` training batches of a fresh
model; the loss is smoothed (exponential moving average, bias-corrected) and the test stops once it exceeds
four times its minimum. Suggested: the learning rate at the steepest descent of the smoothed loss, and one
tenth of the learning rate at its minimum (the customary rule); the plot shows both. Nothing is saved as a
model: the point is the curve.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clipwise.config import Config


def lr_range_test(config: Config, *, out: str | Path, start: float = 1e-6, end: float = 1.0, steps: int = 100,
                  beta: float = 0.9) -> dict[str, Any]:
    """Run the range test and write ``lr_find.csv`` and ``lr_find.png`` into ``out``.

    Returns:
        ``{"suggested_lr", "steepest_lr", "min_loss_lr", "steps_run"}``.
    """
    import lightning as L

    from clipwise.data.prepare import prepare_data, steps_per_epoch
    from clipwise.training.data import AudioDataModule, build_spec, fit_normalisation
    from clipwise.training.module import ClassifierModule, parameter_groups

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    config, data = prepare_data(config)
    spec = build_spec(config, data.labels)
    module = ClassifierModule(spec.to_dict(), config.to_dict(),
                              steps_per_epoch(len(data.targets["train"]), config.data.batch_size))
    fit_normalisation(module.model, data.stores["train"])
    module.train()
    loader = AudioDataModule(config, data, spec).train_dataloader()
    optimizer = torch.optim.AdamW(parameter_groups(module.model, config.optim.weight_decay), lr=start,
                                  betas=tuple(config.optim.betas))
    ratio = (end / start) ** (1 / max(1, steps - 1))
    lrs, losses, smooth = [], [], []
    avg, best, step = 0.0, math.inf, 0
    while step < steps:
        for wave, target in loader:
            lr = start * ratio**step
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss = module.batch_loss(wave, target)
            if not torch.isfinite(loss):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), config.train.grad_clip)
            optimizer.step()
            avg = beta * avg + (1 - beta) * float(loss.detach())
            value = avg / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(float(loss.detach()))
            smooth.append(value)
            best = min(best, value)
            step += 1
            if step >= steps or value > 4 * best:
                break
        else:
            continue
        break
    frame = pd.DataFrame({"lr": lrs, "loss": losses, "smoothed_loss": smooth})
    frame.to_csv(out / "lr_find.csv", index=False)
    result = suggest(np.array(lrs), np.array(smooth))
    result["steps_run"] = len(lrs)
    _plot(frame, result, out / "lr_find.png")
    return result


def suggest(lrs: np.ndarray, smooth: np.ndarray) -> dict[str, float]:
    """Steepest-descent and min-loss/10 learning rates of a range-test curve (the first and last 10 % of the
    points, where the average is settling or exploding, are not candidates for the steepest point)."""
    if len(lrs) < 5:
        return {"suggested_lr": float("nan"), "steepest_lr": float("nan"), "min_loss_lr": float("nan")}
    grad = np.gradient(smooth, np.log10(lrs))
    lo, hi = max(1, len(lrs) // 10), max(2, len(lrs) - len(lrs) // 10)
    steepest = float(lrs[lo + int(np.argmin(grad[lo:hi]))])
    min_loss = float(lrs[int(np.argmin(smooth))])
    return {"suggested_lr": min_loss / 10, "steepest_lr": steepest, "min_loss_lr": min_loss}


def _plot(frame: pd.DataFrame, result: dict[str, float], path: Path) -> None:
    from matplotlib.figure import Figure

    from clipwise.evaluate.figures import save_figure as _save

    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(frame["lr"], frame["loss"], color="C7", lw=0.8, alpha=0.6, label="loss")
    ax.plot(frame["lr"], frame["smoothed_loss"], color="C0", lw=1.6, label="smoothed loss")
    for key, color in (("steepest_lr", "C2"), ("suggested_lr", "C3")):
        if np.isfinite(result[key]):
            ax.axvline(result[key], color=color, ls="--", lw=1, label=f"{key.replace('_', ' ')} {result[key]:.2g}")
    ax.set_xscale("log")
    top = float(np.nanpercentile(frame["smoothed_loss"], 95)) * 1.3 if len(frame) else 1
    ax.set(xlabel="learning rate", ylabel="training loss", title="Learning-rate range test", ylim=(0, top))
    ax.legend(fontsize=8)
    _save(fig, path, dpi=110)
