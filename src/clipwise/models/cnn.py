"""The compact built-in audio CNN, clipwise's default on CPU.

A VGG/ResNet-style stack of 3x3 convolution blocks over the (bins, frames) plane, each block halving both axes,
followed by the pooling that works well for sound events: mean over frequency, then mean + max over time
(as in PANNs). Residual blocks with batch norm train stably from scratch at high learning rates.
"""

from __future__ import annotations

import torch
from torch import nn

from clipwise.models.registry import register_family


class _Block(nn.Module):
    """Two 3x3 conv-BN-ReLU layers with a residual path, then 2x2 average pooling."""

    def __init__(self, c_in: int, c_out: int, *, pool: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)) if c_in != c_out else nn.Identity()
        self.pool = nn.AvgPool2d(pool) if pool != (1, 1) else nn.Identity()
        nn.init.zeros_(self.bn2.weight)  # each block starts as (almost) the identity: stable from-scratch training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.pool(torch.relu(y + self.skip(x)))


class AudioCNN(nn.Module):
    """Compact residual CNN on log-mel spectrograms.

    Args:
        num_classes: output logits.
        input_size: (bins, frames); only used to decide how far frequency can be pooled.
        dropout: before the classifier.
        channels: width of each block; the stem has ``channels[0]``.
        stem_stride: stride of the stem convolution over (bins, frames); 2 quarters the cost of the first block.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_size: tuple[int, int] = (64, 101),
        dropout: float = 0.2,
        channels: tuple[int, ...] = (32, 64, 128, 256),
        stem_stride: int = 2,
    ):
        super().__init__()
        self.num_classes = num_classes
        c0 = channels[0]
        self.stem = nn.Sequential(
            nn.Conv2d(1, c0, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True)
        )
        bins = max(1, input_size[0] // stem_stride)
        blocks = []
        c_in = c0
        for i, c in enumerate(channels):
            pool_f = 2 if bins >= 2 else 1
            last = i == len(channels) - 1
            blocks.append(_Block(c_in, c, pool=(1, 1) if last else (pool_f, 2)))
            bins //= 1 if last else pool_f
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.num_features = c_in
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=2)  # over frequency -> (batch, channels, frames)
        x = x.mean(dim=2) + x.amax(dim=2)
        return self.head(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_family("audiocnn", family="built-in CNN", default="base",
                 description="compact residual CNN, the CPU default",
                 variants={"small": {"channels": (16, 32, 64, 128)}, "base": {"channels": (32, 64, 128, 256)}})
def audiocnn(
    *,
    num_classes: int,
    input_size: tuple[int, int],
    dropout: float = 0.2,
    channels: tuple[int, ...] = (32, 64, 128, 256),
    stem_stride: int = 2,
) -> AudioCNN:
    # explicit keywords (not **params): create_backbone checks model.params against this signature
    return AudioCNN(
        num_classes=num_classes,
        input_size=input_size,
        dropout=dropout,
        channels=tuple(channels),
        stem_stride=stem_stride,
    )
