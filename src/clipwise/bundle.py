"""The export bundle: a folder that scores audio without clipwise's training stack (no torch).

Layout::

    BUNDLE/model.onnx     raw mono waveform (batch, samples) at the bundle's sample rate -> probabilities
                          (frontend, normalisation and the softmax / sigmoid inside the graph; dynamic axes)
    BUNDLE/bundle.json    sample rate, clip length, scoring hop, pad mode, task, the source run and its test
                          metrics, the parity measured at export, and the sha256 of every other file
    BUNDLE/model.int8.onnx  (--int8) the same graph with Conv / Gemm weights and activations in int8, the frontend
                          in fp32; its agreement with model.onnx and the accuracy change are in bundle.json
    BUNDLE/model.pt       (--format torchscript) the same graph traced to TorchScript, for torch.jit.load
    BUNDLE/labels.json    class names (index = output column)
    BUNDLE/thresholds.json  (multi-label) per-class decision thresholds tuned on validation
    BUNDLE/run.json, config.yaml   what a run folder records, so `clipwise predict BUNDLE` works as on a run

An ensemble's bundle holds no graph of its own: ``members/<i>/`` are its members' bundles, and bundle.json lists
them with their weights, temperatures and the sha256 of each member's bundle.json.

Loading checks every file's checksum against bundle.json before anything is read, so a changed byte is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from clipwise.errors import RunError, UnsafeFileError

BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TORCHSCRIPT_FILE = "model.pt"
MEMBERS_DIR = "members"
FORMAT_VERSION = 1


def sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_bundle(root: str | os.PathLike) -> dict[str, Any]:
    """bundle.json of the bundle at ``root``, after checking the checksum of every file it lists.

    Raises:
        RunError: not a bundle, or an unknown format version.
        UnsafeFileError: a file is missing or its bytes changed since export.
    """
    root = Path(root)
    path = root / BUNDLE_FILE
    if not path.is_file():
        raise RunError(f"{root} is not a clipwise bundle ({BUNDLE_FILE} missing); make one with "
                       "`clipwise export RUN --out BUNDLE`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise RunError(f"{path} is not valid JSON ({e}); export the bundle again") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or "files" not in meta:
        raise RunError(f"{path} is not a bundle of format {FORMAT_VERSION}; export it again with this clipwise")
    for member in meta.get("members", []):  # an ensemble: each member bundle checks its own files when loaded
        folder = str(member.get("folder", ""))
        file = root / folder / BUNDLE_FILE
        if not folder.startswith(MEMBERS_DIR + "/") or ".." in folder or not file.is_file():
            raise UnsafeFileError(f"{root / folder} is missing from the bundle (or not a member folder); export it "
                                  "again")
        _check_digest(file, member.get("bundle_sha256"), path)
    for name, digest in meta["files"].items():
        file = root / name
        if "/" in name or name.startswith(".") or not file.is_file():
            raise UnsafeFileError(f"{file} is missing from the bundle (or not a plain file name); export it again")
        _check_digest(file, digest, path)
    return meta


def _check_digest(file: Path, digest: object, listed_in: Path) -> None:
    if sha256(file) != digest:
        raise UnsafeFileError(f"{file} changed since export (its sha256 no longer matches {listed_in}): the bundle "
                              "was damaged or tampered with, so it is not loaded; export it again")
