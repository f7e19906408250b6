"""`clipwise compare`: runs, CV folders and Lightning logs in one leaderboard with intervals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clipwise.evaluate.compare import collect
from clipwise.evaluate.metrics import proportion_interval
from clipwise.run import RunFolder

LABELS = ["a", "b", "c"]


def _run(root, accuracy: float, n: int = 60, seed: int = 0) -> RunFolder:
    run = RunFolder(root)
    run.write_info(kind="deep", task="multiclass")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    right = rng.permutation(n)[: round(accuracy * n)]
    probs[right] = 0.05
    probs[right, y[right]] = 0.9
    wrong = np.setdiff1d(np.arange(n), right)
    probs[wrong] = 0.05
    probs[wrong, (y[wrong] + 1) % 3] = 0.9
    run.save_labels(LABELS)
    run.save_predictions("test", [f"x{i}.wav" for i in range(n)], y, probs)
    run.save_summary({"test": {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "n": n},
                      "model": {"name": "audiocnn", "params": 1000}, "timing": {"train_seconds": 120}})
    return run


def test_runs_cv_and_lightning_logs_rank_together_with_their_intervals(tmp_path, cli):
    _run(tmp_path / "good", 0.9)
    _run(tmp_path / "bad", 0.5, seed=1)
    cv = tmp_path / "cvrun"
    cv.mkdir()
    (cv / "cv_summary.json").write_text(json.dumps({"task": "multiclass", "folds": {}, "train_minutes_total": 10.0, "mean": {
        "accuracy": {"mean": 0.7, "std": 0.05, "ci_low": 0.64, "ci_high": 0.76, "n": 5}}}))
    log = tmp_path / "lit" / "lightning_logs" / "version_0"
    log.mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1, 2], "val_acc": [0.4, 0.8, 0.75], "train_loss": [2, 1, 0.5]}).to_csv(
        log / "metrics.csv", index=False)
    entries = collect([tmp_path / "bad", cv, tmp_path / "lit", tmp_path / "good"], metric="accuracy")
    assert [(e.name, e.kind) for e in entries] == [("good", "run"), ("lit/version_0", "lightning"),
                                                   ("cvrun", "cv"), ("bad", "run")]
    assert entries[1].value == 0.8 and entries[1].ci_low is None
    assert (entries[0].ci_low, entries[0].ci_high) == pytest.approx(proportion_interval(54, 60))
    assert (entries[2].std, entries[2].n) == (0.05, 5)
    r = cli("compare", tmp_path / "good", tmp_path / "bad", cv, "--out", tmp_path / "lb")
    assert r.rc == 0, r.err
    assert "| 1 | good | run | 0.9000 |" in r.out and "| 2 | cvrun | cv | 0.7000 | 0.0500 | [0.6400, 0.7600] | 5 |" in r.out
    table = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert list(table["name"]) == ["good", "cvrun", "bad"] and (tmp_path / "lb" / "leaderboard.png").stat().st_size


def test_a_perfect_run_plots(tmp_path):
    from clipwise.evaluate.compare import write_leaderboard

    _run(tmp_path / "perfect", 1.0, n=300)
    entries = collect([tmp_path / "perfect"])
    assert entries[0].ci_high == pytest.approx(1.0)
    assert write_leaderboard(entries, tmp_path / "lb", metric="accuracy", split="test").is_file()


def test_other_metrics_get_a_bootstrap_interval_and_loss_ranks_lowest_first(tmp_path):
    _run(tmp_path / "good", 0.9)
    [entry] = collect([tmp_path / "good"], metric="macro_f1")
    assert entry.ci_low < entry.value < entry.ci_high and entry.ci_high - entry.ci_low < 0.4
    log = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0, 1], "val_loss": [0.9, 0.4]}).to_csv(log, index=False)
    assert collect([log], metric="loss")[0].value == 0.4


def test_unknown_paths_and_metrics_are_named(tmp_path, cli):
    _run(tmp_path / "good", 0.9)
    r = cli("compare", tmp_path / "good", "--metric", "lwlrap")
    assert r.rc == 2 and "has no test 'lwlrap'" in r.err and "accuracy" in r.err
    (tmp_path / "empty").mkdir()
    r = cli("compare", tmp_path / "empty")
    assert r.rc == 2 and "is not a run folder" in r.err


def test_a_protocol_that_shares_sources_is_explained(tmp_path):
    from clipwise.evaluate.compare import leaderboard_markdown

    seen = _run(tmp_path / "official", 0.99)
    summary = seen.load_summary()
    seen.save_summary({**summary, "data": {"groups_shared": {"train_val": 6, "train_test": 6}}})
    _run(tmp_path / "unseen", 0.8, seed=2)
    entries = collect([tmp_path / "official", tmp_path / "unseen"])
    assert [e.shared for e in entries] == ["6 group(s)", ""]
    text = leaderboard_markdown(entries, metric="accuracy", split="test")
    assert "official was tested on data whose sources its training shared (6 group(s))" in text
    assert "unseen kept training and test sources apart" in text


def test_multilabel_runs_rank_by_lwlrap_unless_told_otherwise(tmp_path, cli):
    """The default metric follows the task: multi-label runs have no accuracy, and used to be refused."""
    for name, score in (("tagger_a", 0.71), ("tagger_b", 0.83)):
        RunFolder(tmp_path / name).write_info(kind="deep", task="multilabel")
        RunFolder(tmp_path / name).save_summary({"test": {"lwlrap": score, "mAP": score - 0.1, "macro_f1": 0.5,
                                                          "n": 40}})
    r = cli("compare", tmp_path / "tagger_a", tmp_path / "tagger_b")
    assert r.rc == 0, r.err
    assert "lwlrap" in r.out and r.out.index("tagger_b") < r.out.index("tagger_a")
    r = cli("compare", tmp_path / "tagger_a", tmp_path / "tagger_b", "--metric", "mAP")
    assert r.rc == 0 and "0.7300" in r.out
    _run(tmp_path / "classifier", 0.9)
    r = cli("compare", tmp_path / "tagger_a", tmp_path / "classifier")
    assert r.rc == 2 and "multi-label" in r.err and "--metric" in r.err
    r = cli("compare", tmp_path / "tagger_a", tmp_path / "classifier", "--metric", "macro_f1")
    assert r.rc == 0, r.err


def test_a_diverged_run_ranks_last_and_runs_on_other_test_sets_are_flagged(tmp_path, cli):
    a, b = _run(tmp_path / "a", 0.7, seed=1), _run(tmp_path / "b", 0.6, seed=1)
    broken = _run(tmp_path / "broken", 0.9, seed=1)
    summary = broken.load_summary()
    broken.save_summary({**summary, "diverged": "non-finite training loss at epoch 3"})
    r = cli("compare", a.root, b.root, broken.root)
    assert r.rc == 0, r.err
    rows = [ln for ln in r.out.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert [row.split("|")[2].strip() for row in rows] == ["a", "b", "broken"]  # 0.9, but diverged: last
    assert "diverged" in rows[-1] and "Diverged entries" in r.out and "test set" not in r.out
    other = _run(tmp_path / "other", 0.8, n=50, seed=2)  # 50 other clips
    r = cli("compare", a.root, other.root)
    assert "test set A" in r.out and "test set B" in r.out and "different test sets" in r.out
