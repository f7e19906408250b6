"""The ``clipwise`` command: parses arguments, validates them and calls one function per command.

Errors a user can cause are :class:`~clipwise.errors.ClipwiseError` subclasses: they are printed as one clear
message (what, where, the fix) and the command exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clipwise.config import DEFAULT_MODEL, EVENT_FORMATS, SWEEP_SAMPLERS, USE_CASES
from clipwise.errors import ClipwiseError, ConfigError


# -- commands ----------------------------------------------------------------------------------------------------
def cmd_datasets(args: argparse.Namespace) -> int:
    from clipwise.data.recipes import list_recipes

    for name, description in list_recipes():
        print(f"{name:10s} {description}")
    print("\nUse: clipwise prepare NAME --root DIR --out manifest.csv")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from clipwise._console import print_model_list
    from clipwise.kinds import known_models

    if args.compare or args.use_case:
        from clipwise.models.compare import print_comparison

        print_comparison(only=args.only.split(",") if args.only else None, seconds=args.seconds,
                         sample_rate=args.sample_rate, n_mels=args.n_mels, batch=args.batch, runs=args.runs,
                         out=args.out, use_case=args.use_case)
        return 0
    print_model_list(known_models(), default=DEFAULT_MODEL)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from clipwise.config import describe_config

    print(describe_config())
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from clipwise.data.manifest import write_manifest
    from clipwise.data.recipes import prepare

    columns = {k: v for k, v in vars(args).items() if k.endswith("_column") and v}
    if Path(args.out).exists() and not args.overwrite:
        raise ConfigError(f"--out {args.out} already exists; nothing was written. Choose another file name, or pass "
                          "--overwrite to replace it")
    if args.download:
        from clipwise.data.recipes import DOWNLOADS

        if args.source not in DOWNLOADS or not args.root:
            raise ConfigError(f"--download fetches a recipe's data into --root DIR; recipes with a download: "
                              f"{', '.join(sorted(DOWNLOADS))}")
        DOWNLOADS[args.source](args.root)
    df = prepare(args.source, root=args.root, **columns)
    out = write_manifest(df, args.out)
    counts = df["label"].value_counts()
    extra = [c for c in ("split", "fold", "group") if c in df.columns]
    print(f"wrote {out}: {len(df)} clips, {len(counts)} labels" + (f", columns {', '.join(extra)}" if extra else ""))
    return 0


def _config_from_args(args: argparse.Namespace, *, base: dict | None = None):
    """The run config from --config, the shortcut flags and key=value overrides (train, cv, sweep, lr-find)."""
    from clipwise.api import make_config

    flags = {key: getattr(args, key, None) for key in ("epochs", "test_fold")}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.skip_bad:
        flags["skip_bad"] = True
    if args.allow_leakage:
        flags["allow_leakage"] = True
    return make_config(args.data, model=args.model, config=args.config, overrides=args.overrides, base=base,
                       **flags)


def cmd_train(args: argparse.Namespace) -> int:
    from clipwise._console import print_run_summary
    from clipwise.kinds import train_run

    if args.cv is not None:  # `train --cv [K]` is `cv [--folds K]`
        if args.resume or args.test_fold is not None:
            raise ConfigError("--cv runs every fold: leave out --resume and --test-fold (re-run the same command to "
                              "continue a cross-validation)")
        args.folds, args.only = (args.cv or None), None
        return cmd_cv(args)
    base, out = None, args.out
    if args.resume:
        from clipwise.run import RunFolder

        run = RunFolder.open(args.resume)
        base, out = run.load_config_dict(), str(run.root)
        if run.kind == "deep" and not run.last_checkpoint.is_file():
            raise ConfigError(f"cannot resume {run.root}: checkpoints/last.ckpt is missing (no epoch finished)")
    config = _config_from_args(args, base=base)
    print_run_summary(train_run(config, out=out, resume=bool(args.resume), overwrite=args.overwrite))
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from clipwise._console import print_cv_summary
    from clipwise.training.cv import cross_validate

    if args.folds is not None and args.folds < 2:
        raise ConfigError(f"--folds {args.folds}: a cross-validation needs at least 2 folds; leave --folds out to use "
                          "the manifest's fold column (or 5 grouped folds)")
    config = _config_from_args(args)
    only = [int(k) for k in args.only.split(",")] if args.only else None
    print_cv_summary(cross_validate(config, out=args.out, folds=args.folds, only=only))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from clipwise._console import print_evaluation, print_recompute
    from clipwise.run import RunFolder

    if args.recompute:
        from clipwise.infer.recompute import recompute_run

        if args.data or args.split:
            raise ConfigError("--recompute checks the run's own numbers; leave out --data and --split")
        result = recompute_run(args.run, tolerance=args.tolerance)
        print_recompute(result, fmt=args.format)
        return 0 if result["ok"] else 1
    from clipwise.infer.evaluate import evaluate_run

    result = evaluate_run(args.run, data=args.data, split=args.split, checkpoint=args.checkpoint,
                          skip_bad=args.skip_bad)
    print_evaluation(result, task_name=RunFolder.open(args.run).task.name, fmt=args.format)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from clipwise.cli_predict import predict_command  # files, long recordings and batch jobs

    return predict_command(args)


def cmd_check(args: argparse.Namespace) -> int:
    from clipwise.data.check import check_manifest
    from clipwise.data.manifest import read_manifest

    df = read_manifest(args.manifest)
    report = check_manifest(df, side=args.side, progress=not args.json)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    # as linters do: errors (unreadable files, leaks) fail the command, warnings only with --strict
    errors = [f for f in report.findings if f.severity == "error"]
    return 1 if errors or (args.strict and report.findings) else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from clipwise.evaluate.compare import collect, leaderboard_csv, leaderboard_markdown, resolve_metric, \
        write_leaderboard

    args.metric = resolve_metric(args.paths, args.metric, split=args.split)
    entries = collect(args.paths, metric=args.metric, split=args.split)
    if args.format == "csv":
        print(leaderboard_csv(entries), end="")
    else:
        print(leaderboard_markdown(entries, metric=args.metric, split=args.split), end="")
    if args.out:
        print(f"\nwrote {write_leaderboard(entries, args.out, metric=args.metric, split=args.split)} "
              "(with leaderboard.csv and leaderboard.png)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from clipwise.sweep import load_space, sweep_with_helpers

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    space = load_space(args.space)
    config = _config_from_args(args)
    if args.worker_threads:
        config.train.threads = args.worker_threads
    return sweep_with_helpers(config, space, args.out, argv=args.argv, jobs=args.jobs, trials=args.trials,
                              sampler=args.sampler, metric=args.metric, seed=args.seed, cv=args.cv, prune=args.prune)


def cmd_lr_find(args: argparse.Namespace) -> int:
    from clipwise.training.lr_find import lr_range_test

    config = _config_from_args(args)
    result = lr_range_test(config, out=args.out, start=args.start, end=args.end, steps=args.steps)
    print(f"learning-rate range test over {result['steps_run']} steps: lowest smoothed loss at "
          f"{result['min_loss_lr']:.3g}, steepest descent at {result['steepest_lr']:.3g}")
    print(f"suggested: optim.lr={result['suggested_lr']:.2g}  (curve: {Path(args.out) / 'lr_find.png'})")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from clipwise._console import print_ensemble
    from clipwise.kinds.ensemble import build_ensemble

    calibrate = {"auto": None, "on": True, "off": False}[args.calibrate]
    print_ensemble(build_ensemble(args.runs, args.out, weights=args.weights, calibrate=calibrate))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from clipwise.kinds import get_kind
    from clipwise.run import RunFolder

    if args.calibration is not None and not args.int8:
        raise ConfigError("--calibration sets the clips the int8 model is calibrated on: add --int8, or leave it out")
    if args.calibration is not None and args.calibration < 1:
        raise ConfigError(f"--calibration must be at least 1 clip, got {args.calibration}")
    if not 0 < args.tolerance < 1:
        raise ConfigError(f"--tolerance is the largest probability difference accepted, between 0 and 1; got "
                          f"{args.tolerance}")
    run = RunFolder.open(args.run)
    out = get_kind(run.kind).export(run, Path(args.out), overwrite=args.overwrite,
                                    torchscript=args.format == "torchscript", int8=args.int8,
                                    calibration=args.calibration, tolerance=args.tolerance)
    from clipwise._console import print_export

    print_export(out)
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
    s.add_argument("--model", help=f"model name (default: {DEFAULT_MODEL}; see `clipwise models`)")
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
    s.add_argument("--use-case", choices=USE_CASES, help="recommend a model")
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
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.add_argument("--download", action="store_true", help="download and unpack the recipe's dataset into --root "
                   "first (skipped when it is there)")
    for col in ("path", "label", "split", "fold", "group", "start", "end"):
        s.add_argument(f"--{col}-column", dest=f"{col}_column", help=f"column holding the {col} (CSV sources)")
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("train", help="train a model and write a run folder")
    _run_options(s, data_required=False)
    s.add_argument("--test-fold", type=int, help="with a fold column: the fold used as test set")
    s.add_argument("--out", help="run folder (default: runs/<data>-<model>-<time>)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    s.add_argument("--overwrite", action="store_true", help="train into --out even if it holds a run: the old run "
                   "is moved aside to <out>.replaced-<time>, never deleted")
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
    s.add_argument("--skip-bad", action="store_true", help="score the rows whose audio can be read (the skipped "
                   "ones are listed)")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("predict", help="top-k labels for audio files or folders; long recordings window by window; "
                       "batch jobs over a manifest")
    s.add_argument("run", help="run folder or export bundle (or a run's checkpoint, RUN/checkpoints/last.ckpt)")
    s.add_argument("paths", nargs="*", help="audio files or folders (searched recursively)")
    s.add_argument("--top-k", type=int, default=3)
    s.add_argument("--skip-bad", action="store_true", help="exit 0 when some files cannot be decoded (they are "
                   "listed on stderr and the others scored either way)")
    s.add_argument("--format", default="table", choices=["table", "csv", "json"])
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    g = s.add_argument_group("long recordings (scored window by window, decoded in blocks)")
    g.add_argument("--window", type=float, metavar="SECONDS", help="window length (default: the model's clip length)")
    g.add_argument("--hop", type=float, metavar="SECONDS", help="distance between window starts (default: the window)")
    g.add_argument("--timeline", metavar="CSV", help="write one row per window: start, end, one column per class")
    g.add_argument("--events", metavar="FILE", help="write events: runs of windows above a class's threshold")
    g.add_argument("--events-format", default="csv", choices=EVENT_FORMATS,
                   help="csv (start, end, label, max_score, mean_score), audacity (label track) or raven (selection "
                        "table)")
    g.add_argument("--threshold", type=float, help="one decision threshold for every class (default: the run's tuned "
                   "thresholds for multi-label runs, else 0.5)")
    g.add_argument("--thresholds", metavar="JSON", help="per-class thresholds: {label: threshold} or a run's "
                   "thresholds.json")
    g.add_argument("--min-duration", type=float, metavar="SECONDS", help="drop events shorter than this (default 0)")
    g.add_argument("--gap", type=float, metavar="SECONDS",
                   help="merge events of a label separated by at most this much (default 0)")
    g = s.add_argument_group("batch jobs (many files)")
    g.add_argument("--manifest", metavar="CSV", help="score every row of a manifest (a path column; optional "
                   "start/end) instead of PATHS")
    g.add_argument("--out", help="results: FILE.parquet or FILE.csv (local engine), a folder (ray engine)")
    g.add_argument("--jobs", type=int, default=None, help="decoding worker processes (default: cores - 1); "
                   "with --engine ray, scoring actors")
    g.add_argument("--resume", action="store_true", help="keep the rows already in --out and score the rest")
    g.add_argument("--engine", default="local", choices=("local", "ray"), help="local processes, or Ray Data on a "
                   "Ray cluster (pip install 'clipwise[ray]')")
    g.add_argument("--address", help="the Ray cluster to join (default: a local Ray instance)")
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("export", help="export a trained network as a bundle (ONNX, checked for parity) that scores "
                       "audio without torch")
    s.add_argument("run", help="run folder")
    s.add_argument("--out", required=True, help="the bundle folder to write")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists (the old one is kept aside)")
    s.add_argument("--format", default="onnx", choices=("onnx", "torchscript"),
                   help="torchscript: add model.pt (torch.jit) next to the ONNX graph the runtime uses")
    s.add_argument("--int8", action="store_true", help="add model.int8.onnx: Conv/Gemm quantised to int8 (frontend "
                   "in fp32), calibrated on training clips, checked on test clips")
    s.add_argument("--calibration", type=int, metavar="N", help="training clips the int8 model is calibrated on "
                   "(default 512)")
    s.add_argument("--tolerance", type=float, default=1e-4, help="the largest difference of a probability accepted "
                   "between the model and an exported fp32 graph (default 1e-4)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("check", help="find unreadable files, imbalance, group leakage and duplicate audio")
    s.add_argument("manifest", help="manifest CSV")
    s.add_argument("--side", default="auto", help="column whose values are compared for leakage "
                   "(default: split, else fold)")
    s.add_argument("--json", action="store_true", help="print the findings as JSON")
    s.add_argument("--strict", action="store_true", help="exit with status 1 on warnings too (errors always do)")
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
    s.add_argument("--sampler", default="tpe", choices=SWEEP_SAMPLERS)
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
    from clipwise._console import quiet_third_party

    quiet_third_party()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value settings may come anywhere, also after options (argparse takes a positional list in one run)
    settings = [a for a in extra if "=" in a and not a.startswith("-")]
    if extra and (len(settings) < len(extra) or not hasattr(args, "overrides")):
        parser.parse_args(argv)  # argparse's own message, naming what it did not recognise (exits 2)
    if settings:
        args.overrides = [*args.overrides, *settings]
    args.argv = argv  # as given, for helper processes (sweep --jobs)
    try:
        return args.fn(args)
    except ClipwiseError as e:
        print(f"clipwise {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the file system said no (a full disk, a path through a file, no permission)
        where = f": {e.filename}" if e.filename else ""
        print(f"clipwise {args.command}: error: {e.strerror or e}{where}. Choose another path (or free the disk) and "
              "run the command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = {"train": " Resume with `clipwise train --resume RUN_DIR`.",
                "cv": " Re-run the same command with the same --out: finished folds are kept, the interrupted one "
                      "resumes."}.get(args.command, "")
        print(f"\nclipwise {args.command}: interrupted.{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
