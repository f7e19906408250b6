"""Scoring audio files with a (tiny, untrained) model: file discovery, window averaging, top-k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clipwise.config import FrontendConfig
from clipwise.data.audio import frame_windows, window_starts
from clipwise.errors import AudioError, RunError
from clipwise.infer.predictor import Predictor, find_audio
from clipwise.kinds import load_run
from clipwise.models import AudioClassifier, ModelSpec
from clipwise.run import RunFolder

SR = 8000
CLIP_SECONDS = 0.25
CLIP = int(SR * CLIP_SECONDS)
LABELS = ["dog", "rain", "siren", "speech"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machine's cores are shared: intra-op threads fighting over them make tiny convolutions slow
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tone(freq_hz: float, seconds: float, *, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(SR * seconds))) / SR
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq_hz * t) + 0.02 * noise).astype(np.float32)


def _write(folder: Path, name: str, x: np.ndarray) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    # float WAV: what the model sees equals what was written
    sf.write(path, x, SR, subtype="FLOAT" if path.suffix.lower() == ".wav" else None)
    return path


def _model(*, fitted: bool, multi_label: bool = False) -> AudioClassifier:
    torch.manual_seed(0)
    spec = ModelSpec(
        labels=list(LABELS),
        sample_rate=SR,
        clip_seconds=CLIP_SECONDS,
        frontend=FrontendConfig(n_mels=16).model_dump(),
        model={"name": "audiocnn_small", "pretrained": False, "dropout": 0.0, "params": {"channels": [4, 8]}},
        task="multilabel" if multi_label else "multiclass",
    )
    model = AudioClassifier(spec)
    if fitted:
        with torch.no_grad():
            waves = torch.from_numpy(np.stack([_tone(f, CLIP_SECONDS, seed=i) for i, f in enumerate((300, 900, 2000))]))
            model.norm.fit([model.features(waves)])
    return model.eval()


# --- find_audio -----------------------------------------------------------------------------------------


def test_find_audio_recurses_sorts_and_filters_by_extension(tmp_path):
    x = _tone(440, 0.05)
    for name in ("b/z.wav", "b/a/deep.flac", "C.WAV"):
        _write(tmp_path, name, x)
    sf.write(tmp_path / "a.ogg", x, SR, format="OGG", subtype="VORBIS")
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "b" / "readme.md").write_text("not audio")
    found = find_audio([tmp_path])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["C.WAV", "a.ogg", "b/a/deep.flac", "b/z.wav"]


def test_find_audio_keeps_argument_order_and_explicit_files(tmp_path):
    x = _tone(440, 0.05)
    folder_file = _write(tmp_path / "dir", "one.wav", x)
    explicit = tmp_path / "explicit.dat"  # a file named explicitly is taken whatever its extension
    explicit.write_bytes(b"")
    found = find_audio([str(explicit), tmp_path / "dir"])
    assert found == [explicit, folder_file]


def test_find_audio_missing_path_raises_naming_it(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="file not found") as err:
        find_audio([missing])
    assert err.value.path == str(missing)
    assert str(missing) in str(err.value)


def test_find_audio_folder_without_audio_raises_naming_it(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(AudioError, match="no audio files") as err:
        find_audio([folder])
    assert err.value.path == str(folder)
    assert str(folder) in str(err.value)


# --- Predictor ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fitted", [False, True])
def test_predict_files_returns_a_distribution_per_file(tmp_path, fitted):
    paths = [
        _write(tmp_path, "short.wav", _tone(300, 0.1)),
        _write(tmp_path, "exact.wav", _tone(900, CLIP_SECONDS)),
        _write(tmp_path, "long.wav", _tone(2000, 3 * CLIP_SECONDS)),
    ]
    predictor = Predictor(_model(fitted=fitted), batch_size=2)
    assert predictor.labels == LABELS
    probs = predictor.predict_files(paths)
    assert probs.shape == (3, len(LABELS))
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(probs[0], probs[2])  # different audio, different scores


@pytest.mark.parametrize("hop_fraction", [0.5, 1.0])
def test_a_long_clip_is_scored_as_the_mean_over_its_windows(tmp_path, hop_fraction):
    model = _model(fitted=True)
    x = _tone(1200, 3 * CLIP_SECONDS, seed=4)
    x[CLIP:] *= 0.1  # windows must really differ for the mean to be a meaningful check
    path = _write(tmp_path, "long.wav", x)
    hop = int(CLIP * hop_fraction)

    seen = []
    forward = model.forward

    def spy(wave):
        seen.append(wave.shape)
        return forward(wave)

    predictor = Predictor(model, hop_fraction=hop_fraction)
    model.forward = spy  # nn.Module.__call__ looks the instance attribute up first
    probs = predictor.predict_files([path])
    n_windows = len(window_starts(len(x), CLIP, hop))
    assert n_windows == (5 if hop_fraction == 0.5 else 3)
    assert seen == [torch.Size([n_windows, CLIP])]

    with torch.no_grad():
        windows = torch.from_numpy(frame_windows(x, window_samples=CLIP, hop_samples=hop))
        per_window = torch.softmax(forward(windows), dim=-1).numpy()
    np.testing.assert_allclose(probs[0], per_window.mean(axis=0), atol=1e-6)
    assert not np.allclose(per_window[0], per_window[-1], atol=1e-4)
    # the mean differs from scoring the first model-length crop alone
    assert not np.allclose(probs[0], per_window[0], atol=1e-4)


def test_batching_does_not_change_scores(tmp_path):
    model = _model(fitted=True)
    paths = [_write(tmp_path, f"{i}.wav", _tone(200 + 300 * i, 0.1 + 0.2 * i, seed=i)) for i in range(4)]
    one = Predictor(model, batch_size=1).predict_files(paths)
    many = Predictor(model, batch_size=3).predict_files(paths)
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_multi_label_scores_are_independent_sigmoids(tmp_path):
    model = _model(fitted=False, multi_label=True)
    path = _write(tmp_path, "a.wav", _tone(500, CLIP_SECONDS))
    probs = Predictor(model).predict_files([path])
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(_tone(500, CLIP_SECONDS))[None])).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_top_k_orders_labels_by_probability():
    predictor = Predictor(_model(fitted=False))
    probs = np.array([[0.1, 0.6, 0.05, 0.25], [0.4, 0.1, 0.3, 0.2]], dtype=np.float32)
    top = predictor.top_k(probs, k=3)
    assert [[name for name, _ in row] for row in top] == [["rain", "speech", "dog"], ["dog", "siren", "speech"]]
    assert top[0][0][1] == pytest.approx(0.6)
    assert all(isinstance(p, float) for row in top for _, p in row)
    assert len(predictor.top_k(probs, k=10)[0]) == len(LABELS)  # k is capped at the number of classes


def test_from_run_reads_the_checkpoint_and_the_scoring_hop(tmp_path):
    model = _model(fitted=True)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model.save(run / "checkpoints" / "best.ckpt")
    (run / "config.yaml").write_text("data:\n  eval_hop_fraction: 0.25\n")
    RunFolder(run).write_info(kind="deep", task="multiclass")
    predictor = load_run(run)
    assert predictor.hop_fraction == 0.25
    assert load_run(run, hop_fraction=1.0).hop_fraction == 1.0
    path = _write(tmp_path, "a.wav", _tone(700, 0.4))
    np.testing.assert_allclose(
        predictor.predict_files([path]), Predictor(model, hop_fraction=0.25).predict_files([path]), atol=1e-6
    )
    with pytest.raises(RunError, match="no checkpoint at"):
        load_run(run, checkpoint="last")
