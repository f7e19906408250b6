"""The ``clipwise`` command: parses arguments, validates them and calls one function per command.

Errors a user can cause are :class:`~clipwise.errors.ClipwiseError` subclasses: they are printed as one clear
message (what, where, the fix) and the command exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from clipwise.errors import ClipwiseError, ConfigError


def _quiet_third_party() -> None:
    # Lightning advertises services on every run and torch's pytree shim warns on each step; neither helps users
    os.environ.setdefault("LIGHTNING_DISABLE_TIPS", "1")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


# -- commands ----------------------------------------------------------------------------------------------------
def cmd_datasets(args: argparse.Namespace) -> int:
    from clipwise.data.recipes import list_recipes

    for name, description in list_recipes():
        print(f"{name:10s} {description}")
    print("\nUse: clipwise prepare NAME --root DIR --out manifest.csv")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from clipwise.models import list_models

    if args.compare or args.use_case:
        return _compare_models(args)
    print(f"{'name':26s} {'family':14s} description")
    for entry in list_models():
        default = " (default)" if entry.name == "audiocnn" else ""
        print(f"{entry.name:26s} {entry.family:14s} {entry.description}{default}")
    print("\nAny other timm model name also works as a backbone (see timm.list_models()).")
    return 0


def _compare_models(args: argparse.Namespace) -> int:
    import pandas as pd

    from clipwise.frontends import n_frames, stft_sizes
    from clipwise.models.compare import as_rows, measure_models, recommend

    sr = args.sample_rate
    _, hop, _ = stft_sizes(sample_rate=sr, win_ms=25.0, hop_ms=10.0, n_fft=None)
    size = (args.n_mels, n_frames(int(args.seconds * sr), hop))
    names = args.only.split(",") if args.only else None
    print(f"measuring on a {size[0]} x {size[1]} spectrogram ({args.seconds} s at {sr} Hz, {args.n_mels} mels), "
          f"{__import__('torch').get_num_threads()} torch threads ...", flush=True)
    measures = measure_models(names, input_size=size, batch=args.batch, runs=args.runs)
    frame = pd.DataFrame(as_rows(measures))
    frame["MMACs"] = (frame["macs"] / 1e6).round(1)
    cols = ["name", "family", "params", "MMACs", "latency_ms_b1", "latency_ms_b32", "activation_mib", "accuracy",
            "accuracy_runs"]
    print(frame[cols].round(3).to_string(index=False))
    if args.out:
        frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    if args.use_case:
        best, why = recommend(measures, args.use_case)
        print(f"\nrecommended for {args.use_case}: {best.name} - {why}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from clipwise.config import describe_config

    print(describe_config())
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from clipwise.data.manifest import write_manifest
    from clipwise.data.recipes import prepare

    columns = {k: v for k, v in vars(args).items() if k.endswith("_column") and v}
    df = prepare(args.source, root=args.root, **columns)
    out = write_manifest(df, args.out)
    counts = df["label"].value_counts()
    extra = [c for c in ("split", "fold", "group") if c in df.columns]
    print(f"wrote {out}: {len(df)} clips, {len(counts)} labels" + (f", columns {', '.join(extra)}" if extra else ""))
    return 0


def _config_from_args(args: argparse.Namespace, *, base: dict | None = None):
    """The run config from --config, the shortcut flags and key=value overrides (shared by train and cv)."""
    from clipwise.config import load_config
    from clipwise.models import is_known_model

    overrides = list(args.overrides)
    for flag, key in (("data", "data.manifest"), ("model", "model.name"), ("epochs", "train.epochs"),
                      ("test_fold", "data.test_fold")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.insert(0, f"{key}={Path(value).resolve() if flag == 'data' else value}")
    if args.skip_bad:
        overrides.insert(0, "data.skip_bad=true")
    if args.allow_leakage:
        overrides.insert(0, "data.allow_leakage=true")
    config = load_config(args.config, overrides=overrides, base=base)
    if not is_known_model(config.model.name):
        from clipwise.models.registry import MODELS

        raise ConfigError(MODELS.unknown_message(config.model.name) + " Any timm model name also works.")
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from clipwise.train.fit import train

    if args.cv is not None:  # `train --cv [K]` is `cv [--folds K]`
        if args.resume or args.test_fold is not None:
            raise ConfigError("--cv runs every fold: leave out --resume and --test-fold (re-run the same command to "
                              "continue a cross-validation)")
        args.folds, args.only = (args.cv or None), None
        return cmd_cv(args)

    base = None
    out = args.out
    if args.resume:
        from clipwise.run import RunFolder

        run = RunFolder.open(args.resume)
        base = run.load_config_dict()
        out = str(run.root)
        if not run.last_checkpoint.is_file():
            raise ConfigError(f"cannot resume {run.root}: checkpoints/last.ckpt is missing (no epoch finished)")
    config = _config_from_args(args, base=base)
    from clipwise.classical import is_classical, train_classical

    if is_classical(config.model.name):
        if args.resume:
            raise ConfigError("a classical baseline trains in one go; there is nothing to resume")
        run_dir = train_classical(config, out=out)
    else:
        run_dir = train(config, out=out, resume=bool(args.resume))
    _print_summary(run_dir)
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from clipwise.train.cv import cross_validate

    config = _config_from_args(args)
    only = [int(k) for k in args.only.split(",")] if args.only else None
    root = cross_validate(config, out=args.out, folds=args.folds, only=only)
    summary = json.loads((root / "cv_summary.json").read_text())
    print(f"\ncross-validation folder: {root}")
    multi = summary.get("task") == "multilabel"
    for key in ("lwlrap", "mAP", "macro_f1") if multi else ("accuracy", "balanced_accuracy", "macro_f1"):
        if key not in summary["mean"]:
            continue
        m = summary["mean"][key]
        print(f"  {key:18s} {m['mean']:.4f} ± {m['std']:.4f}  95 % interval [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"
              f"  ({m['n']} folds)")
    print(f"  report: {root / 'report.md'}")
    return 0


def _print_summary(run_dir: Path) -> None:
    from clipwise.run import RunFolder

    run = RunFolder(run_dir)
    if not run.summary_path.is_file():
        return
    summary = run.load_summary()
    print(f"\nrun folder: {run.root}")
    for split in ("train_clean", "val", "test"):
        if split in summary:
            m = summary[split]
            head = f"lwlrap {m['lwlrap']:.4f}  mAP {m['mAP']:.4f}" if "lwlrap" in m else f"accuracy {m['accuracy']:.4f}"
            print(f"  {split:12s} {head}  macro-F1 {m['macro_f1']:.4f}  n={m['n']}")
    print(f"  best epoch {summary.get('best_epoch')} of {summary.get('epochs_run')}; report: {run.report_path}")
    if summary.get("diverged"):
        print(f"warning: training diverged: {summary['diverged']}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from clipwise.infer.evaluate import evaluate_run

    if args.recompute:
        return _recompute(args)
    result = evaluate_run(args.run, data=args.data, split=args.split, checkpoint=args.checkpoint)
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        m = result["metrics"]
        print(f"{result['source']} ({m['n']} clips, checkpoint {result['checkpoint']})")
        keys = (("lwlrap", "mAP", "macro_f1", "micro_f1", "loss") if "lwlrap" in m
                else ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "loss"))
        for key in keys:
            print(f"  {key:18s} {m[key]:.4f}")
        print(f"predictions: {result['predictions']}")
    return 0


def _recompute(args: argparse.Namespace) -> int:
    from clipwise.infer.recompute import recompute_run

    if args.data or args.split:
        raise ConfigError("--recompute checks the run's own numbers; leave out --data and --split")
    result = recompute_run(args.run, tolerance=args.tolerance)
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    bad = [c for c in result["checks"] if not c["ok"]]
    print(f"{len(result['checks'])} numbers recomputed from the predictions and the checkpoint "
          f"(tolerance {result['tolerance']:g}): {len(bad)} differ")
    for c in bad:
        print(f"  {c['check']}: {c['key']} stated {c['stated']:.6g}, recomputed {c['recomputed']:.6g}")
    probs = [c for c in result["checks"] if c["key"] == "max |probability|"]
    for c in probs:
        print(f"  {c['check']}: largest probability difference {c['recomputed']:.2e}")
    if result["report_diff"]:
        print(f"report.md differs from a regenerated one in {len(result['report_diff'])} line(s):")
        print("\n".join(f"  {ln}" for ln in result["report_diff"][:20]))
    else:
        print("report.md regenerates identically")
    print("all numbers reproduce" if result["ok"] else "some numbers do NOT reproduce (details: recompute.json)")
    return 0 if result["ok"] else 1


def cmd_predict(args: argparse.Namespace) -> int:
    from clipwise.infer.predictor import Predictor, find_audio
    from clipwise.run import RunFolder

    files = find_audio(args.paths)
    predictor = Predictor.from_run(args.run, checkpoint=args.checkpoint)
    probs = predictor.predict_files(files)
    top = predictor.top_k(probs, k=args.top_k)
    tags = None
    if getattr(predictor, "multi_label", False):
        # a multi-label run's decision: every label at or above its threshold (tuned on validation)
        run = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent.parent  # run/checkpoints/x.ckpt
        cut = RunFolder(run).threshold_array(predictor.labels)
        tags = [[lab for lab, p, c in zip(predictor.labels, row, cut) if p >= c] for row in probs]
    _print_predictions(files, top, fmt=args.format, tags=tags)
    return 0


def _print_predictions(files: list[Path], top: list[list[tuple[str, float]]], *, fmt: str,
                       tags: list[list[str]] | None = None) -> None:
    """``tags``: a multi-label run's labels at or above their thresholds, per file (None: single-label)."""
    if fmt == "json":
        rows = [{"path": str(f), **({"tags": tags[i]} if tags is not None else {}),
                 "top": [{"label": lab, "probability": round(p, 6)} for lab, p in t]}
                for i, (f, t) in enumerate(zip(files, top))]
        print(json.dumps(rows, indent=2))
    elif fmt == "csv":
        import csv

        k = len(top[0]) if top else 0
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path"] + (["tags"] if tags is not None else [])
                        + [c for i in range(1, k + 1) for c in (f"label_{i}", f"prob_{i}")])
        for i, (f, t) in enumerate(zip(files, top)):
            writer.writerow([str(f)] + ([";".join(tags[i])] if tags is not None else [])
                            + [c for lab, p in t for c in (lab, f"{p:.6f}")])
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("file", *(["tags"] if tags is not None else []),
                      *[f"#{i + 1}" for i in range(len(top[0]) if top else 0)])
        for i, (f, t) in enumerate(zip(files, top)):
            table.add_row(str(f), *(["; ".join(tags[i]) or "-"] if tags is not None else []),
                          *[f"{lab} {p:.3f}" for lab, p in t])
        Console().print(table)


def cmd_check(args: argparse.Namespace) -> int:
    import json

    from clipwise.data.check import check_manifest
    from clipwise.data.manifest import read_manifest

    df = read_manifest(args.manifest)
    report = check_manifest(df, side=args.side, progress=not args.json)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 1 if args.strict and report.findings else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from clipwise.evaluate.compare import collect, leaderboard_markdown, resolve_metric, write_leaderboard

    args.metric = resolve_metric(args.paths, args.metric, split=args.split)
    entries = collect(args.paths, metric=args.metric, split=args.split)
    if args.format == "csv":
        import dataclasses

        import pandas as pd

        print(pd.DataFrame([dataclasses.asdict(e) for e in entries]).to_csv(index=False), end="")
    else:
        print(leaderboard_markdown(entries, metric=args.metric, split=args.split), end="")
    if args.out:
        print(f"\nwrote {write_leaderboard(entries, args.out, metric=args.metric, split=args.split)} "
              "(with leaderboard.csv and leaderboard.png)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import subprocess

    from clipwise.sweep import helper_argv, load_space, refresh_leaderboard, run_sweep

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    space = load_space(args.space)
    config = _config_from_args(args)
    helpers, logs = [], []
    if args.worker_threads:
        config.train.threads = args.worker_threads
    if args.jobs > 1:
        if config.train.threads is None:  # share the cores instead of every process taking all of them
            config.train.threads = max(1, (os.cpu_count() or 1) // args.jobs)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "clipwise", *helper_argv(args.argv, threads=config.train.threads)]
        for i in range(1, args.jobs):
            logs.append(out / f"worker{i}.log")
            with open(logs[-1], "a") as log:
                helpers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        print(f"{len(helpers)} more worker process(es) share the study (logs: {', '.join(map(str, logs))}); "
              f"{config.train.threads} torch thread(s) each", flush=True)
    try:
        board = run_sweep(config, space, args.out, trials=args.trials, sampler=args.sampler, metric=args.metric,
                          seed=args.seed, cv=args.cv, prune=args.prune)
    except BaseException:  # interrupted or failed: stop the helpers too (their trials are retried on a re-run)
        for p in helpers:
            p.terminate()
        for p in helpers:
            p.wait()
        raise
    codes = [p.wait() for p in helpers]
    if helpers:  # the last trial to finish may have been a helper's
        board = refresh_leaderboard(args.out)
    print(f"\nsweep folder: {args.out} ({len(board)} finished trials; leaderboard.md, leaderboard.csv)")
    if len(board):
        print(board.head(10).to_string(index=False))
    failed = [str(log) for log, code in zip(logs, codes) if code != 0]
    if failed:
        print(f"clipwise sweep: error: worker process(es) failed; see {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from clipwise.train.lr_find import lr_range_test

    config = _config_from_args(args)
    result = lr_range_test(config, out=args.out, start=args.start, end=args.end, steps=args.steps)
    print(f"learning-rate range test over {result['steps_run']} steps: lowest smoothed loss at "
          f"{result['min_loss_lr']:.3g}, steepest descent at {result['steepest_lr']:.3g}")
    print(f"suggested: optim.lr={result['suggested_lr']:.2g}  (curve: {Path(args.out) / 'lr_find.png'})")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from clipwise.ensemble import build_ensemble
    from clipwise.run import RunFolder

    calibrate = {"auto": None, "on": True, "off": False}[args.calibrate]
    out = build_ensemble(args.runs, args.out, weights=args.weights, calibrate=calibrate)
    summary = json.loads((out / "summary.json").read_text())
    spec = json.loads(RunFolder(out).ensemble_path.read_text())
    print(f"ensemble folder: {out}")
    for name, w, t in zip(spec["names"], spec["weights"], spec["temperatures"]):
        scores = summary["members"].get(name, {})
        print(f"  {name:30s} weight {w:.3f}  temperature {t:.3f}  "
              + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    for split in ("val", "test"):
        if split in summary:
            main = "lwlrap" if "lwlrap" in summary[split] else "accuracy"
            print(f"  {'ensemble ' + split:30s} {main} {summary[split][main]:.4f}  "
                  f"macro-F1 {summary[split]['macro_f1']:.4f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from clipwise.demo import run_demo

    run_demo(out=Path(args.out), epochs=args.epochs)
    return 0


# -- parser ------------------------------------------------------------------------------------------------------
def _fold_count(text: str) -> int:
    """--cv's optional number: argparse hands it the next word, so a key=value setting written after a bare
    --cv lands here; say so instead of 'invalid int value'."""
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--cv took {text!r} as its number of folds: write --cv 0 (the manifest's folds) or --cv K before "
            "key=value settings, or put --cv last") from None
    if k < 0 or k == 1:
        raise argparse.ArgumentTypeError(f"--cv {k}: use 0 (the manifest's folds) or K >= 2 folds")
    return k


def _run_options(s: argparse.ArgumentParser, *, data_required: bool = True) -> None:
    """The options of every command that trains (train, cv, sweep, lr-find)."""
    s.add_argument("--data", required=data_required, help="manifest CSV")
    s.add_argument("--model", help="model name (default: audiocnn; see `clipwise models`)")
    s.add_argument("--config", help="YAML config file")
    s.add_argument("--epochs", type=int)
    s.add_argument("--skip-bad", action="store_true", help="skip unreadable files (listed in the run folder)")
    s.add_argument("--allow-leakage", action="store_true", help="train even if train and test share audio or a "
                   "group (the protocol intends it); the report says so at the top")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-3")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipwise", description="Train, evaluate and use sound classifiers.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("datasets", help="list dataset recipes")
    s.set_defaults(fn=cmd_datasets)
    s = sub.add_parser("models", help="list registered models; --compare measures them")
    s.add_argument("--compare", action="store_true", help="measure parameters, MACs, latency and memory")
    s.add_argument("--use-case", choices=["accuracy", "speed", "balanced", "edge"], help="recommend a model")
    s.add_argument("--runs", nargs="*", default=[], help="folders searched for run summaries (accuracy per model)")
    s.add_argument("--only", help="comma-separated model names to measure (default: all)")
    s.add_argument("--seconds", type=float, default=5.0, help="clip length of the measured input")
    s.add_argument("--sample-rate", type=int, default=16000)
    s.add_argument("--n-mels", type=int, default=64)
    s.add_argument("--batch", type=int, default=32, help="the larger batch size timed")
    s.add_argument("--out", help="CSV file for the measurements")
    s.set_defaults(fn=cmd_models)
    s = sub.add_parser("config", help="print every config key with its default")
    s.set_defaults(fn=cmd_config)

    s = sub.add_parser("prepare", help="build a manifest CSV from a recipe, a folder-per-class tree or a CSV")
    s.add_argument("source", help="recipe name (see `clipwise datasets`), a folder of class folders, or a CSV")
    s.add_argument("--root", help="dataset folder (for recipes)")
    s.add_argument("--out", required=True, help="manifest CSV to write")
    for col in ("path", "label", "split", "fold", "group", "start", "end"):
        s.add_argument(f"--{col}-column", dest=f"{col}_column", help=f"column holding the {col} (CSV sources)")
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("train", help="train a model and write a run folder")
    _run_options(s, data_required=False)
    s.add_argument("--test-fold", type=int, help="with a fold column: the fold used as test set")
    s.add_argument("--out", help="run folder (default: runs/<data>-<model>-<time>)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    s.add_argument("--cv", nargs="?", type=_fold_count, const=0, metavar="K", help="cross-validate instead (as `clipwise cv`): "
                   "the manifest's folds, or K grouped folds (default 5)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("cv", help="cross-validate: one run per fold, mean ± std and a 95 %% interval, one report")
    _run_options(s)
    s.add_argument("--folds", type=int, help="folds to make when the manifest has no fold column (default 5)")
    s.add_argument("--out", help="CV folder (default: runs/<data>-<model>-cv-<time>); re-run to finish its folds")
    s.add_argument("--only", help="comma-separated folds to train now (the report covers finished folds)")
    s.set_defaults(fn=cmd_cv)

    s = sub.add_parser("evaluate", help="evaluate a run's best checkpoint on a split or another manifest")
    s.add_argument("run", help="run folder")
    s.add_argument("--data", help="another manifest to evaluate on (default: the run's own data)")
    s.add_argument("--split", help="split to evaluate (default: test; with --data: every row)")
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.add_argument("--format", default="table", choices=["table", "json"])
    s.add_argument("--recompute", action="store_true", help="regenerate every number of the run's report from its "
                   "saved predictions and its checkpoint; exit 1 on any difference")
    s.add_argument("--tolerance", type=float, default=1e-4, help="largest difference accepted by --recompute")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("predict", help="top-k labels for audio files or folders")
    s.add_argument("run", help="run folder (or a checkpoint file)")
    s.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    s.add_argument("--top-k", type=int, default=3)
    s.add_argument("--format", default="table", choices=["table", "csv", "json"])
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("check", help="find unreadable files, imbalance, group leakage and duplicate audio")
    s.add_argument("manifest", help="manifest CSV")
    s.add_argument("--side", default="auto", help="column whose values are compared for leakage "
                   "(default: split, else fold)")
    s.add_argument("--json", action="store_true", help="print the findings as JSON")
    s.add_argument("--strict", action="store_true", help="exit with status 1 when there are findings")
    s.set_defaults(fn=cmd_check)

    s = sub.add_parser("compare", help="leaderboard of runs, cross-validations and Lightning CSV logs")
    s.add_argument("paths", nargs="+", help="run folders, CV folders, Lightning metrics.csv files or log folders")
    s.add_argument("--metric", default="auto", help="metric to rank by (e.g. accuracy, macro_f1, lwlrap, loss); "
                   "auto: lwlrap for multi-label runs, else accuracy")
    s.add_argument("--split", default="test", help="split of run folders to compare (default: test)")
    s.add_argument("--format", default="markdown", choices=["markdown", "csv"])
    s.add_argument("--out", help="folder for leaderboard.md, leaderboard.csv and leaderboard.png")
    s.set_defaults(fn=cmd_compare)

    s = sub.add_parser("sweep", help="search config values with Optuna (grid, random or TPE), resumable")
    _run_options(s)
    s.add_argument("--space", required=True, help="YAML: config key -> list of values or {low, high, log}")
    s.add_argument("--out", required=True, help="sweep folder (study.db, trial_<n>/, leaderboard); re-run to continue")
    s.add_argument("--trials", type=int, help="finished trials to reach (default: the grid size, or 20)")
    s.add_argument("--sampler", default="tpe", choices=["grid", "random", "tpe"])
    s.add_argument("--metric", help="validation metric to optimise (default: the config's monitor; with auto, "
                   "accuracy, or lwlrap for multi-label data)")
    s.add_argument("--seed", type=int, default=0, help="sampler seed")
    s.add_argument("--jobs", type=int, default=1,
                   help="worker processes sharing the study (this one and jobs-1 more, each with its share of the "
                        "cores unless train.threads is set; their output goes to OUT/worker<i>.log)")
    s.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)  # set by --jobs for its helpers
    s.add_argument("--prune", action="store_true",
                   help="stop trials whose validation score falls below the median of finished trials at the same "
                        "epoch (after 5 finished trials, from epoch 3; a CV trial is judged by its first fold)")
    s.add_argument("--test-fold", type=int, help="with a fold column: the fold used as test set")
    s.add_argument("--cv", nargs="?", type=_fold_count, const=0, metavar="K", help="cross-validate every trial (the "
                   "manifest's folds, or K grouped folds) and optimise the mean validation score over its folds")
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("lr-find", help="learning-rate range test on your data: the loss curve and a suggestion")
    _run_options(s)
    s.add_argument("--out", default="runs/lr_find", help="folder for lr_find.csv and lr_find.png")
    s.add_argument("--start", type=float, default=1e-6)
    s.add_argument("--end", type=float, default=1.0)
    s.add_argument("--steps", type=int, default=100)
    s.set_defaults(fn=cmd_lr_find)

    s = sub.add_parser("ensemble", help="combine finished runs (same labels and split) into one model")
    s.add_argument("runs", nargs="+", help="run folders")
    s.add_argument("--out", required=True, help="the ensemble's folder")
    s.add_argument("--weights", default="learn", help="learn (minimise validation log-loss), mean, or "
                   "comma-separated weights")
    s.add_argument("--calibrate", choices=("auto", "on", "off"), default="auto",
                   help="temperature-scale each member on validation before mixing (auto: when learning weights)")
    s.set_defaults(fn=cmd_ensemble)

    s = sub.add_parser("demo", help="train on a built-in synthetic dataset, report, predict")
    s.add_argument("--out", default="runs/demo", help="folder for the demo data and run")
    s.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clipwise`` command."""
    _quiet_third_party()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for helper processes (sweep --jobs)
    try:
        return args.fn(args)
    except ClipwiseError as e:
        print(f"clipwise {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        hint = {"train": " Resume with `clipwise train --resume RUN_DIR`.",
                "cv": " Re-run the same command with the same --out: finished folds are kept, the interrupted one "
                      "resumes."}.get(args.command, "")
        print(f"\nclipwise {args.command}: interrupted.{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
