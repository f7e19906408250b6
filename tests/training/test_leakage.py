"""The leakage guard of `train`: a split whose train and test share audio or a group is refused, unless the
user allows it, and then the report opens with the findings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

ONE_EPOCH = ("--epochs", "1")


def _copy_manifest(src, dst_dir, edit) -> str:
    """A manifest in ``dst_dir`` with absolute paths, changed by ``edit(df, dst_dir) -> df``."""
    df = pd.read_csv(src)
    df["path"] = [str((src.parent / p).resolve()) for p in df["path"]]
    df = edit(df, dst_dir)
    out = dst_dir / "manifest.csv"
    df.to_csv(out, index=False)
    return str(out)


def _group_leak(df, _):
    test = df.index[df["split"] == "test"][0]
    train = df.index[(df["split"] == "train") & (df["label"] == df.loc[test, "label"])][0]
    df.loc[test, "group"] = df.loc[train, "group"]
    return df


def _near_duplicate(df, folder):
    """A training clip copied into test 6 dB quieter and 20 ms later."""
    row = df[df["split"] == "train"].iloc[0]
    x, sr = sf.read(row["path"], dtype="float32")
    shift = int(0.02 * sr)
    sf.write(folder / "near.wav", np.concatenate([np.zeros(shift, np.float32), 0.5 * x[:-shift]]), sr)
    extra = {**row.to_dict(), "path": str(folder / "near.wav"), "split": "test", "group": "near"}
    return pd.concat([df, pd.DataFrame([extra])], ignore_index=True)


def _exact_duplicate_in_val(df, folder):
    row = df[df["split"] == "train"].iloc[0]
    x, sr = sf.read(row["path"], dtype="float32")
    sf.write(folder / "copy.flac", x, sr)
    extra = {**row.to_dict(), "path": str(folder / "copy.flac"), "split": "val", "group": "copy"}
    return pd.concat([df, pd.DataFrame([extra])], ignore_index=True)


@pytest.mark.parametrize(("edit", "expect"), [(_group_leak, "1 group(s) shared by train and test"),
                                              (_near_duplicate, "1 pair(s) of near-identical audio shared by train "
                                                                "and test")])
def test_a_leaking_split_is_refused_with_the_findings_and_the_way_out(synth_manifest, tmp_path, cli, tiny, edit,
                                                                      expect):
    manifest = _copy_manifest(synth_manifest, tmp_path, edit)
    r = cli("train", "--data", manifest, "--out", tmp_path / "run", *ONE_EPOCH, *tiny)
    assert r.rc == 2
    assert expect in r.err and "--allow-leakage" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


@pytest.mark.slow
def test_allow_leakage_trains_and_the_report_opens_with_the_findings(synth_manifest, tmp_path, cli, tiny):
    manifest = _copy_manifest(synth_manifest, tmp_path, _near_duplicate)
    r = cli("train", "--data", manifest, "--out", tmp_path / "run", "--allow-leakage", *ONE_EPOCH, *tiny)
    assert r.rc == 0, r.err
    run = tmp_path / "run"
    found = json.loads((run / "leakage.json").read_text())
    assert found["allowed"] is True and [f["kind"] for f in found["train_test"]] == ["near_duplicate"]
    assert str(tmp_path / "near.wav") in found["train_test"][0]["files"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["leakage"] == {"checked": True, "allowed": True, "train_test": {"near_duplicate": 1},
                                  "train_val": {}, "warnings": {}}
    report = (run / "report.md").read_text().splitlines()
    top = "\n".join(report[:8])
    assert "Trained with --allow-leakage" in top and "near.wav" in top


@pytest.mark.slow
def test_shared_audio_between_train_and_validation_is_a_note_not_a_refusal(synth_manifest, tmp_path, cli, tiny):
    manifest = _copy_manifest(synth_manifest, tmp_path, _exact_duplicate_in_val)
    r = cli("train", "--data", manifest, "--out", tmp_path / "run", *ONE_EPOCH, *tiny)
    assert r.rc == 0, r.err
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Trained with --allow-leakage" not in report
    assert "Training and validation share audio (1 set(s) of identical audio shared by train and val" in report


@pytest.mark.slow
def test_a_clean_split_passes_and_a_switched_off_check_is_stated(synth_manifest, tmp_path, cli, tiny):
    r = cli("train", "--data", synth_manifest, "--out", tmp_path / "clean", *ONE_EPOCH, *tiny)
    assert r.rc == 0, r.err
    assert json.loads((tmp_path / "clean" / "summary.json").read_text())["leakage"]["train_test"] == {}
    assert "Leakage not checked" not in (tmp_path / "clean" / "report.md").read_text()
    r = cli("train", "--data", synth_manifest, "--out", tmp_path / "off", *ONE_EPOCH, *tiny,
            "data.leakage_check=false")
    assert r.rc == 0, r.err
    assert "Leakage not checked" in (tmp_path / "off" / "report.md").read_text()
