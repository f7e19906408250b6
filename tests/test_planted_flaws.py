"""The planted-flaw battery: mistakes seen in real audio-ML reports, planted in synthetic data, each of which
clipwise must report (by `check`, by `train` refusing, or in the run's report).

Covered here with the real pipeline: an exact duplicate across splits, validation above (clean) training,
best epoch 0 with a model at the majority baseline, and features that produce NaN. Covered elsewhere, also on
synthetic data: group leakage across folds and near duplicates (tests/data/test_check.py for `check`,
tests/training/test_leakage.py and tests/training/test_cv.py for `train` / `cv` refusing), and each report note on
run folders built to show it (tests/evaluate/test_report.py).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf


def _absolute(src) -> pd.DataFrame:
    df = pd.read_csv(src)
    df["path"] = [str((src.parent / p).resolve()) for p in df["path"]]
    return df


def _notes(run) -> str:
    report = (run / "report.md").read_text()
    return report.split("## Notes", 1)[1].split("\n## ", 1)[0]


def test_exact_duplicate_across_splits_is_refused(synth_manifest, tmp_path, cli, tiny):
    df = _absolute(synth_manifest)
    row = df[df["split"] == "train"].iloc[2]
    x, sr = sf.read(row["path"], dtype="float32")
    sf.write(tmp_path / "copy.flac", x, sr)  # another container, the same samples
    df = pd.concat([df, pd.DataFrame([{**row.to_dict(), "path": str(tmp_path / "copy.flac"), "split": "test",
                                       "group": "copy"}])], ignore_index=True)
    df.to_csv(tmp_path / "manifest.csv", index=False)
    r = cli("train", "--data", tmp_path / "manifest.csv", "--out", tmp_path / "run", "--epochs", "1", *tiny)
    assert r.rc == 2 and "1 set(s) of identical audio shared by train and test" in r.err
    assert "copy.flac" in r.err


@pytest.mark.slow
def test_validation_above_clean_training_is_noted(make_manifest, tmp_path, cli, tiny):
    """Noisy training labels hold the clean-training score down while validation (correct labels) is easy."""
    df = _absolute(make_manifest("flaw_val", n_per_class=12))
    train = df.index[df["split"] == "train"]
    rng = np.random.default_rng(0)
    flip = rng.choice(train, size=len(train) // 2, replace=False)
    labels = sorted(df["label"].unique())
    # each flipped clip gets a random other class: its true class stays the most frequent label of its kind,
    # so the model learns it (validation is easy) while half the training labels disagree with it
    df.loc[flip, "label"] = [rng.choice([x for x in labels if x != v]) for v in df.loc[flip, "label"]]
    df.to_csv(tmp_path / "manifest.csv", index=False)
    r = cli("train", "--data", tmp_path / "manifest.csv", "--out", tmp_path / "run", "--epochs", "8", *tiny,
            "train.patience=null")
    assert r.rc == 0, r.err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["val"]["accuracy"] > s["train_clean"]["accuracy"] + 0.01, s
    notes = _notes(tmp_path / "run")
    assert "is better than the clean-training accuracy" in notes and "Augmentation was on (mixup alpha" in notes


@pytest.mark.slow
def test_a_model_that_learns_nothing_is_called_out(synth_manifest, tmp_path, cli, tiny):
    r = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", "--epochs", "3", *tiny, "optim.lr=1e-9")
    assert r.rc == 0, r.err
    notes = _notes(tmp_path / "run")
    assert "The best epoch is the first one (0)" in notes
    assert "is at or below the majority-class baseline" in notes


@pytest.mark.slow
def test_features_that_produce_nan_stop_the_run_with_a_hint(synth_manifest, tmp_path, cli, tiny):
    r = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", "--epochs", "5", *tiny, "optim.lr=1e6",
            "frontend.normalize=false", "train.grad_clip=null")
    assert r.rc == 0, r.err  # stopped, not crashed: the run folder and its report exist
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["diverged"] and s["epochs_run"] < 5
    assert "training diverged" in r.err and "frontend.normalize=true" in r.err
    notes = _notes(tmp_path / "run")
    assert "Training diverged:" in notes and "Lower optim.lr" in notes
