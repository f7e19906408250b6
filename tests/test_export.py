"""`clipwise export`: a run becomes a bundle that scores audio without torch, the same as the run does; parity is
measured at export; a changed byte is caught on load; kinds that cannot export say what to do instead."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(two_epoch_run, tmp_path_factory):
    from clipwise.cli import main

    out = tmp_path_factory.mktemp("bundles") / "model.bundle"
    assert main(["export", str(two_epoch_run), "--out", str(out)]) == 0
    return out


def _test_clips(run: Path) -> list[str]:
    splits = pd.read_csv(run / "splits.csv")
    return list(splits.loc[splits["split"] == "test", "path"])


def test_the_bundle_holds_the_model_its_facts_and_the_parity_measured(bundle, two_epoch_run):
    meta = json.loads((bundle / "bundle.json").read_text())
    assert {p.name for p in bundle.iterdir()} >= {"model.onnx", "bundle.json", "labels.json", "run.json"}
    assert meta["parity"]["max_abs_difference"] <= 1e-4 and meta["parity"]["top1_agreement"] == 1.0
    assert meta["source_test_metrics"] == json.loads((two_epoch_run / "summary.json").read_text())["test"]
    assert set(meta["files"]) == {p.name for p in bundle.iterdir() if p.name != "bundle.json"}


def test_predict_on_the_bundle_matches_predict_on_the_run(bundle, two_epoch_run, cli):
    clips = _test_clips(two_epoch_run)
    a = cli("predict", two_epoch_run, *clips, "--format", "csv", "--top-k", "3")
    b = cli("predict", bundle, *clips, "--format", "csv", "--top-k", "3")
    assert a.rc == b.rc == 0, a.err + b.err
    run_rows, bundle_rows = pd.read_csv(io.StringIO(a.out)), pd.read_csv(io.StringIO(b.out))
    assert list(run_rows["label_1"]) == list(bundle_rows["label_1"])
    assert (run_rows["prob_1"] - bundle_rows["prob_1"]).abs().max() <= 1e-4  # the parity tolerance of export


def test_the_runtime_loads_no_torch_and_gives_the_same_top_k(bundle, two_epoch_run):
    clips = _test_clips(two_epoch_run)[:3]
    code = ("import json, sys\nfrom clipwise.runtime import load\n"
            f"m = load({str(bundle)!r})\n"
            f"print(json.dumps([m.predict(p, top_k=2) for p in {clips!r}]))\n"
            "assert 'torch' not in sys.modules, sorted(k for k in sys.modules if k.startswith('torch'))[:5]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from clipwise.kinds import load_run

    run = load_run(two_epoch_run)
    expected = run.top_k(run.predict_files(clips), k=2)
    got = json.loads(done.stdout)
    assert [[lab for lab, _ in row] for row in got] == [[lab for lab, _ in row] for row in expected]


def test_a_changed_byte_is_caught_on_load(bundle, tmp_path, cli):
    import shutil

    from clipwise.errors import UnsafeFileError
    from clipwise.runtime import load

    copy = Path(shutil.copytree(bundle, tmp_path / "copy"))
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(UnsafeFileError, match="model.onnx changed since export"):
        load(copy)
    r = cli("predict", copy, __file__)  # the bundle is refused before any file is read
    assert r.rc == 2 and "changed since export" in r.err and "Traceback" not in r.err


def test_export_refuses_an_existing_folder_and_kinds_that_cannot_export(bundle, two_epoch_run, synth_manifest,
                                                                       tmp_path, cli):
    r = cli("export", two_epoch_run, "--out", bundle)
    assert r.rc == 2 and "already exists" in r.err and "--overwrite" in r.err
    assert cli("train", "--data", synth_manifest, "--model", "logreg", "--out", tmp_path / "base",
               "train.progress=false").rc == 0
    r = cli("export", tmp_path / "base", "--out", tmp_path / "b")
    assert r.rc == 2 and "classical" in r.err and "clipwise predict" in r.err
    assert not (tmp_path / "b").exists()
