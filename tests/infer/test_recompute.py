"""`clipwise evaluate RUN --recompute`: every number of a finished run reproduces, and a tampered one is found."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.slow  # every test uses the session's 2-epoch run (tests/conftest.py)


@pytest.fixture
def trained(two_epoch_run):
    """The session's finished 2-epoch run (two_epoch_run in tests/conftest.py), read-only: `--recompute` writes
    recompute.json into the run folder, so every test works on a copy."""
    return two_epoch_run


def test_a_finished_run_reproduces_every_number(two_epoch_copy, cli):
    trained = two_epoch_copy
    r = cli("evaluate", trained, "--recompute")
    assert r.rc == 0, r.out + r.err
    assert "0 differ" in r.out and "report.md regenerates identically" in r.out and "all numbers reproduce" in r.out
    result = json.loads((trained / "recompute.json").read_text())
    checked = {c["check"].split(":")[0] for c in result["checks"]}
    assert checked == {"val", "test", "train_clean"}
    assert any(c["key"] == "max |probability|" and c["check"].startswith("test") for c in result["checks"])


def test_tampered_numbers_are_reported(trained, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["test"]["macro_f1"] += 0.05
    (run / "summary.json").write_text(json.dumps(summary))
    report = (run / "report.md").read_text()
    (run / "report.md").write_text(report.replace("## Notes", "## Notes\n\n- an edited line", 1))
    r = cli("evaluate", run, "--recompute")
    assert r.rc == 1
    assert "test: summary.json vs predictions_test.csv: macro_f1 stated" in r.out
    assert "test: summary.json vs checkpoint: macro_f1" in r.out
    assert "-- an edited line" in r.out and "do NOT reproduce" in r.out


def test_predictions_that_the_checkpoint_does_not_give_are_found(trained, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    path = run / "predictions_val.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[3], cells[4] = cells[4], cells[3]  # swap the first two probabilities of the first clip
    path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    r = cli("evaluate", run, "--recompute", "--format", "json")
    result = json.loads(r.out)
    [probe] = [c for c in result["checks"] if c["check"] == "val: checkpoint vs predictions_val.csv"]
    assert not probe["ok"] and probe["recomputed"] > 1e-3 and r.rc == 1


@pytest.mark.slow
def test_a_copied_and_renamed_run_still_reproduces(cli, two_epoch_run, tmp_path):
    import shutil

    copy = shutil.copytree(two_epoch_run, tmp_path / "renamed-copy")
    r = cli("evaluate", copy, "--recompute")
    assert r.rc == 0 and "report.md regenerates identically" in r.out and "all numbers reproduce" in r.out, r.out
