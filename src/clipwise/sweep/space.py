"""A sweep's search space: a YAML mapping of config keys to lists of values or ``{low, high, log, step}``
ranges, checked value by value before any trial runs, and how Optuna samples it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from clipwise.config import SWEEP_SAMPLERS, load_config, read_yaml_mapping
from clipwise.errors import ConfigError

SAMPLERS = SWEEP_SAMPLERS


def load_space(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a search space file (see the module docstring).

    Raises:
        ConfigError: not a mapping, an unknown config key, or a range without low/high.
    """
    p = Path(path)
    space = read_yaml_mapping(p, what="search space file")
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"search space {p} must map config keys to lists of values or {{low, high}} ranges")
    for key, dom in space.items():
        if isinstance(dom, dict):
            if not {"low", "high"} <= set(dom) or set(dom) - {"low", "high", "log", "step"}:
                raise ConfigError(f"search space key {key!r}: a range needs low and high (optional log, step), "
                                  f"got {sorted(dom)}")
        elif not isinstance(dom, list) or not dom:
            raise ConfigError(f"search space key {key!r} must be a non-empty list or a {{low, high}} range")
        # every value (both ends of a range) is checked now: an unknown key or a bad value fails here, not in trial 7
        for value in ([dom["low"], dom["high"]] if isinstance(dom, dict) else dom):
            try:
                load_config(overrides={key: value})
            except ConfigError as e:
                raise ConfigError(f"search space {p}: {key}={value!r} is not a valid setting: {e}") from None
    return space


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for key, dom in space.items():
        if isinstance(dom, list):
            # Optuna stores categorical choices as str/int/float/bool/None; tuples travel as their YAML text
            choices = [yaml.safe_dump(c, default_flow_style=True).strip() if isinstance(c, (list, dict)) else c
                       for c in dom]
            v = trial.suggest_categorical(key, choices)
            values[key] = yaml.safe_load(v) if isinstance(dom[choices.index(v)], (list, dict)) else v
        elif isinstance(dom["low"], int) and isinstance(dom["high"], int) and not isinstance(dom["low"], bool):
            values[key] = trial.suggest_int(key, dom["low"], dom["high"], log=bool(dom.get("log")),
                                            step=int(dom.get("step", 1)))
        else:
            values[key] = trial.suggest_float(key, float(dom["low"]), float(dom["high"]), log=bool(dom.get("log")),
                                              step=dom.get("step"))
    return values


def grid_values(space: dict[str, Any]) -> dict[str, list]:
    bad = [k for k, d in space.items() if not isinstance(d, list)]
    if bad:
        raise ConfigError(f"a grid search needs lists of values, but {bad} are ranges; list values or use "
                          "--sampler random|tpe")
    return {k: [yaml.safe_dump(c, default_flow_style=True).strip() if isinstance(c, (list, dict)) else c
                for c in d] for k, d in space.items()}


def grid_sampler_class():
    import optuna

    class _Grid(optuna.samplers.GridSampler):
        """Optuna's grid sampler, which stops the study once every point has been tried, even when tries failed;
        this one waits until the queued retries of cut-off trials have run too."""

        def after_trial(self, study, trial, state, values) -> None:
            if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
                super().after_trial(study, trial, state, values)

    return _Grid
