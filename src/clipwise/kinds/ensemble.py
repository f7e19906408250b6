"""Ensembles of trained runs: probabilities averaged, with equal weights or weights learned on validation.
Single-label runs mix softmax probabilities, multi-label runs sigmoid ones (with per-class thresholds tuned
on the mixed validation scores, as a multi-label run does).

``clipwise ensemble RUN RUN ... --out DIR`` checks that the members were trained on the same labels and scored
the same validation and test clips, combines their saved probabilities (no audio is decoded), and writes a run
folder like any other: ensemble.json (members and weights), labels.json, predictions, summary.json, report.md.
``evaluate`` and ``predict`` work on it: each member scores the audio with its own frontend and clip length
(members may differ in sample rate, features and architecture) and the weighted mean is the ensemble's output.
The folder is self-contained: each member's model (the weights of its best checkpoint, without the optimiser
state; a baseline's fitted pipeline; a nested ensemble) is copied into ``members/``, so the ensemble can be
moved or shipped alone; ensemble.json names the source runs too.

Learned weights minimise the validation log-loss (multi-label: the mean binary cross-entropy) over the
probability simplex (a softmax parametrisation, optimised with L-BFGS); the test split is never used to choose
them. Before the weights are learned, each member is calibrated on validation by temperature scaling (one
number per member, ``softmax(log p / T)``; multi-label ``sigmoid(logit p / T)``): members trained with mixup and
label smoothing are under-confident by different amounts, and log-loss weights fitted to raw probabilities
favour the most confident member rather than the most useful mix (on ESC-50 fold 1, three members got weights
1.00 / 0.00 / 0.00 raw and 0.54 / 0.36 / 0.10 calibrated). A temperature changes no member's ranking of
classes, so each member's own accuracy and lwlrap stay the same; ensemble.json keeps the temperatures and
``predict`` applies them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from clipwise.errors import ConfigError, RunError
from clipwise.evaluate.metrics import LOG_LOSS_EPS
from clipwise.evaluate.report import write_report
from clipwise.infer.scoring import MixedScoring, Scoring, temper
from clipwise.kinds.base import RunKind, get_kind, load_run, register_kind
from clipwise.run import RunFolder
from clipwise.summary import RunSummary, score_splits, write_summary


def fit_temperature(y: np.ndarray, probs: np.ndarray) -> float:
    """The temperature, between 0.05 and 20, that minimises the log-loss of ``temper(probs, t)`` on labelled
    (validation) data: ``y`` holds class indices, or a multi-hot matrix for sigmoid scores."""
    from scipy.optimize import minimize_scalar

    multi = np.asarray(y).ndim == 2
    t = np.asarray(y, dtype=bool) if multi else None

    def loss(log_t: float) -> float:
        q = temper(probs, float(np.exp(log_t)), multi_label=multi)
        picked = np.where(t, q, 1.0 - q) if multi else q[np.arange(len(y)), y]
        return float(-np.mean(np.log(np.clip(picked, LOG_LOSS_EPS, None))))

    res = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def learn_weights(y: np.ndarray, member_probs: list[np.ndarray]) -> np.ndarray:
    """Weights on the simplex that minimise the log-loss of ``sum_k w_k * probs_k`` on (validation) data:
    ``y`` holds class indices (softmax members) or a multi-hot matrix (sigmoid members; binary cross-entropy)."""
    from scipy.optimize import minimize

    stack = np.stack(member_probs).astype(np.float64)  # (members, clips, classes)
    if np.asarray(y).ndim == 2:
        # each (clip, class) cell is a Bernoulli event: the probability a member gave to what happened
        t = np.asarray(y, dtype=bool)
        picked = np.where(t[None], stack, 1.0 - stack).reshape(len(stack), -1)
    else:
        picked = stack[:, np.arange(len(y)), y]  # (members, clips)
    picked = np.clip(picked, LOG_LOSS_EPS, 1.0)

    def loss(z: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(z - z.max())
        w /= w.sum()
        mix = np.clip(w @ picked, LOG_LOSS_EPS, None)
        value = -np.mean(np.log(mix))
        grad_w = -np.mean(picked / mix[None, :], axis=1)
        return value, w * (grad_w - w @ grad_w)  # chain rule through the softmax

    res = minimize(loss, np.zeros(len(member_probs)), jac=True, method="L-BFGS-B")
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


def _load_member(path: str | os.PathLike) -> RunFolder:
    run = RunFolder(path)
    if not run.summary_path.is_file() or not run.labels_path.is_file():
        raise RunError(f"{path} is not a finished run folder (summary.json and labels.json are needed)")
    return run


def _member_dir(ensemble_dir: Path, member: str) -> Path:
    """A member's folder: relative to the ensemble's folder (a bundled copy), or the absolute path of a member
    that holds no model to copy (saved predictions only)."""
    path = Path(member)
    return path if path.is_absolute() else ensemble_dir / path


def build_ensemble(runs: list[str | os.PathLike], out: str | os.PathLike, *, weights: str = "learn",
                   calibrate: bool | None = None) -> Path:
    """Combine finished runs into an ensemble run folder.

    Args:
        runs: two or more run folders trained on the same labels and split.
        out: the ensemble's folder.
        weights: ``learn`` (on validation), ``mean`` (equal), or comma-separated numbers.
        calibrate: temperature-scale each member on validation before mixing; None = only when learning weights.

    Raises:
        ConfigError: fewer than two runs, different labels or clips, bad weights, calibration or learned
            weights without labelled validation predictions.
    """
    if len(runs) < 2:
        raise ConfigError("an ensemble needs at least two runs")
    members = [_load_member(r) for r in runs]
    target = Path(out).resolve()
    for m in members:
        source = m.root.resolve()
        if source.is_relative_to(target) or target.is_relative_to(source):
            raise ConfigError(f"--out {out} is, holds or lies inside the member run {m.root}: writing there would "
                              "overwrite what the member saved; choose another folder")
    if target.is_dir() and any(target.iterdir()) and not RunFolder(target).ensemble_path.is_file():
        raise ConfigError(f"--out {out} already holds files and is not an ensemble folder; choose a new or empty "
                          "folder (nothing was written)")
    labels = members[0].load_labels()
    for m in members[1:]:
        if m.load_labels() != labels:
            raise ConfigError(f"{m.root} has labels {m.load_labels()[:5]}..., {members[0].root} has "
                              f"{labels[:5]}...: ensemble members must be trained on the same labels")
    task = members[0].task
    multi = task.multi_label
    mixed_tasks = [str(m.root) for m in members if m.task != task]
    if mixed_tasks:
        raise ConfigError(f"{mixed_tasks} {'are not' if multi else 'are'} multi-label but {members[0].root} "
                          f"{'is' if multi else 'is not'}: ensemble members must solve the same task")
    scored: dict[str, tuple[list[str], np.ndarray, list[np.ndarray]]] = {}
    for split in ("val", "test"):
        if not all(m.predictions_path(split).is_file() for m in members):
            continue
        loaded = [m.load_predictions(split) for m in members]
        paths = list(loaded[0][0]["path"])
        for m, (frame, _, _) in zip(members, loaded):
            if list(frame["path"]) != paths:
                raise ConfigError(f"{m.root} scored other {split} clips than {members[0].root}: train the members "
                                  "on the same manifest and split (same --test-fold, seed and val settings)")
        scored[split] = (paths, loaded[0][2], [p for _, p, _ in loaded])
    if weights == "learn" and ("val" not in scored or scored["val"][1] is None):
        raise ConfigError("learning weights needs every member's labelled predictions_val.csv; use --weights mean")
    calibrate = weights == "learn" if calibrate is None else calibrate
    if calibrate and ("val" not in scored or scored["val"][1] is None):
        raise ConfigError("calibrating the members needs every member's labelled predictions_val.csv; use "
                          "--calibrate off")
    if calibrate or weights == "learn":
        y_val = scored["val"][1]
        keep = task.labelled(y_val)
    temperatures = [1.0] * len(members)
    if calibrate:
        temperatures = [fit_temperature(y_val[keep], p[keep]) for p in scored["val"][2]]
        for split, (paths, y, probs) in scored.items():
            scored[split] = (paths, y, [temper(p, t, multi_label=multi) for p, t in zip(probs, temperatures)])
    if weights == "learn":
        w = learn_weights(y_val[keep], [p[keep] for p in scored["val"][2]])  # on the calibrated scores
    elif weights == "mean":
        w = np.full(len(members), 1 / len(members))
    else:
        try:
            w = np.array([float(v) for v in weights.split(",")])
        except ValueError:
            raise ConfigError(f"--weights must be learn, mean or {len(members)} comma-separated numbers") from None
        if len(w) != len(members) or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"--weights needs {len(members)} non-negative numbers, got {weights!r}")
        w = w / w.sum()
    run = RunFolder(out)
    run.root.mkdir(parents=True, exist_ok=True)
    if run.members_dir.is_dir():  # rebuilding an ensemble: no copies of its earlier members stay behind
        shutil.rmtree(run.members_dir)
    names = [m.root.name for m in members]
    names = [f"{i}-{n}" if names.count(n) > 1 else n for i, n in enumerate(names)]  # e.g. two cv/fold1 members
    located = []
    for i, m in enumerate(members):
        rel = Path(run.members_dir.name) / f"{i}-{m.root.name}"
        located.append(rel.as_posix() if get_kind(m.kind).bundle(m, run.root / rel) else str(m.root.resolve()))
    spec = {"members": located, "names": names, "sources": [str(m.root.resolve()) for m in members],
            "weights": [float(x) for x in w], "weights_from": weights if weights in ("learn", "mean") else "given",
            "temperatures": [round(t, 6) for t in temperatures], "calibrated_on": "val" if calibrate else None}
    run.write_info(kind=EnsembleKind.name, task=task)
    run.save_json(run.ensemble_path, spec)
    run.save_labels(labels)
    if members[0].splits_path.is_file():  # `evaluate` finds the members' split here
        shutil.copy2(members[0].splits_path, run.splits_path)
    run.save_config_yaml({"ensemble": spec, "data": {"task": task.name}, "train": {"monitor": task.monitor}})
    mixed = {split: (paths, y, np.tensordot(w, np.stack(probs), axes=1)) for split, (paths, y, probs) in scored.items()}
    # the ensemble's own scores get their own per-class thresholds (multi-label), tuned on validation
    scores = score_splits(run, task, labels, mixed)
    members_scores: dict[str, dict[str, float]] = {}
    for split, (paths, y, probs) in scored.items():
        if y is not None:
            keep = task.labelled(y)
            for name, p in zip(names, probs):
                members_scores.setdefault(name, {})[f"{split}_{task.main_metric}"] = task.score(y[keep], p[keep])
    first = members[0].load_summary()
    summary = RunSummary(
        kind=EnsembleKind.name, scores=scores, baseline=first.get("baseline"),
        data={k: v for k, v in (first.get("data") or {}).items() if k.startswith("n_") or k == "n_classes"},
        model={"name": "ensemble of " + ", ".join(names)}, extra={"members": members_scores})
    write_summary(run, summary)
    write_report(run.root)
    return run.root


class EnsemblePredictor(MixedScoring):
    """Scores audio with every member (each with its own frontend and clip length) and mixes the
    probabilities with the ensemble's weights; the interface of :class:`~clipwise.infer.Predictor`."""

    def __init__(self, run: RunFolder):
        spec = run._read(run.ensemble_path, json.loads, "JSON")
        folders = [_member_dir(run.root, m) for m in spec["members"]]
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            raise RunError(f"ensemble member(s) {missing} are gone; the ensemble needs its members' folders "
                           "(rebuild it with `clipwise ensemble`, which copies the members' models into it)")
        self.members = [load_run(f) for f in folders]
        self.multi_label = run.task.multi_label  # how a temperature rescales the members' scores
        self.weights = np.asarray(spec["weights"], dtype=np.float64)
        self.temperatures = [float(t) for t in spec["temperatures"]]
        self.labels = list(self.members[0].labels)


def export_ensemble(run: RunFolder, out: str | os.PathLike, *, overwrite: bool = False,
                    clips: RunFolder | None = None, tolerance: float | None = None, **options: Any) -> Path:
    """An ensemble as a bundle: each member exported as a bundle of its own in ``members/<i>`` (checked for parity
    like any export), and the weights and temperatures in bundle.json; the mix of the bundles is then checked
    against the ensemble run on its test clips. ``options`` go to each member's export (torchscript, int8,
    calibration); ``tolerance`` to every parity check (default :data:`clipwise.export.PARITY_TOLERANCE`).

    Raises:
        ConfigError: ``out`` exists (and not ``overwrite``), or a member cannot export (a classical baseline).
        RunError: a member's folder is gone, or a parity check fails.
    """
    from clipwise._version import __version__
    from clipwise.bundle import BUNDLE_FILE, FORMAT_VERSION, MEMBERS_DIR, sha256
    from clipwise.export import PARITY_TOLERANCE, staged_bundle, write_bundle_meta
    from clipwise.runtime import EnsembleBundleModel

    spec = run._read(run.ensemble_path, json.loads, "JSON")
    clips = clips or run
    tolerance = PARITY_TOLERANCE if tolerance is None else tolerance
    with staged_bundle(out, overwrite=overwrite) as stage:
        members = []
        for i, (member, name, w, t) in enumerate(zip(spec["members"], spec["names"], spec["weights"],
                                                     spec["temperatures"])):
            folder = RunFolder(_member_dir(run.root, member))
            if not folder.root.is_dir():
                raise RunError(f"ensemble member {name} ({folder.root}) is gone; rebuild the ensemble with "
                               "`clipwise ensemble` (which copies its members' models) and export again")
            sub = f"{MEMBERS_DIR}/{i}"
            try:
                get_kind(folder.kind).export(folder, stage / sub, clips=clips, tolerance=tolerance, **options)
            except ConfigError as e:
                raise ConfigError(f"member {name} of the ensemble cannot be exported: {e}. Build an ensemble of "
                                  "networks only to export it") from None
            members.append({"name": name, "folder": sub, "weight": float(w), "temperature": float(t),
                            "bundle_sha256": sha256(stage / sub / BUNDLE_FILE)})
        copy = RunFolder(stage)
        copy.save_labels(run.load_labels())
        copy.write_info(kind="bundle", task=run.task)
        if run.thresholds_path.is_file():
            shutil.copy2(run.thresholds_path, copy.thresholds_path)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "clipwise_version": __version__, "format": "ensemble",
            "task": run.task.name, "members": members, "source_run": str(run.root.resolve()),
            "source_test_metrics": run.load_summary().get("test") if run.summary_path.is_file() else None,
        }
        bundled = EnsembleBundleModel(stage, meta=meta)
        meta["sample_rate"] = bundled.sample_rate
        copy.save_config_yaml({"data": {"sample_rate": bundled.sample_rate, "task": run.task.name}})
        meta["parity"] = _ensemble_parity(clips, EnsemblePredictor(run), bundled, tolerance=tolerance)
        write_bundle_meta(stage, meta)
    return Path(out)


def _ensemble_parity(clips: RunFolder, ensemble: EnsemblePredictor, bundled: Scoring, *,
                     tolerance: float) -> dict[str, Any]:
    """The ensemble run against its bundle on (up to 32 of) the run's test clips."""
    splits = clips.load_splits()
    rows = splits[splits["split"] == "test"]
    rows = (rows if len(rows) else splits[splits["split"] == "val"]).head(32)
    a, b = ensemble.predict_frame(rows), bundled.predict_frame(rows)
    worst = float(np.abs(a - b).max())
    if worst > tolerance:
        raise RunError(f"the exported ensemble differs from the ensemble run by up to {worst:.2e} in a probability "
                       f"(tolerance {tolerance:g}); nothing was written. Accept a larger difference with --tolerance")
    return {"max_abs_difference": worst, "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "clips": len(rows), "tolerance": tolerance}


@register_kind
class EnsembleKind(RunKind):
    name = "ensemble"
    order = 2
    description = "probabilities of finished runs, mixed with weights learned on validation"

    def export(self, run: RunFolder, out: Path, *, overwrite: bool = False, **options: Any) -> Path:
        return export_ensemble(run, out, overwrite=overwrite, **options)

    def load(self, run: RunFolder, *, checkpoint: str = "best", **options: Any) -> EnsemblePredictor:
        return EnsemblePredictor(run)

    def bundle(self, run: RunFolder, dest: Path) -> bool:
        copy = RunFolder(dest)
        copy.root.mkdir(parents=True, exist_ok=True)
        for path in (run.info_path, run.ensemble_path, run.config_path, run.labels_path, run.thresholds_path):
            if path.is_file():
                shutil.copy2(path, copy.root / path.name)
        if run.members_dir.is_dir():  # a nested ensemble's own copies of its members
            shutil.copytree(run.members_dir, copy.members_dir)
        return True
