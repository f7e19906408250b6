"""Registry-driven contract: every built-in model and every tested timm backbone, behind every frontend,
maps a waveform batch to finite logits, trains (finite gradients), is deterministic in eval mode and survives a
save / load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipwise.config import FrontendConfig
from clipwise.errors import ConfigError, RegistryError, RunError
from clipwise.models import MODELS, AudioClassifier, ModelSpec, create_backbone, is_known_model, list_models
from clipwise.models.registry import TESTED_TIMM_MODELS

SAMPLE_RATE = 16000
CLIP_SECONDS = 0.5
LABELS = ["dog", "rain", "siren"]
FRONTENDS = {
    "logmel": FrontendConfig(name="logmel", n_mels=32).model_dump(),
    "mfcc": FrontendConfig(name="mfcc", n_mels=32, n_mfcc=20).model_dump(),
    "logmel_mfcc": FrontendConfig(name="logmel_mfcc", n_mels=32, n_mfcc=20).model_dump(),
}
# one name per constructor: a family's default variant is registered twice ("crnn" and "crnn_small")
BUILTIN = list({id(MODELS.get(n)): n for n in MODELS.names()}.values())
MODEL_NAMES = BUILTIN + list(TESTED_TIMM_MODELS)
SEQUENCE = [n for n in BUILTIN if getattr(create_backbone(n, num_classes=2, input_size=(32, 64)), "supports_lengths",
                                          False)]
CASES = [(m, f) for m in MODEL_NAMES for f in ("logmel", "mfcc")] + [("audiocnn", "logmel_mfcc"), ("crnn", "logmel_mfcc")]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machine's cores are shared: intra-op threads fighting over them make tiny convolutions 10x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(model: str, frontend: str = "logmel", **model_fields) -> ModelSpec:
    return ModelSpec(
        labels=list(LABELS),
        sample_rate=SAMPLE_RATE,
        clip_seconds=CLIP_SECONDS,
        frontend=dict(FRONTENDS[frontend]),
        model={"name": model, "pretrained": False, "dropout": 0.1, "params": {}, **model_fields},
    )


def _waves(batch: int = 2, *, seed: int = 0) -> torch.Tensor:
    """Sines plus a little noise: real-looking input with every mel band above the floor."""
    rng = np.random.default_rng(seed)
    n = int(SAMPLE_RATE * CLIP_SECONDS)
    t = np.arange(n) / SAMPLE_RATE
    rows = [0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n) for f in (440.0, 1250.0)[:batch]]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def _build(model: str, frontend: str = "logmel", **model_fields) -> AudioClassifier:
    torch.manual_seed(0)
    return AudioClassifier(_spec(model, frontend, **model_fields))


def _fit_norm(clf: AudioClassifier) -> None:
    with torch.no_grad():
        clf.norm.fit([clf.features(_waves(seed=1))])


# --- the contract ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "frontend"), CASES)
def test_forward_backward_gives_finite_logits_and_gradients(model, frontend):
    clf = _build(model, frontend).train()
    _fit_norm(clf)
    spec = clf.spectrogram(_waves())
    assert spec.shape == (2, 1, *clf.input_size)
    assert clf.input_size == ({"logmel": 32, "mfcc": 20, "logmel_mfcc": 52}[frontend], 51)
    logits = clf(_waves())
    assert logits.shape == (2, len(LABELS))
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
    loss.backward()
    grads = [p.grad for p in clf.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "some parameters got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_eval_mode_output_is_deterministic(model):
    clf = _build(model)
    _fit_norm(clf)
    with torch.no_grad():  # running statistics of real input: a deep net at its initial ones overflows float32
        for m in clf.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # a cumulative average: one pass sets the statistics
        clf.train()
        for seed in range(3, 11):  # sixteen clips: statistics that a deep net's eval mode can live with
            clf(_waves(seed=seed))
    clf.eval()
    with torch.no_grad():
        first, second = clf(_waves()), clf(_waves())
    assert torch.equal(first, second)
    # batch statistics must not leak between examples in eval mode
    with torch.no_grad():
        alone = clf(_waves()[:1])
    # (relative 1e-3: deep untrained nets give logits in the thousands, where batch-size-dependent kernels differ in
    # the last float digits; a leak of batch statistics differs in the first)
    torch.testing.assert_close(alone[0], first[0], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_the_output_bias_found_for_every_model_shifts_its_logits(model):
    # the multi-label prior initialisation writes this bias, so it must be the logits' last additive term
    clf = _build(model)
    _fit_norm(clf)
    clf.eval()
    with torch.no_grad():
        assert clf.init_output_bias(torch.zeros(len(LABELS)))
        before = clf(_waves())
        shift = torch.tensor([-3.0, 0.5, 2.0])
        assert clf.init_output_bias(shift)
        after = clf(_waves())
    torch.testing.assert_close(after - before, shift.expand_as(before), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("model", "frontend"), CASES)
def test_save_load_round_trip_gives_identical_outputs(model, frontend, tmp_path):
    clf = _build(model, frontend)
    _fit_norm(clf)
    clf.train()
    clf(_waves(seed=2))  # move BatchNorm running statistics away from their initial values
    clf.eval()
    path = tmp_path / "model.pt"
    clf.save(path)
    loaded = AudioClassifier.load(path)
    assert not loaded.training
    assert loaded.labels == LABELS
    assert loaded.sample_rate == SAMPLE_RATE and loaded.spec.clip_seconds == CLIP_SECONDS
    assert loaded.spec.frontend == FRONTENDS[frontend]
    assert bool(loaded.norm.fitted) and torch.equal(loaded.norm.mean, clf.norm.mean)
    with torch.no_grad():
        assert torch.equal(loaded(_waves()), clf(_waves()))


@pytest.mark.parametrize("model", SEQUENCE)
def test_variable_length_batches_train_and_mask_their_padding(model):
    torch.manual_seed(0)
    net = create_backbone(model, num_classes=3, input_size=(32, 128)).train()
    x = torch.randn(3, 1, 32, 128)
    lengths = torch.tensor([128, 64, 20])
    x[1, :, :, 64:] = 0.0  # zero-padded: the normalised mean
    x[2, :, :, 20:] = 0.0
    logits = net(x, lengths=lengths)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    with torch.no_grad():
        alone = net(x[1:2, :, :, :64])
        padded = net(x[1:2], lengths=lengths[1:2])
        garbage = x[1:2].clone()
        garbage[..., 64:] = 5.0
        masked_garbage = net(garbage, lengths=lengths[1:2])
    if getattr(net, "exact_lengths", False):
        # a transformer with a padding mask: the padded clip scores exactly as the clip alone, whatever the pad
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(masked_garbage, alone, atol=1e-5, rtol=1e-5)
    # a full-length mask is no mask at all
    with torch.no_grad():
        torch.testing.assert_close(net(x[:1], lengths=lengths[:1]), net(x[:1]), atol=1e-5, rtol=1e-5)
    # (a convolutional front sees a little past a clip's end, its receptive field, so for the CNN families and
    # the CRNN only the pooling is masked and padding can move the output slightly; transformers are exact)


def test_the_classifier_passes_clip_lengths_to_sequence_models():
    clf = _build("frame_transformer_tiny").eval()
    _fit_norm(clf)
    waves = _waves()
    half = waves.shape[1] // 2
    padded = waves.clone()
    padded[1, half:] = 0.0
    with torch.no_grad():
        out = clf(padded, lengths=torch.tensor([waves.shape[1], half]))
        ref = clf(padded)
    assert clf.supports_lengths and out.shape == (2, len(LABELS))
    assert torch.allclose(out[0], ref[0], atol=1e-5) and not torch.allclose(out[1], ref[1], atol=1e-4)


def test_every_family_has_a_variant_table_and_the_light_cnn_is_small():
    from clipwise.models.registry import list_models

    families = {e.base for e in list_models() if e.base}
    assert {"audiocnn", "lightcnn", "seresnet", "mbconv", "crnn", "frame_transformer", "ast"} <= families
    for fam in families:
        assert len([e for e in list_models() if e.base == fam]) >= 3  # the default alias + at least 2 variants
    light = create_backbone("lightcnn", num_classes=50, input_size=(64, 501))
    assert sum(p.numel() for p in light.parameters()) < 250_000


# --- checkpoints ----------------------------------------------------------------------------------------


def test_load_reads_a_lightning_checkpoint(tmp_path):
    clf = _build("audiocnn_small").eval()
    state = {f"model.{k}": v for k, v in clf.state_dict().items()}
    path = tmp_path / "best.ckpt"
    torch.save({"hyper_parameters": {"spec": clf.spec.to_dict()}, "state_dict": state}, path)
    loaded = AudioClassifier.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(_waves()), clf(_waves()))


def test_saving_a_loaded_model_does_not_keep_internal_flags(tmp_path):
    _build("audiocnn_small").save(tmp_path / "a.pt")
    loaded = AudioClassifier.load(tmp_path / "a.pt")
    loaded.save(tmp_path / "b.pt")
    saved = torch.load(tmp_path / "b.pt", weights_only=False)
    assert not any(k.startswith("_") for k in saved["spec"]["model"])


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(RunError, match="checkpoint not found"):
        AudioClassifier.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot read checkpoint .*junk.pt"):
        AudioClassifier.load(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(RunError, match="not a clipwise checkpoint"):
        AudioClassifier.load(tmp_path / "other.pt")


# --- the registry and its errors ------------------------------------------------------------------------


def test_registry_lists_builtins_and_tested_timm_models():
    assert {"audiocnn", "audiocnn_small"} <= set(MODELS.names())
    from clipwise.kinds import known_models
    from clipwise.kinds.classical import CLASSICAL_MODELS

    listed = [m.name for m in list_models()]
    assert [name for name, _, _ in known_models()] == MODELS.names() + list(TESTED_TIMM_MODELS) + list(CLASSICAL_MODELS)
    assert all(is_known_model(name) for name in listed)
    assert not is_known_model("audiocnnn")


def test_unknown_model_name_raises_with_a_suggestion():
    with pytest.raises(RegistryError) as err:
        _build("audiocnn_smal")
    msg = str(err.value)
    assert "unknown model 'audiocnn_smal'" in msg
    assert "Did you mean 'audiocnn_small'" in msg
    assert "clipwise models" in msg and "timm" in msg


def test_unknown_builtin_param_raises_config_error():
    with pytest.raises(ConfigError) as err:
        _build("audiocnn", params={"chanels": (8, 16)})
    msg = str(err.value)
    assert "'chanels'" in msg and "'audiocnn'" in msg
    assert "channels" in msg  # lists what the model accepts


def test_known_builtin_params_reach_the_constructor():
    clf = _build("audiocnn", params={"channels": (8, 16), "stem_stride": 1})
    assert clf.backbone.num_features == 16
    assert clf(_waves()).shape == (2, len(LABELS))


def test_unknown_timm_param_raises_config_error():
    with pytest.raises(ConfigError, match="not accepted by timm model 'resnet18'"):
        _build("resnet18", params={"not_a_resnet_argument": 1})


@pytest.mark.parametrize("model", MODELS.names())
def test_pretrained_builtin_raises_config_error(model):
    with pytest.raises(ConfigError, match="without pretrained weights.*model.pretrained=false"):
        _build(model, pretrained=True)
    with pytest.raises(ConfigError, match="without pretrained weights"):
        create_backbone(model, num_classes=2, input_size=(32, 51), pretrained=True)


def test_vit_weights_from_a_local_file_load_onto_a_non_square_spectrogram(tmp_path):
    """ImageNet-style weights (3 channels, 224 x 224 grid) from a local file: the patch embedding is summed to one
    channel and the position embeddings resized to the spectrogram's patch grid (no network needed)."""
    import timm

    torch.manual_seed(0)
    source = timm.create_model("deit_tiny_patch16_224", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "deit.pth")
    net = create_backbone("deit_tiny_patch16_224", num_classes=3, input_size=(64, 500), pretrained=True,
                          pretrained_cfg_overlay={"file": str(tmp_path / "deit.pth")})
    inner = net.model if hasattr(net, "model") else net
    assert inner.pos_embed.shape[1] == 1 + 4 * 32  # (64 / 16) x (512 / 16) patches: 500 frames padded to 512
    torch.testing.assert_close(inner.patch_embed.proj.weight[:, 0], source.patch_embed.proj.weight.sum(1))
    assert net(torch.randn(2, 1, 64, 500)).shape == (2, 3)


def test_cnn_weights_from_a_local_file_take_one_channel_and_a_new_head(tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("resnet18", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    net = create_backbone("resnet18", num_classes=3, input_size=(64, 501), pretrained=True,
                          pretrained_cfg_overlay={"file": str(tmp_path / "r18.pth")})
    torch.testing.assert_close(net.conv1.weight[:, 0], source.conv1.weight.sum(1))
    torch.testing.assert_close(net.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert net.fc.out_features == 3 and net(torch.randn(2, 1, 64, 501)).shape == (2, 3)


def test_convit_weights_load_onto_its_resampled_square_grid(tmp_path):
    """timm does not resize ConViT's position embedding when loading weights: clipwise resamples it from the
    weights' 14 x 14 grid to the model's 12 x 12 (a 64 x 501 spectrogram, resampled to 192 x 192)."""
    import timm
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    source = timm.create_model("convit_tiny", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "convit.pth")
    net = create_backbone("convit_tiny", num_classes=3, input_size=(64, 501), pretrained=True,
                          pretrained_cfg_overlay={"file": str(tmp_path / "convit.pth")})
    inner = net.model
    expected = resample_abs_pos_embed(source.pos_embed, new_size=[12, 12], old_size=[14, 14], num_prefix_tokens=0)
    torch.testing.assert_close(inner.pos_embed, expected)
    torch.testing.assert_close(inner.patch_embed.proj.weight[:, 0], source.patch_embed.proj.weight.sum(1))
    torch.testing.assert_close(inner.blocks[3].attn.qk.weight, source.blocks[3].attn.qk.weight)
    assert net(torch.randn(2, 1, 64, 501)).shape == (2, 3)


def test_missing_pretrained_weights_say_how_to_supply_a_file(tmp_path):
    with pytest.raises(ConfigError, match="pretrained_cfg_overlay"):
        create_backbone("deit_tiny_patch16_224", num_classes=3, input_size=(64, 96), pretrained=True,
                        pretrained_cfg_overlay={"file": str(tmp_path / "missing.pth")})


def test_a_square_only_transformer_gets_the_spectrogram_resampled_not_padded():
    """ConViT only runs on a square patch grid. A 64 x 501 spectrogram has 4 x 32 = 128 patches of 16 x 16;
    zero-padding it to a square would give 32 x 32 = 1,024 (attention costs their square), so it is resampled
    to the smallest square grid with at least as many patches, 12 x 12, and every input bin and frame reaches
    the model (a change anywhere in the input changes the output)."""
    net = create_backbone("convit_tiny", num_classes=3, input_size=(64, 501))
    assert net.size == (192, 192) and net.model.patch_embed.num_patches == 144
    net.eval()
    x = torch.randn(1, 1, 64, 501)
    with torch.no_grad():
        base = net(x)
        for f, t in ((0, 0), (63, 500), (31, 250)):
            poked = x.clone()
            poked[..., f, t] += 10.0
            assert not torch.allclose(net(poked), base), (f, t)


# one small model per family (exporting all 27 takes minutes); families that do not export yet are strict xfails,
# so the test fails the day they start to work and the list must shrink
EXPORT_CASES = ["audiocnn_small", "lightcnn_tiny", "seresnet_small", "mbconv_tiny", "frame_transformer_tiny",
                "crnn_small", "resnet18", "mobilenetv4_conv_small"] + [
    pytest.param("ast_tiny", marks=pytest.mark.xfail(strict=True, raises=RunError, reason="its patch embedding "
                                                     "fixes the batch and time axes at the traced sizes")),
]


@pytest.mark.slow
@pytest.mark.parametrize("model", EXPORT_CASES)
def test_every_model_exports_to_onnx_matching_eager(model, tmp_path):
    """The whole model (frontend, normalisation, backbone, head, softmax) as one graph with dynamic batch and time
    axes: the same probabilities as eager torch at the clip length and at twice it."""
    from clipwise.export import PARITY_TOLERANCE, _WithActivation, export_onnx

    clf = _build(model).eval()
    _fit_norm(clf)
    n = clf.spec.clip_samples
    long = torch.cat([_waves(2, seed=3), _waves(2, seed=4)], dim=1).numpy()
    worst, agree, count, time_axis = export_onnx(_WithActivation(clf, "softmax").eval(), tmp_path / "m.onnx",
                                                 clip_samples=n, windows=[_waves(2, seed=2).numpy(), long])
    # a fixed time axis (the CRNN's GRU) is checked at the clip length, the only length the runtime feeds it
    # windows: 2 + 2 long (dynamic time only) + a batch of 1 + a batch of 3
    assert worst <= PARITY_TOLERANCE and agree == count == (8 if time_axis == "dynamic" else 6), (model, worst)
    assert time_axis == ("fixed" if model == "crnn_small" else "dynamic")
