"""Imbalance options: balanced class weights and a class-balanced sampler."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from clipwise.data.dataset import balanced_class_weights, balanced_sample_weights, class_counts


def test_balanced_class_weights_follow_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 30 + [1] * 6 + [2] * 4)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert balanced_class_weights(y, 3) == pytest.approx(expected)
    # weighted by them, every class carries the same total weight
    totals = balanced_class_weights(y, 3) * class_counts(y, 3)
    assert totals == pytest.approx(np.full(3, totals[0]))


def test_multilabel_weights_are_negatives_over_positives():
    y = np.array([[1, 0], [1, 0], [1, 1], [1, 0]])
    assert balanced_class_weights(y, 2) == pytest.approx([0 / 4, 3 / 1])


def test_balanced_sampler_draws_every_class_about_equally():
    y = np.array([0] * 90 + [1] * 9 + [2] * 1)
    weights = torch.from_numpy(balanced_sample_weights(y, 3))
    drawn = torch.multinomial(weights, 30000, replacement=True, generator=torch.Generator().manual_seed(0))
    share = np.bincount(y[drawn.numpy()], minlength=3) / 30000
    assert share == pytest.approx([1 / 3] * 3, abs=0.02)


@pytest.fixture(scope="module")
def imbalanced(make_manifest, tmp_path_factory):
    """Class 'tone' with 16 clips, 'white_noise' with 4 (the second class's extra rows dropped)."""
    src = make_manifest("imb", classes=("tone", "white_noise"), n_per_class=16, splits=(0.6, 0.2, 0.2))
    df = pd.read_csv(src)
    df["path"] = [str((src.parent / p).resolve()) for p in df["path"]]
    noise = df[(df["label"] == "white_noise") & (df["split"] == "train")].index[4:]
    out = tmp_path_factory.mktemp("imb") / "manifest.csv"
    df.drop(index=noise).to_csv(out, index=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("option", ["train.class_weights=balanced", "data.sampler=balanced"])
def test_imbalance_options_train_and_are_recorded(imbalanced, tmp_path, cli, tiny, option):
    r = cli("train", "--data", imbalanced, "--out", tmp_path / "run", "--epochs", "2", *tiny, option)
    assert r.rc == 0, r.err
    key, value = option.split("=")
    section, name = key.split(".")
    import yaml

    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())[section][name] == value
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"balanced_accuracy", "macro_f1", "accuracy"} <= set(summary["test"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Majority-class baseline" in report and "balanced accuracy" in report
