"""Waveform -> spectrogram frontends as torch modules, plus per-bin normalisation.

They live inside the model so that a checkpoint or an exported file takes raw audio at a known sample rate
and serving code repeats nothing. The STFT is ``torch.stft`` and the mel filterbank comes from librosa, so the
log-mel matches ``librosa.power_to_db(librosa.feature.melspectrogram(...))`` (tested).
"""

from __future__ import annotations

import math
from typing import Any

import librosa
import numpy as np
import scipy.fft
import torch
from torch import nn

from clipwise.errors import ConfigError
from clipwise.registry import Registry

FRONTENDS: Registry = Registry("frontend")


def stft_sizes(*, sample_rate: int, win_ms: float, hop_ms: float, n_fft: int | None) -> tuple[int, int, int]:
    """Return (win_length, hop_length, n_fft) in samples for window/hop given in milliseconds."""
    win_length = max(1, round(sample_rate * win_ms / 1000))
    hop_length = max(1, round(sample_rate * hop_ms / 1000))
    if n_fft is None:
        n_fft = 1 << math.ceil(math.log2(win_length))
    if n_fft < win_length:
        raise ConfigError(f"frontend.n_fft={n_fft} is shorter than the window ({win_length} samples); raise n_fft")
    return win_length, hop_length, n_fft


def n_frames(n_samples: int, hop_length: int) -> int:
    """Frames a centred STFT produces for ``n_samples`` samples."""
    return 1 + n_samples // hop_length


def _mel_filters_cover(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about the empty filters we are testing for
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
    return bool((fb.max(axis=1) > 0).all())


@FRONTENDS.register("logmel")
class LogMel(nn.Module):
    """Log-mel power spectrogram in dB: ``(batch, samples) -> (batch, n_mels, frames)``.

    Args:
        sample_rate: input sample rate in Hz.
        n_mels: mel bands.
        win_ms, hop_ms: STFT window and hop in milliseconds (Hann window, centred frames, zero padding).
        n_fft: FFT size (default: next power of two >= the window).
        f_min, f_max: band edges in Hz (f_max default: Nyquist).
        amin: power floor before the log (librosa's default, -100 dB).
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        n_mels: int = 64,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        f_min: float = 20.0,
        f_max: float | None = None,
        amin: float = 1e-10,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.win_length, self.hop_length, fft = stft_sizes(
            sample_rate=sample_rate, win_ms=win_ms, hop_ms=hop_ms, n_fft=n_fft
        )
        f_max = sample_rate / 2 if f_max is None else f_max
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ConfigError(
                f"frontend band [{f_min}, {f_max}] Hz is invalid for sample_rate={sample_rate}: "
                f"need 0 <= f_min < f_max <= {sample_rate / 2}"
            )
        self.n_bins = n_mels
        self.amin = amin
        # centre of each band in Hz (librosa's mel filters peak at the inner points of n_mels + 2 mel-spaced edges)
        self.centres_hz = librosa.mel_frequencies(n_mels=n_mels + 2, fmin=f_min, fmax=f_max)[1:-1]
        if n_fft is None:
            # a short window at a low sample rate leaves the narrow low mel bands without any FFT bin (all-zero
            # filters); zero-pad the FFT until every band gets one
            while not _mel_filters_cover(sample_rate, fft, n_mels, f_min, f_max) and fft < 16384:
                fft *= 2
        self.n_fft = fft
        fb = librosa.filters.mel(sr=sample_rate, n_fft=self.n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)
        # librosa centres a short window inside the FFT frame; do the same so frames line up
        window = torch.hann_window(self.win_length, periodic=True)
        left = (self.n_fft - self.win_length) // 2
        window = nn.functional.pad(window, (left, self.n_fft - self.win_length - left))
        self.register_buffer("window", window, persistent=False)

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """Mel power ``(batch, n_mels, frames)`` before the log."""
        # pad by hand (zeros, like librosa) so the STFT call stays simple for ONNX export
        pad = self.n_fft // 2
        wave = nn.functional.pad(wave, (pad, pad))
        spec = torch.stft(
            wave.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        power = torch.view_as_real(spec).pow(2).sum(-1)
        return torch.matmul(self.mel_fb, power)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-mel in dB ``(batch, n_mels, frames)``: where training augments the spectrum (warps, filters)."""
        return 10.0 * torch.log10(torch.clamp(self.power(wave), min=self.amin))

    def from_log_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """This frontend's output from a (possibly augmented) :meth:`log_mel`: here the log-mel itself."""
        return mel

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.log_mel(wave)


@FRONTENDS.register("mfcc")
class MFCC(nn.Module):
    """MFCCs (DCT-II, orthonormal, of the log-mel in dB, as librosa computes them).

    Args:
        n_mfcc: coefficients kept.
        **logmel: arguments of :class:`LogMel`.
    """

    def __init__(self, *, n_mfcc: int = 40, **logmel: Any):
        super().__init__()
        self.logmel = LogMel(**logmel)
        if n_mfcc > self.logmel.n_bins:
            raise ConfigError(f"frontend.n_mfcc={n_mfcc} exceeds frontend.n_mels={self.logmel.n_bins}")
        self.n_bins = n_mfcc
        self.hop_length = self.logmel.hop_length
        dct = scipy.fft.dct(np.eye(self.logmel.n_bins), type=2, norm="ortho", axis=0)[:n_mfcc]
        self.register_buffer("dct", torch.from_numpy(dct).float(), persistent=False)
        self.centres_hz = self.logmel.centres_hz

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        return self.logmel(wave)

    def from_log_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.dct, mel)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.from_log_mel(self.log_mel(wave))


@FRONTENDS.register("logmel_mfcc")
class LogMelMFCC(nn.Module):
    """Log-mel and MFCCs stacked along the bin axis: ``(batch, n_mels + n_mfcc, frames)``. The MFCCs are the DCT of
    the same log-mel, so the extra cost is one small matrix product; per-bin normalisation puts both on one scale.
    """

    def __init__(self, *, n_mfcc: int = 40, **logmel: Any):
        super().__init__()
        self.mfcc = MFCC(n_mfcc=n_mfcc, **logmel)
        self.logmel = self.mfcc.logmel
        self.n_bins = self.logmel.n_bins + self.mfcc.n_bins
        self.hop_length = self.logmel.hop_length
        self.centres_hz = self.logmel.centres_hz

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        return self.logmel(wave)

    def from_log_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.cat([mel, self.mfcc.from_log_mel(mel)], dim=1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.from_log_mel(self.log_mel(wave))


def build_frontend(*, name: str, sample_rate: int, **params: Any) -> nn.Module:
    """Create a registered frontend; ``params`` are the frontend config fields (unused ones are dropped)."""
    n_mfcc = params.pop("n_mfcc", 40)
    params.pop("normalize", None)
    params.pop("name", None)
    cls = FRONTENDS.get(name)
    if cls in (MFCC, LogMelMFCC):
        return cls(n_mfcc=n_mfcc, sample_rate=sample_rate, **params)
    return cls(sample_rate=sample_rate, **params)


class BinNorm(nn.Module):
    """Standardise each frequency bin with statistics of the training split.

    Unnormalised log-mel values sit around -100..+20 dB; fed raw they slow training and, with a high
    learning rate, produce NaN losses. The statistics are buffers, so they travel with the checkpoint.
    """

    def __init__(self, n_bins: int, *, enabled: bool = True, min_std: float = 1e-3):
        super().__init__()
        self.enabled = enabled
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(n_bins))
        self.register_buffer("std", torch.ones(n_bins))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, batches) -> None:
        """Accumulate mean/std per bin over an iterable of ``(batch, bins, frames)`` tensors (float64 sums)."""
        total = 0
        s1 = torch.zeros_like(self.mean, dtype=torch.float64)
        s2 = torch.zeros_like(self.mean, dtype=torch.float64)
        for x in batches:
            x = x.double()
            s1 += x.sum(dim=(0, 2))
            s2 += (x * x).sum(dim=(0, 2))
            total += x.shape[0] * x.shape[2]
        if total == 0:
            raise ValueError("cannot fit normalisation statistics on no data")
        mean = s1 / total
        var = (s2 / total - mean * mean).clamp(min=0)
        self.mean.copy_(mean.float())
        self.std.copy_(var.sqrt().float().clamp(min=self.min_std))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return (x - self.mean[:, None]) / self.std[:, None]
