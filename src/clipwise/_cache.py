"""Where clipwise caches what it can recompute (file fingerprints, summary features)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """``$CLIPWISE_CACHE/<kind>``, else ``$XDG_CACHE_HOME/clipwise/<kind>`` (``~/.cache/clipwise/<kind>``)."""
    root = os.environ.get("CLIPWISE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipwise"
    return Path(root) / kind
