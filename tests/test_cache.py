"""The per-clip disk cache: keys follow the file, entries are plain arrays, and nothing it reads can run code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from clipwise._cache import ClipCache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPWISE_CACHE", str(tmp_path / "cache"))
    return ClipCache("test", version=1, config={"n_mels": 64})


def test_entries_round_trip_and_keys_follow_the_file_segment_and_config(cache, tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"RIFF0000")
    key = cache.key(clip)
    cache.put(key, {"features": np.arange(3, dtype=np.float32), "sha1": "abc", "silent": True})
    got = cache.get(key)
    np.testing.assert_array_equal(got["features"], [0, 1, 2])
    assert str(got["sha1"]) == "abc" and bool(got["silent"])
    assert cache.key(clip, 0.0, 1.0) != key
    assert ClipCache("test", version=1, config={"n_mels": 32}).key(clip) != key
    assert ClipCache("test", version=2, config={"n_mels": 64}).key(clip) != key
    clip.write_bytes(b"RIFF00000")  # the file changed: its old entry is not found any more
    os.utime(clip, ns=(1, 1))
    assert cache.key(clip) != key and cache.get(cache.key(clip)) is None


def test_a_planted_pickle_never_runs_and_the_entry_is_recomputed(cache, tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"x")
    key = cache.key(clip)
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    path = cache._path(key)
    path.parent.mkdir(parents=True)
    np.savez(path, features=np.array([Payload()], dtype=object))  # an object array: needs pickle to load
    assert cache.get(key) is None and not ran.exists()
    path.write_bytes(pickle.dumps(Payload()))  # not even an npz
    assert cache.get(key) is None and not ran.exists()
    with pytest.raises(TypeError, match="plain arrays"):
        cache.put(key, {"features": np.array([None], dtype=object)})
