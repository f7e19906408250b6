from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clipwise.data import synth
from clipwise.data.manifest import read_manifest
from clipwise.data.splits import assign_splits
from clipwise.data.synth import SYNTH_CLASSES, make_synthetic_dataset, synth_clip
from clipwise.errors import ConfigError

REQUIRED = {"tone", "chirp_up", "chirp_down", "white_noise", "pink_noise", "brown_noise", "click_train",
            "am_tone", "fm_tone"}  # fmt: skip


@pytest.mark.parametrize("kind", SYNTH_CLASSES)
@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_every_class_gives_finite_audio_of_the_right_length_and_level(kind, sample_rate):
    x = synth_clip(kind, sample_rate=sample_rate, duration_seconds=0.3, rng=np.random.default_rng(0))
    assert x.dtype == np.float32 and x.shape == (round(0.3 * sample_rate),)
    assert np.isfinite(x).all()
    peak_db = 20 * np.log10(np.max(np.abs(x)))
    assert -20.1 < peak_db < -2.9


def test_the_required_classes_exist():
    assert REQUIRED <= set(SYNTH_CLASSES)


def test_clips_are_reproducible_and_vary_with_the_seed():
    def clip(seed):
        return synth_clip("tone", sample_rate=16000, duration_seconds=0.2, rng=np.random.default_rng(seed))

    np.testing.assert_array_equal(clip(1), clip(1))
    assert not np.allclose(clip(1), clip(2))


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="unknown synthetic class 'sine'.*tone"):
        synth_clip("sine", sample_rate=16000, duration_seconds=1.0, rng=rng)
    with pytest.raises(ConfigError, match="duration_seconds"):
        synth_clip("tone", sample_rate=16000, duration_seconds=0, rng=rng)
    with pytest.raises(ConfigError, match="at least 8000 Hz"):
        synth_clip("tone", sample_rate=4000, duration_seconds=1.0, rng=rng)


def features(x: np.ndarray, sample_rate: int) -> list[float]:
    """Hand-made features: spectral flatness, slope and peakiness, pitch trend and spread, envelope
    variation, crest factor."""
    frame = 256
    frames = x[: len(x) // frame * frame].reshape(-1, frame) * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    freqs = np.fft.rfftfreq(frame, 1 / sample_rate)[1:]
    rms = np.sqrt(power.mean(axis=1))
    active = power[rms > 0.1 * rms.max(), 1:]
    spectrum = active.mean(axis=0)
    flatness = np.exp(np.mean(np.log(spectrum))) / np.mean(spectrum)
    slope = np.polyfit(np.log(freqs), np.log(spectrum), 1)[0]
    pitch = np.log(freqs[np.argmax(active, axis=1)])
    trend = np.corrcoef(np.arange(len(pitch)), pitch)[0, 1] if pitch.std() > 0 else 0.0
    envelope = rms[rms > 0.1 * rms.max()]
    crest = np.max(np.abs(x)) / np.sqrt(np.mean(x**2))
    return [np.log(flatness), slope, np.log(spectrum.max() / np.median(spectrum)), trend, pitch.std(),
            pitch.mean(), envelope.std() / envelope.mean(), np.log(crest)]  # fmt: skip


def test_classes_are_distinguishable_by_simple_features():
    rng = np.random.default_rng(0)
    X, y = [], []
    for kind in SYNTH_CLASSES:
        for _ in range(16):
            X.append(features(synth_clip(kind, sample_rate=16000, duration_seconds=0.5, rng=rng), 16000))
            y.append(kind)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = cross_val_score(model, np.array(X), y, cv=4).mean()
    assert accuracy > 0.9


def small_dataset(out_dir, **kwargs):
    options = dict(n_per_class=5, classes=["tone", "white_noise", "click_train"], duration_seconds=0.25, seed=1)
    return make_synthetic_dataset(out_dir, **{**options, **kwargs})


def test_make_synthetic_dataset_writes_audio_and_a_readable_manifest(tmp_path):
    manifest = small_dataset(tmp_path)
    assert manifest == tmp_path / "manifest.csv"
    on_disk = pd.read_csv(manifest)
    assert on_disk["path"].iloc[0] == "audio/tone/tone_000.wav"  # relative to the manifest
    df = read_manifest(manifest)
    assert len(df) == 15 and sorted(df["label"].unique()) == ["click_train", "tone", "white_noise"]
    info = sf.info(df["path"].iloc[0])
    assert (info.samplerate, info.frames, info.subtype) == (16000, 4000, "PCM_16")
    # clips 2k and 2k+1 share a recording; the odd one out has its own
    tone = df[df["label"] == "tone"].sort_values("path")
    assert list(tone["group"].str[-3:]) == ["000", "000", "001", "001", "002"]
    assert df.groupby("group")["split"].nunique().max() == 1
    assert set(df["split"]) == {"train", "val", "test"}


def test_clips_of_one_recording_are_alike(tmp_path, peak_hz):
    """The pair in a group is cut from one source, so the two tones of a group share their pitch."""
    df = read_manifest(small_dataset(tmp_path, classes=["tone"], n_per_class=8))
    pitch = {p: peak_hz(sf.read(p)[0], 16000) for p in df["path"]}
    pairs = df.groupby("group")["path"].apply(list)
    assert all(pitch[a] == pytest.approx(pitch[b], abs=8) for a, b in pairs)
    assert len({round(pitch[a] / 20) for a, _ in pairs}) == len(pairs)  # and differs between recordings


def test_tiny_datasets_still_fill_every_split(tmp_path):
    df = read_manifest(small_dataset(tmp_path, n_per_class=4, classes=["tone", "white_noise"]))
    assert set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("group")["split"].nunique().max() == 1


def test_duration_jitter_varies_lengths_within_bounds(tmp_path):
    df = read_manifest(small_dataset(tmp_path, duration_jitter=0.2, splits=None))
    frames = np.array([sf.info(p).frames for p in df["path"]])
    assert frames.min() >= 0.8 * 4000 and frames.max() <= 1.2 * 4000 and len(set(frames)) > 5
    assert "split" not in df
    assert set(assign_splits(df)["split"]) == {"train", "val", "test"}  # the groups make a split possible


def test_rerun_with_the_same_arguments_reuses_the_files(tmp_path, monkeypatch):
    manifest = small_dataset(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}

    def no_writes(*args, **kwargs):
        raise AssertionError("a re-run wrote audio")

    monkeypatch.setattr(synth.sf, "write", no_writes)
    assert small_dataset(tmp_path) == manifest
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    with pytest.raises(AssertionError, match="wrote audio"):  # other arguments make a new dataset
        small_dataset(tmp_path, seed=2)


def test_a_missing_file_triggers_regeneration(tmp_path):
    manifest = small_dataset(tmp_path)
    victim = tmp_path / pd.read_csv(manifest)["path"].iloc[3]
    victim.unlink()
    small_dataset(tmp_path)
    assert victim.is_file()


def test_the_same_seed_gives_the_same_audio_whatever_the_other_classes(tmp_path):
    a = read_manifest(small_dataset(tmp_path / "a", classes=["tone"]))
    b = read_manifest(small_dataset(tmp_path / "b", classes=["white_noise", "tone"]))
    b = b[b["label"] == "tone"]
    for pa, pb in zip(sorted(a["path"]), sorted(b["path"])):
        np.testing.assert_array_equal(sf.read(pa)[0], sf.read(pb)[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"classes": ["tone", "tone"]}, "distinct"), ({"n_per_class": 0}, "n_per_class"),
     ({"duration_jitter": 1.0}, "duration_jitter"), ({"splits": (0.5, 0.5, 0.5)}, "splits")],
)  # fmt: skip
def test_make_synthetic_dataset_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        small_dataset(tmp_path, **kwargs)
