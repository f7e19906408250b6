"""Property tests: whatever bytes a file holds and whatever a manifest's cells say, the decoder returns finite
audio or raises AudioError, and the manifest reader returns a manifest or raises a clipwise error; nothing else
(no other exception, no crash)."""

from __future__ import annotations

import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipwise.data.audio import audio_info, load_audio
from clipwise.data.manifest import read_manifest
from clipwise.errors import AudioError, ClipwiseError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        try:
            info = audio_info(path)
            x = load_audio(path, sample_rate=8000)
        except AudioError:
            return
        assert info.frames > 0 and x.ndim == 1 and x.dtype == np.float32 and np.isfinite(x).all()


@FAST
@given(st.binary(max_size=2048), st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".bin"]))
def test_random_bytes_decode_or_raise_audio_error(data, suffix):
    _decode(data, suffix)


def _wav_with(header_fields: tuple[int, int, int, int], payload: bytes) -> bytes:
    channels, rate, bits, data_size = header_fields
    block = max(1, channels * bits // 8)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_size) + payload)


@FAST
@given(st.tuples(st.integers(0, 9), st.integers(0, 200_000), st.sampled_from([0, 8, 12, 16, 24, 32, 64]),
                 st.integers(0, 2**32 - 1)), st.binary(max_size=1024))
def test_random_wav_headers_decode_or_raise_audio_error(header_fields, payload):
    _decode(_wav_with(header_fields, payload), ".wav")


@FAST
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=400))
def test_float_files_with_any_values_decode_to_finite_audio_or_raise(values):
    buf = io.BytesIO()
    sf.write(buf, np.array(values, dtype=np.float32), 8000, format="WAV", subtype="FLOAT")
    _decode(buf.getvalue(), ".wav")


CELLS = st.one_of(st.text(max_size=12), st.integers(-5, 5).map(str), st.floats(allow_nan=True).map(str),
                  st.sampled_from(["", "NA", "nan", "train", "val", "test", "0", "1.5", "-1", "a;b", "x.wav"]))


@FAST
@given(st.lists(st.sampled_from(["path", "label", "split", "fold", "group", "start", "end", "other"]),
                min_size=1, max_size=6, unique=True),
       st.lists(st.lists(CELLS, min_size=6, max_size=6), min_size=0, max_size=6))
def test_random_manifests_read_or_raise_a_clipwise_error(columns, rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.csv"
        pd.DataFrame([r[: len(columns)] for r in rows], columns=columns).to_csv(path, index=False)
        try:
            df = read_manifest(path)
        except ClipwiseError:
            return
        assert {"path", "label"} <= set(df.columns) and len(df) == len(rows)
