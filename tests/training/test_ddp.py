"""Two-process DDP training on CPU (gloo), launched by Lightning from a real ``clipwise train`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipwise.run import RunFolder

DDP = ("train.devices=2", "train.strategy=ddp", "train.accelerator=cpu", "train.threads=1")


@pytest.mark.slow
@pytest.mark.parametrize("out", ["RUN", None], ids=["out", "default-folder"])
def test_ddp_on_cpu_writes_one_run_with_identical_weights(synth_manifest, tiny, tmp_path, out):
    work = tmp_path / "work"  # the data lives elsewhere, so anything new here was written by the run
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CLIPWISE_RUN_DIR", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONWARNINGS"] = "ignore"
    # a time budget too: both processes must take rank 0's epoch plan, or one would wait for the other forever
    args = ["train", "--data", str(synth_manifest), "--epochs", "2", *(["--out", out] if out else []), *tiny, *DDP,
            "train.max_minutes=10"]
    result = subprocess.run([sys.executable, "-m", "clipwise", *args], cwd=work, env=env, capture_output=True,
                            text=True, timeout=400)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    if out:
        assert [p.name for p in work.iterdir()] == [out]
        run = RunFolder(work / out)
    else:
        # each process re-runs the command; they must agree on the one timestamped folder
        assert [p.name for p in work.iterdir()] == ["runs"]
        (folder,) = (work / "runs").iterdir()
        assert folder.name.startswith(f"{Path(synth_manifest).parent.name}-audiocnn_small-")
        run = RunFolder(folder)
    assert not list(work.rglob("lightning_logs"))

    summary = run.load_summary()
    distributed = summary["distributed"]
    assert distributed["world_size"] == 2
    checksums = distributed["weights_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert distributed["weights_identical"] is True
    assert list(run.read_metrics()["epoch"]) == [0, 1]  # one row per epoch, written by rank 0 only
    assert summary["test"]["n"] == 8  # evaluation is whole, not sharded across the ranks
    assert run.last_checkpoint.is_file() and run.best_checkpoint.is_file()
    # one run's files only (no best-v1.ckpt of a second writer); last.ckpt.prev is the epoch before, kept on purpose
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["best.ckpt", "last.ckpt", "last.ckpt.prev"]
