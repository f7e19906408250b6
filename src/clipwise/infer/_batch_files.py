"""The files a batch job (:mod:`clipwise.infer.batch`) writes, each safe to stop at any moment: the results as
CSV (appended and synced per batch) or Parquet (one part per batch, combined at the end), and the errors file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from clipwise._io import atomic_path
from clipwise.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

KEY = ("path", "start", "end")  # what identifies a row that is done
CHUNK_ROWS = 4096  # rows read back at a time
SHOWN_ERRORS = 10


def errors_path(out: Path) -> Path:
    """Where a job writing ``out`` lists its unreadable rows: ``<out stem>.errors.csv`` next to it."""
    return out.with_name(f"{out.stem}.errors.csv")


def row_keys(frame: pd.DataFrame) -> list[tuple]:
    """``(path, start, end)`` of each row, None where a segment bound is absent: what identifies a done row."""
    cols = [frame[c].tolist() if c in frame else [None] * len(frame) for c in KEY]
    return [(p, _bound(s), _bound(e)) for p, s, e in zip(*cols)]


def _bound(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def refuse_existing(paths: Sequence[Path], *, out: Path) -> None:
    """Raises ConfigError naming the first of ``paths`` (what a job writing ``out`` leaves) that exists."""
    for p in paths:
        if p.exists():
            what = "holds an unfinished job" if p.is_dir() else "exists"
            raise ConfigError(f"{p} {what}: nothing was written. Pass --resume to keep its rows and score the rest, "
                              f"or choose another --out than {out}")


def _check_columns(found: Sequence[str], expected: Sequence[str], *, where: Path) -> None:
    if list(found) != list(expected):
        raise ConfigError(f"{where} holds the columns {', '.join(found)}, not the {', '.join(expected)} this job "
                          "writes: resume with the same --top-k and manifest, or choose another --out")


class CsvOut:
    """Rows appended to a CSV, flushed and synced per batch; a line cut short by a crash is dropped on resume."""

    def __init__(self, out: Path, columns: list[str], *, resume: bool):
        self.out, self.columns = out, columns
        self.header = not (resume and out.is_file() and out.stat().st_size)
        if not self.header:
            _check_columns(list(pd.read_csv(out, nrows=0).columns), columns, where=out)
            _drop_cut_line(out)
        self.file = None  # opened at the first write: a job that fails before it leaves no file to refuse later

    def done(self) -> set[tuple]:
        if self.header:
            return set()
        keys = [c for c in KEY if c in self.columns]
        chunks = pd.read_csv(self.out, usecols=keys, dtype={"path": str}, keep_default_na=False,
                             na_values={c: [""] for c in keys if c != "path"}, float_precision="round_trip",
                             chunksize=CHUNK_ROWS)
        return {k for chunk in chunks for k in row_keys(chunk)}

    def write(self, frame: pd.DataFrame) -> None:
        if self.file is None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.out, "a", encoding="utf-8", newline="")
        frame.to_csv(self.file, header=self.header, index=False, lineterminator="\n")
        self.header = False
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self, *, finished: bool) -> None:
        if finished and self.header:  # nothing scored: still a CSV with its header
            self.write(pd.DataFrame(columns=self.columns))
        if self.file is not None:
            self.file.close()


def _drop_cut_line(path: Path) -> None:
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - (1 << 16)))
        tail = f.read()
        if not tail.endswith(b"\n"):
            f.truncate(size - len(tail) + tail.rfind(b"\n") + 1)


class ParquetOut:
    """Each batch written atomically as ``<out>.parts/part-NNNNNN.parquet``; :meth:`close` combines ``<out>`` (a
    finished earlier job) and the parts into ``<out>`` in one rename, then removes the parts."""

    def __init__(self, out: Path, schema: pa.Schema):
        self.out, self.schema, self.parts = out, schema, out.with_name(f"{out.name}.parts")
        for stale in self.parts.glob(".part-*"):  # temporary files of a write that was cut short
            stale.unlink()
        self.count = max((int(p.stem.split("-")[1]) for p in self._part_files()), default=0)

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))

    def done(self) -> set[tuple]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = [c for c in KEY if c in self.schema.names]

        def read(path: Path) -> list[tuple]:
            try:
                names = pq.read_schema(path).names
            except pa.ArrowInvalid as err:
                raise ConfigError(f"{path} is not a Parquet file ({err}): choose another --out") from None
            _check_columns(names, self.schema.names, where=path)
            return row_keys(pq.read_table(path, columns=keys).to_pandas())

        done = set(read(self.out)) if self.out.is_file() else set()
        for part in self._part_files():
            rows = read(part)
            if rows and rows[0] in done:  # combined into <out> by a job stopped before it removed its parts
                part.unlink()
            else:
                done.update(rows)
        return done

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.count += 1
        self.parts.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.parts / f"part-{self.count:06d}.parquet") as tmp:
            pq.write_table(pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False), tmp)

    def close(self, *, finished: bool) -> None:
        import shutil

        if not finished:
            if self.parts.is_dir() and not any(self.parts.iterdir()):
                self.parts.rmdir()  # nothing written: no unfinished job to refuse later
            return

        import pyarrow.parquet as pq

        sources = ([self.out] if self.out.is_file() else []) + self._part_files()
        with atomic_path(self.out) as tmp, pq.ParquetWriter(tmp, self.schema) as writer:
            for source in sources:  # batch by batch: the combined file is never held in memory
                for batch in pq.ParquetFile(source).iter_batches():
                    writer.write_batch(batch)
        shutil.rmtree(self.parts, ignore_errors=True)


class ErrorsOut:
    """The unreadable rows (their key columns and the reason), appended to ``<out stem>.errors.csv``."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns, self.file, self.count, self.first = path, columns, None, 0, []

    def write(self, rows: pd.DataFrame, reasons: list[str]) -> None:
        if self.file is None:
            self.file = open(self.path, "w", encoding="utf-8", newline="")
        rows[self.columns].assign(reason=reasons).to_csv(self.file, header=not self.count, index=False,
                                                         lineterminator="\n")
        self.file.flush()
        self.count += len(rows)
        self.first += list(zip(rows["path"], reasons))[:SHOWN_ERRORS - len(self.first)]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
