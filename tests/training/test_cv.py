"""`clipwise cv`: every fold trained once, finished folds kept, an interrupted fold resumed, one report with
mean, std and a 95 % interval computed from the folds' own files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

ONE_EPOCH = ("--epochs", "1")


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, make_manifest, tiny):
    """A finished 3-fold CV of the 4-class synthetic set (it has groups and a split column, no folds)."""
    from clipwise.cli import main

    manifest = make_manifest("cv4x6")
    out = tmp_path_factory.mktemp("cv") / "cv"
    assert main(["cv", "--data", str(manifest), "--folds", "3", "--out", str(out), *ONE_EPOCH, *tiny]) == 0
    return manifest, out


@pytest.mark.slow
def test_every_fold_is_tested_once_with_groups_kept_whole(cv_run):
    manifest, out = cv_run
    folds = pd.read_csv(out / "folds.csv")
    assert sorted(folds["fold"].unique()) == [1, 2, 3] and "split" not in folds
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    tested = []
    for k in (1, 2, 3):
        splits = pd.read_csv(out / f"fold{k}" / "splits.csv")
        test = splits[splits["split"] == "test"]
        assert set(test["path"]) == set(folds.loc[folds["fold"] == k, "path"])
        tested += list(test["path"])
    assert sorted(tested) == sorted(folds["path"])  # each clip is a test clip exactly once


@pytest.mark.slow
def test_summary_mean_std_and_interval_come_from_the_fold_summaries(cv_run):
    _, out = cv_run
    summary = json.loads((out / "cv_summary.json").read_text())
    acc = np.array([json.loads((out / f"fold{k}" / "summary.json").read_text())["test"]["accuracy"] for k in (1, 2, 3)])
    m = summary["mean"]["accuracy"]
    half = stats.t.ppf(0.975, 2) * acc.std(ddof=1) / np.sqrt(3)
    assert m["mean"] == pytest.approx(acc.mean(), abs=1e-6) and m["std"] == pytest.approx(acc.std(ddof=1), abs=1e-6)
    assert (m["ci_low"], m["ci_high"]) == pytest.approx((acc.mean() - half, acc.mean() + half), abs=1e-6)
    assert summary["pooled"]["n"] == 24 and summary["finished"] == [1, 2, 3]
    table = pd.read_csv(out / "cv_folds.csv")
    assert table["accuracy"].to_numpy() == pytest.approx(acc, abs=1e-6)
    report = (out / "report.md").read_text()
    assert "| **mean ± std** |" in report and "95 % interval" in report and "Incomplete" not in report
    assert (out / "figures" / "folds.png").stat().st_size > 0
    assert (out / "figures" / "confusion_matrix.png").stat().st_size > 0


@pytest.mark.slow
def test_a_rerun_keeps_finished_folds_and_resumes_an_interrupted_one(cv_run, cli, tiny):
    manifest, out = cv_run
    before = {k: (out / f"fold{k}" / "summary.json").stat().st_mtime_ns for k in (1, 3)}
    (out / "fold2" / "summary.json").unlink()  # fold 2 now looks interrupted after its last checkpoint
    r = cli("cv", "--data", manifest, "--folds", "3", "--out", out, *ONE_EPOCH, *tiny)
    assert r.rc == 0, r.err
    assert "fold 1: finished earlier, kept" in r.out and "fold 2: resuming from" in r.out
    assert {k: (out / f"fold{k}" / "summary.json").stat().st_mtime_ns for k in (1, 3)} == before
    assert (out / "fold2" / "summary.json").is_file()


@pytest.mark.slow
def test_only_some_folds_gives_an_incomplete_report(make_manifest, tmp_path, cli, tiny):
    manifest = make_manifest("cv4x6")
    r = cli("cv", "--data", manifest, "--folds", "3", "--only", "2", "--out", tmp_path / "cv", *ONE_EPOCH, *tiny)
    assert r.rc == 0, r.err
    report = (tmp_path / "cv" / "report.md").read_text()
    assert "Folds finished: 1 of 3 (2)" in report and "**Incomplete:** fold(s) 1, 3" in report


def test_a_fold_column_is_used_and_a_leaking_group_is_refused_before_any_training(make_manifest, tmp_path, cli,
                                                                                    tiny):
    src = make_manifest("cv4x6")
    df = pd.read_csv(src).drop(columns=["split"])
    df["path"] = [str((src.parent / p).resolve()) for p in df["path"]]
    df["fold"] = np.arange(len(df)) % 2 + 1  # the two clips of each recording land in different folds
    manifest = tmp_path / "folds.csv"
    df.to_csv(manifest, index=False)
    r = cli("cv", "--data", manifest, "--out", tmp_path / "cv", *ONE_EPOCH, *tiny)
    assert r.rc == 2 and "test fold 1:" in r.err and "--allow-leakage" in r.err
    assert not list((tmp_path / "cv").glob("fold[0-9]*"))  # folds.csv is written, no fold trained
    r = cli("cv", "--data", manifest, "--folds", "3", "--out", tmp_path / "cv3", *ONE_EPOCH, *tiny)
    assert r.rc == 2 and "has 2 folds of its own" in r.err


@pytest.mark.slow
def test_train_cv_is_the_cv_command(make_manifest, tmp_path, cli, tiny):
    manifest = make_manifest("cv4x6")
    r = cli("train", "--data", manifest, "--cv", "3", "--out", tmp_path / "cv", *ONE_EPOCH, *tiny)
    assert r.rc == 0, r.err
    assert sorted(pd.read_csv(tmp_path / "cv" / "folds.csv")["fold"].unique()) == [1, 2, 3]
    assert (tmp_path / "cv" / "cv_summary.json").is_file() and "cross-validation folder" in r.out
    r = cli("train", "--data", manifest, "--cv", "--test-fold", "1", "--out", tmp_path / "x", *tiny)
    assert r.rc == 2 and "--cv runs every fold" in r.err


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_setting_after_a_bare_cv_is_explained_not_taken_for_a_fold_count(command, tmp_path, capsys):
    """argparse hands --cv's optional number the next word: `--cv train.epochs=3` used to end in 'invalid int
    value'; the error now says how to write it."""
    from clipwise.cli import main

    for bad, says in (("train.epochs=3", "'train.epochs=3' as its number of folds: write --cv 0"),
                      ("1", "--cv 1: use 0")):
        with pytest.raises(SystemExit) as e:
            main([command, "--data", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"), "--cv", bad])
        assert e.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.slow
def test_a_multilabel_cross_validation_reports_lwlrap(make_manifest, tmp_path, cli, tiny):
    """Multi-label folds are summarised by lwlrap / mAP (per fold, mean and interval, pooled out-of-fold) and a
    per-class AP table; the report used to assume single-label predictions and `clipwise cv` failed after
    training every fold."""
    from clipwise.data.manifest import read_manifest
    from clipwise.data.mixtures import make_mixtures
    from clipwise.evaluate.multilabel import lwlrap
    from clipwise.run import RunFolder

    src = make_manifest("ml4x6", classes=("tone", "white_noise", "click_train", "chirp_up"), n_per_class=6,
                        duration_seconds=0.5)
    mixtures = make_mixtures(read_manifest(src), tmp_path / "mix", n_per_side={"train": 24, "val": 8, "test": 8},
                             seed=0)
    out = tmp_path / "cv"
    r = cli("cv", "--data", mixtures, "--folds", "3", "--allow-leakage", "--out", out, "--epochs", "1", *tiny)
    assert r.rc == 0, r.err
    assert "lwlrap" in r.out and "accuracy" not in r.out
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["metric"] == "lwlrap"
    folds = {k: RunFolder(out / f"fold{k}").load_summary() for k in (1, 2, 3)}
    assert summary["mean"]["lwlrap"]["mean"] == pytest.approx(np.mean([s["test"]["lwlrap"] for s in folds.values()]))
    assert {"lwlrap", "mAP", "macro_f1", "micro_f1", "loss"} <= set(summary["mean"])
    assert summary["folds"]["1"]["val_lwlrap"] == pytest.approx(folds[1]["val"]["lwlrap"])
    # pooled: the out-of-fold predictions of all folds, ranked together
    parts = [RunFolder(out / f"fold{k}").load_predictions("test") for k in (1, 2, 3)]
    y = np.concatenate([p[2] for p in parts])
    probs = np.concatenate([p[1] for p in parts])
    assert summary["pooled"]["n"] == len(y) == sum(s["test"]["n"] for s in folds.values())
    assert summary["pooled"]["lwlrap"] == pytest.approx(lwlrap(y, probs), abs=1e-6)
    report = (out / "report.md").read_text()
    assert "| fold | lwlrap | mAP |" in report and "| class | AP | positives |" in report
    assert "confusion" not in report.lower() and "Prior baseline" in report
    assert (out / "figures" / "folds.png").is_file()
