"""The bundle kind: an export bundle (:mod:`clipwise.bundle`) scores audio wherever a run does, through the
torch-free runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipwise.kinds.base import RunKind, register_kind
from clipwise.run import RunFolder
from clipwise.runtime import BundleScoring, load


@register_kind
class BundleKind(RunKind):
    name = "bundle"
    order = 3
    description = "an exported model (ONNX), scored by the torch-free runtime"
    cannot_export = "it is already a bundle; copy the folder to ship it"

    def load(self, run: RunFolder, *, checkpoint: str = "best", **options: Any) -> BundleScoring:
        return load(run.root, threads=options.get("threads"), int8=bool(options.get("int8")))

    def bundle(self, run: RunFolder, dest: Path) -> bool:
        return False  # an ensemble references it where it is
