"""The run-kind registry: how each kind of run (a deep network, a classical baseline, an ensemble) trains, loads
into a scorer, and is copied into an ensemble.

A run folder records its kind in run.json when it is created (:meth:`~clipwise.run.RunFolder.write_info`);
loading asks the registry for that kind and never looks at which files happen to be there. Adding a kind is one
module that subclasses :class:`RunKind` and decorates it with :func:`register_kind`, plus its import in
``clipwise/kinds/__init__.py``, which imports every built-in kind so that they are registered before any is
looked up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from clipwise._io import move_aside
from clipwise.config import Config
from clipwise.errors import ConfigError, RegistryError, RunError
from clipwise.infer.scoring import Scoring
from clipwise.registry import Registry
from clipwise.run import RunFolder


class RunKind:
    """One kind of run. Subclasses set :attr:`name` and implement what the kind supports."""

    name: ClassVar[str]
    #: a sentence for `clipwise models` and error messages
    description: ClassVar[str] = ""
    #: where the kind's models come in `clipwise models`, and in which order the train dispatch asks the kinds
    order: ClassVar[int] = 0

    def trains(self, model_name: str) -> bool:
        """Whether ``model.name`` names a model of this kind (the train dispatch asks every kind)."""
        return False

    def models(self) -> list[tuple[str, str, str]]:
        """``(name, family, description)`` of the models of this kind, for `clipwise models`."""
        return []

    def train(self, config: Config, *, out: str | os.PathLike | None = None, resume: bool = False,
              callbacks: Sequence[Any] = ()) -> Path:
        """Train as ``config`` says and write the run folder; returns it."""
        raise ConfigError(f"a {self.name} run is not trained from a config")

    def load(self, run: RunFolder, *, checkpoint: str = "best", **options: Any) -> Scoring:
        """A scorer of audio for the finished run ``run``."""
        raise NotImplementedError

    #: why a kind that does not export cannot, and what to do instead (the message of :meth:`export`)
    cannot_export: ClassVar[str] = "this kind of run has no export"

    def export(self, run: RunFolder, out: Path, *, overwrite: bool = False, **options: Any) -> Path:
        """Write an export bundle of the run (see :mod:`clipwise.bundle`); returns its folder. ``options``:
        ``torchscript``, ``int8`` and ``calibration``, as :func:`clipwise.export.export_deep` takes them."""
        article = "an" if self.name[:1] in "aeiou" else "a"
        raise ConfigError(f"{run.root} is {article} {self.name} run: {self.cannot_export}")

    def bundle(self, run: RunFolder, dest: Path) -> bool:
        """Copy into ``dest`` what scoring audio with ``run`` needs (an ensemble keeps its members so); False, with
        nothing copied, when the run holds no model (a folder of saved predictions only)."""
        raise RunError(f"a {self.name} run cannot be copied into an ensemble")


KINDS: Registry = Registry("run kind")


def register_kind(cls: type[RunKind]) -> type[RunKind]:
    """Class decorator: register a :class:`RunKind` subclass under its ``name``."""
    KINDS.register(cls.name)(cls)
    return cls


def kinds_in_order() -> list[RunKind]:
    """Every registered kind, by :attr:`RunKind.order`."""
    return sorted((KINDS.get(name)() for name in KINDS), key=lambda kind: (kind.order, kind.name))


def get_kind(name: str) -> RunKind:
    """The registered kind called ``name``.

    Raises:
        RunError: no kind of that name is registered.
    """
    try:
        return KINDS.get(name)()
    except RegistryError as e:
        raise RunError(str(e)) from None


#: what a run folder holds (a folder with anything else is the user's, and clipwise does not write into it)
RUN_FILES = ("run.json", "config.yaml", "labels.json", "metrics.csv", "summary.json", "splits.csv", "leakage.json",
             "thresholds.json", "skipped_files.csv", "model.skops", "model.pt", "ensemble.json", "recompute.json",
             "report.md", "report.html", "predictions_*.csv", "checkpoints", "figures", "evaluations", "members")


def claim_run_folder(out: str | os.PathLike, *, overwrite: bool = False) -> Path | None:
    """Make sure a new run may be written into ``out``, before anything is.

    ``out`` may be missing, empty, or a run that never finished an epoch (nothing trained is lost). A finished
    run, a run with checkpoints and a folder holding files of the user's are refused, unless ``overwrite``: a run
    is then moved aside (``<out>.replaced-<time>``), never deleted.

    Returns:
        Where an overwritten run was moved, or None.

    Raises:
        ConfigError: ``out`` is a file, holds a run that training would replace, or holds other files.
    """
    import fnmatch

    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out {root} is a file, not a folder; pass a new folder for the run")
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {root} cannot be created: {existing} is a file, not a folder; pass a new folder")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"--out {root} cannot be written: {existing} is not writable for this user; pass a "
                          "folder you can write to")
    entries = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if not entries:
        return None
    foreign = [n for n in entries if not any(fnmatch.fnmatch(n, pattern) for pattern in RUN_FILES)]
    if foreign:
        raise ConfigError(f"--out {root} already holds files that are not a clipwise run ({', '.join(foreign[:5])}); "
                          "nothing was written. Choose a new or empty folder")
    run = RunFolder(root)
    trained = run.summary_path.is_file() or any(run.checkpoints_dir.glob("*.ckpt")) or run.estimator_path.is_file()
    if not trained:
        return None  # a run stopped before it trained anything: start it again in place
    if not overwrite:
        what = "a finished run" if run.summary_path.is_file() else "an interrupted run"
        resume = "" if run.summary_path.is_file() else f" continue it with `clipwise train --resume {root}`,"
        raise ConfigError(f"--out {root} holds {what}; nothing was written. Choose a new folder,{resume} or pass "
                          "--overwrite to move it aside (it is kept as <folder>.replaced-<time>)")
    return move_aside(root)


def load_run(path: str | os.PathLike, *, checkpoint: str = "best", **options: Any) -> Scoring:
    """A scorer for the run folder at ``path``, loaded by the kind its run.json names.

    Raises:
        RunError: not a run folder, or a kind that is not registered.
    """
    run = RunFolder.open(path)
    return get_kind(run.kind).load(run, checkpoint=checkpoint, **options)
