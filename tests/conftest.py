"""Shared fixtures: tiny synthetic manifests, the CLI run in-process, settings that keep training cheap, the one
2-epoch run several test files share, and the datasets under ../shared."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clipwise.cli import main
from clipwise.data.synth import make_synthetic_dataset

SYNTH_CLASSES4 = ("tone", "white_noise", "click_train", "chirp_up")

# The model does not matter in most training tests; these keep a run to seconds on two shared cores.
TINY = ("model.name=audiocnn_small", "data.batch_size=8", "train.progress=false", "train.threads=1")
# Augmentation off, for tests that need the model to fit its training clips.
NO_AUGMENT = ("augment.mixup_alpha=0", "augment.specaugment=false", "data.gain_db=0", "augment.label_smoothing=0",
              "augment.freq_warp=0", "augment.filter_db=0")
# ../shared/datasets next to the checkout: the prepared ESC-50 and FSDD copies some tests read
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True, scope="session")
def _check_cache(tmp_path_factory):
    """Keep the fingerprint cache of `check` (and of train's leakage guard) out of the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIPWISE_CACHE", str(tmp_path_factory.mktemp("clipwise-cache")))
    yield
    mp.undo()


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


@pytest.fixture(scope="session")
def tiny() -> tuple[str, ...]:
    """Config overrides for a cheap training run."""
    return TINY


@pytest.fixture(scope="session")
def no_augment() -> tuple[str, ...]:
    """Config overrides that switch every augmentation off."""
    return NO_AUGMENT


@pytest.fixture(scope="session")
def make_manifest(tmp_path_factory):
    """make_manifest(name, *, classes=SYNTH_CLASSES4, n_per_class=6, duration_seconds=0.5, splits=..., seed=0)
    -> path of a synthetic manifest.csv (16 kHz WAVs) in a session folder named ``name``; same arguments, same
    files."""
    root = tmp_path_factory.mktemp("manifests")

    def make(
        name: str,
        *,
        classes: Sequence[str] = SYNTH_CLASSES4,
        n_per_class: int = 6,
        duration_seconds: float = 0.5,
        splits: Sequence[float] | None = (0.7, 0.15, 0.15),
        seed: int = 0,
    ) -> Path:
        return make_synthetic_dataset(
            root / name, classes=list(classes), n_per_class=n_per_class, duration_seconds=duration_seconds,
            splits=splits, seed=seed,
        )

    return make


@pytest.fixture(scope="session")
def synth_manifest(make_manifest) -> Path:
    """4 classes x 6 clips of 0.5 s with a split column (2 train, 2 val, 2 test clips per class)."""
    return make_manifest("synth4x6")


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def two_epoch_run(synth_manifest, tiny, tmp_path_factory) -> Path:
    """The folder of one finished 2-epoch run of the tiny model on ``synth_manifest``, trained once per session
    through the CLI (``clipwise train --data SYNTH --epochs 2 --out RUN *TINY``) and shared by tests/test_cli.py,
    tests/training/test_resume.py and tests/infer/test_recompute.py.

    Read-only: a test that writes into a run folder (evaluate, resume, recompute, tampering) works on a copy
    (``two_epoch_copy``). The folder is checked unchanged at the end of the session."""
    out = tmp_path_factory.mktemp("two-epoch") / "run"
    assert main(["train", "--data", str(synth_manifest), "--epochs", "2", "--out", str(out), *tiny]) == 0
    before = _fingerprint(out)
    yield out
    after = _fingerprint(out)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, (f"a test wrote into the shared two_epoch_run ({out}): {changed}; "
                         "tests that change a run folder must use two_epoch_copy")


@pytest.fixture
def two_epoch_copy(two_epoch_run, tmp_path) -> Path:
    """A private copy of :func:`two_epoch_run` under this test's tmp_path, free to change. Still a folder named
    ``run`` (the report's title is the folder's name), in a folder of its own so it clashes with no tmp_path / "run"."""
    return Path(shutil.copytree(two_epoch_run, tmp_path / "two-epoch" / two_epoch_run.name))


@pytest.fixture(scope="session")
def shared_dataset():
    """shared_dataset(name, pattern=None) -> ../shared/datasets/<name>, the prepared corpus some tests read.

    When the folder is missing (or holds nothing matching ``pattern``, e.g. ``"audio/*.flac"``) the test is
    skipped, except under CI (``CI=true``), where the data is expected and a missing dataset fails the test."""

    def find(name: str, pattern: str | None = None) -> Path:
        root = SHARED_DATASETS / name
        if root.is_dir() and (pattern is None or next(root.glob(pattern), None) is not None):
            return root
        what = f"no {pattern} under {root}" if root.is_dir() else f"{root} does not exist"
        message = f"shared dataset {name!r} is missing ({what}); prepare ../shared/datasets first"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{message}. CI=true: the shared datasets are required here, so this fails instead of "
                        "skipping", pytrace=False)
        pytest.skip(message)

    return find


@pytest.fixture
def cli(capsys):
    """cli(*args) -> CliResult(rc, out, err): ``clipwise ARGS`` run in-process, its output captured."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()  # drop what came before
        rc = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)

    return run


def write_wav(path: Path, x: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write float samples as a PCM16 WAV, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(x, dtype=np.float32), sample_rate, subtype="PCM_16")
    return path


def tone(freq_hz: float, *, duration_seconds: float = 0.5, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A half-scale sine with a little seeded noise."""
    t = np.arange(int(round(duration_seconds * sample_rate))) / sample_rate
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return (0.5 * np.sin(2 * np.pi * freq_hz * t) + noise).astype(np.float32)


@pytest.fixture(scope="session")
def wav_writer():
    """The :func:`write_wav` helper, as a fixture."""
    return write_wav


@pytest.fixture(scope="session")
def make_tone():
    """The :func:`tone` helper, as a fixture."""
    return tone
