"""``clipwise export RUN --out BUNDLE``: a trained network as an ONNX bundle (see :mod:`clipwise.bundle`), with
parity against the eager model measured on the run's own clips and written into bundle.json.

The exported graph is the whole model, waveform to probabilities: the frontend and its normalisation, the
backbone and head, and the task's activation. Batch and time axes are dynamic. Parity is part of export: the
run's test clips (else validation), windowed as ``clipwise predict`` windows them and at twice the clip length,
go through both; export fails when a probability differs by more than :data:`PARITY_TOLERANCE`.

``--format torchscript`` adds ``model.pt`` (``torch.jit.trace`` of the same graph, checked the same way) for
programs that serve with torch; ``--int8`` adds ``model.int8.onnx`` (see :mod:`clipwise.quantize`). The ONNX graph
is always there: it is what the torch-free runtime scores with.
"""

from __future__ import annotations

import json
import contextlib
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipwise._io import atomic_write_text, move_aside
from clipwise._version import __version__
from clipwise.bundle import BUNDLE_FILE, FORMAT_VERSION, MODEL_FILE, TORCHSCRIPT_FILE, sha256
from clipwise.data.audio import frame_windows, load_audio
from clipwise.data.manifest import segment_seconds
from clipwise.errors import ConfigError, RunError
from clipwise.infer.predictor import Predictor
from clipwise.models.classifier import ACTIVATIONS, AudioClassifier
from clipwise.run import RunFolder
from clipwise.task import get_task

#: largest difference of a probability between the eager model and the exported graph
PARITY_TOLERANCE = 1e-4
#: clips of the run scored by both for the parity check
PARITY_CLIPS = 32


class _WithActivation(torch.nn.Module):
    def __init__(self, model: AudioClassifier, activation: str):
        super().__init__()
        self.model, self.activation = model, activation

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](self.model(waveform))


def _parity_windows(run: RunFolder, spec, hop_samples: int) -> list[np.ndarray]:
    """Batches of windows cut from the run's own clips: at the clip length, and at twice it."""
    splits = run.load_splits()
    part = splits[splits["split"] == "test"]
    part = part if len(part) else splits[splits["split"] == "val"]
    windows = []
    for row in part.head(PARITY_CLIPS).to_dict("records"):
        start, end = segment_seconds(row)
        try:
            x = load_audio(row["path"], sample_rate=spec.sample_rate, start_seconds=start, end_seconds=end)
        except Exception:  # noqa: BLE001 - a clip moved since training is simply not used for parity
            continue
        windows.append(frame_windows(x, window_samples=spec.clip_samples, hop_samples=hop_samples,
                                     pad_mode=spec.pad_mode))
    if not windows:
        raise RunError(f"none of the clips in {run.splits_path} can be read, so parity cannot be measured; export "
                       "where the run's audio is")
    single = np.concatenate(windows)
    double = np.concatenate([np.concatenate([w[0], w[-1]])[None, :] for w in windows])  # two windows long
    return [single, double]


def export_onnx(graph: torch.nn.Module, path: Path, *, clip_samples: int,
                windows: list[np.ndarray]) -> tuple[float, int, int, str]:
    """Export ``graph`` (waveform -> probabilities) to ONNX at ``path`` and score ``windows`` (batches of
    waveforms) with both. The batch axis is dynamic; the time axis too where the graph allows, else (a GRU over
    frames, say) it is fixed at the clip length, which is all the runtime feeds it.

    Returns:
        ``(largest absolute difference, arg-max agreements, windows scored, "dynamic" or "fixed")``.

    Raises:
        RunError: the graph cannot be exported either way.
    """
    try:
        _save_onnx(graph, path, clip_samples=clip_samples, dynamic_time=True)
        return (*_parity(graph, path, windows), "dynamic")
    except Exception:  # noqa: BLE001 - any failure of the dynamic export: try the fixed time axis next
        pass
    try:
        _save_onnx(graph, path, clip_samples=clip_samples, dynamic_time=False)
        return (*_parity(graph, path, [w for w in windows if w.shape[1] == clip_samples]), "fixed")
    except Exception as e:  # noqa: BLE001 - the exporter and onnxruntime raise many kinds
        raise RunError(f"this model does not export to ONNX yet ({type(e).__name__}: {str(e).splitlines()[0][:200]});"
                       " score with `clipwise predict` on the run folder instead") from None


def _save_onnx(graph: torch.nn.Module, path: Path, *, clip_samples: int, dynamic_time: bool) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    axes = {0: batch}
    if dynamic_time:
        axes[1] = torch.export.Dim("samples", min=clip_samples, max=clip_samples * 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, (torch.zeros(2, clip_samples),), dynamo=True, external_data=False,
                                    verbose=False, input_names=["waveform"], output_names=["probabilities"],
                                    dynamic_shapes={"waveform": axes})
    program.save(str(path))


def _parity(graph: torch.nn.Module, path: Path, windows: list[np.ndarray]) -> tuple[float, int, int]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failed run is reported by the exception, not by onnxruntime's own log too
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst, agree, n, _ = _compare(graph, lambda w: session.run(None, {"waveform": w})[0], windows)
    return worst, agree, n


def _compare(graph: torch.nn.Module, exported, windows: list[np.ndarray], *,
             skip_failures: bool = False) -> tuple[float, int, int, list[int]]:
    """The eager ``graph`` against ``exported`` (a function of a float32 batch to probabilities) on ``windows``,
    and on batches of 1 and 3 (the graph was traced at 2: a batch axis fixed by the export must show here).

    Returns:
        ``(largest absolute difference, arg-max agreements, windows scored, lengths scored)``; with
        ``skip_failures`` a batch that ``exported`` cannot take is left out (a length the trace froze out).
    """
    worst, agree, n, lengths = 0.0, 0, 0, []
    for w in [*windows, windows[0][:1], np.concatenate([windows[0]] * 2)[:3]]:
        w = np.ascontiguousarray(w, dtype=np.float32)
        try:
            got = np.asarray(exported(w))
        except Exception:  # noqa: BLE001 - exporters and runtimes raise many kinds
            if skip_failures:
                continue
            raise
        with torch.no_grad():
            eager = graph(torch.from_numpy(w)).numpy()
        worst = max(worst, float(np.abs(eager - got).max()))
        agree += int((eager.argmax(1) == got.argmax(1)).sum())
        n += len(w)
        lengths.append(int(w.shape[1]))
    return worst, agree, n, lengths


def export_torchscript(graph: torch.nn.Module, path: Path, *, clip_samples: int, windows: list[np.ndarray],
                       tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Trace ``graph`` with ``torch.jit.trace`` into ``path`` and measure it against the eager graph on ``windows``
    (and batches of 1 and 3): the parity record of bundle.json.

    Raises:
        RunError: the graph cannot be traced, or the traced one differs by more than ``tolerance``.
    """
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values it freezes
            traced = torch.jit.trace(graph, torch.zeros(2, clip_samples), check_trace=False)
            traced.save(str(path))
            traced = torch.jit.load(str(path))  # what a user loads: the saved file, not the traced object
    except Exception as e:  # noqa: BLE001 - the tracer raises many kinds
        raise RunError(f"this model does not trace to TorchScript ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]}); export with --format onnx instead") from None

    def run(w: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return traced(torch.from_numpy(w)).numpy()

    worst, agree, n, lengths = _compare(graph, run, windows, skip_failures=True)
    if worst > tolerance or not n:
        raise RunError(f"the traced TorchScript model differs from the model by up to {worst:.2e} in a probability "
                       f"(tolerance {tolerance:g}); export with --format onnx instead")
    return {"max_abs_difference": worst, "top1_agreement": agree / n, "windows": n,
            "tolerance": tolerance, "lengths": sorted(set(lengths))}


def _round_up(x: float) -> float:
    """``x`` rounded up to one significant digit (a tolerance to suggest)."""
    exponent = math.floor(math.log10(x))
    return math.ceil(x / 10 ** exponent) * 10 ** exponent


def write_bundle_meta(stage: Path, meta: dict[str, Any]) -> None:
    """bundle.json in ``stage``, with the sha256 of every other file there (computed now)."""
    meta["files"] = {p.name: sha256(p) for p in sorted(stage.iterdir()) if p.is_file() and p.name != BUNDLE_FILE}
    atomic_write_text(stage / BUNDLE_FILE, json.dumps(meta, indent=2) + "\n")


@contextlib.contextmanager
def staged_bundle(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """A staging folder next to ``out`` that becomes ``out`` when the block ends without an error (nothing is
    written under ``out`` otherwise; with ``overwrite`` an existing one is moved aside, never deleted).

    Raises:
        ConfigError: ``out`` exists (and not ``overwrite``).
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise ConfigError(f"--out {target} already exists; nothing was written. Choose a new folder or pass "
                          "--overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        yield stage
        if target.exists():
            move_aside(target)
        shutil.move(str(stage), str(target))


def export_deep(run: RunFolder, out: str | os.PathLike, *, overwrite: bool = False, torchscript: bool = False,
                int8: bool = False, calibration: int | None = None, clips: RunFolder | None = None,
                tolerance: float = PARITY_TOLERANCE) -> Path:
    """Export a network's best checkpoint as a bundle in ``out``; returns the bundle folder.

    Args:
        run: the run folder.
        out: the bundle folder to write.
        overwrite: replace ``out`` (moved aside first).
        torchscript: add ``model.pt`` (TorchScript).
        int8: add ``model.int8.onnx`` (static QDQ quantisation, see :mod:`clipwise.quantize`).
        calibration: training clips the int8 model is calibrated on (default
            :data:`clipwise.quantize.CALIBRATION_CLIPS`).
        clips: the run whose splits.csv gives the clips of the parity check and the calibration (default: ``run``;
            an ensemble's member copy has none of its own).
        tolerance: the largest difference of a probability accepted between the eager model and a graph.

    Raises:
        ConfigError: ``out`` exists (and not ``overwrite``).
        RunError: parity fails, or the run's files are missing.
    """
    predictor = Predictor.from_checkpoint(run.best_checkpoint if run.best_checkpoint.is_file() else run.weights_path)
    model, spec = predictor.model.eval(), predictor.model.spec
    task = get_task(spec.task)
    hop_fraction = float(run.load_config_dict()["data"]["eval_hop_fraction"])
    hop = max(1, int(spec.clip_samples * hop_fraction))
    graph = _WithActivation(model, task.activation).eval()
    with staged_bundle(out, overwrite=overwrite) as stage:
        clips = clips or run
        windows = _parity_windows(clips, spec, hop)
        worst, agree, n, time_axis = export_onnx(graph, stage / MODEL_FILE, clip_samples=spec.clip_samples,
                                                 windows=windows)
        lengths = [spec.clip_samples, 2 * spec.clip_samples] if time_axis == "dynamic" else [spec.clip_samples]
        parity = {"max_abs_difference": worst, "top1_agreement": agree / n, "windows": n,
                  "tolerance": tolerance, "lengths": lengths, "time_axis": time_axis}
        if worst > tolerance:
            # float32 spectrograms differ most in bins ~100 dB below a frame's peak, where torch's FFT and
            # onnxruntime's both round to noise; a network can pass that on at the 1e-4 level
            hint = (f"a difference this small is float32 rounding: accept it with --tolerance {_round_up(worst):g} "
                    "if it is small enough for your use" if worst < 1e-2 and agree == n else
                    "score with `clipwise predict` on the run folder instead")
            raise RunError(f"the exported graph differs from the model by up to {worst:.2e} in a probability "
                           f"(tolerance {tolerance:g}) on {n} windows of the run's clips; nothing was written; {hint}")
        copy = RunFolder(stage)
        copy.save_labels(run.load_labels())
        copy.write_info(kind="bundle", task=task)
        copy.save_config_yaml({"data": {"sample_rate": spec.sample_rate, "clip_seconds": spec.clip_seconds,
                                        "eval_hop_fraction": hop_fraction, "pad_mode": spec.pad_mode,
                                        "task": task.name}})
        if run.thresholds_path.is_file():
            shutil.copy2(run.thresholds_path, copy.thresholds_path)
        summary = run.load_summary() if run.summary_path.is_file() else {}
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "clipwise_version": __version__, "format": "onnx",
            "sample_rate": spec.sample_rate, "clip_seconds": spec.clip_seconds, "clip_samples": spec.clip_samples,
            "hop_fraction": hop_fraction, "pad_mode": spec.pad_mode, "task": task.name,
            "model": spec.model.get("name"), "source_run": str(run.root.resolve()),
            "source_test_metrics": summary.get("test"), "parity": parity,
        }
        if torchscript:
            meta["torchscript"] = {"file": TORCHSCRIPT_FILE, **export_torchscript(
                graph, stage / TORCHSCRIPT_FILE, clip_samples=spec.clip_samples, windows=windows,
                tolerance=tolerance)}
        write_bundle_meta(stage, meta)
        if int8:
            from clipwise.quantize import quantize_bundle

            meta["int8"] = quantize_bundle(stage, clips, calibration=calibration)
            write_bundle_meta(stage, meta)
    return Path(out)
