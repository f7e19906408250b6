"""Integration: train on a handful of clips until the model overfits, then check the whole run folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from clipwise.config import load_config
from clipwise.evaluate.metrics import majority_baseline
from clipwise.run import RunFolder
from clipwise.training.fit import train
from clipwise.task import get_task

pytestmark = [pytest.mark.filterwarnings("ignore:.*LeafSpec"), pytest.mark.slow]  # every test trains
EPOCHS = 40  # 1 optimiser step per epoch; BatchNorm's running statistics need about 30 to catch up
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(synth_manifest, tiny, no_augment, tmp_path_factory) -> RunFolder:
    overrides = [
        f"data.manifest={synth_manifest}", *tiny, *no_augment,
        f"train.epochs={EPOCHS}", "train.patience=null", "optim.warmup_epochs=1",
    ]  # fmt: skip
    return RunFolder(train(load_config(overrides=overrides), out=tmp_path_factory.mktemp("overfit") / "run"))


def test_loss_falls_and_clean_train_accuracy_rises(run):
    metrics = run.read_metrics()
    assert list(metrics["epoch"]) == list(range(EPOCHS))
    loss = metrics["train_loss"].to_numpy()
    assert np.isfinite(loss).all()
    assert loss[-1] < loss[0] / 2, f"training loss did not fall: {loss[0]:.3f} -> {loss[-1]:.3f}"
    clean = metrics["train_clean_accuracy"].to_numpy()
    assert clean[-1] >= 0.9, f"clean-train accuracy only reached {clean[-1]:.3f}: {clean.tolist()}"
    assert clean[-1] > clean[0]
    # clean-train scoring is the eval-mode model on unaugmented clips: its loss falls too
    assert metrics["train_clean_loss"].iloc[-1] < metrics["train_clean_loss"].iloc[0]


def test_run_folder_has_every_artefact(run):
    for name in ("config.yaml", "labels.json", "metrics.csv", "summary.json", "report.md", "splits.csv",
                 "predictions_test.csv", "predictions_val.csv", "predictions_train_clean.csv",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"):  # fmt: skip
        assert (run.root / name).is_file(), f"{name} missing from the run folder"
        assert (run.root / name).stat().st_size > 0, f"{name} is empty"
    for name in ("curves.png", "confusion_matrix.png"):
        assert (run.figures_dir / name).read_bytes()[:8] == PNG_MAGIC, f"figures/{name} is not a PNG"
    assert not (run.root / "skipped_files.csv").exists()
    assert not (run.root / "lightning_logs").exists()
    assert "accuracy" in run.report_path.read_text().lower()


def test_config_and_labels_are_resolved(run, synth_manifest):
    config = yaml.safe_load(run.config_path.read_text())
    assert config["data"]["manifest"] == str(synth_manifest)
    assert config["data"]["sample_rate"] == 16000  # "auto" resolved from the files
    assert config["data"]["clip_seconds"] == pytest.approx(0.5)
    assert config["augment"]["mixup_alpha"] == 0 and config["augment"]["specaugment"] is False
    assert config["train"]["epochs"] == EPOCHS
    load_config(overrides=None, base=config)  # the saved config is itself a valid config
    assert json.loads(run.labels_path.read_text()) == sorted(["tone", "white_noise", "click_train", "chirp_up"])


def test_metrics_columns(run):
    columns = set(run.read_metrics().columns)
    expected = {"epoch", "lr", "train_loss", "val_loss", "val_accuracy", "val_macro_f1",
                "train_clean_loss", "train_clean_accuracy", "train_clean_macro_f1"}  # fmt: skip
    assert expected <= columns, f"missing: {sorted(expected - columns)}"
    seconds = run.read_metrics()["epoch_seconds"]
    assert (seconds > 0).all() and seconds.sum() <= run.load_summary()["timing"]["train_seconds"] + 0.1


def test_summary_sections(run):
    summary = run.load_summary()
    for split, n in (("test", 8), ("val", 8), ("train_clean", 8)):
        assert summary[split]["n"] == n
        assert 0.0 <= summary[split]["accuracy"] <= 1.0
    assert summary["epochs_run"] == EPOCHS
    assert summary["data"]["silent_clips"] == {"train": 0, "val": 0, "test": 0}
    assert summary["data"]["skipped_files"] == 0
    assert summary["data"]["n_classes"] == 4
    assert summary["interrupted"] is False
    assert summary["distributed"]["world_size"] == 1 and summary["distributed"]["weights_identical"] is True


def test_best_epoch_is_the_first_best_validation_epoch(run):
    summary = run.load_summary()
    metrics = run.read_metrics()
    best = int(metrics["val_accuracy"].to_numpy().argmax())  # the first epoch with the highest accuracy
    assert summary["best_epoch"] == best
    assert torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)["epoch"] == best
    assert torch.load(run.last_checkpoint, map_location="cpu", weights_only=False)["epoch"] == EPOCHS - 1


@pytest.mark.parametrize("split", ["test", "val", "train_clean"])
def test_summary_metrics_recompute_from_predictions(run, split):
    frame, probs, y = run.load_predictions(split)
    labels = run.load_labels()
    assert y is not None and (y >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert list(frame["pred"]) == [labels[i] for i in probs.argmax(axis=1)]
    recomputed = get_task("multiclass").metrics(y, probs, labels=labels)
    stored = run.load_summary()[split]
    assert set(stored) == set(recomputed)
    for key, value in recomputed.items():
        assert stored[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_predictions_cover_the_split_and_baseline_recomputes(run):
    splits = pd.read_csv(run.root / "splits.csv", dtype=str, keep_default_na=False)
    test_frame, _, _ = run.load_predictions("test")
    assert sorted(test_frame["path"]) == sorted(splits.loc[splits["split"] == "test", "path"])
    labels = run.load_labels()
    encode = lambda part: np.array([labels.index(v) for v in part["label"]])  # noqa: E731
    baseline = majority_baseline(encode(splits[splits["split"] == "train"]), encode(splits[splits["split"] == "test"]))
    stored = run.load_summary()["baseline"]
    for key, value in baseline.items():
        assert stored[key] == pytest.approx(value), key


def test_training_stops_once_validation_is_perfect(make_manifest, tiny, no_augment, tmp_path):
    """No checkpoint can beat a perfect accuracy, so the epochs after it would be wasted: training stops there."""
    manifest = make_manifest("tone-vs-noise", classes=("tone", "white_noise"), n_per_class=8)
    overrides = [f"data.manifest={manifest}", *tiny, *no_augment,
                 f"train.epochs={EPOCHS}", "train.patience=30", "optim.warmup_epochs=1",
                 # with BatchNorm re-estimated on clean clips this easy pair is often perfect after one epoch;
                 # the test wants a run that learns over a few epochs before the stop
                 "train.precise_bn=0"]  # fmt: skip
    run = RunFolder(train(load_config(overrides=overrides), out=tmp_path / "run"))
    metrics, summary = run.read_metrics(), run.load_summary()
    val = metrics["val_accuracy"].to_numpy()
    assert val[-1] == 1.0 and (val[:-1] < 1.0).all(), str(val.tolist())
    assert summary["epochs_run"] == len(val) < EPOCHS and summary["stopped_early"] is True
    assert summary["best_epoch"] == len(val) - 1
    assert len(val) > 1  # it learned first: the stop is not a lucky first epoch
