"""What every scorer of audio shares (the deep-model, classical-baseline and ensemble predictors, and the
torch-free runtime's bundle); numpy and pandas only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clipwise.errors import ConfigError


class Scoring:
    """Subclasses set ``labels`` and implement ``predict_frame(df) -> (clips, classes)`` probabilities."""

    labels: list[str]

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

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
