"""Score audio with an export bundle, without torch: numpy, onnxruntime, soundfile and soxr.

::

    from clipwise.runtime import load

    model = load("model.bundle")
    model.predict("dog.wav")                      # [(label, probability), ...] best first
    model.predict_array(samples, sample_rate)     # the same for samples in memory
    model.predict_proba(["a.wav", "b.flac"])      # (files, classes)
    for w in model.stream("ten_hours.flac", window=5, hop=1):   # decoded in blocks: memory stays bounded
        w.start, w.end, w.label, w.probabilities

It cuts, pads and averages exactly as ``clipwise predict`` does on the run the bundle came from: windows of the
model's clip length every ``hop`` (the last one aligned to the end), a clip shorter than one window padded the
run's way, and the mean of the windows' probabilities; so both give the same top-k on the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipwise.bundle import MODEL_FILE, read_bundle
from clipwise.data.audio import frame_windows, load_audio
from clipwise.data.manifest import segment_seconds
from clipwise.errors import ConfigError, RunError
from clipwise.infer.longform import Window, score_recording
from clipwise.infer.scoring import MixedScoring, Scoring
from clipwise.task import Task, get_task

#: windows scored per onnxruntime call
BATCH_WINDOWS = 64
#: files decoded before their windows are scored together
BATCH_FILES = 64


class BundleScoring(Scoring):
    """What a loaded bundle offers (see :func:`load`), a single graph's or an ensemble's: a
    :class:`~clipwise.infer.scoring.Scoring` like clipwise's other scorers (``labels``, ``sample_rate``,
    ``predict_frame``, ``predict_signals``, ``predict_files``, ``top_k``), plus ``predict``, ``predict_array``,
    ``predict_proba`` and ``info``."""

    root: Path
    meta: dict[str, Any]
    task: Task

    def predict_array(self, samples: np.ndarray, sample_rate: int, *, top_k: int = 3) -> list[tuple[str, float]]:
        """The ``top_k`` labels of a signal (mono, or (samples, channels)) at ``sample_rate``, best first.

        Raises:
            ConfigError: an empty signal, or one holding NaN / infinite values.
        """
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        return self.top_k(self.predict_signals([x], sample_rate=int(sample_rate)), k=top_k)[0]

    def predict_proba(self, paths: str | os.PathLike | Sequence[str | os.PathLike]) -> np.ndarray:
        """Probabilities ``(files, classes)``."""
        return self.predict_files([paths] if isinstance(paths, (str, os.PathLike)) else paths)

    def predict(self, path: str | os.PathLike, *, top_k: int = 3) -> list[tuple[str, float]]:
        """The ``top_k`` labels of one file, best first."""
        return self.top_k(self.predict_files([path]), k=top_k)[0]

    def stream(self, path: str | os.PathLike, *, window: float | None = None,
               hop: float | None = None) -> Iterator[Window]:
        """Score a long recording window by window, decoding it in blocks (see
        :func:`clipwise.infer.longform.score_recording`): windows of ``window`` seconds (default: the model's clip
        length) every ``hop`` seconds (default: the window), the last one aligned to the end.

        Returns:
            An iterator of :class:`~clipwise.infer.longform.Window` (``start``, ``end``, ``probabilities``,
            ``label``), in time order.

        Raises:
            ConfigError: no ``window`` and the bundle records no clip length, ``window`` not > 0, or ``hop`` not
                in (0, window].
            AudioError: the file is missing, undecodable, empty or holds NaN / infinite samples.
        """
        if window is None:
            if "clip_seconds" not in self.meta:
                raise ConfigError(f"{self.root} records no single clip length; pass window=SECONDS")
            window = float(self.meta["clip_seconds"])
        return score_recording(self, path, window_seconds=window, hop_seconds=window if hop is None else hop,
                               names=("window", "hop"))

    @property
    def info(self) -> dict[str, Any]:
        """bundle.json: sample rate, clip length, task, source run, its test metrics and the export's parity."""
        return dict(self.meta)


class BundleModel(BundleScoring):
    """A bundle of one graph.

    Args:
        root: the bundle folder.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        int8: score with the bundle's int8 graph (``clipwise export --int8``).
        model_file: the graph file to score with (export's own checks use it before bundle.json lists the file).

    Raises:
        RunError: ``int8`` and the bundle has no int8 graph.
    """

    def __init__(self, root: str | os.PathLike, *, threads: int | None = None, int8: bool = False,
                 model_file: str | None = None, meta: dict[str, Any] | None = None):
        import onnxruntime as ort

        self.root = Path(root)
        self.meta = read_bundle(self.root) if meta is None else meta
        self.labels: list[str] = json.loads((self.root / "labels.json").read_text(encoding="utf-8"))
        self.task: Task = get_task(self.meta["task"])
        self.sample_rate = int(self.meta["sample_rate"])
        self.clip_samples = int(self.meta["clip_samples"])
        self.hop_samples = max(1, int(self.clip_samples * float(self.meta["hop_fraction"])))
        self.pad_mode = str(self.meta["pad_mode"])
        if int8 and model_file is None:
            if "int8" not in self.meta:
                raise RunError(f"{self.root} has no int8 graph; export it with `clipwise export RUN --out BUNDLE "
                               "--int8`, or load it without int8")
            model_file = self.meta["int8"]["file"]
        self.model_file = model_file or MODEL_FILE
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.root / self.model_file), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __repr__(self) -> str:
        return f"BundleModel({str(self.root)!r}, {len(self.labels)} labels, {self.sample_rate} Hz)"

    # -- scoring ---------------------------------------------------------------------------------------------
    def _windows_proba(self, windows: np.ndarray) -> np.ndarray:
        out = [self.session.run(None, {self.input_name: np.ascontiguousarray(windows[i:i + BATCH_WINDOWS])})[0]
               for i in range(0, len(windows), BATCH_WINDOWS)]
        return np.concatenate(out).astype(np.float64)

    def score_waves(self, waves) -> np.ndarray:
        """Probabilities ``(signals, classes)`` of mono signals at the bundle's sample rate, every signal's windows
        scored in shared batches."""
        framed = [frame_windows(w, window_samples=self.clip_samples, hop_samples=self.hop_samples,
                                pad_mode=self.pad_mode) for w in waves]
        probs = self._windows_proba(np.concatenate(framed))
        bounds = np.cumsum([0] + [len(f) for f in framed])
        return np.stack([probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:
        """Probabilities ``(rows, classes)`` for a manifest frame (``path`` plus optional ``start``/``end``)."""
        out = []
        rows = df.to_dict("records")
        for i in range(0, len(rows), BATCH_FILES):  # decoded a batch at a time: memory stays bounded
            waves = [load_audio(row["path"], sample_rate=self.sample_rate, start_seconds=start, end_seconds=end)
                     for row in rows[i:i + BATCH_FILES] for start, end in [segment_seconds(row)]]
            out.append(self.score_waves(waves))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))


class EnsembleBundleModel(MixedScoring, BundleScoring):
    """A bundle of an ensemble: its members' bundles (``members/<i>``), mixed with the ensemble's weights and
    temperatures exactly as the ensemble run mixes them.

    Args:
        root: the bundle folder.
        threads: onnxruntime intra-op threads of each member.
        int8: score every member with its int8 graph.
    """

    def __init__(self, root: str | os.PathLike, *, threads: int | None = None, int8: bool = False,
                 meta: dict[str, Any] | None = None):
        self.root = Path(root)
        self.meta = read_bundle(self.root) if meta is None else meta
        self.labels = json.loads((self.root / "labels.json").read_text(encoding="utf-8"))
        self.task = get_task(self.meta["task"])
        self.members = [load(self.root / m["folder"], threads=threads, int8=int8) for m in self.meta["members"]]
        self.weights = np.asarray([m["weight"] for m in self.meta["members"]], dtype=np.float64)
        self.temperatures = [float(m["temperature"]) for m in self.meta["members"]]
        self.multi_label = self.task.multi_label

    def __repr__(self) -> str:
        return f"EnsembleBundleModel({str(self.root)!r}, {len(self.members)} members, {len(self.labels)} labels)"


def load(root: str | os.PathLike, *, threads: int | None = None, int8: bool = False) -> BundleScoring:
    """Load an export bundle (``clipwise export RUN --out BUNDLE``), checking every file's checksum first.

    Args:
        root: the bundle folder.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        int8: score with the int8 graph (a bundle exported with ``--int8``).

    Raises:
        RunError: not a bundle, or ``int8`` and it has no int8 graph.
        UnsafeFileError: a file of the bundle changed since export.
    """
    meta = read_bundle(root)
    if meta.get("format") == "ensemble":
        return EnsembleBundleModel(root, threads=threads, int8=int8, meta=meta)
    return BundleModel(root, threads=threads, int8=int8, meta=meta)
