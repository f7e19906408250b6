"""`clipwise sweep`: a grid of 4 trials on synthetic data, interrupted after 2 and resumed; a trial cut off by a
killed process is tried again; the search space is checked before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

SPACE = "data.pad_mode: [zeros, wrap]\nfrontend.n_mels: [32, 48]\n"


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def _sweep(cli, manifest, space, out, tiny, *extra):
    return cli("sweep", "--data", manifest, "--space", space, "--out", out, "--sampler", "grid", "--epochs", "1",
               *extra, *tiny)


@pytest.mark.slow
def test_a_grid_sweep_resumes_after_an_interruption(synth_manifest, space, tmp_path, cli, tiny):
    out = tmp_path / "sweep"
    r = _sweep(cli, synth_manifest, space, out, tiny, "--trials", "2")
    assert r.rc == 0, r.err
    assert len(pd.read_csv(out / "leaderboard.csv")) == 2
    r = _sweep(cli, synth_manifest, space, out, tiny)  # the grid's size (4) is the default
    assert r.rc == 0, r.err
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 4 and sorted(board["trial"]) == [0, 1, 2, 3]
    combos = set(zip(board["data.pad_mode"], board["frontend.n_mels"]))
    assert combos == {("zeros", 32), ("zeros", 48), ("wrap", 32), ("wrap", 48)}
    assert sorted(p.name for p in out.glob("trial_*")) == [f"trial_{i:03d}" for i in range(4)]
    import yaml

    cfg = yaml.safe_load((out / "trial_003" / "config.yaml").read_text())
    row = board[board["trial"] == 3].iloc[0]
    assert (cfg["data"]["pad_mode"], cfg["frontend"]["n_mels"]) == (row["data.pad_mode"], row["frontend.n_mels"])
    assert board["val_accuracy"].is_monotonic_decreasing
    assert list(board["epochs"]) == [1.0] * 4 and list(board["attempts"]) == [1] * 4
    assert "Ranked by validation accuracy" in (out / "leaderboard.md").read_text()


@pytest.mark.slow
def test_a_trial_of_a_killed_process_is_tried_again(synth_manifest, space, tmp_path, cli, tiny):
    out = tmp_path / "sweep"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.create_study(study_name="clipwise", storage=storage, direction="maximize")
    import socket

    trial = study.ask({"data.pad_mode": optuna.distributions.CategoricalDistribution(["zeros", "wrap"]),
                       "frontend.n_mels": optuna.distributions.CategoricalDistribution([32, 48])})
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", dead.pid)
    trial.set_user_attr("run", "trial_000")
    params = trial.params
    r = _sweep(cli, synth_manifest, space, out, tiny, "--trials", "1", "--sampler", "random")
    assert r.rc == 0, r.err
    assert "1 trial(s) cut off earlier will be tried again" in r.out
    study = optuna.load_study(study_name="clipwise", storage=storage)
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.FAIL
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 1 and done[0].params == params
    # the retry works in the folder of the trial that was cut off (a run resumes there, CV keeps its folds)
    assert done[0].user_attrs["run"] == "trial_000" and done[0].number == 1
    assert (out / "trial_000" / "summary.json").is_file() and not (out / "trial_001").exists()


def test_the_search_space_is_checked_first(synth_manifest, tmp_path, cli, tiny):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim.lrr: [0.1, 0.01]\n")
    r = cli("sweep", "--data", synth_manifest, "--space", bad, "--out", tmp_path / "s", *tiny)
    assert r.rc == 2 and "optim.lrr" in r.err and "optim.lr" in r.err
    rng = tmp_path / "range.yaml"
    rng.write_text("optim.lr: {low: 0.001, high: 0.01, log: true}\n")
    r = cli("sweep", "--data", synth_manifest, "--space", rng, "--out", tmp_path / "s2", "--sampler", "grid", *tiny)
    assert r.rc == 2 and "grid search needs lists" in r.err
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("trial_*"))


ABLATIONS = """\
data.clip_seconds: [1.0, 2.0, 5.0]
data.pad_mode: [zeros, wrap, reflect]
augment.time_reverse: [0.0, 0.5]
frontend.n_mels: [32, 64, 128]
frontend.normalize: [true, false]
frontend.name: [logmel, logmel_mfcc]
data.batch_size: [16, 64]
optim.lr: {low: 3.0e-4, high: 3.0e-3, log: true}
model.dropout: [0.0, 0.2, 0.5]
optim.weight_decay: {low: 1.0e-4, high: 0.1, log: true}
"""


def test_the_ablations_users_ask_about_are_one_search_space(tmp_path):
    """Clip length, pad mode, mirroring, n_mels, normalisation on/off, MFCC + log-mel, batch size x learning
    rate, dropout, weight decay: all expressible; every value is checked up front, not only the first."""
    from clipwise.config import load_config
    from clipwise.errors import ConfigError
    from clipwise.sweep import load_space

    path = tmp_path / "ablations.yaml"
    path.write_text(ABLATIONS)
    space = load_space(path)
    assert len(space) == 10
    cfg = load_config(overrides={k: (v[-1] if isinstance(v, list) else v["high"]) for k, v in space.items()})
    assert (cfg.data.pad_mode, cfg.frontend.name, cfg.frontend.normalize, cfg.augment.time_reverse) == (
        "reflect", "logmel_mfcc", False, 0.5)
    path.write_text(ABLATIONS.replace("[zeros, wrap, reflect]", "[zeros, wrap, mirror]"))
    with pytest.raises(ConfigError, match=r"data\.pad_mode='mirror'"):
        load_space(path)
    path.write_text(ABLATIONS.replace("high: 0.1, log", "high: -0.1, log"))
    with pytest.raises(ConfigError, match=r"optim\.weight_decay=-0\.1"):
        load_space(path)


@pytest.mark.slow
def test_a_cross_validated_sweep_scores_each_trial_by_its_folds_mean(make_manifest, tmp_path, cli, tiny):
    manifest = make_manifest("cv4x6")
    space = tmp_path / "space.yaml"
    space.write_text("data.pad_mode: [zeros, wrap]\n")
    out = tmp_path / "sweep"
    r = cli("sweep", "--data", manifest, "--space", space, "--out", out, "--sampler", "grid", "--epochs", "1",
            "--cv", "3", *tiny)
    assert r.rc == 0, r.err
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 2 and set(board["folds"]) == {3}
    for _, row in board.iterrows():
        folds = [pd.read_json(f, typ="series") for f in sorted((out / row["run"]).glob("fold*/summary.json"))]
        assert len(folds) == 3
        assert row["val_accuracy"] == pytest.approx(sum(f["val"]["accuracy"] for f in folds) / 3)
        assert row["test_accuracy"] == pytest.approx(sum(f["test"]["accuracy"] for f in folds) / 3)
        assert row["epochs"] == pytest.approx(sum(f["epochs_run"] for f in folds) / 3)
        assert (out / row["run"] / "cv_summary.json").is_file()
    assert "means over its folds" in (out / "leaderboard.md").read_text()
    # the study remembers its protocol: continuing it without --cv is refused rather than mixing the two
    r = cli("sweep", "--data", manifest, "--space", space, "--out", out, "--sampler", "grid", "--epochs", "1", *tiny)
    assert r.rc == 2 and "cv=3" in r.err


def test_a_grid_worker_stops_rather_than_repeat_a_point_another_worker_is_running(synth_manifest, tmp_path, cli,
                                                                                    tiny):
    import os
    import socket

    space = tmp_path / "one.yaml"
    space.write_text("data.pad_mode: [zeros]\n")
    out = tmp_path / "sweep"
    out.mkdir()
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.create_study(study_name="clipwise", storage=storage, direction="maximize",
                                sampler=optuna.samplers.GridSampler({"data.pad_mode": ["zeros"]}))
    running = study.ask({"data.pad_mode": optuna.distributions.CategoricalDistribution(["zeros"])})
    running.set_user_attr("host", socket.gethostname())
    running.set_user_attr("pid", os.getpid())  # alive: another worker, busy with the grid's only point
    r = _sweep(cli, synth_manifest, space, out, tiny, "--trials", "1")
    assert r.rc == 0, r.err
    study = optuna.load_study(study_name="clipwise", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.PRUNED]
    assert study.trials[1].user_attrs["duplicate_of"] == 0
    assert not list(out.glob("trial_*"))  # nothing was trained twice


def _fake_training(monkeypatch, fail):
    """Replace training by a stand-in that scores n_mels / 100 and raises ``fail(values, call)`` when it returns
    an exception; returns the list of (folder, pad_mode, n_mels) it was called with."""
    import clipwise.training.fit as fit
    from clipwise.run import RunFolder

    calls = []

    def train(cfg, out, resume=False, callbacks=()):
        calls.append((Path(out).name, cfg.data.pad_mode, cfg.frontend.n_mels))
        error = fail(calls[-1][1:], len(calls))
        if error is not None:
            raise error
        Path(out).mkdir(parents=True, exist_ok=True)
        RunFolder(out).save_summary({"val": {"accuracy": cfg.frontend.n_mels / 100}})

    monkeypatch.setattr(fit, "train", train)
    return calls


def test_a_grid_trial_stopped_by_ctrl_c_is_tried_again_and_the_grid_completes(synth_manifest, space, tmp_path,
                                                                              cli, tiny, monkeypatch):
    """Ctrl-C or SIGTERM ends a trial FAIL, not RUNNING; Optuna's grid counts its point as visited and stopped
    the study with that point never run (seen: the FSDD sweep left 5 of its 12 points unrun). It is retried, in
    its own folder, and the grid completes."""
    calls = _fake_training(monkeypatch, lambda values, call: KeyboardInterrupt() if call == 2 else None)
    out = tmp_path / "sweep"
    r = _sweep(cli, synth_manifest, space, out, tiny)
    assert r.rc != 0 and "interrupted" in r.err and len(calls) == 2
    r = _sweep(cli, synth_manifest, space, out, tiny)
    assert r.rc == 0, r.err
    assert "1 trial(s) cut off earlier will be tried again" in r.out
    assert calls[2] == calls[1]  # the same values, in the same folder
    assert len(calls) == 5 and len(set(calls)) == 4
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 4 and set(zip(board["data.pad_mode"], board["frontend.n_mels"])) == {
        ("zeros", 32), ("zeros", 48), ("wrap", 32), ("wrap", 48)}
    assert sorted(board["attempts"]) == [1, 1, 1, 2]
    assert board.loc[board["attempts"] == 2, "run"].item() == calls[1][0]
    assert "4 finished trials, 1 attempt cut off" in (out / "leaderboard.md").read_text()
    r = _sweep(cli, synth_manifest, space, out, tiny)  # done: nothing trained again
    assert r.rc == 0 and len(calls) == 5 and "cut off" not in r.out


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # the test asks for a trial by hand
def test_a_trial_whose_heartbeat_went_silent_on_another_machine_is_tried_again(synth_manifest, space, tmp_path,
                                                                               cli, tiny, monkeypatch):
    """A worker on another machine sharing the study dies: its pid means nothing here, but its trial stops
    beating; once the grace period is over, the next worker fails it and queues its values in its folder.

    No waiting on the clock: the trial's last heartbeat is moved back in study.db to before the grace period."""
    import sqlite3
    from datetime import datetime, timedelta

    from clipwise import sweep

    calls = _fake_training(monkeypatch, lambda values, call: None)
    out = tmp_path / "sweep"
    out.mkdir()
    storage = sweep._open_storage(out / "study.db")
    study = optuna.create_study(study_name="clipwise", storage=storage, direction="maximize")
    trial = study.ask({"data.pad_mode": optuna.distributions.CategoricalDistribution(["zeros", "wrap"]),
                       "frontend.n_mels": optuna.distributions.CategoricalDistribution([32, 48])})
    for key, value in {"host": "elsewhere", "pid": 1, "run": "trial_000"}.items():
        trial.set_user_attr(key, value)
    storage.record_heartbeat(trial._trial_id)
    params = trial.params
    assert sweep._revive_cut_off_trials(study, out) == 0  # still beating, maybe still working: left alone
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING
    db = sqlite3.connect(out / "study.db")  # silent since a minute before the grace period began
    with db:
        (beat,) = db.execute("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = ?",
                             (trial._trial_id,)).fetchone()
        silent = datetime.fromisoformat(beat) - timedelta(seconds=sweep.GRACE_SECONDS + 60)
        db.execute("UPDATE trial_heartbeats SET heartbeat = ? WHERE trial_id = ?",
                   (silent.isoformat(sep=" ", timespec="microseconds"), trial._trial_id))
    db.close()
    r = _sweep(cli, synth_manifest, space, out, tiny, "--trials", "1", "--sampler", "random")
    assert r.rc == 0, r.err
    assert "1 trial(s) cut off earlier will be tried again" in r.out
    study = optuna.load_study(study_name="clipwise", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert [t.user_attrs.get("retry_of") for t in study.trials] == [None, 0]
    assert study.trials[1].state == optuna.trial.TrialState.COMPLETE and study.trials[1].params == params
    assert calls == [("trial_000", *params.values())]


def test_a_trial_that_diverged_is_a_result_and_is_not_tried_again(synth_manifest, space, tmp_path, cli, tiny,
                                                                   monkeypatch):
    calls = _fake_training(monkeypatch, lambda values, call: FloatingPointError("training diverged")
                           if values == ("wrap", 48) else None)
    out = tmp_path / "sweep"
    for _ in range(2):
        r = _sweep(cli, synth_manifest, space, out, tiny)
        assert r.rc == 0, r.err
        assert "cut off" not in r.out
    assert len(calls) == 4 and len(set(calls)) == 4  # the diverged point ran once, over both invocations
    assert len(pd.read_csv(out / "leaderboard.csv")) == 3
    study = optuna.load_study(study_name="clipwise", storage=f"sqlite:///{out / 'study.db'}")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "diverged" in failed[0].user_attrs["error"]
    assert "3 finished trials, 1 failed on its own)" in (out / "leaderboard.md").read_text()


def test_workers_that_create_the_study_together_retry_the_schema_race(tmp_path, monkeypatch):
    """Two workers started together both create study.db; the loser's alembic stamp fails on a UNIQUE
    constraint (seen with `--jobs 2`: one worker died at start). Opening the storage tries again."""
    import optuna
    from sqlalchemy.exc import IntegrityError

    from clipwise import sweep

    real, calls = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:  # the other worker stamped the schema first
            real(*args, **kwargs)
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    storage = sweep._open_storage(tmp_path / "study.db")
    assert len(calls) == 2 and storage.get_all_studies() == []

    def always(*args, **kwargs):
        raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", always)
    with pytest.raises(IntegrityError):
        sweep._open_storage(tmp_path / "other.db", attempts=2)


@pytest.mark.slow
def test_a_multilabel_sweep_optimises_lwlrap_without_being_told(make_manifest, tmp_path, cli, tiny):
    """train.monitor=auto means lwlrap for a multi-label manifest; the sweep used to optimise accuracy, which a
    multi-label run does not have, and every trial failed."""
    from clipwise.data.manifest import read_manifest
    from clipwise.data.mixtures import make_mixtures

    src = make_manifest("ml4x6", classes=("tone", "white_noise", "click_train", "chirp_up"), n_per_class=6,
                        duration_seconds=0.5)
    mixtures = make_mixtures(read_manifest(src), tmp_path / "mix", n_per_side={"train": 24, "val": 8, "test": 8},
                             seed=0)
    space = tmp_path / "space.yaml"
    space.write_text("data.pad_mode: [zeros, wrap]\n")
    out = tmp_path / "sweep"
    r = cli("sweep", "--data", mixtures, "--space", space, "--out", out, "--sampler", "grid", "--epochs", "1", *tiny)
    assert r.rc == 0, r.err
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 2 and {"val_lwlrap", "test_lwlrap"} <= set(board.columns)
    for _, row in board.iterrows():
        summary = pd.read_json(out / row["run"] / "summary.json", typ="series")
        assert row["val_lwlrap"] == pytest.approx(summary["val"]["lwlrap"])
    assert "Ranked by validation lwlrap" in (out / "leaderboard.md").read_text()


@pytest.mark.slow
def test_prune_stops_a_trial_that_falls_below_the_finished_ones(synth_manifest, tmp_path, cli, tiny):
    """With --prune each epoch's validation score is reported; a trial below the median of finished trials at
    the same epoch (here: five that scored 1.0 every epoch) is stopped at the first epoch the rule may judge."""
    from clipwise import sweep
    from clipwise.run import RunFolder

    out = tmp_path / "sweep"
    out.mkdir()
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: [1.0e-9]\n")  # a model that cannot learn: at chance every epoch
    study = optuna.create_study(study_name="clipwise", storage=f"sqlite:///{out / 'study.db'}",
                                direction="maximize")
    for _ in range(sweep.PRUNE_STARTUP_TRIALS):
        study.add_trial(optuna.trial.create_trial(
            params={"optim.lr": 1e-9}, distributions={"optim.lr": optuna.distributions.CategoricalDistribution([1e-9])},
            value=1.0, intermediate_values={epoch: 1.0 for epoch in range(8)}))
    args = ("sweep", "--data", synth_manifest, "--space", space, "--out", out, "--sampler", "random", "--epochs", "6",
            *tiny)
    r = cli(*args, "--trials", str(sweep.PRUNE_STARTUP_TRIALS + 1), "--prune")
    assert r.rc == 0, r.err
    study = optuna.load_study(study_name="clipwise", storage=f"sqlite:///{out / 'study.db'}")
    last = study.trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED
    assert sorted(last.intermediate_values) == list(range(sweep.PRUNE_WARMUP_EPOCHS + 1))
    run = RunFolder(out / last.user_attrs["run"])
    assert not run.summary_path.is_file()  # stopped, not finished: no scores to rank
    assert len(pd.read_csv(run.metrics_path)) == sweep.PRUNE_WARMUP_EPOCHS + 1
    assert "1 pruned" in (out / "leaderboard.md").read_text()
    # without --prune the same trial trains all its epochs
    r = cli(*args, "--trials", str(sweep.PRUNE_STARTUP_TRIALS + 1))
    assert r.rc == 0, r.err
    done = optuna.load_study(study_name="clipwise", storage=f"sqlite:///{out / 'study.db'}").trials[-1]
    assert done.state == optuna.trial.TrialState.COMPLETE
    assert len(pd.read_csv(RunFolder(out / done.user_attrs["run"]).metrics_path)) == 6


@pytest.mark.slow
def test_a_pruned_cross_validation_trial_stops_in_its_first_fold(make_manifest, tmp_path, cli, tiny):
    from clipwise import sweep

    out = tmp_path / "sweep"
    out.mkdir()
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: [1.0e-9]\n")
    study = optuna.create_study(study_name="clipwise", storage=f"sqlite:///{out / 'study.db'}",
                                direction="maximize")
    study.set_user_attr("cv", 3)
    for _ in range(sweep.PRUNE_STARTUP_TRIALS):
        study.add_trial(optuna.trial.create_trial(
            params={"optim.lr": 1e-9}, distributions={"optim.lr": optuna.distributions.CategoricalDistribution([1e-9])},
            value=1.0, intermediate_values={epoch: 1.0 for epoch in range(8)}))
    r = cli("sweep", "--data", make_manifest("cv4x6"), "--space", space, "--out", out, "--sampler", "random",
            "--epochs", "5", "--cv", "3", "--trials", str(sweep.PRUNE_STARTUP_TRIALS + 1), "--prune", *tiny)
    assert r.rc == 0, r.err
    last = optuna.load_study(study_name="clipwise", storage=f"sqlite:///{out / 'study.db'}").trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED
    folders = sorted(p.name for p in (out / last.user_attrs["run"]).glob("fold*") if p.is_dir())
    assert folders == ["fold1"]  # the later folds never started


def test_prune_is_refused_where_there_are_no_epochs_to_judge(synth_manifest, space, tmp_path, cli):
    r = cli("sweep", "--data", synth_manifest, "--space", space, "--out", tmp_path / "s", "--model", "logreg",
            "--prune")
    assert r.rc == 2 and "--prune" in r.err and "logreg" in r.err


@pytest.mark.slow
def test_jobs_starts_helper_processes_on_the_same_study(synth_manifest, space, tmp_path, cli, tiny):
    from clipwise.sweep import helper_argv

    argv = ["sweep", "--data", "m.csv", "--jobs", "3", "--space", "s.yaml", "optim.lr=1e-3", "--jobs=3", "--prune"]
    assert helper_argv(argv, threads=2) == ["sweep", "--data", "m.csv", "--space", "s.yaml", "optim.lr=1e-3",
                                            "--prune", "--jobs", "1", "--worker-threads", "2"]
    out = tmp_path / "sweep"
    r = cli("sweep", "--data", synth_manifest, "--space", space, "--out", out, "--sampler", "grid", "--epochs", "2",
            *tiny, "--jobs", "2")
    assert r.rc == 0, r.err
    assert "1 more worker process(es) share the study" in r.out
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 4 and len(set(zip(board["data.pad_mode"], board["frontend.n_mels"]))) == 4
    log = (out / "worker1.log").read_text()  # the helper opened the same study and ran to its end
    assert "sweep folder:" in log and "Traceback" not in log
