"""Weight EMA (train.ema): the averaging rule, the auto decay, and what a run with it saves and resumes."""

from __future__ import annotations

import shutil

import pytest
import torch

from clipwise.config import load_config
from clipwise.errors import ConfigError
from clipwise.run import RunFolder
from clipwise.training.callbacks import auto_ema_decay, ema_update


def test_the_average_warms_up_then_decays_at_the_set_rate():
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    update = ema_update(0.9)
    update(avg, cur, torch.tensor(1))  # after 1 update the decay is min(0.9, 2/11)
    assert torch.allclose(avg[0], torch.full((3,), 9 / 11))
    avg = [torch.zeros(3)]
    update(avg, cur, torch.tensor(1000))  # long after the warm-up: the set decay
    assert torch.allclose(avg[0], torch.full((3,), 0.1))


def test_integer_buffers_take_the_current_value():
    avg, cur = [torch.tensor([3])], [torch.tensor([7])]
    ema_update(0.99)(avg, cur, torch.tensor(5))
    assert avg[0].dtype == torch.int64 and avg[0].item() == 7


@pytest.mark.parametrize("steps, expected", [(1600, 1 - 1 / 80), (10, 0.9), (10**8, 0.9999)])
def test_auto_decay_has_a_time_constant_of_a_twentieth_of_the_run(steps, expected):
    assert auto_ema_decay(steps) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("value", ["1.0", "0", "-0.5"])
def test_a_decay_outside_zero_one_is_refused(value):
    with pytest.raises(ConfigError, match="train.ema"):
        load_config(overrides=[f"train.ema={value}"])


def _ckpt(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def ema_run(synth_manifest, tiny, tmp_path_factory) -> RunFolder:
    from clipwise.cli import main

    out = tmp_path_factory.mktemp("ema") / "run"
    assert main(["train", "--data", str(synth_manifest), "--epochs", "3", "--out", str(out), *tiny,
                 "train.ema=auto", "train.patience=null",
                 # every augmentation on: the average is a deep copy of the training module, augmenters included
                 "augment.time_stretch=0.1", "augment.time_reverse=0.5"]) == 0
    return RunFolder(out)


@pytest.mark.slow
def test_checkpoints_hold_the_average_and_the_raw_weights_for_resuming(ema_run):
    import yaml

    assert yaml.safe_load(ema_run.config_path.read_text())["train"]["ema"] == "auto"
    summary = ema_run.load_summary()
    steps = _ckpt(ema_run.last_checkpoint)["global_step"]  # 3 epochs, all planned ones
    assert summary["ema_decay"] == auto_ema_decay(steps)  # the decay used is recorded
    last = _ckpt(ema_run.last_checkpoint)
    avg, raw = last["state_dict"], last["current_model_state"]
    assert avg.keys() == raw.keys()
    changed = [k for k in avg if avg[k].is_floating_point() and not torch.equal(avg[k], raw[k])]
    assert changed  # the average trails the weights
    assert int(last["averaging_state"]["n_averaged"]) == last["global_step"]  # one update per optimiser step


@pytest.mark.slow
def test_the_run_is_scored_with_the_averaged_weights(ema_run):
    from clipwise.models.classifier import AudioClassifier

    best = ema_run.best_checkpoint
    model = AudioClassifier.load(best)
    avg = {k.removeprefix("model."): v for k, v in _ckpt(best)["state_dict"].items() if k.startswith("model.")}
    for k, v in model.state_dict().items():
        assert torch.equal(v, avg[k]), k


@pytest.mark.slow
def test_resume_continues_the_average(cli, ema_run, tmp_path):
    run = RunFolder(shutil.copytree(ema_run.root, tmp_path / "run"))
    before = _ckpt(run.last_checkpoint)
    assert cli("train", "--resume", run.root, "train.epochs=4").rc == 0
    after = _ckpt(run.last_checkpoint)
    steps = after["global_step"] - before["global_step"]
    assert steps > 0
    assert int(after["averaging_state"]["n_averaged"]) == int(before["averaging_state"]["n_averaged"]) + steps


def test_an_auto_decay_follows_the_length_a_time_budget_plans():
    from types import SimpleNamespace

    from clipwise.training.callbacks import WeightEMA

    module = SimpleNamespace(planned_epochs=200, hparams=SimpleNamespace(steps_per_epoch=40))
    ema = WeightEMA("auto")
    ema.module = module
    assert ema.decay() == auto_ema_decay(200 * 40)
    module.planned_epochs = 12  # what train.max_minutes planned after the first epoch
    assert ema.decay() == auto_ema_decay(12 * 40) < auto_ema_decay(200 * 40)
    assert WeightEMA(0.99).decay() == 0.99
