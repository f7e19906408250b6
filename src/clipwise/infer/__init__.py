"""Inference with trained models."""

from clipwise.infer.predictor import Predictor, find_audio

__all__ = ["Predictor", "find_audio"]
