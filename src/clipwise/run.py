"""The run folder: one training run's config, labels, metrics, predictions, checkpoints and report.

Layout (see docs/DESIGN.md)::

    RUN/config.yaml  labels.json  metrics.csv  summary.json  predictions_<split>.csv
    RUN/checkpoints/best.ckpt, last.ckpt    RUN/report.md    RUN/figures/*.png

Every write goes to a temporary file in the same folder and is then renamed over the target, so a crash
or a full disk never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from clipwise.errors import ConfigError, RunError

#: Significant digits kept for floats in summary.json and metrics.csv.
FLOAT_DIGITS = 6
PROB_PREFIX = "p:"
ENSEMBLE_FILE = "ensemble.json"  # its members, weights and temperatures (clipwise.ensemble)
_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REWRITE = "re-run `clipwise train --out <this folder>` to write it again"


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


class RunFolder:
    """Paths and readers/writers of one run folder. The constructor only stores the path.

    Args:
        root: the run folder; it does not need to exist (use :meth:`open` to read an existing run).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | os.PathLike) -> RunFolder:
        """Open an existing run folder.

        Raises:
            RunError: if the folder or its config.yaml is missing.
        """
        run = cls(root)
        if not run.root.is_dir():
            reason = "the folder does not exist"
        elif not run.config_path.is_file():
            reason = "config.yaml missing"
        else:
            return run
        raise RunError(
            f"{run.root} is not a clipwise run folder: {reason}; "
            "pass the folder that `clipwise train` wrote (--out)"
        )

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    @property
    def name(self) -> str:
        """The run's name: the folder name."""
        return self.root.resolve().name

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def ensemble_path(self) -> Path:
        """ensemble.json: present only in an ensemble's folder."""
        return self.root / ENSEMBLE_FILE

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints_dir / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / "last.ckpt"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def report_path(self) -> Path:
        return self.root / "report.md"

    @property
    def skipped_files_path(self) -> Path:
        return self.root / "skipped_files.csv"

    @property
    def thresholds_path(self) -> Path:
        """thresholds.json: per-class decision thresholds of a multi-label run (tuned on validation)."""
        return self.root / "thresholds.json"

    def load_thresholds(self) -> dict[str, float] | None:
        """The tuned thresholds by label, or None when the run has none (single-label runs)."""
        if not self.thresholds_path.is_file():
            return None
        return self._read(self.thresholds_path, json.loads, "JSON")["thresholds"]

    def threshold_array(self, labels: Sequence[str], *, default: float = 0.5) -> np.ndarray:
        """The tuned threshold of each of ``labels`` (``default`` where the run has none)."""
        tuned = self.load_thresholds() or {}
        return np.array([tuned.get(lab, default) for lab in labels], dtype=np.float64)

    @property
    def leakage_path(self) -> Path:
        """leakage.json: what the pre-training check found shared between the splits."""
        return self.root / "leakage.json"

    def predictions_path(self, split: str) -> Path:
        """Path of ``predictions_<split>.csv``.

        Raises:
            ConfigError: if ``split`` is not a plain name (letters, digits, ``_``, ``-``, ``.``).
        """
        if not isinstance(split, str) or not _SPLIT_RE.match(split):
            raise ConfigError(f"split must be a plain name such as 'test' or 'val', got {split!r}")
        return self.root / f"predictions_{split}.csv"

    def save_config_yaml(self, config: Mapping[str, Any]) -> Path:
        """Write the resolved config (a plain nested dict) to config.yaml; returns the path."""
        # No rounding: the saved config must reproduce the run exactly.
        text = yaml.safe_dump(to_jsonable(config, float_digits=None), sort_keys=False, allow_unicode=True)
        atomic_write_text(self.config_path, text)
        return self.config_path

    def load_config_dict(self) -> dict[str, Any]:
        """Read config.yaml as a plain dict.

        Raises:
            RunError: if the file is missing, not valid YAML or not a mapping.
        """
        data = self._read(self.config_path, yaml.safe_load, "YAML")
        if not isinstance(data, dict):
            raise RunError(
                f"{self.config_path} must hold a mapping of config sections, got {type(data).__name__}"
            )
        return data

    def save_labels(self, labels: Sequence[str]) -> Path:
        """Write the label list (index = class id) to labels.json; returns the path.

        Raises:
            ConfigError: if a label is not a non-empty string or a label repeats.
        """
        labels = list(labels)
        bad = [lab for lab in labels if not isinstance(lab, str) or not lab]
        if bad:
            raise ConfigError(f"labels must be non-empty strings, got {bad[:3]!r}")
        repeated = sorted({lab for lab in labels if labels.count(lab) > 1})
        if repeated:
            raise ConfigError(f"labels must be unique, these repeat: {repeated[:5]!r}")
        atomic_write_text(self.labels_path, json.dumps(labels, indent=2, ensure_ascii=False) + "\n")
        return self.labels_path

    def load_labels(self) -> list[str]:
        """Read labels.json.

        Raises:
            RunError: if the file is missing or not a JSON list of strings.
        """
        labels = self._read(self.labels_path, json.loads, "JSON")
        if not isinstance(labels, list) or not all(isinstance(lab, str) for lab in labels):
            raise RunError(f"{self.labels_path} must hold a JSON list of label names; {_REWRITE}")
        return labels

    def save_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write summary.json (numpy types converted, floats rounded; see :func:`to_jsonable`)."""
        text = json.dumps(to_jsonable(summary), indent=2, ensure_ascii=False, allow_nan=False)
        atomic_write_text(self.summary_path, text + "\n")
        return self.summary_path

    def save_json(self, path: Path, value: Any) -> Path:
        """Write any JSON file of the run folder atomically (numpy types converted)."""
        atomic_write_text(path, json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        return path

    def load_summary(self) -> dict[str, Any]:
        """Read summary.json; an empty dict when the run has not written one yet.

        Raises:
            RunError: if the file exists but is not a JSON object.
        """
        if not self.summary_path.exists():
            return {}
        summary = self._read(self.summary_path, json.loads, "JSON")
        if not isinstance(summary, dict):
            raise RunError(f"{self.summary_path} must hold a JSON object; {_REWRITE}")
        return summary

    def update_summary(self, **sections: Any) -> dict[str, Any]:
        """Merge ``sections`` into summary.json (nested dicts merge, other values replace).

        Returns:
            The merged summary as written.
        """
        summary = _merge(self.load_summary(), to_jsonable(sections))
        self.save_summary(summary)
        return summary

    def append_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one epoch's row to metrics.csv, adding columns that are new.

        A value that is NaN or infinite is written as ``nan``/``inf`` and a missing value as an empty cell,
        so a diverged loss can be told apart from a metric that was not computed that epoch.
        """
        rows: list[dict[str, str]] = []
        header: list[str] = []
        if self.metrics_path.exists():
            with open(self.metrics_path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                rows = list(reader)
        header += [key for key in row if key not in header]
        rows.append({key: _format_cell(value) for key, value in row.items()})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_path, out.getvalue())

    def read_metrics(self) -> pd.DataFrame:
        """Read metrics.csv (one row per epoch; empty cells and ``nan`` become NaN).

        Raises:
            RunError: if the file is missing or unreadable.
        """
        return self._read(self.metrics_path, lambda text: pd.read_csv(io.StringIO(text)), "CSV")

    def save_predictions(
        self,
        split: str,
        paths: Sequence[str | os.PathLike],
        y_true: np.ndarray | Sequence[int] | None,
        probs: np.ndarray,
        *,
        labels: Sequence[str] | None = None,
        thresholds: np.ndarray | float | None = None,
    ) -> Path:
        """Write ``predictions_<split>.csv`` with columns ``path, label, pred, p:<label>...``.

        Args:
            split: split name ("test", "val", ...).
            paths: one audio path per row.
            y_true: true class indices, or None when unknown; a negative index marks one unknown row.
                The ``label`` cell is empty where the truth is unknown. A multi-hot ``(N, C)`` matrix marks a
                multi-label run: cells then hold ``;``-separated labels.
            probs: class probabilities, shape (N, C).
            labels: class names; default: the run's labels.json.
            thresholds: multi-label runs: per-class (or one) decision threshold; ``pred`` then lists every label
                whose probability reaches its threshold (``;``-separated, empty for none) instead of the top one.

        Returns:
            The path written.

        Raises:
            ConfigError: if the lengths or the number of classes disagree.
            RunError: if ``labels`` is omitted and labels.json is missing.
        """
        labels = self.load_labels() if labels is None else list(labels)
        probs = np.asarray(probs, dtype=np.float64)
        n = len(paths)
        if probs.ndim != 2 or probs.shape != (n, len(labels)):
            raise ConfigError(
                f"probs must have shape ({n}, {len(labels)}) for {n} paths and {len(labels)} labels, "
                f"got {probs.shape}"
            )
        names = np.asarray(labels, dtype=object)
        multi = thresholds is not None or (y_true is not None and np.ndim(y_true) == 2)
        if multi:
            hot = np.zeros((n, len(labels))) if y_true is None else np.asarray(y_true, dtype=np.float64)
            if hot.shape != (n, len(labels)):
                raise ConfigError(f"multi-label y_true must have shape ({n}, {len(labels)}), got {hot.shape}")
            cut = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, dtype=np.float64),
                                  (len(labels),))
            frame = pd.DataFrame({
                "path": [os.fspath(p) for p in paths],
                "label": [";".join(names[row > 0.5]) for row in hot],
                "pred": [";".join(names[row >= cut]) for row in probs],
            })
            return self._write_predictions(split, frame, probs, labels)
        truth = np.full(n, -1) if y_true is None else np.asarray(y_true, dtype=np.int64)
        if truth.shape != (n,) or truth.max(initial=-1) >= len(labels):
            raise ConfigError(
                f"y_true must hold {n} class indices below {len(labels)} (negative = unknown), "
                f"got shape {truth.shape} with maximum {truth.max(initial=-1)}"
            )
        frame = pd.DataFrame(
            {
                "path": [os.fspath(p) for p in paths],
                "label": np.where(truth >= 0, names[np.maximum(truth, 0)], ""),
                "pred": names[probs.argmax(axis=1)],
            }
        )
        return self._write_predictions(split, frame, probs, labels)

    def _write_predictions(self, split: str, frame: pd.DataFrame, probs: np.ndarray, labels: Sequence[str]) -> Path:
        prob_frame = pd.DataFrame(probs, columns=[PROB_PREFIX + lab for lab in labels])
        frame = pd.concat([frame, prob_frame], axis=1)
        text = frame.to_csv(
            index=False, float_format=f"%.{FLOAT_DIGITS}g", na_rep="nan", lineterminator="\n"
        )
        path = self.predictions_path(split)
        atomic_write_text(path, text)
        return path

    def load_predictions(self, split: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
        """Read ``predictions_<split>.csv``.

        Returns:
            ``(frame, probs, y_true)``: the file as a DataFrame (``path``, ``label``, ``pred`` as strings,
            empty where unknown), the (N, C) probabilities in the order of the ``p:`` columns, and the
            true class indices (-1 where a row's label is empty), or None when no row has a label. For a
            multi-label run (see :meth:`is_multi_label`) ``y_true`` is the (N, C) multi-hot matrix.

        Raises:
            RunError: if the file is missing, lacks columns, names a label without a ``p:`` column, or its
                ``p:`` columns disagree with labels.json.
        """
        path = self.predictions_path(split)
        # dtype=str and no NA parsing: a label called "NA" or "None" stays a label.
        frame = self._read(
            path, lambda t: pd.read_csv(io.StringIO(t), dtype=str, keep_default_na=False), "CSV"
        )
        prob_cols = [c for c in frame.columns if c.startswith(PROB_PREFIX)]
        missing = [c for c in ("path", "label", "pred") if c not in frame.columns]
        if missing or not prob_cols:
            raise RunError(f"{path} lacks columns {missing or ['p:<label>']}; {_REWRITE}")
        labels = [c[len(PROB_PREFIX):] for c in prob_cols]
        if self.labels_path.exists() and self.load_labels() != labels:
            raise RunError(f"the p: columns of {path} do not match {self.labels_path}; {_REWRITE}")
        try:
            probs = frame[prob_cols].astype(np.float64).to_numpy()
        except ValueError as err:
            raise RunError(f"{path} holds a probability that is not a number ({err}); {_REWRITE}") from err
        frame[prob_cols] = probs
        index = {lab: i for i, lab in enumerate(labels)}
        multi = self.is_multi_label()
        cells = [[lab for lab in str(v).split(";") if lab] if multi else ([v] if v else []) for v in frame["label"]]
        unknown = sorted({lab for c in cells for lab in c} - set(index))
        if unknown:
            raise RunError(f"{path} has labels without a p: column: {unknown[:5]!r}; {_REWRITE}")
        if multi:
            hot = np.zeros((len(frame), len(labels)))
            for r, c in enumerate(cells):
                hot[r, [index[lab] for lab in c]] = 1.0
            return frame, probs, (hot if hot.any() else None)
        y_true = frame["label"].map(lambda lab: index.get(lab, -1)).to_numpy(dtype=np.int64)
        return frame, probs, (y_true if (y_true >= 0).any() else None)

    def is_multi_label(self) -> bool:
        """Whether the run is a multi-label one (config data.task, or tuned thresholds present)."""
        if self.thresholds_path.is_file():
            return True
        if self.config_path.is_file():
            return (self.load_config_dict().get("data") or {}).get("task") == "multilabel"
        return False

    def _read(self, path: Path, parse: Any, kind: str) -> Any:
        if not path.is_file():
            raise RunError(
                f"{path} is missing: the run folder is incomplete (training stopped early or files were "
                f"moved); {_REWRITE}"
            )
        try:
            return parse(path.read_text(encoding="utf-8"))
        except (ValueError, yaml.YAMLError) as err:  # pandas' parser errors are ValueErrors
            raise RunError(f"{path} is not valid {kind} ({err}); {_REWRITE}") from err


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{FLOAT_DIGITS}g}"  # nan -> "nan", inf -> "inf"
    return str(to_jsonable(value))
