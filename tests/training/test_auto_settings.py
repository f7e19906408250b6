"""The ``auto`` settings that `clipwise train` resolves from the training split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clipwise.config import AUTO_EPOCH_RANGE, AUTO_EPOCH_STEPS, load_config
from clipwise.errors import ConfigError
from clipwise.data.prepare import auto_clip_seconds, auto_epochs


@pytest.mark.parametrize(
    ("n_train", "batch", "expected"),
    [
        (1371, 32, round(AUTO_EPOCH_STEPS / 42)),  # an ESC-50-sized set: 42 steps an epoch
        (2295, 32, round(AUTO_EPOCH_STEPS / 71)),  # FSDD-sized: 71 steps an epoch
        (80_000, 32, AUTO_EPOCH_RANGE[0]),  # large sets get the minimum number of passes
        (40, 32, AUTO_EPOCH_RANGE[1]),  # one step an epoch: the maximum, not 1,600 epochs
        (10, 32, AUTO_EPOCH_RANGE[1]),  # fewer clips than a batch still make one step
    ],
)
def test_auto_epochs_targets_a_number_of_steps(n_train, batch, expected):
    assert auto_epochs(n_train, batch) == expected


def test_auto_epochs_scale_inversely_with_the_data():
    sizes = [500, 1000, 2000, 4000]
    epochs = [auto_epochs(n, 32) for n in sizes]
    assert epochs == sorted(epochs, reverse=True) and len(set(epochs)) == len(epochs)
    steps = [e * (n // 32) for e, n in zip(epochs, sizes)]
    assert all(abs(s - AUTO_EPOCH_STEPS) <= n // 32 for s, n in zip(steps, sizes))


def test_epochs_config_accepts_auto_or_a_positive_integer():
    assert load_config().train.epochs == "auto"
    assert load_config(overrides=["train.epochs=7"]).train.epochs == 7
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="train.epochs"):
            load_config(overrides=[f"train.epochs={bad}"])


def test_auto_clip_seconds_holds_95_percent_of_clips_within_bounds():
    durations = np.array([0.3] * 90 + [0.62] * 6 + [3.0] * 4)
    assert auto_clip_seconds(durations) == pytest.approx(0.7)  # 95th percentile 0.62 s, rounded up to 0.1 s
    assert auto_clip_seconds(np.full(10, 0.1)) == 0.5
    assert auto_clip_seconds(np.full(10, 30.0)) == 10.0


def test_a_few_long_outliers_do_not_decide_the_automatic_clip_length():
    """One 10-minute recording among 19 short clips used to lift every clip to 10 s."""
    durations = np.array([0.45] * 19 + [600.0])
    assert auto_clip_seconds(durations) == pytest.approx(0.5)


def test_one_class_in_training_is_refused_and_rare_classes_get_notes(tmp_path, make_manifest, cli):
    manifest = make_manifest("one-class", classes=["tone"], n_per_class=6)
    r = cli("train", "--data", manifest, "--out", tmp_path / "run", "--epochs", "1")
    assert r.rc == 2 and "holds a single class (tone)" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "run").exists()


def test_report_notes_name_imbalance_outlier_lengths_rare_classes_and_small_tests(tmp_path):
    """The notes a report derives from summary.json's data facts and a best epoch of 0 at the majority rate."""
    from clipwise.evaluate._notes import RunFacts, automatic_notes
    from clipwise.run import RunFolder
    from clipwise.task import get_task

    data = {"n_train": 400, "n_val": 60, "n_test": 49, "test_groups": 1,
            "class_counts": {"calm": {"train": 330, "val": 50, "test": 41}, "angry": {"train": 69, "val": 10,
                                                                                     "test": 8},
                             "rare": {"train": 1}},
            "clip_seconds_auto": {"value": 0.5, "longer": 1, "max": 600.0}}
    metrics = pd.DataFrame({"epoch": [0, 1, 2], "val_accuracy": [0.84, 0.84, 0.83]})
    facts = RunFacts(RunFolder(tmp_path), cfg={}, summary={"data": data}, task=get_task("multiclass"), sources=[],
                     metrics=metrics, monitor="val_accuracy", best=0, epochs_run=3,
                     baseline={"accuracy": 0.837, "balanced_accuracy": 0.5})
    text = " ".join(automatic_notes(facts))
    assert "already at the majority-class rate" in text and "train.class_weights=balanced" in text
    assert "single training clip (rare)" in text and "occur only in training (rare)" in text
    assert "1 clip(s) are longer (up to 600.0000 s)" in text
    assert "only 49 clips" in text and "from 1 group(s)" in text
