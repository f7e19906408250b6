from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from clipwise.data.audio import (
    AudioInfo,
    audio_info,
    fix_length,
    frame_windows,
    is_silent,
    load_audio,
    window_starts,
)
from clipwise.errors import AudioError, ConfigError

FORMATS = {"wav": {}, "flac": {}, "ogg": {"format": "OGG", "subtype": "VORBIS"}, "mp3": {"format": "MP3"}}


# --- decoding -------------------------------------------------------------------------------------------


def test_audio_info_reads_the_header(write_audio, sine):
    stereo = np.stack([sine(sample_rate=8000), sine(sample_rate=8000)], axis=1)
    path = write_audio("stereo.wav", stereo, 8000)
    assert audio_info(path) == AudioInfo(sample_rate=8000, frames=4000, channels=2, duration_seconds=0.5)


@pytest.mark.parametrize("ext", list(FORMATS))
def test_load_audio_decodes_each_format(ext, tmp_path, sine, peak_hz):
    x = sine(1000.0)
    path = tmp_path / f"tone.{ext}"
    try:
        sf.write(path, x, 16000, **FORMATS[ext])
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as err:
        pytest.skip(f"this libsndfile cannot write {ext}: {err}")
    y = load_audio(path, sample_rate=16000)
    assert y.dtype == np.float32 and y.ndim == 1
    if ext in ("wav", "flac"):  # lossless: the samples come back (to PCM16 precision)
        np.testing.assert_allclose(y, x, atol=1e-4)
    else:  # lossy codecs may add encoder delay or padding
        assert abs(len(y) - len(x)) < 0.1 * len(x)
        assert peak_hz(y, 16000) == pytest.approx(1000.0, abs=40)


def test_load_audio_mixes_stereo_down_by_mean(write_audio, sine):
    left, right = sine(440.0), sine(660.0)
    path = write_audio("stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, sample_rate=16000), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize(("sr_in", "sr_out"), [(16000, 8000), (8000, 22050), (44100, 16000)])
def test_resampling_changes_length_and_keeps_frequency(sr_in, sr_out, write_audio, sine, peak_hz):
    path = write_audio("tone.wav", sine(1000.0, sample_rate=sr_in), sr_in)
    y = load_audio(path, sample_rate=sr_out)
    assert len(y) == round(0.5 * sr_out)
    assert peak_hz(y, sr_out) == pytest.approx(1000.0, abs=3)


def test_load_audio_reads_only_the_segment(write_audio):
    ramp = np.linspace(-0.9, 0.9, 16000, dtype=np.float32)
    path = write_audio("ramp.wav", ramp, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, sample_rate=16000, start_seconds=0.25, end_seconds=0.5),
                                  ramp[4000:8000])
    np.testing.assert_array_equal(load_audio(path, sample_rate=16000, start_seconds=0.75), ramp[12000:])
    np.testing.assert_array_equal(load_audio(path, sample_rate=16000, end_seconds=0.1), ramp[:1600])
    # NaN is how a manifest's empty start/end cell arrives: the file's start / end
    np.testing.assert_array_equal(load_audio(path, sample_rate=16000, start_seconds=float("nan"), end_seconds=0.1),
                                  ramp[:1600])


def test_segment_end_slightly_past_the_file_is_clamped(tone_file):
    assert len(load_audio(tone_file, sample_rate=16000, start_seconds=0.4, end_seconds=0.52)) == 1600


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [(0.6, None, "outside"), (0.1, 0.9, "outside"), (0.3, 0.2, "start < end"), (-0.1, 0.2, "start < end")],
)
def test_segment_out_of_range_is_an_audio_error(tone_file, start, end, message):
    with pytest.raises(AudioError, match=message) as err:
        load_audio(tone_file, sample_rate=16000, start_seconds=start, end_seconds=end)
    assert str(tone_file) in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.wav"
    for call in (lambda: load_audio(missing, sample_rate=16000), lambda: audio_info(missing)):
        with pytest.raises(AudioError, match="file not found") as err:
            call()
        assert str(missing) in str(err.value) and err.value.path == str(missing)
        assert "relative to the manifest's folder" in str(err.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        audio_info(tmp_path)


def test_empty_file_is_an_audio_error(write_audio):
    path = write_audio("empty.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="empty") as err:
        load_audio(path, sample_rate=16000)
    assert str(path) in str(err.value)


def test_corrupt_file_is_an_audio_error(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    with pytest.raises(AudioError, match="cannot decode") as err:
        load_audio(path, sample_rate=16000)
    assert str(path) in str(err.value) and "supported: wav, flac" in str(err.value)


@pytest.mark.parametrize("sample_rate", [0, -8000, 16000.0, None])
def test_load_audio_rejects_bad_sample_rates(tone_file, sample_rate):
    with pytest.raises(ConfigError, match="sample_rate"):
        load_audio(tone_file, sample_rate=sample_rate)


# --- pad / crop -----------------------------------------------------------------------------------------

X = np.arange(1, 11, dtype=np.float32)  # 10 samples, none zero


def test_crop_start_and_center():
    np.testing.assert_array_equal(fix_length(X, 4, crop="start"), X[:4])
    np.testing.assert_array_equal(fix_length(X, 4, crop="center"), X[3:7])


def test_random_crop_is_a_contiguous_slice_and_varies():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(30):
        y = fix_length(X, 4, crop="random", rng=rng)
        start = int(y[0]) - 1
        np.testing.assert_array_equal(y, X[start : start + 4])
        starts.add(start)
    assert starts == set(range(7))  # every offset of a 4-sample window in 10 samples, over 30 draws


def test_random_crop_is_reproducible_with_a_seed():
    a = fix_length(X, 4, rng=np.random.default_rng(5))
    b = fix_length(X, 4, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_zero_padding_placement():
    y = fix_length(X[:3], 7, pad_mode="zeros", crop="start")
    np.testing.assert_array_equal(y, [1, 2, 3, 0, 0, 0, 0])
    y = fix_length(X[:3], 7, pad_mode="zeros", crop="center")
    np.testing.assert_array_equal(y, [0, 0, 1, 2, 3, 0, 0])
    rng = np.random.default_rng(1)
    offsets = set()
    for _ in range(30):
        y = fix_length(X[:3], 7, pad_mode="zeros", crop="random", rng=rng)
        offset = int(np.flatnonzero(y)[0])
        np.testing.assert_array_equal(y[offset : offset + 3], X[:3])
        assert np.count_nonzero(y) == 3
        offsets.add(offset)
    assert offsets == set(range(5))


def test_wrap_padding_tiles_the_signal():
    np.testing.assert_array_equal(fix_length(X[:3], 8, pad_mode="wrap", crop="start"), [1, 2, 3, 1, 2, 3, 1, 2])


def test_reflect_padding_repeats_when_the_target_is_much_longer():
    y = fix_length(X[:3], 11, pad_mode="reflect", crop="start")
    np.testing.assert_array_equal(y, [1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3])
    np.testing.assert_array_equal(fix_length(X[:1], 4, pad_mode="reflect"), [1, 1, 1, 1])


def test_padding_an_empty_signal_gives_zeros():
    np.testing.assert_array_equal(fix_length(np.zeros(0), 3, pad_mode="wrap"), [0, 0, 0])


def test_fix_length_returns_a_copy_of_the_right_type():
    y = fix_length(X, 10)
    y[0] = -1
    assert X[0] == 1 and y.dtype == np.float32


@pytest.mark.parametrize(("kwargs", "name"), [({"pad_mode": "edge"}, "pad_mode"), ({"crop": "end"}, "crop")])
def test_unknown_modes_name_the_parameter_and_the_choices(kwargs, name):
    with pytest.raises(ConfigError, match=name) as err:
        fix_length(X, 4, **kwargs)
    assert "'zeros'" in str(err.value) or "'center'" in str(err.value)


def test_fix_length_rejects_bad_input():
    with pytest.raises(ConfigError, match="n_samples"):
        fix_length(X, 0)
    with pytest.raises(ConfigError, match="1-D"):
        fix_length(np.zeros((2, 5)), 4)


# --- windows ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "window", "hop", "expected"),
    [(10, 4, 2, [0, 2, 4, 6]), (11, 4, 2, [0, 2, 4, 6, 7]), (4, 4, 1, [0]), (3, 4, 2, [0]), (0, 4, 4, [0])],
)
def test_window_starts(total, window, hop, expected):
    assert window_starts(total, window, hop) == expected


@pytest.mark.parametrize(("n", "window", "hop"), [(1000, 160, 80), (1001, 160, 160), (997, 100, 33)])
def test_frame_windows_cover_every_sample(n, window, hop):
    x = np.arange(n, dtype=np.float32)
    windows = frame_windows(x, window_samples=window, hop_samples=hop)
    assert windows.shape[1] == window
    assert windows[-1, -1] == n - 1  # the last window ends at the end
    np.testing.assert_array_equal(np.unique(windows), x)


def test_a_short_signal_gives_one_padded_window():
    windows = frame_windows(X[:3], window_samples=5, hop_samples=2, pad_mode="wrap")
    np.testing.assert_array_equal(windows, [[1, 2, 3, 1, 2]])


def test_hop_longer_than_window_is_rejected():
    with pytest.raises(ConfigError, match="hop_samples"):
        window_starts(100, 10, 20)


# --- silence --------------------------------------------------------------------------------------------


def test_is_silent():
    assert is_silent(np.zeros(100))
    assert is_silent(np.zeros(0))
    assert is_silent(np.full(100, 10 ** (-70 / 20)))
    assert not is_silent(np.full(100, 10 ** (-50 / 20)))
    assert is_silent(np.full(100, 10 ** (-50 / 20)), threshold_db=-40.0)
    assert not is_silent(np.r_[np.zeros(99), -0.5])
