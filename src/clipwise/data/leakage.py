"""The leakage guard of ``train`` and ``cv``: the split a run is about to use is checked before any training.

``clipwise check`` looks at a manifest as written; this looks at the split a run actually uses (after
validation and test are assigned) and refuses one whose training and test data share audio (exact or near
duplicates) or a group (a recording, a speaker), unless the user says the protocol intends it
(``--allow-leakage``). What it found is saved in the run folder and stated at the top of the report. The file
scan is ``check``'s, cached per file, so a re-run or another fold costs only the comparison.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from clipwise.data.check import Finding, check_manifest
from clipwise.errors import LeakageError

__all__ = ["check_split_leakage", "leakage_summary"]

_COLUMNS = ("path", "label", "split", "group", "start", "end")


def _short(finding: Finding) -> dict[str, Any]:
    return {"kind": finding.kind, "severity": finding.severity, "message": finding.message,
            "files": finding.files}


def check_split_leakage(df: pd.DataFrame, *, allow: bool, progress: bool = False) -> dict[str, Any]:
    """Check a split manifest (``split`` = train / val / test) for shared audio and groups.

    Args:
        df: the manifest with its assigned splits.
        allow: go on when training and test data share something (the findings are still returned).
        progress: show a progress bar while files are read for the first time.

    Returns:
        ``{"checked": True, "allowed": allow, "train_test": [...], "train_val": [...], "warnings": [...]}``,
        each list holding findings as dicts (kind, severity, message, files).

    Raises:
        LeakageError: training and test data share audio or a group and ``allow`` is false.
    """
    report = check_manifest(df[[c for c in _COLUMNS if c in df]], side="split", progress=progress)
    test = report.leaks(between=("train", "test"))
    if test and not allow:
        listed = "\n".join(f"  - {f.message}" for f in test)
        raise LeakageError(
            "training and test data share audio or sources, so the test score would measure recall of what the "
            f"model heard rather than generalisation:\n{listed}\n"
            "Fix the split (give related clips one group, or drop the copies; `clipwise check MANIFEST` lists "
            "every file), or, if the protocol intends it (FSDD's official split puts every speaker on both "
            "sides), pass --allow-leakage (config data.allow_leakage=true): the run's report then says so at "
            "the top, with these findings."
        )
    return {
        "checked": True,
        "allowed": allow,
        "train_test": [_short(f) for f in test],
        "train_val": [_short(f) for f in report.leaks(between=("train", "val"))],
        "warnings": [_short(f) for f in report.findings if f.kind == "group_label_conflict"],
    }


def leakage_summary(found: dict[str, Any]) -> dict[str, Any]:
    """The compact form kept in summary.json: counts of findings by kind for each pair of sides."""
    if not found.get("checked"):
        return {"checked": False}
    return {"checked": True, "allowed": found["allowed"],
            **{k: dict(Counter(f["kind"] for f in found[k])) for k in ("train_test", "train_val", "warnings")}}
