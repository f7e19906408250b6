"""Atomic writes and JSON-safe values: how every file clipwise writes reaches the disk.

Every write goes to a temporary file in the same folder and is then renamed over the target, so a crash or a
full disk never leaves a half-written file behind.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: Significant digits kept for floats in summary.json and metrics.csv.
FLOAT_DIGITS = 6


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    The temporary name keeps the suffix, so writers that infer a format from it (matplotlib) work.
    On an exception the temporary file is removed and ``path`` is left untouched.

    Args:
        path: the file to (over)write; its folder is created when missing.

    Returns:
        A context manager yielding the temporary :class:`~pathlib.Path` to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def to_jsonable(value: Any, *, float_digits: int | None = FLOAT_DIGITS) -> Any:
    """Convert numpy scalars and arrays, paths and tuples to plain JSON types, recursively.

    Args:
        value: a (nested) dict, list, tuple, array or scalar.
        float_digits: significant digits kept for floats (None keeps them all). NaN and infinities
            become ``None`` because strict JSON has no spelling for them.

    Returns:
        The converted value.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, float_digits=float_digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_jsonable(v, float_digits=float_digits) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return value if float_digits is None else float(f"{value:.{float_digits}g}")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def move_aside(path: str | os.PathLike) -> Path:
    """Rename ``path`` to ``<path>.replaced-<time>`` (what ``--overwrite`` does to a run or bundle: nothing is
    deleted); returns the new path."""
    import time

    path = Path(path)
    aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    return aside
