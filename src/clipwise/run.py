"""The run folder: one training run's config, labels, metrics, predictions, checkpoints and report.

Layout (see docs/DESIGN.md)::

    RUN/config.yaml  labels.json  metrics.csv  summary.json  predictions_<split>.csv
    RUN/checkpoints/best.ckpt, last.ckpt    RUN/report.md    RUN/figures/*.png

Every write is atomic (:mod:`clipwise._io`): a crash or a full disk never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from clipwise.errors import ConfigError, RunError
from clipwise._io import FLOAT_DIGITS, atomic_write_text, to_jsonable
from clipwise._version import __version__
from clipwise.data.manifest import parse_labels
from clipwise.task import Task, get_task

PROB_PREFIX = "p:"
INFO_FILE = "run.json"  # what the run is: its kind (deep, classical, ensemble) and task, written at creation
_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REWRITE = "re-run `clipwise train --out <this folder>` to write it again"


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
        elif not run.info_path.is_file():
            reason = f"{INFO_FILE} missing"
        else:
            return run
        raise RunError(
            f"{run.root} is not a clipwise run folder: {reason}; "
            "pass the folder that `clipwise train --out` wrote"
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
    def info_path(self) -> Path:
        """run.json: the run's kind and task, written when the run is created."""
        return self.root / INFO_FILE

    def write_info(self, *, kind: str, task: Task | str, **extra: Any) -> Path:
        """Record what the run is (see :attr:`kind`, :attr:`task`); ``extra`` keys are kept beside them."""
        name = task.name if isinstance(task, Task) else get_task(task).name
        return self.save_json(self.info_path, {"kind": kind, "task": name, "clipwise_version": __version__, **extra})

    def info(self) -> dict[str, Any]:
        """run.json as a dict.

        Raises:
            RunError: the file is missing or not a JSON object.
        """
        info = self._read(self.info_path, json.loads, "JSON")
        if not isinstance(info, dict) or not {"kind", "task"} <= set(info):
            raise RunError(f"{self.info_path} must hold a JSON object with 'kind' and 'task'; {_REWRITE}")
        return info

    @property
    def kind(self) -> str:
        """The run kind's registered name (``deep``, ``classical``, ``ensemble``): how it loads and scores."""
        return str(self.info()["kind"])

    @property
    def task(self) -> Task:
        """The run's :class:`~clipwise.task.Task` (single- or multi-label)."""
        try:
            return get_task(str(self.info()["task"]))
        except ConfigError as e:
            raise RunError(f"{self.info_path}: {e}") from None

    @property
    def ensemble_path(self) -> Path:
        """ensemble.json: an ensemble's members, weights and temperatures."""
        return self.root / "ensemble.json"

    @property
    def splits_path(self) -> Path:
        """splits.csv: path, label and split of every clip the run used."""
        return self.root / "splits.csv"

    def load_splits(self) -> pd.DataFrame:
        """splits.csv: ``path``, ``label`` and ``split`` as text (a label "NA" stays a label), ``start`` / ``end``
        as numbers (NaN where empty).

        Raises:
            RunError: the file is missing or not CSV.
        """
        df = self._read(self.splits_path, lambda text: pd.read_csv(
            io.StringIO(text), dtype={"path": str, "label": str, "split": str}, keep_default_na=False), "CSV")
        for col in ("start", "end"):
            if col in df:
                df[col] = pd.to_numeric(df[col], errors="coerce")
        return df

    @property
    def estimator_path(self) -> Path:
        """A classical baseline's fitted scikit-learn pipeline."""
        return self.root / "model.skops"

    @property
    def weights_path(self) -> Path:
        """A deep model's spec and weights alone (no optimiser state), as an ensemble keeps a member."""
        return self.root / "model.pt"

    @property
    def members_dir(self) -> Path:
        """An ensemble's copies of its members."""
        return self.root / "members"

    @property
    def recompute_path(self) -> Path:
        """recompute.json, written by ``clipwise evaluate --recompute``."""
        return self.root / "recompute.json"

    @property
    def evaluations_dir(self) -> Path:
        """``clipwise evaluate``'s predictions and metrics."""
        return self.root / "evaluations"

    @property
    def cv_summary_path(self) -> Path:
        """A cross-validation folder's summary over its folds."""
        return self.root / "cv_summary.json"

    @property
    def cv_folds_path(self) -> Path:
        """A cross-validation folder's per-fold scores (cv_folds.csv)."""
        return self.root / "cv_folds.csv"

    @property
    def folds_path(self) -> Path:
        """A cross-validation folder's manifest with the fold column it used."""
        return self.root / "folds.csv"

    def fold_run(self, k: int) -> RunFolder:
        """The run folder of fold ``k`` of a cross-validation folder."""
        return RunFolder(self.root / f"fold{k}")

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
        task: Task | None = None,
    ) -> Path:
        """Write ``predictions_<split>.csv`` with columns ``path, label, pred, p:<label>...``.

        Args:
            split: split name ("test", "val", ...).
            paths: one audio path per row.
            y_true: the task's targets (class indices, a negative index marking an unknown row; or a multi-hot
                ``(N, C)`` matrix), or None when unknown. The ``label`` cell is empty where the truth is unknown;
                multi-label cells hold ``;``-separated labels.
            probs: class probabilities, shape (N, C).
            labels: class names; default: the run's labels.json.
            thresholds: multi-label runs: per-class (or one) decision threshold for ``pred``.
            task: default: the run's task (run.json).

        Returns:
            The path written.

        Raises:
            ConfigError: if the lengths or the number of classes disagree.
            RunError: if ``labels`` or ``task`` is omitted and the run folder lacks them.
        """
        labels = self.load_labels() if labels is None else list(labels)
        task = self.task if task is None else task
        probs = np.asarray(probs, dtype=np.float64)
        n = len(paths)
        if probs.ndim != 2 or probs.shape != (n, len(labels)):
            raise ConfigError(
                f"probs must have shape ({n}, {len(labels)}) for {n} paths and {len(labels)} labels, "
                f"got {probs.shape}"
            )
        truth = [""] * n if y_true is None else _truth_cells(task, np.asarray(y_true), labels, n)
        frame = pd.DataFrame({
            "path": [os.fspath(p) for p in paths],
            "label": truth,
            "pred": [";".join(d) for d in task.decide(probs, labels, thresholds)],
        })
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

    def load_predictions(self, split: str, *, task: Task | None = None
                         ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
        """Read ``predictions_<split>.csv`` (``task``: default the run's, from run.json).

        Returns:
            ``(frame, probs, y_true)``: the file as a DataFrame (``path``, ``label``, ``pred`` as strings,
            empty where unknown), the (N, C) probabilities in the order of the ``p:`` columns, and the
            true class indices (-1 where a row's label is empty), or None when no row has a label. For a
            multi-label run ``y_true`` is the (N, C) multi-hot matrix.

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
        unknown = sorted({lab for v in frame["label"] for lab in parse_labels(v)} - set(labels))
        if unknown:
            raise RunError(f"{path} has labels without a p: column: {unknown[:5]!r}; {_REWRITE}")
        task = self.task if task is None else task
        known = (frame["label"] != "").to_numpy()
        if not known.any():
            return frame, probs, None
        if task.multi_label:  # an empty cell is a clip without any of the labels
            return frame, probs, task.encode(list(frame["label"]), labels)
        y = task.encode(list(frame["label"].where(known, labels[0])), labels)
        return frame, probs, np.where(known, y, -1)

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


def _truth_cells(task: Task, y: np.ndarray, labels: Sequence[str], n: int) -> list[str]:
    """The ``label`` cells of known targets (empty where a class index is negative)."""
    if task.multi_label and y.shape != (n, len(labels)):
        raise ConfigError(f"multi-label y_true must have shape ({n}, {len(labels)}), got {y.shape}")
    if not task.multi_label and (y.shape != (n,) or y.max(initial=-1) >= len(labels)):
        raise ConfigError(f"y_true must hold {n} class indices below {len(labels)} (negative = unknown), "
                          f"got shape {y.shape} with maximum {y.max(initial=-1)}")
    names = np.asarray(labels, dtype=object)
    if task.multi_label:
        return [";".join(names[row > 0.5]) for row in y]
    return [names[i] if i >= 0 else "" for i in y]


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
