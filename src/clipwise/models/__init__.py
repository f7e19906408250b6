"""Models: the registry, the waveform-to-logits classifier and the built-in families."""

from clipwise.models import cnn as _cnn  # noqa: F401  (registers the built-in CNNs)
from clipwise.models import families as _families  # noqa: F401  (registers the other built-in families)
from clipwise.models.classifier import AudioClassifier, ModelSpec
from clipwise.models.registry import (
    MODELS,
    create_backbone,
    is_known_model,
    list_models,
    register_family,
    register_model,
)

__all__ = ["AudioClassifier", "ModelSpec", "MODELS", "create_backbone", "is_known_model", "list_models", "register_family",
           "register_model"]
