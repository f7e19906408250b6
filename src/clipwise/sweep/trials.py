"""Trials that outlive their process: heartbeats, the retry of trials cut off by a kill, Ctrl-C or a crash,
the study's SQLite storage, and the per-epoch pruning callback."""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path

# every running trial records a heartbeat in study.db; one silent for GRACE_SECONDS (its process or machine died)
# is failed by the next worker to look and its values are queued again, on whichever machine runs that worker
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 300
# --prune: Optuna's median rule, once PRUNE_STARTUP_TRIALS trials have finished, from epoch PRUNE_WARMUP_EPOCHS on
PRUNE_STARTUP_TRIALS = 5
PRUNE_WARMUP_EPOCHS = 3


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def revive_cut_off_trials(study, out: Path) -> int:
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
    with locked(out / "study.lock"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # silent heartbeats, any machine (queued by _queue_retry)
        for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
            if t.user_attrs.get("host") == host and not _alive(int(t.user_attrs.get("pid", -1))):
                study._storage.set_trial_state_values(t._trial_id, S.FAIL)  # killed here: no need to wait
        for t in study.get_trials(deepcopy=False, states=(S.FAIL,)):
            queue_retry(study, t)
        queued = [t for t in study.get_trials(deepcopy=False, states=(S.WAITING,)) if "retry_of" in t.user_attrs]
        return len(queued)


def queue_retry(study, trial) -> bool:
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


def pruning_callback(trial, metric: Callable[[], str | None]):
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


def is_result_or_running(trial) -> bool:
    """Finished with a score, failed on its own (a diverged run: a result too), or still running."""
    import optuna

    S = optuna.trial.TrialState
    return trial.state in (S.COMPLETE, S.RUNNING) or (trial.state == S.FAIL and "error" in trial.user_attrs)


@contextlib.contextmanager
def locked(path: Path):
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


def open_storage(path: Path, *, attempts: int = 5):
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
                    # not Optuna's RetryFailedTrialCallback: its retry is a fresh trial in a new folder, while a
                    # cut-off clipwise trial must continue in its own (finished folds, the last checkpoint)
                    heartbeat_stale_trial_callback=queue_retry)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")
