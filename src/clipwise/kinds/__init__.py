"""Run kinds: every built-in kind registered, and the dispatch that trains or loads a run by its kind.

``clipwise train``, ``cv``, ``sweep`` and the Python API train through :func:`train_run` (the kind is chosen by
``model.name``); ``predict``, ``evaluate`` and ensembles load through :func:`load_run` (the kind is read from the
run folder). See :mod:`clipwise.kinds.base` for what a kind provides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipwise.config import Config
from clipwise.errors import ConfigError
from clipwise.kinds import bundle, classical, deep, ensemble  # noqa: F401  (the built-in kinds register themselves)
from clipwise.data.prepare import RUN_DIR_ENV
from clipwise.kinds.base import KINDS, RunKind, claim_run_folder, get_kind, kinds_in_order, load_run
from clipwise.models.registry import MODELS

__all__ = ["KINDS", "RunKind", "get_kind", "kind_for_model", "known_models", "load_run", "train_run"]


def kind_for_model(name: str) -> RunKind:
    """The kind whose models include ``name`` (a built-in network, a timm backbone, a classical baseline).

    Raises:
        ConfigError: no kind trains a model of that name; the message lists close matches.
    """
    for kind in kinds_in_order():
        if kind.trains(name):
            return kind
    raise ConfigError(MODELS.unknown_message(name) + " Any timm model name also works; `clipwise models` lists "
                      "the classical baselines too.")


def known_models() -> list[tuple[str, str, str]]:
    """``(name, family, description)`` of every model any kind trains, for `clipwise models`."""
    return [entry for kind in kinds_in_order() for entry in kind.models()]


def train_run(config: Config, *, out: str | os.PathLike | None = None, resume: bool = False,
              callbacks: Sequence[Any] = (), overwrite: bool = False) -> Path:
    """Train the run ``config`` describes with the kind its ``model.name`` belongs to; returns the run folder.

    A new run never replaces what ``out`` holds unless ``overwrite`` (see :func:`claim_run_folder`); DDP worker
    processes, which re-run the launching command inside its run folder, skip that check.

    Raises:
        ConfigError: ``out`` holds a run or other files (and not ``overwrite``), or ``resume`` without ``out``.
    """
    kind = kind_for_model(config.model.name)
    if out is not None and not resume and os.environ.get(RUN_DIR_ENV) != str(Path(out).resolve()):
        moved = claim_run_folder(out, overwrite=overwrite)
        if moved is not None:
            print(f"the run that was in {out} is now in {moved}", flush=True)
    return kind.train(config, out=out, resume=resume, callbacks=callbacks)
