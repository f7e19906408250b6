"""Score audio with a trained model: files, folders and clips longer than the model input (by windows)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from clipwise.data.dataset import AudioStore, WindowDataset, aggregate_windows, collate_windows
from clipwise.errors import AudioError, RunError
from clipwise.infer.scoring import Scoring
from clipwise.models.classifier import AudioClassifier
from clipwise.run import RunFolder

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


MODEL_FILE = "model.pt"  # weights alone (AudioClassifier.save), as `clipwise ensemble` copies a member


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
    def from_run(cls, run_dir: str | Path, *, checkpoint: str = "best", **kwargs) -> Predictor:
        """Load ``RUN/checkpoints/<checkpoint>.ckpt`` (``best`` or ``last``) or a checkpoint file path.

        Raises:
            RunError: no such run folder or checkpoint.
        """
        path = Path(run_dir)
        if path.is_dir() and RunFolder(path).ensemble_path.is_file():
            from clipwise.ensemble import EnsemblePredictor

            return EnsemblePredictor(path)  # type: ignore[return-value]  # the same interface
        if path.is_dir() and (path / "model.joblib").is_file():
            from clipwise.classical import ClassicalPredictor

            return ClassicalPredictor(path)  # type: ignore[return-value]  # the same interface
        ckpt = path if path.is_file() else path / "checkpoints" / f"{checkpoint}.ckpt"
        if path.is_dir() and not ckpt.is_file() and (path / MODEL_FILE).is_file():
            ckpt = path / MODEL_FILE  # a model copied into an ensemble: the weights alone
        if not ckpt.is_file():
            raise RunError(
                f"no checkpoint at {ckpt}: pass a run folder written by `clipwise train` (it holds "
                "checkpoints/best.ckpt) or a checkpoint file"
            )
        hop = kwargs.pop("hop_fraction", None)
        if hop is None:
            hop = _run_hop_fraction(path if path.is_dir() else None)
        return cls(AudioClassifier.load(ckpt), hop_fraction=hop, **kwargs)

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def multi_label(self) -> bool:
        return self.model.spec.multi_label

    @torch.no_grad()
    def predict_store(self, store: AudioStore) -> np.ndarray:
        """Class probabilities ``(clips, classes)`` for decoded audio."""
        spec = self.model.spec
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
            scores = torch.sigmoid(logits) if spec.multi_label else torch.softmax(logits, dim=-1)
            out.append(aggregate_windows(scores, counts).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:
        """Probabilities for every row of a manifest frame (``path`` plus optional ``start``/``end``)."""
        return self.predict_store(AudioStore.load(df, sample_rate=self.model.sample_rate, progress=True))


def _run_hop_fraction(run_dir: Path | None) -> float:
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return 0.5
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return float(cfg.get("data", {}).get("eval_hop_fraction", 0.5))
