"""Manifests: the CSV that lists a dataset's clips, read into a pandas DataFrame with canonical columns.

Canonical columns (see docs/DESIGN.md): ``path`` (absolute in memory, relative to the manifest's folder on
disk), ``label`` (``;`` joins several labels), and the optional ``split`` (train / val / test), ``fold``
(int), ``group`` (str), ``start`` / ``end`` (seconds). Extra columns are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipwise.data.audio import END_TOLERANCE_SECONDS, audio_info
from clipwise.errors import AudioError, ManifestError

__all__ = [
    "SPLITS",
    "read_manifest",
    "parse_segments",
    "resolve_paths",
    "write_manifest",
    "check_files",
    "parse_labels",
    "label_names",
    "normalise_split",
]

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "eval": "test", "testing": "test",
}  # fmt: skip
_OPTIONAL = ("split", "fold", "group", "start", "end")
_MAX_LISTED = 10
_NA_VALUES = ["", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "#N/A", "<NA>"]


def normalise_split(value: object) -> str | None:
    """Map a split name or alias (``valid``, ``dev``, ``training``, ``eval``, ...) to train / val / test.

    Returns:
        The canonical name, or None when ``value`` is not a known split.
    """
    return _SPLIT_ALIASES.get(str(value).strip().lower())


def _lines(mask: pd.Series | np.ndarray, line_numbers: np.ndarray) -> str:
    """'lines 3, 7 and 2 more' for the rows where ``mask`` is true."""
    hits = [str(n) for n in line_numbers[np.asarray(mask, dtype=bool)]]
    shown = ", ".join(hits[:_MAX_LISTED])
    more = f" and {len(hits) - _MAX_LISTED} more" if len(hits) > _MAX_LISTED else ""
    return f"line{'s' if len(hits) > 1 else ''} {shown}{more}"


def _read_csv(path: Path, text_columns: set[str]) -> pd.DataFrame:
    """Read a CSV, keeping ``text_columns`` exactly as written (labels such as "0" or "NA" and ids such
    as "007" must not become numbers or missing values); other columns get pandas' usual inference."""
    options = dict(skip_blank_lines=False, encoding="utf-8-sig")
    try:
        header = pd.read_csv(path, nrows=0, **options).columns
        text = [c for c in header if str(c).strip() in text_columns]
        return pd.read_csv(
            path,
            dtype=dict.fromkeys(text, str),
            keep_default_na=False,
            na_values={c: _NA_VALUES for c in header if c not in text},
            **options,
        )
    except pd.errors.EmptyDataError:
        raise ManifestError(f"manifest {path} is empty; it needs a header row such as 'path,label'") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot parse manifest {path} as CSV: {err}") from None


def _map_columns(df: pd.DataFrame, path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    """Rename the user's column names to the canonical ones, with errors that say which option to use."""
    found = ", ".join(repr(c) for c in df.columns)
    renames = {}
    for canonical, given in mapping.items():
        if given in df.columns:
            if given != canonical and canonical in df.columns:
                raise ManifestError(
                    f"manifest {path} has both a {given!r} and a {canonical!r} column, and {given!r} is mapped "
                    f"to {canonical!r}; rename or drop one of them"
                )
            renames[given] = canonical
        elif canonical in ("path", "label"):
            what = "the audio file paths" if canonical == "path" else "the class labels"
            raise ManifestError(
                f"manifest {path} has no {given!r} column (columns found: {found}); make a manifest that names the "
                f"column holding {what}: `clipwise prepare {path} --{canonical}-column NAME --out manifest.csv` "
                f"({canonical}_column= in Python)"
            )
        elif given != canonical:  # the user asked for a column that is not there
            raise ManifestError(
                f"manifest {path} has no {given!r} column for {canonical!r} (columns found: {found}); "
                f"fix --{canonical}-column or leave it out"
            )
    return df.rename(columns=renames)


def _parse_numbers(df: pd.DataFrame, column: str, path: Path, lines: np.ndarray, *, integer: bool) -> pd.Series:
    text = df[column].astype(str).str.strip()
    values = pd.to_numeric(text.replace("", np.nan), errors="coerce")
    bad = values.isna() & (text != "")
    if integer:
        bad |= text.eq("") | (values.notna() & (values % 1 != 0))
    if bad.any():
        kind = "an integer" if integer else "a number of seconds (or empty)"
        examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
        raise ManifestError(
            f"manifest {path}: column {column!r} must hold {kind}; found {examples} on {_lines(bad, lines)}; "
            "fix those cells"
        )
    return values.astype("int64") if integer else values.astype("float64")


def _check_segments(df: pd.DataFrame, path: Path, lines: np.ndarray) -> None:
    if "start" in df:
        neg = df["start"] < 0
        if neg.any():
            raise ManifestError(f"manifest {path}: 'start' is negative on {_lines(neg, lines)}; fix those cells")
    if "start" in df and "end" in df:
        bad = df["start"].fillna(0.0) >= df["end"]
        if bad.any():
            raise ManifestError(
                f"manifest {path}: 'start' >= 'end' on {_lines(bad, lines)}; a segment needs start < end (seconds)"
            )


def _check_duplicates(df: pd.DataFrame, path: Path, lines: np.ndarray) -> None:
    keys = ["path"] + [c for c in ("start", "end") if c in df]
    dup = df.duplicated(subset=keys, keep=False).to_numpy()
    if dup.any():
        repeats = df.loc[dup, keys].assign(_line=lines[dup]).groupby(keys, dropna=False, sort=False)
        examples = "; ".join(
            f"{g['path'].iloc[0]} on lines {', '.join(map(str, g['_line']))}" for _, g in list(repeats)[:3]
        )
        raise ManifestError(
            f"manifest {path} lists the same {'/'.join(keys)} more than once ({examples}); remove the repeats"
        )


def parse_segments(df: pd.DataFrame, *, path: Path, lines: np.ndarray) -> pd.DataFrame:
    """``df``'s ``start`` / ``end`` cells (where present) parsed in place to float seconds (NaN where empty).

    Args:
        df: manifest rows, ``start`` / ``end`` as written.
        path: the manifest, named in messages.
        lines: each row's CSV line number, named in messages.

    Returns:
        ``df``.

    Raises:
        ManifestError: a cell is not a number, a start is negative, or a start is not before its end.
    """
    for column in ("start", "end"):
        if column in df:
            df[column] = _parse_numbers(df, column, path, lines, integer=False)
    _check_segments(df, path, lines)
    return df


def resolve_paths(paths: Iterable[str], *, manifest: Path) -> list[str]:
    """Audio paths as a manifest writes them, made absolute: a relative path is relative to the manifest's
    folder (``~`` expanded), so a dataset folder can move with its manifest."""
    base = Path(manifest).expanduser().absolute().parent
    return [os.path.normpath(base / Path(p).expanduser()) for p in paths]


def read_manifest(
    path: str | Path,
    *,
    path_column: str = "path",
    label_column: str = "label",
    split_column: str = "split",
    fold_column: str = "fold",
    group_column: str = "group",
    start_column: str = "start",
    end_column: str = "end",
) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Args:
        path: the CSV file.
        path_column, label_column, split_column, fold_column, group_column, start_column, end_column:
            the names these columns have in the file; they are renamed to the canonical names.

    Returns:
        A DataFrame with canonical columns first, then the extra columns. ``path`` holds absolute paths
        (relative ones are relative to the manifest's folder); ``label``, ``group`` and ``split`` are
        stripped strings (split aliases such as "valid" become "val"), ``fold`` is int, ``start`` / ``end``
        are float seconds (NaN: the file's start / end). ``df.attrs["manifest_path"]`` is the CSV's
        absolute path.

    Raises:
        ManifestError: the file is missing or unparsable, a required column is missing, or rows are
            invalid (the message names the CSV line numbers, counting the header as line 1).
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}; check the path (or run `clipwise prepare` to make one)")
    mapping = {
        "path": path_column, "label": label_column, "split": split_column, "fold": fold_column,
        "group": group_column, "start": start_column, "end": end_column,
    }  # fmt: skip
    df = _read_csv(path, set(mapping.values()))
    df.columns = [str(c).strip() for c in df.columns]
    df = _map_columns(df, path, mapping)

    lines_all = np.arange(len(df)) + 2  # 1-based, the header is line 1
    blank = df.apply(lambda col: col.isna() | col.astype(str).str.strip().eq("")).all(axis=1).to_numpy()
    df = df.loc[~blank].reset_index(drop=True)
    lines = lines_all[~blank]
    if df.empty:
        raise ManifestError(f"manifest {path} has a header but no rows; add one row per audio file")

    for column in ("path", "label") + tuple(c for c in ("group", "split") if c in df):
        df[column] = df[column].astype(str).str.strip()
        empty = df[column].eq("")
        if empty.any():
            raise ManifestError(
                f"manifest {path}: column {column!r} is empty on {_lines(empty, lines)}; fill those cells in "
                "or remove the rows"
            )
    if "split" in df:
        normalised = df["split"].map(normalise_split)
        bad = normalised.isna()
        if bad.any():
            values = ", ".join(repr(v) for v in df.loc[bad, "split"].unique()[:5])
            raise ManifestError(
                f"manifest {path}: column 'split' holds {values} on {_lines(bad, lines)}; use train, val or test "
                "(or drop the column to let clipwise assign splits)"
            )
        df["split"] = normalised.astype(str)
    if "fold" in df:
        df["fold"] = _parse_numbers(df, "fold", path, lines, integer=True)
    parse_segments(df, path=path, lines=lines)
    df["path"] = resolve_paths(df["path"], manifest=path)
    _check_duplicates(df, path, lines)

    canonical = ["path", "label"] + [c for c in _OPTIONAL if c in df]
    df = df[canonical + [c for c in df.columns if c not in canonical]]
    df.attrs["manifest_path"] = str(path)
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest CSV whose paths are relative to its folder when they lie inside it.

    Args:
        df: a manifest with absolute (or cwd-relative) paths.
        path: the CSV to write; its folder is created.

    Returns:
        The path written.

    Raises:
        ManifestError: ``df`` has no ``path`` column.
    """
    if "path" not in df:
        raise ManifestError(f"cannot write manifest {path}: the DataFrame has no 'path' column")
    path = Path(path).expanduser().absolute()
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)

    def portable(p: str) -> str:
        p = Path(os.path.abspath(p))
        try:
            return p.relative_to(folder).as_posix()
        except ValueError:
            return str(p)

    out = df.copy()
    out["path"] = [portable(p) for p in out["path"]]
    out.to_csv(path, index=False)
    return path


def check_files(df: pd.DataFrame, *, skip_bad: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check that every file in a manifest can be opened (header only, no decoding).

    A row is bad when its file is missing, undecodable or empty, or its segment ends past the file's end.

    Args:
        df: a manifest as returned by :func:`read_manifest`.
        skip_bad: return the bad rows instead of raising.

    Returns:
        (good rows, bad rows with an extra ``reason`` column).

    Raises:
        AudioError: some rows are bad and ``skip_bad`` is False; the message lists up to 10 of them.
    """
    reasons: dict[str, str] = {}
    durations: dict[str, float] = {}
    for p in pd.unique(df["path"]):
        try:
            durations[p] = audio_info(p).duration_seconds
        except AudioError as err:
            reasons[p] = str(err)
    reason = pd.Series([reasons.get(p) for p in df["path"]], index=df.index, dtype=object)
    if "end" in df:
        duration = df["path"].map(durations)
        past = reason.isna() & (df["end"] > duration + END_TOLERANCE_SECONDS)
        reason[past] = [
            f"segment end {e:g} s is past the end of {p} ({d:.3f} s)"
            for p, e, d in zip(df.loc[past, "path"], df.loc[past, "end"], duration[past])
        ]
    bad_mask = reason.notna()
    good, bad = df.loc[~bad_mask].copy(), df.loc[bad_mask].copy()
    bad["reason"] = reason[bad_mask].astype(str)
    if len(bad) and not skip_bad:
        listed = "\n".join(f"  - {r}" for r in bad["reason"].iloc[:_MAX_LISTED])
        more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise AudioError(
            f"{len(bad)} of {len(df)} manifest rows point to unreadable audio:\n{listed}{more}\n"
            "fix or remove them, or pass --skip-bad to skip them (they are listed in the run folder)",
            path=str(bad["path"].iloc[0]),
        )
    return good, bad


def segment_seconds(row: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """A manifest row's ``(start, end)`` in seconds; None where the column is absent or empty (NaN)."""

    def value(key: str) -> float | None:
        v = row.get(key)
        return None if v is None or pd.isna(v) else float(v)

    return value("start"), value("end")


def parse_labels(label: str) -> list[str]:
    """Split a ``;``-separated label cell into its labels (stripped, empties dropped)."""
    return [part.strip() for part in str(label).split(";") if part.strip()]


def label_names(df: pd.DataFrame) -> list[str]:
    """Sorted unique label names over all rows (multi-label cells are split on ``;``).

    Raises:
        ManifestError: ``df`` has no ``label`` column.
    """
    if "label" not in df:
        raise ManifestError("the manifest has no 'label' column; read it with read_manifest(label_column=...)")
    return sorted({name for cell in df["label"] for name in parse_labels(cell)})
