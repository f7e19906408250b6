"""Multi-label data from single-label clips: mixtures of 2-3 clips of different classes.

A mixture's label is the ``;``-joined labels of its sources. Sources are mixed only within one side (split or
fold), so a mixture set inherits the leakage guarantees of the manifest it comes from. Each source is brought
to the same RMS level and then given a random gain, so no class is systematically masked by another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from clipwise.data.audio import load_audio
from clipwise.data.manifest import parse_labels, segment_seconds, write_manifest
from clipwise.errors import ConfigError, ManifestError

__all__ = ["make_mixtures"]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def make_mixtures(
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    n_per_side: int | dict[str, int],
    side: str | None = "auto",
    sources: Sequence[int] = (2, 3),
    sample_rate: int = 16000,
    seconds: float | None = None,
    gain_db: float = 6.0,
    seed: int = 0,
) -> Path:
    """Write mixtures of single-label clips and a manifest for them.

    Args:
        df: a single-label manifest (as :func:`~clipwise.data.manifest.read_manifest` returns it).
        out_dir: folder for ``audio/*.wav`` and ``manifest.csv``.
        n_per_side: mixtures per side value (an int for all, or a mapping side value -> count).
        side: column whose values are kept apart (``auto``: ``split``, else ``fold``, else none).
        sources: how many clips a mixture may have; each mixture draws one of these counts.
        sample_rate: rate of the written files.
        seconds: length of a mixture (default: the longest source; shorter ones are zero-padded at the end).
        gain_db: each source gets a random gain of +/- this many dB after RMS levelling.
        seed: makes the set reproducible.

    Returns:
        The manifest path: columns path, label (``;``-joined), group (one per mixture), ``side`` if any,
        and ``sources`` (the source paths, ``|``-joined).

    Raises:
        ManifestError: a row already has several labels, or a side has fewer distinct classes than a mixture
            needs.
    """
    if any(len(parse_labels(v)) != 1 for v in df["label"]):
        raise ManifestError("make_mixtures needs a single-label manifest (one label per row)")
    if not sources or min(sources) < 2:
        raise ConfigError(f"sources must list counts of at least 2, got {list(sources)}")
    if side == "auto":
        side = "split" if "split" in df else "fold" if "fold" in df else None
    out_dir = Path(out_dir).expanduser().absolute()
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    groups = df.groupby(df[side].astype(str)) if side else [("all", df)]
    rows = []
    for value, part in groups:
        n = n_per_side if isinstance(n_per_side, int) else int(n_per_side.get(value, 0))
        by_class = {lab: g.index.to_numpy() for lab, g in part.groupby("label")}
        classes = sorted(by_class)
        if len(classes) < max(sources):
            raise ManifestError(f"{side or 'the manifest'}={value} has {len(classes)} classes; mixtures of "
                                f"{max(sources)} need at least that many")
        for i in range(n):
            k = int(rng.choice(list(sources)))
            chosen = rng.choice(classes, size=k, replace=False)
            picks = [int(rng.choice(by_class[c])) for c in chosen]
            waves = []
            for r in picks:
                row = df.loc[r].to_dict()
                start, end = segment_seconds(row)
                x = load_audio(row["path"], sample_rate=sample_rate, start_seconds=start, end_seconds=end)
                level = _rms(x)
                waves.append(x / level * 10 ** (rng.uniform(-gain_db, gain_db) / 20) if level > 0 else x)
            length = int(round(seconds * sample_rate)) if seconds else max(len(w) for w in waves)
            mix = np.zeros(length, dtype=np.float64)
            for w in waves:
                mix[: min(length, len(w))] += w[:length]
            peak = np.max(np.abs(mix))
            mix = mix / peak * 0.9 if peak > 0 else mix
            name = f"mix_{value}_{i:05d}.wav"
            sf.write(out_dir / "audio" / name, mix.astype(np.float32), sample_rate, subtype="PCM_16")
            out = {"path": str(out_dir / "audio" / name), "label": ";".join(sorted(chosen)), "group": f"mix_{value}_{i:05d}",
                   "sources": "|".join(str(df.loc[r, "path"]) for r in picks)}
            if side:
                out[side] = part[side].iloc[0]
            rows.append(out)
    return write_manifest(pd.DataFrame(rows), out_dir / "manifest.csv")
