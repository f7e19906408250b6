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

import contextlib
import json
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from clipwise.config import Config, load_config
from clipwise.errors import ConfigError
from clipwise.run import RunFolder, atomic_write_text

SAMPLERS = ("grid", "random", "tpe")
# every running trial records a heartbeat in study.db; one silent for GRACE_SECONDS (its process or machine died)
# is failed by the next worker to look and its values are queued again, on whichever machine runs that worker
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 300
# --prune: Optuna's median rule, once PRUNE_STARTUP_TRIALS trials have finished, from epoch PRUNE_WARMUP_EPOCHS on
PRUNE_STARTUP_TRIALS = 5
PRUNE_WARMUP_EPOCHS = 3


def load_space(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a search space file (see the module docstring).

    Raises:
        ConfigError: not a mapping, an unknown config key, or a range without low/high.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space file not found: {p}")
    try:
        space = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"search space {p} is not valid YAML: {e}") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"search space {p} must map config keys to lists of values or {{low, high}} ranges")
    for key, dom in space.items():
        if isinstance(dom, dict):
            if not {"low", "high"} <= set(dom) or set(dom) - {"low", "high", "log", "step"}:
                raise ConfigError(f"search space key {key!r}: a range needs low and high (optional log, step), "
                                  f"got {sorted(dom)}")
        elif not isinstance(dom, list) or not dom:
            raise ConfigError(f"search space key {key!r} must be a non-empty list or a {{low, high}} range")
        # every value (both ends of a range) is checked now: an unknown key or a bad value fails here, not in trial 7
        for value in ([dom["low"], dom["high"]] if isinstance(dom, dict) else dom):
            try:
                load_config(overrides={key: value})
            except ConfigError as e:
                raise ConfigError(f"search space {p}: {key}={value!r} is not a valid setting: {e}") from None
    return space


def _suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for key, dom in space.items():
        if isinstance(dom, list):
            # Optuna stores categorical choices as str/int/float/bool/None; tuples travel as their YAML text
            choices = [yaml.safe_dump(c, default_flow_style=True).strip() if isinstance(c, (list, dict)) else c
                       for c in dom]
            v = trial.suggest_categorical(key, choices)
            values[key] = yaml.safe_load(v) if isinstance(dom[choices.index(v)], (list, dict)) else v
        elif isinstance(dom["low"], int) and isinstance(dom["high"], int) and not isinstance(dom["low"], bool):
            values[key] = trial.suggest_int(key, dom["low"], dom["high"], log=bool(dom.get("log")),
                                            step=int(dom.get("step", 1)))
        else:
            values[key] = trial.suggest_float(key, float(dom["low"]), float(dom["high"]), log=bool(dom.get("log")),
                                              step=dom.get("step"))
    return values


def _grid(space: dict[str, Any]) -> dict[str, list]:
    bad = [k for k, d in space.items() if not isinstance(d, list)]
    if bad:
        raise ConfigError(f"a grid search needs lists of values, but {bad} are ranges; list values or use "
                          "--sampler random|tpe")
    return {k: [yaml.safe_dump(c, default_flow_style=True).strip() if isinstance(c, (list, dict)) else c
                for c in d] for k, d in space.items()}


def _grid_sampler_class():
    import optuna

    class _Grid(optuna.samplers.GridSampler):
        """Optuna's grid sampler, which stops the study once every point has been tried, even when tries failed;
        this one waits until the queued retries of cut-off trials have run too."""

        def after_trial(self, study, trial, state, values) -> None:
            if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
                super().after_trial(study, trial, state, values)

    return _Grid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _revive_cut_off_trials(study, out: Path) -> int:
    """Queue again, in their own folders, the values of trials that were cut off rather than finished; returns
    how many retries wait.

    Cut off: RUNNING on this machine under a process that is gone (killed), RUNNING with a heartbeat silent for
    :data:`GRACE_SECONDS` (on any machine), or FAIL without an error of its own (stopped by Ctrl-C or SIGTERM, or
    crashed). A trial that failed on its own (a diverged run, a setting the model refuses: ``error`` set) is a
    result and is not retried. Values that are done, running or queued are not queued twice; workers starting
    together take turns through a lock file.
    """
    import optuna

    S = optuna.trial.TrialState
    host = socket.gethostname()
    with _locked(out / "study.lock"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # silent heartbeats, any machine (queued by _queue_retry)
        for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
            if t.user_attrs.get("host") == host and not _alive(int(t.user_attrs.get("pid", -1))):
                study._storage.set_trial_state_values(t._trial_id, S.FAIL)  # killed here: no need to wait
        for t in study.get_trials(deepcopy=False, states=(S.FAIL,)):
            _queue_retry(study, t)
        queued = [t for t in study.get_trials(deepcopy=False, states=(S.WAITING,)) if "retry_of" in t.user_attrs]
        return len(queued)


def _queue_retry(study, trial) -> bool:
    """Queue a failed trial's values again, in its folder, unless it failed on its own (``error``), has no values,
    was retried already, or its values are done, running or queued. Returns whether it was queued."""
    import optuna

    S = optuna.trial.TrialState
    if "error" in trial.user_attrs or not trial.params:
        return False
    others = study.get_trials(deepcopy=False)
    if any(t.user_attrs.get("retry_of") == trial.number or (t.params == trial.params and
                                                             t.state in (S.COMPLETE, S.RUNNING, S.WAITING))
           for t in others):
        return False
    retry = {"retry_of": trial.number, **({"run": trial.user_attrs["run"]} if "run" in trial.user_attrs else {})}
    study.enqueue_trial(trial.params, user_attrs=retry, skip_if_exists=False)
    return True


def _pruning_callback(trial, metric: Callable[[], str | None]):
    """A Lightning callback that reports each epoch's validation score to ``trial`` and stops the trial (raises
    TrialPruned, which Optuna records) when the pruner says so. ``metric()``: the sweep's metric, or None while
    ``auto`` is unresolved (the run's checkpoint monitor then)."""
    import lightning as L
    import optuna

    class Pruning(L.Callback):
        # at the epoch's end, after clipwise's own callbacks have logged it and saved its checkpoint
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            name = f"val_{metric()}" if metric() else next(
                (cb.monitor for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
            value = trainer.callback_metrics.get(name) if name else None
            if value is None:
                return
            epoch = trainer.current_epoch
            trial.report(float(value), step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: {name} {float(value):.4f} is below the "
                                         "median of the finished trials at that epoch")

    return Pruning()


def _is_result_or_running(trial) -> bool:
    """Finished with a score, failed on its own (a diverged run: a result too), or still running."""
    import optuna

    S = optuna.trial.TrialState
    return trial.state in (S.COMPLETE, S.RUNNING) or (trial.state == S.FAIL and "error" in trial.user_attrs)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (POSIX; elsewhere, no lock: workers may then queue a retry twice, and the
    second copy is skipped when it meets the first)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mean_score(summaries: list[dict[str, Any]], split: str, metric: str) -> float | None:
    """The mean of ``metric`` on ``split`` over run summaries (one run, or a CV's folds); None if one lacks it."""
    scores = [(s.get(split) or {}).get(metric) for s in summaries]
    return float(sum(scores) / len(scores)) if scores and all(v is not None for v in scores) else None


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

    from clipwise.classical import is_classical, train_classical
    from clipwise.train.cv import cross_validate
    from clipwise.train.fit import train

    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if prune and is_classical(config.model.name):
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
        grid = _grid(space)
        chosen = _grid_sampler_class()(grid, seed=seed)
        size = 1
        for v in grid.values():
            size *= len(v)
        trials = trials or size
    else:
        chosen = optuna.samplers.RandomSampler(seed=seed) if sampler == "random" else optuna.samplers.TPESampler(seed=seed)
        trials = trials or 20
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _open_storage(out / "study.db")
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
    revived = _revive_cut_off_trials(study, out)
    if revived:
        print(f"{revived} trial(s) cut off earlier will be tried again", flush=True)
    fit = train_classical if is_classical(config.model.name) else train

    def objective(trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        values = _suggest(trial, space)
        retry = "retry_of" in trial.user_attrs
        if sampler == "grid" or retry:
            # with several workers, Optuna's grid hands out a point another worker is still running once every
            # point has been started: this worker's work is done, so it stops instead of repeating that trial.
            # A retry queued twice (workers without a lock) is skipped and the worker goes on.
            twins = [t.number for t in study.get_trials(deepcopy=False) if t.number != trial.number
                     and t.params == trial.params and _is_result_or_running(t)]
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
        callbacks = [_pruning_callback(trial, lambda: metric)] if prune else []
        if cv is not None:
            cross_validate(cfg, out=run_dir, folds=cv or None, first_fold_callbacks=callbacks)
            summaries = [json.loads(f.read_text()) for f in sorted(run_dir.glob("fold*/summary.json"))]
            trial.set_user_attr("folds", len(summaries))
        else:
            run = RunFolder(run_dir)
            if run.last_checkpoint.is_file() and not run.summary_path.is_file():
                train(load_config(base=run.load_config_dict()), out=run_dir, resume=True, callbacks=callbacks)
            elif not run.summary_path.is_file():
                fit(cfg, out=run_dir, **({"callbacks": callbacks} if callbacks else {}))
            summaries = [run.load_summary()]
        nonlocal metric
        if metric is None:
            metric = (summaries[0].get("monitor") or "val_accuracy").removeprefix("val_") if summaries else None
            if metric:
                study.set_user_attr("metric", metric)
        for split in ("test", "train_clean"):
            value = _mean_score(summaries, split, metric)
            if value is not None:
                trial.set_user_attr(f"{split}_{metric}", value)
        value = _mean_score(summaries, "val", metric)
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


def refresh_leaderboard(out: str | os.PathLike) -> pd.DataFrame:
    """Rewrite and return the leaderboard of the sweep in ``out`` (e.g. after other workers finished)."""
    import optuna

    out = Path(out).absolute()
    study = optuna.load_study(study_name="clipwise", storage=_open_storage(out / "study.db"))
    return write_leaderboard(study, out)


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


def _open_storage(path: Path, *, attempts: int = 5):
    """The study's SQLite storage. Workers started together race to create its tables: the loser's schema stamp
    fails (UNIQUE constraint on alembic_version) although the winner's is complete, so try again."""
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9 (2021)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 60}},
                    heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                    heartbeat_stale_trial_callback=_queue_retry)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _mean_epochs(run_dir: Path) -> float | None:
    """Epochs trained by a trial's run, or the mean over its CV folds (a time budget makes it differ)."""
    files = [f for f in sorted(run_dir.glob("fold*/summary.json")) or [run_dir / "summary.json"] if f.is_file()]
    epochs = [e for e in (json.loads(f.read_text()).get("epochs_run") for f in files) if e is not None]
    return round(float(sum(epochs) / len(epochs)), 1) if epochs else None


def write_leaderboard(study, out: Path) -> pd.DataFrame:
    """leaderboard.csv and leaderboard.md of the finished trials, best validation score first.

    ``epochs`` is what the trial trained (a mean over CV folds; under ``train.max_minutes`` settings that cost more
    compute get fewer). ``attempts`` counts a trial that was cut off and retried once per attempt; ``minutes`` is
    the wall time of the attempt that finished it (a resumed run or CV goes on from what earlier attempts kept).
    """
    import optuna

    S = optuna.trial.TrialState
    metric = study.user_attrs.get("metric", "accuracy")
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    rows = []
    for t in trials:
        if t.state != S.COMPLETE:
            continue
        attempts, earlier = 1, t.user_attrs.get("retry_of")
        while earlier in by_number:
            attempts, earlier = attempts + 1, by_number[earlier].user_attrs.get("retry_of")
        rows.append({"trial": t.number, "run": t.user_attrs.get("run"), f"val_{metric}": t.value,
                     f"test_{metric}": t.user_attrs.get(f"test_{metric}"),
                     f"train_clean_{metric}": t.user_attrs.get(f"train_clean_{metric}"),
                     **({"folds": t.user_attrs["folds"]} if "folds" in t.user_attrs else {}),
                     "epochs": _mean_epochs(out / t.user_attrs.get("run", "")), "attempts": attempts,
                     "minutes": round((t.duration.total_seconds() if t.duration else 0) / 60, 2), **t.params})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(f"val_{metric}", ascending=study.direction.name == "MINIMIZE", kind="stable")
    atomic_write_text(out / "leaderboard.csv", frame.to_csv(index=False))
    failed = [t for t in trials if t.state == S.FAIL]
    own = sum("error" in t.user_attrs for t in failed)
    cut = len(failed) - own
    pruned = sum(t.state == S.PRUNED and "duplicate_of" not in t.user_attrs for t in trials)
    counts = f"{len(frame)} finished trial{'s' * (len(frame) != 1)}" + (
        f", {pruned} pruned" if pruned else "") + (
        f", {own} failed on {'their' if own > 1 else 'its'} own" if own else "") + (
        f", {cut} attempt{'s' * (cut != 1)} cut off" if cut else "")
    lines = [f"# Sweep leaderboard ({counts})", "",
             f"Ranked by validation {metric}; the test column is reported, never used to choose."
             + (" Each trial is a cross-validation: its scores are means over its folds." if study.user_attrs.get("cv")
                is not None else "")
             + " `minutes` is the wall time of the attempt that finished a trial.", ""]
    if len(frame):
        cols = list(frame.columns)
        scores = {f"{split}_{metric}" for split in ("val", "test", "train_clean")}
        lines += ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
        for _, r in frame.iterrows():
            lines.append("| " + " | ".join(
                (f"{v:.4f}" if c in scores else f"{v:g}") if isinstance(v, float) else str(v)
                for c, v in r.items()) + " |")
    atomic_write_text(out / "leaderboard.md", "\n".join(lines) + "\n")
    return frame.reset_index(drop=True)
