"""What ``clipwise check`` reports: findings (unreadable files, leaks between splits or folds, duplicates,
conflicting group labels) and the report that holds them, as text or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: files listed per finding (in messages and the text report)
LISTED = 10
_LEAK_NOUNS = {"group_leak": "group(s)", "exact_duplicate": "set(s) of identical audio",
               "near_duplicate": "pair(s) of near-identical audio"}


@dataclass
class Finding:
    """One problem: ``leak`` findings mean training and evaluation data share audio or a source."""

    kind: str  # unreadable | group_leak | exact_duplicate | near_duplicate | group_label_conflict | duplicate_within
    severity: str  # error | warning
    message: str
    files: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_leak(self) -> bool:
        return self.kind in ("group_leak", "exact_duplicate", "near_duplicate")

    def between(self, a: str, b: str) -> Finding | None:
        """This leak narrowed to the items (groups, duplicate sets, pairs) on both side ``a`` and side ``b``;
        None when there are none."""
        items = [it for it in self.details.get("items", []) if {str(a), str(b)} <= set(it["sides"])]
        if not items:
            return None
        noun = _LEAK_NOUNS[self.kind]
        listed = "; ".join(it["what"] for it in items[:LISTED]) + (" ..." if len(items) > LISTED else "")
        return Finding(
            self.kind, self.severity, f"{len(items)} {noun} shared by {a} and {b}: {listed}",
            files=files_of(p for it in items for p in it["files"]),
            details={"items": items, "sides": sorted({str(a), str(b)})},
        )


@dataclass
class CheckReport:
    """The result of :func:`check_manifest`."""

    n_rows: int
    side: str | None  # the column whose values are the sides (split or fold), None when there is neither
    summary: dict[str, Any]
    findings: list[Finding]

    def leaks(self, between: tuple[str, str] | None = None) -> list[Finding]:
        """Leak findings; with ``between``, each narrowed to what the two given sides share."""
        out = [f for f in self.findings if f.is_leak]
        if between is not None:
            out = [n for f in out if (n := f.between(*between)) is not None]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"n_rows": self.n_rows, "side": self.side, "summary": self.summary,
                "findings": [asdict(f) for f in self.findings]}

    def format(self) -> str:
        """Human-readable text."""
        s = self.summary
        lines = [f"{self.n_rows} rows, {s['classes']} classes" + (f", sides by {self.side!r}: "
                 + ", ".join(f"{k} {v}" for k, v in s["side_counts"].items()) if self.side else "")]
        d = s.get("duration_seconds")
        if d:
            lines.append(f"duration: min {d['min']:.3f} s, median {d['median']:.3f} s, max {d['max']:.3f} s, "
                         f"total {d['total'] / 3600:.2f} h")
        if s.get("sample_rates"):
            lines.append("sample rates: " + ", ".join(f"{k} Hz x{v}" for k, v in s["sample_rates"].items())
                         + "; channels: " + ", ".join(f"{k} x{v}" for k, v in s["channels"].items()))
        lines.append(f"class counts: min {s['class_count_min']}, max {s['class_count_max']}, imbalance ratio "
                     f"{s['imbalance_ratio']:.2f}" + (f"; silent clips: {s['silent_clips']}" if s.get("silent_clips")
                                                      else ""))
        if not self.findings:
            lines.append("no findings")
        for f in self.findings:
            lines.append(f"[{f.severity}] {f.message}")
            lines.extend(f"    {p}" for p in f.files[:LISTED])
            if len(f.files) > LISTED:
                lines.append(f"    ... and {len(f.files) - LISTED} more")
        return "\n".join(lines)


def files_of(paths) -> list[str]:
    """The distinct paths, sorted."""
    return sorted(dict.fromkeys(str(p) for p in paths))
