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


def test_torchscript_and_int8_graphs_are_checked_and_recorded(two_epoch_run, tmp_path):
    import numpy as np
    import torch

    from clipwise.cli import main
    from clipwise.runtime import load

    out = tmp_path / "b"
    assert main(["export", str(two_epoch_run), "--out", str(out), "--format", "torchscript", "--int8",
                 "--calibration", "8"]) == 0
    meta = json.loads((out / "bundle.json").read_text())
    assert {"model.onnx", "model.pt", "model.int8.onnx"} <= set(meta["files"])
    assert meta["torchscript"]["max_abs_difference"] <= 1e-4
    q = meta["int8"]
    assert q["calibration_clips"] == 8 and q["top1_agreement"] >= 0.99 and q["clips"] == 8
    assert len(q["kept_in_fp32"]) == 2  # the first and the last Conv / Gemm
    assert q["size_bytes"] < q["fp32_size_bytes"] / 2  # Conv and Gemm weights in one byte instead of four
    assert q["score_change"] == pytest.approx(q["int8_score"] - q["fp32_score"])
    clips = _test_clips(two_epoch_run)
    fp32, int8 = load(out), load(out, int8=True)
    assert int8.model_file == "model.int8.onnx"
    a, b = fp32.predict_proba(clips), int8.predict_proba(clips)
    assert np.abs(a - b).max() == pytest.approx(q["max_abs_difference"], abs=1e-6)  # what bundle.json says
    traced = torch.jit.load(str(out / "model.pt"))
    waves = np.stack([np.sin(np.linspace(0, 400, fp32.clip_samples, dtype=np.float32))] * 2)
    with torch.no_grad():
        got = traced(torch.from_numpy(waves)).numpy()
    np.testing.assert_allclose(got, fp32._windows_proba(waves), atol=1e-4)


def test_a_bundle_without_int8_says_how_to_make_one(bundle):
    from clipwise.errors import RunError
    from clipwise.runtime import load

    with pytest.raises(RunError, match="--int8"):
        load(bundle, int8=True)


def test_an_ensemble_exports_as_member_bundles_and_scores_as_the_ensemble(two_epoch_run, two_epoch_copy, tmp_path,
                                                                         cli):
    import numpy as np

    from clipwise.errors import UnsafeFileError
    from clipwise.kinds import load_run
    from clipwise.runtime import load

    assert cli("ensemble", two_epoch_run, two_epoch_copy, "--out", tmp_path / "ens", "--weights", "0.3,0.7").rc == 0
    r = cli("export", tmp_path / "ens", "--out", tmp_path / "ens.bundle")
    assert r.rc == 0, r.err
    meta = json.loads((tmp_path / "ens.bundle" / "bundle.json").read_text())
    assert meta["format"] == "ensemble" and [m["folder"] for m in meta["members"]] == ["members/0", "members/1"]
    assert [m["weight"] for m in meta["members"]] == pytest.approx([0.3, 0.7])
    assert meta["parity"]["max_abs_difference"] <= 1e-4
    clips = _test_clips(two_epoch_run)
    np.testing.assert_allclose(load(tmp_path / "ens.bundle").predict_proba(clips),
                               load_run(tmp_path / "ens").predict_files(clips), atol=1e-4)
    # a member's graph changed: caught through the checksum of the member's bundle.json, then its own files
    member = tmp_path / "ens.bundle" / "members" / "1" / "model.onnx"
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 0xFF
    member.write_bytes(bytes(data))
    with pytest.raises(UnsafeFileError, match="model.onnx changed since export"):
        load(tmp_path / "ens.bundle")


def test_an_ensemble_with_a_classical_member_names_it(two_epoch_run, synth_manifest, tmp_path, cli):
    assert cli("train", "--data", synth_manifest, "--model", "logreg", "--out", tmp_path / "base",
               "train.progress=false").rc == 0
    assert cli("ensemble", two_epoch_run, tmp_path / "base", "--out", tmp_path / "ens", "--weights", "mean").rc == 0
    r = cli("export", tmp_path / "ens", "--out", tmp_path / "b")
    assert r.rc == 2 and "member base" in r.err and "classical" in r.err and not (tmp_path / "b").exists()


def test_export_options_are_checked_before_anything_runs(two_epoch_run, tmp_path, cli):
    from test_bad_input import assert_flags_exist

    for args, flag in ((["--calibration", "8"], "--int8"), (["--int8", "--calibration", "0"], "--calibration"),
                       (["--tolerance", "0"], "--tolerance")):
        r = cli("export", two_epoch_run, "--out", tmp_path / "b", *args)
        assert r.rc == 2 and flag in r.err and len(r.err.strip().splitlines()) == 1, r.err
        assert_flags_exist("export", r.err)
    assert not (tmp_path / "b").exists()
