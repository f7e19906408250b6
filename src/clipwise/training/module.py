"""The LightningModule: loss with mixup / label smoothing, SpecAugment, honest per-epoch metrics.

Every epoch logs three separate things: the training loss (on augmented, mixed batches, so not comparable to
anything else), validation metrics, and *clean* training metrics: the same fixed training subset scored like
validation (no augmentation, eval mode, whole clips). Comparing the last two is how overfitting and leakage are
read; comparing validation with the training loss is how reports go wrong.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from clipwise.augment import FilterAugment, FrequencyWarp, Overlay, SpecAugment, TimeReverse, TimeStretch
from clipwise.data.dataset import aggregate_windows
from clipwise.errors import ConfigError
from clipwise.task import get_task
from clipwise.models.classifier import ACTIVATIONS, AudioClassifier, ModelSpec

EVAL_STAGES = ("val", "train_clean")
DIVERGENCE_HINT = ("Training stopped early. Lower optim.lr, keep frontend.normalize=true (unnormalised log-mel "
                   "values of -100..+20 dB make large activations), keep train.grad_clip set, and look for NaN/Inf "
                   "samples in the audio")


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup from ~0 to 1, then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float, *, include_frozen: bool = False) -> list[dict[str, Any]]:
    """No weight decay on biases and norm parameters (decaying them only hurts)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad and not include_frozen:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def head_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters: timm's ``get_classifier()``, a ``head`` module, else the last linear layer."""
    if hasattr(backbone, "get_classifier"):
        head = backbone.get_classifier()
        if isinstance(head, nn.Module):
            return list(head.parameters())
    if isinstance(getattr(backbone, "head", None), nn.Module):
        return list(backbone.head.parameters())
    linears = [m for m in backbone.modules() if isinstance(m, nn.Linear)]
    return list(linears[-1].parameters()) if linears else []


def phase_of_epoch(phases: list[dict[str, Any]], epoch: int) -> int:
    """Index of the phase an epoch falls in (the last phase for epochs beyond the plan)."""
    end = 0
    for i, ph in enumerate(phases):
        end += ph["epochs"]
        if epoch < end:
            return i
    return len(phases) - 1


def phase_lr(phases: list[dict[str, Any]], step: int, *, steps_per_epoch: int, head: bool, min_ratio: float) -> float:
    """Learning rate at ``step`` under ``phases``: each phase a one-cycle schedule of its own (linear warm-up over
    ``pct_start`` of it from lr/25, cosine decay to ``lr * min_ratio``); the backbone (all but the classifier head)
    runs at ``lr * backbone_lr_factor``."""
    start = 0
    for i, ph in enumerate(phases):
        n = max(1, ph["epochs"] * steps_per_epoch)
        if step < start + n or i == len(phases) - 1:
            local = min(step - start, n - 1)
            warm = max(1, int(ph.get("pct_start", 0.25) * n))
            if local < warm:
                f = 1 / 25 + (1 - 1 / 25) * local / warm
            else:
                progress = (local - warm) / max(1, n - 1 - warm)  # the last step reaches the floor
                f = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
            return ph["lr"] * f * (1.0 if head else ph.get("backbone_lr_factor", 1.0))
        start += n
    return 0.0  # pragma: no cover - the loop always returns


class ClassifierModule(L.LightningModule):
    """Trains an :class:`AudioClassifier`.

    Args:
        spec: the model spec as a dict (saved in the checkpoint so the model can be rebuilt).
        config: the resolved run config as a dict.
        steps_per_epoch: optimiser steps per epoch (for the schedule).
    """

    def __init__(self, spec: dict[str, Any], config: dict[str, Any], steps_per_epoch: int,
                 class_weights: list[float] | None = None):
        super().__init__()
        self.save_hyperparameters()
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.model = AudioClassifier(ModelSpec.from_dict(spec))
        aug = config["augment"]
        self.specaugment = (
            SpecAugment(
                freq_masks=aug["freq_masks"],
                freq_mask_fraction=aug["freq_mask_fraction"],
                time_masks=aug["time_masks"],
                time_mask_fraction=aug["time_mask_fraction"],
            )
            if aug["specaugment"]
            else nn.Identity()
        )
        centres = self.model.frontend.centres_hz
        mel_aug = [
            TimeStretch(max_stretch=aug["time_stretch"]) if aug["time_stretch"] > 0 else None,
            FrequencyWarp(centres, max_warp=aug["freq_warp"]) if aug["freq_warp"] > 0 else None,
            FilterAugment(max_db=aug["filter_db"]) if aug["filter_db"] > 0 else None,
            TimeReverse(aug.get("time_reverse", 0.0)) if aug.get("time_reverse", 0.0) > 0 else None,
        ]
        mel_aug = [m for m in mel_aug if m is not None]
        self.mel_augment = nn.Sequential(*mel_aug) if mel_aug else None
        self.task = get_task(spec.get("task", "multiclass"))
        overlay = aug.get("overlay", 0.0)
        if overlay > 0 and not self.task.multi_label:
            raise ConfigError("augment.overlay adds a second clip's labels, so it needs a multi-label task; set "
                              "augment.overlay=0 (or data.task=multilabel if clips may carry several labels)")
        self.overlay = Overlay(overlay, aug.get("overlay_gain_db", 6.0)) if overlay > 0 else None
        self.mixup = None
        self.mixup_alpha, self.mixup_prob = aug["mixup_alpha"], aug["mixup_prob"]
        # multi-label mixup of soft multi-hot targets is done in the loss (timm's Mixup one-hot encodes indices)
        if not self.task.multi_label and (aug["mixup_alpha"] > 0 or aug["cutmix_alpha"] > 0) and aug["mixup_prob"] > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=aug["mixup_alpha"],
                cutmix_alpha=aug["cutmix_alpha"],
                prob=aug["mixup_prob"],
                label_smoothing=aug["label_smoothing"],
                num_classes=len(spec["labels"]),
            )
        self.label_smoothing = aug["label_smoothing"]
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {s: [] for s in EVAL_STAGES}
        self.diverged: str | None = None
        self.planned_epochs: int = int(config["train"]["epochs"])  # the schedule's length
        self.budget_epochs: int | None = None  # set when train.max_minutes planned the length
        # training time of earlier processes of this run (restored on --resume), and when this process began
        self.seconds_before: float = 0.0
        self.fit_started: float | None = None

    def train_seconds(self) -> float:
        """Training wall time of the run so far: earlier processes (up to their last checkpoint) plus this one."""
        return self.seconds_before + (time.time() - self.fit_started if self.fit_started is not None else 0.0)

    def _stop_diverged(self, what: str) -> None:
        if self.diverged is None:
            self.diverged = f"{what}. {DIVERGENCE_HINT}"
        self.trainer.should_stop = True

    # -- training ----------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        wave, target = batch
        loss = self.batch_loss(wave, target)
        if not torch.isfinite(loss):
            # stop cleanly rather than crash: the checkpoints and metrics so far stay usable, and the report
            # says what happened; returning None skips this step's backward and optimiser update
            self._stop_diverged(f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, "
                                f"batch {batch_idx}")
            return None
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(wave))
        return loss

    def batch_loss(self, wave: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch, with every augmentation (also used by the learning-rate finder)."""
        if self.overlay is not None:
            wave, target = self.overlay(wave, target)
        spec = self.specaugment(self.model.spectrogram(wave, self.mel_augment))
        return _LOSSES[self.task.name](self, spec, target)

    def _multiclass_loss(self, spec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on softmax outputs; timm's mixup / cutmix with smoothed soft targets, when on."""
        if self.mixup is not None and len(spec) % 2 == 0 and len(spec) > 1:
            spec, soft = self.mixup(spec, target)
            logits = self.model.forward_spec(spec)
            if self.class_weights is not None:
                soft = soft * self.class_weights[None, :]  # the weighted form of the soft-target cross-entropy
            loss = torch.sum(-soft * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self.model.forward_spec(spec)
            loss = nn.functional.cross_entropy(logits.float(), target, weight=self.class_weights,
                                               label_smoothing=self.label_smoothing)
        return loss

    def _multilabel_loss(self, spec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE on sigmoid outputs; mixup mixes the multi-hot targets into soft ones with the same weight."""
        target = target.float()
        if self.mixup_alpha > 0 and len(spec) > 1 and np.random.rand() < self.mixup_prob:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            spec = lam * spec + (1 - lam) * spec.flip(0)
            target = lam * target + (1 - lam) * target.flip(0)
        logits = self.model.forward_spec(spec)
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=self.class_weights)

    # -- evaluation (validation and clean-train subset) --------------------------------------------------------
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        windows, target, counts, _ = batch
        logits = self.model(windows).float()
        scores = ACTIVATIONS[self.task.activation](logits)
        probs = aggregate_windows(scores, counts)
        self._outputs[EVAL_STAGES[dataloader_idx]].append((probs.cpu(), target.cpu()))

    def on_validation_epoch_end(self) -> None:
        for stage, outputs in self._outputs.items():
            if not outputs:
                continue
            probs = torch.cat([p for p, _ in outputs]).numpy()
            target = torch.cat([t for _, t in outputs]).numpy()
            finite = bool(np.isfinite(probs).all())
            if not finite:
                if stage == "val":
                    self._stop_diverged(f"the model's outputs became non-finite (NaN/Inf) at epoch "
                                        f"{self.current_epoch}")
                probs = np.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0)  # so the scores can be computed
            metrics = self.task.metrics(target, probs, labels=self.model.labels)
            if not finite:
                metrics["loss"] = float("nan")  # the loss of a NaN model is not defined, whatever the scores
            for name, value in metrics.items():
                # every rank scores the full evaluation sets, so no cross-rank reduction is needed
                self.log(f"{stage}_{name}", value, prog_bar=(stage == "val" and name == "accuracy"))
            outputs.clear()

    # -- optimisation ------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.fit_started = time.time()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.budget_epochs is not None:
            checkpoint["clipwise_budget_epochs"] = self.budget_epochs
        checkpoint["clipwise_train_seconds"] = self.train_seconds()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "clipwise_budget_epochs" in checkpoint:
            self.budget_epochs = self.planned_epochs = int(checkpoint["clipwise_budget_epochs"])
        # time spent after this checkpoint by an interrupted process is redone, so it is not counted
        self.seconds_before = float(checkpoint.get("clipwise_train_seconds", 0.0))

    def on_train_start(self) -> None:
        # a resumed run keeps the length its time budget planned (and nothing else shortens a run)
        if self.budget_epochs is not None and self.budget_epochs < self.trainer.max_epochs:
            self.trainer.fit_loop.max_epochs = self.budget_epochs

    # -- phases (fit_one_cycle style): each its own one-cycle schedule, optionally with a frozen backbone -------
    def on_train_epoch_start(self) -> None:
        phases = self.hparams.config["optim"].get("phases") or []
        if not phases:
            return
        phase = phase_of_epoch(phases, self.current_epoch)
        frozen = phases[phase].get("freeze") == "backbone"
        head = {id(p) for p in head_parameters(self.model.backbone)}
        for p in self.model.backbone.parameters():
            if id(p) not in head:
                p.requires_grad_(not frozen)

    def _phase_optimizers(self, opt_cfg: dict[str, Any]):
        phases = opt_cfg["phases"]
        head = {id(p) for p in head_parameters(self.model.backbone)}
        groups = []
        for group in parameter_groups(self.model, opt_cfg["weight_decay"], include_frozen=True):
            for is_head in (True, False):
                params = [p for p in group["params"] if (id(p) in head) == is_head]
                if params:
                    groups.append({**group, "params": params, "lr": 1.0, "is_head": is_head})
        optimizer = torch.optim.AdamW(groups, lr=1.0, betas=tuple(opt_cfg["betas"]))
        steps = self.hparams.steps_per_epoch

        def factor(is_head: bool):
            return lambda step: phase_lr(phases, step, steps_per_epoch=steps, head=is_head,
                                         min_ratio=opt_cfg["min_lr_ratio"])

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g["is_head"]) for g in groups])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_optimizers(self):
        opt_cfg = self.hparams.config["optim"]
        if opt_cfg.get("phases"):
            return self._phase_optimizers(opt_cfg)
        epochs = self.hparams.config["train"]["epochs"]
        optimizer = torch.optim.AdamW(
            parameter_groups(self.model, opt_cfg["weight_decay"]), lr=opt_cfg["lr"], betas=tuple(opt_cfg["betas"])
        )
        total = max(1, epochs * self.hparams.steps_per_epoch)
        if opt_cfg["schedule"] == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=opt_cfg["lr"], total_steps=total, pct_start=0.25,
                final_div_factor=1 / max(opt_cfg["min_lr_ratio"], 1e-4) / 25,
            )
        else:
            warmup = int(opt_cfg["warmup_epochs"] * self.hparams.steps_per_epoch)
            min_ratio = opt_cfg["min_lr_ratio"]  # cosine only: the constant schedule stays at lr after warmup
            steps = self.hparams.steps_per_epoch
            # the planned length is read at every step: a time budget (train.max_minutes) may shorten it
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer,
                lambda step: warmup_cosine(step, warmup_steps=max(1, warmup),
                                           total_steps=max(1, self.planned_epochs * steps), min_ratio=min_ratio)
                if opt_cfg["schedule"] == "cosine"
                else min((step + 1) / max(1, warmup), 1.0),
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


#: each task's training loss (the task names it; the module computes it in torch)
_LOSSES = {"multiclass": ClassifierModule._multiclass_loss, "multilabel": ClassifierModule._multilabel_loss}

