"""The ``auto`` settings that `clipwise train` resolves from the training split."""

from __future__ import annotations

import numpy as np
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
