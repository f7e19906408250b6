"""The deep kind: a network (frontend + backbone + head) trained with Lightning (:mod:`clipwise.training.fit`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipwise.config import Config
from clipwise.errors import ConfigError, RunError
from clipwise.infer.predictor import Predictor
from clipwise.kinds.base import RunKind, register_kind
from clipwise.models.classifier import AudioClassifier
from clipwise.models.registry import is_known_model, list_models
from clipwise.run import RunFolder
from clipwise.training import fit

CHECKPOINTS = ("best", "last")


@register_kind
class DeepKind(RunKind):
    name = "deep"
    description = "a network trained on spectrograms (built-in families or any timm backbone)"

    def trains(self, model_name: str) -> bool:
        return is_known_model(model_name)

    def models(self) -> list[tuple[str, str, str]]:
        return [(e.name, e.family, e.description) for e in list_models()]

    def train(self, config: Config, *, out: str | os.PathLike | None = None, resume: bool = False,
              callbacks: Sequence[Any] = ()) -> Path:
        return fit.train(config, out=out, resume=resume, callbacks=callbacks)

    def load(self, run: RunFolder, *, checkpoint: str = "best", **options: Any) -> Predictor:
        if checkpoint not in CHECKPOINTS:
            raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
        info = run.info()
        if info.get("bundled"):  # an ensemble's copy of a member: the best weights alone
            path = run.weights_path
        else:
            path = run.best_checkpoint if checkpoint == "best" else run.last_checkpoint
        if not path.is_file():
            raise RunError(f"no checkpoint at {path}: the run has not finished an epoch, or its files were moved; "
                           f"re-run `clipwise train --out {run.root}`")
        options.setdefault("hop_fraction", float(run.load_config_dict()["data"]["eval_hop_fraction"]))
        return Predictor.from_checkpoint(path, **options)

    def export(self, run: RunFolder, out: Path, *, overwrite: bool = False, **options: Any) -> Path:
        from clipwise.export import export_deep  # onnx and onnxscript load only when a user exports

        return export_deep(run, out, overwrite=overwrite, **options)

    def bundle(self, run: RunFolder, dest: Path) -> bool:
        if not run.best_checkpoint.is_file():
            return False
        copy = RunFolder(dest)
        copy.root.mkdir(parents=True, exist_ok=True)
        copy.write_info(kind=self.name, task=run.task, bundled=True)
        copy.save_config_yaml(run.load_config_dict())
        copy.save_labels(run.load_labels())
        if run.thresholds_path.is_file():
            shutil.copy2(run.thresholds_path, copy.thresholds_path)
        AudioClassifier.load(run.best_checkpoint).save(copy.weights_path)
        return True
