"""Events of a long recording: runs of windows whose score for a class reaches its threshold, merged across short
gaps, too-short ones dropped; and the files they are written to (CSV, an Audacity label track, a Raven selection
table). numpy only: the torch-free runtime uses it too.

::

    tracker = EventTracker(labels, thresholds, gap_seconds=1.0, min_duration_seconds=2.0)
    for window in windows:               # anything with .start, .end (seconds) and .probabilities
        finished = tracker.feed(window)  # events that can no longer grow
    finished += tracker.close()          # and those still open at the end of the recording
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipwise._io import atomic_path
from clipwise.config import EVENT_FORMATS
from clipwise.errors import ConfigError

#: Window times are sample counts divided by the rate: comparisons of seconds allow this much rounding.
TIME_SLACK_SECONDS = 1e-9
#: The header of a Raven selection table as clipwise writes it (Max / Mean Score are extra measurement columns).
RAVEN_HEADER = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                "Annotation", "Max Score", "Mean Score")


@dataclass(frozen=True, order=True)
class Event:
    """A stretch of a recording where ``label`` scored at or above its threshold: ``start`` is the start of its
    first window, ``end`` the end of its last, in seconds; ``max_score`` / ``mean_score`` over those windows."""

    start: float
    end: float
    label: str
    max_score: float
    mean_score: float


@dataclass
class _Run:
    start: float
    end: float
    max_score: float
    total: float
    count: int

    def grow(self, end: float, score: float) -> None:
        self.end, self.max_score = end, max(self.max_score, score)
        self.total, self.count = self.total + score, self.count + 1

    def event(self, label: str) -> Event:
        return Event(self.start, self.end, label, self.max_score, self.total / self.count)


def check_seconds(value: float, *, name: str) -> float:
    """``value`` as a finite number of seconds >= 0.

    Raises:
        ConfigError: negative, NaN or infinite; the message names ``name`` (a flag or a parameter).
    """
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {value:g}")
    return value


class EventTracker:
    """Turns a stream of windows into events, one window at a time, holding only the open event of each label.

    Rules, in order: consecutive windows scoring >= the label's threshold form one event; events of a label
    separated by at most ``gap_seconds`` (or overlapping, as events from overlapping windows can) merge into one;
    events shorter than ``min_duration_seconds`` are dropped.

    Args:
        labels: class names, in the order of a window's probabilities.
        thresholds: one threshold per label.
        gap_seconds: largest gap bridged between two events of a label.
        min_duration_seconds: shortest event kept.

    Raises:
        ConfigError: a threshold count that does not match the labels, or negative seconds.
    """

    def __init__(self, labels: Sequence[str], thresholds: Sequence[float], *, gap_seconds: float = 0.0,
                 min_duration_seconds: float = 0.0):
        self.labels = list(labels)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        if self.thresholds.shape != (len(self.labels),):
            raise ConfigError(f"need one threshold per label ({len(self.labels)}), got shape {self.thresholds.shape}")
        self.gap_seconds = check_seconds(gap_seconds, name="gap_seconds")
        self.min_duration_seconds = check_seconds(min_duration_seconds, name="min_duration_seconds")
        self._open: dict[int, _Run] = {}  # a run of windows still growing
        self._closed: dict[int, _Run] = {}  # a run that ended, kept while a later one may still merge into it

    def feed(self, window) -> list[Event]:
        """Add the next window (``start``, ``end`` in seconds, ``probabilities`` per label).

        Returns:
            The events that this window finished (none can grow any more), in label order.
        """
        done = []
        scores = np.asarray(window.probabilities, dtype=np.float64)
        for c in range(len(self.labels)):
            closed = self._closed.get(c)
            # later runs start no earlier than this window: past the gap, the closed run is final
            if closed is not None and window.start - closed.end > self.gap_seconds + TIME_SLACK_SECONDS:
                done += self._finish(c, self._closed.pop(c))
            run, score = self._open.get(c), float(scores[c])
            if score >= self.thresholds[c]:
                if run is not None:
                    run.grow(window.end, score)
                elif c in self._closed:  # within the gap of the previous run: it continues
                    self._open[c] = self._closed.pop(c)
                    self._open[c].grow(window.end, score)
                else:
                    self._open[c] = _Run(window.start, window.end, score, score, 1)
            elif run is not None:
                self._closed[c] = self._open.pop(c)
        return done

    def close(self) -> list[Event]:
        """The events still open at the end of the recording (the tracker is then empty, ready for another)."""
        done = []
        for c in range(len(self.labels)):
            for runs in (self._closed, self._open):
                if c in runs:
                    done += self._finish(c, runs.pop(c))
        return done

    def _finish(self, c: int, run: _Run) -> list[Event]:
        if run.end - run.start < self.min_duration_seconds - TIME_SLACK_SECONDS:
            return []
        return [run.event(self.labels[c])]


def merge_events(windows: Iterable, labels: Sequence[str], thresholds: Sequence[float], *, gap_seconds: float = 0.0,
                 min_duration_seconds: float = 0.0) -> list[Event]:
    """Every event of a sequence of windows (see :class:`EventTracker` for the rules), sorted by start.

    Returns:
        The events, by start time then label.
    """
    tracker = EventTracker(labels, thresholds, gap_seconds=gap_seconds, min_duration_seconds=min_duration_seconds)
    events = [e for w in windows for e in tracker.feed(w)] + tracker.close()
    return sorted(events)


def resolve_thresholds(labels: Sequence[str], *, threshold: float | None = None, path: str | os.PathLike | None = None,
                       tuned: Sequence[float] | None = None) -> np.ndarray:
    """The decision threshold of each label: ``--threshold`` for all, or ``--thresholds FILE`` (a JSON
    ``{label: threshold}``, or a run's thresholds.json), or else the run's ``tuned`` ones, or else 0.5. Labels
    a file leaves out keep the tuned threshold (or 0.5).

    Returns:
        A float array, one threshold per label.

    Raises:
        ConfigError: both given, a threshold outside [0, 1], an unreadable file or one naming an unknown label.
    """
    if threshold is not None and path is not None:
        raise ConfigError("give either --threshold (one for every class) or --thresholds FILE (per class), not both")
    base = np.full(len(labels), 0.5) if tuned is None else np.asarray(tuned, dtype=np.float64).copy()
    if threshold is not None:
        return np.full(len(labels), _probability(threshold, where="--threshold"))
    if path is None:
        return base
    if not Path(path).is_file():
        raise ConfigError(f"--thresholds {path}: file not found; give a JSON file {{label: threshold}} or a run's "
                          "thresholds.json")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"--thresholds {path}: cannot read it as JSON ({err}); write "
                          '{"label": 0.5, ...}') from None
    if isinstance(data, dict) and isinstance(data.get("thresholds"), dict):  # a run's thresholds.json
        data = data["thresholds"]
    if not isinstance(data, dict):
        raise ConfigError(f"--thresholds {path} must hold a JSON object {{\"label\": threshold, ...}}")
    for label, value in data.items():
        if label not in labels:
            raise ConfigError(f"--thresholds {path} names {label!r}, which is not a label of the model; its labels: "
                              f"{', '.join(labels)}")
        base[list(labels).index(label)] = _probability(value, where=f"--thresholds {path} ({label!r})")
    return base


def _probability(value: object, *, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{where}: a threshold must be a number from 0 to 1, got {value!r}")
    return float(value)


def _one_line(label: str) -> str:
    # a tab or a line break inside a label would split the row of a tab-separated file
    return re.sub(r"[\t\r\n]+", " ", label)


def check_event_format(fmt: str, *, recordings: int = 1) -> None:
    """Check an events format before any scoring: a known one, and ``csv`` for several recordings in one file.

    Raises:
        ConfigError: naming ``--events-format``.
    """
    if fmt not in EVENT_FORMATS:
        raise ConfigError(f"--events-format must be one of {', '.join(EVENT_FORMATS)}, got {fmt!r}")
    if recordings > 1 and fmt != "csv":
        raise ConfigError(f"an {fmt} events file describes one recording; give one file, or --events-format csv "
                          "(a file column tells the recordings apart)")


def write_events(events: Sequence[Event], path: str | os.PathLike, *, fmt: str, sample_rate: int,
                 files: Sequence[str] | None = None) -> Path:
    """Write events as ``fmt``; the file appears under its name only once complete.

    ``csv``: start, end, label, max_score, mean_score (with ``files``: a first ``file`` column, one per event).
    ``audacity``: an Audacity label track, ``start<TAB>end<TAB>label`` lines without a header.
    ``raven``: a Raven selection table (tab-separated, with a header); its frequency band is the one the model
    heard, 0 to ``sample_rate`` / 2.

    Args:
        events: the events.
        path: the file to write.
        fmt: one of :data:`clipwise.config.EVENT_FORMATS`.
        sample_rate: the rate the recording was scored at (Raven's band).
        files: the recording of each event, for a CSV that holds several recordings.

    Returns:
        ``path``.

    Raises:
        ConfigError: an unknown ``fmt``, or ``files`` with a format that describes one recording.
    """
    check_event_format(fmt, recordings=1 if files is None else 2)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        if fmt == "csv":
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow((["file"] if files is not None else []) + ["start", "end", "label", "max_score",
                                                                        "mean_score"])
            for i, e in enumerate(events):
                writer.writerow(([files[i]] if files is not None else [])
                                + [f"{e.start:.6f}", f"{e.end:.6f}", e.label, f"{e.max_score:.6f}",
                                   f"{e.mean_score:.6f}"])
        elif fmt == "audacity":
            f.writelines(f"{e.start:.6f}\t{e.end:.6f}\t{_one_line(e.label)}\n" for e in events)
        else:
            f.write("\t".join(RAVEN_HEADER) + "\n")
            f.writelines(f"{i}\tSpectrogram 1\t1\t{e.start:.6f}\t{e.end:.6f}\t0\t{sample_rate / 2:g}\t"
                         f"{_one_line(e.label)}\t{e.max_score:.6f}\t{e.mean_score:.6f}\n"
                         for i, e in enumerate(events, start=1))
    return path
