"""Nothing a user trained or wrote is lost: a new run never replaces a run or other files in --out, a resume
checks its data before it writes, and a damaged checkpoint falls back to the one before it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest


def _checksums(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_train_refuses_a_finished_run_and_overwrite_moves_it_aside(cli, two_epoch_copy, synth_manifest, tiny):
    before = _checksums(two_epoch_copy)
    r = cli("train", "--data", synth_manifest, "--epochs", "1", "--out", two_epoch_copy, *tiny)
    assert r.rc == 2 and "holds a finished run" in r.err and "--overwrite" in r.err and "Traceback" not in r.err
    assert _checksums(two_epoch_copy) == before
    r = cli("train", "--data", synth_manifest, "--epochs", "1", "--out", two_epoch_copy, "--overwrite", *tiny)
    assert r.rc == 0, r.err
    (aside,) = two_epoch_copy.parent.glob(f"{two_epoch_copy.name}.replaced-*")
    assert _checksums(aside) == before and f"is now in {aside}" in r.out
    assert len(pd.read_csv(two_epoch_copy / "metrics.csv")) == 1


@pytest.mark.slow
def test_train_refuses_an_interrupted_run_naming_resume(cli, two_epoch_copy, synth_manifest, tiny):
    (two_epoch_copy / "summary.json").unlink()
    r = cli("train", "--data", synth_manifest, "--epochs", "1", "--out", two_epoch_copy, *tiny)
    assert r.rc == 2 and "holds an interrupted run" in r.err and f"--resume {two_epoch_copy}" in r.err


def test_train_never_writes_into_a_folder_of_other_files_or_over_a_file(cli, synth_manifest, tmp_path, tiny):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    r = cli("train", "--data", synth_manifest, "--epochs", "1", "--out", mine, *tiny)
    assert r.rc == 2 and "not a clipwise run (notes.txt)" in r.err and "Traceback" not in r.err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = cli("train", "--data", synth_manifest, "--epochs", "1", "--out", afile, *tiny)
    assert r.rc == 2 and "is a file, not a folder" in r.err and afile.read_text() == "x"
    r = cli("train", "--data", synth_manifest, "--epochs", "1", "--out", "/dev/null/run", *tiny)
    assert r.rc == 2 and "/dev/null" in r.err and "Traceback" not in r.err


def test_prepare_refuses_to_replace_a_manifest_unless_told(cli, tmp_path):
    tree = tmp_path / "tree"
    for label in ("a", "b"):
        (tree / label).mkdir(parents=True)
    import numpy as np
    import soundfile as sf

    for label in ("a", "b"):
        sf.write(tree / label / "x.wav", np.sin(np.arange(1600) / 5.0).astype(np.float32), 8000)
    out = tmp_path / "m.csv"
    out.write_text("mine\n")
    r = cli("prepare", tree, "--out", out)
    assert r.rc == 2 and "already exists" in r.err and "--overwrite" in r.err and out.read_text() == "mine\n"
    r = cli("prepare", tree, "--out", out, "--overwrite")
    assert r.rc == 0, r.err
    assert len(pd.read_csv(out)) == 2


@pytest.mark.slow
def test_resume_after_the_manifest_changed_is_refused_before_anything_is_written(cli, two_epoch_copy,
                                                                                synth_manifest, tmp_path):
    (two_epoch_copy / "summary.json").unlink()  # an interrupted run
    df = pd.read_csv(synth_manifest)
    fewer = df[df["label"] != df["label"].iloc[0]]
    changed = synth_manifest.with_name("fewer.csv")
    fewer.to_csv(changed, index=False)
    config = (two_epoch_copy / "config.yaml").read_text()
    (two_epoch_copy / "config.yaml").write_text(config.replace(str(synth_manifest), str(changed)))
    before = _checksums(two_epoch_copy)
    r = cli("train", "--resume", two_epoch_copy)
    assert r.rc == 2 and "the data changed since the run started" in r.err and "removed" in r.err, r.err
    assert "Traceback" not in r.err and _checksums(two_epoch_copy) == before


@pytest.mark.slow
def test_a_truncated_last_checkpoint_resumes_from_the_one_before(cli, two_epoch_copy, tiny):
    ckpt = two_epoch_copy / "checkpoints" / "last.ckpt"
    previous = ckpt.with_name("last.ckpt.prev")
    assert previous.is_file()  # written when epoch 1 replaced epoch 0's checkpoint
    (two_epoch_copy / "summary.json").unlink()
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    saved = shutil.copytree(two_epoch_copy, two_epoch_copy.parent / "without-prev")
    with pytest.warns(UserWarning, match="last.ckpt cannot be read .*resuming from last.ckpt.prev"):
        r = cli("train", "--resume", two_epoch_copy)
    assert r.rc == 0, r.err
    assert (two_epoch_copy / "summary.json").is_file()
    metrics = pd.read_csv(two_epoch_copy / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1]  # epoch 1 trained again from epoch 0's checkpoint, listed once
    (Path(saved) / "checkpoints" / "last.ckpt.prev").unlink()
    r = cli("train", "--resume", saved)
    assert r.rc == 2 and "last.ckpt" in r.err and "no earlier checkpoint" in r.err and "Traceback" not in r.err
