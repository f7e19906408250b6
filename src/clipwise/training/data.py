"""What a network trains on: its spec (the model's own input config), the Lightning data module (training crops,
evaluation windows, the clean-train and BatchNorm subsets), the input normalisation fitted on training clips and
the output bias at the label prior."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from clipwise.config import Config
from clipwise.data.audio import fix_length
from clipwise.data.dataset import (
    AudioStore,
    TrainDataset,
    WindowDataset,
    balanced_sample_weights,
    class_counts,
    collate_windows,
)
from clipwise.data.prepare import PreparedData, clean_train_indices
from clipwise.errors import ConfigError
from clipwise.models.classifier import AudioClassifier, ModelSpec


def build_spec(config: Config, labels: list[str]) -> ModelSpec:
    return ModelSpec(
        labels=labels,
        sample_rate=int(config.data.sample_rate),
        clip_seconds=float(config.data.clip_seconds),
        frontend=config.frontend.model_dump(),
        model={"name": config.model.name, "pretrained": config.model.pretrained, "dropout": config.model.dropout,
               "params": dict(config.model.params)},
        pad_mode=config.data.pad_mode,
        task=config.data.task,  # resolved by prepare_data; the spec travels without the run folder
    )


@torch.no_grad()
def fit_normalisation(model: AudioClassifier, store: AudioStore, *, max_clips: int = 2000, batch: int = 64) -> None:
    """Per-bin mean/std of the frontend output over (up to ``max_clips``) centred training clips."""
    n = model.spec.clip_samples
    idx = np.random.default_rng(0).permutation(len(store.waves))[:max_clips]

    def batches():
        for s in range(0, len(idx), batch):
            waves = [fix_length(store.waves[i], n, pad_mode=model.spec.pad_mode, crop="center") for i in idx[s : s + batch]]
            yield model.features(torch.from_numpy(np.stack(waves)))

    model.norm.fit(batches())


class AudioDataModule(L.LightningDataModule):
    """Loaders; the training sampler is distributed by hand so validation stays whole on every rank."""

    def __init__(self, config: Config, data: PreparedData, spec: ModelSpec):
        super().__init__()
        self.config, self.data, self.spec = config, data, spec
        self.train_set = TrainDataset(
            data.stores["train"], data.targets["train"], clip_samples=spec.clip_samples, pad_mode=spec.pad_mode,
            crop=config.data.train_crop, gain_db=config.data.gain_db, seed=config.train.seed,
        )
        hop = max(1, int(spec.clip_samples * config.data.eval_hop_fraction))
        self.val_set = WindowDataset(data.stores["val"], data.targets["val"], clip_samples=spec.clip_samples,
                                     hop_samples=hop, pad_mode=spec.pad_mode)
        n, store, targets = len(data.targets["train"]), data.stores["train"], data.targets["train"]
        windows = dict(clip_samples=spec.clip_samples, hop_samples=hop, pad_mode=spec.pad_mode)
        clean = clean_train_indices(n, config.data.clean_train_clips, seed=config.train.seed)
        self.clean_set = window_subset(store, clean, targets, **windows)
        # the clips that re-estimate BatchNorm statistics (train.precise_bn): another fixed subset, so the clean
        # training score is not measured on the clips that set the statistics (unless the set is that small)
        bn = clean_train_indices(n, config.train.precise_bn, seed=config.train.seed + 1)
        self.bn_set = window_subset(store, bn, None, **windows)

    def train_dataloader(self):
        bs = self.config.data.batch_size
        self.train_set.set_epoch(self.trainer.current_epoch if self.trainer else 0)
        sampler = None
        if self.config.data.sampler == "balanced":
            if self.trainer is not None and self.trainer.world_size > 1:
                raise ConfigError("data.sampler=balanced works in a single process; with several devices use "
                                  "train.class_weights=balanced instead")
            weights = balanced_sample_weights(self.data.targets["train"], len(self.data.labels))
            epoch = self.trainer.current_epoch if self.trainer else 0
            sampler = WeightedRandomSampler(torch.from_numpy(weights), num_samples=len(weights), replacement=True,
                                            generator=torch.Generator().manual_seed(self.config.train.seed + epoch))
        elif self.trainer is not None and self.trainer.world_size > 1:
            sampler = DistributedSampler(self.train_set, num_replicas=self.trainer.world_size,
                                         rank=self.trainer.global_rank, shuffle=True, seed=self.config.train.seed)
            sampler.set_epoch(self.trainer.current_epoch)
        return DataLoader(
            self.train_set, batch_size=bs, shuffle=sampler is None, sampler=sampler,
            drop_last=len(self.train_set) > bs, num_workers=self.config.data.num_workers,
        )

    def val_dataloader(self):
        kw = dict(batch_size=self.config.data.batch_size, collate_fn=collate_windows,
                  num_workers=self.config.data.num_workers)
        loaders = [DataLoader(self.val_set, **kw)]
        if len(self.clean_set):
            loaders.append(DataLoader(self.clean_set, **kw))
        return loaders

    def bn_dataloader(self):
        bs = self.config.data.batch_size
        return DataLoader(self.bn_set, batch_size=bs, shuffle=False, collate_fn=collate_windows,
                          drop_last=len(self.bn_set) > bs, num_workers=self.config.data.num_workers)


def window_subset(store: AudioStore, indices: np.ndarray, targets: np.ndarray | None, *, clip_samples: int,
                  hop_samples: int, pad_mode: str) -> WindowDataset:
    """The clips ``indices`` of ``store`` (with their targets, if given) as evaluation windows."""
    return WindowDataset(store.subset(indices), None if targets is None else targets[indices],
                         clip_samples=clip_samples, hop_samples=hop_samples, pad_mode=pad_mode)


def prior_logits(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """log(p / (1 - p)) of each class's share of training clips (smoothed: (count + 0.5) / (n + 1)), the output
    bias at which a sigmoid model's first predictions are the label prior."""
    p = (class_counts(targets, n_classes) + 0.5) / (len(targets) + 1.0)
    return torch.as_tensor(np.log(p / (1.0 - p)), dtype=torch.float32)
