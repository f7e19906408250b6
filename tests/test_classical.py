"""Classical baselines: summary features + scikit-learn, trained, scored and reported like a deep model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipwise.kinds.classical import CLASSICAL_MODELS, summary_features


@pytest.fixture(scope="module")
def manifest(make_manifest):
    return make_manifest("classical4x12", n_per_class=12, duration_seconds=0.5)


def test_summary_features_have_a_fixed_length_whatever_the_clip_length():
    rng = np.random.default_rng(0)
    short, long = rng.standard_normal(800).astype(np.float32), rng.standard_normal(48000).astype(np.float32)
    a, b = summary_features(short, 16000), summary_features(long, 16000)
    assert a.shape == b.shape and np.isfinite(a).all() and np.isfinite(b).all()
    only = summary_features(long, 16000, features=("mfcc",), stats=("mean",), n_mfcc=13)
    assert only.shape == (13 * 3,)  # MFCCs, deltas and delta-deltas


@pytest.mark.slow
def test_svm_baseline_writes_a_full_run_folder_and_predicts(manifest, tmp_path, cli):
    out = tmp_path / "svm"
    r = cli("train", "--data", manifest, "--model", "svm_rbf", "--out", out, "train.progress=false")
    assert r.rc == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.75  # four clearly distinct synthetic classes
    assert summary["model"]["kind"] == "classical" and summary["data"]["n_features"] > 100
    for name in ("model.skops", "report.md", "report.html", "predictions_test.csv", "labels.json", "leakage.json"):
        assert (out / name).is_file(), name
    assert "Majority-class baseline" in (out / "report.md").read_text()
    r = cli("evaluate", out, "--format", "json")
    assert r.rc == 0, r.err
    assert json.loads(r.out)["metrics"]["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    r = cli("predict", out, manifest.parent / "audio" / "tone", "--format", "json", "--top-k", "1")
    assert r.rc == 0, r.err
    tops = [row["top"][0]["label"] for row in json.loads(r.out)]
    assert tops.count("tone") >= 0.75 * len(tops)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(set(CLASSICAL_MODELS) - {"svm_rbf"}))
def test_every_baseline_trains(manifest, tmp_path, cli, model):
    r = cli("train", "--data", manifest, "--model", model, "--out", tmp_path / model, "train.progress=false")
    assert r.rc == 0, r.err
    assert json.loads((tmp_path / model / "summary.json").read_text())["test"]["accuracy"] > 0.25


@pytest.mark.slow
def test_features_are_cached_per_clip(manifest, tmp_path, cli, monkeypatch):
    import clipwise.kinds.classical as classical

    assert cli("train", "--data", manifest, "--model", "logreg", "--out", tmp_path / "a",
               "train.progress=false").rc == 0
    calls = []
    real = classical.summary_features
    monkeypatch.setattr(classical, "summary_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert cli("train", "--data", manifest, "--model", "logreg", "--out", tmp_path / "b",
               "train.progress=false").rc == 0
    assert calls == []
    assert cli("train", "--data", manifest, "--model", "logreg", "--out", tmp_path / "c", "train.progress=false",
               "classical.n_mfcc=13").rc == 0
    assert len(calls) == 48  # another feature config: every clip again


def test_bad_estimator_params_are_named(manifest, tmp_path, cli):
    r = cli("train", "--data", manifest, "--model", "logreg", "--out", tmp_path / "x", "model.params.nope=1",
            "train.progress=false")
    assert r.rc == 2 and "not accepted by the logreg baseline" in r.err
