"""Lightning callbacks that write the run folder as training goes."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.plugins.io import TorchCheckpointIO

from clipwise.run import RunFolder, atomic_write_text


class EpochMetricsCSV(L.Callback):
    """Append one row per epoch to ``metrics.csv``: lr, training loss, validation and clean-train metrics, and
    ``epoch_seconds`` (the epoch's wall time, its validation included).

    On resume, rows after the resumed epoch (written by the interrupted run, not yet checkpointed) are
    dropped first so the file matches the weights it continues from.
    """

    def __init__(self, run: RunFolder, *, resumed_epoch: int | None = None):
        self.run = run
        self.resumed_epoch = resumed_epoch
        self.epoch_started: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        path = self.run.metrics_path
        if self.resumed_epoch is None:
            path.unlink(missing_ok=True)
        elif path.is_file():
            # read as text so a written "nan" (a diverged loss) survives the rewrite
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            atomic_write_text(path, df[df["epoch"].astype(int) <= self.resumed_epoch].to_csv(index=False))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_started = time.time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        row: dict[str, float | int] = {"epoch": trainer.current_epoch}
        if self.epoch_started is not None:
            row["epoch_seconds"] = round(time.time() - self.epoch_started, 2)
        if trainer.optimizers:
            row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.endswith("_n"):
                continue
            row[key] = float(value)  # NaN/inf kept: a diverged loss must show in the file
        self.run.append_metrics(row)


class TimeBudget(L.Callback):
    """Fit the learning-rate schedule to a wall-time budget (``train.max_minutes``).

    Lightning's ``max_time`` alone would stop training wherever the clock runs out, in the middle of a cosine
    schedule planned for more epochs: the model would never see a low learning rate. After the first epoch
    (validation included) this plans as many epochs as fit in what is left of the budget, with a 5 % margin, and
    the module's schedule anneals over exactly those. The plan is revised after each of the next
    ``replan_epochs`` epochs from the median of the latest epoch times, so a first epoch slowed by one-off costs
    (warm-up, caches, another job on the machine) does not shorten the whole run; later epochs keep the plan,
    so the schedule is not reshaped while it anneals. ``max_time`` stays on as the hard limit, and no epoch starts
    that the clock says cannot end within it (the median of the latest three epochs, validation included, is
    more than the time left): Lightning would cut that epoch short at the limit and then still validate it, so
    a model whose epochs are long next to the budget used to overrun it by most of an evaluation (ResNet-50 on
    ESC-50, one core, 15 minutes: 17.4). A resumed run keeps its plan.
    """

    def __init__(self, minutes: float, *, margin: float = 0.95, replan_epochs: int = 3):
        self.seconds = minutes * 60
        self.margin = margin
        self.replan_epochs = replan_epochs
        self.first_epoch = 0
        self.epoch_starts: list[float] = []  # the training start, then the start of each later epoch
        self.max_epochs = 0
        self.resumed = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.first_epoch, self.epoch_starts, self.max_epochs = trainer.current_epoch, [time.time()], trainer.max_epochs
        if getattr(pl_module, "budget_epochs", None) is not None:
            # a resumed run keeps the plan its first process made (restored from the checkpoint), so its
            # schedule goes on annealing over the same epochs rather than getting a whole budget again
            self.resumed = True
            trainer.fit_loop.max_epochs = int(pl_module.budget_epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        finished = trainer.current_epoch - self.first_epoch  # epochs this process has run, validation included
        if not self.epoch_starts or finished < 1:  # the first epoch starts with the training
            return
        self.epoch_starts.append(time.time())
        if self.resumed or finished > 1 + self.replan_epochs:
            return
        recent = np.diff(self.epoch_starts)[-3:]
        left = self.margin * self.seconds - (self.epoch_starts[-1] - self.epoch_starts[0])
        fit = trainer.current_epoch + max(1, int(left / max(float(np.median(recent)), 1e-6)))
        # every process of a multi-process run must stop after the same epoch: rank 0's clock decides
        planned = int(trainer.strategy.broadcast(min(self.max_epochs, fit), src=0))
        trainer.fit_loop.max_epochs = pl_module.planned_epochs = pl_module.budget_epochs = planned

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Stop here when the next epoch, at the pace of the latest ones, would not end before the hard limit."""
        timer = next((cb for cb in trainer.callbacks if callable(getattr(cb, "time_remaining", None))), None)
        left = timer.time_remaining() if timer is not None else None
        if left is None or trainer.should_stop or not self.epoch_starts:
            return
        recent = np.diff([*self.epoch_starts[-3:], time.time()])  # the latest three epochs, this one included
        too_long = bool(float(np.median(recent)) > left)
        if trainer.strategy.broadcast(too_long, src=0):  # rank 0's clock decides, as for the plan
            trainer.should_stop = True


def auto_ema_decay(total_steps: int, *, share: float = 0.05, bounds: tuple[float, float] = (0.9, 0.9999)) -> float:
    """EMA decay whose time constant, 1 / (1 - decay), is ``share`` of the planned optimiser steps.

    A fixed decay suits only one run length: 0.999 averages over ~1,000 steps, most of a 1,600-step run, so the
    average would trail far behind the weights; over a 300,000-step run the same share gives timm's usual 0.9998.
    """
    tau = max(1.0, share * total_steps)
    return round(float(min(bounds[1], max(bounds[0], 1.0 - 1.0 / tau))), 6)


def ema_update(decay: float | Callable[[], float]):
    """A ``multi_avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`: an exponential moving average with
    the usual warm-up, decay_n = min(decay, (1 + n) / (10 + n)) after n updates, so the first updates are not
    pulled towards the random initialisation. Integer buffers (BatchNorm's batch counter) take the current value.
    ``decay`` may be a function, asked at every update (an auto decay follows the planned run length)."""
    get = decay if callable(decay) else (lambda: decay)

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(get(), (1.0 + n) / (10.0 + n))
        if averaged and averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:
            torch._foreach_copy_(averaged, current)

    return update


class WeightEMA(WeightAveraging):
    """An exponential moving average of the weights (BatchNorm statistics included), by Lightning's
    :class:`WeightAveraging`: validation scores the average, so the best checkpoint is chosen on it and holds
    it (``state_dict``; the raw weights stay in ``current_model_state`` for ``--resume``), and training ends
    with it in the model.

    Args:
        decay: a decay in (0, 1), or ``"auto"``: :func:`auto_ema_decay` of the module's planned optimiser steps,
            read at every update, so it follows a length that ``train.max_minutes`` plans after the first epoch
            (and a resumed run, whose plan comes back with its checkpoint).
    """

    def __init__(self, decay: float | str):
        self.fixed = None if decay == "auto" else float(decay)
        self.module: L.LightningModule | None = None
        super().__init__(multi_avg_fn=ema_update(self.decay))

    def decay(self) -> float:
        if self.fixed is not None:
            return self.fixed
        if self.module is None:
            raise RuntimeError("WeightEMA(auto) is asked for its decay before training started")
        steps = int(self.module.planned_epochs) * int(self.module.hparams.steps_per_epoch)
        return auto_ema_decay(steps)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.module = pl_module
        super().setup(trainer, pl_module, stage)


BATCHNORM_TYPES = (torch.nn.modules.batchnorm._BatchNorm,)


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable[torch.Tensor], *,
                          context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> int:
    """Re-estimate every BatchNorm layer's running mean and variance from ``batches`` ("precise BN").

    Training updates the running statistics from augmented batches (mixup blends, masked and warped spectra), so
    they describe inputs the model never sees at test time, and with momentum 0.1 mostly the last ten batches.
    Here they are reset and re-estimated as the plain average over clean batches, with only the BatchNorm layers
    in training mode (dropout stays off, no weight changes). Returns the number of layers recalibrated (0 when
    the model has no BatchNorm, and then nothing runs)."""
    layers = [m for m in model.modules() if isinstance(m, BATCHNORM_TYPES) and m.track_running_stats]
    if not layers:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.eval()
    for m in layers:
        m.train()
    seen = 0
    try:
        with context():
            for batch in batches:
                if len(batch) > 1:  # a batch of one has no variance (BatchNorm1d refuses it)
                    model(batch)
                    seen += 1
    finally:
        for m, momentum, (mean, var, count) in zip(layers, momenta, saved):
            m.momentum = momentum
            if not seen:  # nothing to estimate from: keep what was there
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        for m, mode in modes.items():
            m.training = mode
    return len(layers) if seen else 0


class PreciseBatchNorm(L.Callback):
    """Before each validation, re-estimates the model's BatchNorm statistics on clean training clips
    (:func:`recalibrate_batchnorm`), so validation, the checkpoints and the final model use statistics of the
    inputs they will be scored on. Runs after :class:`WeightEMA` has swapped the average in, so with an EMA it is
    the average's statistics that are re-estimated. Skipped during Lightning's sanity check.

    Args:
        loader: returns an iterable of batches ``(windows, ...)`` of clean training audio.
    """

    def __init__(self, loader: Callable[[], Iterable]):
        self.loader = loader

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        model = pl_module.model
        device = pl_module.device
        recalibrate_batchnorm(model, (batch[0].to(device) for batch in self.loader()),
                              context=trainer.precision_plugin.forward_context)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, synced and renamed into place: a crash or a full disk mid-write
    leaves the checkpoint before readable. The ``last.ckpt`` it replaces is kept as ``last.ckpt.prev``, so a resume
    falls back to the epoch before when the newest cannot be read (the best checkpoint needs no second copy)."""

    KEEP_PREVIOUS = ("last.ckpt",)

    @staticmethod
    def previous(path: str | os.PathLike) -> Path:
        """Where the checkpoint ``path`` replaced is kept."""
        return Path(f"{os.fspath(path)}.prev")

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if path.is_file() and path.name in self.KEEP_PREVIOUS:
            os.replace(path, self.previous(path))
        os.replace(tmp, path)
