"""No file clipwise reads can run code: a pickled payload planted in each kind of file a run holds (checkpoint,
the weights an ensemble keeps of a member, a baseline's fitted pipeline, a disk-cache entry) is refused with a
clear error and never executed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch


class Payload:
    """Unpickling this creates the file ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {}, "spec": Payload(marker), "epoch": 0}, path)


def _clip(run: Path) -> str:
    return __import__("pandas").read_csv(run / "splits.csv").query("split == 'test'")["path"].iloc[0]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "evaluate", "recompute"])
def test_a_planted_best_checkpoint_never_runs(cli, two_epoch_copy, tmp_path, command):
    marker = tmp_path / "ran"
    _plant_checkpoint(two_epoch_copy / "checkpoints" / "best.ckpt", marker)
    args = {"predict": ("predict", two_epoch_copy, _clip(two_epoch_copy)),
            "evaluate": ("evaluate", two_epoch_copy),
            "recompute": ("evaluate", two_epoch_copy, "--recompute")}[command]
    r = cli(*args)
    assert r.rc == 2 and "Traceback" not in r.err, r.err
    assert "best.ckpt is not a clipwise checkpoint" in r.err and "never runs code" in r.err
    assert not marker.exists()


@pytest.mark.slow
def test_a_planted_last_checkpoint_never_runs_on_resume(cli, two_epoch_copy, tmp_path):
    marker = tmp_path / "ran"
    _plant_checkpoint(two_epoch_copy / "checkpoints" / "last.ckpt", marker)
    r = cli("train", "--resume", two_epoch_copy)
    assert r.rc == 2 and "last.ckpt is not a clipwise checkpoint" in r.err, r.err
    assert not marker.exists()


@pytest.mark.slow
def test_a_planted_ensemble_member_never_runs(cli, two_epoch_run, tmp_path):
    a, b = (Path(shutil.copytree(two_epoch_run, tmp_path / name)) for name in ("a", "b"))
    assert cli("ensemble", a, b, "--out", tmp_path / "ens", "--weights", "mean").rc == 0
    member = next((tmp_path / "ens" / "members").iterdir())
    marker = tmp_path / "ran"
    _plant_checkpoint(member / "model.pt", marker)
    r = cli("predict", tmp_path / "ens", _clip(a))
    assert r.rc == 2 and "model.pt is not a clipwise checkpoint" in r.err, r.err
    assert not marker.exists()


@pytest.mark.slow
def test_a_planted_baseline_pipeline_never_runs(cli, synth_manifest, tmp_path):
    import pickle

    import skops.io as sio

    run = tmp_path / "base"
    assert cli("train", "--data", synth_manifest, "--model", "logreg", "--out", run, "train.progress=false").rc == 0
    clip = _clip(run)
    marker = tmp_path / "ran"
    (run / "model.skops").write_bytes(pickle.dumps(Payload(marker)))  # a pickle where a skops file belongs
    r = cli("predict", run, clip)
    assert r.rc == 2 and "model.skops is not a clipwise baseline" in r.err, r.err
    sio.dump({"model": Payload(marker)}, run / "model.skops")  # a skops file naming a type of its own
    r = cli("predict", run, clip)
    assert r.rc == 2 and "names types a clipwise baseline never holds" in r.err and "Payload" in r.err, r.err
    assert not marker.exists()


def test_checkpoint_loading_refuses_payloads_and_damaged_files(tmp_path):
    from clipwise.errors import RunError, UnsafeFileError
    from clipwise.models.classifier import load_checkpoint

    marker = tmp_path / "ran"
    _plant_checkpoint(tmp_path / "x.ckpt", marker)
    with pytest.raises(UnsafeFileError, match="never runs code"):
        load_checkpoint(tmp_path / "x.ckpt")
    assert not marker.exists()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, tmp_path / "ok.ckpt")
    data = (tmp_path / "ok.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="damaged or not a checkpoint"):
        load_checkpoint(tmp_path / "cut.ckpt")
    assert load_checkpoint(tmp_path / "ok.ckpt")["epoch"] == 3
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "ok.ckpt")["state_dict"]["w"].numpy(), [0, 0])
