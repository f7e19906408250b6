"""clipwise: from a folder of labelled audio to a trained, honestly evaluated and deployable sound classifier.

The public API, imported on first use (so ``import clipwise`` and its light submodules load no torch)::

    import clipwise

    model = clipwise.train("manifest.csv", out="runs/a", epochs=20)   # -> clipwise.Model
    model.predict(["clip.wav"], top_k=3)
    clipwise.load("runs/a").evaluate()
    clipwise.cv("manifest.csv", out="runs/a-cv")

Everything not listed in ``__all__`` is internal and may change.
"""

from __future__ import annotations

import importlib
from typing import Any

from clipwise._version import __version__

# name -> the module that defines it
_API = {
    "train": "clipwise.api",
    "cv": "clipwise.api",
    "load": "clipwise.api",
    "make_config": "clipwise.api",
    "Model": "clipwise.api",
    "Config": "clipwise.config",
    "load_config": "clipwise.config",
    "read_manifest": "clipwise.data.manifest",
    "write_manifest": "clipwise.data.manifest",
    "prepare": "clipwise.data.recipes",
    "Task": "clipwise.task",
    "ClipwiseError": "clipwise.errors",
    "ConfigError": "clipwise.errors",
    "ManifestError": "clipwise.errors",
    "AudioError": "clipwise.errors",
    "RunError": "clipwise.errors",
    "LeakageError": "clipwise.errors",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'clipwise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
