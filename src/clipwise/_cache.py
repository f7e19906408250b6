"""The one disk cache of what clipwise can recompute per clip: file fingerprints (``clipwise check``) and summary
features (classical baselines).

An entry belongs to one clip (a file, or a ``start``/``end`` segment of it) and is keyed by the file's absolute
path, size and modification time, the segment, the cache's version and a config (e.g. the feature settings), so
an edited file, a new segment or new settings never reuse an old entry. Entries are ``.npz`` files of plain
arrays, read with ``allow_pickle=False``: reading the cache can never run code, and a damaged or foreign entry is
dropped and recomputed. Writes are atomic (a temporary file renamed into place), so processes can share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir(kind: str) -> Path:
    """``$CLIPWISE_CACHE/<kind>``, else ``$XDG_CACHE_HOME/clipwise/<kind>`` (``~/.cache/clipwise/<kind>``)."""
    root = os.environ.get("CLIPWISE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipwise"
    return Path(root) / kind


class ClipCache:
    """Per-clip arrays on disk (see the module docstring).

    Args:
        kind: the cache's folder under :func:`cache_dir` (``check``, ``features``).
        version: bumped when what is stored changes; older entries are then never read.
        config: settings the stored values depend on (part of every key).
    """

    def __init__(self, kind: str, *, version: int, config: Mapping[str, Any] | None = None):
        self.kind = kind
        self.version = version
        self.config = json.dumps(dict(config or {}), sort_keys=True, default=str)
        self.root = cache_dir(kind)

    def key(self, path: str | os.PathLike, start: float | None = None, end: float | None = None) -> str:
        """The key of one clip: changes when the file's size or modification time does."""
        try:
            st = os.stat(path)
            stamp: Any = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        text = repr((self.version, self.config, os.path.abspath(path), start, end, stamp))
        return hashlib.sha1(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key``, or None (missing, damaged, or not plain arrays)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                return {name: entry[name] for name in entry.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None  # recomputed and written again

    def put(self, key: str, arrays: Mapping[str, Any]) -> None:
        """Store ``arrays`` (anything numpy turns into a non-object array) under ``key``; an unwritable cache
        only costs time."""
        path = self._path(key)
        plain = {name: np.asarray(value) for name, value in arrays.items()}
        if any(a.dtype.hasobject for a in plain.values()):  # would need pickle to store, and to read back
            raise TypeError(f"the {self.kind} cache stores plain arrays only, got {sorted(plain)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **plain)
            os.replace(tmp, path)
        except (OSError, ValueError):
            pass
