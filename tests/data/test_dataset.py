"""Torch datasets: the decoded-audio store, training crops, scoring windows and their aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from clipwise.data.audio import window_starts
from clipwise.task import get_task
from clipwise.data.dataset import (
    AudioStore,
    TrainDataset,
    WindowDataset,
    aggregate_windows,
    collate_windows,
)

SR = 8000


def _ramp(n: int) -> np.ndarray:
    """Strictly increasing samples, so any crop tells where it came from."""
    return (np.arange(n, dtype=np.float32) + 1) / (n + 1)


def _store(*lengths: int) -> AudioStore:
    waves = [_ramp(n) for n in lengths]
    return AudioStore([f"clip{i}.wav" for i in range(len(waves))], waves, SR)


def _offset_in(crop: np.ndarray, wave: np.ndarray) -> int:
    """Where ``crop`` starts in ``wave`` (it must be an exact slice)."""
    start = int(np.flatnonzero(wave == crop[0])[0])
    np.testing.assert_array_equal(crop, wave[start : start + len(crop)])
    return start


# --- AudioStore -----------------------------------------------------------------------------------------


def test_store_load_honours_start_and_end(write_audio):
    x = _ramp(SR)  # 1 s
    path = write_audio("ramp.wav", x, SR, subtype="FLOAT")
    df = pd.DataFrame(
        {"path": [str(path)] * 4, "start": [0.25, np.nan, 0.5, None], "end": [0.5, 0.125, np.nan, None]}
    )
    store = AudioStore.load(df, sample_rate=SR)
    np.testing.assert_array_equal(store.waves[0], x[2000:4000])
    np.testing.assert_array_equal(store.waves[1], x[:1000])  # NaN start = the beginning
    np.testing.assert_array_equal(store.waves[2], x[4000:])  # NaN end = the end
    np.testing.assert_array_equal(store.waves[3], x)
    np.testing.assert_allclose(store.durations(), [0.25, 0.125, 0.5, 1.0])
    assert store.paths == [str(path)] * 4 and store.sample_rate == SR


def test_store_load_without_segment_columns_resamples_and_flags_silence(write_audio, sine):
    loud = write_audio("loud.wav", sine(sample_rate=16000, duration_seconds=0.5), 16000)
    quiet = write_audio("quiet.wav", np.zeros(4000, dtype=np.float32), 16000)
    store = AudioStore.load(pd.DataFrame({"path": [str(loud), str(quiet)], "label": ["a", "b"]}), sample_rate=SR)
    assert [len(w) for w in store.waves] == [4000, 2000]
    assert all(w.dtype == np.float32 for w in store.waves)
    assert store.silent == [False, True]


# --- targets (the task's encoding) -------------------------------------------------------------------------------------


def test_encode_targets_single_label():
    df = pd.DataFrame({"label": ["rain", "dog", "rain", "siren"]})
    y = get_task("multiclass").encode(list(df["label"]), ["dog", "rain", "siren"])
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [1, 0, 1, 2])


def test_encode_targets_multi_label():
    df = pd.DataFrame({"label": ["rain;dog", "siren", " dog ; siren ;", "rain"]})
    y = get_task("multilabel").encode(list(df["label"]), ["dog", "rain", "siren"])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]])


# --- TrainDataset ---------------------------------------------------------------------------------------


def test_train_items_are_clip_samples_long_for_long_short_and_exact_clips():
    store = _store(3000, 500, 1000)
    ds = TrainDataset(store, np.array([0, 1, 2]), clip_samples=1000, seed=0)
    assert len(ds) == 3
    for i in range(3):
        x, y = ds[i]
        assert x.shape == (1000,) and x.dtype == torch.float32
        assert int(y) == i
    long_crop = ds[0][0].numpy()
    assert 0 <= _offset_in(long_crop, store.waves[0]) <= 2000
    short = ds[1][0].numpy()  # zero-padded around the untouched clip
    nonzero = np.flatnonzero(short)
    assert len(nonzero) == 500
    np.testing.assert_array_equal(short[nonzero], store.waves[1])
    np.testing.assert_array_equal(ds[2][0].numpy(), store.waves[2])


def test_train_crops_are_reproducible_for_seed_epoch_and_index():
    store = _store(*[4000] * 4)
    targets = np.zeros(4, dtype=np.int64)
    a = TrainDataset(store, targets, clip_samples=500, gain_db=6.0, seed=3)
    b = TrainDataset(store, targets, clip_samples=500, gain_db=6.0, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    for i in reversed(range(4)):  # order of access must not matter
        assert torch.equal(a[i][0], b[i][0])
    assert torch.equal(a[1][0], a[1][0])
    # the same audio at another index draws its own crop
    assert len({tuple(a[i][0].tolist()) for i in range(4)}) > 1


def test_train_crops_differ_across_epochs_and_seeds():
    store = _store(8000)
    ds = TrainDataset(store, np.zeros(1, dtype=np.int64), clip_samples=400, seed=0)
    offsets = []
    for epoch in range(5):
        ds.set_epoch(epoch)
        offsets.append(_offset_in(ds[0][0].numpy(), store.waves[0]))
    assert len(set(offsets)) == 5
    ds.set_epoch(0)
    other_seed = TrainDataset(store, np.zeros(1, dtype=np.int64), clip_samples=400, seed=1)
    assert not torch.equal(ds[0][0], other_seed[0][0])


def test_train_gain_is_within_its_range():
    store = _store(1000)
    ds = TrainDataset(store, np.zeros(1, dtype=np.int64), clip_samples=1000, gain_db=3.0, seed=0)
    for epoch in range(20):
        ds.set_epoch(epoch)
        ratio = ds[0][0].numpy() / store.waves[0]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
        assert abs(20 * np.log10(ratio[0])) <= 3.0 + 1e-4


@pytest.mark.parametrize("crop", ["center", "start"])
def test_train_deterministic_crops(crop):
    store = _store(1000)
    ds = TrainDataset(store, np.zeros(1, dtype=np.int64), clip_samples=400, crop=crop)
    expected = 300 if crop == "center" else 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert _offset_in(ds[0][0].numpy(), store.waves[0]) == expected


# --- WindowDataset, collate_windows, aggregate_windows --------------------------------------------------


def test_windows_cover_long_clips_end_to_end():
    store = _store(2300, 1000, 300)
    ds = WindowDataset(store, np.array([0, 1, 2]), clip_samples=1000, hop_samples=500)
    windows, target, index = ds[0]
    starts = window_starts(2300, 1000, 500)
    assert starts == [0, 500, 1000, 1300]
    assert windows.shape == (len(starts), 1000) and int(target) == 0 and index == 0
    covered = np.zeros(2300, dtype=bool)
    for w, s in zip(windows.numpy(), starts):
        assert _offset_in(w, store.waves[0]) == s
        covered[s : s + 1000] = True
    assert covered.all()
    assert ds[1][0].shape == (1, 1000)  # exactly one window
    short = ds[2][0]
    assert short.shape == (1, 1000)
    np.testing.assert_array_equal(short[0, :300].numpy(), store.waves[2])
    assert not short[0, 300:].any()


def test_windows_without_targets_carry_minus_one():
    ds = WindowDataset(_store(1000), None, clip_samples=500, hop_samples=250)
    assert int(ds[0][1]) == -1


def test_collate_windows_counts_and_stacks():
    store = _store(2300, 1000, 300, 1750)
    ds = WindowDataset(store, np.array([3, 1, 2, 0]), clip_samples=1000, hop_samples=500)
    windows, targets, counts, index = collate_windows([ds[i] for i in range(4)])
    expected_counts = [len(window_starts(n, 1000, 500)) for n in (2300, 1000, 300, 1750)]
    assert counts.tolist() == expected_counts == [4, 1, 1, 3]
    assert windows.shape == (sum(expected_counts), 1000)
    assert targets.tolist() == [3, 1, 2, 0]
    assert index.tolist() == [0, 1, 2, 3]
    assert torch.equal(windows[4], ds[1][0][0])  # clip 1's window follows clip 0's four


def test_aggregate_windows_is_the_per_clip_mean():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([4, 1, 3, 2])
    scores = torch.rand(int(counts.sum()), 5, generator=g, dtype=torch.float64)
    out = aggregate_windows(scores, counts)
    expected, start = [], 0
    for c in counts.tolist():
        expected.append(scores[start : start + c].mean(dim=0))
        start += c
    assert out.shape == (4, 5) and out.dtype == torch.float64
    torch.testing.assert_close(out, torch.stack(expected))


def test_windows_through_a_loader_aggregate_to_per_clip_means():
    lengths = (2300, 700, 1600, 1000, 4100)
    store = _store(*lengths)
    ds = WindowDataset(store, None, clip_samples=1000, hop_samples=400)
    loader = DataLoader(ds, batch_size=2, shuffle=False, collate_fn=collate_windows)
    per_clip = []
    for windows, _, counts, index in loader:
        scores = torch.stack([windows.mean(dim=1), windows.amax(dim=1)], dim=1)  # a stand-in "model"
        per_clip.append(aggregate_windows(scores, counts))
        assert len(index) == len(counts)
    got = torch.cat(per_clip)
    for i in range(len(lengths)):
        w = ds[i][0]
        manual = torch.tensor([w.mean(dim=1).mean().item(), w.amax(dim=1).mean().item()])
        torch.testing.assert_close(got[i], manual)
