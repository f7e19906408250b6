"""Classical baselines: summary features of each clip and a scikit-learn classifier, run like a deep model.

``clipwise train --model svm_rbf`` (or logreg, svm_linear, hgb, mlp) reads and splits the data exactly as
deep training does, extracts one feature vector per whole clip (statistics over time of log-mel, MFCC with
deltas, STFT band energies, CQT, spectral centroid / contrast / flatness and zero-crossing rate), fits
``StandardScaler -> classifier`` on the training split and writes the same run folder: config.yaml,
labels.json, predictions, summary.json (val, test, clean train, majority baseline) and the report. The fitted
pipeline is ``model.skops`` (skops.io: loading it never unpickles; only the scikit-learn types the baselines use are
accepted). Features are cached on disk per clip, keyed by the file and the feature config,
so a second baseline on the same data costs only its fit.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipwise._cache import ClipCache
from clipwise.config import SUMMARY_FEATURES, Config
from clipwise.data.dataset import AudioStore
from clipwise.data.leakage import leakage_summary
from clipwise.data.manifest import segment_seconds
from clipwise.data.prepare import clean_train_indices, data_facts, default_run_dir, prepare_data, write_run_files
from clipwise.errors import ConfigError, RunError, UnsafeFileError
from clipwise.evaluate.report import write_report
from clipwise.infer.scoring import Scoring
from clipwise.kinds.base import RunKind, register_kind
from clipwise.run import RunFolder
from clipwise.summary import RunSummary, score_splits, write_summary

FEATURES = SUMMARY_FEATURES


def _estimator(name: str, params: dict[str, Any], seed: int, *, smallest_class: int):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, LinearSVC

    # SVMs have no probabilities of their own: Platt scaling on internal folds of the training data (as many
    # as the smallest class allows), then one SVM fitted on all of it
    folds = max(2, min(5, smallest_class))
    builders = {
        "logreg": lambda p: LogisticRegression(**{"C": 1.0, "max_iter": 2000, **p}),
        "svm_linear": lambda p: CalibratedClassifierCV(LinearSVC(**{"C": 0.1, "max_iter": 5000, **p}), cv=folds,
                                                       ensemble=False),
        "svm_rbf": lambda p: CalibratedClassifierCV(SVC(**{"C": 10.0, "gamma": "scale", **p}), cv=folds,
                                                    ensemble=False),
        # min_samples_leaf 5 (not 20): datasets with a few dozen clips a class must still be able to split
        "hgb": lambda p: HistGradientBoostingClassifier(**{"max_iter": 300, "learning_rate": 0.1,
                                                           "min_samples_leaf": 5, "random_state": seed, **p}),
        "mlp": lambda p: MLPClassifier(**{"hidden_layer_sizes": (256,), "alpha": 1e-3, "max_iter": 500,
                                          "early_stopping": True, "random_state": seed, **p}),
    }
    try:
        return builders[name](params)
    except TypeError as e:
        raise ConfigError(f"model.params {params} are not accepted by the {name} baseline: {e}") from None


CLASSICAL_MODELS = {
    "logreg": "logistic regression on summary features (standardised)",
    "svm_linear": "linear SVM on summary features (standardised, Platt-calibrated probabilities)",
    "svm_rbf": "RBF-kernel SVM on summary features (standardised)",
    "hgb": "histogram gradient boosting on summary features",
    "mlp": "one-hidden-layer MLP on summary features (standardised)",
}


# -- features --------------------------------------------------------------------------------------------------
def _stats(x: np.ndarray, stats: tuple[str, ...]) -> list[np.ndarray]:
    """Statistics over time (axis 1) of a (features, frames) matrix."""
    out = []
    mean, std = x.mean(axis=1), x.std(axis=1)
    for s in stats:
        if s == "mean":
            out.append(mean)
        elif s == "std":
            out.append(std)
        elif s == "min":
            out.append(x.min(axis=1))
        elif s == "max":
            out.append(x.max(axis=1))
        elif s == "skew":
            out.append(((x - mean[:, None]) ** 3).mean(axis=1) / np.maximum(std, 1e-8) ** 3)
    return out


def summary_features(wave: np.ndarray, sample_rate: int, *, features: tuple[str, ...] = FEATURES,
                     stats: tuple[str, ...] = ("mean", "std"), n_mels: int = 64, n_mfcc: int = 20) -> np.ndarray:
    """One vector for a clip: ``stats`` over time of each chosen feature (see :data:`FEATURES`)."""
    import warnings

    with warnings.catch_warnings():  # librosa warns that short clips are shorter than its low-octave FFTs
        warnings.simplefilter("ignore", UserWarning)
        return _summary_features(wave, sample_rate, features=features, stats=stats, n_mels=n_mels, n_mfcc=n_mfcc)


def _summary_features(wave: np.ndarray, sample_rate: int, *, features: tuple[str, ...], stats: tuple[str, ...],
                      n_mels: int, n_mfcc: int) -> np.ndarray:
    import librosa

    y = np.asarray(wave, dtype=np.float32)
    if len(y) < 2048:
        y = np.pad(y, (0, 2048 - len(y)))
    n_fft, hop = 1024 if sample_rate > 12000 else 512, 256 if sample_rate > 12000 else 128
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop)) ** 2
    mel = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sample_rate, n_mels=n_mels), ref=1.0)
    parts: list[np.ndarray] = []
    for name in features:
        if name == "logmel":
            parts += _stats(mel, stats)
        elif name == "mfcc":
            mfcc = librosa.feature.mfcc(S=mel, n_mfcc=n_mfcc)
            width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2)) if mfcc.shape[1] >= 3 else 0
            deltas = ([librosa.feature.delta(mfcc, width=width), librosa.feature.delta(mfcc, order=2, width=width)]
                      if width >= 3 else [np.zeros_like(mfcc)] * 2)
            for m in (mfcc, *deltas):
                parts += _stats(m, stats)
        elif name == "bands":  # energy in 8 linear STFT bands, in dB
            edges = np.linspace(0, power.shape[0], 9).astype(int)
            bands = np.stack([power[a:b].sum(axis=0) for a, b in zip(edges[:-1], edges[1:])])
            parts += _stats(10 * np.log10(bands + 1e-10), stats)
        elif name == "cqt":
            fmin = 32.7
            n_bins = int(min(84, np.floor(12 * np.log2(0.45 * sample_rate / fmin))))
            cqt = librosa.amplitude_to_db(np.abs(librosa.cqt(y, sr=sample_rate, hop_length=512, fmin=fmin,
                                                            n_bins=n_bins, bins_per_octave=12)), ref=1.0)
            parts += _stats(cqt, stats)
        elif name == "spectral":
            spec = np.sqrt(power)
            centroid = librosa.feature.spectral_centroid(S=spec, sr=sample_rate) / (sample_rate / 2)
            flatness = librosa.feature.spectral_flatness(S=spec)
            contrast = librosa.feature.spectral_contrast(S=spec, sr=sample_rate, fmin=min(200.0, sample_rate / 80))
            parts += _stats(np.vstack([centroid, flatness, contrast]), stats)
        elif name == "zcr":
            parts += _stats(librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop), stats)
        else:
            raise ConfigError(f"unknown summary feature {name!r}; choose from {', '.join(FEATURES)}")
    return np.concatenate(parts).astype(np.float32)


def extract(frame, waves: list[np.ndarray], sample_rate: int, feature_config: dict[str, Any], *,
            progress: bool = False) -> np.ndarray:
    """Feature matrix for the rows of ``frame`` (decoded in ``waves``), cached on disk per row and config."""
    cache = ClipCache("features", version=1, config={**feature_config, "sample_rate": sample_rate})
    out = []
    rows = frame.to_dict("records")
    it = zip(rows, waves)
    if progress and len(rows) > 200:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(rows), desc="summary features", unit="clip", leave=False)
    for row, wave in it:
        key = cache.key(row["path"], *segment_seconds(row))
        cached = cache.get(key)
        if cached is not None and "features" in cached:
            out.append(cached["features"])
            continue
        vec = summary_features(wave, sample_rate, **feature_config)
        cache.put(key, {"features": vec})
        out.append(vec)
    return np.stack(out)


# -- training --------------------------------------------------------------------------------------------------
def train_classical(config: Config, *, out: str | Path | None = None) -> Path:
    """Fit a classical baseline as ``config`` says and write its run folder (see the module docstring)."""
    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    run = RunFolder(out or default_run_dir(config))
    t0 = time.time()
    config, data = prepare_data(config)
    if data.task.multi_label:
        raise ConfigError("the classical baselines are single-label; train a deep model for multi-label data")
    fc = config.classical.model_dump()
    frames = {s: data.part(s) for s in ("train", "val", "test")}
    feats = {s: extract(frames[s], data.stores[s].waves, data.stores[s].sample_rate, fc,
                        progress=config.train.progress) for s in frames if len(frames[s])}
    prep_seconds = time.time() - t0
    smallest = int(np.bincount(data.targets["train"]).min())
    pipe = make_pipeline(StandardScaler(), _estimator(config.model.name, dict(config.model.params), config.train.seed,
                                                      smallest_class=smallest))
    t1 = time.time()
    pipe.fit(feats["train"], data.targets["train"])
    train_seconds = time.time() - t1
    classes = list(pipe.classes_)
    if classes != list(range(len(data.labels))):  # every label occurs in training (checked), so this is a bug
        raise RunError(f"the baseline saw classes {classes}, expected 0..{len(data.labels) - 1}")
    write_run_files(run, config, data, kind=ClassicalKind.name)
    sio.dump(pipe, run.estimator_path)
    clean = clean_train_indices(len(data.targets["train"]), config.data.clean_train_clips, seed=config.train.seed)
    parts = {"val": (feats.get("val"), data.targets["val"], list(frames["val"]["path"])),
             "test": (feats.get("test"), data.targets["test"], list(frames["test"]["path"])),
             "train_clean": (feats["train"][clean], data.targets["train"][clean],
                             [list(frames["train"]["path"])[i] for i in clean])}
    t2 = time.time()
    scored = {split: (paths, y, pipe.predict_proba(x)) for split, (x, y, paths) in parts.items()
              if x is not None and len(y)}
    scores = score_splits(run, data.task, data.labels, scored)
    eval_seconds = time.time() - t2
    y_eval = data.targets["test"] if len(data.targets["test"]) else data.targets["val"]
    summary = RunSummary(
        kind=ClassicalKind.name,
        scores=scores,
        baseline=data.task.baseline(data.targets["train"], y_eval),
        data={**data_facts(config, data), "n_features": int(feats["train"].shape[1])},
        model={"name": config.model.name, "estimator": type(pipe[-1]).__name__,
               "size_bytes": run.estimator_path.stat().st_size},
        leakage=leakage_summary(data.leakage),
        timing={"prepare_seconds": round(prep_seconds, 1), "train_seconds": round(train_seconds, 1),
                "eval_clips_per_second": round(sum(len(p[1]) for p in parts.values()) / max(eval_seconds, 1e-9), 1)},
        extra={"monitor": None, "best_checkpoint": run.estimator_path.name},
    )
    write_summary(run, summary)
    write_report(run.root)
    return run.root


#: the scikit-learn types of the baselines' pipelines that skops does not trust by default (all plain estimator
#: state: loading them constructs the object and sets its attributes, nothing else)
TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
)


def load_estimator(path: Path):
    """A baseline's fitted pipeline, read with skops.io (no unpickling); refused when the file names any type
    beyond skops' defaults and :data:`TRUSTED_TYPES`.

    Raises:
        RunError: the file is missing or not a skops file.
        UnsafeFileError: the file names types clipwise does not load.
    """
    import skops.io as sio

    if not path.is_file():
        raise RunError(f"{path} is missing: the baseline's fitted pipeline; re-run `clipwise train --model ...`")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as e:  # noqa: BLE001 - a foreign or damaged file means the same thing to the user
        raise UnsafeFileError(f"{path} is not a clipwise baseline (not a skops file: {type(e).__name__}); retrain "
                              "the baseline with `clipwise train --model ...`") from None
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise UnsafeFileError(f"{path} names types a clipwise baseline never holds ({', '.join(unknown[:5])}); it "
                              "was not loaded, since loading could run their code. Retrain the baseline with "
                              "`clipwise train --model ...`")
    return sio.load(path, trusted=list(untrusted))


class ClassicalPredictor(Scoring):
    """Scores audio with a fitted baseline, with the interface of :class:`~clipwise.infer.predictor.Predictor`
    that ``evaluate`` and ``predict`` use."""

    def __init__(self, run: RunFolder):
        self.pipeline = load_estimator(run.estimator_path)
        cfg = run.load_config_dict()
        self.sample_rate = int(cfg["data"]["sample_rate"])
        self.feature_config = cfg["classical"]
        self.labels = run.load_labels()

    def predict_frame(self, df) -> np.ndarray:
        store = AudioStore.load(df, sample_rate=self.sample_rate, progress=True)
        return self.pipeline.predict_proba(extract(df, store.waves, self.sample_rate, self.feature_config))

    def score_waves(self, waves) -> np.ndarray:
        features = [summary_features(w, self.sample_rate, **self.feature_config) for w in waves]
        return self.pipeline.predict_proba(np.stack(features))


@register_kind
class ClassicalKind(RunKind):
    name = "classical"
    order = 1
    description = "summary features of each clip and a scikit-learn classifier"
    cannot_export = ("a classical baseline's summary features are librosa code, not a graph, so it has no ONNX "
                     "export; export a network instead (`clipwise train --model audiocnn`, then `clipwise export`), "
                     "or score with `clipwise predict` on the run folder")

    def trains(self, model_name: str) -> bool:
        return model_name in CLASSICAL_MODELS

    def models(self) -> list[tuple[str, str, str]]:
        return [(name, "classical", text) for name, text in CLASSICAL_MODELS.items()]

    def train(self, config: Config, *, out: str | os.PathLike | None = None, resume: bool = False,
              callbacks: Sequence[Any] = ()) -> Path:
        if resume:
            raise ConfigError("a classical baseline trains in one go; there is nothing to resume")
        return train_classical(config, out=out)

    def load(self, run: RunFolder, *, checkpoint: str = "best", **options: Any) -> ClassicalPredictor:
        return ClassicalPredictor(run)

    def bundle(self, run: RunFolder, dest: Path) -> bool:
        copy = RunFolder(dest)
        copy.root.mkdir(parents=True, exist_ok=True)
        for path in (run.info_path, run.config_path, run.labels_path, run.estimator_path):
            shutil.copy2(path, copy.root / path.name)
        return True
