"""Bad input fails with exit status 2 and one message that names the file, row or key, never a traceback;
``--skip-bad`` and silent classes are legal and accounted for in the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clipwise.data.manifest import read_manifest, write_manifest
from clipwise.run import RunFolder


def _assert_user_error(result, command: str, *needles: str) -> None:
    assert result.rc == 2, f"exit status {result.rc}; stderr: {result.err}"
    assert "Traceback" not in result.err
    assert result.err.startswith(f"clipwise {command}: error:"), result.err
    for needle in needles:
        assert needle in result.err, f"{needle!r} not in the message: {result.err}"
    assert_flags_exist(command, result.err)


def assert_flags_exist(command: str, message: str) -> None:
    """Every flag the rendered message suggests exists: on the command it shows (`clipwise prepare ... --x`), or
    else on the command that printed it."""
    from test_messages import FLAG, NAMED, command_flags

    flags = command_flags()
    shown = NAMED.findall(message.split(":", 1)[1])  # past the "clipwise CMD: error:" prefix
    for other, rest in shown:
        missing = [f for f in FLAG.findall(rest) if other in flags and f not in flags[other]]
        assert not missing, f"`clipwise {other}` has no {missing}: {message}"
    plain = NAMED.sub("", message.split(":", 1)[1])
    missing = [f for f in FLAG.findall(plain) if f not in flags[command]]
    assert not missing, f"`clipwise {command}` has no {missing}, which its message suggests: {message}"


@pytest.fixture
def good(synth_manifest) -> pd.DataFrame:
    """The 4 x 6 synthetic manifest with absolute paths and its split column."""
    return read_manifest(synth_manifest)


def _bad_file(kind: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        return folder / "missing.wav"
    if kind == "garbage":
        path = folder / "garbage.wav"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return path
    path = folder / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    return path


def _with_rows(good: pd.DataFrame, paths: list[Path], out: Path, *, label: str = "tone", split: str = "train") -> Path:
    extra = pd.DataFrame({"path": [str(p) for p in paths], "label": label, "group": [p.stem for p in paths],
                          "split": split})  # fmt: skip
    return write_manifest(pd.concat([good, extra], ignore_index=True), out)


# -- files ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "needles"),
    [
        ("missing", ["missing.wav", "file not found", "--skip-bad"]),
        ("garbage", ["garbage.wav", "cannot decode", "--skip-bad"]),
        ("empty", ["empty.wav", "empty (0 samples)", "--skip-bad"]),
    ],
)
def test_unreadable_audio_is_named(cli, good, tmp_path, tiny, kind, needles):
    manifest = _with_rows(good, [_bad_file(kind, tmp_path / "audio")], tmp_path / "manifest.csv")
    result = cli("train", "--data", manifest, "--epochs", "1", "--out", tmp_path / "run", *tiny)
    _assert_user_error(result, "train", "1 of 25 manifest rows", *needles)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_skip_bad_trains_and_lists_the_skipped_files(cli, good, tmp_path, tiny):
    bad = [_bad_file(kind, tmp_path / "audio") for kind in ("missing", "garbage", "empty")]
    manifest = _with_rows(good, bad, tmp_path / "manifest.csv")
    run = tmp_path / "run"
    result = cli("train", "--data", manifest, "--epochs", "1", "--out", run, "--skip-bad", *tiny)
    assert result.rc == 0, result.err
    skipped = pd.read_csv(run / "skipped_files.csv")
    assert sorted(skipped["path"]) == sorted(str(p) for p in bad)
    assert skipped["reason"].str.len().gt(0).all()
    summary = RunFolder(run).load_summary()
    assert summary["data"]["skipped_files"] == 3
    assert summary["data"]["n_train"] == 8  # the good training clips, none of the bad ones
    splits = pd.read_csv(run / "splits.csv")
    assert not set(splits["path"]) & {str(p) for p in bad}


# -- manifests -----------------------------------------------------------------------------------------------------
def test_manifest_without_a_label_column(cli, good, tmp_path):
    manifest = tmp_path / "no_label.csv"
    good.rename(columns={"label": "category"}).to_csv(manifest, index=False)
    result = cli("train", "--data", manifest, "--epochs", "1", "--out", tmp_path / "run")
    _assert_user_error(result, "train", str(manifest), "'label'", "--label-column", "'category'")


def test_label_only_in_test_is_rejected(cli, good, tmp_path, tiny, wav_writer, make_tone):
    owl = wav_writer(tmp_path / "audio" / "owl.wav", make_tone(440.0))
    manifest = _with_rows(good, [owl], tmp_path / "manifest.csv", label="owl", split="test")
    result = cli("train", "--data", manifest, "--epochs", "1", "--out", tmp_path / "run", *tiny)
    _assert_user_error(result, "train", "'owl'", "test split", "owl.wav", "never in train")


def test_missing_manifest(cli, tmp_path):
    result = cli("train", "--data", tmp_path / "nope.csv", "--epochs", "1")
    _assert_user_error(result, "train", "nope.csv", "manifest not found")


# -- config --------------------------------------------------------------------------------------------------------
def test_unknown_config_key_suggests_the_closest(cli, synth_manifest, tmp_path):
    result = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", "optim.lrr=1e-3")
    _assert_user_error(result, "train", "'optim.lrr'", "Did you mean 'optim.lr'")
    assert not (tmp_path / "run").exists()


def test_wrong_type_names_the_key_and_value(cli, synth_manifest, tmp_path):
    result = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", "train.epochs=abc")
    _assert_user_error(result, "train", "'train.epochs'", "'abc'")


def test_unknown_model_name(cli, synth_manifest, tmp_path):
    result = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", "--model", "nosuchnet")
    _assert_user_error(result, "train", "'nosuchnet'", "clipwise models")
    assert not (tmp_path / "run").exists()


def test_config_file_with_an_unknown_key(cli, synth_manifest, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  epochs: 2\noptim:\n  lrr: 0.1\n")
    result = cli("train", "--data", synth_manifest, "--config", config, "--out", tmp_path / "run")
    _assert_user_error(result, "train", "'optim.lrr'", str(config), "'optim.lr'")


def test_bad_input_in_a_real_process(synth_manifest, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CLIPWISE_RUN_DIR"}
    result = subprocess.run(
        [sys.executable, "-m", "clipwise", "train", "--data", str(synth_manifest), "--out", str(tmp_path / "run"),
         "optim.lrr=1e-3"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown config key 'optim.lrr'" in result.stderr and "optim.lr" in result.stderr


# -- run folders ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_folder_that_is_not_a_run(cli, tmp_path, command, synth_manifest):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    extra = [synth_manifest.parent / "audio"] if command == "predict" else []
    result = cli(command, folder, *extra)
    _assert_user_error(result, command, "not_a_run")
    if command == "evaluate":
        assert "is not a clipwise run folder" in result.err


# -- silence -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_all_silent_class_is_legal_and_counted(cli, good, tmp_path, tiny, wav_writer):
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(["train", "train", "val", "val", "test", "test"]):
        x = np.zeros(8000) if i % 2 == 0 else rng.standard_normal(8000) * 1e-4  # digital silence, -80 dB hiss
        path = wav_writer(tmp_path / "audio" / f"silence{i}.wav", x)
        rows.append({"path": str(path), "label": "silence", "group": f"silence_rec{i // 2}", "split": split})
    manifest = write_manifest(pd.concat([good, pd.DataFrame(rows)], ignore_index=True), tmp_path / "manifest.csv")
    run = tmp_path / "run"
    result = cli("train", "--data", manifest, "--epochs", "1", "--out", run, *tiny)
    assert result.rc == 0, result.err
    summary = RunFolder(run).load_summary()
    assert summary["data"]["silent_clips"] == {"train": 2, "val": 2, "test": 2}
    assert "silence" in json.loads((run / "labels.json").read_text())
    _, probs, _ = RunFolder(run).load_predictions("test")
    assert np.isfinite(probs).all()
    assert "silent" in (run / "report.md").read_text()
