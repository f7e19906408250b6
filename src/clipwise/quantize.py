"""INT8 bundles: onnxruntime static quantisation (QDQ) of a bundle's graph, calibrated on the run's training clips
and checked on its test clips.

Only the Conv and Gemm nodes are quantised (weights per channel in int8, activations in uint8), and of those not
the first and the last. The log-mel frontend stays in fp32: its mel projection is a MatMul whose inputs span many
orders of magnitude before the log, and quantising it costs most of a model's accuracy. The first layer sees the
normalised spectrogram itself and the last one gives the logits; both are small, and keeping them in fp32 took the
default model's top-1 agreement on ESC-50 fold 1 from 96.8 % to 98.5 %, and calibrating on 512 clips instead of
128 to 99.25 % (BENCHMARKS.md). The int8 graph must agree with the fp32 one on the top label of
at least :data:`MIN_AGREEMENT` of the run's test clips, or export fails; the accuracy of both on those clips is
written into bundle.json, so the change is on record.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipwise.bundle import INT8_FILE, MODEL_FILE
from clipwise.data.audio import frame_windows
from clipwise.data.dataset import AudioStore
from clipwise.errors import RunError
from clipwise.run import RunFolder
from clipwise.runtime import BundleModel

#: training clips the activations are calibrated on, by default
CALIBRATION_CLIPS = 512
#: the least share of test clips whose top label the int8 graph must keep
MIN_AGREEMENT = 0.99
#: the most test clips scored for the agreement check (a larger test set is sampled, in order)
AGREEMENT_CLIPS = 2000
#: the node types quantised
QUANTISED_OPS = ("Conv", "Gemm")


def _read(rows: pd.DataFrame, sample_rate: int) -> tuple[list[np.ndarray], list[int]]:
    """The decodable clips of ``rows`` and their row positions (a clip moved since training is left out)."""
    store, failed = AudioStore.load_checked(rows, sample_rate=sample_rate)
    bad = set(failed.index)
    kept = [i for i, index in enumerate(rows.index) if index not in bad]
    return store.waves, kept


class _Calibration:
    """onnxruntime's CalibrationDataReader over windows of training clips, a few at a time."""

    def __init__(self, windows: np.ndarray, input_name: str, *, batch: int = 16):
        self.batches = iter([{input_name: windows[i:i + batch]} for i in range(0, len(windows), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # pragma: no cover - called by some onnxruntime versions only
        pass


def _first_and_last(path: Path) -> list[str]:
    """The names of the first and the last Conv / Gemm node of the graph at ``path`` (in graph order)."""
    import onnx

    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in QUANTISED_OPS]
    return sorted({names[0], names[-1]}) if names else []


def quantize_bundle(stage: Path, run: RunFolder, *, calibration: int | None = None) -> dict[str, Any]:
    """Write ``model.int8.onnx`` next to the fp32 graph of the bundle in ``stage`` (whose bundle.json is written)
    and return its record for bundle.json: calibration clips, size, agreement and accuracy change.

    Raises:
        ConfigError: ``calibration`` below 1.
        RunError: no training or test clip can be read, or the int8 graph keeps the top label of fewer than
            :data:`MIN_AGREEMENT` of the test clips.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    from clipwise.errors import ConfigError

    calibration = CALIBRATION_CLIPS if calibration is None else int(calibration)
    if calibration < 1:
        raise ConfigError(f"--calibration must be at least 1 clip, got {calibration}")
    fp32 = BundleModel(stage)
    splits = run.load_splits()
    train_rows = splits[splits["split"] == "train"]
    # an even spread over the training clips (the split is often sorted by class)
    pick = np.unique(np.linspace(0, len(train_rows) - 1, num=min(calibration, len(train_rows))).astype(int))
    waves, _ = _read(train_rows.iloc[pick], fp32.sample_rate) if len(train_rows) else ([], [])
    if not waves:
        raise RunError(f"none of the training clips in {run.splits_path} can be read, so the int8 model cannot be "
                       "calibrated; export where the run's audio is, or without --int8")
    windows = np.concatenate([frame_windows(w, window_samples=fp32.clip_samples, hop_samples=fp32.hop_samples,
                                            pad_mode=fp32.pad_mode) for w in waves])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime's advice to run pre-processing, which is done here
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(stage / MODEL_FILE), str(prepared), skip_symbolic_shape=True)
        kept = _first_and_last(prepared)
        quantize_static(str(prepared), str(stage / INT8_FILE), _Calibration(windows, fp32.input_name),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTISED_OPS), per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, nodes_to_exclude=kept)
    int8 = BundleModel(stage, model_file=INT8_FILE)
    return {"file": INT8_FILE, "calibration_clips": len(waves), "quantised_ops": list(QUANTISED_OPS),
            "kept_in_fp32": kept,
            "size_bytes": (stage / INT8_FILE).stat().st_size, "fp32_size_bytes": (stage / MODEL_FILE).stat().st_size,
            **_agreement(run, splits, fp32, int8)}


def _agreement(run: RunFolder, splits: pd.DataFrame, fp32: BundleModel, int8: BundleModel) -> dict[str, Any]:
    rows = splits[splits["split"] == "test"]
    rows = rows if len(rows) else splits[splits["split"] == "val"]
    rows = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, num=min(AGREEMENT_CLIPS, len(rows))).astype(int))]
    waves, kept = _read(rows, fp32.sample_rate) if len(rows) else ([], [])
    if not waves:
        raise RunError(f"none of the test clips in {run.splits_path} can be read, so the int8 model cannot be "
                       "checked; export where the run's audio is, or without --int8")
    a, b = fp32.score_waves(waves), int8.score_waves(waves)
    agreement = float((a.argmax(1) == b.argmax(1)).mean())
    task = fp32.task
    y = task.encode(list(rows.iloc[kept]["label"]), fp32.labels)
    mask = task.labelled(y)
    score_a = float(task.score(y[mask], a[mask])) if mask.any() else None
    score_b = float(task.score(y[mask], b[mask])) if mask.any() else None
    record = {"top1_agreement": agreement, "max_abs_difference": float(np.abs(a - b).max()), "clips": len(waves),
              "min_agreement": MIN_AGREEMENT, "metric": task.main_metric, "fp32_score": score_a, "int8_score": score_b,
              "score_change": None if score_a is None else score_b - score_a}
    if agreement < MIN_AGREEMENT:
        change = "" if score_a is None else f"; {task.main_metric} {score_a:.4f} -> {score_b:.4f}"
        raise RunError(f"the int8 model keeps the top label of only {agreement:.1%} of {len(waves)} test clips (at "
                       f"least {MIN_AGREEMENT:.0%} needed{change}); "
                       "nothing was written. Export without --int8, or calibrate on more clips (--calibration N)")
    return record
