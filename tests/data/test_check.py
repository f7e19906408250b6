"""`clipwise check`: planted flaws in a synthetic manifest are found, a clean one has no findings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clipwise.cli import main
from clipwise.data._fingerprint import bit_error_rate, fingerprint
from clipwise.data.check import check_manifest
from clipwise.data.manifest import read_manifest
from clipwise.data.synth import SYNTH_CLASSES, synth_clip

SR = 16000


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPWISE_CACHE", str(tmp_path / "cache"))


def _clean(folder: Path, *, per_class: int = 3, seed: int = 0) -> pd.DataFrame:
    """Distinct random clips of every synthetic class, one group each, spread over 3 folds."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, kind in enumerate(SYNTH_CLASSES):
        for k in range(per_class):
            path = folder / f"{kind}_{k}.wav"
            sf.write(path, synth_clip(kind, sample_rate=SR, duration_seconds=1.0, rng=rng), SR)
            rows.append({"path": str(path), "label": kind, "fold": k % 3 + 1, "group": f"{kind}-{k}"})
    return pd.DataFrame(rows)


def _write(df: pd.DataFrame, folder: Path) -> Path:
    path = folder / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def _kinds(report) -> dict[str, object]:
    return {f.kind: f for f in report.findings}


def test_clean_manifest_has_no_findings_and_a_summary(tmp_path):
    report = check_manifest(read_manifest(_write(_clean(tmp_path), tmp_path)))
    assert report.findings == []
    s = report.summary
    assert s["classes"] == len(SYNTH_CLASSES) and s["imbalance_ratio"] == 1.0
    assert s["sample_rates"] == {"16000": len(SYNTH_CLASSES) * 3}
    assert s["duration_seconds"]["median"] == pytest.approx(1.0)
    assert s["side_counts"] == {"1": len(SYNTH_CLASSES), "2": len(SYNTH_CLASSES), "3": len(SYNTH_CLASSES)}
    assert report.side == "fold"


def test_planted_flaws_are_all_found(tmp_path):
    df = _clean(tmp_path)
    # exact duplicate in another fold, as another container (lossless: FLAC decodes to the same samples)
    x, _ = sf.read(df.loc[0, "path"], dtype="float32")
    sf.write(tmp_path / "copy.flac", x, SR)
    # near duplicate: 6 dB quieter and 37 ms later, in another fold
    shift = int(0.037 * SR)
    y, _ = sf.read(df.loc[3, "path"], dtype="float32")
    sf.write(tmp_path / "near.wav", np.concatenate([np.zeros(shift, np.float32), 0.5 * y[:-shift]]), SR)
    extra = [
        {"path": str(tmp_path / "copy.flac"), "label": df.loc[0, "label"], "fold": 2, "group": "copy"},
        {"path": str(tmp_path / "near.wav"), "label": df.loc[3, "label"], "fold": 3, "group": "near"},
    ]
    df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
    # group leak: rows 6 (fold 1) and 8 (fold 3) are clips of one class and now of one recording
    df.loc[8, "group"] = df.loc[6, "group"]
    # a reused group id with different labels on different sides (row 10: fold 2, row 12: fold 1): a metadata
    # error, not a leak
    df.loc[10, "group"] = df.loc[12, "group"]
    report = check_manifest(read_manifest(_write(df, tmp_path)))
    found = _kinds(report)
    assert set(found) == {"exact_duplicate", "near_duplicate", "group_leak", "group_label_conflict"}, found
    assert {Path(p).name for p in found["exact_duplicate"].files} == {Path(df.loc[0, "path"]).name, "copy.flac"}
    pairs = found["near_duplicate"].details["pairs"]
    assert [{Path(a).name, Path(b).name} for a, b, _ in pairs] == [{Path(df.loc[3, "path"]).name, "near.wav"}]
    assert pairs[0][2] < 0.25
    assert found["group_leak"].details["groups"] == [df.loc[6, "group"]]
    assert found["group_label_conflict"].severity == "warning"
    assert found["group_label_conflict"].details["groups"] == [df.loc[12, "group"]]
    assert {f.kind for f in report.leaks()} == {"exact_duplicate", "near_duplicate", "group_leak"}
    narrowed = report.leaks(between=("1", "3"))
    assert [f.kind for f in narrowed] == ["group_leak", "near_duplicate"]
    assert narrowed[0].message.startswith("1 group(s) shared by 1 and 3: ")
    assert {Path(p).name for p in narrowed[1].files} == {Path(df.loc[3, "path"]).name, "near.wav"}
    # the exact copy sits in folds 1 and 2 only
    assert [f.kind for f in report.leaks(between=("1", "2"))] == ["exact_duplicate"]


def test_unreadable_and_silent_files_and_imbalance(tmp_path):
    df = _clean(tmp_path, per_class=2)
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    sf.write(tmp_path / "silence.wav", np.zeros(SR, np.float32), SR)
    sf.write(tmp_path / "silence2.wav", np.zeros(SR, np.float32), SR)
    extra = pd.DataFrame([
        {"path": str(tmp_path / "broken.wav"), "label": "tone", "fold": 1, "group": "b"},
        {"path": str(tmp_path / "silence.wav"), "label": "tone", "fold": 1, "group": "s1"},
        {"path": str(tmp_path / "silence2.wav"), "label": "tone", "fold": 2, "group": "s2"},
    ])
    report = check_manifest(pd.concat([df, extra], ignore_index=True))
    found = _kinds(report)
    # silent clips are alike by nature: counted, never called duplicates
    assert set(found) == {"unreadable"}
    assert found["unreadable"].files == [str(tmp_path / "broken.wav")]
    assert report.summary["silent_clips"] == 2
    assert report.summary["imbalance_ratio"] == pytest.approx(5 / 2)  # tone: 2 clips + the 3 rows above


def test_robust_print_tells_copies_from_other_clips():
    rng = np.random.default_rng(1)
    x = synth_clip("pink_noise", sample_rate=SR, duration_seconds=2.0, rng=rng)
    other = synth_clip("pink_noise", sample_rate=SR, duration_seconds=2.0, rng=rng)
    shifted = np.concatenate([np.zeros(500, np.float32), 0.3 * x[:-500]])
    assert bit_error_rate(fingerprint(x, SR), fingerprint(shifted, SR)) < 0.2
    assert bit_error_rate(fingerprint(x, SR), fingerprint(x[::2].copy(), SR // 2)) < 0.2  # another rate
    assert bit_error_rate(fingerprint(x, SR), fingerprint(other, SR)) > 0.4


def test_cli_json_strict_and_cache(tmp_path, capsys, monkeypatch):
    df = _clean(tmp_path, per_class=2)
    shutil.copy(df.loc[0, "path"], tmp_path / "dup.wav")
    df = pd.concat([df, pd.DataFrame([{"path": str(tmp_path / "dup.wav"), "label": df.loc[0, "label"],
                                       "fold": 3, "group": "dup"}])], ignore_index=True)
    manifest = _write(df, tmp_path)
    assert main(["check", str(manifest)]) == 1  # an error finding fails the command, as a linter's does
    text = capsys.readouterr().out
    assert "[error] 1 set(s) of identical audio span more than one side (fold)" in text
    import clipwise.data.check as check_module

    scanned = []
    real_scan = check_module._scan_one
    monkeypatch.setattr(check_module, "_scan_one", lambda key: scanned.append(key) or real_scan(key))
    assert main(["check", str(manifest), "--json", "--strict"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [f["kind"] for f in out["findings"]] == ["exact_duplicate"]
    assert scanned == []  # the second run read every file's entry from the cache
    # a subset of the rows (one fold of a cross-validation, say) reuses the entries too
    check_manifest(read_manifest(manifest).iloc[:5])
    assert scanned == []
    # a changed file is read again
    sf.write(df.loc[1, "path"], np.zeros(SR // 2, np.float32), SR)
    check_manifest(read_manifest(manifest))
    assert [Path(k[0]).name for k in scanned] == [Path(df.loc[1, "path"]).name]
    df.drop(index=len(df) - 1).to_csv(manifest, index=False)
    assert main(["check", str(manifest), "--strict"]) == 0
