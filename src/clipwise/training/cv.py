"""Cross-validation: one run per fold, each finished fold kept, one report over all of them.

``cross_validate`` uses the manifest's ``fold`` column when it has one (ESC-50's five official folds), and
otherwise makes k folds stratified by label with groups kept whole; those folds are written to
``folds.csv`` in the CV folder, so a re-run, or a reader of the report, sees exactly the same ones. Each fold is
an ordinary training run (``fold<k>/``) with that fold as test and a validation set held out of the other
folds by group. A fold whose ``summary.json`` exists is finished and skipped on re-run; one that was
interrupted resumes from its last checkpoint. The leakage check runs for every fold before the first one
trains, so a leaking fold is refused before hours are spent on the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clipwise.config import Config, load_config
from clipwise.data.check import check_manifest
from clipwise.data.manifest import read_manifest
from clipwise.data.prepare import default_run_dir
from clipwise.data.splits import make_folds
from clipwise.errors import ConfigError, LeakageError, ManifestError
from clipwise.evaluate.cv_report import write_cv_report
from clipwise.kinds import train_run
from clipwise.run import RunFolder


def fold_manifest(config: Config, out: Path, *, k: int | None) -> tuple[Path, list[int]]:
    """Write (or reuse) ``out/folds.csv``: the manifest with absolute paths and a ``fold`` column.

    Returns:
        The path and the sorted fold ids.

    Raises:
        ConfigError: ``k`` disagrees with the manifest's own folds or with a previous run in ``out``.
    """
    if not config.data.manifest:
        raise ConfigError("no data: pass --data MANIFEST.csv (make one with `clipwise prepare`)")
    path = RunFolder(out).folds_path
    if path.is_file():
        df = pd.read_csv(path)
        folds = sorted(int(f) for f in df["fold"].unique())
        if k is not None and len(folds) != k and "fold" not in read_manifest(config.data.manifest):
            raise ConfigError(f"{out} holds a {len(folds)}-fold cross-validation; ask for --folds {len(folds)} "
                              "or use another --out")
        return path, folds
    df = read_manifest(config.data.manifest)
    if "split" in df:
        df = df.drop(columns=["split"])  # the folds decide the test set; validation is held out of training folds
    if "fold" in df:
        folds = sorted(int(f) for f in df["fold"].unique())
        if len(folds) < 2:
            raise ManifestError(f"the 'fold' column of {config.data.manifest} has a single fold; cross-validation "
                                "needs at least 2 (drop the column to let clipwise make folds)")
        if k is not None and k != len(folds):
            raise ConfigError(f"--folds {k} was given but {config.data.manifest} has {len(folds)} folds of its own "
                              f"({', '.join(map(str, folds))}); leave --folds out or drop the fold column")
    else:
        df["fold"] = make_folds(df, k or 5, seed=config.train.seed)
        folds = list(range(1, (k or 5) + 1))
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path, folds


def check_folds(manifest: Path, folds: list[int], *, allow: bool, progress: bool) -> dict[int, list[str]]:
    """Leak findings between each fold and the others (what would be shared by its test and training data).

    Raises:
        LeakageError: a fold shares audio or a group with the others and ``allow`` is false.
    """
    report = check_manifest(read_manifest(manifest), side="fold", progress=progress)
    found: dict[int, list[str]] = {}
    for k in folds:
        messages = [n.message for f in report.leaks() for j in folds if j != k
                    if (n := f.between(str(k), str(j))) is not None]
        if messages:
            found[k] = messages
    if found and not allow:
        listed = "\n".join(f"  - test fold {k}: {m}" for k, ms in found.items() for m in ms)
        raise LeakageError(
            f"folds share audio or sources, so those folds' test scores would measure recall of heard material:\n"
            f"{listed}\nFix the folds (give related clips one group; `clipwise check {manifest}` lists every file), "
            "or pass --allow-leakage if the protocol intends it: each fold's report then says so at the top."
        )
    return found


def cross_validate(config: Config, *, out: str | Path | None = None, folds: int | None = None,
                   only: list[int] | None = None, first_fold_callbacks: Sequence[Any] = ()) -> Path:
    """Train one model per fold and write the cross-validation report.

    Args:
        config: the run config; ``data.manifest`` names the data, ``data.test_fold`` is set per fold.
        out: the CV folder (default ``runs/<data>-<model>-cv-<time>``); re-running with the same folder skips
            finished folds and resumes an interrupted one.
        folds: number of folds to make when the manifest has no ``fold`` column (default 5).
        only: train just these folds now (the report covers the folds finished so far).
        first_fold_callbacks: Lightning callbacks for the first fold this call trains (a sweep judges a trial
            by that fold's learning curve).

    Returns:
        The CV folder.
    """
    if config.data.test_fold is not None:
        raise ConfigError("data.test_fold is set per fold by cross-validation; leave it out")
    root = Path(out) if out is not None else default_run_dir(config, kind="cv")
    manifest, fold_ids = fold_manifest(config, root, k=folds)
    unknown = sorted(set(only or []) - set(fold_ids))
    if unknown:
        raise ConfigError(f"fold(s) {unknown} do not exist; the folds are {', '.join(map(str, fold_ids))}")
    if config.data.leakage_check:
        check_folds(manifest, fold_ids, allow=config.data.allow_leakage, progress=config.train.progress)
    extra = list(first_fold_callbacks)
    for k in only or fold_ids:
        run = RunFolder(root).fold_run(k)
        if run.summary_path.is_file():
            print(f"fold {k}: finished earlier, kept ({run.root})", flush=True)
            continue
        callbacks, extra = extra, []
        if run.last_checkpoint.is_file():
            print(f"fold {k}: resuming from {run.last_checkpoint}", flush=True)
            cfg = load_config(base=run.load_config_dict())
            train_run(cfg, out=run.root, resume=True, callbacks=callbacks)
        else:
            print(f"fold {k} of {len(fold_ids)}: training", flush=True)
            cfg = config.model_copy(deep=True)
            cfg.data.manifest = str(manifest.resolve())
            cfg.data.test_fold = k
            train_run(cfg, out=run.root, callbacks=callbacks)
    write_cv_report(root)
    return root
