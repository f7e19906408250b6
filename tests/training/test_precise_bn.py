"""Precise BatchNorm (train.precise_bn): statistics re-estimated on clean training clips before each validation."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from clipwise.data.audio import load_audio
from clipwise.models.classifier import AudioClassifier
from clipwise.run import RunFolder
from clipwise.training.callbacks import recalibrate_batchnorm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Conv1d(4, 3, 1), nn.BatchNorm1d(3))


def test_statistics_are_the_plain_average_over_the_clean_batches():
    net = _net()
    net.train()
    for _ in range(5):  # training leaves statistics of other inputs behind
        net(torch.randn(8, 2, 10) * 5 + 3)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(6, 2, 10) + i for i in range(3)]
    net.eval()
    assert recalibrate_batchnorm(net, batches) == 2

    h = [net[0](b) for b in batches]  # what the first BatchNorm sees
    mean = torch.stack([x.mean(dim=(0, 2)) for x in h]).mean(0)
    var = torch.stack([x.var(dim=(0, 2), unbiased=True) for x in h]).mean(0)
    assert torch.allclose(net[1].running_mean, mean, atol=1e-5)
    assert torch.allclose(net[1].running_var, var, atol=1e-5)
    # nothing else changed: weights, momentum, modes (dropout stayed off, so the second layer's inputs were
    # deterministic: a second recalibration gives the same statistics)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    assert net[1].momentum == 0.1 and not net.training and not any(m.training for m in net.modules())
    second = net[4].running_mean.clone()
    recalibrate_batchnorm(net, batches)
    assert torch.allclose(net[4].running_mean, second)


def test_nothing_to_estimate_from_keeps_the_old_statistics():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batchnorm(net, [torch.randn(1, 2, 10)]) == 0  # a batch of one has no variance
    assert recalibrate_batchnorm(nn.Sequential(nn.Linear(2, 2)), [torch.randn(4, 2)]) == 0  # no BatchNorm
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def _train_windows(run: RunFolder, model: AudioClassifier) -> torch.Tensor:
    splits = pd.read_csv(run.root / "splits.csv")
    n = model.spec.clip_samples
    waves = [load_audio(p, sample_rate=model.sample_rate)[:n] for p in splits.loc[splits.split == "train", "path"]]
    return torch.stack([torch.nn.functional.pad(torch.from_numpy(w), (0, n - len(w))) for w in waves])


def _drift(model: AudioClassifier, windows: torch.Tensor) -> float:
    """Largest relative change of any BatchNorm running variance when re-estimated on ``windows``."""
    saved = [m.running_var.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    recalibrate_batchnorm(model, [windows])
    again = [m.running_var for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return max(float(((a - b).abs() / (b.abs() + 1e-5)).max()) for a, b in zip(saved, again))


@pytest.mark.slow
@pytest.mark.parametrize("ema", ["null", "auto"])
def test_checkpoints_hold_statistics_of_clean_training_clips(cli, synth_manifest, tiny, tmp_path, ema):
    """With heavy augmentation the running statistics of training drift away from clean inputs; the saved best
    checkpoint (with an EMA: the average) holds the clean ones: re-estimating them again changes nothing.
    The 8 training clips are all in one batch of 8, so order does not matter. "Nothing" allows for 1 %: trained
    on a GPU, cuDNN convolutions run in TF32 (10-bit mantissa), so statistics estimated there differ from this
    float32 CPU estimate by a few parts in a thousand; without precise BN the drift is tens of percent."""
    overrides = [*tiny, "augment.mixup_alpha=1.0", "augment.filter_db=12", f"train.ema={ema}", "train.patience=null"]
    run = RunFolder(tmp_path / "on")
    assert cli("train", "--data", synth_manifest, "--epochs", "2", "--out", run.root, *overrides).rc == 0
    model = AudioClassifier.load(run.best_checkpoint)
    windows = _train_windows(run, model)
    assert len(windows) == 8
    on = _drift(model, windows)

    off = RunFolder(tmp_path / "off")
    assert cli("train", "--data", synth_manifest, "--epochs", "2", "--out", off.root, *overrides,
               "train.precise_bn=0").rc == 0
    off_drift = _drift(AudioClassifier.load(off.best_checkpoint), windows)
    print(f"drift with precise BN {on:.2e}, without {off_drift:.2e}")
    assert on < 1e-2 and off_drift > 0.1, (on, off_drift)
