"""Long recordings: block decoding gives load_audio's samples, windows sit where window_starts puts them, a planted
event is found where it is, the event rules, the Audacity / Raven files, and `clipwise predict --timeline/--events`
on a run and on its bundle."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clipwise.data.audio import frame_windows, load_audio, window_starts
from clipwise.errors import AudioError, ConfigError
from clipwise.infer.events import Event, EventTracker, merge_events, resolve_thresholds, write_events
from clipwise.infer.longform import check_windowing, cut_windows, score_recording, stream_audio
from clipwise.infer.scoring import Scoring

SR = 16000
W = namedtuple("W", "start end probabilities")


class EnergyScorer(Scoring):
    """Cheap and exact: "loud" is a window's RMS / 0.1 (clipped to 1), "quiet" its complement."""

    labels = ["loud", "quiet"]
    sample_rate = SR

    def __init__(self):
        self.batches: list[int] = []

    def score_waves(self, waves):
        self.batches.append(len(waves))
        loud = np.clip([np.sqrt(np.mean(np.square(w, dtype=np.float64))) / 0.1 for w in waves], 0, 1)
        return np.stack([loud, 1 - loud], axis=1)


def _noise(seconds: float, *, rate: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    return (np.random.default_rng(seed).standard_normal(shape) * 0.001).astype(np.float32)


# -- decoding in blocks ------------------------------------------------------------------------------------------
def test_blocks_join_to_the_samples_load_audio_gives(tmp_path):
    mono = tmp_path / "mono.flac"
    sf.write(mono, _noise(10.3) * 100, SR)
    blocks = list(stream_audio(mono, sample_rate=SR, block_seconds=3))
    assert [len(b) for b in blocks] == [3 * SR] * 3 + [int(1.3 * SR)]
    np.testing.assert_array_equal(np.concatenate(blocks), load_audio(mono, sample_rate=SR))

    stereo = tmp_path / "stereo.wav"
    x = _noise(12.7, rate=44100, channels=2, seed=1) * 100
    x[:, 1] += 0.3 * np.sin(2 * np.pi * 1000 * np.arange(len(x)) / 44100)
    sf.write(stereo, x, 44100, subtype="FLOAT")
    streamed = np.concatenate(list(stream_audio(stereo, sample_rate=SR, block_seconds=2.5)))
    whole = load_audio(stereo, sample_rate=SR)
    # soxr's streamed resampler keeps its filter state across blocks: measured bit-identical to the one-shot call
    # (soxr 1.1, blocks of 0.5-30 s); the margin is for other soxr builds, far below what a model could notice
    assert len(streamed) == len(whole)
    assert np.abs(streamed - whole).max() <= 1e-6


def test_a_file_with_nan_samples_is_refused_naming_it(tmp_path):
    x = _noise(4)
    x[3 * SR] = np.nan
    path = tmp_path / "bad.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"bad\.wav holds NaN or infinite samples from 3\.000 s"):
        list(stream_audio(path, sample_rate=SR, block_seconds=2))


@pytest.mark.parametrize("n, size, hop", [(100, 10, 3), (100, 10, 10), (100, 10, 5), (7, 10, 5), (10, 10, 4),
                                          (31, 8, 1)])
def test_windows_cut_from_blocks_are_those_of_window_starts(n, size, hop):
    x = np.arange(n, dtype=np.float32)
    cuts = np.cumsum(np.random.default_rng(n + size).integers(1, 9, size=n))
    blocks = np.split(x, cuts[cuts < n])
    got = list(cut_windows(blocks, window_samples=size, hop_samples=hop))
    assert [s for s, _ in got] == window_starts(n, size, hop)
    if n >= size:
        np.testing.assert_array_equal(np.stack([w for _, w in got]), frame_windows(x, window_samples=size,
                                                                                   hop_samples=hop))
    else:  # shorter than a window: scored as it is, the scorer pads it
        np.testing.assert_array_equal(got[0][1], x)


# -- scoring a long recording ------------------------------------------------------------------------------------
def test_a_planted_tone_is_found_where_it_is_in_a_long_recording(tmp_path):
    x = _noise(90)
    t = np.arange(3 * SR) / SR
    x[40 * SR:43 * SR] += (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, x, SR)
    scorer = EnergyScorer()
    windows = list(score_recording(scorer, path, window_seconds=1, hop_seconds=0.5, block_seconds=7))
    assert len(windows) == len(window_starts(90 * SR, SR, SR // 2)) == 179
    assert max(scorer.batches) <= 64
    assert (windows[0].start, windows[0].end, windows[-1].end) == (0.0, 1.0, 90.0)
    events = merge_events(windows, scorer.labels, [0.5, 1.01])  # "quiet" can never reach 1.01
    # the windows 39.5-40.5 ... 42.5-43.5 hold some of the tone: within one hop of it on either side
    assert events == [Event(39.5, 43.5, "loud", 1.0, pytest.approx(np.mean([w.probabilities[0] for w in windows
                                                                            if 39.5 <= w.start <= 42.5])))]
    assert windows[80].label == "loud" and windows[0].label == "quiet"


def test_a_recording_shorter_than_one_window_is_one_window(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _noise(0.3), SR)
    [window] = score_recording(EnergyScorer(), path, window_seconds=1, hop_seconds=1)
    assert (window.start, window.end) == (0.0, 0.3)


@pytest.mark.parametrize("window, hop, flag", [(0, 1, "--window"), (1, 0, "--hop"), (1, 2, "--hop"),
                                               (float("nan"), 1, "--window")])
def test_bad_windowing_names_the_flag(window, hop, flag):
    with pytest.raises(ConfigError, match=f"^{flag} must be"):
        check_windowing(window, hop)


# -- the event rules ---------------------------------------------------------------------------------------------
def _windows(*scores, hop: float = 1.0, size: float = 1.0):
    return [W(i * hop, i * hop + size, np.atleast_1d(s)) for i, s in enumerate(scores)]


def test_consecutive_windows_above_the_threshold_are_one_event():
    events = merge_events(_windows(0.1, 0.6, 0.9, 0.2, 0.5), ["a"], [0.5])
    assert events == [Event(1.0, 3.0, "a", 0.9, pytest.approx(0.75)), Event(4.0, 5.0, "a", 0.5, 0.5)]


def test_events_within_the_gap_merge_and_short_ones_are_dropped_after():
    windows = _windows(0.9, 0.0, 0.7, 0.0, 0.0, 0.8)
    assert [(e.start, e.end) for e in merge_events(windows, ["a"], [0.5])] == [(0, 1), (2, 3), (5, 6)]
    merged = merge_events(windows, ["a"], [0.5], gap_seconds=1.0)
    assert merged == [Event(0.0, 3.0, "a", 0.9, pytest.approx(0.8)), Event(5.0, 6.0, "a", 0.8, 0.8)]
    # the merged 3 s event is kept, the lone 1 s one dropped: the minimum applies to merged events
    assert [(e.start, e.end) for e in merge_events(windows, ["a"], [0.5], gap_seconds=1.0,
                                                   min_duration_seconds=2.0)] == [(0, 3)]


def test_overlapping_windows_make_events_from_first_start_to_last_end():
    # windows of 2 s every 0.5 s: two runs one window apart overlap in time, so they merge even without a gap
    windows = _windows(0.9, 0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9, hop=0.5, size=2.0)
    assert [(e.start, e.end) for e in merge_events(windows, ["a"], [0.5])] == [(0.0, 3.5), (4.0, 6.0)]


def test_several_labels_each_with_its_threshold():
    windows = _windows([0.9, 0.3], [0.9, 0.35], [0.2, 0.35], [0.2, 0.1])
    events = merge_events(windows, ["dog", "rain"], [0.5, 0.3])
    assert events == [Event(0.0, 2.0, "dog", 0.9, 0.9), Event(0.0, 3.0, "rain", 0.35, pytest.approx(1 / 3))]


def test_an_event_open_at_the_end_is_closed_and_finished_events_come_out_early():
    tracker = EventTracker(["a"], [0.5], gap_seconds=1.0)
    out = [tracker.feed(w) for w in _windows(0.9, 0.1, 0.1, 0.1, 0.8, 0.9)]
    assert out[:3] == [[], [], []]  # the first event could still merge with one starting by 2 s
    assert out[3] == [Event(0.0, 1.0, "a", 0.9, 0.9)]  # a window starting at 3 s: past the gap
    assert tracker.close() == [Event(4.0, 6.0, "a", 0.9, pytest.approx(0.85))]
    assert tracker.close() == []


# -- thresholds --------------------------------------------------------------------------------------------------
def test_thresholds_from_a_flag_a_file_a_run_or_the_default(tmp_path):
    labels = ["dog", "rain"]
    assert resolve_thresholds(labels).tolist() == [0.5, 0.5]
    assert resolve_thresholds(labels, tuned=[0.2, 0.4]).tolist() == [0.2, 0.4]
    assert resolve_thresholds(labels, threshold=0.7, tuned=[0.2, 0.4]).tolist() == [0.7, 0.7]
    plain = tmp_path / "t.json"
    plain.write_text(json.dumps({"rain": 0.9}))
    assert resolve_thresholds(labels, path=plain).tolist() == [0.5, 0.9]
    run_file = tmp_path / "thresholds.json"  # as a multi-label run writes it
    run_file.write_text(json.dumps({"tuned_on": "val", "objective": "F1 per class",
                                    "thresholds": {"dog": 0.3, "rain": 0.6}}))
    assert resolve_thresholds(labels, path=run_file).tolist() == [0.3, 0.6]
    with pytest.raises(ConfigError, match="not both"):
        resolve_thresholds(labels, threshold=0.5, path=plain)
    plain.write_text(json.dumps({"cat": 0.5}))
    with pytest.raises(ConfigError, match=r"t\.json names 'cat', which is not a label"):
        resolve_thresholds(labels, path=plain)
    with pytest.raises(ConfigError, match="from 0 to 1"):
        resolve_thresholds(labels, threshold=1.5)


# -- event files -------------------------------------------------------------------------------------------------
EVENTS = [Event(1.5, 4.25, "dog bark", 0.9, 0.75), Event(10.0, 12.0, "rain", 0.61, 0.6)]


def test_an_audacity_label_track_and_a_raven_selection_table(tmp_path):
    write_events(EVENTS, tmp_path / "a.txt", fmt="audacity", sample_rate=SR)
    assert (tmp_path / "a.txt").read_text().splitlines() == ["1.500000\t4.250000\tdog bark",
                                                             "10.000000\t12.000000\train"]
    write_events(EVENTS, tmp_path / "r.txt", fmt="raven", sample_rate=SR)
    assert (tmp_path / "r.txt").read_text().splitlines() == [
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\t"
        "Max Score\tMean Score",
        "1\tSpectrogram 1\t1\t1.500000\t4.250000\t0\t8000\tdog bark\t0.900000\t0.750000",
        "2\tSpectrogram 1\t1\t10.000000\t12.000000\t0\t8000\train\t0.610000\t0.600000",
    ]
    write_events(EVENTS, tmp_path / "e.csv", fmt="csv", sample_rate=SR, files=["x.wav", "y.wav"])
    assert (tmp_path / "e.csv").read_text().splitlines() == [
        "file,start,end,label,max_score,mean_score", "x.wav,1.500000,4.250000,dog bark,0.900000,0.750000",
        "y.wav,10.000000,12.000000,rain,0.610000,0.600000"]
    with pytest.raises(ConfigError, match="describes one recording"):
        write_events(EVENTS, tmp_path / "r2.txt", fmt="raven", sample_rate=SR, files=["x.wav", "y.wav"])


# -- the command -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, make_tone, wav_writer) -> Path:
    x = np.concatenate([make_tone(f, duration_seconds=1.5, seed=i) for i, f in enumerate((300, 900, 2000, 600))])
    return wav_writer(tmp_path_factory.mktemp("long") / "long.wav", x)  # 6 s


@pytest.mark.slow
def test_predict_writes_a_timeline_and_events_the_same_on_the_run_and_its_bundle(two_epoch_run, long_wav, cli,
                                                                                  tmp_path):
    labels = json.loads((two_epoch_run / "labels.json").read_text())
    r = cli("predict", two_epoch_run, long_wav, "--window", 1, "--hop", 0.5, "--timeline", tmp_path / "t.csv",
            "--events", tmp_path / "e.csv", "--threshold", 0.3)
    assert r.rc == 0, r.err
    timeline = pd.read_csv(tmp_path / "t.csv")
    assert list(timeline.columns) == ["start", "end", *labels]
    assert len(timeline) == len(window_starts(6 * SR, SR, SR // 2)) == 11
    assert timeline["end"].iloc[-1] == 6.0 and "11 windows" in r.out
    events = pd.read_csv(tmp_path / "e.csv")
    assert list(events.columns) == ["start", "end", "label", "max_score", "mean_score"]
    assert set(events["label"]) <= set(labels) and (events["max_score"] >= 0.3).all()

    bundle = tmp_path / "model.bundle"
    assert cli("export", two_epoch_run, "--out", bundle).rc == 0
    r = cli("predict", bundle, long_wav, "--window", 1, "--hop", 0.5, "--timeline", tmp_path / "tb.csv")
    assert r.rc == 0, r.err
    from_bundle = pd.read_csv(tmp_path / "tb.csv")
    assert list(from_bundle.columns) == list(timeline.columns)
    assert np.abs(from_bundle[labels].to_numpy() - timeline[labels].to_numpy()).max() <= 1e-4

    from clipwise.runtime import load

    streamed = list(load(bundle).stream(long_wav, window=1, hop=0.5))
    assert len(streamed) == 11
    assert np.abs(np.stack([w.probabilities for w in streamed]) - timeline[labels].to_numpy()).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("extra, flag", [
    (["--window", "1", "--hop", "0"], "--hop"),
    (["--window", "1", "--hop", "2"], "--hop"),
    (["--window", "1", "--threshold", "0.5", "--thresholds", "t.json"], "--thresholds"),
    (["--timeline", "EXISTING"], "--timeline"),
])
def test_bad_long_recording_flags_are_one_line_errors(two_epoch_run, long_wav, cli, tmp_path, extra, flag):
    from test_bad_input import assert_flags_exist

    existing = tmp_path / "t.csv"
    existing.write_text("mine\n")
    r = cli("predict", two_epoch_run, long_wav, *[str(existing) if a == "EXISTING" else a for a in extra])
    assert r.rc == 2 and flag in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert_flags_exist("predict", r.err.strip())
    assert existing.read_text() == "mine\n"
