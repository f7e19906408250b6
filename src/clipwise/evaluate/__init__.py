"""Metrics on arrays (:mod:`clipwise.evaluate.metrics`) and run-folder reports (:mod:`.report`).

The report functions are imported on first use, so code that only needs metrics (the training loop)
does not pay for importing matplotlib.
"""

from __future__ import annotations

from typing import Any

from clipwise.evaluate.metrics import (
    classification_metrics,
    confusion,
    majority_baseline,
    per_class_report,
    top_confusions,
)

_REPORT = ("plot_confusion", "plot_curves", "write_report")

__all__ = [
    "classification_metrics",
    "confusion",
    "majority_baseline",
    "per_class_report",
    "plot_confusion",
    "plot_curves",
    "top_confusions",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _REPORT:
        from clipwise.evaluate import report

        return getattr(report, name)
    raise AttributeError(f"module 'clipwise.evaluate' has no attribute {name!r}")
