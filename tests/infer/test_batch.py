"""Batch jobs (`clipwise predict --manifest CSV --out FILE`): resumed after an interruption they score every row
once, unreadable files are listed and skipped, CSV and Parquet hold the same rows, the rows equal plain `predict`'s,
and the Ray engine's equal the local engine's."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_bad_input import assert_flags_exist

from clipwise.infer.scoring import Scoring
from clipwise.task import get_task


class _Loudness(Scoring):
    """A cheap scorer (quiet / mid / loud from the RMS) that counts the clips it scores and can raise
    KeyboardInterrupt on a given call, as Ctrl-C would arrive in the middle of a job."""

    labels = ["quiet", "mid", "loud"]
    sample_rate = 8000

    def __init__(self, *, interrupt_on_call: int | None = None):
        self.calls, self.scored, self.interrupt_on_call = 0, 0, interrupt_on_call

    def score_waves(self, waves):
        self.calls += 1
        if self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        self.scored += len(waves)
        rms = np.array([np.sqrt(np.mean(np.square(w))) for w in waves])
        logits = np.stack([-10 * rms, np.zeros_like(rms), 10 * rms - 2], axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def use_scorer(monkeypatch, tmp_path):
    """use_scorer(scorer, task="multiclass") makes `clipwise predict` load ``scorer`` as the model of any run."""

    def use(scorer: Scoring, task: str = "multiclass") -> Scoring:
        model = SimpleNamespace(scorer=scorer, labels=scorer.labels, task=get_task(task), run=SimpleNamespace(
            root=tmp_path), thresholds=lambda: np.full(len(scorer.labels), 0.3) if task == "multilabel" else None)
        monkeypatch.setattr("clipwise.api.load", lambda run, checkpoint="best": model)
        return scorer

    return use


@pytest.fixture
def manifest(tmp_path, wav_writer, make_tone) -> Path:
    """4 clips of 0.25 s at 16 kHz, louder and louder, one in a subfolder; relative paths, segments on two rows,
    ids that must stay text, and a label column a batch job ignores."""
    folder = tmp_path / "data"
    for i, name in enumerate(["a.wav", "b.wav", "c.wav", "sub/d.wav"]):
        wav_writer(folder / name, make_tone(300 + 100 * i, duration_seconds=0.25, seed=i) * (0.2 + 0.25 * i))
    path = folder / "manifest.csv"
    path.write_text("path,start,end,id,label\na.wav,,,007,x\nb.wav,0,0.2,1,x\nc.wav,0.05,,2,x\nsub/d.wav,,,3,x\n")
    return path


def _read(out: Path) -> pd.DataFrame:
    if out.suffix == ".csv":
        return pd.read_csv(out, dtype={"id": str, "tags": str}, keep_default_na=False, na_values={"start": [""],
                                                                                                   "end": [""]})
    return pd.read_parquet(out)


@pytest.mark.parametrize(("suffix", "jobs"), [(".csv", 1), (".parquet", 2)])
def test_an_interrupted_job_resumed_scores_every_row_exactly_once(manifest, tmp_path, cli, use_scorer, monkeypatch,
                                                                 suffix, jobs):
    import clipwise.infer.batch as batch

    # batches of 2 (the manifest has 4 rows): the first is written, Ctrl-C arrives while the second is scored
    monkeypatch.setattr(batch, "run_batch", functools.partial(batch.run_batch, batch_size=2))
    out = tmp_path / f"preds{suffix}"
    args = ("predict", "RUN", "--manifest", manifest, "--out", out, "--jobs", jobs)
    use_scorer(_Loudness(interrupt_on_call=2))
    r = cli(*args)
    assert r.rc == 130 and "--resume" in r.err, r.err
    if suffix == ".csv":
        assert len(_read(out)) == 2
        with open(out, "a") as f:  # a crash in the middle of a write leaves a cut line: dropped on resume
            f.write("c.wav,0.05,,2,lou")
    else:
        assert not out.exists() and len(list(out.with_name(out.name + ".parts").glob("part-*.parquet"))) == 1
    r = cli(*args)
    assert r.rc == 2 and "--resume" in r.err  # an unfinished job is never overwritten
    resumed = use_scorer(_Loudness())
    r = cli(*args, "--resume")
    assert r.rc == 0, r.err
    assert resumed.scored == 2 and "scored 2 rows (2 done before)" in r.out
    whole = use_scorer(_Loudness())
    assert cli("predict", "RUN", "--manifest", manifest, "--out", tmp_path / f"whole{suffix}", "--jobs", 1).rc == 0
    assert whole.scored == 4
    pd.testing.assert_frame_equal(_read(out), _read(tmp_path / f"whole{suffix}"))
    assert not out.with_name(out.name + ".parts").exists()


def test_a_corrupt_file_is_listed_and_the_others_are_scored(manifest, tmp_path, cli, use_scorer):
    (manifest.parent / "bad.wav").write_bytes(b"RIFF not really a wave file")
    text = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*text[:2], "bad.wav,,,9,x", *text[2:]]) + "\n")
    use_scorer(_Loudness())
    r = cli("predict", "RUN", "--manifest", manifest, "--out", tmp_path / "p.parquet", "--jobs", 1)
    assert r.rc == 1 and "bad.wav" in r.err and "--skip-bad" in r.err, r.err
    assert "scored 4 rows, skipped 1" in r.out
    errors = pd.read_csv(tmp_path / "p.errors.csv")
    assert list(errors["path"]) == ["bad.wav"] and "cannot decode" in errors["reason"][0]
    assert list(_read(tmp_path / "p.parquet")["path"]) == ["a.wav", "b.wav", "c.wav", "sub/d.wav"]
    r = cli("predict", "RUN", "--manifest", manifest, "--out", tmp_path / "q.csv", "--jobs", 1, "--skip-bad")
    assert r.rc == 0 and len(_read(tmp_path / "q.csv")) == 4, r.err


def test_csv_and_parquet_hold_the_same_rows_and_folders_are_scored_too(manifest, tmp_path, cli, use_scorer):
    use_scorer(_Loudness(), task="multilabel")
    for name in ("p.csv", "p.parquet"):
        assert cli("predict", "RUN", "--manifest", manifest, "--out", tmp_path / name, "--jobs", 1).rc == 0
    csv, parquet = _read(tmp_path / "p.csv"), _read(tmp_path / "p.parquet")
    assert list(csv.columns) == ["path", "start", "end", "id", "label_1", "prob_1", "label_2", "prob_2", "label_3",
                                 "prob_3", "tags"]
    assert list(csv["id"]) == ["007", "1", "2", "3"] and csv["tags"].str.len().gt(0).all()
    pd.testing.assert_frame_equal(csv, parquet)
    r = cli("predict", "RUN", "--manifest", manifest.parent, "--out", tmp_path / "folder.csv", "--jobs", 1)
    assert r.rc == 0 and len(_read(tmp_path / "folder.csv")) == 4, r.err


@pytest.mark.parametrize(("extra", "needles"), [
    (("--out", None), ["--out"]),
    (("a.wav",), ["--manifest", "PATHS"]),
    (("--jobs", "0"), ["--jobs"]),
    (("--engine", "ray", "--out", "preds.parquet"), ["--engine ray", "folder"]),
    (("--address", "ray://h:10001"), ["--address", "--engine ray"]),
    (("--window", "1"), ["--window"]),
    (("EXISTS",), ["--resume", "--out"]),
    (("NORAY",), ["pip install 'clipwise[ray]'"]),
    (("NOPATH",), ["'path'"]),
], ids=["no-out", "paths-and-manifest", "jobs-0", "ray-to-a-file", "address-without-ray", "window", "out-exists",
        "no-ray", "no-path-column"])  # fmt: skip
def test_bad_batch_flags_are_one_line_errors_naming_the_flag(manifest, tmp_path, cli, use_scorer, monkeypatch,
                                                             extra, needles):
    use_scorer(_Loudness())
    out = tmp_path / "preds.csv"
    args = ["predict", "RUN", "--manifest", manifest, "--out", out]
    if extra == ("--out", None):
        args = args[:-2]
    elif extra == ("EXISTS",):
        out.write_text("the user's own file\n")
    elif extra == ("NORAY",):
        monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
        args = [*args[:-1], tmp_path / "folder", "--engine", "ray"]
    elif extra == ("NOPATH",):
        (tmp_path / "nopath.csv").write_text("file,label\na.wav,x\n")
        args[3] = tmp_path / "nopath.csv"
    elif extra[0] == "a.wav":
        args.insert(2, manifest.parent / "a.wav")
    else:
        args = [*args[:-2], *(["--out", out] if "--out" not in extra else []), *extra]
    r = cli(*args)
    assert r.rc == 2 and r.err.startswith("clipwise predict: error:") and r.err.count("\n") == 1, r.err
    for needle in needles:
        assert needle in r.err, r.err
    assert_flags_exist("predict", r.err)
    if extra == ("EXISTS",):
        assert out.read_text() == "the user's own file\n"


@pytest.mark.parametrize("extra", [("--out", "p.csv"), ("--jobs", "2"), ("--resume",), ("--engine", "ray"),
                                   ("--out", "p.csv", "--resume")])
def test_batch_flags_without_a_manifest_are_refused_not_ignored(manifest, cli, use_scorer, extra):
    use_scorer(_Loudness())
    r = cli("predict", "RUN", manifest.parent, *extra)
    assert r.rc == 2 and r.err.count("\n") == 1 and "--manifest" in r.err, r.err
    assert all(flag in r.err for flag in extra if flag.startswith("--")), r.err
    assert_flags_exist("predict", r.err)


# -- with a trained run ------------------------------------------------------------------------------------------
def _test_clips(run: Path, n: int = 6) -> list[str]:
    from clipwise.run import RunFolder

    return sorted(pd.read_csv(RunFolder(run).predictions_path("test"))["path"])[:n]


@pytest.mark.slow
def test_a_batch_job_gives_the_rows_plain_predict_prints(two_epoch_run, tmp_path, cli):
    clips = _test_clips(two_epoch_run)
    pd.DataFrame({"path": clips}).to_csv(tmp_path / "m.csv", index=False)
    r = cli("predict", two_epoch_run, "--manifest", tmp_path / "m.csv", "--out", tmp_path / "p.csv", "--jobs", 1)
    assert r.rc == 0, r.err
    plain = cli("predict", two_epoch_run, *clips, "--format", "csv")
    expected, got = pd.read_csv(io.StringIO(plain.out)), _read(tmp_path / "p.csv")
    assert list(got["path"]) == list(expected["path"]) == clips
    for i in (1, 2, 3):
        assert list(got[f"label_{i}"]) == list(expected[f"label_{i}"])
        assert np.abs(got[f"prob_{i}"] - expected[f"prob_{i}"]).max() <= 1e-6  # predict prints 6 decimals


@pytest.mark.slow
def test_the_ray_engine_gives_the_local_engines_rows(two_epoch_run, tmp_path, cli, monkeypatch):
    ray = pytest.importorskip("ray")
    import pyarrow.dataset as pads

    clips = _test_clips(two_epoch_run, n=5)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    pd.DataFrame({"path": [clips[0], str(tmp_path / "bad.wav"), *clips[1:]],
                  "start": [None, None, 0.1, None, None, None], "end": [None, None, 0.4, None, None, None]}) \
        .to_csv(tmp_path / "m.csv", index=False)
    local = cli("predict", two_epoch_run, "--manifest", tmp_path / "m.csv", "--out", tmp_path / "p.parquet",
                "--jobs", 1)
    assert local.rc == 1 and "scored 5 rows, skipped 1" in local.out, local.err
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # Ray keeps its auth token in ~/.ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        r = cli("predict", two_epoch_run, "--manifest", tmp_path / "m.csv", "--out", tmp_path / "ray",
                "--engine", "ray", "--jobs", 1, "--skip-bad")
    finally:
        ray.shutdown()
    assert r.rc == 0 and "scored 5 rows, skipped 1" in r.out, r.err
    files = sorted(str(p) for p in (tmp_path / "ray").glob("*.parquet"))
    rows = pads.dataset(files, format="parquet").to_table().to_pandas()
    assert rows["error"].notna().tolist() == [False, True, False, False, False, False]
    assert list(pd.read_csv(tmp_path / "ray.errors.csv")["path"]) == [str(tmp_path / "bad.wav")]
    expected = _read(tmp_path / "p.parquet")
    got = rows.loc[rows["error"].isna()].drop(columns="error").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=1e-6, rtol=0)
