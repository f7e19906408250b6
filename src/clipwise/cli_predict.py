"""``clipwise predict``: the top-k labels of files (printed), long recordings window by window (a timeline and
events), and batch jobs over a manifest (local worker processes or Ray). The parser is in :mod:`clipwise.cli`;
the work is in :mod:`clipwise.infer.longform`, :mod:`clipwise.infer.events`, :mod:`clipwise.infer.batch` and
:mod:`clipwise.infer.ray_engine`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clipwise.errors import ConfigError


def predict_command(args: argparse.Namespace) -> int:
    """`clipwise predict`: the top-k of files, a long recording window by window, or a batch job."""
    from clipwise._console import print_predictions
    from clipwise.api import load
    from clipwise.infer.predictor import find_audio

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.manifest:
        return _predict_manifest(args)
    if not args.paths:
        raise ConfigError("give audio files or folders to score, or --manifest CSV (with --out) for a batch job")
    batch_only = [flag for flag, given in (("--out", args.out), ("--jobs", args.jobs is not None),
                                           ("--resume", args.resume), ("--engine", args.engine != "local"),
                                           ("--address", args.address)) if given]
    if batch_only:
        verb = "belongs" if len(batch_only) == 1 else "belong"
        raise ConfigError(f"{', '.join(batch_only)} {verb} to batch jobs: add --manifest CSV (PATHS are scored and "
                          "printed; long recordings write --timeline / --events)")
    long_form = any(getattr(args, k) is not None for k in ("window", "hop", "threshold", "thresholds", "gap",
                                                            "min_duration", "timeline", "events"))
    files = find_audio(args.paths)  # a missing file is named before any model is loaded
    model = load(args.run, checkpoint=args.checkpoint)
    if long_form:
        return _predict_windows(args, model, files)
    files, probs, bad = model.score_files(files)
    top = model.scorer.top_k(probs, k=args.top_k)
    tags = model.task.decide(probs, model.labels, model.thresholds()) if model.task.multi_label else None
    print_predictions(files, top, fmt=args.format, tags=tags)
    for path, reason in bad:
        print(f"clipwise predict: skipped {path}: {reason}", file=sys.stderr)
    if bad and not args.skip_bad:
        print(f"clipwise predict: error: {len(bad)} of {len(files) + len(bad)} file(s) could not be scored (listed "
              "above); pass --skip-bad to exit 0 when some files are unreadable", file=sys.stderr)
        return 1
    return 0


def _predict_windows(args: argparse.Namespace, model, files) -> int:
    """`predict --window/--hop/--timeline/--events`: long recordings, window by window."""
    from contextlib import nullcontext

    from clipwise.infer.events import EventTracker, check_event_format, check_seconds, resolve_thresholds, \
        write_events
    from clipwise.infer.longform import TimelineWriter, check_windowing, refuse_existing, scan_recording

    window = args.window
    if window is None:  # the model's clip length, as the run (or bundle) folder records it
        window = (model.run.load_config_dict().get("data") or {}).get("clip_seconds")
        if not isinstance(window, (int, float)):
            raise ConfigError(f"{model.run.root} records no single clip length (a {model.kind} run); pass "
                              "--window SECONDS")
    window, hop = check_windowing(window, window if args.hop is None else args.hop)
    tracker = EventTracker(model.labels, resolve_thresholds(model.labels, threshold=args.threshold,
                                                            path=args.thresholds, tuned=model.thresholds()),
                           gap_seconds=check_seconds(args.gap or 0.0, name="--gap"),
                           min_duration_seconds=check_seconds(args.min_duration or 0.0, name="--min-duration"))
    several = len(files) > 1
    if args.events:
        check_event_format(args.events_format, recordings=len(files))
    refuse_existing({"--timeline": args.timeline, "--events": args.events})
    # with files to write, the per-file lines are the command's output; else the events are, and the lines go aside
    log = sys.stdout if args.timeline or args.events else sys.stderr
    found, names = [], []
    with TimelineWriter(args.timeline, model.labels, with_file=several) if args.timeline else nullcontext() as tl:
        for path in files:
            scan = scan_recording(model.scorer, path, window_seconds=window, hop_seconds=hop, tracker=tracker,
                                  timeline=tl, progress=True, file=str(path))
            found += scan.events
            names += [str(path)] * len(scan.events)
            d = scan.duration_seconds
            print(f"{path}: {f'{d / 3600:.2f} h' if d >= 3600 else f'{d:.1f} s'}, {scan.windows} windows, "
                  f"{len(scan.events)} event(s), {scan.seconds:.2f} s taken ({scan.real_time_factor:.1f}x real "
                  "time)", file=log)
        if args.events:
            write_events(found, args.events, fmt=args.events_format, sample_rate=model.scorer.sample_rate,
                         files=names if several else None)
    if not (args.timeline or args.events):
        _print_events(found, names if several else None, fmt=args.format)
    return 0


def _print_events(events, files, *, fmt: str) -> None:
    import pandas as pd

    df = pd.DataFrame([vars(e) for e in events], columns=["start", "end", "label", "max_score", "mean_score"])
    if files is not None:
        df.insert(0, "file", files)
    if fmt == "json":
        print(json.dumps(df.round(6).to_dict("records"), indent=2))
    elif fmt == "csv":
        df.to_csv(sys.stdout, index=False, float_format="%.6f", lineterminator="\n")
    else:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(df) else "no events")


def _predict_manifest(args: argparse.Namespace) -> int:
    """`predict --manifest CSV --out FILE`: a batch job over many files, resumable."""
    from clipwise.api import load
    from clipwise.infer.batch import Outputs, default_jobs, open_source, run_batch

    ray = args.engine == "ray"
    if args.paths:
        raise ConfigError(f"give audio PATHS or --manifest, not both (got {args.paths[0]} and --manifest "
                          f"{args.manifest}); list the files in the manifest, or leave --manifest out")
    if not args.out:
        raise ConfigError("--manifest needs --out: the results file (FILE.parquet or FILE.csv; a folder with "
                          "--engine ray)")
    if args.window is not None or args.hop is not None or args.timeline or args.events:
        raise ConfigError("--manifest scores each row whole; --window, --hop, --timeline and --events are for long "
                          "recordings given as PATHS (a manifest's start/end columns cut segments)")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.address and not ray:
        raise ConfigError("--address is the Ray cluster to join: add --engine ray, or leave --address out")
    if ray and Path(args.out).suffix.lower() in (".csv", ".parquet"):
        raise ConfigError(f"--engine ray writes a folder of Parquet files: give --out a folder (such as "
                          f"{Path(args.out).with_suffix('')}/), not {args.out}")
    source = open_source(args.manifest)  # a bad manifest is named before any model is loaded
    model = load(args.run, checkpoint=args.checkpoint)
    outputs = Outputs(top_k=args.top_k, task=model.task, thresholds=model.thresholds())
    if ray:
        from clipwise.infer.ray_engine import run_ray

        checkpoint = Path(args.run).stem if Path(args.run).is_file() else args.checkpoint  # RUN/checkpoints/X.ckpt
        result = run_ray(source, run=model.run.root, checkpoint=checkpoint, out=args.out, outputs=outputs,
                         address=args.address, actors=args.jobs, resume=args.resume)
    else:
        result = run_batch(model.scorer, source, out=args.out, outputs=outputs, jobs=args.jobs or default_jobs(),
                           resume=args.resume)
    for path, reason in result.first_errors:
        print(f"clipwise predict: skipped {path}: {reason}", file=sys.stderr)
    if result.skipped > len(result.first_errors):
        print(f"clipwise predict: ... and {result.skipped - len(result.first_errors)} more", file=sys.stderr)
    already = f" ({result.already} done before)" if result.already else ""
    listed = f" (listed in {result.errors_file})" if result.errors_file else ""
    print(f"scored {result.scored} rows{already}, skipped {result.skipped}{listed}, {result.seconds:.1f} s, "
          f"{result.scored / max(result.seconds, 1e-9):.1f} clips/s -> {result.out}")
    if result.skipped and not args.skip_bad:
        print(f"clipwise predict: error: {result.skipped} of {result.scored + result.skipped} row(s) could not be "
              f"scored (listed in {result.errors_file}); pass --skip-bad to exit 0 when some files are unreadable",
              file=sys.stderr)
        return 1
    return 0
