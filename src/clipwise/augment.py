"""Training-time augmentation of waveforms and normalised spectrograms.

Random choices are drawn separately from the deterministic apply, so the same masks can be replayed in tests.
Mixup and cutmix come from timm (``timm.data.Mixup``); SpecAugment is here because it works on
(bins, frames) rather than on images.
"""

from __future__ import annotations

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
