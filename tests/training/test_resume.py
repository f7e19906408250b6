"""Resuming a run: finished epochs are kept, nothing is trained twice, the run's own config is reused."""

from __future__ import annotations

import shutil
import signal

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

import clipwise.training.fit as fit
from clipwise.run import RunFolder

pytestmark = pytest.mark.slow  # every test trains, or uses the session's 2-epoch run (tests/conftest.py)


def _ckpt(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _rows(run: RunFolder) -> list[str]:
    return run.metrics_path.read_text().splitlines()[1:]


@pytest.fixture
def two_epochs(two_epoch_run) -> RunFolder:
    """The session's finished 2-epoch run (two_epoch_run in tests/conftest.py), kept pristine: tests resume
    copies of it."""
    return RunFolder(two_epoch_run)


@pytest.fixture
def restore_sigint():
    # Lightning ignores SIGINT for the rest of the process once it has handled a KeyboardInterrupt
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def test_last_checkpoint_is_the_last_epoch(two_epochs):
    # not the best one: validation accuracy need not improve in the last epoch
    assert _ckpt(two_epochs.last_checkpoint)["epoch"] == 1
    assert _ckpt(two_epochs.best_checkpoint)["epoch"] == two_epochs.load_summary()["best_epoch"]


def test_resume_with_more_epochs(cli, two_epochs, tmp_path):
    run = RunFolder(shutil.copytree(two_epochs.root, tmp_path / "run"))
    config_before = yaml.safe_load(run.config_path.read_text())
    rows_before = _rows(run)

    result = cli("train", "--resume", run.root, "train.epochs=4")
    assert result.rc == 0, result.err

    metrics = run.read_metrics()
    assert list(metrics["epoch"]) == [0, 1, 2, 3]
    assert _rows(run)[:2] == rows_before  # finished epochs are neither dropped nor trained again
    last = _ckpt(run.last_checkpoint)
    assert last["epoch"] == 3
    assert last["global_step"] == 4  # 8 training clips, batch 8: one step per epoch, none repeated
    summary = run.load_summary()
    assert summary["epochs_run"] == 4
    assert _ckpt(run.best_checkpoint)["epoch"] == summary["best_epoch"]
    config_after = yaml.safe_load(run.config_path.read_text())
    assert config_after["train"]["epochs"] == 4
    config_after["train"]["epochs"] = config_before["train"]["epochs"]
    assert config_after == config_before  # every other setting comes from the run folder


class _Interrupt(Callback):
    """Raise KeyboardInterrupt (what Ctrl+C does) at the start of epoch ``epoch`` or at the end of it, the
    latter after metrics.csv got the epoch's row but before its checkpoints are written (Lightning runs
    checkpoint callbacks last)."""

    def __init__(self, epoch: int, *, at: str):
        self.epoch, self.at = epoch, at

    def on_train_epoch_start(self, trainer, pl_module):
        if self.at == "start" and trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt

    def on_train_epoch_end(self, trainer, pl_module):
        if self.at == "end" and trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("at", "epoch", "last_epoch", "rows"),
    [
        ("start", 2, 1, 2),  # stopped cleanly after epoch 1
        ("end", 1, 0, 2),  # stopped after epoch 1's metrics row, before its checkpoint
    ],
)
def test_interrupted_run_resumes(cli, synth_manifest, tiny, tmp_path, monkeypatch, restore_sigint,
                                 at, epoch, last_epoch, rows):  # fmt: skip
    run = RunFolder(tmp_path / "run")
    original = fit._callbacks
    with monkeypatch.context() as patch:
        patch.setattr(fit, "_callbacks", lambda *a, **k: [*original(*a, **k), _Interrupt(epoch, at=at)])
        result = cli("train", "--data", synth_manifest, "--epochs", "4", "--out", run.root, *tiny)
    assert result.rc == 130
    assert "Traceback" not in result.err
    assert "clipwise train --resume" in result.err
    assert not run.summary_path.exists()  # the run did not finish
    assert _ckpt(run.last_checkpoint)["epoch"] == last_epoch
    assert _ckpt(run.best_checkpoint)["epoch"] <= last_epoch
    assert len(run.read_metrics()) == rows
    config = run.config_path.read_text()
    kept = _rows(run)[: last_epoch + 1]

    result = cli("train", "--resume", run.root)
    assert result.rc == 0, result.err
    assert list(run.read_metrics()["epoch"]) == [0, 1, 2, 3]
    assert _rows(run)[: last_epoch + 1] == kept
    assert _ckpt(run.last_checkpoint)["epoch"] == 3
    assert run.config_path.read_text() == config  # resumed with the run's own config, unchanged
    assert run.load_summary()["epochs_run"] == 4


def test_resume_needs_a_checkpoint(cli, two_epochs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(two_epochs.config_path, run / "config.yaml")
    shutil.copy(two_epochs.info_path, run / "run.json")  # written when the run starts, before any epoch
    result = cli("train", "--resume", run)
    assert result.rc == 2 and "Traceback" not in result.err
    assert "last.ckpt is missing" in result.err

    result = cli("train", "--resume", tmp_path / "nowhere")
    assert result.rc == 2 and "not a clipwise run folder" in result.err


def test_a_resumed_run_counts_the_training_time_of_its_earlier_processes(cli, two_epochs, tmp_path):
    run = RunFolder(shutil.copytree(two_epochs.root, tmp_path / "run"))
    ckpt = _ckpt(run.last_checkpoint)
    first = ckpt["clipwise_train_seconds"]
    # the summary rounds to 0.1 s; the checkpoint is written before training ends
    assert 0 < first <= two_epochs.load_summary()["timing"]["train_seconds"] + 0.05
    ckpt["clipwise_train_seconds"] = 1000.0  # as if the first process had trained for 1000 s
    torch.save(ckpt, run.last_checkpoint)

    assert cli("train", "--resume", run.root, "train.epochs=3").rc == 0
    timing = run.load_summary()["timing"]
    assert 1000.0 < timing["train_seconds"] < 1000.0 + 600
    assert _ckpt(run.last_checkpoint)["clipwise_train_seconds"] > 1000.0
