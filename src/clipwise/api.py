"""The Python API: train, cross-validate, load and use a model, as the ``clipwise`` commands do.

::

    import clipwise

    model = clipwise.train("esc50.csv", model="audiocnn", out="runs/esc50", epochs=30, **{"optim.lr": 1e-3})
    model.predict(["dog.wav", "rain.flac"], top_k=3)
    model.evaluate()                    # the run's test split, with the best checkpoint
    clipwise.load("runs/esc50").predict_proba(["dog.wav"])
    clipwise.cv("esc50.csv", out="runs/esc50-cv")

Every command of the CLI calls these functions; the CLI adds argument parsing and printing only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipwise.config import Config, load_config, parse_override
from clipwise.errors import AudioError, ConfigError, RunError
from clipwise.infer.evaluate import evaluate_run
from clipwise.infer.predictor import find_audio, split_decodable
from clipwise.infer.scoring import Scoring
from clipwise.kinds import kind_for_model, load_run, train_run
from clipwise.run import RunFolder
from clipwise.task import Task
from clipwise.training.cv import cross_validate

PathLike = str | os.PathLike


def make_config(data: PathLike | None = None, *, model: str | None = None, config: PathLike | Config | None = None,
                overrides: Sequence[str] | Mapping[str, Any] = (), base: Mapping[str, Any] | None = None,
                **settings: Any) -> Config:
    """A validated config from a YAML file (or a :class:`Config`), the data and model shortcuts, ``key=value``
    overrides and keyword settings (``epochs=3`` is ``train.epochs=3``; dotted keys as ``**{"optim.lr": 1e-3}``).

    Raises:
        ConfigError: an unknown key, a bad value, or a model name no kind trains.
    """
    values: dict[str, Any] = {}
    if data is not None:
        values["data.manifest"] = str(Path(data).resolve())
    if model is not None:
        values["model.name"] = model
    shortcuts = {"epochs": "train.epochs", "test_fold": "data.test_fold", "seed": "train.seed",
                 "skip_bad": "data.skip_bad", "allow_leakage": "data.allow_leakage"}
    for key, value in settings.items():
        values[shortcuts.get(key, key)] = value
    if isinstance(config, Config):
        base = config.to_dict()
        config = None
    # explicit key=value settings win over the shortcuts, as on the command line
    values.update(overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides))
    resolved = load_config(config, overrides=values, base=dict(base) if base else None)
    kind_for_model(resolved.model.name)  # an unknown model name fails here, before any data is read
    return resolved


class Model:
    """A trained run (or ensemble) ready to score audio: what :func:`load` and :func:`train` return.

    Args:
        run: the run folder.
        scorer: the kind's scorer of audio.
    """

    def __init__(self, run: RunFolder, scorer: Scoring):
        self.run = run
        self.scorer = scorer
        #: class names; column ``c`` of :meth:`predict_proba` belongs to ``labels[c]``
        self.labels: list[str] = list(scorer.labels)
        #: the run kind (``deep``, ``classical``, ``ensemble``) and task, as the run folder records them
        self.kind: str = run.kind
        self.task: Task = run.task

    def __repr__(self) -> str:
        return f"Model({str(self.run.root)!r}, kind={self.kind!r}, task={self.task.name!r})"

    @property
    def summary(self) -> dict[str, Any]:
        """The run's summary.json (final scores per split, baseline, data, timing)."""
        return self.run.load_summary()

    def predict_proba(self, audio: PathLike | Sequence[PathLike]) -> np.ndarray:
        """Class probabilities ``(files, classes)`` for audio files or folders (searched recursively)."""
        return self.scorer.predict_files(find_audio([audio] if isinstance(audio, (str, os.PathLike)) else audio))

    def predict(self, audio: PathLike | Sequence[PathLike], *, top_k: int = 3) -> list[dict[str, Any]]:
        """For each audio file (folders are searched): its path, the ``top_k`` labels with their probabilities,
        and the labels the task decides (the arg-max; for multi-label runs every label at its tuned threshold)."""
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        files = find_audio([audio] if isinstance(audio, (str, os.PathLike)) else audio)
        probs = self.scorer.predict_files(files)
        top = self.scorer.top_k(probs, k=top_k)
        decided = self.task.decide(probs, self.labels, self.thresholds())
        return [{"path": str(f), "labels": d, "top": t} for f, d, t in zip(files, decided, top)]

    def score_files(self, files: Sequence[PathLike]) -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
        """Probabilities for every file that decodes; the others are returned with the reason instead of failing
        the batch.

        Returns:
            ``(scored files, probabilities (scored, classes), [(file, reason), ...])``.
        """
        files = [Path(f) for f in files]
        try:
            return files, self.scorer.predict_files(files), []
        except AudioError:  # score every file that decodes; name the others
            good, bad = split_decodable(files)
            probs = self.scorer.predict_files(good) if good else np.zeros((0, len(self.labels)))
            return good, probs, bad

    def thresholds(self) -> np.ndarray | None:
        """The decision thresholds the run tuned on validation (multi-label), or None."""
        return self.run.threshold_array(self.labels) if self.task.multi_label else None

    def evaluate(self, data: PathLike | None = None, *, split: str | None = None,
                 checkpoint: str = "best") -> dict[str, Any]:
        """Score a split of the run's own data (default: test) or another manifest; see
        :func:`clipwise.infer.evaluate.evaluate_run`."""
        return evaluate_run(self.run.root, data=data, split=split, checkpoint=checkpoint)


def load(run: PathLike, *, checkpoint: str = "best") -> Model:
    """Load a finished run folder (a trained network, a classical baseline or an ensemble); a run's checkpoint
    file (``RUN/checkpoints/last.ckpt``) loads that checkpoint of the run.

    Raises:
        RunError: not a run folder or one of its checkpoints, or its model files are missing.
    """
    path = Path(run)
    if path.is_file():
        folder = RunFolder(path.parent.parent)
        if path.parent.name != folder.checkpoints_dir.name or path.stem not in ("best", "last"):
            raise RunError(f"{path} is not a checkpoint of a clipwise run folder (RUN/checkpoints/best.ckpt or "
                           "last.ckpt); pass the run folder")
        path, checkpoint = folder.root, path.stem
    folder = RunFolder.open(path)
    return Model(folder, load_run(folder.root, checkpoint=checkpoint))


def train(data: PathLike | None = None, *, model: str | None = None, out: PathLike | None = None,
          config: PathLike | Config | None = None, overrides: Sequence[str] | Mapping[str, Any] = (),
          resume: bool = False, callbacks: Sequence[Any] = (), overwrite: bool = False, **settings: Any) -> Model:
    """Train a model on a manifest and write its run folder; returns the trained :class:`Model`.

    Args:
        data: the manifest CSV (see `clipwise prepare`).
        model: a registered model, a timm backbone or a classical baseline (default: audiocnn).
        out: the run folder (default ``runs/<data>-<model>-<time>``); with ``resume``, the run to continue.
        config: a YAML config file or a :class:`Config`.
        overrides: ``key=value`` settings.
        resume: continue the run in ``out`` from its last checkpoint, with its saved config.
        callbacks: Lightning callbacks added to clipwise's own (deep runs).
        overwrite: train into ``out`` even if it holds a run (which is moved aside, never deleted).
        **settings: ``epochs``, ``test_fold``, ``seed``, ``skip_bad``, ``allow_leakage`` or dotted config keys.

    Raises:
        ConfigError, ManifestError, AudioError, LeakageError: bad settings or data, or ``out`` holds a run.
    """
    base = None
    if resume:
        if out is None:
            raise ConfigError("resume needs the run folder to continue (out=...)")
        run = RunFolder.open(out)
        base = run.load_config_dict()
    cfg = make_config(data, model=model, config=config, overrides=overrides, base=base, **settings)
    return load(train_run(cfg, out=out, resume=resume, callbacks=callbacks, overwrite=overwrite))


def cv(data: PathLike | None = None, *, model: str | None = None, out: PathLike | None = None,
       folds: int | None = None, only: Sequence[int] | None = None, config: PathLike | Config | None = None,
       overrides: Sequence[str] | Mapping[str, Any] = (), **settings: Any) -> Path:
    """Cross-validate: one run per fold (the manifest's folds, or ``folds`` grouped stratified ones), a report
    with mean, std and a 95 % interval; re-running with the same ``out`` keeps finished folds. Returns the CV
    folder."""
    cfg = make_config(data, model=model, config=config, overrides=overrides, **settings)
    return cross_validate(cfg, out=out, folds=folds, only=list(only) if only else None)
