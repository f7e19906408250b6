"""Building blocks shared by the built-in model families: masks, masked pooling, squeeze-excitation.

Variable-length input: a batch is padded to its longest clip and ``lengths`` (valid frames per example) says
where each one ends. Every pooling here ignores the padded frames, so a clip's output does not depend on what
it was padded with or how long its batch-mates were.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def frame_mask(lengths: torch.Tensor | None, frames: int, *, device=None) -> torch.Tensor | None:
    """Boolean ``(batch, frames)``: True on valid frames; None when ``lengths`` is None."""
    if lengths is None:
        return None
    pos = torch.arange(frames, device=device if device is not None else lengths.device)
    return pos[None, :] < lengths.to(pos.device)[:, None]


def downsampled_lengths(lengths: torch.Tensor | None, factor: int) -> torch.Tensor | None:
    """Valid frames after a time reduction by ``factor`` (a partly valid output frame counts as valid)."""
    if lengths is None:
        return None
    return torch.div(lengths + factor - 1, factor, rounding_mode="floor").clamp(min=1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Mean over ``dim`` (the time axis of ``x``'s last dimension by default) of the valid frames."""
    if mask is None:
        return x.mean(dim=dim)
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(1)
    return (x * m).sum(dim=dim) / m.sum(dim=dim).clamp(min=1)


def masked_max(x: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    if mask is None:
        return x.amax(dim=dim)
    m = mask
    while m.dim() < x.dim():
        m = m.unsqueeze(1)
    return x.masked_fill(~m, torch.finfo(x.dtype).min).amax(dim=dim)


class AttentionPool(nn.Module):
    """Attention pooling over time (``(batch, channels, frames) -> (batch, channels)``): a small network scores
    each frame and the output is the softmax-weighted mean, so short events in long clips are not averaged
    away. Padded frames get zero weight."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(16, channels // 4)
        self.score = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, 1, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.score(x).squeeze(1)  # (batch, frames)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits.float(), dim=-1).to(x.dtype)
        return (x * weights[:, None, :]).sum(dim=-1)


class SqueezeExcite(nn.Module):
    """Channel re-weighting from a global summary (Hu et al., 2018)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position code of Vaswani et al. (2017): ``(n, dim)``; any length, no training."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(n, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int | tuple[int, int] = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class Head(nn.Module):
    """Dropout and the final linear layer."""

    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))
