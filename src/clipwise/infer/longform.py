"""Long recordings: decoded in blocks, scored window by window, the windows written to a timeline as they come and
turned into events (:mod:`clipwise.infer.events`); memory stays bounded however long the file is. numpy,
soundfile and soxr only: the torch-free runtime streams with it.

::

    for window in score_recording(scorer, "ten_hours.flac", window_seconds=5, hop_seconds=1):
        window.start, window.end, window.label, window.probabilities
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from clipwise._io import atomic_path
from clipwise.data.audio import audio_info, load_audio
from clipwise.errors import AudioError, ConfigError
from clipwise.infer.events import Event, EventTracker
from clipwise.infer.scoring import Scoring

#: seconds of audio decoded (and resampled) at a time
BLOCK_SECONDS = 30.0
#: windows per ``predict_signals`` call, and the most samples a batch of windows may hold (long windows: fewer)
BATCH_WINDOWS = 64
BATCH_SAMPLES = 1 << 23
#: recordings at least this long get a progress bar
PROGRESS_SECONDS = 60.0


@dataclass(frozen=True, eq=False)  # probabilities are an array: no field-wise ==
class Window:
    """One scored window: ``start`` / ``end`` in seconds, the class ``probabilities`` and the most probable
    ``label``."""

    start: float
    end: float
    probabilities: np.ndarray = field(repr=False)
    label: str


def check_windowing(window_seconds: float, hop_seconds: float, *,
                    names: tuple[str, str] = ("--window", "--hop")) -> tuple[float, float]:
    """``(window, hop)`` in seconds, checked: the window > 0, the hop > 0 and at most the window (a longer hop would
    skip audio).

    Raises:
        ConfigError: a bad value; the message names the flag (``names``).
    """
    window_seconds, hop_seconds = float(window_seconds), float(hop_seconds)
    if not math.isfinite(window_seconds) or window_seconds <= 0:
        raise ConfigError(f"{names[0]} must be a number of seconds > 0, got {window_seconds:g}")
    if not math.isfinite(hop_seconds) or not 0 < hop_seconds <= window_seconds:
        raise ConfigError(f"{names[1]} must be > 0 and at most {names[0]} ({window_seconds:g} s), got "
                          f"{hop_seconds:g}; a longer hop would skip audio")
    return window_seconds, hop_seconds


def stream_audio(path: str | os.PathLike, *, sample_rate: int,
                 block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Decode a file block by block as mono float32 at ``sample_rate``: channels averaged and the rate converted
    with soxr (HQ, streamed) as :func:`~clipwise.data.audio.load_audio` does, so the blocks joined are its samples.

    A format libsndfile cannot open (an mp3 read through audioread) is decoded whole by ``load_audio`` instead, and
    then handed out in blocks: only such files cost memory in proportion to their length.

    Raises:
        ConfigError: ``block_seconds`` not > 0.
        AudioError: the file is missing, undecodable or empty, or holds NaN / infinite samples.
    """
    if not block_seconds > 0:
        raise ConfigError(f"block_seconds must be > 0, got {block_seconds}")
    info = audio_info(path)  # a missing, undecodable or empty file fails here, before the first block
    try:
        f = sf.SoundFile(str(path))
    except (sf.SoundFileError, RuntimeError):
        return _blocks_of(load_audio(path, sample_rate=sample_rate), int(block_seconds * sample_rate))
    return _read_blocks(f, Path(path), info.sample_rate, sample_rate, block_seconds)


def _blocks_of(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), max(1, size)):
        yield x[i:i + size]


def _read_blocks(f: sf.SoundFile, path: Path, rate: int, sample_rate: int,
                 block_seconds: float) -> Iterator[np.ndarray]:
    size = max(1, int(block_seconds * rate))
    resampler = None if rate == sample_rate else soxr.ResampleStream(rate, sample_rate, 1, dtype="float32",
                                                                     quality="HQ")
    read = 0
    with f:
        while True:
            try:
                x = f.read(size, dtype="float32", always_2d=True).mean(axis=1, dtype=np.float32)  # as load_audio mixes
            except (sf.SoundFileError, RuntimeError) as err:  # a file damaged past its header
                raise AudioError(f"cannot decode {path} past {read / rate:.3f} s: {err}; re-export it",
                                 path=str(path)) from err
            bad = np.flatnonzero(~np.isfinite(x))
            if len(bad):
                raise AudioError(f"not usable audio: {path} holds NaN or infinite samples from "
                                 f"{(read + bad[0]) / rate:.3f} s; re-export it", path=str(path))
            read += len(x)
            last = len(x) < size  # a short (or empty) read is the end: the resampler's tail is flushed with it
            if resampler is not None:
                x = resampler.resample_chunk(x, last=last)
            if len(x):
                yield x
            if last:
                return


def cut_windows(blocks: Iterable[np.ndarray], *, window_samples: int,
                hop_samples: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start sample, samples)`` of windows over a signal given in blocks, at the starts of
    :func:`~clipwise.data.audio.window_starts`: every ``hop_samples``, plus one aligned to the end when the last
    stops short of it; a signal shorter than one window is one (short) window. Holds one block and one window."""
    buf, offset, total = np.zeros(0, dtype=np.float32), 0, 0  # buf[0] is sample `offset` of the signal
    start, last = 0, None
    for block in blocks:
        buf = np.concatenate([buf, block])
        total += len(block)
        while start + window_samples <= total:
            yield start, buf[start - offset:start - offset + window_samples].copy()
            last, start = start, start + hop_samples
        keep = min(start, total - window_samples)  # the end-aligned last window may reach back before `start`
        if keep > offset:
            buf, offset = buf[keep - offset:], keep
    if total and last is None:
        yield 0, buf.copy()
    elif last is not None and last != total - window_samples:
        yield total - window_samples, buf[total - window_samples - offset:].copy()


def score_recording(scorer: Scoring, path: str | os.PathLike, *, window_seconds: float, hop_seconds: float,
                    block_seconds: float = BLOCK_SECONDS, progress: bool = False,
                    names: tuple[str, str] = ("--window", "--hop")) -> Iterator[Window]:
    """Score a recording window by window: decoded in blocks at the scorer's rate, cut into windows of
    ``window_seconds`` every ``hop_seconds`` (the last aligned to the end), each window scored as a clip (the
    scorer frames and pads it), in batches.

    Args:
        scorer: any :class:`~clipwise.infer.scoring.Scoring`.
        path: the recording.
        window_seconds: window length.
        hop_seconds: distance between window starts (> 0, at most the window).
        block_seconds: audio decoded at a time.
        progress: a progress bar (on stderr) for recordings longer than a minute.
        names: what error messages call the window and the hop.

    Returns:
        An iterator of :class:`Window`, in time order.

    Raises:
        ConfigError: a bad window or hop.
        AudioError: the file is missing, undecodable, empty or not finite.
    """
    window_seconds, hop_seconds = check_windowing(window_seconds, hop_seconds, names=names)
    rate = int(scorer.sample_rate)
    size = max(1, round(window_seconds * rate))
    hop = max(1, round(hop_seconds * rate))
    blocks = stream_audio(path, sample_rate=rate, block_seconds=block_seconds)  # file errors raise here, now
    seconds = audio_info(path).duration_seconds
    if progress and seconds >= PROGRESS_SECONDS:
        blocks = _with_progress(blocks, rate, seconds, Path(path).name)
    return _scored(scorer, cut_windows(blocks, window_samples=size, hop_samples=hop), rate,
                   max(1, min(BATCH_WINDOWS, BATCH_SAMPLES // size)))


def _with_progress(blocks: Iterator[np.ndarray], rate: int, seconds: float, name: str) -> Iterator[np.ndarray]:
    from tqdm import tqdm  # only the CLI asks for a bar; the runtime needs no tqdm

    with tqdm(total=round(seconds), unit="s", desc=name, leave=False, dynamic_ncols=True) as bar:
        done = 0.0
        for block in blocks:
            yield block
            done += len(block) / rate
            bar.update(min(round(done), bar.total) - bar.n)


def _scored(scorer: Scoring, windows: Iterator[tuple[int, np.ndarray]], rate: int, batch: int) -> Iterator[Window]:
    pending: list[tuple[int, np.ndarray]] = []
    for item in windows:
        pending.append(item)
        if len(pending) == batch:
            yield from _score_batch(scorer, pending, rate)
            pending = []
    yield from _score_batch(scorer, pending, rate)


def _score_batch(scorer: Scoring, batch: list[tuple[int, np.ndarray]], rate: int) -> Iterator[Window]:
    if not batch:
        return
    probs = scorer.predict_signals([x for _, x in batch], sample_rate=rate)
    for (start, x), p in zip(batch, probs):
        yield Window(start / rate, (start + len(x)) / rate, p, scorer.labels[int(np.argmax(p))])


def refuse_existing(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Check that no output file exists yet and that no two share a path (``{flag: path}``; None: not asked for).

    Raises:
        ConfigError: naming the flag; nothing is replaced, ever.
    """
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            raise ConfigError(f"{seen[resolved]} and {flag} name the same file {path}; give each its own path")
        seen[resolved] = flag
        if Path(path).exists():
            raise ConfigError(f"{flag} {path} already exists; nothing was written. Choose another path (predict "
                              "never replaces a file)")


class TimelineWriter:
    """A timeline CSV (``[file,] start, end``, then one probability column per label), one row per window, written
    as the windows come and flushed every batch; it gets its final name only when closed without error, so an
    interrupted job leaves no half file under that name. Use it as a context manager.

    Args:
        path: the CSV to write (must not exist: see :func:`refuse_existing`).
        labels: the class names, the columns after ``end``.
        with_file: add a first ``file`` column (a timeline of several recordings).
    """

    def __init__(self, path: str | os.PathLike, labels: Sequence[str], *, with_file: bool = False):
        self.path, self.labels, self.with_file = Path(path), list(labels), with_file
        self._stack = ExitStack()
        self._rows = 0

    def __enter__(self) -> TimelineWriter:
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._file = self._stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow((["file"] if self.with_file else []) + ["start", "end", *self.labels])
        return self

    def write(self, window: Window, *, file: str | None = None) -> None:
        """Append the row of ``window`` (``file``: its recording, with ``with_file``)."""
        self._csv.writerow(([file] if self.with_file else []) + [f"{window.start:.6f}", f"{window.end:.6f}"]
                           + [f"{p:.6f}" for p in window.probabilities])
        self._rows += 1
        if self._rows % BATCH_WINDOWS == 0:
            self._file.flush()

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)


@dataclass(frozen=True)
class Scanned:
    """What :func:`scan_recording` found in one recording."""

    path: Path
    duration_seconds: float
    windows: int
    events: list[Event]
    seconds: float

    @property
    def real_time_factor(self) -> float:
        """Seconds of audio scored per second taken."""
        return self.duration_seconds / self.seconds if self.seconds > 0 else float("inf")


def scan_recording(scorer: Scoring, path: str | os.PathLike, *, window_seconds: float, hop_seconds: float,
                   tracker: EventTracker, timeline: TimelineWriter | None = None, progress: bool = False,
                   file: str | None = None) -> Scanned:
    """Score a recording (:func:`score_recording`), feed each window to ``tracker`` and to ``timeline``.

    Args:
        file: the name the timeline's ``file`` column gives the recording.

    Returns:
        Its duration, window count, events (by start) and the seconds it took.

    Raises:
        ConfigError, AudioError: as :func:`score_recording`.
    """
    t0 = time.perf_counter()
    events: list[Event] = []
    n, end = 0, 0.0
    for window in score_recording(scorer, path, window_seconds=window_seconds, hop_seconds=hop_seconds,
                                  progress=progress):
        if timeline is not None:
            timeline.write(window, file=file)
        events += tracker.feed(window)
        n, end = n + 1, window.end  # the last window ends where the recording does
    events += tracker.close()
    return Scanned(Path(path), end, n, sorted(events), time.perf_counter() - t0)
