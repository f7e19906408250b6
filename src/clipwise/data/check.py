"""`clipwise check`: what is wrong with a manifest before anything is trained on it.

Reads every file once and reports: unreadable files; durations, sample rates and channels; class counts and
the imbalance ratio; groups that sit on more than one side (split or fold); exact duplicate audio (a hash of the
decoded samples) and near-duplicate audio (a robust coarse log-mel fingerprint, see ``_fingerprint``) across
sides. A group whose clips carry different labels on different sides is reported as a likely metadata error
rather than a leak. Fingerprints are cached on disk, keyed by the files' paths, sizes and modification times, so
a re-run costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipwise._cache import cache_dir
from clipwise.data._fingerprint import FINGERPRINT_RATE_HZ, Fingerprint, bit_error_rate, fingerprint
from clipwise.data.audio import audio_info, is_silent, load_audio
from clipwise.data.manifest import parse_labels, segment_seconds
from clipwise.errors import AudioError

__all__ = ["CheckReport", "Finding", "check_manifest", "side_column"]

#: a pair of prints whose bits differ less often than this is a near duplicate (unrelated audio: about 0.5)
NEAR_DUPLICATE_BER = 0.25
#: between the two bit error rates, a pair is a near duplicate when its waveforms, at their best alignment,
#: correlate at least this well (two different recordings of one kind of sound stay far below it; the
#: same speaker saying the same digit twice prints at about 0.30 with the bits, so the bits alone cannot tell)
MAYBE_DUPLICATE_BER = 0.32
NEAR_DUPLICATE_CORRELATION = 0.5
#: candidates per clip from the other sides, taken by similarity of the band summaries before the bit test
CANDIDATES = 8
_CACHE_VERSION = 2
_LISTED = 10
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
        listed = "; ".join(it["what"] for it in items[:_LISTED]) + (" ..." if len(items) > _LISTED else "")
        return Finding(
            self.kind, self.severity, f"{len(items)} {noun} shared by {a} and {b}: {listed}",
            files=_files(p for it in items for p in it["files"]),
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
            lines.extend(f"    {p}" for p in f.files[:_LISTED])
            if len(f.files) > _LISTED:
                lines.append(f"    ... and {len(f.files) - _LISTED} more")
        return "\n".join(lines)


def side_column(df: pd.DataFrame) -> str | None:
    """The column that divides a manifest into sides: ``split`` if present, else ``fold``, else none."""
    return "split" if "split" in df else "fold" if "fold" in df else None


def _row_key(row: dict) -> tuple:
    return (row["path"], *segment_seconds(row))


def _file_key(key: tuple) -> str:
    """Cache key of one (path, start, end): changes when the file's size or modification time does."""
    path, start, end = key
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None
    return hashlib.sha1(repr((_CACHE_VERSION, os.path.abspath(path), start, end, stamp)).encode()).hexdigest()


def _read_shard(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # noqa: BLE001 - a missing or damaged shard is rebuilt
        return {}


def _write_shard(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(entries, f)
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs time


def _scan_one(key: tuple) -> dict[str, Any]:
    path, start, end = key
    try:
        info = audio_info(path)
        x = load_audio(path, sample_rate=info.sample_rate, start_seconds=start, end_seconds=end)
    except AudioError as e:
        return {"error": str(e)}
    return {"sample_rate": info.sample_rate, "channels": info.channels, "duration": len(x) / info.sample_rate,
            "silent": is_silent(x), "print": fingerprint(x, info.sample_rate)}


def _scan(row_keys: list[tuple], *, progress: bool) -> dict[tuple, dict[str, Any]]:
    """Header facts and fingerprints of every distinct (path, start, end).

    Each file's entry is cached on disk (256 shards by key hash), so any manifest that lists a file again
    (another split of it, a subset, the folds of a cross-validation) reuses it. Unreadable files are not
    cached: the fix a user makes must be seen on the next run.
    """
    keys = list(dict.fromkeys(row_keys))
    fkeys = {k: _file_key(k) for k in keys}
    by_shard: dict[str, list[tuple]] = defaultdict(list)
    for k, fk in fkeys.items():
        by_shard[fk[:2]].append(k)
    root = cache_dir("check")
    out: dict[tuple, dict[str, Any]] = {}
    todo: list[tuple] = []
    shards: dict[str, dict[str, dict[str, Any]]] = {}
    for shard, ks in by_shard.items():
        entries = shards[shard] = _read_shard(root / f"{shard}.pkl")
        for k in ks:
            if fkeys[k] in entries:
                out[k] = entries[fkeys[k]]
            else:
                todo.append(k)
    it = todo
    if progress and len(todo) > 200:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc="checking audio", unit="clip", leave=False)
    changed = set()
    for k in it:
        out[k] = _scan_one(k)
        if "error" not in out[k]:
            shards[fkeys[k][:2]][fkeys[k]] = out[k]
            changed.add(fkeys[k][:2])
    for shard in changed:
        # merge with what another process may have written meanwhile
        _write_shard(root / f"{shard}.pkl", {**_read_shard(root / f"{shard}.pkl"), **shards[shard]})
    return out


def _files(paths) -> list[str]:
    return sorted(dict.fromkeys(str(p) for p in paths))


def _group_findings(df: pd.DataFrame, side: str) -> list[Finding]:
    out = []
    leaks, conflicts = [], []
    for group, part in df.groupby(df["group"].astype(str), sort=True):
        sides = sorted(part[side].astype(str).unique())
        if len(sides) < 2:
            continue
        labels = {s: {lab for v in part.loc[part[side].astype(str) == s, "label"] for lab in parse_labels(v)}
                  for s in sides}
        shared = set.intersection(*labels.values())
        (leaks if shared else conflicts).append((group, sides, part, labels))
    if leaks:
        pairs = Counter(tuple(s) for _, s, _, _ in leaks)
        out.append(Finding(
            "group_leak", "error",
            f"{len(leaks)} group(s) have clips on more than one side ({side}): "
            + ", ".join(f"{g} ({'/'.join(s)})" for g, s, _, _ in leaks[:_LISTED])
            + (" ..." if len(leaks) > _LISTED else "")
            + ". A model scored on one side has heard the same source on another; split by group "
              "(clipwise does so when it assigns splits) unless the protocol intends this.",
            files=_files(p for _, _, part, _ in leaks for p in part["path"]),
            details={"groups": [g for g, _, _, _ in leaks], "sides": sorted({x for _, s, _, _ in leaks for x in s}),
                     "side_pairs": {"/".join(k): v for k, v in pairs.items()},
                     "items": [{"what": str(g), "sides": s, "files": _files(part["path"])} for g, s, part, _ in leaks]},
        ))
    if conflicts:
        out.append(Finding(
            "group_label_conflict", "warning",
            f"{len(conflicts)} group(s) sit on more than one side ({side}) with different labels on each: "
            + ", ".join(f"{g} ({'; '.join(f'{s}: {sorted(v)}' for s, v in lab.items())})"
                        for g, _, _, lab in conflicts[:_LISTED])
            + ". More likely a metadata error (a reused group id) than a leak: check the group column.",
            files=_files(p for _, _, part, _ in conflicts for p in part["path"]),
            details={"groups": [g for g, _, _, _ in conflicts],
                     "sides": sorted({x for _, s, _, _ in conflicts for x in s})},
        ))
    return out


def _waveform_correlation(a: tuple, b: tuple) -> float:
    """Peak normalised cross-correlation of two rows' audio at 8 kHz (1.0: the same waveform at some shift)."""
    from scipy.signal import correlate

    x, y = (load_audio(path, sample_rate=FINGERPRINT_RATE_HZ, start_seconds=start, end_seconds=end).astype(np.float64)
            for path, start, end in (a, b))
    denom = np.sqrt((x**2).sum() * (y**2).sum())
    return float(np.abs(correlate(x, y, mode="full", method="fft")).max() / denom) if denom > 0 else 0.0


def _duplicate_findings(df: pd.DataFrame, keys: list[tuple], scans: dict, side: str | None) -> list[Finding]:
    prints: list[Fingerprint | None] = [
        None if "error" in scans[k] or scans[k]["silent"] else scans[k]["print"] for k in keys
    ]
    sides = df[side].astype(str).to_numpy() if side else np.full(len(df), "all")
    paths = df["path"].astype(str).to_numpy()
    findings = []
    # exact: the same decoded samples under another row (silent clips are all alike and left out)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, fp in enumerate(prints):
        if fp is not None:
            by_hash[fp.sha1].append(i)
    exact_pairs = set()
    across, within = [], []
    for rows in by_hash.values():
        unique_keys = {keys[i] for i in rows}
        if len(unique_keys) < 2:
            continue
        exact_pairs.update((a, b) for a in rows for b in rows if a < b)
        (across if len({sides[i] for i in rows}) > 1 else within).append(rows)
    if across:
        findings.append(Finding(
            "exact_duplicate", "error",
            f"{len(across)} set(s) of identical audio span more than one side"
            + (f" ({side})" if side else "") + ": "
            + "; ".join(" = ".join(f"{paths[i]} [{sides[i]}]" for i in rows) for rows in across[:_LISTED])
            + ". Remove the copies or put them on one side.",
            files=_files(paths[i] for rows in across for i in rows),
            details={"sets": [[paths[i] for i in rows] for rows in across],
                     "sides": sorted({sides[i] for rows in across for i in rows}),
                     "items": [{"what": " = ".join(paths[i] for i in rows), "sides": sorted({sides[i] for i in rows}),
                                "files": _files(paths[i] for i in rows)} for rows in across]},
        ))
    if within:
        findings.append(Finding(
            "duplicate_within", "warning",
            f"{len(within)} set(s) of identical audio within one side: the copies count twice in training or "
            "scoring.",
            files=_files(paths[i] for rows in within for i in rows),
            details={"sets": [[paths[i] for i in rows] for rows in within]},
        ))
    if side is None:
        return findings
    # near: candidates by band-summary similarity on the other sides, confirmed by the robust bits
    ok = np.array([fp is not None for fp in prints])
    idx = np.flatnonzero(ok)
    if len(idx) < 2:
        return findings
    summ = np.stack([prints[i].summary for i in idx]).astype(np.float64)
    summ = (summ - summ.mean(0)) / (summ.std(0) + 1e-6)
    summ /= np.linalg.norm(summ, axis=1, keepdims=True) + 1e-12
    side_idx = sides[idx]
    near = []
    checked = set()
    k = min(CANDIDATES, len(idx) - 1)
    for lo in range(0, len(idx), 1024):  # blocks keep memory at 1024 x N whatever the manifest's size
        sim = summ[lo : lo + 1024] @ summ.T
        sim[side_idx[lo : lo + 1024, None] == side_idx[None, :]] = -np.inf  # only pairs across sides
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        for r, cands in enumerate(top):
            for b in cands:
                if not np.isfinite(sim[r, b]):
                    continue
                i, j = sorted((int(idx[lo + r]), int(idx[b])))
                if (i, j) in checked or (i, j) in exact_pairs or keys[i] == keys[j]:
                    continue
                checked.add((i, j))
                ber = bit_error_rate(prints[i], prints[j])
                if ber < NEAR_DUPLICATE_BER or (
                    ber < MAYBE_DUPLICATE_BER and _waveform_correlation(keys[i], keys[j]) >= NEAR_DUPLICATE_CORRELATION
                ):
                    near.append((i, j, ber))
    if near:
        near.sort(key=lambda t: t[2])
        findings.append(Finding(
            "near_duplicate", "error",
            f"{len(near)} pair(s) of near-identical audio (the same sound re-encoded, at another gain or shifted) "
            f"span more than one side ({side}): "
            + "; ".join(f"{paths[i]} [{sides[i]}] ~ {paths[j]} [{sides[j]}] (bit error {ber:.2f})"
                        for i, j, ber in near[:_LISTED])
            + ". Put each pair on one side (give them one group) or drop a copy.",
            files=_files(p for i, j, _ in near for p in (paths[i], paths[j])),
            details={"pairs": [[paths[i], paths[j], round(ber, 4)] for i, j, ber in near],
                     "sides": sorted({sides[x] for i, j, _ in near for x in (i, j)}),
                     "items": [{"what": f"{paths[i]} ~ {paths[j]} (bit error {ber:.2f})",
                                "sides": sorted({sides[i], sides[j]}), "files": [paths[i], paths[j]]}
                               for i, j, ber in near]},
        ))
    return findings


def check_manifest(df: pd.DataFrame, *, side: str | None = "auto", progress: bool = False) -> CheckReport:
    """Check a manifest (as :func:`~clipwise.data.manifest.read_manifest` returns it) for unreadable files,
    imbalance, group leakage and duplicate audio across sides.

    Args:
        df: the manifest; ``path`` and ``label`` columns, optional ``split`` / ``fold`` / ``group``.
        side: the column whose values are the sides compared for leakage; ``auto``: ``split``, else ``fold``.
        progress: show a progress bar while files are read.

    Returns:
        A :class:`CheckReport`.
    """
    if side == "auto":
        side = side_column(df)
    rows = df.to_dict("records")
    keys = [_row_key(r) for r in rows]
    scans = _scan(keys, progress=progress)
    findings: list[Finding] = []
    bad = [(r["path"], scans[k]["error"]) for r, k in zip(rows, keys) if "error" in scans[k]]
    if bad:
        findings.append(Finding(
            "unreadable", "error",
            f"{len(bad)} row(s) point to missing or unreadable audio: " + "; ".join(e for _, e in bad[:3])
            + ". Fix or remove them (train with --skip-bad to skip them).",
            files=_files(p for p, _ in bad),
        ))
    good = [scans[k] for k in dict.fromkeys(keys) if "error" not in scans[k]]
    labels = Counter(lab for v in df["label"] for lab in parse_labels(v))
    durations = np.array([g["duration"] for g in good])
    summary: dict[str, Any] = {
        "classes": len(labels),
        "class_counts": dict(sorted(labels.items())),
        "class_count_min": min(labels.values()) if labels else 0,
        "class_count_max": max(labels.values()) if labels else 0,
        "imbalance_ratio": (max(labels.values()) / min(labels.values())) if labels else 0.0,
        "side_counts": {str(k): int(v) for k, v in df[side].astype(str).value_counts().sort_index().items()}
        if side else {},
        "sample_rates": {str(k): v for k, v in sorted(Counter(g["sample_rate"] for g in good).items())},
        "channels": {str(k): v for k, v in sorted(Counter(g["channels"] for g in good).items())},
        "silent_clips": int(sum(g["silent"] for g in good)),
        "unreadable": len(bad),
    }
    if len(durations):
        summary["duration_seconds"] = {"min": float(durations.min()), "median": float(np.median(durations)),
                                       "max": float(durations.max()), "total": float(durations.sum())}
    if side and "group" in df:
        findings.extend(_group_findings(df, side))
    findings.extend(_duplicate_findings(df, keys, scans, side))
    return CheckReport(len(df), side, summary, findings)
