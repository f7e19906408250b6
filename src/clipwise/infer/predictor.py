"""Score audio with a trained model: files, folders and clips longer than the model input (by windows)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from clipwise.data.audio import audio_info, load_audio
from clipwise.data.dataset import AudioStore, WindowDataset, aggregate_windows, collate_windows
from clipwise.errors import AudioError
from clipwise.infer.scoring import Scoring
from clipwise.models.classifier import ACTIVATIONS, AudioClassifier
from clipwise.task import Task, get_task

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus", ".m4a")


def find_audio(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into audio files.

    Raises:
        AudioError: a path does not exist, or a folder holds no audio.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise AudioError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {p}", path=str(p))
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise AudioError(f"file not found: {p}", path=str(p))
    return out


def split_decodable(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files that decode as audio, and ``(file, reason)`` for the others (each file is decoded once)."""
    good, bad = [], []
    for p in paths:
        try:
            load_audio(p, sample_rate=audio_info(p).sample_rate)
            good.append(p)
        except AudioError as err:
            bad.append((p, str(err)))
    return good, bad


class Predictor(Scoring):
    """Wraps a trained :class:`AudioClassifier` for batch scoring.

    A clip is cut into windows of the model's input length (hop = ``hop_fraction`` of it, the last window
    aligned to the end) and the window probabilities are averaged.

    Args:
        model: the classifier (put into eval mode).
        hop_fraction: window hop as a fraction of the clip length.
        batch_size: clips per forward pass.
        device: torch device.
    """

    def __init__(self, model: AudioClassifier, *, hop_fraction: float = 0.5, batch_size: int = 32, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.hop_fraction = hop_fraction
        self.batch_size = batch_size
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> Predictor:
        """Load a clipwise checkpoint (a Lightning ``.ckpt`` or the weights file an ensemble keeps of a member).

        Raises:
            RunError: no such file, or not a clipwise checkpoint.
        """
        return cls(AudioClassifier.load(path), **kwargs)

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def task(self) -> Task:
        return get_task(self.model.spec.task)

    @torch.no_grad()
    def predict_store(self, store: AudioStore) -> np.ndarray:
        """Class probabilities ``(clips, classes)`` for decoded audio."""
        spec = self.model.spec
        activate = ACTIVATIONS[self.task.activation]
        ds = WindowDataset(
            store,
            None,
            clip_samples=spec.clip_samples,
            hop_samples=max(1, int(spec.clip_samples * self.hop_fraction)),
            pad_mode=spec.pad_mode,
        )
        loader = DataLoader(ds, batch_size=self.batch_size, shuffle=False, collate_fn=collate_windows)
        out = []
        for windows, _, counts, _ in loader:
            logits = self.model(windows.to(self.device)).float()
            scores = activate(logits)
            out.append(aggregate_windows(scores, counts).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:
        """Probabilities for every row of a manifest frame (``path`` plus optional ``start``/``end``)."""
        return self.predict_store(AudioStore.load(df, sample_rate=self.model.sample_rate, progress=True))

    def score_waves(self, waves) -> np.ndarray:
        """Probabilities for decoded mono signals at the model's sample rate."""
        return self.predict_store(AudioStore([""] * len(waves), list(waves), self.sample_rate))
