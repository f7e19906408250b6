"""Multi-label training end to end: ';'-separated labels switch on sigmoid outputs, BCE, lwlrap and thresholds
tuned on validation; the run folder, predictions and report speak multi-label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clipwise.data.manifest import read_manifest
from clipwise.data.mixtures import make_mixtures
from clipwise.evaluate.multilabel import lwlrap, prior_baseline
from clipwise.run import RunFolder

CLASSES = ("tone", "white_noise", "click_train", "chirp_up", "am_tone")


@pytest.fixture(scope="module")
def mixtures(make_manifest, tmp_path_factory):
    src = make_manifest("ml5x12", classes=CLASSES, n_per_class=12, duration_seconds=0.5)
    out = tmp_path_factory.mktemp("mixtures")
    return make_mixtures(read_manifest(src), out, n_per_side={"train": 120, "val": 30, "test": 30}, seed=0)


def test_mixtures_mix_sources_of_different_classes_within_one_side(mixtures, make_manifest):
    df = read_manifest(mixtures)
    assert df["split"].value_counts().to_dict() == {"train": 120, "val": 30, "test": 30}
    src = read_manifest(make_manifest("ml5x12", classes=CLASSES, n_per_class=12, duration_seconds=0.5))
    split_of = dict(zip(src["path"], src["split"]))
    for _, row in df.iterrows():
        labels = row["label"].split(";")
        assert len(labels) in (2, 3) and len(set(labels)) == len(labels)
        assert {split_of[p] for p in row["sources"].split("|")} == {row["split"]}


@pytest.mark.slow
def test_multilabel_run_learns_and_writes_multilabel_results(mixtures, tmp_path, cli, tiny):
    out = tmp_path / "run"
    r = cli("train", "--data", mixtures, "--out", out, "--epochs", "12", *tiny, "data.batch_size=16")
    assert r.rc == 0, r.err
    run = RunFolder(out)
    cfg = run.load_config_dict()
    assert cfg["data"]["task"] == "multilabel" and cfg["train"]["monitor"] == "val_lwlrap"
    summary = run.load_summary()
    test = summary["test"]
    assert {"lwlrap", "mAP", "macro_f1", "micro_f1", "loss"} <= set(test) and "accuracy" not in test
    # the saved predictions reproduce the summary, and the model beats ranking labels by frequency
    frame, probs, y = run.load_predictions("test")
    assert y.shape == (30, len(CLASSES)) and set(y.sum(axis=1)) <= {2.0, 3.0}
    assert lwlrap(y, probs) == pytest.approx(test["lwlrap"], abs=1e-4)
    assert test["lwlrap"] > summary["baseline"]["lwlrap"] + 0.15, (test, summary["baseline"])
    thresholds = json.loads(run.thresholds_path.read_text())
    assert thresholds["tuned_on"] == "val" and set(thresholds["thresholds"]) == set(CLASSES)
    assert frame["label"].str.contains(";").all()
    # `clipwise predict` says which labels apply (at their tuned thresholds), as the run's own predictions do
    files = [str(p if Path(p).is_absolute() else Path(mixtures).parent / p) for p in frame["path"][:6]]
    r = cli("predict", out, *files, "--format", "json", "--top-k", "2")
    assert r.rc == 0, r.err
    tags = {Path(row["path"]).name: sorted(row["tags"]) for row in json.loads(r.out)}
    expected = {Path(p).name: sorted(filter(None, v.split(";"))) for p, v in zip(frame["path"][:6], frame["pred"][:6])}
    assert tags == expected and any(len(t) > 1 for t in tags.values())
    assert all(len(row["top"]) == 2 for row in json.loads(r.out))
    report = run.report_path.read_text()
    assert "| split | lwlrap | mAP | macro-F1 | micro-F1 | loss | n |" in report
    assert "Prior baseline" in report and "| class | AP | threshold |" in report
    assert "confusion_matrix.png" not in report
    r = cli("evaluate", out, "--format", "json")
    assert r.rc == 0, r.err
    assert json.loads(r.out)["metrics"]["lwlrap"] == pytest.approx(test["lwlrap"], abs=1e-4)


def test_prior_baseline_of_a_dominant_label():
    y_train = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 0, 0]])
    y_eval = np.array([[1, 0, 0], [0, 1, 0]])
    # ranking a > b > c for every clip: clip 1's label at rank 1 (precision 1), clip 2's at rank 2 (1/2)
    assert prior_baseline(y_train, y_eval)["lwlrap"] == pytest.approx(0.75)


def test_a_monitor_of_the_wrong_task_is_refused(mixtures, tmp_path, cli, tiny):
    r = cli("train", "--data", mixtures, "--out", tmp_path / "run", "--epochs", "1", *tiny,
            "train.monitor=val_accuracy")
    assert r.rc == 2 and "train.monitor=val_accuracy does not fit a multilabel task" in r.err
    df = pd.read_csv(mixtures)
    assert df["label"].str.contains(";").all()


@pytest.mark.slow
def test_a_fresh_multilabel_model_starts_at_the_label_prior(mixtures, tmp_path, cli, tiny, monkeypatch):
    from clipwise.models.classifier import AudioClassifier
    from clipwise.training.data import prior_logits

    seen = []
    original = AudioClassifier.init_output_bias

    def record(self, bias):
        seen.append(torch.as_tensor(bias).clone())
        return original(self, bias)

    monkeypatch.setattr(AudioClassifier, "init_output_bias", record)
    r = cli("train", "--data", mixtures, "--out", tmp_path / "run", "--epochs", "1", *tiny)
    assert r.rc == 0, r.err
    (bias,) = seen
    train = pd.read_csv(tmp_path / "run" / "splits.csv").query("split == 'train'")
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert sorted(labels) == sorted(CLASSES)
    counts = np.array([train["label"].str.split(";").apply(lambda ls, c=c: c in ls).sum() for c in labels])
    p = (counts + 0.5) / (len(train) + 1)
    torch.testing.assert_close(bias, torch.tensor(np.log(p / (1 - p)), dtype=torch.float32))
    # by hand: 1 of 3 clips carries class 0, all carry class 1, none class 2
    torch.testing.assert_close(prior_logits(np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0]]), 3),
                               torch.tensor([np.log(1.5 / 2.5), np.log(3.5 / 0.5), np.log(0.5 / 3.5)],
                                            dtype=torch.float32))
    # balanced class weights make p = 0.5 the right start, so the bias is left alone
    seen.clear()
    r = cli("train", "--data", mixtures, "--out", tmp_path / "balanced", "--epochs", "1", *tiny,
            "train.class_weights=balanced")
    assert r.rc == 0, r.err
    assert seen == []


@pytest.mark.slow
def test_overlay_trains_a_multilabel_run_and_is_refused_for_single_label_data(mixtures, make_manifest, tmp_path,
                                                                               cli, tiny):
    r = cli("train", "--data", mixtures, "--out", tmp_path / "ml", "--epochs", "1", *tiny, "augment.overlay=0.5")
    assert r.rc == 0, r.err
    assert RunFolder(tmp_path / "ml").load_config_dict()["augment"]["overlay"] == 0.5
    single = make_manifest("ml5x12", classes=CLASSES, n_per_class=12, duration_seconds=0.5)
    r = cli("train", "--data", single, "--out", tmp_path / "sl", "--epochs", "1", *tiny, "augment.overlay=0.5")
    assert r.rc == 2 and "augment.overlay" in r.err and "multi-label" in r.err
