"""The bad-input battery: each kind of bad input or fault, through the CLI, ends with a clear error (exit status,
no traceback, the file or key named, a flag that exists) and leaves everything the user had exactly as it was
(checksums of every file before and after)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from test_bad_input import assert_flags_exist

from clipwise.data.manifest import read_manifest, write_manifest


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _nan_manifest(synth_manifest: Path, tmp: Path) -> Path:
    x = np.sin(np.arange(8000) / 3.0).astype(np.float32)
    x[50] = np.nan
    sf.write(tmp / "nan.wav", x, 16000, subtype="FLOAT")
    df = read_manifest(synth_manifest)
    extra = pd.DataFrame({"path": [str(tmp / "nan.wav")], "label": [df["label"].iloc[0]], "group": ["nan"],
                          "split": ["train"]})
    return write_manifest(pd.concat([df, extra], ignore_index=True), tmp / "nan.csv")


# (case, setup(tmp, synth_manifest) -> argv, exit status, what the message must name)
def _cases():
    def existing_file(tmp, m):
        (tmp / "afile").write_text("mine")
        return ["train", "--data", m, "--out", tmp / "afile", "--epochs", "1"], 2, ["afile", "is a file"]

    def user_folder(tmp, m):
        (tmp / "mine").mkdir()
        (tmp / "mine" / "notes.txt").write_text("mine")
        return ["train", "--data", m, "--out", tmp / "mine", "--epochs", "1"], 2, ["notes.txt", "new or empty"]

    def under_a_file(tmp, m):
        return ["train", "--data", m, "--out", "/dev/null/run", "--epochs", "1"], 2, ["/dev/null"]

    def prepare_over_a_manifest(tmp, m):
        (tmp / "out.csv").write_text("mine\n")
        return ["prepare", m, "--out", tmp / "out.csv"], 2, ["out.csv", "--overwrite"]

    def missing_manifest(tmp, m):
        return ["train", "--data", tmp / "nope.csv", "--out", tmp / "run"], 2, ["nope.csv"]

    def unknown_model(tmp, m):
        return ["train", "--data", m, "--model", "audiocnnn", "--out", tmp / "run"], 2, ["audiocnnn", "audiocnn"]

    def mistyped_key(tmp, m):
        return ["train", "--data", m, "optim.lr_rate=1", "--out", tmp / "run"], 2, ["optim.lr_rate", "optim.lr"]

    def bad_value(tmp, m):
        return ["train", "--data", m, "train.epochs=many", "--out", tmp / "run"], 2, ["train.epochs", "many"]

    def config_not_yaml(tmp, m):
        (tmp / "c.yaml").write_text("train: [unclosed\n")
        return ["train", "--data", m, "--config", tmp / "c.yaml", "--out", tmp / "run"], 2, ["c.yaml", "YAML"]

    def zero_folds(tmp, m):
        return ["cv", "--data", m, "--folds", "0", "--out", tmp / "cv"], 2, ["--folds 0"]

    def zero_jobs(tmp, m):
        (tmp / "space.yaml").write_text("optim.lr: [0.001, 0.01]\n")
        return ["sweep", "--data", m, "--space", tmp / "space.yaml", "--out", tmp / "sw", "--jobs", "0"], 2, ["--jobs"]

    def missing_space(tmp, m):
        return ["sweep", "--data", m, "--space", tmp / "nospace.yaml", "--out", tmp / "sw"], 2, ["nospace.yaml"]

    def nan_audio_in_training(tmp, m):
        return ["train", "--data", _nan_manifest(m, tmp), "--out", tmp / "run", "--epochs", "1"], 2, \
            ["nan.wav", "NaN", "--skip-bad"]

    def nan_audio_in_check(tmp, m):
        return ["check", _nan_manifest(m, tmp)], 1, ["nan.wav", "NaN"]

    def one_class(tmp, m):
        df = read_manifest(m)
        one = write_manifest(df.assign(label=df["label"].iloc[0]), tmp / "one.csv")
        return ["train", "--data", one, "--out", tmp / "run", "--epochs", "1"], 2, ["single class"]

    def not_a_run(tmp, m):
        (tmp / "folder").mkdir()
        return ["evaluate", tmp / "folder"], 2, ["folder", "not a clipwise run folder"]

    def compare_not_a_run(tmp, m):
        (tmp / "folder").mkdir()
        return ["compare", tmp / "folder"], 2, ["folder", "not a run folder"]

    def predict_missing_audio(tmp, m):
        (tmp / "run").mkdir()
        return ["predict", tmp / "run", tmp / "gone.wav"], 2, ["gone.wav"]

    return {f.__name__: f for f in (existing_file, user_folder, under_a_file, prepare_over_a_manifest,
                                    missing_manifest, unknown_model, mistyped_key, bad_value, config_not_yaml,
                                    zero_folds, zero_jobs, missing_space, nan_audio_in_training, nan_audio_in_check,
                                    one_class, not_a_run, compare_not_a_run, predict_missing_audio)}


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_a_clear_error_and_changes_nothing(case, cli, synth_manifest, tmp_path):
    data = read_manifest(synth_manifest)
    manifest = tmp_path / "manifest.csv"
    data.to_csv(manifest, index=False)  # absolute paths: the audio stays where the session made it
    argv, status, needles = CASES[case](tmp_path, manifest)
    before = _tree(tmp_path)
    audio_before = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in data["path"]}
    r = cli(*argv)
    assert r.rc == status, f"{case}: exit {r.rc}\n{r.out}\n{r.err}"
    assert "Traceback" not in r.err and "Traceback" not in r.out
    text = r.err if status == 2 else r.out + r.err
    for needle in needles:
        assert needle in text, f"{case}: {needle!r} not in {text}"
    if status == 2:
        assert_flags_exist(argv[0], r.err)
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, f"{case} changed the user's files"
    assert not set(after) - set(before), f"{case} wrote {sorted(set(after) - set(before))}"
    assert audio_before == {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in data["path"]}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["finished_run", "changed_data_on_resume", "planted_checkpoint", "top_k_zero",
                                  "ensemble_into_a_member"])
def test_bad_input_on_a_trained_run_gives_a_clear_error_and_changes_nothing(case, cli, two_epoch_copy,
                                                                           synth_manifest, tmp_path, tiny):
    run = two_epoch_copy
    clip = pd.read_csv(run / "splits.csv")["path"].iloc[0]
    if case == "finished_run":
        argv, needles = ["train", "--data", synth_manifest, "--out", run, *tiny], ["finished run", "--overwrite"]
    elif case == "changed_data_on_resume":
        (run / "summary.json").unlink()
        fewer = read_manifest(synth_manifest)
        fewer = write_manifest(fewer[fewer["label"] != fewer["label"].iloc[0]], tmp_path / "fewer.csv")
        (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(str(synth_manifest), str(fewer)))
        argv, needles = ["train", "--resume", run], ["data changed", "removed"]
    elif case == "planted_checkpoint":
        torch.save({"spec": _Payload(tmp_path / "ran")}, run / "checkpoints" / "best.ckpt")
        argv, needles = ["predict", run, clip], ["best.ckpt", "never runs code"]
    elif case == "top_k_zero":
        argv, needles = ["predict", run, clip, "--top-k", "0"], ["--top-k"]
    else:
        other = shutil.copytree(run, tmp_path / "other")
        argv, needles = ["ensemble", run, other, "--out", run / "ens"], ["member run"]
    before = _tree(tmp_path)
    r = cli(*argv)
    assert r.rc == 2 and "Traceback" not in r.err, f"{case}: {r.rc} {r.err}"
    for needle in needles:
        assert needle in r.err, f"{case}: {needle!r} not in {r.err}"
    assert_flags_exist(argv[0], r.err)
    assert _tree(tmp_path) == before and not (tmp_path / "ran").exists()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
