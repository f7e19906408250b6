"""Fixtures for the data-layer tests: tiny seeded audio written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _sine(freq_hz: float = 440.0, *, sample_rate: int = 16000, duration_seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sample_rate * duration_seconds))) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[np.argmax(spectrum)])


@pytest.fixture
def sine():
    """sine(freq_hz=440, *, sample_rate=16000, duration_seconds=0.5) -> float32 sine at half scale."""
    return _sine


@pytest.fixture
def peak_hz():
    """peak_hz(x, sample_rate) -> frequency of the strongest FFT bin."""
    return _peak_hz


@pytest.fixture
def write_audio(tmp_path: Path):
    """write_audio(name, x, sample_rate=16000, **sf_kwargs) -> path of a file written under tmp_path."""

    def write(name: str, x: np.ndarray, sample_rate: int = 16000, **kwargs) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, sample_rate, **kwargs)
        return path

    return write


@pytest.fixture
def tone_file(write_audio) -> Path:
    """A 0.5 s, 440 Hz, 16 kHz mono WAV."""
    return write_audio("tone.wav", _sine())
