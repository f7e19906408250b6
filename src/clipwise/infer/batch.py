"""Batch jobs: score every row of a manifest (or every file under a folder) into a CSV or Parquet file.

Rows are read in chunks, decoded (and resampled) in worker processes and scored in batches in this process; each
finished batch is written at once, so an interrupted job loses at most the batches in flight and ``resume`` scores
only the rows the output does not hold yet. Unreadable files are listed in ``<out stem>.errors.csv`` and skipped.
This module imports no torch: the decoding workers import it and nothing more.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clipwise.data.audio import load_audio
from clipwise.data.manifest import parse_segments, resolve_paths
from clipwise.errors import AudioError, ConfigError, ManifestError
from clipwise.infer._batch_files import CsvOut, ErrorsOut, ParquetOut, errors_path, refuse_existing, row_keys

if TYPE_CHECKING:
    import pyarrow as pa

    from clipwise.infer.scoring import Scoring
    from clipwise.task import Task

__all__ = ["BATCH_SIZE", "Outputs", "Source", "BatchResult", "open_source", "decode_rows", "default_jobs",
           "errors_path", "run_batch"]

#: clips per scoring call (and per written batch: what an interruption can lose)
BATCH_SIZE = 64
_CHUNK_ROWS = 64 * BATCH_SIZE  # manifest rows read at a time
_IN_FLIGHT = 3  # batches decoded ahead of the one being scored: bounds the decoded clips held in memory
_CARRIED = ("path", "start", "end", "id")  # the manifest columns a job reads and writes back


def default_jobs() -> int:
    """Decoding processes when ``--jobs`` is not given: the usable cores less one for scoring, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


# -- what is scored ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """The rows of a job: ``columns`` (``path`` as given, then ``start`` / ``end`` / ``id`` where the manifest has
    them), about ``total`` rows, read by :meth:`chunks` as frames that also hold ``file`` (the absolute path)."""

    name: str
    columns: tuple[str, ...]
    total: int
    read: Callable[[], Iterator[pd.DataFrame]] = field(repr=False)

    def chunks(self) -> Iterator[pd.DataFrame]:
        return self.read()


def open_source(path: str | os.PathLike, *, chunk_rows: int = _CHUNK_ROWS) -> Source:
    """The rows of a manifest CSV (a ``path`` column; optional ``start`` / ``end`` seconds and ``id``; relative
    paths are relative to the manifest's folder), or of every audio file under a folder.

    Raises:
        ManifestError: the manifest is missing, unparsable, has no ``path`` column or bad cells (by line).
        AudioError: a folder holds no audio.
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        from clipwise.infer.predictor import find_audio  # torch: only the scoring process gets here

        files = [str(f) for f in find_audio([path])]
        return Source(str(path), ("path",), len(files), lambda: (
            pd.DataFrame({"path": files[i:i + chunk_rows], "file": files[i:i + chunk_rows]})
            for i in range(0, len(files), chunk_rows)))
    if not path.is_file():
        raise ManifestError(f"--manifest {path} not found; give a manifest CSV with a 'path' column, or a folder")
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
    except pd.errors.EmptyDataError:
        raise ManifestError(f"manifest {path} is empty; it needs a header row such as 'path,start,end'") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot parse manifest {path} as CSV: {err}") from None
    if "path" not in [c.strip() for c in header]:
        raise ManifestError(f"manifest {path} has no 'path' column (columns found: {', '.join(map(repr, header))}); "
                            "name the column of audio file paths 'path'")
    columns = tuple(c for c in _CARRIED if c in [h.strip() for h in header])
    return Source(str(path), columns, _count_rows(path), lambda: _manifest_chunks(path, header, chunk_rows))


def _count_rows(path: Path) -> int:
    """Data lines in a CSV, counted in raw blocks (no parsing): the progress bar's total."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(0, lines + (last != b"\n") - 1)


def _manifest_chunks(path: Path, header: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    keep = [c for c in header if c.strip() in _CARRIED]
    # every cell as written (ids such as "007" stay text; empty start/end cells mean the file's start/end), and
    # blank lines kept so that the line numbers in messages are the file's
    reader = pd.read_csv(path, usecols=keep, dtype=str, keep_default_na=False, skip_blank_lines=False,
                         encoding="utf-8-sig", chunksize=chunk_rows)
    line = 2  # the header is line 1
    try:
        for chunk in reader:
            chunk = chunk.rename(columns=str.strip)
            lines = np.arange(len(chunk)) + line
            line += len(chunk)
            chunk = chunk.apply(lambda col: col.str.strip())
            blank = chunk.eq("").all(axis=1).to_numpy()
            chunk, lines = chunk.loc[~blank].reset_index(drop=True), lines[~blank]
            empty = chunk["path"].eq("").to_numpy()
            if empty.any():
                raise ManifestError(f"manifest {path}: column 'path' is empty on line {lines[empty][0]}; fill it in "
                                    "or remove the row")
            parse_segments(chunk, path=path, lines=lines)
            chunk["file"] = resolve_paths(chunk["path"], manifest=path)
            yield chunk
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot parse manifest {path} as CSV near line {line}: {err}") from None


# -- decoding ----------------------------------------------------------------------------------------------------
def _decode_one(task: tuple[str, float | None, float | None, int]) -> tuple[np.ndarray | None, str | None]:
    file, start, end, sample_rate = task
    try:
        return load_audio(file, sample_rate=sample_rate, start_seconds=start, end_seconds=end), None
    except OSError as err:  # AudioError and what the file system says: the row is listed, the job goes on
        return None, str(err)


def _tasks(rows: pd.DataFrame, sample_rate: int) -> list[tuple]:
    return [(f, s, e, int(sample_rate)) for f, (_, s, e) in zip(rows["file"], row_keys(rows))]


def decode_rows(rows: pd.DataFrame, *, sample_rate: int) -> list[tuple[np.ndarray | None, str | None]]:
    """``(wave, None)`` for each row that decodes (mono float32 at ``sample_rate``), else ``(None, reason)``."""
    return [_decode_one(t) for t in _tasks(rows, sample_rate)]


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group: the main process alone stops the job, so the workers ignore it
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Decoder:
    """Decodes batches of rows ahead of scoring: in ``jobs`` spawned processes (they import no torch, and a
    crashed one fails the job instead of hanging it), or in this process for ``jobs == 1``."""

    def __init__(self, *, jobs: int, sample_rate: int):
        self.jobs, self.sample_rate, self.pool = jobs, sample_rate, None
        if jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_ignore_interrupts)

    def submit(self, rows: pd.DataFrame) -> Callable[[], list]:
        tasks = _tasks(rows, self.sample_rate)
        if self.pool is None:
            return lambda: [_decode_one(t) for t in tasks]
        results = self.pool.map(_decode_one, tasks, chunksize=max(1, -(-len(tasks) // self.jobs)))

        def get() -> list:
            from concurrent.futures.process import BrokenProcessPool

            try:
                return list(results)
            except BrokenProcessPool:
                raise AudioError(f"a decoding process died while decoding {tasks[0][0]} ... {tasks[-1][0]}; the "
                                 "batches before are kept: run the same command with --resume") from None

        return get

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


# -- what is written ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outputs:
    """The result columns: the ``top_k`` labels and probabilities of each row and, for a multi-label ``task``,
    ``tags`` (the labels at or above ``thresholds``, ``;``-joined)."""

    top_k: int
    task: Task
    thresholds: np.ndarray | None = None

    def columns(self, carried: Sequence[str], n_labels: int, *, error: bool = False) -> list[str]:
        k = min(self.top_k, n_labels)
        return [*carried, *(c for i in range(1, k + 1) for c in (f"label_{i}", f"prob_{i}")),
                *(["tags"] if self.task.multi_label else []), *(["error"] if error else [])]

    def schema(self, carried: Sequence[str], n_labels: int, *, error: bool = False) -> pa.Schema:
        """The Arrow schema of :meth:`columns`: every part of a job's output has the same one."""
        import pyarrow as pa

        numeric = {"start", "end"} | {f"prob_{i}" for i in range(1, n_labels + 1)}
        return pa.schema([(c, pa.float64() if c in numeric else pa.string())
                          for c in self.columns(carried, n_labels, error=error)])

    def frame(self, rows: pd.DataFrame, probs: np.ndarray, *, scorer: Scoring, carried: Sequence[str],
              reasons: Sequence[str | None] | None = None) -> pd.DataFrame:
        """The result rows of ``rows`` (their ``carried`` columns) scored ``probs``; with ``reasons``, ``probs``
        holds the rows whose reason is None, and the others get an ``error`` and no labels."""
        ok = np.array([r is None for r in reasons], dtype=bool) if reasons is not None else np.ones(len(rows), bool)
        k = min(self.top_k, len(scorer.labels))
        top = scorer.top_k(probs, k=k) if len(probs) else []
        out: dict[str, Any] = {c: rows[c].to_numpy() for c in carried}
        for i in range(k):
            labels, values = np.full(len(rows), None, dtype=object), np.full(len(rows), np.nan)
            labels[ok], values[ok] = [t[i][0] for t in top], [t[i][1] for t in top]
            out[f"label_{i + 1}"], out[f"prob_{i + 1}"] = labels, values
        if self.task.multi_label:
            tags = np.full(len(rows), None, dtype=object)
            tags[ok] = [";".join(d) for d in self.task.decide(probs, scorer.labels, self.thresholds)] if len(probs) \
                else []
            out["tags"] = tags
        if reasons is not None:
            out["error"] = list(reasons)
        return pd.DataFrame(out)


# -- the job -----------------------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    """What a job did: rows ``scored`` now, ``skipped`` (unreadable, listed in ``errors_file``), ``already`` done by
    an earlier run of the job, its wall ``seconds``, the first errors ``(path, reason)`` and the ``out`` path."""

    out: Path
    scored: int = 0
    skipped: int = 0
    already: int = 0
    seconds: float = 0.0
    errors_file: Path | None = None
    first_errors: list[tuple[str, str]] = field(default_factory=list)


def run_batch(scorer: Scoring, source: Source, *, out: str | os.PathLike, outputs: Outputs, jobs: int = 1,
              resume: bool = False, batch_size: int = BATCH_SIZE, progress: bool = True) -> BatchResult:
    """Score every row of ``source`` into ``out`` (``.csv`` or ``.parquet``), batch by batch.

    Args:
        scorer: scores decoded clips (``predict_signals`` at its ``sample_rate``).
        source: the rows, from :func:`open_source`.
        out: the results file; its rows are ``source.columns`` then :class:`Outputs`' columns.
        outputs: what each row holds.
        jobs: decoding processes (1: decode in this process).
        resume: keep the rows ``out`` holds and score the others (the unreadable ones are tried again).
        batch_size: clips per scoring call and per write.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`BatchResult`.

    Raises:
        ConfigError: ``out`` (or its unfinished parts, or its errors file) exists and not ``resume``; a bad
            ``out`` suffix, ``jobs`` or ``batch_size``; resuming an output with other columns.
        ManifestError: bad manifest cells (found when their chunk is read; the rows before are kept).
    """
    out = Path(out).expanduser().absolute()
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out} must end in .csv or .parquet (or use --engine ray, which writes a folder)")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    errors = errors_path(out)
    parquet = out.suffix.lower() == ".parquet"
    if not resume:
        refuse_existing([out, errors, *([out.with_name(f"{out.name}.parts")] if parquet else [])], out=out)
    columns = outputs.columns(source.columns, len(scorer.labels))
    writer = (ParquetOut(out, outputs.schema(source.columns, len(scorer.labels))) if parquet
              else CsvOut(out, columns, resume=resume))
    done = writer.done()
    errors.unlink(missing_ok=True)  # a resumed job tries its unreadable rows again
    result = BatchResult(out=out)
    failed = ErrorsOut(errors, [c for c in source.columns if c != "id"])
    t0 = time.perf_counter()
    decoder, finished = None, False
    from tqdm import tqdm

    bar = tqdm(total=max(0, source.total - len(done)), unit="clip", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    try:
        decoder = _Decoder(jobs=jobs, sample_rate=scorer.sample_rate)
        pending: deque = deque()
        for rows in _batches(source, done, batch_size, result):
            pending.append((rows, decoder.submit(rows)))
            if len(pending) > _IN_FLIGHT:
                _finish(*pending.popleft(), scorer=scorer, source=source, outputs=outputs, writer=writer,
                        failed=failed, result=result, bar=bar)
        while pending:
            _finish(*pending.popleft(), scorer=scorer, source=source, outputs=outputs, writer=writer,
                    failed=failed, result=result, bar=bar)
        finished = True
    except KeyboardInterrupt:
        print(f"\nthe finished batches are kept in {writer.parts if parquet else out}: run the same command with "
              "--resume to score the rest", file=sys.stderr)
        raise
    finally:
        bar.close()
        if decoder is not None:
            decoder.close()
        failed.close()
        writer.close(finished=finished)
    result.seconds = time.perf_counter() - t0
    result.skipped, result.first_errors = failed.count, failed.first
    result.errors_file = errors if failed.count else None
    return result


def _batches(source: Source, done: set[tuple], batch_size: int, result: BatchResult) -> Iterator[pd.DataFrame]:
    for chunk in source.chunks():
        if done:
            todo = np.array([k not in done for k in row_keys(chunk)], dtype=bool)
            result.already += int((~todo).sum())
            chunk = chunk.loc[todo].reset_index(drop=True)
        for i in range(0, len(chunk), batch_size):
            yield chunk.iloc[i:i + batch_size]


def _finish(rows: pd.DataFrame, decoded: Callable[[], list], *, scorer: Scoring, source: Source, outputs: Outputs,
            writer: CsvOut | ParquetOut, failed: ErrorsOut, result: BatchResult, bar) -> None:
    """Score a decoded batch and write it (its unreadable rows to the errors file)."""
    waves, reasons = zip(*decoded()) if len(rows) else ((), ())
    ok = np.array([r is None for r in reasons], dtype=bool)
    if not ok.all():
        failed.write(rows.loc[~ok], [r for r in reasons if r is not None])
    if ok.any():
        probs = scorer.predict_signals([w for w in waves if w is not None], sample_rate=scorer.sample_rate)
        writer.write(outputs.frame(rows.loc[ok], probs, scorer=scorer, carried=source.columns))
    result.scored += int(ok.sum())
    bar.update(len(rows))
