"""Dataset recipes: turn a corpus on disk into a canonical manifest.

One corpus = one ``download_<name>`` (fetch and unpack, skipped when already there) and one registered
``prepare_<name>(root)`` that reads the corpus and returns a manifest DataFrame with absolute paths. A
recipe never writes into ``root`` and is safe to re-run. :func:`prepare` is what ``clipwise prepare
SOURCE`` calls: a recipe name, a folder with one subfolder per class, or a CSV manifest.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from clipwise.data.manifest import normalise_split, read_manifest
from clipwise.errors import ClipwiseError, ConfigError, ManifestError
from clipwise.registry import Registry

__all__ = [
    "RECIPES",
    "AUDIO_EXTENSIONS",
    "list_recipes",
    "prepare",
    "prepare_folder",
    "prepare_esc50",
    "prepare_fsdd",
    "download_esc50",
    "download_fsdd",
]

RECIPES: Registry[Callable[[Path], pd.DataFrame]] = Registry("dataset recipe", list_command="clipwise datasets")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")
ESC50_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/master.zip"
_FSDD_NAME = re.compile(r"^(\d+)_(.+)_(\d+)\.wav$", re.IGNORECASE)
_CSV_OPTIONS = ("path_column", "label_column", "split_column", "fold_column", "group_column", "start_column",
                "end_column")  # fmt: skip


def list_recipes() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered recipe, sorted by name."""
    return [(name, (RECIPES.get(name).__doc__ or "").strip().splitlines()[0]) for name in RECIPES.names()]


def _existing_dir(root: str | Path, what: str) -> Path:
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise ManifestError(f"{what} folder not found: {root}; check the path")
    return root


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("path", kind="stable").reset_index(drop=True)


@RECIPES.register("esc50")
def prepare_esc50(root: Path) -> pd.DataFrame:
    """ESC-50: 2000 five-second environmental sounds, 50 classes, 5 folds (Piczak 2015)."""
    root = _existing_dir(root, "ESC-50")
    if (root / "manifest.csv").is_file():  # an already-prepared copy (manifest.csv + audio/)
        return read_manifest(root / "manifest.csv")
    candidates = [root, root / "ESC-50-master"]
    base = next((c for c in candidates if (c / "meta" / "esc50.csv").is_file()), None)
    if base is None:
        raise ManifestError(
            f"no ESC-50 dataset in {root}: looked for {root / 'manifest.csv'} and for meta/esc50.csv (the public "
            f"release) in {' and '.join(str(c) for c in candidates)}; download it with `clipwise prepare esc50 --root DIR --download` (download_esc50(root) in Python)"
        )
    meta = pd.read_csv(base / "meta" / "esc50.csv", dtype={"filename": str, "category": str, "src_file": str})
    missing = {"filename", "fold", "category", "src_file"} - set(meta.columns)
    if missing:
        raise ManifestError(f"{base / 'meta' / 'esc50.csv'} lacks columns {sorted(missing)}; re-download ESC-50")
    df = pd.DataFrame(
        {
            "path": [str(base / "audio" / f) for f in meta["filename"]],
            "label": meta["category"].str.strip(),
            "fold": meta["fold"].astype("int64"),
            "group": meta["src_file"].astype(str),
        }
    )
    extras = meta.drop(columns=["filename", "fold", "category", "src_file"])
    return _sort(pd.concat([df, extras], axis=1))


def _fsdd_recordings(root: Path) -> tuple[Path, list[Path]]:
    candidates = [root / "recordings", root, root / "free-spoken-digit-dataset-master" / "recordings"]
    for folder in candidates:
        if folder.is_dir():
            files = sorted(p for p in folder.glob("*.wav") if _FSDD_NAME.match(p.name))
            if files:
                return folder, files
    raise ManifestError(
        f"no FSDD dataset in {root}: looked for {root / 'manifest.csv'} and for recordings named "
        f"<digit>_<speaker>_<index>.wav in {', '.join(str(c) for c in candidates)}; download it with "
        "`clipwise prepare fsdd --root DIR --download` (download_fsdd(root) in Python)"
    )


@RECIPES.register("fsdd")
def prepare_fsdd(root: Path) -> pd.DataFrame:
    """Free Spoken Digit Dataset: 3000 recordings of spoken digits 0-9 by 6 speakers, 8 kHz, official split."""
    root = _existing_dir(root, "FSDD")
    if (root / "manifest.csv").is_file():
        return read_manifest(root / "manifest.csv")
    _, files = _fsdd_recordings(root)
    rows = []
    for file in files:
        digit, speaker, index = _FSDD_NAME.match(file.name).groups()
        # the dataset's README: recordings 0-4 of every digit and speaker are the test set
        rows.append({"path": str(file), "label": digit, "split": "test" if int(index) <= 4 else "train",
                     "group": speaker})  # fmt: skip
    return _sort(pd.DataFrame(rows))


def _is_audio(path: Path, extensions: tuple[str, ...]) -> bool:
    return path.is_file() and path.suffix.lower() in extensions and not path.name.startswith(".")


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def prepare_folder(root: str | Path, *, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> pd.DataFrame:
    """Build a manifest from a folder with one subfolder per class (``root/<label>/**/<file>``).

    When every subfolder is a split name (``train``, ``val``/``valid``, ``test``, ...), the layout is read as
    ``root/<split>/<label>/**/<file>`` and a ``split`` column is added.

    Args:
        root: the dataset folder.
        extensions: file suffixes that count as audio (case-insensitive).

    Returns:
        A manifest with absolute paths, sorted by path.

    Raises:
        ManifestError: ``root`` is missing, has no class folders, or no audio files below them.
    """
    root = _existing_dir(root, "dataset")
    extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    top = _class_folders(root)
    if not top:
        raise ManifestError(
            f"no class folders in {root}: expected one subfolder per class, e.g. {root / 'dog' / 'clip1.wav'}"
        )
    by_split = all(normalise_split(p.name) for p in top)
    rows = []
    for split_dir in top if by_split else [None]:
        for class_dir in _class_folders(split_dir) if split_dir else top:
            files = sorted(p for p in class_dir.rglob("*") if _is_audio(p, extensions))
            if not files:
                warnings.warn(f"class folder {class_dir} holds no audio files; skipped", UserWarning, stacklevel=2)
            for file in files:
                row = {"path": str(file), "label": class_dir.name}
                if split_dir is not None:
                    row["split"] = normalise_split(split_dir.name)
                rows.append(row)
    if not rows:
        raise ManifestError(
            f"no audio files below the class folders of {root} (looked for {', '.join(extensions)}); "
            "put the clips in one subfolder per class"
        )
    return _sort(pd.DataFrame(rows))


def prepare(source: str, *, root: str | Path | None = None, **csv_options: str) -> pd.DataFrame:
    """Build a manifest from a recipe name, a folder of class subfolders, or a CSV manifest.

    Args:
        source: a registered recipe name (see :func:`list_recipes`), a folder, or a CSV file.
        root: the dataset folder; required for a recipe and only used there.
        **csv_options: column names for a CSV source (``path_column=``, ``label_column=``, ... see
            :func:`clipwise.data.manifest.read_manifest`).

    Returns:
        A canonical manifest with absolute paths.

    Raises:
        ConfigError: ``root`` missing for a recipe or given for something else, CSV options for a non-CSV
            source, unknown options, or a ``source`` that is none of the three.
        ManifestError: the dataset or manifest is invalid.
    """
    unknown = sorted(set(csv_options) - set(_CSV_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for prepare; allowed: {', '.join(_CSV_OPTIONS)}")
    path = Path(source).expanduser()
    if source in RECIPES:
        if root is None:
            raise ConfigError(
                f"dataset recipe {source!r} needs --root DIR: the folder the dataset was downloaded and unpacked into"
            )
        if csv_options:
            raise ConfigError(f"column options ({', '.join(csv_options)}) only apply to a CSV source, not {source!r}")
        return RECIPES.get(source)(Path(root))
    if root is not None:
        raise ConfigError(f"--root is only used with a dataset recipe ({', '.join(RECIPES.names())}); "
                          f"{source!r} is not one, so leave --root out")
    if path.is_dir():
        if csv_options:
            raise ConfigError(f"column options ({', '.join(csv_options)}) only apply to a CSV source, not a folder")
        return prepare_folder(path)
    if path.is_file():
        return read_manifest(path, **csv_options)
    raise ConfigError(
        f"{source!r} is not a dataset recipe, a folder or a CSV file. "
        f"{RECIPES.unknown_message(source)} A folder needs one subfolder per class; a CSV needs path and label columns."
    )


def _download_and_unpack(url: str, root: Path, folder_name: str, marker: str) -> Path:
    """Download a zip archive into ``root`` and unpack it to ``root/folder_name`` (skipped when present)."""
    root = Path(root).expanduser().absolute()
    target = root / folder_name
    if (target / marker).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise ClipwiseError(
                f"could not download {url}: {err}; check the internet connection, or download and unpack the "
                f"archive by hand so that {target / marker} exists"
            ) from err
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as err:
            raise ClipwiseError(f"the download from {url} is not a valid zip archive ({err}); try again") from err
        unpacked = Path(tmp) / folder_name
        if not (unpacked / marker).exists():
            raise ClipwiseError(f"the archive from {url} has no {folder_name}/{marker}; the layout has changed")
        if target.exists():  # an earlier, incomplete unpack
            shutil.rmtree(target)
        unpacked.replace(target)  # one rename: a half-unpacked folder is never left under its final name
    return target


def download_esc50(root: str | Path) -> Path:
    """Download and unpack ESC-50 (about 600 MB) into ``root/ESC-50-master``; skipped when already there.

    Returns:
        The dataset folder, ready for ``prepare_esc50(root)``.

    Raises:
        ClipwiseError: the download or unpacking failed.
    """
    return _download_and_unpack(ESC50_URL, Path(root), "ESC-50-master", "meta/esc50.csv")


def download_fsdd(root: str | Path) -> Path:
    """Download and unpack the Free Spoken Digit Dataset into ``root/free-spoken-digit-dataset-master``;
    skipped when already there.

    Returns:
        The dataset folder, ready for ``prepare_fsdd(root)``.

    Raises:
        ClipwiseError: the download or unpacking failed.
    """
    return _download_and_unpack(FSDD_URL, Path(root), "free-spoken-digit-dataset-master", "recordings")


#: the recipes whose data `clipwise prepare NAME --root DIR --download` fetches first
DOWNLOADS = {"esc50": download_esc50, "fsdd": download_fsdd}
