"""The whole pipeline from waveform to logits as one ``nn.Module``.

``AudioClassifier`` = frontend (log-mel / MFCC) -> per-bin normalisation -> backbone -> logits. It carries its
input config (sample rate, clip length, frontend parameters, label names), so a checkpoint is all that
serving code needs: ``AudioClassifier.load(path)`` rebuilds it from a clipwise checkpoint.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipwise.errors import RunError, UnsafeFileError
from clipwise.frontends import BinNorm, build_frontend, n_frames
from clipwise.models.registry import create_backbone


def load_checkpoint(path: str | Path, *, map_location: str = "cpu") -> dict:
    """Read a checkpoint or weights file with ``torch.load(weights_only=True)``: tensors, numbers, strings and
    containers of them; a file that needs any other object (a pickled payload) is refused, never run.

    Raises:
        RunError: the file is missing or not a torch file (e.g. truncated).
        UnsafeFileError: the file holds objects that only code could rebuild.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # not what torch.save writes at all: damaged or foreign
            raise RunError(f"cannot read checkpoint {path}: the file is damaged or not a checkpoint; use another "
                           "checkpoint of the run or retrain") from None
        raise UnsafeFileError(
            f"{path} is not a clipwise checkpoint: it holds objects other than weights and plain data "
            f"({str(e).splitlines()[0][:200]}), and clipwise never runs code from a file it reads. Use a checkpoint "
            "that clipwise wrote (`clipwise train`), or retrain") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file means the same thing to the user
        raise RunError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:200]}): the file is damaged "
                       "or not a checkpoint; use another checkpoint of the run or retrain") from None
    if not isinstance(ckpt, dict):
        raise RunError(f"{path} is not a clipwise checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


#: the output activations a task names (:attr:`clipwise.task.Task.activation`), in torch
ACTIVATIONS = {"softmax": lambda logits: torch.softmax(logits, dim=-1), "sigmoid": torch.sigmoid}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a classifier (saved in every checkpoint)."""

    labels: list[str]
    sample_rate: int
    clip_seconds: float
    frontend: dict[str, Any]
    model: dict[str, Any]
    task: str = "multiclass"  # the run's task (clipwise.task): which activation turns logits into probabilities
    pad_mode: str = "zeros"
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**d)


class AudioClassifier(nn.Module):
    """Waveform ``(batch, samples)`` at ``spec.sample_rate`` -> logits ``(batch, classes)``.

    ``spectrogram`` and ``forward_spec`` split the pipeline so training can augment (SpecAugment, mixup) the
    normalised spectrogram in between; ``forward`` runs both and is what inference and export use.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        fe = dict(spec.frontend)
        self.frontend = build_frontend(sample_rate=spec.sample_rate, **fe)
        self.norm = BinNorm(self.frontend.n_bins, enabled=fe.get("normalize", True))
        frames = n_frames(spec.clip_samples, self.frontend.hop_length)
        m = dict(spec.model)
        self.backbone = create_backbone(
            m["name"],
            num_classes=len(spec.labels),
            input_size=(self.frontend.n_bins, frames),
            dropout=m.get("dropout", 0.0),
            pretrained=m.get("pretrained", False) and not m.get("_weights_loaded", False),
            **m.get("params", {}),
        )

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def input_size(self) -> tuple[int, int]:
        """(bins, frames) of one clip's spectrogram."""
        return self.frontend.n_bins, n_frames(self.spec.clip_samples, self.frontend.hop_length)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Un-normalised frontend output ``(batch, bins, frames)``."""
        return self.frontend(wave)

    def spectrogram(self, wave: torch.Tensor, mel_augment: Callable | None = None) -> torch.Tensor:
        """Normalised spectrogram ``(batch, 1, bins, frames)``, the backbone's input.

        ``mel_augment`` (training only) transforms the log-mel in dB before the frontend's last step (the DCT of
        MFCCs) and the normalisation, where warps and equalisation act on the spectrum as a microphone would.
        """
        if mel_augment is None:
            feats = self.frontend(wave)
        else:
            feats = self.frontend.from_log_mel(mel_augment(self.frontend.log_mel(wave)))
        return self.norm(feats).unsqueeze(1)

    @property
    def supports_lengths(self) -> bool:
        """Whether the backbone masks padded frames of variable-length batches (the sequence families do)."""
        return bool(getattr(self.backbone, "supports_lengths", False))

    def forward_spec(self, spec: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from a normalised spectrogram; ``lengths``: valid frames per example (backbones that support
        masks; for the others the whole padded input is seen)."""
        if lengths is not None and self.supports_lengths:
            return self.backbone(spec, lengths=lengths)
        return self.backbone(spec)

    def frames_for(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames the frontend makes from clips of ``samples`` samples (centred STFT)."""
        return 1 + torch.div(samples, self.frontend.hop_length, rounding_mode="floor")

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for a waveform batch; ``lengths`` (samples) marks where each zero-padded clip ends."""
        frames = None if lengths is None else self.frames_for(lengths)
        return self.forward_spec(self.spectrogram(wave), frames)

    def output_layer(self) -> nn.Linear | nn.Conv2d | None:
        """The layer that produces the logits: the backbone's ``get_classifier()`` (timm), else its ``head``,
        else the last linear or 1x1-convolution layer with one output per class (None when there is none)."""
        n = len(self.labels)

        def fits(m: Any) -> bool:
            return ((isinstance(m, nn.Linear) and m.out_features == n)
                    or (isinstance(m, nn.Conv2d) and m.out_channels == n and m.kernel_size == (1, 1))) \
                and m.bias is not None

        for candidate in (getattr(self.backbone, "get_classifier", lambda: None)(),
                          getattr(self.backbone, "head", None)):
            found = [m for m in candidate.modules() if fits(m)] if isinstance(candidate, nn.Module) else []
            if found:
                return found[-1]
        found = [m for m in self.backbone.modules() if fits(m)]
        return found[-1] if found else None

    def init_output_bias(self, bias: torch.Tensor) -> bool:
        """Set the logits' bias (e.g. at the label prior, so a multi-label model starts at each class's base
        rate instead of p = 0.5); returns False when no output layer with a bias is found."""
        layer = self.output_layer()
        if layer is None:
            return False
        with torch.no_grad():
            layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
        return True

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- checkpoints -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, map_location: str = "cpu") -> AudioClassifier:
        """Rebuild a classifier from a clipwise checkpoint (Lightning ``.ckpt`` or a plain ``.pt`` bundle).

        Raises:
            RunError: the file is missing or not a clipwise checkpoint.
        """
        ckpt = load_checkpoint(path, map_location=map_location)
        spec_dict = (ckpt.get("hyper_parameters") or {}).get("spec") or ckpt.get("spec")
        if spec_dict is None:
            raise RunError(f"{path} is not a clipwise checkpoint (no model spec inside)")
        spec = ModelSpec.from_dict(spec_dict)
        spec.model = {**spec.model, "_weights_loaded": True}
        model = cls(spec)
        state = ckpt["state_dict"]
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")} or state
        model.load_state_dict(state)
        model.eval()
        return model

    def save(self, path: str | Path) -> None:
        """Save a plain bundle (spec + weights) that :meth:`load` reads without Lightning."""
        spec = self.spec.to_dict()
        spec["model"] = {k: v for k, v in spec["model"].items() if not k.startswith("_")}
        torch.save({"spec": spec, "state_dict": self.state_dict()}, path)
