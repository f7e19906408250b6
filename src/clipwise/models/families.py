"""The built-in model families beyond the default CNN, each with a table of size variants.

Every family maps ``(batch, 1, bins, frames)`` to logits and accepts ``lengths`` (valid frames per example) for
variable-length batches: padded frames are masked out of pooling, recurrence and attention, so a clip scores the
same whatever it was padded to.

- ``lightcnn``: depthwise-separable CNN for edge devices (the default variant is < 250 k parameters);
- ``seresnet``: residual blocks with squeeze-excitation and attention pooling over time ("advanced");
- ``mbconv``: inverted-residual (MBConv) network in the EfficientNet style ("efficient");
- ``crnn``: CNN front, bidirectional GRU over time, attention pooling;
- ``frame_transformer``: transformer encoder over (2x subsampled) spectrogram frames;
- ``ast``: an AST-style vision transformer on log-mel patches (position embeddings resized to any length).

``clipwise models`` lists every variant with its parameter count for a 64 x 501 input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clipwise.models.layers import (
    AttentionPool,
    Head,
    SqueezeExcite,
    conv_bn,
    downsampled_lengths,
    frame_mask,
    masked_max,
    masked_mean,
    sinusoidal_positions,
)
from clipwise.models.registry import register_family


class _MaskedCNN(nn.Module):
    """Shared end of the CNN families: mean over frequency, then masked mean + max (or attention) over time."""

    supports_lengths = True
    time_stride = 1

    def __init__(self, channels: int, num_classes: int, dropout: float, attention: bool = False):
        super().__init__()
        self.attention = AttentionPool(channels) if attention else None
        self.head = Head(channels, num_classes, dropout)
        self.num_features = channels

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - defined by each family
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        y = self.features(x).mean(dim=2)  # (batch, channels, frames')
        mask = frame_mask(downsampled_lengths(lengths, self.time_stride), y.shape[-1], device=y.device)
        if mask is not None and lengths is not None:
            mask[:, 0] = True  # a clip shorter than one output frame still has that frame
        pooled = self.attention(y, mask) if self.attention is not None else masked_mean(y, mask) + masked_max(y, mask)
        return self.head(pooled)


# -- lightweight depthwise-separable CNN ------------------------------------------------------------------------
class _SeparableBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.dw = conv_bn(c_in, c_in, 3, stride=stride, groups=c_in)
        self.pw = conv_bn(c_in, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return self.act(y + x if self.residual else y)


class LightCNN(_MaskedCNN):
    """Depthwise-separable stages (stride 2, then a residual layer), stem stride 2."""

    def __init__(self, *, num_classes: int, dropout: float, widths: tuple[int, ...]):
        super().__init__(widths[-1], num_classes, dropout)
        layers: list[nn.Module] = [conv_bn(1, widths[0], 3, stride=2)]
        c = widths[0]
        for w in widths:
            layers += [_SeparableBlock(c, w, 2), _SeparableBlock(w, w, 1)]
            c = w
        self.body = nn.Sequential(*layers)
        self.time_stride = 2 ** (1 + len(widths))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_family("lightcnn", family="built-in CNN", default="small",
                 description="depthwise-separable CNN for edge devices",
                 variants={"tiny": {"widths": (16, 32, 64, 128)}, "small": {"widths": (32, 64, 128, 256)},
                           "base": {"widths": (48, 96, 192, 384)}})
def lightcnn(*, num_classes: int, input_size: tuple[int, int], dropout: float = 0.1,
             widths: tuple[int, ...] = (32, 64, 128, 256)) -> LightCNN:
    return LightCNN(num_classes=num_classes, dropout=dropout, widths=tuple(widths))


# -- SE-ResNet with attention pooling ---------------------------------------------------------------------------
class _SEBasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 3, stride=stride)
        self.conv2 = conv_bn(c_out, c_out, 3, act=False)
        self.se = SqueezeExcite(c_out)
        self.skip = (conv_bn(c_in, c_out, 1, stride=stride, act=False) if stride != 1 or c_in != c_out
                     else nn.Identity())
        nn.init.zeros_(self.conv2[1].weight)  # start as the identity: stable from-scratch training
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.se(self.conv2(self.conv1(x))) + self.skip(x))


class SEResNet(_MaskedCNN):
    def __init__(self, *, num_classes: int, dropout: float, widths: tuple[int, ...], depth: int):
        super().__init__(widths[-1], num_classes, dropout, attention=True)
        layers: list[nn.Module] = [conv_bn(1, widths[0], 3, stride=1)]
        c = widths[0]
        for w in widths:
            layers.append(_SEBasicBlock(c, w, 2))
            layers += [_SEBasicBlock(w, w, 1) for _ in range(depth - 1)]
            c = w
        self.body = nn.Sequential(*layers)
        self.time_stride = 2 ** len(widths)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_family("seresnet", family="built-in CNN", default="small",
                 description="SE-ResNet with attention pooling over time (advanced)",
                 variants={"small": {"widths": (32, 64, 128, 256), "depth": 1},
                           "base": {"widths": (48, 96, 192, 384), "depth": 2}})
def seresnet(*, num_classes: int, input_size: tuple[int, int], dropout: float = 0.2,
             widths: tuple[int, ...] = (32, 64, 128, 256), depth: int = 1) -> SEResNet:
    return SEResNet(num_classes=num_classes, dropout=dropout, widths=tuple(widths), depth=depth)


# -- MBConv ----------------------------------------------------------------------------------------------------
class _MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, expand: int, stride: int):
        super().__init__()
        mid = c_in * expand
        self.expand = conv_bn(c_in, mid, 1) if expand != 1 else nn.Identity()
        self.dw = conv_bn(mid, mid, 3, stride=stride, groups=mid)
        self.se = SqueezeExcite(mid, reduction=4 * expand)
        self.project = conv_bn(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return y + x if self.residual else y


_MB_STAGES = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 40, 2, 2), (4, 80, 3, 2), (4, 112, 2, 1))  # expand, width, n, stride


class MBConvNet(_MaskedCNN):
    def __init__(self, *, num_classes: int, dropout: float, width: float, head_width: int):
        def w(c: int) -> int:
            return max(8, int(round(c * width / 8)) * 8)

        super().__init__(w(head_width), num_classes, dropout)
        layers: list[nn.Module] = [conv_bn(1, w(24), 3, stride=2)]
        c, stride_total = w(24), 2
        for expand, width_c, n, stride in _MB_STAGES:
            for i in range(n):
                layers.append(_MBConv(c, w(width_c), expand, stride if i == 0 else 1))
                c = w(width_c)
            stride_total *= stride
        layers.append(conv_bn(c, w(head_width), 1))
        self.body = nn.Sequential(*layers)
        self.time_stride = stride_total

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_family("mbconv", family="built-in CNN", default="small",
                 description="MBConv (inverted residual + SE) network, EfficientNet-style (efficient)",
                 variants={"tiny": {"width": 0.5, "head_width": 320}, "small": {"width": 1.0, "head_width": 480},
                           "base": {"width": 1.5, "head_width": 640}})
def mbconv(*, num_classes: int, input_size: tuple[int, int], dropout: float = 0.2, width: float = 1.0,
           head_width: int = 480) -> MBConvNet:
    return MBConvNet(num_classes=num_classes, dropout=dropout, width=width, head_width=head_width)


# -- CRNN ------------------------------------------------------------------------------------------------------
class CRNN(nn.Module):
    """Conv blocks (frequency pooled by 16, time by 4), a bidirectional GRU over time, attention pooling."""

    supports_lengths = True
    time_stride = 4

    def __init__(self, *, num_classes: int, bins: int, dropout: float, channels: tuple[int, ...], hidden: int):
        super().__init__()
        pools = [(2, 2), (2, 2), (2, 1), (2, 1)][: len(channels)]
        layers: list[nn.Module] = []
        c, f = 1, bins
        for width, pool in zip(channels, pools):
            layers += [conv_bn(c, width, 3), conv_bn(width, width, 3)]
            pf = pool[0] if f >= 2 else 1
            layers.append(nn.AvgPool2d((pf, pool[1])))
            c, f = width, f // pf
        self.conv = nn.Sequential(*layers)
        self.time_stride = math.prod(p[1] for p in pools)
        self.proj = nn.Linear(c * f, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.pool = AttentionPool(2 * hidden)
        self.head = Head(2 * hidden, num_classes, dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x)  # (batch, channels, bins', frames')
        b, c, f, t = y.shape
        y = self.proj(y.permute(0, 3, 1, 2).reshape(b, t, c * f))
        steps = downsampled_lengths(lengths, self.time_stride)
        if steps is not None:
            steps = steps.clamp(max=t)
            packed = nn.utils.rnn.pack_padded_sequence(y, steps.cpu(), batch_first=True, enforce_sorted=False)
            y, _ = self.gru(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=t)
        else:
            y, _ = self.gru(y)
        mask = frame_mask(steps, t, device=y.device)
        return self.head(self.pool(y.transpose(1, 2), mask))


@register_family("crnn", family="built-in RNN", default="small", description="CNN front + BiGRU over time",
                 variants={"small": {"channels": (32, 64, 96, 128), "hidden": 128},
                           "base": {"channels": (48, 96, 128, 192), "hidden": 192}})
def crnn(*, num_classes: int, input_size: tuple[int, int], dropout: float = 0.2,
         channels: tuple[int, ...] = (32, 64, 96, 128), hidden: int = 128) -> CRNN:
    return CRNN(num_classes=num_classes, bins=input_size[0], dropout=dropout, channels=tuple(channels), hidden=hidden)


# -- transformers ----------------------------------------------------------------------------------------------
def _encoder(dim: int, depth: int, heads: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class FrameTransformer(nn.Module):
    """Each frame's spectrum is a token: a strided 1-D convolution (time / 2) embeds them, fixed sinusoidal
    positions (any length) are added, a pre-norm transformer encoder mixes them, a masked mean pools."""

    supports_lengths = True
    exact_lengths = True  # padding beyond a clip's length cannot change its output
    time_stride = 2

    def __init__(self, *, num_classes: int, bins: int, dropout: float, dim: int, depth: int, heads: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Conv1d(bins, dim, 3, stride=2, padding=1), nn.GELU())
        self.encoder = _encoder(dim, depth, heads, 0.1)
        self.norm = nn.LayerNorm(dim)
        self.head = Head(dim, num_classes, dropout)
        self.dim = dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        y = self.embed(x.squeeze(1)).transpose(1, 2)  # (batch, tokens, dim)
        y = y + sinusoidal_positions(y.shape[1], self.dim).to(y)
        mask = frame_mask(downsampled_lengths(lengths, 2), y.shape[1], device=y.device)
        y = self.norm(self.encoder(y, src_key_padding_mask=None if mask is None else ~mask))
        return self.head(masked_mean(y.transpose(1, 2), mask))


@register_family("frame_transformer", family="built-in transformer", default="small",
                 description="transformer encoder over spectrogram frames",
                 variants={"tiny": {"dim": 128, "depth": 2, "heads": 4}, "small": {"dim": 192, "depth": 4, "heads": 4},
                           "base": {"dim": 256, "depth": 6, "heads": 8}})
def frame_transformer(*, num_classes: int, input_size: tuple[int, int], dropout: float = 0.1, dim: int = 192,
                      depth: int = 4, heads: int = 4) -> FrameTransformer:
    return FrameTransformer(num_classes=num_classes, bins=input_size[0], dropout=dropout, dim=dim, depth=depth,
                            heads=heads)


class AST(nn.Module):
    """Audio Spectrogram Transformer style ViT (Gong et al., 2021) on log-mel patches.

    Patches of ``patch`` x ``patch`` cells (stride ``stride``: AST overlaps them with 10; the CPU default does
    not) are embedded by a convolution; a class token and learned position embeddings for the configured
    (bins, frames) grid are added. A shorter input uses the first time positions; a longer one gets them
    stretched (bilinear). ``lengths`` masks the patch columns past each clip's end.
    """

    supports_lengths = True
    exact_lengths = True

    def __init__(self, *, num_classes: int, input_size: tuple[int, int], dropout: float, dim: int, depth: int,
                 heads: int, patch: int, stride: int):
        super().__init__()
        self.patch, self.stride = patch, stride
        self.embed = nn.Conv2d(1, dim, patch, stride=stride)
        self.grid = self._grid(input_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, dim, *self.grid) * 0.02)
        self.encoder = _encoder(dim, depth, heads, 0.1)
        self.norm = nn.LayerNorm(dim)
        self.head = Head(dim, num_classes, dropout)
        self.time_stride = stride

    def _grid(self, size: tuple[int, int]) -> tuple[int, int]:
        return tuple(max(1, (max(s, self.patch) - self.patch) // self.stride + 1) for s in size)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[2] < self.patch or x.shape[3] < self.patch:  # shorter than one patch: pad with the mean (0)
            x = nn.functional.pad(x, (0, max(0, self.patch - x.shape[3]), 0, max(0, self.patch - x.shape[2])))
        y = self.embed(x)  # (batch, dim, grid_f, grid_t)
        pos = self.pos
        if pos.shape[2] != y.shape[2]:  # another number of bins: resize along frequency
            pos = nn.functional.interpolate(pos, size=(y.shape[2], pos.shape[3]), mode="bilinear", align_corners=False)
        if y.shape[3] <= pos.shape[3]:  # shorter: the first positions, so a clip means the same in any batch
            pos = pos[:, :, :, : y.shape[3]]
        else:  # longer than trained: stretch the time positions over it
            pos = nn.functional.interpolate(pos, size=y.shape[2:], mode="bilinear", align_corners=False)
        y = (y + pos).flatten(2).transpose(1, 2)  # (batch, grid_f * grid_t, dim), time fastest
        gf, gt = pos.shape[2], pos.shape[3]
        key_mask = None
        if lengths is not None:
            starts = torch.arange(gt, device=y.device) * self.stride
            columns = starts[None, :] < lengths.to(y.device)[:, None]
            columns[:, 0] = True
            key_mask = torch.cat([torch.ones(len(y), 1, dtype=torch.bool, device=y.device),
                                  columns[:, None, :].expand(-1, gf, -1).reshape(len(y), -1)], dim=1)
        y = torch.cat([self.cls.expand(len(y), -1, -1), y], dim=1)
        y = self.norm(self.encoder(y, src_key_padding_mask=None if key_mask is None else ~key_mask))
        return self.head(y[:, 0])


@register_family("ast", family="built-in transformer", default="tiny",
                 description="AST-style ViT on log-mel patches",
                 variants={"tiny": {"dim": 192, "depth": 4, "heads": 3}, "small": {"dim": 256, "depth": 6, "heads": 4}})
def ast(*, num_classes: int, input_size: tuple[int, int], dropout: float = 0.1, dim: int = 192, depth: int = 4,
        heads: int = 3, patch: int = 16, stride: int = 16) -> AST:
    return AST(num_classes=num_classes, input_size=input_size, dropout=dropout, dim=dim, depth=depth, heads=heads,
               patch=patch, stride=stride)
