"""Model registry: built-in audio networks by name, and any timm model name as a spectrogram backbone.

A registered constructor takes ``num_classes``, ``input_size`` (bins, frames), ``dropout``, ``pretrained`` and
its own keyword parameters, and returns an ``nn.Module`` mapping ``(batch, 1, bins, frames)`` to logits.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from clipwise.errors import ConfigError, RegistryError
from clipwise.registry import Registry

MODELS: Registry = Registry("model", list_command="clipwise models")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    description: str
    variant: str | None = None  # the size variant of a family ("small"); None for single models
    base: str | None = None  # the family name a variant belongs to


_ENTRIES: dict[str, ModelEntry] = {}

# timm backbones that are tested on spectrograms and listed by `clipwise models`; any other timm name works too
TESTED_TIMM_MODELS = {
    "resnet18": "ResNet-18 (11 M params)",
    "resnet50": "ResNet-50 (23.5 M params)",
    "mobilenetv4_conv_small": "MobileNetV4 conv small (2.5 M params), fast on CPU",
    "efficientnet_b0": "EfficientNet-B0 (4 M params)",
    "tf_efficientnetv2_b0": "EfficientNetV2-B0 (5.9 M params)",
    "efficientnetv2_rw_s": "EfficientNetV2-S (22 M params)",
    "regnety_008": "RegNetY-800MF (5.5 M params)",
    "deit_tiny_patch16_224": "DeiT-Tiny ViT (5.4 M params); patch grid set from the spectrogram size",
    "convit_tiny": "ConViT-Tiny (5.4 M params); spectrogram resampled to a square patch grid",
    "swinv2_cr_tiny_ns_224": "Swin Transformer V2 tiny (27.6 M params)",
}


def _runs_at(model: nn.Module, size: tuple[int, int]) -> bool:
    import torch

    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, *size))
        return True
    except (RuntimeError, AssertionError):
        return False
    finally:
        model.train()


class _PadToGrid(nn.Module):
    """Pads a spectrogram (with 0, the normalised mean) up to the size a patch-based transformer was built for,
    so that inputs whose bins or frames are not a multiple of the patch size keep every frame."""

    def __init__(self, model: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.model, self.size = model, tuple(size)

    def forward(self, x):
        pad_f, pad_t = self.size[0] - x.shape[2], self.size[1] - x.shape[3]
        if pad_f > 0 or pad_t > 0:
            x = nn.functional.pad(x, (0, max(0, pad_t), 0, max(0, pad_f)))
        return self.model(x)

    def get_classifier(self):
        return self.model.get_classifier()


class _ResizeToGrid(_PadToGrid):
    """Resamples a spectrogram (bilinear and antialiased, so every frame of a shrunk axis counts) to the square
    size of a transformer that only works on a square patch grid (ConViT's gated positional attention).
    Zero-padding the short side instead would multiply the tokens, and attention's cost with their square:
    64 x 501 with 16 x 16 patches is 4 x 32 = 128 patches, padded to a square 32 x 32 = 1,024, resampled to
    12 x 12 = 144."""

    def forward(self, x):
        if tuple(x.shape[2:]) != self.size:
            x = nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.model(x)


def register_model(name: str, *, family: str, description: str) -> Callable:
    """Decorator registering a built-in model constructor under ``name``."""

    def wrap(fn: Callable) -> Callable:
        MODELS.register(name)(fn)
        _ENTRIES[name] = ModelEntry(name, family, description)
        return fn

    return wrap


def register_family(name: str, *, family: str, description: str, variants: dict[str, dict[str, Any]],
                    default: str) -> Callable:
    """Decorator registering a constructor once per size variant: ``name`` is the ``default`` variant and
    ``name_<variant>`` each of the others (all of them also as ``name_<default>``). A variant only presets
    keyword arguments, so ``model.params`` can still override any of them."""

    def wrap(fn: Callable) -> Callable:
        if default not in variants:
            raise ValueError(f"default variant {default!r} is not in {sorted(variants)}")
        for variant, preset in variants.items():
            made = functools.partial(fn, **preset)
            functools.update_wrapper(made, fn)
            del made.__wrapped__  # inspect.signature must see the partial's defaults, not fn's
            text = f"{description}, {variant}: " + ", ".join(f"{k}={v}" for k, v in preset.items())
            for key in ([name] if variant == default else []) + [f"{name}_{variant}"]:
                MODELS.register(key)(made)
                _ENTRIES[key] = ModelEntry(key, family, text, variant, name)
        return fn

    return wrap


def list_models() -> list[ModelEntry]:
    """Built-in networks, then the timm backbones clipwise tests (`clipwise models` adds the other kinds')."""
    timm_entries = [ModelEntry(n, "timm", d) for n, d in TESTED_TIMM_MODELS.items()]
    return [_ENTRIES[n] for n in MODELS.names()] + timm_entries


def _timm_backbone(
    name: str, *, num_classes: int, input_size: tuple[int, int], dropout: float, pretrained: bool, **params: Any
) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = dict(in_chans=1, num_classes=num_classes, drop_rate=dropout, **params)
    try:
        try:
            # transformers need the (non-square) spectrogram size to build their patch grid; CNNs reject it
            model = timm.create_model(name, img_size=tuple(input_size), **kwargs)
        except TypeError as e:
            if "img_size" not in str(e):
                raise
            return timm.create_model(name, pretrained=pretrained, **kwargs)  # a CNN: any input size
        size, wrap = tuple(input_size), None
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        if patch is not None:
            p = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
            grid = tuple(-(-s // q) * q for s, q in zip(input_size, p))
            if grid != size:  # the patch grid must cover the whole input: build for the padded size
                model, size, wrap = timm.create_model(name, img_size=grid, **kwargs), grid, _PadToGrid
            if not _runs_at(model, grid):
                # some transformers (ConViT's gated positional attention) only work on a square patch grid:
                # resample to the smallest square grid with at least as many patches (see _ResizeToGrid)
                side = math.ceil(math.sqrt((grid[0] // p[0]) * (grid[1] // p[1])))
                size, wrap = (side * p[0], side * p[1]), _ResizeToGrid
                model = timm.create_model(name, img_size=size, **kwargs)
        if pretrained:
            model = _pretrained_at_size(name, model, size, kwargs)
        return wrap(model, size) if wrap else model
    except TypeError as e:
        raise ConfigError(f"model.params {params} are not accepted by timm model {name!r}: {e}") from None
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise ConfigError(
            f"could not load pretrained weights for {name!r} ({e}). Without network access, download the "
            f"weights elsewhere and pass model.params.pretrained_cfg_overlay={{file: /path/to/weights}}, "
            f"or train from scratch (model.pretrained=false)."
        ) from None


def _pretrained_at_size(name: str, model: nn.Module, size: tuple[int, int], kwargs: dict[str, Any]) -> nn.Module:
    """``model`` (built for ``size``) with the pretrained weights. timm resizes position embeddings itself for
    most transformers; where it does not (ConViT), the weights are loaded at their own size and the absolute
    position embedding is resampled to the model's patch grid here."""
    import timm
    from timm.layers import resample_abs_pos_embed

    try:
        return timm.create_model(name, pretrained=True, img_size=size, **kwargs)
    except RuntimeError as e:
        if "size mismatch" not in str(e):
            raise
    ref = timm.create_model(name, pretrained=True, **kwargs)  # the weights at the size they were trained for
    own = model.state_dict()
    state = {}
    for key, value in ref.state_dict().items():
        if key in own and value.shape != own[key].shape:
            if "pos_embed" not in key or value.ndim != 3:
                raise RuntimeError(f"size mismatch for {key}: {tuple(value.shape)} in the weights, "
                                   f"{tuple(own[key].shape)} in the model")
            old, new = tuple(ref.patch_embed.grid_size), tuple(model.patch_embed.grid_size)
            value = resample_abs_pos_embed(value, new_size=list(new), old_size=list(old),
                                           num_prefix_tokens=value.shape[1] - old[0] * old[1])
        state[key] = value
    model.load_state_dict(state)
    return model


def is_known_model(name: str) -> bool:
    """Whether ``name`` is a registered network or a timm model."""
    import timm

    return name in MODELS or timm.is_model(name)


def create_backbone(
    name: str,
    *,
    num_classes: int,
    input_size: tuple[int, int],
    dropout: float = 0.0,
    pretrained: bool = False,
    **params: Any,
) -> nn.Module:
    """Create the network behind the frontend.

    Args:
        name: a registered model or any timm model name.
        num_classes: output logits.
        input_size: (bins, frames) of the spectrogram the model will see.
        dropout: dropout before the classifier.
        pretrained: load ImageNet weights (timm models only).
        **params: extra constructor arguments (``model.params`` in the config).

    Raises:
        RegistryError: unknown name.
        ConfigError: parameters the constructor does not accept.
    """
    if name in MODELS:
        fn = MODELS.get(name)
        if pretrained:
            raise ConfigError(f"model {name!r} is a built-in clipwise model without pretrained weights; "
                              "set model.pretrained=false")
        # a **kwargs catch-all is not a parameter name a user can set
        variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        accepted = {n for n, p in inspect.signature(fn).parameters.items() if p.kind not in variadic}
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ConfigError(
                f"model.params {unknown} not accepted by model {name!r}; it accepts "
                f"{sorted(accepted - {'num_classes', 'input_size', 'dropout'})}"
            )
        return fn(num_classes=num_classes, input_size=tuple(input_size), dropout=dropout, **params)
    import timm

    if timm.is_model(name):
        return _timm_backbone(
            name, num_classes=num_classes, input_size=input_size, dropout=dropout, pretrained=pretrained, **params
        )
    raise RegistryError(MODELS.unknown_message(name) + " Any timm model name (timm.list_models()) also works.")
