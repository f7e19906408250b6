"""fit_one_cycle-style phases (own schedules, frozen backbone) and the learning-rate range test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clipwise.training.lr_find import suggest
from clipwise.training.module import head_parameters, phase_lr, phase_of_epoch

PHASES = [{"epochs": 2, "lr": 1e-2, "freeze": "backbone", "pct_start": 0.25},
          {"epochs": 3, "lr": 1e-3, "backbone_lr_factor": 0.1, "pct_start": 0.25}]


def test_each_phase_is_a_one_cycle_of_its_own():
    steps = 10  # per epoch: phase 1 = steps 0-19, phase 2 = steps 20-49
    lr = [phase_lr(PHASES, s, steps_per_epoch=steps, head=True, min_ratio=0.01) for s in range(50)]
    assert lr[0] == pytest.approx(1e-2 / 25) and max(lr[:20]) == pytest.approx(1e-2)
    assert lr[19] < 1e-3 and lr[20] == pytest.approx(1e-3 / 25)  # phase 2 warms up again from its own lr / 25
    assert max(lr[20:]) == pytest.approx(1e-3) and lr[49] == pytest.approx(1e-5, rel=0.2)
    body = phase_lr(PHASES, 30, steps_per_epoch=steps, head=False, min_ratio=0.01)
    assert body == pytest.approx(0.1 * phase_lr(PHASES, 30, steps_per_epoch=steps, head=True, min_ratio=0.01))
    assert [phase_of_epoch(PHASES, e) for e in range(7)] == [0, 0, 1, 1, 1, 1, 1]


def test_the_head_is_found_for_builtin_and_timm_backbones():
    from clipwise.models import create_backbone

    for name in ("audiocnn_small", "crnn", "resnet18"):
        net = create_backbone(name, num_classes=7, input_size=(32, 64))
        head = head_parameters(net)
        assert head and any(p.shape[0] == 7 for p in head), name


@pytest.mark.slow
def test_a_frozen_phase_trains_only_the_head(synth_manifest, tmp_path, cli, tiny):
    import json

    phases = json.dumps([{"epochs": 1, "lr": 0.01, "freeze": "backbone"}]).replace(" ", "")
    r = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", *tiny, f"optim.phases={phases}",
            "augment.mixup_alpha=0")
    assert r.rc == 0, r.err
    from clipwise.training.module import ClassifierModule

    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    torch.manual_seed(0)
    import lightning as L

    L.seed_everything(0, verbose=False)
    fresh = ClassifierModule(ckpt["hyper_parameters"]["spec"], ckpt["hyper_parameters"]["config"], 1)
    trained = ckpt["state_dict"]
    head = {n for n, p in fresh.named_parameters() if any(p is h for h in head_parameters(fresh.model.backbone))}
    moved = {n for n, p in fresh.named_parameters() if not torch.equal(p.detach(), trained[n])}
    assert moved and moved <= head, sorted(moved - head)[:5]
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["epoch"].tolist() == [0]


def test_epochs_that_disagree_with_the_phases_are_refused(synth_manifest, tmp_path, cli, tiny):
    r = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", "--epochs", "3", *tiny,
            'optim.phases=[{"epochs":1,"lr":0.01}]')
    assert r.rc == 2 and "disagrees with optim.phases" in r.err


def test_suggestions_from_a_range_test_curve():
    lrs = np.logspace(-6, 0, 61)
    # flat, a steep fall centred at 1e-3, a minimum near 1e-2, then an explosion
    loss = 2.0 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 3) * 4)) + np.where(lrs > 1e-2, (np.log10(lrs) + 2) ** 2, 0)
    s = suggest(lrs, loss)
    assert 5e-4 < s["steepest_lr"] < 2e-3
    assert 5e-3 < s["min_loss_lr"] < 2e-2 and s["suggested_lr"] == pytest.approx(s["min_loss_lr"] / 10)


@pytest.mark.slow
def test_lr_find_cli_writes_the_curve(synth_manifest, tmp_path, cli, tiny):
    r = cli("lr-find", "--data", synth_manifest, "--out", tmp_path / "lr", "--steps", "12", *tiny)
    assert r.rc == 0, r.err
    frame = pd.read_csv(tmp_path / "lr" / "lr_find.csv")
    assert 3 <= len(frame) <= 12 and frame["lr"].is_monotonic_increasing
    assert "suggested: optim.lr=" in r.out and (tmp_path / "lr" / "lr_find.png").stat().st_size > 0


def test_a_time_budget_plans_the_epochs_that_fit(monkeypatch):
    from types import SimpleNamespace

    import clipwise.training.callbacks as callbacks

    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: clock[0])
    budget = callbacks.TimeBudget(minutes=1.0)
    one_process = SimpleNamespace(broadcast=lambda obj, src=0: obj)
    trainer = SimpleNamespace(current_epoch=0, max_epochs=40, fit_loop=SimpleNamespace(max_epochs=40),
                              strategy=one_process)
    module = SimpleNamespace(planned_epochs=40, budget_epochs=None)
    budget.on_train_start(trainer, module)
    budget.on_train_epoch_start(trainer, module)  # epoch 0 starts: nothing measured yet
    assert module.planned_epochs == 40
    clock[0] += 10.0  # the first epoch, validation included, took 10 s
    trainer.current_epoch = 1
    budget.on_train_epoch_start(trainer, module)
    assert module.planned_epochs == module.budget_epochs == trainer.fit_loop.max_epochs == 5  # 0.95 * 60 s / 10 s
    # the first epoch carried one-off costs: the next ones take 5 s, and the plan follows the median of the latest
    clock[0] += 5.0
    trainer.current_epoch = 2
    budget.on_train_epoch_start(trainer, module)
    assert module.planned_epochs == 2 + int((57 - 15) / 7.5) == 7  # median of (10, 5)
    clock[0] += 5.0
    trainer.current_epoch = 3
    budget.on_train_epoch_start(trainer, module)
    assert module.planned_epochs == trainer.fit_loop.max_epochs == 3 + int((57 - 20) / 5) == 10  # median of (10, 5, 5)
    for epoch, planned in ((4, 4 + int((57 - 40) / 5)), (5, 7)):  # the last revision, then the plan holds
        clock[0] += 20.0
        trainer.current_epoch = epoch
        budget.on_train_epoch_start(trainer, module)
        assert module.planned_epochs == trainer.fit_loop.max_epochs == planned
    # a resumed run (its plan restored from the checkpoint) keeps the plan, however fast its epochs now are
    resumed = callbacks.TimeBudget(minutes=1.0)
    trainer = SimpleNamespace(current_epoch=3, max_epochs=40, fit_loop=SimpleNamespace(max_epochs=40),
                              strategy=one_process)
    module = SimpleNamespace(planned_epochs=5, budget_epochs=5)
    resumed.on_train_start(trainer, module)
    clock[0] += 1.0
    trainer.current_epoch = 4
    resumed.on_train_epoch_start(trainer, module)
    assert module.planned_epochs == module.budget_epochs == trainer.fit_loop.max_epochs == 5


def test_no_epoch_starts_that_cannot_end_within_the_hard_limit(monkeypatch):
    """Lightning cuts an epoch short at max_time and then validates it anyway, overrunning the budget; the
    budget stops training at an epoch's end when the median of the latest epochs exceeds the time left."""
    from types import SimpleNamespace

    import clipwise.training.callbacks as callbacks

    clock, left = [0.0], [900.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: clock[0])
    budget = callbacks.TimeBudget(minutes=15.0)
    timer = SimpleNamespace(time_remaining=lambda: left[0])
    trainer = SimpleNamespace(current_epoch=0, max_epochs=200, fit_loop=SimpleNamespace(max_epochs=200),
                              strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj), callbacks=[timer],
                              should_stop=False)
    module = SimpleNamespace(planned_epochs=200, budget_epochs=None)
    budget.on_train_start(trainer, module)
    for epoch, (took, stops) in enumerate(((300.0, False), (200.0, False), (250.0, True))):  # medians 300, 250, 250
        trainer.current_epoch = epoch
        budget.on_train_epoch_start(trainer, module)
        clock[0] += took
        left[0] -= took
        budget.on_train_epoch_end(trainer, module)
        assert trainer.should_stop is stops, (took, left[0])
    # 900 - 750 = 150 s left: a 250 s epoch would be cut off. Another 250 s epoch, with 260 s left: it runs
    trainer.should_stop, left[0], trainer.current_epoch = False, 260.0, 3
    budget.on_train_epoch_start(trainer, module)
    clock[0] += 250.0
    budget.on_train_epoch_end(trainer, module)
    assert trainer.should_stop is False
    # no hard limit (no Timer): nothing to stop for
    trainer.callbacks, left[0] = [], 1.0
    budget.on_train_epoch_end(trainer, module)
    assert trainer.should_stop is False


@pytest.mark.slow
def test_a_run_whose_next_epoch_cannot_fit_stops_after_the_epoch_it_finished(synth_manifest, tmp_path, cli, tiny,
                                                                               monkeypatch):
    """The stop rule inside a real Lightning run: with no time left on the hard limit after the first epoch,
    training ends there (Lightning's own limit, far away, never fires)."""
    import json

    from lightning.pytorch.callbacks import Timer

    monkeypatch.setattr(Timer, "time_remaining", lambda self, stage="train": 0.0)
    r = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", *tiny, "train.max_minutes=30",
            "train.epochs=4", "train.patience=null")
    assert r.rc == 0, r.err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 1


@pytest.mark.slow
def test_the_cosine_schedule_anneals_over_the_planned_epochs(synth_manifest, tmp_path, cli, tiny, monkeypatch):
    """A real run under a time budget, on a clock driven by the epochs rather than the machine: every epoch
    "takes" 3 minutes of a 30-minute budget, so after the first one the budget plans 1 + int((0.95 * 1800 - 180)
    / 180) = 9 epochs (the replans after epochs 2-4 agree), the run trains exactly those and the last one runs
    near the schedule's floor. The hard limit (Lightning's max_time, 30 real minutes) never comes near."""
    import json
    from types import SimpleNamespace

    import lightning as L

    import clipwise.training.callbacks as callbacks
    import clipwise.training.fit as fit

    epoch_seconds, trainers = 180.0, []

    class Clock(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            trainers.append(trainer)

    def now() -> float:  # what the budget reads as the time: epoch e starts (and, to this clock, ends) at e * 180 s
        return trainers[-1].current_epoch * epoch_seconds if trainers else 0.0

    monkeypatch.setattr(callbacks, "time", SimpleNamespace(time=now))
    original = fit._callbacks
    monkeypatch.setattr(fit, "_callbacks", lambda *a, **k: [Clock(), *original(*a, **k)])
    r = cli("train", "--data", synth_manifest, "--out", tmp_path / "run", "--epochs", "200", *tiny,
            "train.max_minutes=30", "train.patience=null")
    assert r.rc == 0, r.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert 2 <= summary["epochs_planned"] < 200 and len(metrics) <= summary["epochs_planned"]
    assert summary["epochs_planned"] == 9 and summary["epochs_run"] == len(metrics) == 9  # finished its plan
    assert metrics["lr"].iloc[-1] < 0.1 * metrics["lr"].max()  # so the last epoch ran near the floor
