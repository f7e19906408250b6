"""Audio that decodes wrongly is caught where it is read, everywhere: NaN / infinite samples are unreadable,
truncated files and clips too short to analyse are reported, --skip-bad skips whatever fails to decode, a
corrupt file's message says what is true and keeps decoder noise off the terminal, and `predict` scores the
good files of a batch with a bad one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clipwise.data.audio import load_audio
from clipwise.data.check import check_manifest
from clipwise.data.manifest import read_manifest, write_manifest
from clipwise.errors import AudioError

SR = 16000


def _nan_wav(path: Path) -> Path:
    x = np.sin(np.arange(SR // 2) / 3.0).astype(np.float32)
    x[100:110] = np.nan
    x[200] = np.inf
    sf.write(path, x, SR, subtype="FLOAT")
    return path


def _truncated_wav(path: Path) -> Path:
    sf.write(path, (0.3 * np.sin(np.arange(8000) / 4.0)).astype(np.float32), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])  # the header still declares 8000 frames
    return path


def _manifest_with(good: pd.DataFrame, paths: list[Path], out: Path) -> Path:
    extra = pd.DataFrame({"path": [str(p) for p in paths], "label": good["label"].iloc[0],
                          "group": [p.stem for p in paths], "split": "train"})
    return write_manifest(pd.concat([good, extra], ignore_index=True), out)


def test_nan_and_infinite_samples_are_unreadable_audio(tmp_path):
    with pytest.raises(AudioError, match=r"not usable audio: .*nan.wav holds 11 NaN or infinite sample"):
        load_audio(_nan_wav(tmp_path / "nan.wav"), sample_rate=SR)
    loud = tmp_path / "loud.wav"  # float samples beyond [-1, 1] are legal: kept as they are
    sf.write(loud, np.full(800, 1.5, np.float32), SR, subtype="FLOAT")
    assert load_audio(loud, sample_rate=SR).max() == pytest.approx(1.5)


def test_check_reports_nan_truncated_short_loud_and_single_clip_classes(synth_manifest, tmp_path, cli):
    good = read_manifest(synth_manifest)
    one = tmp_path / "one.wav"
    sf.write(one, np.array([0.1], np.float32), SR)
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.full(800, 1.5, np.float32), SR, subtype="FLOAT")
    paths = [_nan_wav(tmp_path / "nan.wav"), _truncated_wav(tmp_path / "cut.wav"), one, loud]
    df = read_manifest(_manifest_with(good, paths, tmp_path / "m.csv"))
    df.loc[df.index[-1], "label"] = "solo"
    write_manifest(df, tmp_path / "m.csv")
    report = check_manifest(read_manifest(tmp_path / "m.csv"))
    kinds = {f.kind: f for f in report.findings}
    assert "nan.wav" in kinds["unreadable"].message and "NaN or infinite" in kinds["unreadable"].message
    assert "cut.wav: 4000 of 8000" in kinds["truncated"].message
    assert kinds["truncated"].files == [str(tmp_path / "cut.wav")]
    assert kinds["too_short"].files == [str(one)] and "1 sample(s)" in kinds["too_short"].message
    assert "solo" in kinds["single_clip_class"].message
    assert report.summary["beyond_unit_clips"] == 1
    r = cli("check", tmp_path / "m.csv")
    assert r.rc == 1 and "[error]" in r.out and "[warning]" in r.out  # errors fail the command, as a linter's


@pytest.mark.slow
def test_skip_bad_skips_files_that_only_fail_when_decoded(synth_manifest, tmp_path, cli, tiny):
    good = read_manifest(synth_manifest)
    manifest = _manifest_with(good, [_nan_wav(tmp_path / "nan.wav")], tmp_path / "m.csv")
    r = cli("train", "--data", manifest, "--epochs", "1", "--out", tmp_path / "strict", "data.leakage_check=false",
            *tiny)
    assert r.rc == 2 and "nan.wav" in r.err and "--skip-bad" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "strict").exists()
    r = cli("train", "--data", manifest, "--epochs", "1", "--out", tmp_path / "run", "--skip-bad",
            "data.leakage_check=false", *tiny)
    assert r.rc == 0, r.err
    skipped = pd.read_csv(tmp_path / "run" / "skipped_files.csv")
    assert list(skipped["path"]) == [str(tmp_path / "nan.wav")] and "NaN" in skipped["reason"].iloc[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["data"]["skipped_files"] == 1
    assert str(tmp_path / "nan.wav") not in (tmp_path / "run" / "splits.csv").read_text()


def test_a_corrupt_mp3_says_what_is_true_and_keeps_decoder_noise_off_the_terminal(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\xff\xfb\x90\x64" + bytes(range(256)) * 40)
    code = ("from clipwise.data.audio import load_audio\n"
            "from clipwise.errors import AudioError\n"
            f"try:\n    load_audio({str(bad)!r}, sample_rate=16000)\nexcept AudioError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "bad.mp3" in done.stdout and "does not exist" not in done.stdout
    assert "Illegal Audio-MPEG-Header" not in done.stderr and "Note:" not in done.stderr, done.stderr


@pytest.mark.slow
def test_predict_scores_the_good_files_and_lists_the_bad_one(two_epoch_run, tmp_path, cli):
    splits = pd.read_csv(two_epoch_run / "splits.csv")
    good = [Path(p) for p in splits.loc[splits["split"] == "test", "path"].head(2)]
    bad = _nan_wav(tmp_path / "nan.wav")
    r = cli("predict", two_epoch_run, *good, bad, "--format", "csv")
    assert r.rc == 1 and "Traceback" not in r.err
    rows = pd.read_csv(__import__("io").StringIO(r.out))
    assert list(rows["path"]) == [str(p) for p in good]
    assert "skipped" in r.err and "nan.wav" in r.err and "--skip-bad" in r.err
    r = cli("predict", two_epoch_run, *good, bad, "--skip-bad", "--format", "csv")
    assert r.rc == 0 and len(pd.read_csv(__import__("io").StringIO(r.out))) == 2
    r = cli("predict", two_epoch_run, *good, "--top-k", "0")
    assert r.rc == 2 and "--top-k must be at least 1" in r.err


@pytest.mark.slow
def test_a_one_sample_clip_trains_padded_and_the_report_counts_it(synth_manifest, tmp_path, cli, tiny):
    one = tmp_path / "one.wav"
    sf.write(one, np.array([0.1], np.float32), SR)
    manifest = _manifest_with(read_manifest(synth_manifest), [one], tmp_path / "m.csv")
    r = cli("train", "--data", manifest, "--epochs", "1", "--out", tmp_path / "run", "data.leakage_check=false",
            *tiny)
    assert r.rc == 0, r.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["short_clips"] == {"train": 1, "val": 0, "test": 0}
    assert "shorter than one 25 ms analysis window (train 1, val 0, test 0)" in (tmp_path / "run" / "report.md").read_text()
