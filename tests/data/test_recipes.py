from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clipwise.data.recipes import RECIPES, list_recipes, prepare, prepare_esc50, prepare_folder, prepare_fsdd
from clipwise.errors import ConfigError, ManifestError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # recipes only list files; check_files is what opens them
    return path


def snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*"))


def fake_esc50_release(base: Path) -> None:
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100032-A-0.wav,1,0,dog,True,100032,A\n"
        "2-100038-A-14.wav,2,14,chirping_birds,False,100038,A\n"
        "2-100038-B-14.wav,2,14,chirping_birds,False,100038,B\n"
    )
    for name in ("1-100032-A-0.wav", "2-100038-A-14.wav", "2-100038-B-14.wav"):
        touch(base / "audio" / name)


@pytest.mark.parametrize("subfolder", ["", "ESC-50-master"])
def test_esc50_public_release(tmp_path, subfolder):
    base = tmp_path / subfolder if subfolder else tmp_path
    fake_esc50_release(base)
    before = snapshot(tmp_path)
    df = prepare_esc50(tmp_path)
    assert snapshot(tmp_path) == before  # never writes into root
    assert list(df.columns[:4]) == ["path", "label", "fold", "group"]
    assert list(df["label"]) == ["dog", "chirping_birds", "chirping_birds"]
    assert list(df["fold"]) == [1, 2, 2]
    assert list(df["group"]) == ["100032", "100038", "100038"]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in df["path"])
    assert list(df["target"]) == [0, 14, 14]
    pd.testing.assert_frame_equal(prepare_esc50(tmp_path), df)  # safe to re-run


def test_esc50_prepared_copy_with_manifest(tmp_path):
    touch(tmp_path / "audio" / "1-1-A-0.flac")
    (tmp_path / "manifest.csv").write_text("path,label,fold,group,target\naudio/1-1-A-0.flac,dog,1,1,0\n")
    df = prepare_esc50(tmp_path)
    assert df.loc[0, "path"] == str(tmp_path / "audio" / "1-1-A-0.flac")
    assert df.loc[0, "fold"] == 1 and df.loc[0, "group"] == "1"


def test_esc50_error_says_what_it_looked_for(tmp_path):
    with pytest.raises(ManifestError) as err:
        prepare_esc50(tmp_path)
    assert "manifest.csv" in str(err.value) and "meta/esc50.csv" in str(err.value)
    assert "download_esc50" in str(err.value)


FSDD_FILES = ["0_george_0.wav", "0_george_5.wav", "7_jackson_4.wav", "7_jackson_49.wav", "9_yweweler_12.wav"]


@pytest.mark.parametrize("where", ["recordings", "", "free-spoken-digit-dataset-master/recordings"])
def test_fsdd_public_release(tmp_path, where):
    for name in FSDD_FILES + ["README.wav"]:
        touch(tmp_path / where / name)
    before = snapshot(tmp_path)
    df = prepare_fsdd(tmp_path)
    assert snapshot(tmp_path) == before
    assert list(df.columns) == ["path", "label", "split", "group"]
    assert sorted(Path(p).name for p in df["path"]) == sorted(FSDD_FILES)  # README.wav is not a recording
    row = df.set_index(df["path"].map(lambda p: Path(p).name))
    assert row.loc["7_jackson_49.wav", "label"] == "7" and row.loc["7_jackson_49.wav", "group"] == "jackson"
    assert row.loc["7_jackson_4.wav", "split"] == "test" and row.loc["0_george_5.wav", "split"] == "train"
    assert row.loc["0_george_0.wav", "split"] == "test" and row.loc["9_yweweler_12.wav", "split"] == "train"


def test_fsdd_prepared_copy_with_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,split,group\naudio/0_george_0.flac,0,test,george\n")
    df = prepare_fsdd(tmp_path)
    assert df.loc[0, "label"] == "0" and df.loc[0, "split"] == "test"


def test_fsdd_error_says_what_it_looked_for(tmp_path):
    touch(tmp_path / "recordings" / "hello.wav")
    with pytest.raises(ManifestError, match="<digit>_<speaker>_<index>.wav"):
        prepare_fsdd(tmp_path)


def test_recipes_reject_a_missing_root(tmp_path):
    with pytest.raises(ManifestError, match="folder not found"):
        prepare_esc50(tmp_path / "nope")


def test_recipes_on_the_shared_datasets(shared_dataset):
    esc = prepare("esc50", root=shared_dataset("esc50_16k"))
    assert len(esc) == 2000 and esc["label"].nunique() == 50
    assert sorted(esc["fold"].unique()) == [1, 2, 3, 4, 5]
    # ESC-50 folds keep a freesound source together, except 4 sources cut into clips of two classes
    assert (esc.groupby("group")["fold"].nunique() > 1).sum() == 4
    fsdd = prepare("fsdd", root=shared_dataset("fsdd"))
    assert len(fsdd) == 3000 and sorted(fsdd["label"].unique()) == [str(d) for d in range(10)]
    assert (fsdd["split"] == "test").sum() == 300 and fsdd["group"].nunique() == 6
    for df in (esc, fsdd):
        assert all(Path(p).is_file() for p in df["path"].iloc[::250])


def test_prepare_folder(tmp_path):
    for name in ["dog/a.wav", "dog/deeper/b.FLAC", "dog/notes.txt", "dog/.hidden.wav", "cat/c.ogg", ".git/x.wav"]:
        touch(tmp_path / name)
    (tmp_path / "empty_class").mkdir()
    with pytest.warns(UserWarning, match="empty_class"):
        df = prepare_folder(tmp_path)
    assert list(df.columns) == ["path", "label"]
    assert [(Path(p).relative_to(tmp_path).as_posix(), label) for p, label in zip(df["path"], df["label"])] == [
        ("cat/c.ogg", "cat"), ("dog/a.wav", "dog"), ("dog/deeper/b.FLAC", "dog"),
    ]  # fmt: skip


def test_prepare_folder_with_split_folders(tmp_path):
    for name in ["train/dog/a.wav", "valid/dog/b.wav", "test/cat/c.wav"]:
        touch(tmp_path / name)
    df = prepare_folder(tmp_path)
    assert list(zip(df["label"], df["split"])) == [("cat", "test"), ("dog", "train"), ("dog", "val")]


def test_prepare_folder_errors(tmp_path):
    touch(tmp_path / "loose.wav")
    with pytest.raises(ManifestError, match="no class folders"):
        prepare_folder(tmp_path)
    touch(tmp_path / "dog" / "readme.txt")
    with pytest.raises(ManifestError, match=r"no audio files.*\.wav"), pytest.warns(UserWarning):
        prepare_folder(tmp_path)


def test_prepare_dispatches_on_source(tmp_path):
    touch(tmp_path / "data" / "dog" / "a.wav")
    assert list(prepare(str(tmp_path / "data"))["label"]) == ["dog"]
    csv = tmp_path / "m.csv"
    csv.write_text("file,category\ndata/dog/a.wav,dog\n")
    df = prepare(str(csv), path_column="file", label_column="category")
    assert df.loc[0, "path"] == str(tmp_path / "data" / "dog" / "a.wav")
    fake_esc50_release(tmp_path / "esc")
    assert len(prepare("esc50", root=tmp_path / "esc")) == 3


def test_prepare_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs --root"):
        prepare("esc50")
    with pytest.raises(ConfigError, match="Did you mean 'esc50'"):
        prepare("esc5")
    with pytest.raises(ConfigError, match="--root is only used"):
        prepare(str(tmp_path), root=tmp_path)
    with pytest.raises(ConfigError, match="unknown option"):
        prepare(str(tmp_path), label_col="x")
    with pytest.raises(ConfigError, match="only apply to a CSV"):
        prepare(str(tmp_path), label_column="x")


def test_list_recipes():
    recipes = dict(list_recipes())
    assert {"esc50", "fsdd"} <= set(recipes) == set(RECIPES.names())
    assert "ESC-50" in recipes["esc50"] and "\n" not in recipes["fsdd"]
