"""What every scorer of audio shares (the deep-model, classical-baseline and ensemble predictors, and the
torch-free runtime's bundles), and how an ensemble mixes its members; numpy and pandas only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clipwise.data.audio import resample
from clipwise.errors import ConfigError
from clipwise.evaluate.metrics import LOG_LOSS_EPS


def temper(probs: np.ndarray, t: float, *, multi_label: bool = False) -> np.ndarray:
    """Probabilities rescaled by temperature ``t`` (< 1 sharpens, > 1 softens) without their logits:
    ``softmax(log p / t)`` over each row, or ``sigmoid(logit p / t)`` per cell for multi-label scores."""
    p = np.clip(np.asarray(probs, dtype=np.float64), LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-np.log(p / (1.0 - p)) / t))
    z = np.log(p) / t
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def mix(scores: Sequence[np.ndarray], weights: np.ndarray, temperatures: Sequence[float], *,
        multi_label: bool = False) -> np.ndarray:
    """An ensemble's probabilities: each member's ``scores`` tempered by its temperature, weighted and summed."""
    tempered = [s if t == 1.0 else temper(s, t, multi_label=multi_label) for s, t in zip(scores, temperatures)]
    return np.tensordot(np.asarray(weights, dtype=np.float64), np.stack(tempered), axes=1)


def check_wave(x: np.ndarray) -> np.ndarray:
    """``x`` as a 1-D float32 array; raises ConfigError when it is empty, not mono, or not finite."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or not len(x):
        raise ConfigError(f"a signal must be a non-empty 1-D array (mix it down to mono), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError("the signal holds NaN or infinite values: not usable audio")
    return x


class Scoring:
    """Subclasses set ``labels`` and ``sample_rate`` (the rate they score at) and implement
    ``predict_frame(df) -> (clips, classes)`` for manifest rows and ``score_waves(waves) -> (clips, classes)`` for
    decoded mono signals at ``sample_rate``; both give the same numbers for the same audio."""

    labels: list[str]
    sample_rate: int

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def score_waves(self, waves: Sequence[np.ndarray]) -> np.ndarray:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def predict_signals(self, signals: Sequence[np.ndarray], *, sample_rate: int) -> np.ndarray:
        """Probabilities ``(signals, classes)`` of mono float signals at ``sample_rate`` (resampled to the scorer's
        rate as :func:`clipwise.data.audio.load_audio` resamples): what long recordings, batch jobs and the
        service score decoded audio with.

        Raises:
            ConfigError: a signal is empty, not 1-D, or holds NaN / infinite values.
        """
        waves = [resample(check_wave(x), sample_rate, self.sample_rate) for x in signals]
        if not waves:
            return np.zeros((0, len(self.labels)))
        return np.asarray(self.score_waves(waves), dtype=np.float64)

    def predict_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Probabilities for audio files."""
        return self.predict_frame(pd.DataFrame({"path": [str(p) for p in paths]}))

    def top_k(self, probs: np.ndarray, *, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable labels of each row, best first (tied labels in class order).

        Raises:
            ConfigError: ``k`` below 1.
        """
        if k < 1:
            raise ConfigError(f"top_k must be at least 1, got {k}")
        k = min(k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(probs[i, j])) for j in row] for i, row in enumerate(order)]


class MixedScoring(Scoring):
    """An ensemble's scorer: its ``members`` (scorers), mixed with ``weights`` and ``temperatures`` by :func:`mix`.
    Subclasses set those three and ``multi_label`` (how a temperature rescales the members' scores)."""

    members: list[Scoring]
    weights: np.ndarray
    temperatures: list[float]
    multi_label: bool

    @property
    def sample_rate(self) -> int:
        """The highest of the members' rates: decoded audio is resampled from it for each member."""
        return max(m.sample_rate for m in self.members)

    def _mix(self, scores: list[np.ndarray]) -> np.ndarray:
        return mix(scores, self.weights, self.temperatures, multi_label=self.multi_label)

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:
        return self._mix([m.predict_frame(df) for m in self.members])  # each member decodes at its own rate

    def predict_signals(self, signals: Sequence[np.ndarray], *, sample_rate: int) -> np.ndarray:
        # each member resamples from the given rate itself, as it decodes files at its own rate
        return self._mix([m.predict_signals(signals, sample_rate=sample_rate) for m in self.members])
