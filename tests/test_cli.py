"""The ``clipwise`` command end to end: list, prepare, train, evaluate, predict (in-process and as a real process)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clipwise.data.audio import frame_windows, load_audio
from clipwise.data.manifest import read_manifest
from clipwise.kinds import load_run
from clipwise.run import RunFolder


def _subprocess(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("CLIPWISE_RUN_DIR", None)
    return subprocess.run([sys.executable, "-m", "clipwise", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)  # fmt: skip


@pytest.fixture
def run_dir(two_epoch_run) -> Path:
    """The session's 2-epoch run (two_epoch_run in tests/conftest.py), read-only. `evaluate` writes into the run
    folder, so the evaluate tests take a copy (two_epoch_copy)."""
    return two_epoch_run


# -- listing -------------------------------------------------------------------------------------------------------
def test_datasets_lists_the_recipes(cli):
    result = cli("datasets")
    assert result.rc == 0
    names = [line.split()[0] for line in result.out.splitlines() if line.strip()]
    assert "esc50" in names and "fsdd" in names


def test_models_lists_builtin_and_timm_models(cli):
    result = cli("models")
    assert result.rc == 0
    rows = {line.split()[0]: line for line in result.out.splitlines()[1:] if line.strip()}
    assert "audiocnn" in rows and "(default)" in rows["audiocnn"]
    assert "audiocnn_small" in rows
    for name in ("resnet18", "efficientnet_b0", "mobilenetv4_conv_small"):
        assert name in rows and "timm" in rows[name]


def test_real_process_lists_models():
    result = _subprocess("models")
    assert result.returncode == 0, result.stderr
    assert "audiocnn" in result.stdout and "resnet18" in result.stdout
    assert "Traceback" not in result.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("clipwise")  # [project.scripts] in pyproject.toml
    assert script.is_file(), f"no clipwise console script next to {sys.executable}; reinstall the package"
    result = subprocess.run([str(script), "datasets"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "esc50" in result.stdout and "fsdd" in result.stdout


# -- prepare -------------------------------------------------------------------------------------------------------
def test_prepare_from_class_folders(cli, tmp_path, wav_writer, make_tone):
    tree = tmp_path / "tree"
    for label, freq in (("dog", 300.0), ("cat", 900.0)):
        for i in range(3):
            wav_writer(tree / label / f"{label}{i}.wav", make_tone(freq, seed=i))
    (tree / "cat" / "notes.txt").write_text("not audio")
    out = tmp_path / "tree.csv"
    result = cli("prepare", tree, "--out", out)
    assert result.rc == 0, result.err
    assert "6 clips, 2 labels" in result.out
    assert pd.read_csv(out)["path"].str.startswith("tree/").all()  # relative to the manifest's folder
    df = read_manifest(out)
    assert sorted(df["label"].value_counts().items()) == [("cat", 3), ("dog", 3)]
    assert all(Path(p).is_file() and Path(p).parent.name == lab for p, lab in zip(df["path"], df["label"]))


def test_prepare_from_csv_with_other_column_names(cli, tmp_path, wav_writer, make_tone):
    rows = []
    for i, category in enumerate(["low", "high", "low", "high"]):
        wav_writer(tmp_path / "clips" / f"c{i}.wav", make_tone(200.0 if category == "low" else 2000.0, seed=i))
        rows.append({"file_name": f"clips/c{i}.wav", "category": category, "speaker": f"s{i % 2}"})
    source = tmp_path / "meta.csv"
    pd.DataFrame(rows).to_csv(source, index=False)
    out = tmp_path / "manifest.csv"
    result = cli("prepare", source, "--out", out, "--path-column", "file_name", "--label-column", "category",
                 "--group-column", "speaker")  # fmt: skip
    assert result.rc == 0, result.err
    assert "4 clips, 2 labels" in result.out and "group" in result.out
    df = read_manifest(out)
    assert list(df.columns[:3]) == ["path", "label", "group"]
    assert list(df["label"]) == ["low", "high", "low", "high"]
    assert all(Path(p).is_file() for p in df["path"])


def test_prepare_esc50_from_shared(cli, tmp_path, shared_dataset):
    root = shared_dataset("esc50_16k")
    out = tmp_path / "esc50.csv"
    result = cli("prepare", "esc50", "--root", root, "--out", out)
    assert result.rc == 0, result.err
    assert "2000 clips, 50 labels" in result.out
    df = read_manifest(out)
    assert sorted(df["fold"].unique()) == [1, 2, 3, 4, 5]
    assert (df.groupby("fold").size() == 400).all()
    assert all(Path(p).is_file() for p in df["path"].iloc[::250])


def test_prepare_fsdd_from_shared(cli, tmp_path, shared_dataset):
    out = tmp_path / "fsdd.csv"
    result = cli("prepare", "fsdd", "--root", shared_dataset("fsdd"), "--out", out)
    assert result.rc == 0, result.err
    assert "3000 clips, 10 labels" in result.out
    df = read_manifest(out)
    assert sorted(df["label"].unique()) == [str(d) for d in range(10)]
    assert df["split"].value_counts().to_dict() == {"train": 2700, "test": 300}
    assert df["group"].nunique() == 6
    assert all(Path(p).is_file() for p in df["path"].iloc[::500])


# -- train / evaluate ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_writes_the_run_folder(run_dir):
    run = RunFolder(run_dir)
    assert len(run.read_metrics()) == 2
    summary = run.load_summary()
    assert summary["model"]["name"] == "audiocnn_small"
    assert summary["test"]["n"] == 8
    for name in ("report.md", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "predictions_test.csv"):
        assert (run_dir / name).is_file()


@pytest.mark.slow
def test_evaluate_table_matches_the_summary(cli, two_epoch_copy):
    run_dir = two_epoch_copy
    result = cli("evaluate", run_dir)
    assert result.rc == 0, result.err
    assert "(8 clips, checkpoint best)" in result.out
    accuracy_line = next(line for line in result.out.splitlines() if line.split()[:1] == ["accuracy"])
    summary = RunFolder(run_dir).load_summary()
    assert float(accuracy_line.split()[1]) == pytest.approx(summary["test"]["accuracy"], abs=1e-4)
    # evaluating must not replace the predictions the training wrote
    assert (run_dir / "predictions_test.csv").is_file()
    assert (run_dir / "evaluations" / "predictions_test_best.csv").is_file()


@pytest.mark.slow
def test_evaluate_json(cli, two_epoch_copy):
    run_dir = two_epoch_copy
    result = cli("evaluate", run_dir, "--format", "json", "--split", "val", "--checkpoint", "last")
    assert result.rc == 0, result.err
    data = json.loads(result.out)
    assert data["checkpoint"] == "last"
    assert data["metrics"]["n"] == 8
    assert set(data["metrics"]) >= {"accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "loss"}
    frame, probs, y = RunFolder(Path(data["predictions"]).parent).load_predictions(
        "val_last", task=RunFolder.open(run_dir).task)
    assert len(frame) == 8 and y is not None
    assert data["metrics"]["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == y)))
    assert (run_dir / "predictions_val.csv").is_file()


@pytest.mark.slow
def test_evaluate_on_another_manifest(cli, two_epoch_copy, make_manifest):
    run_dir = two_epoch_copy
    other = make_manifest("other", seed=7, splits=None)  # the same classes, new clips, no split column
    result = cli("evaluate", run_dir, "--data", other, "--format", "json")
    assert result.rc == 0, result.err
    data = json.loads(result.out)
    assert data["metrics"]["n"] == 24
    assert Path(data["predictions"]).name == "predictions_manifest_best.csv"
    assert len(pd.read_csv(data["predictions"])) == 24


# -- predict -------------------------------------------------------------------------------------------------------
def _test_files(run_dir: Path) -> list[str]:
    splits = pd.read_csv(run_dir / "splits.csv")
    return list(splits.loc[splits["split"] == "test", "path"])


@pytest.mark.slow
def test_predict_csv_ranks_the_top_k(cli, run_dir):
    files = _test_files(run_dir)[:3]
    result = cli("predict", run_dir, *files, "--format", "csv", "--top-k", "3")
    assert result.rc == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    labels = RunFolder(run_dir).load_labels()
    assert list(rows[0]) == ["path", "label_1", "prob_1", "label_2", "prob_2", "label_3", "prob_3"]
    assert [r["path"] for r in rows] == files
    for row in rows:
        probs = [float(row[f"prob_{i}"]) for i in (1, 2, 3)]
        assert all(0.0 <= p <= 1.0 for p in probs)
        assert probs == sorted(probs, reverse=True)
        ranked = [row[f"label_{i}"] for i in (1, 2, 3)]
        assert len(set(ranked)) == 3 and set(ranked) <= set(labels)


@pytest.mark.slow
def test_predict_json_matches_the_run_predictions(cli, run_dir):
    """All classes of every test clip: the same numbers the training wrote to predictions_test.csv."""
    frame, probs, _ = RunFolder(run_dir).load_predictions("test")
    result = cli("predict", run_dir, *frame["path"], "--format", "json", "--top-k", "10")
    assert result.rc == 0, result.err
    rows = json.loads(result.out)
    labels = RunFolder(run_dir).load_labels()
    assert [r["path"] for r in rows] == list(frame["path"])
    for row, expected in zip(rows, probs):
        got = [t["probability"] for t in row["top"]]
        assert len(got) == len(labels)  # top-k is capped at the number of classes
        assert got == sorted(got, reverse=True)
        assert sum(got) == pytest.approx(1.0, abs=1e-4)
        by_label = {t["label"]: t["probability"] for t in row["top"]}
        np.testing.assert_allclose([by_label[lab] for lab in labels], expected, atol=1e-5)


@pytest.mark.slow
def test_predict_folder_as_table(cli, run_dir, synth_manifest):
    folder = synth_manifest.parent / "audio" / "tone"
    result = cli("predict", run_dir, folder, "--format", "table", "--top-k", "2")
    assert result.rc == 0, result.err
    assert "#1" in result.out and "#2" in result.out and "#3" not in result.out
    as_json = json.loads(cli("predict", run_dir, synth_manifest.parent / "audio", "--format", "json").out)
    expected = sorted((synth_manifest.parent / "audio").rglob("*.wav"))
    assert [Path(r["path"]) for r in as_json] == expected
    assert all(len(r["top"]) == 3 for r in as_json)


@pytest.mark.slow
def test_predict_a_clip_longer_than_the_model_input(cli, run_dir, tmp_path, wav_writer, make_tone):
    long_clip = wav_writer(tmp_path / "long.wav", make_tone(700.0, duration_seconds=2.0))
    result = cli("predict", run_dir, long_clip, "--format", "json", "--top-k", "10")
    assert result.rc == 0, result.err
    (row,) = json.loads(result.out)
    got = {t["label"]: t["probability"] for t in row["top"]}
    # the mean of the window probabilities, computed here by hand
    predictor = load_run(run_dir)
    spec = predictor.model.spec
    windows = frame_windows(load_audio(long_clip, sample_rate=spec.sample_rate), window_samples=spec.clip_samples,
                            hop_samples=int(spec.clip_samples * predictor.hop_fraction))  # fmt: skip
    assert len(windows) == 7  # 2 s in 0.5 s windows every 0.25 s
    with torch.no_grad():
        expected = torch.softmax(predictor.model(torch.from_numpy(windows)), dim=-1).mean(0).numpy()
    np.testing.assert_allclose([got[lab] for lab in predictor.labels], expected, atol=1e-5)


# -- folds ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_test_fold_puts_that_fold_in_test(cli, tiny, make_manifest, run_dir, tmp_path, monkeypatch):
    source = make_manifest("folds", splits=None)
    df = pd.read_csv(source)
    df["fold"] = [int(g[-1]) % 3 + 1 for g in df["group"]]  # recordings 0, 1, 2 -> folds 1, 2, 3
    manifest = source.with_name("folds.csv")
    df.to_csv(manifest, index=False)
    # no --out: the run goes to runs/<manifest>-<model>-<time> under the working folder, never into an
    # earlier run of this process (run_dir)
    monkeypatch.chdir(tmp_path)
    before = (run_dir / "metrics.csv").read_text()
    result = cli("train", "--data", manifest, "--test-fold", "2", "--epochs", "1", *tiny)
    assert result.rc == 0, result.err
    (created,) = (tmp_path / "runs").iterdir()
    assert created.name.startswith("folds-audiocnn_small-")
    assert (run_dir / "metrics.csv").read_text() == before
    splits = pd.read_csv(created / "splits.csv")
    folds = dict(zip(read_manifest(manifest)["path"], df["fold"]))
    fold_of = splits["path"].map(folds)
    assert set(splits.loc[splits["split"] == "test", "path"]) == {p for p, f in folds.items() if f == 2}
    assert (fold_of[splits["split"] != "test"] != 2).all()
    assert set(splits["split"]) == {"train", "val", "test"}
    assert RunFolder(created).load_summary()["data"]["n_test"] == 8


@pytest.mark.slow
def test_demo_generates_trains_reports_and_predicts_within_its_time_budget(cli, tmp_path):
    import yaml

    r = cli("demo", "--out", tmp_path / "demo", "--epochs", "1")
    assert r.rc == 0, r.err
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "demo finished"):
        assert step in r.out
    run = RunFolder(tmp_path / "demo" / "run")
    summary = run.load_summary()
    assert (run.root / "report.md").is_file() and summary["test"]["n"] > 0
    # the schedule is planned to fit two minutes, whatever the machine
    budget_minutes = yaml.safe_load(run.config_path.read_text())["train"]["max_minutes"]
    assert budget_minutes == 2
    # and the run kept to it: it trained the epochs it planned, in less time than the budget as the training
    # itself measured it (summary.json timing)
    assert summary["epochs_run"] == summary["epochs_planned"] == 1 and not summary["interrupted"]
    assert 0 < summary["timing"]["train_seconds"] <= 60 * budget_minutes, summary["timing"]


def test_every_help_page_renders():
    """argparse formats help lazily: a stray '%' in a help string only fails when a user asks for --help."""
    from clipwise.cli import build_parser

    parser = build_parser()
    text = parser.format_help()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sub.choices and all(name in text for name in sub.choices)
    for name, subparser in sub.choices.items():
        assert name in subparser.format_help()
