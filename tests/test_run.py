"""The run folder: round trips, atomic writes and the errors a user sees."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from clipwise.errors import ConfigError, RunError
from clipwise._io import atomic_path, atomic_write_text
from clipwise.run import RunFolder

LABELS = ["dog", "NA", "rain, heavy"]  # "NA" must not become NaN; a comma must survive the CSV


@pytest.fixture
def run(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_info(kind="deep", task="multiclass")
    run.save_config_yaml({"model": {"name": "cnn"}, "train": {"lr": 0.000123456789, "epochs": 3}})
    run.save_labels(LABELS)
    return run


def test_paths_follow_the_documented_layout(tmp_path):
    run = RunFolder(tmp_path)
    assert run.config_path == tmp_path / "config.yaml"
    assert run.labels_path == tmp_path / "labels.json"
    assert run.metrics_path == tmp_path / "metrics.csv"
    assert run.summary_path == tmp_path / "summary.json"
    assert run.best_checkpoint == tmp_path / "checkpoints" / "best.ckpt"
    assert run.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert run.figures_dir == tmp_path / "figures"
    assert run.report_path == tmp_path / "report.md"
    assert run.predictions_path("test") == tmp_path / "predictions_test.csv"
    assert os.fspath(run) == os.fspath(tmp_path)
    with pytest.raises(ConfigError, match="split must be a plain name"):
        run.predictions_path("../escape")


def test_open_names_the_missing_config_and_the_fix(tmp_path):
    for folder in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(RunError) as err:
            RunFolder.open(folder)
        assert f"{folder} is not a clipwise run folder" in str(err.value)
        assert "pass the folder that `clipwise train --out` wrote" in str(err.value)
    with pytest.raises(RunError, match="config.yaml missing"):
        RunFolder.open(tmp_path)


def test_config_and_labels_round_trip(run):
    opened = RunFolder.open(run.root)
    config = opened.load_config_dict()
    assert config["train"]["lr"] == 0.000123456789  # the config is never rounded
    assert config == {"model": {"name": "cnn"}, "train": {"lr": 0.000123456789, "epochs": 3}}
    assert opened.load_labels() == LABELS


def test_labels_must_be_unique_non_empty_strings(run):
    with pytest.raises(ConfigError, match="unique.*'dog'"):
        run.save_labels(["dog", "cat", "dog"])
    with pytest.raises(ConfigError, match="non-empty strings"):
        run.save_labels(["dog", ""])
    assert run.load_labels() == LABELS  # the failed saves left the file alone


def test_summary_converts_numpy_and_rounds_floats(run):
    run.save_summary(
        {
            "test": {"accuracy": np.float32(0.75), "log_loss": 0.123456789, "n": np.int64(8)},
            "per_class": np.array([1, 2]),
            "flag": np.bool_(True),
            "diverged": float("nan"),
        }
    )
    text = run.summary_path.read_text()
    assert "NaN" not in text  # strict JSON
    assert run.load_summary() == {
        "test": {"accuracy": 0.75, "log_loss": 0.123457, "n": 8},
        "per_class": [1, 2],
        "flag": True,
        "diverged": None,
    }


def test_update_summary_merges_sections(run):
    assert run.load_summary() == {}
    run.save_summary({"data": {"n_train": 10, "silent_clips": {"train": 1}}, "best_epoch": 2})
    merged = run.update_summary(data={"skipped_files": 3, "silent_clips": {"val": 0}}, best_epoch=4)
    expected = {
        "data": {"n_train": 10, "silent_clips": {"train": 1, "val": 0}, "skipped_files": 3},
        "best_epoch": 4,
    }
    assert merged == expected
    assert run.load_summary() == expected


def test_predictions_round_trip(run):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]])
    path = run.save_predictions("test", ["a.wav", "b.wav", "c.wav"], np.array([0, -1, 1]), probs)
    header = path.read_text().splitlines()[0]
    assert header == 'path,label,pred,p:dog,p:NA,"p:rain, heavy"'
    frame, loaded, y_true = run.load_predictions("test")
    np.testing.assert_allclose(loaded, probs)
    np.testing.assert_array_equal(y_true, [0, -1, 1])
    assert frame["label"].tolist() == ["dog", "", "NA"]
    assert frame["pred"].tolist() == ["dog", "rain, heavy", "NA"]
    assert frame["path"].tolist() == ["a.wav", "b.wav", "c.wav"]


def test_predictions_without_truth(run):
    run.save_predictions("unlabelled", ["x.wav"], None, np.array([[0.2, 0.3, 0.5]]), labels=LABELS)
    frame, _, y_true = run.load_predictions("unlabelled")
    assert y_true is None and frame["label"].tolist() == [""]


def test_predictions_errors(run):
    with pytest.raises(ConfigError, match=r"probs must have shape \(2, 3\)"):
        run.save_predictions("test", ["a", "b"], [0, 1], np.ones((2, 2)) / 2)
    with pytest.raises(ConfigError, match="y_true must hold 1 class indices below 3"):
        run.save_predictions("test", ["a"], [3], np.ones((1, 3)) / 3)
    with pytest.raises(RunError, match="predictions_val.csv is missing"):
        run.load_predictions("val")
    run.save_predictions("val", ["a"], [0], np.ones((1, 2)) / 2, labels=["dog", "cat"])
    with pytest.raises(RunError, match="do not match .*labels.json"):
        run.load_predictions("val")


def test_metrics_keep_nan_apart_from_missing(run):
    run.append_metrics({"epoch": 0, "lr": np.float64(1e-3), "train_loss": 1.5, "val_loss": float("nan")})
    run.append_metrics({"epoch": 1, "lr": 1e-3, "train_loss": float("inf"), "val_accuracy": np.float32(0.5)})
    lines = run.metrics_path.read_text().splitlines()
    assert lines == [
        "epoch,lr,train_loss,val_loss,val_accuracy",
        "0,0.001,1.5,nan,",
        "1,0.001,inf,,0.5",
    ]
    frame = run.read_metrics()
    assert frame["epoch"].tolist() == [0, 1]
    assert np.isnan(frame["val_loss"]).all() and np.isinf(frame["train_loss"][1])


def test_missing_and_corrupt_files_raise_run_error(run):
    with pytest.raises(RunError, match=r"metrics.csv is missing: the run folder is incomplete.*--out"):
        run.read_metrics()
    run.summary_path.write_text("{not json")
    with pytest.raises(RunError, match="summary.json is not valid JSON"):
        run.load_summary()
    run.labels_path.write_text(json.dumps({"dog": 0}))
    with pytest.raises(RunError, match="must hold a JSON list of label names"):
        run.load_labels()


def test_a_failed_write_leaves_the_old_file_and_no_temp_files(run, monkeypatch):
    run.save_summary({"best_epoch": 1})
    before = sorted(p.name for p in run.root.iterdir())
    with pytest.raises(TypeError):
        run.save_summary({"best_epoch": object()})  # not serialisable: fails before anything is written

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        run.save_summary({"best_epoch": 2})
    with pytest.raises(OSError, match="disk full"):
        run.append_metrics({"epoch": 0})
    monkeypatch.undo()
    assert run.load_summary() == {"best_epoch": 1}
    assert sorted(p.name for p in run.root.iterdir()) == before


def test_atomic_path_keeps_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "figure.png"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.suffix == ".png"
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert list(target.parent.iterdir()) == []
    atomic_write_text(target, "whole")
    assert target.read_text() == "whole" and list(target.parent.iterdir()) == [target]
