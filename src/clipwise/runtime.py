"""Score audio with an export bundle, without torch: numpy, onnxruntime, soundfile and soxr.

::

    from clipwise.runtime import load

    model = load("model.bundle")
    model.predict("dog.wav")                      # [(label, probability), ...] best first
    model.predict_array(samples, sample_rate)     # the same for samples in memory
    model.predict_proba(["a.wav", "b.flac"])      # (files, classes)

It cuts, pads and averages exactly as ``clipwise predict`` does on the run the bundle came from: windows of the
model's clip length every ``hop`` (the last one aligned to the end), a clip shorter than one window padded the
run's way, and the mean of the windows' probabilities; so both give the same top-k on the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipwise.bundle import MODEL_FILE, read_bundle
from clipwise.data.audio import frame_windows, load_audio
from clipwise.data.manifest import segment_seconds
from clipwise.errors import ConfigError
from clipwise.infer.scoring import Scoring
from clipwise.task import Task, get_task

#: windows scored per onnxruntime call
BATCH_WINDOWS = 64


class BundleModel(Scoring):
    """A loaded bundle (see :func:`load`): a :class:`~clipwise.infer.scoring.Scoring` like clipwise's other scorers
    (``labels``, ``predict_frame``, ``predict_files``, ``top_k``), plus ``predict`` and ``predict_array``.

    Args:
        root: the bundle folder.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
    """

    def __init__(self, root: str | os.PathLike, *, threads: int | None = None):
        import onnxruntime as ort

        self.root = Path(root)
        self.meta = read_bundle(self.root)
        self.labels: list[str] = json.loads((self.root / "labels.json").read_text(encoding="utf-8"))
        self.task: Task = get_task(self.meta["task"])
        self.sample_rate = int(self.meta["sample_rate"])
        self.clip_samples = int(self.meta["clip_samples"])
        self.hop_samples = max(1, int(self.clip_samples * float(self.meta["hop_fraction"])))
        self.pad_mode = str(self.meta["pad_mode"])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.root / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __repr__(self) -> str:
        return f"BundleModel({str(self.root)!r}, {len(self.labels)} labels, {self.sample_rate} Hz)"

    # -- scoring ---------------------------------------------------------------------------------------------
    def _windows_proba(self, windows: np.ndarray) -> np.ndarray:
        out = [self.session.run(None, {self.input_name: np.ascontiguousarray(windows[i:i + BATCH_WINDOWS])})[0]
               for i in range(0, len(windows), BATCH_WINDOWS)]
        return np.concatenate(out).astype(np.float64)

    def proba_of_samples(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(classes,)`` of one mono signal at the bundle's sample rate."""
        windows = frame_windows(np.asarray(x, dtype=np.float32), window_samples=self.clip_samples,
                                hop_samples=self.hop_samples, pad_mode=self.pad_mode)
        return self._windows_proba(windows).mean(axis=0)

    def predict_array(self, samples: np.ndarray, sample_rate: int, *, top_k: int = 3) -> list[tuple[str, float]]:
        """The ``top_k`` labels of a signal (mono, or (samples, channels)) at ``sample_rate``, best first."""
        import soxr

        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        if x.ndim != 1 or not len(x):
            raise ConfigError(f"samples must be a non-empty 1-D (or samples x channels) array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ConfigError("samples hold NaN or infinite values: not usable audio")
        if int(sample_rate) != self.sample_rate:
            x = soxr.resample(x, int(sample_rate), self.sample_rate, quality="HQ").astype(np.float32)
        return self.top_k(self.proba_of_samples(x)[None, :], k=top_k)[0]

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:
        """Probabilities ``(rows, classes)`` for a manifest frame (``path`` plus optional ``start``/``end``)."""
        rows = []
        for row in df.to_dict("records"):
            start, end = segment_seconds(row)
            x = load_audio(row["path"], sample_rate=self.sample_rate, start_seconds=start, end_seconds=end)
            rows.append(self.proba_of_samples(x))
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)))

    def predict_proba(self, paths: str | os.PathLike | Sequence[str | os.PathLike]) -> np.ndarray:
        return self.predict_files([paths] if isinstance(paths, (str, os.PathLike)) else paths)

    def predict(self, path: str | os.PathLike, *, top_k: int = 3) -> list[tuple[str, float]]:
        """The ``top_k`` labels of one file, best first."""
        return self.top_k(self.predict_files([path]), k=top_k)[0]

    @property
    def info(self) -> dict[str, Any]:
        """bundle.json: sample rate, clip length, task, source run, its test metrics and the export's parity."""
        return dict(self.meta)


def load(root: str | os.PathLike, *, threads: int | None = None) -> BundleModel:
    """Load an export bundle (``clipwise export RUN --out BUNDLE``), checking every file's checksum first.

    Raises:
        RunError: not a bundle.
        UnsafeFileError: a file of the bundle changed since export.
    """
    return BundleModel(root, threads=threads)
