from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipwise.data.manifest import (
    check_files,
    label_names,
    parse_labels,
    read_manifest,
    write_manifest,
)
from clipwise.errors import AudioError, ManifestError


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip())
    return path


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    csv = write_csv(tmp_path / "meta" / "m.csv", """
path,label,extra
../audio/a.wav, dog ,1
/abs/b.wav,cat,2
""")
    df = read_manifest(csv)
    assert list(df["path"]) == [str(tmp_path / "audio" / "a.wav"), "/abs/b.wav"]
    assert list(df["label"]) == ["dog", "cat"]
    assert df.attrs["manifest_path"] == str(csv)
    assert list(df["extra"]) == [1, 2] and df["extra"].dtype.kind == "i"  # extra columns keep their type


def test_optional_columns_are_canonical_and_typed(tmp_path):
    csv = write_csv(tmp_path / "m.csv", """
extra,end,start,group,fold,split,label,path
x,1.5,0.5,007,3,valid,0,a.wav
y,,,8,1.0,training,NA;b,b.wav
""")
    df = read_manifest(csv)
    assert list(df.columns) == ["path", "label", "split", "fold", "group", "start", "end", "extra"]
    assert list(df["label"]) == ["0", "NA;b"]  # labels that look like numbers or NA stay text
    assert list(df["group"]) == ["007", "8"]
    assert list(df["split"]) == ["val", "train"]
    assert list(df["fold"]) == [3, 1] and df["fold"].dtype == np.int64
    assert df["start"].iloc[0] == 0.5 and np.isnan(df["end"].iloc[1])


def test_column_mapping(tmp_path):
    csv = write_csv(tmp_path / "m.csv", """
filename,category,subset,speaker
a.wav,dog,eval,s1
""")
    df = read_manifest(csv, path_column="filename", label_column="category", split_column="subset",
                       group_column="speaker")
    assert list(df.columns) == ["path", "label", "split", "group"]
    assert df.loc[0, "split"] == "test"


@pytest.mark.parametrize(("column", "option"), [("path", "--path-column"), ("label", "--label-column")])
def test_missing_required_column_lists_columns_and_the_option(tmp_path, column, option):
    header = "file,label" if column == "path" else "path,category"
    csv = write_csv(tmp_path / "m.csv", f"{header}\na.wav,dog\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(csv)
    message = str(err.value)
    assert str(csv) in message and option in message and repr(column) in message
    assert ("'file'" in message) if column == "path" else ("'category'" in message)


def test_a_mapped_optional_column_must_exist(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "path,label\na.wav,dog\n")
    with pytest.raises(ManifestError, match="--fold-column"):
        read_manifest(csv, fold_column="fold_id")


def test_mapping_onto_an_existing_column_is_ambiguous(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "path,file,label\na.wav,b.wav,dog\n")
    with pytest.raises(ManifestError, match="both a 'file' and a 'path'"):
        read_manifest(csv, path_column="file")


def test_missing_and_empty_manifests(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(ManifestError, match="is empty"):
        read_manifest(write_csv(tmp_path / "empty.csv", ""))
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(write_csv(tmp_path / "header.csv", "path,label\n"))


@pytest.mark.parametrize(
    ("body", "column", "line"),
    [
        ("a.wav,dog\nb.wav,  \n", "'label' is empty", "line 3"),
        ("a.wav,dog\n,cat\n", "'path' is empty", "line 3"),
    ],
)
def test_empty_cells_name_column_and_line(tmp_path, body, column, line):
    csv = write_csv(tmp_path / "m.csv", "path,label\n" + body)
    with pytest.raises(ManifestError, match=column) as err:
        read_manifest(csv)
    assert line in str(err.value) and str(csv) in str(err.value)


def test_line_numbers_count_blank_lines(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "path,label,split\na.wav,dog,train\n\nb.wav,cat,holdout\n")
    with pytest.raises(ManifestError, match="'holdout' on line 4") as err:
        read_manifest(csv)
    assert "train, val or test" in str(err.value)


def test_blank_lines_are_skipped(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "path,label\na.wav,dog\n\n,\nb.wav,cat\n")
    assert len(read_manifest(csv)) == 2


def test_non_integer_folds(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "path,label,fold\na.wav,dog,1\nb.wav,dog,one\nc.wav,dog,2.5\n")
    with pytest.raises(ManifestError, match="'fold' must hold an integer") as err:
        read_manifest(csv)
    assert "lines 3, 4" in str(err.value) and "'one'" in str(err.value)


def test_non_numeric_segment_bounds(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "path,label,start\na.wav,dog,1s\n")
    with pytest.raises(ManifestError, match="'start' must hold a number of seconds.*line 2"):
        read_manifest(csv)


def test_start_not_before_end(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "path,label,start,end\na.wav,dog,0,1\na.wav,dog,2,2\na.wav,dog,,0\n")
    with pytest.raises(ManifestError, match="'start' >= 'end' on lines 3, 4"):
        read_manifest(csv)


def test_duplicate_rows_name_both_lines(tmp_path):
    csv = write_csv(tmp_path / "m.csv", """
path,label,start,end
a.wav,dog,0,1
sub/../a.wav,dog,1,2
./a.wav,cat,0,1
""")
    with pytest.raises(ManifestError, match="more than once") as err:
        read_manifest(csv)
    assert "lines 2, 4" in str(err.value) and "line 3" not in str(err.value)


def test_same_file_twice_without_segments_is_a_duplicate(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "path,label\na.wav,dog\nb.wav,cat\na.wav,cat\n")
    with pytest.raises(ManifestError, match="lines 2, 4"):
        read_manifest(csv)


def test_write_manifest_round_trip(tmp_path):
    out = tmp_path / "run" / "manifest.csv"
    df = pd.DataFrame({"path": [str(tmp_path / "run" / "audio" / "a.wav"), "/elsewhere/b.wav"],
                       "label": ["dog", "cat"], "fold": [1, 2]})
    assert write_manifest(df, out) == out
    on_disk = pd.read_csv(out)
    assert list(on_disk["path"]) == ["audio/a.wav", "/elsewhere/b.wav"]
    back = read_manifest(out)
    assert list(back["path"]) == list(df["path"]) and list(back["fold"]) == [1, 2]


def make_manifest(tmp_path: Path, write_audio, sine, n_bad: int = 0) -> pd.DataFrame:
    good = [write_audio(f"good{i}.wav", sine()) for i in range(2)]
    bad = []
    for i in range(n_bad):
        p = tmp_path / f"bad{i}.wav"
        if i % 2:
            p.write_bytes(b"not audio at all")
        bad.append(p)
    return pd.DataFrame({"path": [str(p) for p in good + bad], "label": "x"})


def test_check_files_passes_good_files(tmp_path, write_audio, sine):
    good, bad = check_files(make_manifest(tmp_path, write_audio, sine))
    assert len(good) == 2 and bad.empty and "reason" in bad


def test_check_files_lists_bad_files_and_the_fix(tmp_path, write_audio, sine):
    df = make_manifest(tmp_path, write_audio, sine, n_bad=12)
    with pytest.raises(AudioError) as err:
        check_files(df)
    message = str(err.value)
    assert "12 of 14" in message and "and 2 more" in message and "--skip-bad" in message
    assert str(tmp_path / "bad0.wav") in message and "file not found" in message and "cannot decode" in message


def test_check_files_can_skip_bad_rows(tmp_path, write_audio, sine):
    df = make_manifest(tmp_path, write_audio, sine, n_bad=2)
    good, bad = check_files(df, skip_bad=True)
    assert list(good["path"]) == list(df["path"][:2])
    assert list(bad["path"]) == list(df["path"][2:])
    assert bad["reason"].str.contains("file not found").iloc[0] and bad["reason"].str.contains("decode").iloc[1]


def test_check_files_flags_segments_past_the_end(tmp_path, write_audio, sine):
    path = str(write_audio("a.wav", sine()))  # 0.5 s
    df = pd.DataFrame({"path": [path, path], "label": "x", "start": [0.0, 0.2], "end": [0.5, 0.9]})
    good, bad = check_files(df, skip_bad=True)
    assert len(good) == 1 and "past the end" in bad["reason"].iloc[0]


def test_labels():
    assert parse_labels("dog; cat ;;bird") == ["dog", "cat", "bird"]
    df = pd.DataFrame({"label": ["dog;cat", "bird", "cat"]})
    assert label_names(df) == ["bird", "cat", "dog"]
    with pytest.raises(ManifestError, match="label"):
        label_names(pd.DataFrame({"path": ["a"]}))
