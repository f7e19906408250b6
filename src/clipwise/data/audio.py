"""Audio loading: decode, mix down to mono, resample, pad/crop and cut into windows.

Everything returns float32 numpy arrays in [-1, 1]; torch never appears here so the same code serves
training, evaluation and inference.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from clipwise.config import CROP_MODES, PAD_MODES
from clipwise.errors import AudioError, ConfigError

__all__ = [
    "AudioInfo",
    "audio_info",
    "load_audio",
    "fix_length",
    "window_starts",
    "frame_windows",
    "is_silent",
    "PAD_MODES",
    "CROP_MODES",
]

SUPPORTED_FORMATS = "wav, flac, ogg, mp3, aiff (and anything ffmpeg reads when audioread is installed)"
# Segment ends in annotation files are often rounded (to 10 ms or so); an end this far past the last
# sample is clamped to the file's end instead of rejected.
END_TOLERANCE_SECONDS = 0.05


@dataclass(frozen=True)
class AudioInfo:
    """What a file header says about its audio."""

    sample_rate: int
    frames: int
    channels: int
    duration_seconds: float


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "not a file (a folder)" if path.is_dir() else "file not found"
        raise AudioError(
            f"{what}: {path} (paths in a manifest are relative to the manifest's folder)", path=str(path)
        )
    return path


def _decode_error(path: Path, reason: object) -> AudioError:
    text = str(reason)
    # libsndfile says "does not exist or is not a regular file" of files it merely cannot parse
    if "does not exist or is not a regular file" in text or "Format not recognised" in text:
        text = "not decodable as audio: no decoder recognises its content (damaged, or not audio)"
    return AudioError(f"cannot decode {path}: {text}; supported: {SUPPORTED_FORMATS}", path=str(path))


@contextlib.contextmanager
def _quiet_decoders():
    """Silence what C decoders print straight to the process's stderr (libmpg123: "Note: Illegal Audio-MPEG-Header
    ..."): clipwise reports a bad file itself, once, with its name."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _empty_error(path: Path) -> AudioError:
    return AudioError(f"audio file is empty (0 samples): {path}; re-export it or remove it", path=str(path))


def _audioread_info(path: Path) -> AudioInfo:
    import audioread  # a librosa dependency; only needed for formats libsndfile cannot open

    with audioread.audio_open(str(path)) as f:
        frames = int(round(f.duration * f.samplerate))
        return AudioInfo(int(f.samplerate), frames, int(f.channels), float(f.duration))


def audio_info(path: str | Path) -> AudioInfo:
    """Read a file's header (no decoding).

    Args:
        path: audio file.

    Returns:
        The file's sample rate, length in frames, channel count and duration.

    Raises:
        AudioError: the file is missing, cannot be decoded or holds no samples.
    """
    path = _existing_file(path)
    try:
        with _quiet_decoders():
            meta = sf.info(str(path))
        info = AudioInfo(int(meta.samplerate), int(meta.frames), int(meta.channels), float(meta.duration))
    except (sf.SoundFileError, RuntimeError) as sf_err:
        try:
            info = _audioread_info(path)
        except Exception:  # audioread raises its own hierarchy or backend errors; the soundfile reason is clearer
            raise _decode_error(path, sf_err) from sf_err
    if info.frames <= 0:
        raise _empty_error(path)
    return info


def declared_frames(path: str | Path) -> int | None:
    """The frames a WAV file's header declares (its data chunk's size), which libsndfile quietly shortens to what
    the file holds; None for other formats or a header that leaves the size open (streamed WAVs)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order = "<" if head[:4] == b"RIFF" else ">"
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], struct.unpack(order + "I", head[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = struct.unpack(order + "H", head[pos + 20:pos + 22])[0]
        elif chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


def _is_nan(value: object) -> bool:
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _segment_frames(
    path: Path, info: AudioInfo, start_seconds: float | None, end_seconds: float | None
) -> tuple[int, int]:
    # None or NaN (an empty start/end cell in a manifest) means the file's start / end
    start = 0.0 if start_seconds is None or _is_nan(start_seconds) else float(start_seconds)
    end = info.duration_seconds if end_seconds is None or _is_nan(end_seconds) else float(end_seconds)
    where = f"segment {start:g}-{end:g} s of {path} (duration {info.duration_seconds:.3f} s)"
    outside = start >= info.duration_seconds or end > info.duration_seconds + END_TOLERANCE_SECONDS
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or (end <= start and not outside):
        raise AudioError(f"invalid {where}: need 0 <= start < end; fix the start/end columns", path=str(path))
    if outside:
        raise AudioError(f"{where} lies outside the file; fix the start/end columns", path=str(path))
    first = int(round(start * info.sample_rate))
    stop = min(info.frames, int(round(end * info.sample_rate)))
    if stop <= first:
        raise AudioError(f"{where} holds no samples; fix the start/end columns", path=str(path))
    return first, stop


def _to_mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x.astype(np.float32, copy=False)


def _read(path: Path, info: AudioInfo, first: int, stop: int) -> tuple[np.ndarray, int]:
    """Decode frames [first, stop) with soundfile, falling back to librosa/audioread."""
    try:
        with _quiet_decoders():
            x, sr = sf.read(str(path), start=first, stop=stop, dtype="float32", always_2d=True)
        return _to_mono(x), int(sr)
    except (sf.SoundFileError, RuntimeError) as sf_err:
        import librosa

        offset = first / info.sample_rate
        try:
            with warnings.catch_warnings(), _quiet_decoders():  # librosa warns it is falling back: the point
                warnings.simplefilter("ignore")
                x, sr = librosa.load(
                    str(path), sr=None, mono=True, offset=offset, duration=(stop - first) / info.sample_rate
                )
        except Exception:
            raise _decode_error(path, sf_err) from sf_err
        return x.astype(np.float32, copy=False), int(sr)


def load_audio(
    path: str | Path,
    *,
    sample_rate: int,
    start_seconds: float | None = None,
    end_seconds: float | None = None,
) -> np.ndarray:
    """Decode a file (or a segment of it) to mono float32 at ``sample_rate``.

    Only the frames of the segment are read. Channels are averaged; the rate is converted with soxr (HQ). Samples
    are kept as the file holds them: integer formats decode to [-1, 1], float files may hold larger values (legal,
    and kept; ``clipwise check`` counts such files). A file holding NaN or infinite samples is not usable audio.

    Args:
        path: audio file (wav, flac, ogg, mp3, ...).
        sample_rate: output rate in Hz.
        start_seconds: segment start (None or NaN: the beginning).
        end_seconds: segment end (None or NaN: the end of the file).

    Returns:
        A 1-D float32 array.

    Raises:
        ConfigError: ``sample_rate`` is not a positive integer.
        AudioError: the file is missing, undecodable, empty or holds NaN / infinite samples, or the segment lies
            outside it.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    info = audio_info(path)
    path = Path(path)
    first, stop = _segment_frames(path, info, start_seconds, end_seconds)
    x, sr_in = _read(path, info, first, stop)
    if x.size == 0:
        raise _empty_error(path)
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise AudioError(f"not usable audio: {path} holds {bad} NaN or infinite sample(s) of {x.size}; re-export it "
                         "or remove it from the manifest", path=str(path))
    return resample(x, sr_in, int(sample_rate))


def resample(x: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """``x`` (1-D float) at ``target_rate``, converted with soxr (HQ) as :func:`load_audio` converts; float32."""
    if int(sample_rate) != int(target_rate):
        x = soxr.resample(np.ascontiguousarray(x), int(sample_rate), int(target_rate), quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _offset(slack: int, crop: str, rng: np.random.Generator | None) -> int:
    """Where to place a window of ``slack`` spare samples: 0, the middle, or at random."""
    if crop == "start" or slack == 0:
        return 0
    if crop == "center":
        return slack // 2
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.integers(0, slack + 1))


def fix_length(
    x: np.ndarray,
    n_samples: int,
    *,
    pad_mode: str = "zeros",
    crop: str = "random",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Pad or crop a 1-D signal to exactly ``n_samples``.

    ``crop`` also places the padding: "start" pads at the end, "center" on both sides, "random" at a random
    split. ``pad_mode`` says what fills it: "zeros", "wrap" (the signal tiled) or "reflect" (mirrored,
    repeatedly when the signal is much shorter than the target). An empty signal becomes zeros.

    Args:
        x: 1-D signal.
        n_samples: target length.
        pad_mode: "zeros", "wrap" or "reflect".
        crop: "random", "center" or "start" (which part of a long signal to keep).
        rng: generator for the random offsets (a fresh unseeded one when None).

    Returns:
        A float32 array of length ``n_samples`` (a copy).

    Raises:
        ConfigError: an unknown ``pad_mode`` / ``crop``, a non-positive ``n_samples`` or a non-1-D ``x``.
    """
    _check_choice("pad_mode", pad_mode, PAD_MODES)
    _check_choice("crop", crop, CROP_MODES)
    n_samples = _check_positive_int("n_samples", n_samples)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ConfigError(f"fix_length expects a 1-D signal, got shape {x.shape}; mix it down to mono first")
    n = x.shape[0]
    if n >= n_samples:
        start = _offset(n - n_samples, crop, rng)
        return x[start : start + n_samples].copy()
    left = _offset(n_samples - n, crop, rng)
    right = n_samples - n - left
    if n == 0 or pad_mode == "zeros":
        return np.pad(x, (left, right), mode="constant")
    if pad_mode == "reflect" and n == 1:  # reflect needs two samples; one sample mirrors to itself
        return np.full(n_samples, x[0], dtype=np.float32)
    # np.pad repeats wrap / reflect as often as needed when the padding is longer than the signal
    return np.pad(x, (left, right), mode="wrap" if pad_mode == "wrap" else "reflect")


def window_starts(n_samples_total: int, window_samples: int, hop_samples: int) -> list[int]:
    """Start offsets of windows that cover a signal end to end.

    Windows start every ``hop_samples``; when the last one would stop short of the end, one more window
    aligned to the end is added so that no audio is dropped. A signal shorter than a window gets one
    window at 0 (to be padded).

    Args:
        n_samples_total: signal length.
        window_samples: window length.
        hop_samples: distance between window starts (at most ``window_samples``).

    Returns:
        Increasing start offsets.

    Raises:
        ConfigError: non-positive sizes, or a hop longer than the window (which would leave gaps).
    """
    window_samples = _check_positive_int("window_samples", window_samples)
    hop_samples = _check_positive_int("hop_samples", hop_samples)
    if hop_samples > window_samples:
        raise ConfigError(
            f"hop_samples ({hop_samples}) must not exceed window_samples ({window_samples}), "
            "or the windows would skip audio; lower the hop"
        )
    if isinstance(n_samples_total, bool) or not isinstance(n_samples_total, (int, np.integer)) or n_samples_total < 0:
        raise ConfigError(f"n_samples_total must be a non-negative integer, got {n_samples_total!r}")
    last = int(n_samples_total) - window_samples
    if last <= 0:
        return [0]
    starts = list(range(0, last + 1, hop_samples))
    if starts[-1] != last:
        starts.append(last)
    return starts


def frame_windows(
    x: np.ndarray, *, window_samples: int, hop_samples: int, pad_mode: str = "zeros"
) -> np.ndarray:
    """Cut a signal into overlapping windows that cover all of it (see :func:`window_starts`).

    Args:
        x: 1-D signal.
        window_samples: window length.
        hop_samples: distance between window starts.
        pad_mode: how a signal shorter than one window is padded (at the end): "zeros", "wrap", "reflect".

    Returns:
        A float32 array of shape (n_windows, window_samples).

    Raises:
        ConfigError: bad sizes, an unknown ``pad_mode`` or a non-1-D ``x``.
    """
    _check_choice("pad_mode", pad_mode, PAD_MODES)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ConfigError(f"frame_windows expects a 1-D signal, got shape {x.shape}; mix it down to mono first")
    starts = window_starts(x.shape[0], window_samples, hop_samples)
    if x.shape[0] < window_samples:
        return fix_length(x, window_samples, pad_mode=pad_mode, crop="start")[None, :]
    return np.stack([x[s : s + window_samples] for s in starts])


def is_silent(x: np.ndarray, *, threshold_db: float = -60.0) -> bool:
    """Whether a signal's peak lies below ``threshold_db`` dBFS (an empty or all-zero signal is silent).

    Args:
        x: signal in [-1, 1].
        threshold_db: peak level in dB relative to full scale.

    Returns:
        True when the signal is silent.
    """
    x = np.asarray(x)
    if x.size == 0:
        return True
    peak = float(np.max(np.abs(x)))
    if peak == 0.0 or not math.isfinite(peak):
        return peak == 0.0
    return 20.0 * math.log10(peak) < threshold_db
