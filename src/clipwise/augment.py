"""Training-time augmentation of waveforms and normalised spectrograms.

Random choices are drawn separately from the deterministic apply, so the same masks can be replayed in tests.
Mixup and cutmix come from timm (``timm.data.Mixup``); SpecAugment is here because it works on
(bins, frames) rather than on images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al., 2019) on ``(batch, channels, bins, frames)``.

    Each example gets its own masks; masked cells are set to ``fill`` (0 = the mean after normalisation).
    Active only in training mode.

    Args:
        freq_masks, time_masks: number of masks per example along each axis.
        freq_mask_fraction, time_mask_fraction: the largest mask width as a fraction of the axis length.
        fill: value written into masked cells.
    """

    def __init__(
        self,
        *,
        freq_masks: int = 2,
        freq_mask_fraction: float = 0.15,
        time_masks: int = 2,
        time_mask_fraction: float = 0.1,
        fill: float = 0.0,
    ):
        super().__init__()
        self.freq_masks = freq_masks
        self.freq_mask_fraction = freq_mask_fraction
        self.time_masks = time_masks
        self.time_mask_fraction = time_mask_fraction
        self.fill = fill

    @staticmethod
    def draw(batch: int, length: int, *, masks: int, max_fraction: float, generator=None) -> torch.Tensor:
        """Boolean masks ``(batch, length)``: True where any of ``masks`` random bands covers the cell."""
        out = torch.zeros(batch, length, dtype=torch.bool)
        max_width = int(max_fraction * length)
        if masks == 0 or max_width < 1:
            return out
        pos = torch.arange(length)
        for _ in range(masks):
            width = torch.randint(0, max_width + 1, (batch, 1), generator=generator)
            start = (torch.rand(batch, 1, generator=generator) * (length - width + 1)).long()
            out |= (pos >= start) & (pos < start + width)
        return out

    @staticmethod
    def apply(x: torch.Tensor, freq: torch.Tensor, time: torch.Tensor, *, fill: float = 0.0) -> torch.Tensor:
        """Write ``fill`` where the (batch, bins) or (batch, frames) masks are set."""
        cells = freq[:, None, :, None] | time[:, None, None, :]
        return x.masked_fill(cells.to(x.device), fill)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        b, _, f, t = x.shape
        freq = self.draw(b, f, masks=self.freq_masks, max_fraction=self.freq_mask_fraction)
        time = self.draw(b, t, masks=self.time_masks, max_fraction=self.time_mask_fraction)
        return self.apply(x, freq, time, fill=self.fill)


def random_gain(x: np.ndarray, *, max_gain_db: float, rng: np.random.Generator) -> np.ndarray:
    """Scale a waveform by a gain drawn uniformly from +/- ``max_gain_db`` dB."""
    if max_gain_db <= 0:
        return x
    return x * np.float32(10 ** (rng.uniform(-max_gain_db, max_gain_db) / 20))


def _interp_rows(x: torch.Tensor, pos: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Linear interpolation of ``x`` (batch, bins, frames) at fractional positions ``pos`` (batch, n) along
    ``dim`` (1 = bins, 2 = frames); positions must lie inside the axis."""
    lo = pos.floor().long().clamp(0, x.shape[dim] - 1)
    hi = (lo + 1).clamp(max=x.shape[dim] - 1)
    w = (pos - lo).to(x.dtype)
    if dim == 1:
        idx = lambda i: i[:, :, None].expand(-1, -1, x.shape[2])  # noqa: E731
        w = w[:, :, None]
    else:
        idx = lambda i: i[:, None, :].expand(-1, x.shape[1], -1)  # noqa: E731
        w = w[:, None, :]
    return x.gather(dim, idx(lo)) * (1 - w) + x.gather(dim, idx(hi)) * w


class FrequencyWarp(nn.Module):
    """Vocal-tract-length-perturbation-style warp of a log-mel ``(batch, mels, frames)`` (Jaitly & Hinton, 2013).

    Each example's spectrum is scaled along frequency in Hz by a factor drawn uniformly from
    ``[1 - max_warp, 1 + max_warp]``: output band i takes the value at ``centre_i / factor`` (interpolated
    between bands, held at the edges). The same sound from a larger or smaller source (speaker, animal,
    engine) moves this way, so the model learns to expect it. Active only in training mode.

    Args:
        centres_hz: centre frequency of each mel band, ascending.
        max_warp: largest relative change of frequency (0.1 = +/- 10 %).
    """

    def __init__(self, centres_hz: np.ndarray, *, max_warp: float = 0.1):
        super().__init__()
        import librosa

        self.max_warp = max_warp
        self.centres_hz = np.asarray(centres_hz, dtype=np.float64)
        self._centres_mel = librosa.hz_to_mel(self.centres_hz)

    def source_positions(self, factors: np.ndarray) -> torch.Tensor:
        """Fractional band index each output band reads from, ``(len(factors), bands)``."""
        import librosa

        src = librosa.hz_to_mel(self.centres_hz[None, :] / np.asarray(factors, dtype=np.float64)[:, None])
        pos = np.stack([np.interp(row, self._centres_mel, np.arange(len(self._centres_mel))) for row in src])
        return torch.from_numpy(pos)

    def apply(self, x: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
        return _interp_rows(x, self.source_positions(factors).to(x.device), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.max_warp <= 0:
            return x
        factors = 1 + (np.random.rand(x.shape[0]) * 2 - 1) * self.max_warp
        return self.apply(x, factors)


class TimeStretch(nn.Module):
    """Tempo change of a spectrogram ``(batch, bins, frames)`` without a change of pitch.

    Each example is resampled along time by a rate drawn log-uniformly from ``[1/(1+s), 1+s]`` (rate > 1 plays
    faster: the content shortens and the freed end is filled with the example's per-bin minimum, its quietest
    level; rate < 1 lengthens it and the end is cut, as a random crop would). Speech rate, footsteps and engine
    cycles vary this way. Active only in training mode.

    Args:
        max_stretch: s above; 0.15 = rates from 0.87 to 1.15.
    """

    def __init__(self, *, max_stretch: float = 0.15):
        super().__init__()
        self.max_stretch = max_stretch

    @staticmethod
    def apply(x: torch.Tensor, rates: np.ndarray) -> torch.Tensor:
        frames = x.shape[2]
        rates_t = torch.as_tensor(rates, dtype=torch.float64)[:, None]
        pos = torch.arange(frames, dtype=torch.float64)[None, :] * rates_t
        beyond = (pos > frames - 1).to(x.device)
        out = _interp_rows(x, pos.clamp(max=frames - 1).to(x.device), dim=2)
        floor = x.amin(dim=2, keepdim=True).expand_as(out)
        return torch.where(beyond[:, None, :], floor, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.max_stretch <= 0:
            return x
        span = math.log1p(self.max_stretch)
        rates = np.exp(np.random.uniform(-span, span, size=x.shape[0]))
        return self.apply(x, rates)


class FilterAugment(nn.Module):
    """Random equalisation of a dB spectrogram ``(batch, bins, frames)`` (Nam et al., 2022, linear type).

    Each example gets a gain curve over frequency: gains drawn uniformly from ``+/- max_db`` at the two edges
    and at ``2..max_points`` random interior points, interpolated linearly between them and added to every
    frame. Microphones, rooms and distance colour a recording this way, so the model learns to ignore it.
    Active only in training mode.

    Args:
        max_db: largest gain or cut in dB.
        max_points: most interior knots of the gain curve.
    """

    def __init__(self, *, max_db: float = 6.0, max_points: int = 4):
        super().__init__()
        self.max_db = max_db
        self.max_points = max_points

    def draw(self, batch: int, bins: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Gain curves ``(batch, bins)`` in dB."""
        rng = rng if rng is not None else np.random.default_rng(np.random.randint(2**31))
        curves = np.empty((batch, bins))
        for i in range(batch):
            k = rng.integers(0, self.max_points + 1)
            knots = np.concatenate([[0.0], np.sort(rng.uniform(0, bins - 1, size=k)), [bins - 1.0]])
            curves[i] = np.interp(np.arange(bins), knots, rng.uniform(-self.max_db, self.max_db, size=k + 2))
        return torch.from_numpy(curves)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.max_db <= 0:
            return x
        return x + self.draw(x.shape[0], x.shape[1]).to(x.device, x.dtype)[:, :, None]


class TimeReverse(nn.Module):
    """Plays each example backwards with probability ``p`` (mirroring along time). Active only in training."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        flip = torch.from_numpy(np.random.rand(x.shape[0]) < self.p).to(x.device)
        return torch.where(flip[:, None, None], x.flip(-1), x)


class Overlay(nn.Module):
    """Adds a second training clip to a waveform with probability ``p`` and gives the sum the union of both
    clips' labels: multi-label only, where it is the physical counterpart of mixup (a sum of sounds carries all
    their labels, whereas a blend of log-spectrograms with blended targets describes no real recording).

    The partner is levelled to the clip's RMS, given a random gain within +/- ``gain_db``, and the sum is scaled
    back to about the clip's level. Active only in training; ``draw`` and ``apply`` are separate so a test can
    replay a draw.
    """

    def __init__(self, p: float = 0.5, gain_db: float = 6.0):
        super().__init__()
        self.p, self.gain_db = p, gain_db

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(which clips get a partner, the partner of each clip, each partner's gain in dB)."""
        picked = np.random.rand(n) < self.p
        partner = (np.arange(n) + np.random.randint(1, max(n, 2))) % n  # one shift per batch: never itself
        return picked, partner, np.random.uniform(-self.gain_db, self.gain_db, n)

    @staticmethod
    def apply(wave: torch.Tensor, target: torch.Tensor, picked: np.ndarray, partner: np.ndarray,
              gain_db: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(partner).to(wave.device)
        rms = wave.float().pow(2).mean(-1).sqrt().clamp_min(1e-8)
        rel = torch.from_numpy(10 ** (gain_db / 20)).to(wave.device, torch.float32)
        scale = rms / rms[idx] * rel
        mixed = (wave + (scale[:, None] * wave[idx]).to(wave.dtype)) / torch.sqrt(1 + rel**2)[:, None].to(wave.dtype)
        sel = torch.from_numpy(picked).to(wave.device)
        wave = torch.where(sel[:, None], mixed, wave)
        target = torch.where(sel[:, None], torch.maximum(target, target[idx]), target)
        return wave, target

    def forward(self, wave: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training or self.p <= 0 or len(wave) < 2:
            return wave, target
        return self.apply(wave, target, *self.draw(len(wave)))
