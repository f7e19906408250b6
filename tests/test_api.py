"""The public Python API: `import clipwise` is light, and train / load / predict / evaluate agree with the CLI's
run folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import clipwise


def test_importing_clipwise_loads_no_torch_and_every_public_name_resolves():
    code = ("import sys, clipwise; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(clipwise.__version__); import clipwise.task, clipwise.run; "
            "assert 'torch' not in sys.modules, 'torch imported by task/run'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import clipwise.kinds  # noqa: F401  (imports every subpackage a run needs)

    for name in clipwise.__all__:
        assert getattr(clipwise, name) is not None
    # no subpackage shadows an API name (importing a subpackage sets the package attribute of its name)
    assert callable(clipwise.train) and callable(clipwise.cv) and callable(clipwise.load)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        clipwise.nothing  # noqa: B018


def test_make_config_applies_shortcuts_then_overrides_and_refuses_unknown_models(tmp_path):
    cfg = clipwise.make_config(tmp_path / "m.csv", model="audiocnn_small", epochs=3,
                               overrides=["train.epochs=4", "optim.lr=0.01"])
    assert cfg.model.name == "audiocnn_small" and cfg.train.epochs == 4 and cfg.optim.lr == 0.01
    assert cfg.data.manifest == str((tmp_path / "m.csv").resolve())
    with pytest.raises(clipwise.ConfigError, match="audiocnn_small"):
        clipwise.make_config(model="audiocnn_smal")
    with pytest.raises(clipwise.ConfigError, match="optim.lr"):
        clipwise.make_config(**{"optim.lr_rat": 1.0})


@pytest.mark.slow
def test_load_predicts_and_evaluates_what_the_run_folder_says(two_epoch_copy):
    model = clipwise.load(two_epoch_copy)
    assert model.kind == "deep" and model.task.name == "multiclass" and model.labels == model.run.load_labels()
    frame, saved, _ = model.run.load_predictions("test")
    files = list(frame["path"])
    np.testing.assert_allclose(model.predict_proba(files), saved, atol=1e-5)
    rows = model.predict(files, top_k=2)
    assert [r["labels"][0] for r in rows] == list(frame["pred"])
    assert all(len(r["top"]) == 2 and r["top"][0][0] == r["labels"][0] for r in rows)
    result = model.evaluate()
    assert result["metrics"]["accuracy"] == pytest.approx(model.summary["test"]["accuracy"], abs=1e-6)
    with pytest.raises(clipwise.ConfigError, match="top_k"):
        model.predict(files, top_k=0)


@pytest.mark.slow
def test_train_returns_the_model_of_a_new_run(synth_manifest, tiny, tmp_path):
    model = clipwise.train(synth_manifest, out=tmp_path / "run", epochs=1, overrides=list(tiny))
    assert model.run.root == tmp_path / "run"
    info = json.loads(model.run.info_path.read_text())
    assert info["kind"] == "deep" and info["task"] == "multiclass"
    assert len(pd.read_csv(model.run.metrics_path)) == 1


@pytest.mark.slow
def test_a_checkpoint_file_of_a_run_loads_that_checkpoint(two_epoch_run, tmp_path):
    model = clipwise.load(two_epoch_run / "checkpoints" / "last.ckpt")
    assert model.run.root == two_epoch_run and model.kind == "deep"
    stray = tmp_path / "model.ckpt"
    stray.write_bytes(b"")
    with pytest.raises(clipwise.RunError, match="pass the run folder"):
        clipwise.load(stray)
