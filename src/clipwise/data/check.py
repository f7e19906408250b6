"""`clipwise check`: what is wrong with a manifest before anything is trained on it.

Reads every file once and reports: unreadable files; durations, sample rates and channels; class counts and
the imbalance ratio; groups that sit on more than one side (split or fold); exact duplicate audio (a hash of the
decoded samples) and near-duplicate audio (a robust coarse log-mel fingerprint, see ``_fingerprint``) across
sides. A group whose clips carry different labels on different sides is reported as a likely metadata error
rather than a leak. Fingerprints are cached on disk, keyed by the files' paths, sizes and modification times, so
a re-run costs nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pandas as pd

from clipwise._cache import ClipCache
from clipwise.data._fingerprint import FINGERPRINT_RATE_HZ, Fingerprint, bit_error_rate, fingerprint
from clipwise.data.audio import audio_info, declared_frames, is_silent, load_audio
from clipwise.data.findings import LISTED, CheckReport, Finding, files_of
from clipwise.data.manifest import parse_labels, segment_seconds
from clipwise.data.splits import split_warnings
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
_CACHE_VERSION = 4
#: a clip shorter than this holds less than one analysis window of the default frontend (25 ms)
SHORT_CLIP_SECONDS = 0.025
def side_column(df: pd.DataFrame) -> str | None:
    """The column that divides a manifest into sides: ``split`` if present, else ``fold``, else none."""
    return "split" if "split" in df else "fold" if "fold" in df else None


def _row_key(row: dict) -> tuple:
    return (row["path"], *segment_seconds(row))


def _to_arrays(entry: dict[str, Any]) -> dict[str, Any]:
    fp: Fingerprint = entry["print"]
    return {"sample_rate": entry["sample_rate"], "channels": entry["channels"], "duration": entry["duration"],
            "silent": entry["silent"], "sha1": fp.sha1, "words": fp.words, "active": fp.active,
            "summary": fp.summary, "frames": entry["frames"], "declared_frames": entry["declared_frames"],
            "peak": entry["peak"]}


def _from_arrays(a: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"sample_rate": int(a["sample_rate"]), "channels": int(a["channels"]), "duration": float(a["duration"]),
            "silent": bool(a["silent"]), "print": Fingerprint(str(a["sha1"]), a["words"], a["active"], a["summary"]),
            "frames": int(a["frames"]), "declared_frames": int(a["declared_frames"]), "peak": float(a["peak"])}


def _scan_one(key: tuple) -> dict[str, Any]:
    path, start, end = key
    try:
        info = audio_info(path)
        x = load_audio(path, sample_rate=info.sample_rate, start_seconds=start, end_seconds=end)
    except AudioError as e:
        return {"error": str(e)}
    declared = _declared_frames(path, info, start, end)
    return {"sample_rate": info.sample_rate, "channels": info.channels, "duration": len(x) / info.sample_rate,
            "silent": is_silent(x), "print": fingerprint(x, info.sample_rate), "frames": len(x),
            "declared_frames": declared, "peak": float(np.abs(x).max())}


def _declared_frames(path: str, info, start: float | None, end: float | None) -> int:
    """The frames the header promises for the segment [start, end) (the whole file without them)."""
    total = max(info.frames, declared_frames(path) or 0)
    first = 0 if start is None else int(round(start * info.sample_rate))
    stop = total if end is None else min(total, int(round(end * info.sample_rate)))
    return max(0, stop - first)


def _scan(row_keys: list[tuple], *, progress: bool) -> dict[tuple, dict[str, Any]]:
    """Header facts and fingerprints of every distinct (path, start, end).

    Each file's entry is cached on disk (:class:`clipwise._cache.ClipCache`), so any manifest that lists a file
    again (another split of it, a subset, the folds of a cross-validation) reuses it. Unreadable files are not
    cached: the fix a user makes must be seen on the next run.
    """
    cache = ClipCache("check", version=_CACHE_VERSION)
    out: dict[tuple, dict[str, Any]] = {}
    todo: list[tuple] = []
    for k in dict.fromkeys(row_keys):
        cached = cache.get(cache.key(*k))
        if cached is not None and {"sha1", "words", "active", "summary", "sample_rate", "peak"} <= set(cached):
            out[k] = _from_arrays(cached)
        else:
            todo.append(k)
    it = todo
    if progress and len(todo) > 200:
        from tqdm.auto import tqdm

        # the first file pays the decoders' warm-up: scan it before the bar starts, or its rate misleads
        out[todo[0]] = _scan_one(todo[0])
        if "error" not in out[todo[0]]:
            cache.put(cache.key(*todo[0]), _to_arrays(out[todo[0]]))
        todo = todo[1:]
        it = tqdm(todo, desc="checking audio", unit="clip", leave=False, initial=1, total=len(todo) + 1)
    for k in it:
        out[k] = _scan_one(k)
        if "error" not in out[k]:
            cache.put(cache.key(*k), _to_arrays(out[k]))
    return out


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
            + ", ".join(f"{g} ({'/'.join(s)})" for g, s, _, _ in leaks[:LISTED])
            + (" ..." if len(leaks) > LISTED else "")
            + ". A model scored on one side has heard the same source on another; split by group "
              "(clipwise does so when it assigns splits) unless the protocol intends this.",
            files=files_of(p for _, _, part, _ in leaks for p in part["path"]),
            details={"groups": [g for g, _, _, _ in leaks], "sides": sorted({x for _, s, _, _ in leaks for x in s}),
                     "side_pairs": {"/".join(k): v for k, v in pairs.items()},
                     "items": [{"what": str(g), "sides": s, "files": files_of(part["path"])} for g, s, part, _ in leaks]},
        ))
    if conflicts:
        out.append(Finding(
            "group_label_conflict", "warning",
            f"{len(conflicts)} group(s) sit on more than one side ({side}) with different labels on each: "
            + ", ".join(f"{g} ({'; '.join(f'{s}: {sorted(v)}' for s, v in lab.items())})"
                        for g, _, _, lab in conflicts[:LISTED])
            + ". More likely a metadata error (a reused group id) than a leak: check the group column.",
            files=files_of(p for _, _, part, _ in conflicts for p in part["path"]),
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
            + "; ".join(" = ".join(f"{paths[i]} [{sides[i]}]" for i in rows) for rows in across[:LISTED])
            + ". Remove the copies or put them on one side.",
            files=files_of(paths[i] for rows in across for i in rows),
            details={"sets": [[paths[i] for i in rows] for rows in across],
                     "sides": sorted({sides[i] for rows in across for i in rows}),
                     "items": [{"what": " = ".join(paths[i] for i in rows), "sides": sorted({sides[i] for i in rows}),
                                "files": files_of(paths[i] for i in rows)} for rows in across]},
        ))
    if within:
        findings.append(Finding(
            "duplicate_within", "warning",
            f"{len(within)} set(s) of identical audio within one side: the copies count twice in training or "
            "scoring.",
            files=files_of(paths[i] for rows in within for i in rows),
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
                        for i, j, ber in near[:LISTED])
            + ". Put each pair on one side (give them one group) or drop a copy.",
            files=files_of(p for i, j, _ in near for p in (paths[i], paths[j])),
            details={"pairs": [[paths[i], paths[j], round(ber, 4)] for i, j, ber in near],
                     "sides": sorted({sides[x] for i, j, _ in near for x in (i, j)}),
                     "items": [{"what": f"{paths[i]} ~ {paths[j]} (bit error {ber:.2f})",
                                "sides": sorted({sides[i], sides[j]}), "files": [paths[i], paths[j]]}
                               for i, j, ber in near]},
        ))
    return findings


def _clip_findings(rows: list[dict], keys: list[tuple], scans: dict, labels: Counter) -> list[Finding]:
    """Files shorter than their header says, clips too short to analyse, classes of a single clip."""
    out = []
    seen = {k: scans[k] for k in dict.fromkeys(keys) if "error" not in scans[k]}
    window_ms = f"{SHORT_CLIP_SECONDS * 1000:.0f} ms"
    tests = (  # kind, which clips, what the first one shows, what it means
        ("truncated", lambda s: s["frames"] < s["declared_frames"] - 1,
         lambda s: f"{s['frames']} of {s['declared_frames']}",
         "decode to fewer frames than their header declares: truncated or damaged, so part of the audio is "
         "missing. Re-export or re-download them"),
        ("too_short", lambda s: s["duration"] < SHORT_CLIP_SECONDS, lambda s: f"{s['frames']} sample(s)",
         f"are shorter than one {window_ms} analysis window: training pads them with silence, so they carry almost "
         "nothing to learn from. Check how they were cut"),
    )
    for kind, applies, shows, means in tests:
        hits = [(k[0], s) for k, s in seen.items() if applies(s)]
        if hits:
            out.append(Finding(kind, "warning", f"{len(hits)} file(s) {means} (e.g. {hits[0][0]}: "
                                                f"{shows(hits[0][1])}).", files=files_of(p for p, _ in hits)))
    single = sorted(lab for lab, n in labels.items() if n == 1)
    if single:
        example = {lab: r["path"] for r in rows for lab in parse_labels(r["label"]) if lab in single}
        out.append(Finding(
            "single_clip_class", "warning",
            f"{len(single)} class(es) have a single clip ({', '.join(single[:LISTED])}): a model cannot both learn "
            "and be tested on them. Add clips or drop those rows.", files=files_of(example.values())))
    return out


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
            files=files_of(p for p, _ in bad),
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
    summary["beyond_unit_clips"] = int(sum(g["peak"] > 1.0 for g in good))  # float files may hold > 1: legal
    findings.extend(_clip_findings(rows, keys, scans, labels))
    findings.extend(Finding("split", "warning", text[0].upper() + text[1:] + ".") for text in split_warnings(df))
    if side and "group" in df:
        findings.extend(_group_findings(df, side))
    findings.extend(_duplicate_findings(df, keys, scans, side))
    return CheckReport(len(df), side, summary, findings)
