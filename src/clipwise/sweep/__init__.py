"""``clipwise sweep``: search over any config keys with Optuna, resumable, shareable between processes.

The search space is a YAML mapping of dotted config keys to either a list of values (categorical) or a range
``{low, high, log: true|false, step}`` (float, or int when both ends are ints)::

    data.pad_mode: [zeros, wrap, reflect]
    data.clip_seconds: [1.0, 2.0, 4.0]
    frontend.n_mels: [32, 64, 128]
    optim.lr: {low: 3.0e-4, high: 3.0e-3, log: true}

Each trial is an ordinary run folder (``trial_<n>/``), trained with the base config plus the trial's values;
with ``cv`` each trial is a cross-validation folder instead (one run per fold, as ``clipwise cv``), scored by
the mean over its folds, so a protocol such as leave-one-speaker-out can choose the settings. The objective is
a *validation* score (the test split is reported beside it, never used to choose). The study lives in
``study.db`` (SQLite) in the sweep folder: re-running the same command continues it, a trial cut off (a killed
process, Ctrl-C, SIGTERM, a crash) is tried again with its values in the same folder (an interrupted run resumes
from its last checkpoint, a CV trial keeps its finished folds), while one that failed on its own (a diverged run)
is kept as a result, and several processes (or machines sharing the file system) can work on one study at once.
The leaderboard (markdown and CSV) is rewritten after every trial. With ``prune``, a trial that falls behind the
finished ones epoch by epoch is stopped early (Optuna's median rule) and recorded as pruned.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pandas as pd

from clipwise.config import Config, load_config
from clipwise.errors import ConfigError
from clipwise.kinds import kind_for_model, train_run
from clipwise.run import RunFolder
from clipwise.sweep.leaderboard import mean_score, refresh_leaderboard, write_leaderboard
from clipwise.sweep.space import SAMPLERS, grid_sampler_class, grid_values, load_space, suggest
from clipwise.sweep.trials import (
    GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    PRUNE_STARTUP_TRIALS,
    PRUNE_WARMUP_EPOCHS,
    is_result_or_running,
    open_storage,
    pruning_callback,
    revive_cut_off_trials,
)
from clipwise.training.cv import cross_validate

__all__ = ["GRACE_SECONDS", "HEARTBEAT_SECONDS", "PRUNE_STARTUP_TRIALS", "PRUNE_WARMUP_EPOCHS", "SAMPLERS",
           "helper_argv", "load_space", "refresh_leaderboard", "run_sweep", "sweep_with_helpers"]
_open_storage = open_storage  # the names the tests of the retry machinery use
_revive_cut_off_trials = revive_cut_off_trials


def run_sweep(config: Config, space: dict[str, Any], out: str | os.PathLike, *, trials: int | None = None,
              sampler: str = "tpe", metric: str | None = None, seed: int = 0,
              cv: int | None = None, prune: bool = False) -> pd.DataFrame:
    """Run (or continue) a sweep; returns the leaderboard, best first.

    Args:
        config: the base config (``data.manifest`` set).
        space: from :func:`load_space`.
        out: the sweep folder (study.db, trial_<n>/, leaderboard.md / .csv).
        trials: completed trials to reach (default: the grid's size for ``grid``, else 20).
        sampler: ``grid``, ``random`` or ``tpe``.
        metric: validation metric to optimise (default: the config's monitor; with ``auto``, accuracy or lwlrap
            as the first trial's data decide).
        seed: the sampler's seed.
        cv: cross-validate every trial: 0 = the manifest's fold column (or 5 grouped folds without one), K > 0 =
            K grouped folds; None = one run per trial.
        prune: stop a trial early when its validation score, epoch by epoch, falls below the median of the
            finished trials' at the same epoch (Optuna's MedianPruner: after :data:`PRUNE_STARTUP_TRIALS` trials,
            from epoch :data:`PRUNE_WARMUP_EPOCHS`; a CV trial is judged by the first fold it trains). A pruned
            trial keeps its folder and is not retried.
    """
    import optuna

    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if prune and kind_for_model(config.model.name).name != "deep":
        raise ConfigError(f"--prune judges a trial by its epochs, and {config.model.name} is fitted in one step; "
                          "leave --prune out")
    if prune and (str(config.train.devices) != "1" or config.train.num_nodes > 1):
        raise ConfigError("--prune needs single-process training (train.devices=1, train.num_nodes=1): the "
                          "trial that records the scores lives in one process")
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    # train.monitor=auto means accuracy or lwlrap as the data decide (multi-label or not): then the first trial's
    # resolved monitor names the metric, and the study keeps it (both maximise, so the direction is known now)
    metric = metric or (config.train.monitor if config.train.monitor != "auto" else None)
    metric = metric.removeprefix("val_") if metric else None
    direction = "minimize" if metric and "loss" in metric else "maximize"
    if sampler == "grid":
        grid = grid_values(space)
        chosen = grid_sampler_class()(grid, seed=seed)
        size = 1
        for v in grid.values():
            size *= len(v)
        trials = trials or size
    else:
        chosen = optuna.samplers.RandomSampler(seed=seed) if sampler == "random" else optuna.samplers.TPESampler(seed=seed)
        trials = trials or 20
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(out / "study.db")
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_EPOCHS)
              if prune else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name="clipwise", storage=storage, sampler=chosen, direction=direction,
                                load_if_exists=True, pruner=pruner)
    stored = study.user_attrs.get("space")
    if stored is not None and stored != json.loads(json.dumps(space)):
        raise ConfigError(f"{out} holds a sweep over another search space; use another --out")
    study.set_user_attr("space", json.loads(json.dumps(space)))
    metric = metric or study.user_attrs.get("metric")
    if metric:
        study.set_user_attr("metric", metric)
    if study.user_attrs.get("cv", cv) != cv:
        raise ConfigError(f"{out} holds a sweep with cv={study.user_attrs['cv']}; use the same --cv or another --out")
    study.set_user_attr("cv", cv)
    revived = revive_cut_off_trials(study, out)
    if revived:
        print(f"{revived} trial(s) cut off earlier will be tried again", flush=True)
    def objective(trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        values = suggest(trial, space)
        retry = "retry_of" in trial.user_attrs
        if sampler == "grid" or retry:
            # with several workers, Optuna's grid hands out a point another worker is still running once every
            # point has been started: this worker's work is done, so it stops instead of repeating that trial.
            # A retry queued twice (workers without a lock) is skipped and the worker goes on.
            twins = [t.number for t in study.get_trials(deepcopy=False) if t.number != trial.number
                     and t.params == trial.params and is_result_or_running(t)]
            if twins:
                trial.set_user_attr("duplicate_of", twins[0])
                if not retry:
                    study.stop()
                raise optuna.TrialPruned(f"values of trial {twins[0]}, which is finished or still running")
        cfg = load_config(base=config.to_dict(), overrides=values)
        # a retried trial continues in the folder of the one that was cut off
        run_dir = out / trial.user_attrs.get("run", f"trial_{trial.number:03d}")
        trial.set_user_attr("run", run_dir.name)
        print(f"trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)
        try:
            return _score(trial, cfg, run_dir)
        except (ConfigError, FloatingPointError) as e:  # a result of these values: not retried on a re-run
            trial.set_user_attr("error", str(e)[:1000])
            raise

    def _score(trial, cfg: Config, run_dir: Path) -> float:
        callbacks = [pruning_callback(trial, lambda: metric)] if prune else []
        if cv is not None:
            cross_validate(cfg, out=run_dir, folds=cv or None, first_fold_callbacks=callbacks)
            summaries = [json.loads(f.read_text()) for f in sorted(run_dir.glob("fold*/summary.json"))]
            trial.set_user_attr("folds", len(summaries))
        else:
            run = RunFolder(run_dir)
            if run.last_checkpoint.is_file() and not run.summary_path.is_file():
                train_run(load_config(base=run.load_config_dict()), out=run_dir, resume=True, callbacks=callbacks)
            elif not run.summary_path.is_file():
                train_run(cfg, out=run_dir, callbacks=callbacks)
            summaries = [run.load_summary()]
        nonlocal metric
        if metric is None:
            metric = (summaries[0].get("monitor") or "val_accuracy").removeprefix("val_") if summaries else None
            if metric:
                study.set_user_attr("metric", metric)
        for split in ("test", "train_clean"):
            value = mean_score(summaries, split, metric)
            if value is not None:
                trial.set_user_attr(f"{split}_{metric}", value)
        value = mean_score(summaries, "val", metric)
        if value is None:
            raise ConfigError(f"trial {trial.number} has no validation {metric!r} to optimise")
        return value

    def after(study, trial) -> None:
        write_leaderboard(study, out)

    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    if done < trials:
        study.optimize(objective, n_trials=trials - done, catch=(ConfigError, FloatingPointError),
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,)),
                                  after])
    return write_leaderboard(study, out)


def sweep_with_helpers(config: Config, space: dict[str, Any], out: str | os.PathLike, *, argv: list[str],
                       jobs: int = 1, **options: Any) -> int:
    """``clipwise sweep --jobs N``: start N-1 helper processes on the same study (each with its share of the cores
    unless ``train.threads`` is set; output in ``out/worker<i>.log``), run the sweep here too, wait for the
    helpers and print the final leaderboard. If this process is interrupted or fails, the helpers are stopped
    (their cut-off trials are retried on a re-run). Returns the command's exit status.

    Args:
        config: the base config; ``options``: :func:`run_sweep`'s keyword arguments.
        argv: this command's arguments, repeated for the helpers.
    """
    import subprocess
    import sys

    helpers, logs = [], []
    if jobs > 1:
        if config.train.threads is None:  # share the cores instead of every process taking all of them
            config = config.model_copy(deep=True)
            config.train.threads = max(1, (os.cpu_count() or 1) // jobs)
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "clipwise", *helper_argv(argv, threads=config.train.threads)]
        for i in range(1, jobs):
            logs.append(root / f"worker{i}.log")
            with open(logs[-1], "a") as log:
                helpers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        print(f"{len(helpers)} more worker process(es) share the study (logs: {', '.join(map(str, logs))}); "
              f"{config.train.threads} torch thread(s) each", flush=True)
    try:
        board = run_sweep(config, space, out, **options)
    except BaseException:  # interrupted or failed: stop the helpers too
        for p in helpers:
            p.terminate()
        for p in helpers:
            p.wait()
        raise
    codes = [p.wait() for p in helpers]
    if helpers:  # the last trial to finish may have been a helper's
        board = refresh_leaderboard(out)
    print(f"\nsweep folder: {out} ({len(board)} finished trials; leaderboard.md, leaderboard.csv)")
    if len(board):
        print(board.head(10).to_string(index=False))
    failed = [str(log) for log, code in zip(logs, codes) if code != 0]
    if failed:
        print(f"clipwise sweep: error: worker process(es) failed; see {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def helper_argv(argv: list[str], *, threads: int) -> list[str]:
    """The arguments of a ``clipwise sweep --jobs N`` command for one of its helper processes: the same sweep
    with ``--jobs 1`` and its torch threads (options at the end: argparse takes key=value overrides in one run)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--jobs":
            skip = True
        elif not a.startswith("--jobs="):
            out.append(a)
    return [*out, "--jobs", "1", "--worker-threads", str(threads)]
