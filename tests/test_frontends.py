"""Frontends against librosa (the reference they promise to match) and the per-bin normalisation.

Tolerance: the log-mel must match librosa (computed in float64) to within ``TOL_DB`` = 1e-3 dB on every cell
whose reference power is above -80 dB and within 70 dB of the clip's peak; the measured worst case is
reported in the assertion message (about 3e-4 dB on the real clips, 8e-4 dB on a zero-padded FFT). Deeper
under the peak, float32 rounding of the STFT and of the window dominates (measured ~3e-3 dB at 80 dB and
~1e-2 dB at 100 dB under the peak of a pure chirp), which says nothing about the frontend's correctness.
MFCCs mix every band of a frame, so they are compared everywhere with ``TOL_MFCC``.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from clipwise.errors import ConfigError, RegistryError
from clipwise.frontends import FRONTENDS, MFCC, BinNorm, LogMel, build_frontend, n_frames, stft_sizes

TOL_DB = 1e-3
TOL_MFCC = 2e-3
FLOOR_DB = -80.0
BELOW_PEAK_DB = 70.0


def _reference_db(x: np.ndarray, sample_rate: int, fe: LogMel, *, n_mels: int, f_min: float, f_max: float):
    """librosa's log-mel with the frontend's STFT sizes, computed in float64."""
    power = librosa.feature.melspectrogram(
        y=x.astype(np.float64),
        sr=sample_rate,
        n_fft=fe.n_fft,
        hop_length=fe.hop_length,
        win_length=fe.win_length,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=n_mels,
        fmin=f_min,
        fmax=f_max,
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


def _chirp(sample_rate: int, *, duration_seconds: float = 0.5, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    x = 0.5 * librosa.chirp(fmin=50.0, fmax=0.45 * sample_rate, sr=sample_rate, duration=duration_seconds)
    x = x + noise * np.random.default_rng(seed).standard_normal(len(x))
    return x.astype(np.float32)


def _real_clip(root: Path) -> tuple[np.ndarray, int]:
    """The loudest second of the first file of a shared dataset (``shared_dataset(name, "audio/*.flac")``), at
    its stored rate."""
    files = sorted((root / "audio").glob("*.flac"))
    x, sample_rate = sf.read(files[0], dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if len(x) > sample_rate:
        cumulative = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
        start = int(np.argmax(cumulative[sample_rate:] - cumulative[:-sample_rate]))
        x = x[start : start + sample_rate]
    return np.ascontiguousarray(x), sample_rate


def _assert_logmel_matches_librosa(x: np.ndarray, sample_rate: int, **params) -> None:
    n_mels, f_min = params.get("n_mels", 40), params.get("f_min", 20.0)
    f_max = params.get("f_max") or sample_rate / 2
    fe = LogMel(sample_rate=sample_rate, n_mels=n_mels, **{k: v for k, v in params.items() if k != "n_mels"})
    ours = fe(torch.from_numpy(x)[None])[0].double().numpy()
    ref = _reference_db(x, sample_rate, fe, n_mels=n_mels, f_min=f_min, f_max=f_max)
    assert ours.shape == ref.shape == (n_mels, n_frames(len(x), fe.hop_length))
    compared = ref > max(FLOOR_DB, ref.max() - BELOW_PEAK_DB)
    assert compared.mean() > 0.15, f"only {compared.mean():.0%} of the cells are above the floor: a vacuous test"
    worst = float(np.abs(ours - ref)[compared].max())
    assert worst <= TOL_DB, f"log-mel differs from librosa by {worst:.2e} dB (tolerance {TOL_DB:g} dB)"


# --- log-mel against librosa ----------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["esc50_16k", "fsdd"])
def test_logmel_matches_librosa_on_real_audio(dataset, shared_dataset):
    x, sample_rate = _real_clip(shared_dataset(dataset, "audio/*.flac"))
    _assert_logmel_matches_librosa(x, sample_rate, n_mels=40)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100])
def test_logmel_matches_librosa_on_a_chirp(sample_rate):
    _assert_logmel_matches_librosa(_chirp(sample_rate), sample_rate, n_mels=40)


def test_logmel_matches_librosa_with_explicit_band_and_fft():
    _assert_logmel_matches_librosa(_chirp(16000), 16000, n_mels=32, f_min=100.0, f_max=6000.0, n_fft=1024)


def test_logmel_matches_librosa_when_the_fft_is_zero_padded_beyond_the_window():
    # 10 ms at 8 kHz = 80 samples; 128 mel bands force the automatic FFT size past the 128 of the window
    fe = LogMel(sample_rate=8000, n_mels=128, win_ms=10.0, hop_ms=5.0)
    assert fe.n_fft > 128 > fe.win_length
    _assert_logmel_matches_librosa(_chirp(8000, noise=1e-3), 8000, n_mels=128, win_ms=10.0, hop_ms=5.0)


@pytest.mark.filterwarnings("ignore:n_fft=.*is too large for input signal")
def test_frames_count_for_odd_lengths_equals_librosa():
    fe = LogMel(sample_rate=16000, n_mels=32)
    for n in (1, 159, 160, 161, 8001):
        x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        frames = fe(torch.from_numpy(x)[None]).shape[-1]
        ref = _reference_db(x, 16000, fe, n_mels=32, f_min=20.0, f_max=8000.0)
        assert frames == ref.shape[1] == n_frames(n, fe.hop_length)


def test_silence_sits_at_the_amin_floor():
    out = LogMel(sample_rate=16000, n_mels=32)(torch.zeros(2, 1600))
    assert torch.allclose(out, torch.full_like(out, -100.0))


def test_batch_items_are_independent():
    fe = LogMel(sample_rate=16000, n_mels=32)
    a, b = torch.from_numpy(_chirp(16000)), torch.from_numpy(_chirp(16000, noise=0.1, seed=3))
    both = fe(torch.stack([a, b]))
    torch.testing.assert_close(both[0], fe(a[None])[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(both[1], fe(b[None])[0], atol=1e-4, rtol=0)


# --- MFCC -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["esc50_16k", "fsdd", "chirp"])
def test_mfcc_matches_librosa(source, shared_dataset):
    x, sample_rate = ((_chirp(16000, noise=1e-3), 16000) if source == "chirp"
                      else _real_clip(shared_dataset(source, "audio/*.flac")))
    fe = MFCC(sample_rate=sample_rate, n_mels=40, n_mfcc=13)
    ours = fe(torch.from_numpy(x)[None])[0].double().numpy()
    ref_db = _reference_db(x, sample_rate, fe.logmel, n_mels=40, f_min=20.0, f_max=sample_rate / 2)
    ref = librosa.feature.mfcc(S=ref_db, n_mfcc=13, dct_type=2, norm="ortho")
    assert ours.shape == ref.shape == (13, n_frames(len(x), fe.hop_length))
    worst = float(np.abs(ours - ref).max())
    assert worst <= TOL_MFCC, f"MFCC differs from librosa by {worst:.2e} (tolerance {TOL_MFCC:g})"


def test_mfcc_cannot_keep_more_coefficients_than_bands():
    with pytest.raises(ConfigError, match="n_mfcc=40 exceeds frontend.n_mels=32"):
        MFCC(sample_rate=16000, n_mels=32, n_mfcc=40)


# --- sizes and validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample_rate", "expected"), [(8000, (200, 80, 256)), (16000, (400, 160, 512)), (44100, (1102, 441, 2048))]
)
def test_stft_sizes_from_milliseconds(sample_rate, expected):
    assert stft_sizes(sample_rate=sample_rate, win_ms=25.0, hop_ms=10.0, n_fft=None) == expected
    fe = LogMel(sample_rate=sample_rate, n_mels=40)
    assert (fe.win_length, fe.hop_length, fe.n_fft) == expected


def test_explicit_fft_shorter_than_the_window_raises():
    with pytest.raises(ConfigError, match="n_fft=256 is shorter than the window"):
        stft_sizes(sample_rate=16000, win_ms=25.0, hop_ms=10.0, n_fft=256)


@pytest.mark.parametrize(
    ("sample_rate", "n_mels", "win_ms"), [(8000, 64, 5.0), (8000, 128, 10.0), (16000, 128, 10.0), (16000, 256, 25.0)]
)
def test_automatic_fft_size_leaves_no_empty_mel_filter(sample_rate, n_mels, win_ms):
    _, _, window_fft = stft_sizes(sample_rate=sample_rate, win_ms=win_ms, hop_ms=win_ms / 2, n_fft=None)
    with pytest.warns(UserWarning, match="[Ee]mpty filters"):  # the window-sized FFT really is too coarse
        librosa.filters.mel(sr=sample_rate, n_fft=window_fft, n_mels=n_mels, fmin=20.0, fmax=sample_rate / 2)
    fe = LogMel(sample_rate=sample_rate, n_mels=n_mels, win_ms=win_ms, hop_ms=win_ms / 2)
    assert fe.n_fft > window_fft
    assert bool((fe.mel_fb.amax(dim=1) > 0).all())
    out = fe(torch.from_numpy(_chirp(sample_rate, duration_seconds=0.2, noise=0.01)))[None]
    assert torch.isfinite(out).all() and bool((out > -100.0).all()), "a band stayed at the floor"


@pytest.mark.parametrize(
    ("f_min", "f_max"), [(4000.0, 2000.0), (100.0, 100.0), (20.0, 9000.0), (-1.0, None), (8000.0, None)]
)
def test_invalid_band_raises(f_min, f_max):
    with pytest.raises(ConfigError, match="band .* is invalid for sample_rate=16000"):
        LogMel(sample_rate=16000, n_mels=32, f_min=f_min, f_max=f_max)


def test_build_frontend_takes_the_whole_frontend_config():
    from clipwise.config import FrontendConfig

    cfg = FrontendConfig(name="mfcc", n_mels=32, n_mfcc=20, normalize=False).model_dump()
    fe = build_frontend(sample_rate=8000, **cfg)
    assert isinstance(fe, MFCC) and fe.n_bins == 20 and fe.logmel.n_bins == 32
    cfg = FrontendConfig(name="logmel", n_mels=48).model_dump()
    fe = build_frontend(sample_rate=8000, **cfg)
    assert isinstance(fe, LogMel) and fe.n_bins == 48
    assert FRONTENDS.names() == ["logmel", "logmel_mfcc", "mfcc"]
    with pytest.raises(RegistryError, match="unknown frontend 'logmle'.*Did you mean 'logmel'"):
        build_frontend(name="logmle", sample_rate=8000)


# --- BinNorm --------------------------------------------------------------------------------------------


def test_binnorm_fit_standardises_each_bin_of_the_fitted_data():
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 10.0, 0.1, 3.0])[None, :, None]
    shift = torch.tensor([-100.0, 5.0, 0.0, 40.0])[None, :, None]
    batches = [torch.randn(3, 4, 7, generator=g) * scale + shift for _ in range(3)]
    norm = BinNorm(4)
    assert not bool(norm.fitted)
    norm.fit(iter(batches))  # any iterable, consumed once
    assert bool(norm.fitted)
    out = norm(torch.cat(batches)).double()
    torch.testing.assert_close(out.mean(dim=(0, 2)), torch.zeros(4, dtype=torch.float64), atol=1e-5, rtol=0)
    std = out.std(dim=(0, 2), unbiased=False)
    torch.testing.assert_close(std, torch.ones(4, dtype=torch.float64), atol=1e-4, rtol=0)


def test_binnorm_keeps_min_std_for_constant_bins():
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    x[:, 1, :] = -100.0  # a band that never sees energy
    norm = BinNorm(3, min_std=0.5)
    norm.fit([x])
    assert norm.std[1].item() == 0.5
    assert norm.mean[1].item() == pytest.approx(-100.0)
    out = norm(x)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, 1, :], torch.zeros(2, 5))


def test_binnorm_refuses_empty_data():
    with pytest.raises(ValueError, match="no data"):
        BinNorm(3).fit([])


def test_binnorm_statistics_travel_with_the_state_dict():
    norm = BinNorm(3)
    norm.fit([torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2)) * 5 + 1])
    fresh = BinNorm(3)
    fresh.load_state_dict(norm.state_dict())
    assert bool(fresh.fitted)
    assert torch.equal(fresh.mean, norm.mean) and torch.equal(fresh.std, norm.std)


def test_normalize_false_is_identity_even_after_fitting():
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3)) * 7 - 20
    norm = BinNorm(3, enabled=False)
    norm.fit([x])  # statistics are learned but must not be applied
    assert torch.equal(norm(x), x)
    enabled = BinNorm(3)
    enabled.fit([x])
    assert not torch.allclose(enabled(x), x)
