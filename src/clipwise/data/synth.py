"""A built-in synthetic dataset: eight clearly distinct sound classes generated from seeded random parameters.

Used by the demo and the tests. Each clip is a class-specific source (tone, sweep, coloured noise, clicks,
modulated tones) with a random onset, fades, level and, half the time, faint background noise. Clips in
the dataset come in pairs cut from one "recording" (the ``group``), so group-aware splitting matters just
as it does with real data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from clipwise.data.manifest import write_manifest
from clipwise.errors import ConfigError

__all__ = ["SYNTH_CLASSES", "synth_clip", "make_synthetic_dataset"]

_MIN_SAMPLE_RATE = 8000
_Source = Callable[[int, int, np.random.Generator], np.ndarray]


def _times(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f0 = rng.uniform(200.0, 2000.0)
    t = _times(n, sr)
    x = np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))
    for k in range(2, 2 + int(rng.integers(0, 4))):  # 0-3 harmonics, quieter with order
        if k * f0 < 0.45 * sr:
            x += rng.uniform(0.1, 0.5) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    return x


def _sweep(n: int, sr: int, rng: np.random.Generator, *, up: bool) -> np.ndarray:
    top = min(8000.0, 0.45 * sr)
    low = rng.uniform(100.0, 800.0)
    high = min(top, low * rng.uniform(3.0, 10.0))  # at least 1.5 octaves
    f_start, f_end = (low, high) if up else (high, low)
    duration = n / sr
    rate = math.log(f_end / f_start) / duration  # exponential (log) sweep
    t = _times(n, sr)
    phase = 2 * np.pi * f_start * np.expm1(rate * t) / rate
    return np.sin(phase + rng.uniform(0, 2 * np.pi))


def _coloured_noise(n: int, rng: np.random.Generator, power_exponent: float) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1 / f**power_exponent."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=float)
    f[0] = 1.0
    spectrum *= f ** (-power_exponent / 2.0)
    spectrum[0] = 0.0  # no DC offset
    return np.fft.irfft(spectrum, n)


def _click_train(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    rate_hz = rng.uniform(5.0, 40.0)
    period = sr / rate_hz
    click_len = max(2, int(sr * rng.uniform(0.0005, 0.002)))
    click = rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / (click_len / 4))
    x = np.zeros(n + click_len)
    position = rng.uniform(0, period)
    while position < n:
        i = int(position)
        x[i : i + click_len] += click * rng.uniform(0.7, 1.0)
        position += period * rng.uniform(0.97, 1.03)  # a slightly irregular rhythm
    return x[:n]


def _am_tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _times(n, sr)
    # deep and fast enough (>= 4 cycles a second) that a short clip cannot pass for a plain tone with a fade
    depth = rng.uniform(0.8, 1.0)
    modulator = 1.0 - depth / 2 * (1 + np.cos(2 * np.pi * rng.uniform(4.0, 16.0) * t + rng.uniform(0, 2 * np.pi)))
    return modulator * np.sin(2 * np.pi * rng.uniform(200.0, 2000.0) * t)


def _fm_tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _times(n, sr)
    carrier_hz = rng.uniform(300.0, 2000.0)
    mod_hz = rng.uniform(3.0, 10.0)
    deviation_hz = carrier_hz * rng.uniform(0.1, 0.3)
    phase = 2 * np.pi * carrier_hz * t + deviation_hz / mod_hz * np.sin(2 * np.pi * mod_hz * t + rng.uniform(0, 6.3))
    return np.sin(phase)


_SOURCES: dict[str, _Source] = {
    "tone": _tone,
    "chirp_up": lambda n, sr, rng: _sweep(n, sr, rng, up=True),
    "chirp_down": lambda n, sr, rng: _sweep(n, sr, rng, up=False),
    "white_noise": lambda n, sr, rng: rng.standard_normal(n),
    "pink_noise": lambda n, sr, rng: _coloured_noise(n, rng, rng.uniform(0.9, 1.1)),
    "brown_noise": lambda n, sr, rng: _coloured_noise(n, rng, rng.uniform(1.8, 2.2)),
    "click_train": _click_train,
    "am_tone": _am_tone,
    "fm_tone": _fm_tone,
}
SYNTH_CLASSES: tuple[str, ...] = tuple(_SOURCES)


def _check_kind(kind: str) -> None:
    if kind not in _SOURCES:
        raise ConfigError(f"unknown synthetic class {kind!r}; choose from {', '.join(SYNTH_CLASSES)}")


def _n_samples(sample_rate: int, duration_seconds: float) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    if sample_rate < _MIN_SAMPLE_RATE:
        raise ConfigError(
            f"sample_rate must be at least {_MIN_SAMPLE_RATE} Hz for the synthetic classes (tones reach 2.6 kHz), "
            f"got {sample_rate}"
        )
    if not isinstance(duration_seconds, (int, float)) or not duration_seconds > 0:
        raise ConfigError(f"duration_seconds must be positive, got {duration_seconds!r}")
    return max(1, int(round(duration_seconds * sample_rate)))


def _finish(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Random onset and fades, optional faint background noise, random peak level."""
    n = len(x)
    x = x / (np.max(np.abs(x)) + 1e-12)
    onset, tail = (int(n * rng.uniform(0.0, 0.1)) for _ in range(2))
    active = max(1, n - onset - tail)
    envelope = np.zeros(n)
    envelope[onset : onset + active] = 1.0
    fade_in = min(active // 2, int(sr * rng.uniform(0.005, 0.05)))
    fade_out = min(active // 2, int(sr * rng.uniform(0.01, 0.1)))
    if fade_in:
        envelope[onset : onset + fade_in] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade_in))
    if fade_out:
        envelope[onset + active - fade_out : onset + active] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, fade_out))
    x = x * envelope
    if rng.random() < 0.5:
        snr_db = rng.uniform(20.0, 40.0)
        rms = np.sqrt(np.mean(x**2))
        x = x + rng.standard_normal(n) * rms * 10 ** (-snr_db / 20)
    peak_db = rng.uniform(-20.0, -3.0)
    x = x / (np.max(np.abs(x)) + 1e-12) * 10 ** (peak_db / 20)
    return x.astype(np.float32)


def synth_clip(kind: str, *, sample_rate: int, duration_seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Generate one clip of a synthetic class.

    Args:
        kind: one of :data:`SYNTH_CLASSES`.
        sample_rate: in Hz.
        duration_seconds: clip length.
        rng: source of all random choices (seed it for reproducible clips).

    Returns:
        A float32 array of ``round(duration_seconds * sample_rate)`` samples, peak between -20 and -3 dBFS.

    Raises:
        ConfigError: unknown ``kind`` or non-positive rate / duration.
    """
    _check_kind(kind)
    n = _n_samples(sample_rate, duration_seconds)
    return _finish(_SOURCES[kind](n, sample_rate, rng), sample_rate, rng)


def _split_names(n_groups: int, splits: Sequence[float], class_number: int, rng: np.random.Generator) -> list[str]:
    """Shuffled train/val/test names for one class's groups, in proportion to ``splits``."""
    n_val = int(round(splits[1] * n_groups))
    n_test = int(round(splits[2] * n_groups))
    if n_groups >= 3:  # every split asked for gets at least one recording per class
        n_val, n_test = max(n_val, int(splits[1] > 0)), max(n_test, int(splits[2] > 0))
    elif n_groups == 2 and n_val + n_test == 0 and splits[1] + splits[2] > 0:
        # too few recordings to fill every split in every class: classes take turns giving one to val or test
        to_val = splits[1] > 0 and (splits[2] == 0 or class_number % 2 == 0)
        n_val, n_test = int(to_val), int(not to_val)
    n_val = min(n_val, n_groups - 1)  # train keeps at least one recording
    n_test = min(n_test, n_groups - 1 - n_val)
    names = ["val"] * n_val + ["test"] * n_test
    names += ["train"] * (n_groups - len(names))
    return [names[i] for i in rng.permutation(n_groups)]


def _check_dataset_args(classes: Sequence[str], n_per_class: int, duration_jitter: float, splits) -> None:
    for kind in classes:
        _check_kind(kind)
    if len(set(classes)) != len(classes) or not classes:
        raise ConfigError(f"classes must be a non-empty list of distinct names, got {list(classes)!r}")
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ConfigError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    if not 0.0 <= duration_jitter < 1.0:
        raise ConfigError(
            f"duration_jitter must be in [0, 1) (a fraction of duration_seconds), got {duration_jitter!r}"
        )
    if splits is not None and (len(splits) != 3 or min(splits) < 0 or abs(sum(splits) - 1.0) > 1e-6):
        raise ConfigError(
            f"splits must be three fractions (train, val, test) summing to 1, or None, got {splits!r}"
        )


def make_synthetic_dataset(
    out_dir: str | Path,
    *,
    n_per_class: int = 40,
    classes: Sequence[str] | None = None,
    sample_rate: int = 16000,
    duration_seconds: float = 1.0,
    duration_jitter: float = 0.0,
    seed: int = 0,
    splits: Sequence[float] | None = (0.7, 0.15, 0.15),
) -> Path:
    """Write a synthetic dataset: ``out_dir/audio/<class>/<class>_<i>.wav`` (PCM16) and ``out_dir/manifest.csv``.

    Clips ``2k`` and ``2k+1`` of a class are cut from one recording and share its ``group``. Running again
    with the same arguments reuses the files.

    Args:
        out_dir: folder to write into (created).
        n_per_class: clips per class.
        classes: which of :data:`SYNTH_CLASSES` (default: all).
        sample_rate: in Hz.
        duration_seconds: nominal clip length.
        duration_jitter: each clip's length varies by up to this fraction of ``duration_seconds``.
        seed: makes the dataset reproducible; a clip does not depend on which other classes are chosen.
        splits: (train, val, test) fractions of each class's groups, or None for no ``split`` column.

    Returns:
        The manifest path (columns path, label, group and, unless ``splits`` is None, split).

    Raises:
        ConfigError: an unknown class or an invalid argument.
    """
    classes = list(SYNTH_CLASSES if classes is None else classes)
    _check_dataset_args(classes, n_per_class, duration_jitter, splits)
    n_nominal = _n_samples(sample_rate, duration_seconds)
    out_dir = Path(out_dir).expanduser().absolute()
    manifest_path = out_dir / "manifest.csv"
    params_path = out_dir / "synth.json"
    params = {
        "n_per_class": int(n_per_class), "classes": classes, "sample_rate": int(sample_rate),
        "duration_seconds": float(duration_seconds), "duration_jitter": float(duration_jitter),
        "seed": int(seed), "splits": None if splits is None else [float(s) for s in splits],
    }  # fmt: skip
    if _is_complete(out_dir, manifest_path, params_path, params):
        return manifest_path

    rows = []
    for class_number, kind in enumerate(classes):
        class_id = SYNTH_CLASSES.index(kind)
        folder = out_dir / "audio" / kind
        folder.mkdir(parents=True, exist_ok=True)
        n_groups = (n_per_class + 1) // 2
        split_rng = np.random.default_rng([seed, class_id, 1])
        names = _split_names(n_groups, splits, class_number, split_rng) if splits else None
        width = max(3, len(str(n_per_class - 1)))
        for g in range(n_groups):
            rng = np.random.default_rng([seed, class_id, 0, g])
            members = range(2 * g, min(2 * g + 2, n_per_class))
            lengths = [
                max(1, int(round(n_nominal * (1 + duration_jitter * rng.uniform(-1, 1))))) for _ in members
            ]
            recording = _SOURCES[kind](sum(lengths), sample_rate, rng)
            offset = 0
            for i, n in zip(members, lengths):
                clip = _finish(recording[offset : offset + n], sample_rate, rng)
                offset += n
                path = folder / f"{kind}_{i:0{width}d}.wav"
                sf.write(path, clip, sample_rate, subtype="PCM_16")
                row = {"path": str(path), "label": kind, "group": f"{kind}_rec{g:0{width}d}"}
                if names is not None:
                    row["split"] = names[g]
                rows.append(row)

    params_path.write_text(json.dumps(params, indent=1))
    # the manifest goes last, through a rename, so an interrupted run is never mistaken for a finished one
    tmp = write_manifest(pd.DataFrame(rows), out_dir / f".manifest.{os.getpid()}.tmp.csv")
    tmp.replace(manifest_path)
    return manifest_path


def _is_complete(out_dir: Path, manifest_path: Path, params_path: Path, params: dict) -> bool:
    """Whether ``out_dir`` holds a finished dataset made with ``params``."""
    if not (manifest_path.is_file() and params_path.is_file()):
        return False
    try:
        if json.loads(params_path.read_text()) != params:
            return False
        listed = pd.read_csv(manifest_path, usecols=["path"])["path"]
    except (ValueError, OSError):
        return False
    expected = params["n_per_class"] * len(params["classes"])
    return len(listed) == expected and all((out_dir / p).is_file() for p in listed)
