"""Batch jobs on Ray Data (``clipwise predict --manifest CSV --engine ray``): the same rows, decoding and result
columns as the local engine (:mod:`clipwise.infer.batch`), scored by a pool of actors that each load the model once,
written as a folder of Parquet files. Ray is optional: ``pip install 'clipwise[ray]'``."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from clipwise._io import atomic_path
from clipwise.errors import ConfigError
from clipwise.infer._batch_files import KEY, SHOWN_ERRORS, errors_path
from clipwise.infer.batch import BATCH_SIZE, BatchResult, Outputs, Source, decode_rows

__all__ = ["run_ray"]

# Each actor asks for half a CPU: an actor pool that takes every CPU leaves none to Ray Data's read tasks, and the
# job waits for ever.
_ACTOR_CPUS = 0.5


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs it with ray)
    except ImportError:
        raise ConfigError("--engine ray needs Ray, which is not installed: pip install 'clipwise[ray]'") from None
    return ray


class _Scorer:
    """A Ray actor: loads the run (or bundle) once, then decodes and scores each batch of rows it is given; a row
    whose file does not decode gets an ``error`` instead of failing the job."""

    def __init__(self, *, run: str, checkpoint: str, outputs: Outputs, carried: tuple[str, ...]):
        from clipwise.kinds import load_run

        self.scorer = load_run(run, checkpoint=checkpoint)
        self.outputs, self.carried = outputs, carried
        self.schema = outputs.schema(carried, len(self.scorer.labels), error=True)

    def __call__(self, rows: pd.DataFrame):
        import pyarrow as pa

        decoded = decode_rows(rows, sample_rate=self.scorer.sample_rate)
        waves = [w for w, reason in decoded if reason is None]
        probs = self.scorer.predict_signals(waves, sample_rate=self.scorer.sample_rate)
        frame = self.outputs.frame(rows, probs, scorer=self.scorer, carried=self.carried,
                                   reasons=[reason for _, reason in decoded])
        # an explicit schema: a batch without errors must still write its error column as text, not as nulls
        return pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)


def run_ray(source: Source, *, run: str | os.PathLike, checkpoint: str = "best", out: str | os.PathLike,
            outputs: Outputs, address: str | None = None, actors: int | None = None, resume: bool = False,
            batch_size: int = BATCH_SIZE, progress: bool = True) -> BatchResult:
    """Score every row of ``source`` on Ray into the folder ``out`` (Parquet files in row order; each row has the
    local engine's columns and ``error``, the reason its file could not be scored, else empty). The unreadable rows
    are also listed in ``<out>.errors.csv``.

    Args:
        source: the rows, from :func:`clipwise.infer.batch.open_source`.
        run: the run folder or bundle each actor loads (:func:`clipwise.kinds.load_run`).
        checkpoint: the run's checkpoint (best or last).
        out: a new (or empty) folder.
        outputs: what each row holds.
        address: the Ray cluster to join; None starts a local Ray instance (when this process has none yet).
        actors: scoring actors (default: the cluster's CPUs less one, at least 1).
        resume: not supported here: raises.
        batch_size: rows per actor call.
        progress: Ray Data's progress bars on stderr.

    Returns:
        A :class:`~clipwise.infer.batch.BatchResult`.

    Raises:
        ConfigError: Ray is not installed, ``resume``, ``out`` is a file or a folder that holds files, or
            ``actors`` below 1.
    """
    out = Path(out).expanduser().absolute()
    if resume:
        raise ConfigError("--resume works with --engine local; with --engine ray give a new --out folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists: nothing was written. Choose another --out (a new folder)")
    errors = errors_path(out)
    if errors.exists():
        raise ConfigError(f"{errors} exists (a list of unreadable files): nothing was written. Choose another --out")
    if actors is not None and actors < 1:
        raise ConfigError(f"--jobs must be at least 1, got {actors}")
    ray = _import_ray()
    # quiet: Ray's notes at start (its token file, deprecations) and Ray Data's per-step log lines
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:  # "local" starts a private instance: ray.init() alone would join any cluster running here
        ray.init(address=address or "local", log_to_driver=False, include_dashboard=False,
                 configure_logging=False)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the rows come out in the manifest's order
        context.enable_progress_bars = progress
        refs = [ray.put(chunk) for chunk in source.chunks() if len(chunk)]  # chunk by chunk into the object store
        out.mkdir(parents=True, exist_ok=True)
        if refs:
            pool = actors or max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
            dataset = ray.data.from_pandas_refs(refs).map_batches(
                _Scorer, fn_constructor_kwargs={"run": str(run), "checkpoint": checkpoint, "outputs": outputs,
                                                "carried": source.columns},
                batch_size=batch_size, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=pool),
                num_cpus=_ACTOR_CPUS)
            dataset.write_parquet(str(out))
    finally:
        if started:
            ray.shutdown()
    result = BatchResult(out=out, seconds=time.perf_counter() - t0)
    _count(result, out, errors, keys=[c for c in source.columns if c in KEY])
    return result


def _count(result: BatchResult, out: Path, errors: Path, *, keys: list[str]) -> None:
    """Fill ``result``'s counts from the written folder; list its error rows in ``errors``."""
    import pyarrow.dataset as pads

    files = sorted(str(p) for p in out.glob("*.parquet"))
    if not files:
        return
    written = pads.dataset(files, format="parquet")
    failed: Any = written.to_table(columns=[*keys, "error"], filter=pads.field("error").is_valid()).to_pandas()
    result.skipped = len(failed)
    result.scored = written.count_rows() - result.skipped
    if len(failed):
        with atomic_path(errors) as tmp:
            failed.rename(columns={"error": "reason"}).to_csv(tmp, index=False)
        result.errors_file = errors
        result.first_errors = list(zip(failed["path"], failed["error"]))[:SHOWN_ERRORS]
