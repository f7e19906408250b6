"""bf16 mixed precision (train.precision=bf16): trains, and what it saves is a float32 model."""

from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest
import torch

from clipwise.models.classifier import AudioClassifier
from clipwise.run import RunFolder


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:train.precision=bf16 on a CPU without native bf16")  # the next test's subject
def test_bf16_training_saves_a_float32_model_with_finite_curves(cli, synth_manifest, tiny, tmp_path):
    """Autocast covers the forward passes of training, validation, the weight average and precise BN; the
    weights, the averaged weights and BatchNorm's statistics stay float32 in the checkpoint."""
    run = RunFolder(tmp_path / "run")
    r = cli("train", "--data", synth_manifest, "--epochs", "2", "--out", run.root, *tiny, "train.precision=bf16",
            "train.ema=auto", "train.patience=null")
    assert r.rc == 0, r.err
    ckpt = torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)
    floats = {k: v.dtype for k, v in ckpt["state_dict"].items() if v.is_floating_point()}
    assert floats and set(floats.values()) == {torch.float32}
    metrics = pd.read_csv(run.root / "metrics.csv")
    assert len(metrics) == 2
    for col in ("train_loss", "val_loss", "val_accuracy"):
        assert all(math.isfinite(v) for v in metrics[col]), col
    model = AudioClassifier.load(run.best_checkpoint)
    assert next(model.parameters()).dtype == torch.float32
    probs = pd.read_csv(run.root / "predictions_test.csv")
    assert len(probs) == 8


@pytest.mark.slow
def test_bf16_on_a_cpu_without_native_bf16_warns_and_names_the_fix(cli, synth_manifest, tiny, tmp_path, monkeypatch):
    """Emulated bf16 made an audiocnn training step 10x slower than float32 on this machine's AVX2 CPU: a user
    who asks for it there is told, and still gets the run they asked for."""
    import clipwise.training.fit as fit

    monkeypatch.setattr(fit, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"train\.precision=bf16 on a CPU without native bf16.*train\.precision=32"):
        r = cli("train", "--data", synth_manifest, "--epochs", "1", "--out", tmp_path / "run", *tiny,
                "train.precision=bf16")
    assert r.rc == 0, r.err
    monkeypatch.setattr(fit, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli("train", "--data", synth_manifest, "--epochs", "1", "--out", tmp_path / "run2", *tiny,
                   "train.precision=bf16").rc == 0
    assert not [w for w in caught if "native bf16" in str(w.message)]
