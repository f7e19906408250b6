"""`clipwise models --compare`: measured parameters, MACs, latency and memory; recommendations that say what
they rest on."""

from __future__ import annotations

import json

import pytest
import torch

from clipwise.models.compare import ModelMeasure, measure_models, recommend


def test_measurements_of_two_models(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"model": {"name": "lightcnn_tiny"}, "test": {"accuracy": 0.8}}))
    m = measure_models(["lightcnn_tiny", "audiocnn_small"], input_size=(32, 64), num_classes=5, batch=4, repeats=2,
                       runs=[tmp_path / "runs"])
    light, cnn = m
    assert light.params == sum(p.numel() for p in __import__("clipwise").models.create_backbone(
        "lightcnn_tiny", num_classes=5, input_size=(32, 64)).parameters())
    # a conv net's MACs are at least the first convolution's: 1 -> 16 channels, 3x3, stride 2 over 32 x 64
    assert light.macs >= 16 * 9 * 16 * 32 and cnn.macs > light.macs
    assert light.latency_ms_b1 > 0 and light.latency_ms_b32 > 0 and light.activation_mib > 0
    assert (light.accuracy, light.accuracy_runs) == (0.8, 1) and cnn.accuracy is None


def test_a_transformer_encoders_macs_are_counted():
    """In eval mode under no_grad, nn.TransformerEncoderLayer runs one fused operator the flop counter does not
    know: the frame transformer used to count ~2 % of its MACs (its input projection alone)."""
    from clipwise.models import create_backbone

    model = create_backbone("frame_transformer_tiny", num_classes=5, input_size=(32, 64))
    encoder = [m for m in model.modules() if isinstance(m, torch.nn.TransformerEncoder)]
    assert encoder  # else this test no longer tests the fast path
    linear = sum(m.weight.numel() for e in encoder for m in e.modules() if isinstance(m, torch.nn.Linear))
    [m] = measure_models(["frame_transformer_tiny"], input_size=(32, 64), num_classes=5, batch=2, repeats=1)
    # every token passes every linear layer of the encoder once; the model has at least 4 tokens (64 frames,
    # pooled at most 16x), so the encoder alone is at least 4 x its linear weights
    assert m.macs >= 4 * linear


def _m(name, params, lat, acc=None):
    return ModelMeasure(name, "x", params, params * 10, lat, lat * 8, 1.0, acc, int(acc is not None))


def test_recommendations_follow_the_use_case_and_say_what_was_measured():
    ms = [_m("big", 5_000_000, 40.0, 0.90), _m("mid", 1_000_000, 10.0, 0.88), _m("tiny", 50_000, 2.0, 0.70)]
    assert recommend(ms, "accuracy")[0].name == "big"
    assert recommend(ms, "speed")[0].name == "tiny"
    best, why = recommend(ms, "edge")
    assert best.name == "mid" and "within 5 points" in why  # tiny is 20 points behind
    assert recommend(ms, "balanced")[0].name == "mid"  # 0.88 - 0.05*log2(5) > 0.90 - 0.05*log2(20)
    unknown = [_m("a", 10, 1.0), _m("b", 20, 5.0)]
    best, why = recommend(unknown, "accuracy")
    assert "a guess" in why and "no accuracy" in why


def test_cli_compare_prints_a_table_and_a_recommendation(cli, tmp_path):
    r = cli("models", "--compare", "--only", "lightcnn_tiny,mbconv_tiny", "--seconds", "0.5", "--n-mels", "32",
            "--batch", "2", "--use-case", "edge", "--out", tmp_path / "m.csv")
    assert r.rc == 0, r.err
    assert "lightcnn_tiny" in r.out and "recommended for edge: lightcnn_tiny" in r.out
    assert (tmp_path / "m.csv").read_text().count("\n") == 3
