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


def load_run(path: str | os.PathLike, *, checkpoint: str = "best", **options: Any) -> Scoring:
    """A scorer for the run folder at ``path``, loaded by the kind its run.json names.

    Raises:
        RunError: not a run folder, or a kind that is not registered.
    """
    run = RunFolder.open(path)
    return get_kind(run.kind).load(run, checkpoint=checkpoint, **options)
