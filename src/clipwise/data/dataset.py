"""Torch datasets over a manifest: decoded audio cached once, random crops for training, windows for scoring."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from clipwise.augment import random_gain
from clipwise.data.audio import fix_length, frame_windows, is_silent, load_audio
from clipwise.data.manifest import segment_seconds
from clipwise.errors import AudioError


@dataclass
class AudioStore:
    """Decoded, resampled mono audio for every row of a manifest, kept in memory.

    Audio is decoded once per process: re-decoding FLAC every epoch would cost more than the model on CPU.
    """

    paths: list[str]
    waves: list[np.ndarray]
    sample_rate: int
    silent: list[bool] = field(default_factory=list)

    @classmethod
    def load(cls, df: pd.DataFrame, *, sample_rate: int, progress: bool = False) -> AudioStore:
        """Decode every row of ``df`` (its ``start``/``end`` columns select segments).

        Raises:
            AudioError: a row's audio cannot be decoded (the first such file is named).
        """
        store, failed = cls.load_checked(df, sample_rate=sample_rate, progress=progress, stop_at_first=True)
        if len(failed):
            raise AudioError(failed["reason"].iloc[0], path=str(failed["path"].iloc[0]))
        return store

    @classmethod
    def load_checked(cls, df: pd.DataFrame, *, sample_rate: int, progress: bool = False,
                     stop_at_first: bool = False) -> tuple[AudioStore, pd.DataFrame]:
        """Decode every row of ``df`` that can be decoded.

        Returns:
            The store of the decodable rows (in ``df``'s order) and the other rows with a ``reason`` column.
        """
        rows = df.to_dict("records")
        if progress and len(rows) > 200:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc="decoding audio", unit="clip", leave=False)
        waves, kept, reasons = [], [], {}
        for i, row in enumerate(rows):
            start, end = segment_seconds(row)
            try:
                waves.append(load_audio(row["path"], sample_rate=sample_rate, start_seconds=start, end_seconds=end))
                kept.append(i)
            except AudioError as err:
                reasons[i] = str(err)
                if stop_at_first:
                    break
        paths = [str(p) for p in df["path"]]
        failed = df.iloc[sorted(reasons)].assign(reason=[reasons[i] for i in sorted(reasons)])
        return cls([paths[i] for i in kept], waves, sample_rate, [is_silent(w) for w in waves]), failed

    def subset(self, indices: Iterable[int]) -> AudioStore:
        """The clips at ``indices``, in that order (the audio is shared, not copied)."""
        idx = list(indices)
        return AudioStore([self.paths[i] for i in idx], [self.waves[i] for i in idx], self.sample_rate,
                          [self.silent[i] for i in idx] if self.silent else [])

    def durations(self) -> np.ndarray:
        return np.array([len(w) / self.sample_rate for w in self.waves])


class TrainDataset(Dataset):
    """Random fixed-length crops (or pads) with random gain; yields ``(wave, target)``.

    Args:
        store: decoded audio.
        targets: class indices, or a multi-hot matrix (:meth:`clipwise.task.Task.encode`).
        clip_samples: model input length.
        pad_mode: how clips shorter than the input are filled.
        crop: where long clips are cut (``random`` for training).
        gain_db: random gain range.
        seed: base seed; each epoch and example draw from their own stream.
    """

    def __init__(
        self,
        store: AudioStore,
        targets: np.ndarray,
        *,
        clip_samples: int,
        pad_mode: str = "zeros",
        crop: str = "random",
        gain_db: float = 0.0,
        seed: int = 0,
    ):
        self.store = store
        self.targets = targets
        self.clip_samples = clip_samples
        self.pad_mode = pad_mode
        self.crop = crop
        self.gain_db = gain_db
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.store.waves)

    def __getitem__(self, i: int):
        # a stream per (seed, epoch, item): reproducible whatever the worker count or order
        rng = np.random.default_rng((self.seed, self.epoch, i))
        x = fix_length(self.store.waves[i], self.clip_samples, pad_mode=self.pad_mode, crop=self.crop, rng=rng)
        x = random_gain(x, max_gain_db=self.gain_db, rng=rng)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.as_tensor(self.targets[i])


class WindowDataset(Dataset):
    """Every clip as the windows that cover it; yields ``(windows (n, samples), target, index)``.

    Used for validation, test and prediction, so a clip longer than the model input is scored whole.
    """

    def __init__(
        self,
        store: AudioStore,
        targets: np.ndarray | None,
        *,
        clip_samples: int,
        hop_samples: int,
        pad_mode: str = "zeros",
    ):
        self.store = store
        self.targets = targets
        self.clip_samples = clip_samples
        self.hop_samples = hop_samples
        self.pad_mode = pad_mode

    def __len__(self) -> int:
        return len(self.store.waves)

    def __getitem__(self, i: int):
        w = frame_windows(
            self.store.waves[i], window_samples=self.clip_samples, hop_samples=self.hop_samples, pad_mode=self.pad_mode
        )
        target = torch.as_tensor(self.targets[i]) if self.targets is not None else torch.tensor(-1)
        return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)), target, i


def collate_windows(batch):
    """Stack the windows of several clips; ``counts`` says how many belong to each clip."""
    windows, targets, index = zip(*batch)
    counts = torch.tensor([w.shape[0] for w in windows])
    return torch.cat(windows), torch.stack(targets), counts, torch.tensor(index)


def aggregate_windows(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of per-window scores for each clip: ``(sum(counts), C) -> (len(counts), C)``."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=scores.device), counts.to(scores.device))
    out = torch.zeros(len(counts), scores.shape[1], dtype=scores.dtype, device=scores.device)
    out.index_add_(0, owner, scores)
    return out / counts.to(scores.device, scores.dtype)[:, None]


def class_counts(targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Training clips per class: from class indices, or column sums of a multi-hot matrix."""
    targets = np.asarray(targets)
    if targets.ndim == 2:
        return targets.sum(axis=0).astype(np.float64)
    return np.bincount(targets, minlength=n_classes).astype(np.float64)


def balanced_class_weights(targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Loss weights ``n / (classes * count)`` (scikit-learn's "balanced"); for multi-hot targets the positive
    weight ``negatives / positives`` of each class. A class without training clips gets weight 0."""
    counts = class_counts(targets, n_classes)
    n = len(targets)
    if np.asarray(targets).ndim == 2:
        return np.where(counts > 0, (n - counts) / np.maximum(counts, 1), 0.0)
    return np.where(counts > 0, n / (n_classes * np.maximum(counts, 1)), 0.0)


def balanced_sample_weights(targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-clip sampling weights that make every class about equally frequent: ``1 / count(class)`` (a
    multi-label clip: the mean over its labels)."""
    counts = class_counts(targets, n_classes)
    inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    targets = np.asarray(targets)
    if targets.ndim == 2:
        k = targets.sum(axis=1)
        return np.where(k > 0, (targets * inv[None, :]).sum(axis=1) / np.maximum(k, 1), inv[inv > 0].mean())
    return inv[targets]
