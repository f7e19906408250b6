"""The typed, strict config: defaults, YAML files, dotted overrides and the errors a user sees."""

from __future__ import annotations

import pytest
import yaml

from clipwise.config import Config, describe_config, load_config, parse_override
from clipwise.errors import ConfigError


@pytest.fixture
def write_yaml(tmp_path):
    """write_yaml(text, name="config.yaml") -> path of a file holding ``text``."""

    def write(text: str, name: str = "config.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


# --- defaults -------------------------------------------------------------------------------------------


def test_defaults_validate_and_round_trip_through_a_dict():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.optim.lr == 2e-3
    assert cfg.model.name == "audiocnn"
    assert cfg.data.sample_rate == "auto"
    # the saved form (to_dict) must load back to the same config, as when resuming a run
    assert load_config(base=cfg.to_dict()) == cfg
    assert Config.model_validate(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


# --- precedence -----------------------------------------------------------------------------------------


def test_precedence_is_defaults_then_base_then_file_then_overrides(write_yaml):
    path = write_yaml("optim:\n  lr: 0.5\n  weight_decay: 0.25\ntrain:\n  epochs: 7\n")
    base = {"optim": {"lr": 0.1, "weight_decay": 0.2, "min_lr_ratio": 0.3}, "train": {"seed": 11}}
    cfg = load_config(path, base=base, overrides=["optim.lr=1e-3", "train.seed=5"])
    assert cfg.optim.lr == 1e-3  # override beats file and base
    assert cfg.train.seed == 5  # override beats base
    assert cfg.optim.weight_decay == 0.25  # file beats base
    assert cfg.train.epochs == 7  # file beats default
    assert cfg.optim.min_lr_ratio == 0.3  # base beats default, untouched by the file
    assert cfg.optim.schedule == "cosine"  # default where nobody set it


def test_a_file_setting_one_key_keeps_the_other_keys_of_its_section_from_base(write_yaml):
    path = write_yaml("data:\n  batch_size: 4\n")
    cfg = load_config(path, base={"data": {"sample_rate": 8000, "batch_size": 2}})
    assert (cfg.data.batch_size, cfg.data.sample_rate) == (4, 8000)


def test_overrides_may_be_a_mapping():
    cfg = load_config(overrides={"optim.lr": 0.01, "frontend.name": "mfcc"})
    assert cfg.optim.lr == 0.01
    assert cfg.frontend.name == "mfcc"


def test_base_is_not_modified():
    base = {"optim": {"lr": 0.1}}
    load_config(base=base, overrides=["optim.lr=0.2"])
    assert base == {"optim": {"lr": 0.1}}


# --- override parsing -----------------------------------------------------------------------------------


def test_scientific_learning_rate_parses_to_float():
    assert parse_override("optim.lr=1e-3") == ("optim.lr", 1e-3)
    cfg = load_config(overrides=["optim.lr=1e-3"])
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.epochs=3", ("train.epochs", 3)),
        ("train.progress=false", ("train.progress", False)),
        ("optim.betas=[0.8, 0.99]", ("optim.betas", [0.8, 0.99])),
        ("data.sample_rate=auto", ("data.sample_rate", "auto")),
        (" train.seed = 4", ("train.seed", 4)),
        ("data.manifest=", ("data.manifest", None)),
        ("model.name=a=b", ("model.name", "a=b")),
    ],
)
def test_parse_override_reads_values_as_yaml(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["optim.lr", "=3"])
def test_malformed_override_raises(text):
    with pytest.raises(ConfigError, match="override"):
        parse_override(text)


def test_override_values_reach_the_typed_fields():
    cfg = load_config(overrides=["optim.betas=[0.8, 0.99]", "train.devices=2", "data.sample_rate=8000"])
    assert cfg.optim.betas == (0.8, 0.99)
    assert cfg.train.devices == 2
    assert cfg.data.sample_rate == 8000


# --- unknown keys ---------------------------------------------------------------------------------------


def test_unknown_nested_key_names_the_key_and_suggests_the_close_one():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["optim.lrr=1e-3"])
    msg = str(err.value)
    assert "unknown config key 'optim.lrr'" in msg
    assert "Did you mean 'optim.lr'?" in msg
    assert "command-line overrides" in msg


@pytest.mark.parametrize(("typo", "section"), [("trian", "train"), ("optimm", "optim"), ("modle", "model")])
def test_unknown_section_names_the_key_and_suggests_the_section(typo, section):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"{typo}.epochs=3"])
    msg = str(err.value)
    assert f"unknown config key {typo!r}" in msg
    assert f"Did you mean {section!r}?" in msg


def test_unknown_key_in_a_file_names_the_file(write_yaml):
    path = write_yaml("frontend:\n  n_mel: 40\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "'frontend.n_mel'" in msg and "Did you mean 'frontend.n_mels'?" in msg
    assert str(path) in msg


def test_unknown_top_level_key_in_a_file_is_an_error(write_yaml):
    with pytest.raises(ConfigError, match="unknown config key 'augmnet'.*Did you mean 'augment'"):
        load_config(write_yaml("augmnet:\n  specaugment: false\n"))


# --- wrong types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "shown"),
    [
        ("train.epochs=abc", "train.epochs", "'abc'"),
        ("frontend.n_mels=4", "frontend.n_mels", "4"),
        ("frontend.name=stft", "frontend.name", "'stft'"),
        ("optim.lr=-1", "optim.lr", "-1"),
        ("train.devices=gpu", "train.devices", "'gpu'"),
        ("data.clip_seconds=long", "data.clip_seconds", "'long'"),  # float | "auto"
        ("data.sample_rate=fast", "data.sample_rate", "'fast'"),  # int | "auto"
    ],
)
def test_wrong_value_names_the_key_and_the_received_value(override, key, shown):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    msg = str(err.value)
    assert f"invalid value for {key!r} in the command-line overrides" in msg
    assert f"(got {shown})" in msg
    # a union type reports one line for the key, not one per member under made-up keys like 'x.int'
    assert msg.count("invalid value") == 1, msg


def test_a_value_where_a_section_is_expected_is_an_error():
    with pytest.raises(ConfigError, match="cannot set 'optim.lr.max': 'lr' is not a section"):
        load_config(overrides=["optim.lr=0.1", "optim.lr.max=2"])


# --- files ----------------------------------------------------------------------------------------------


def test_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="config file not found") as err:
        load_config(missing)
    assert str(missing) in str(err.value)


def test_invalid_yaml_raises(write_yaml):
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(write_yaml("optim: [lr: 1\n  : :\n"))


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "3\n"])
def test_non_mapping_yaml_raises(write_yaml, text):
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write_yaml(text))


def test_empty_file_gives_the_defaults(write_yaml):
    assert load_config(write_yaml("")) == Config()


# --- model.params ---------------------------------------------------------------------------------------


def test_model_params_is_a_free_mapping_kept_whole(write_yaml):
    path = write_yaml("model:\n  name: resnet18\n  params:\n    any_key: 1\n    nested: {a: [1, 2]}\n")
    cfg = load_config(path, base={"model": {"params": {"from_base": True}}})
    # the file's mapping replaces base's whole (it is not merged key by key) and nothing is validated inside
    assert cfg.model.params == {"any_key": 1, "nested": {"a": [1, 2]}}
    cfg = load_config(path, overrides=["model.params.drop_path_rate=0.1"])
    assert cfg.model.params == {"any_key": 1, "nested": {"a": [1, 2]}, "drop_path_rate": 0.1}


# --- describe_config ------------------------------------------------------------------------------------


def test_describe_config_lists_every_key_with_its_default():
    text = describe_config()
    defaults = Config().to_dict()
    lines = text.splitlines()
    for section, fields in defaults.items():
        assert f"{section}:" in lines
        for name in fields:
            assert any(line.startswith(f"  {name}: ") for line in lines), f"{section}.{name} missing"
    n_keys = sum(len(fields) for fields in defaults.values())
    assert len(lines) == len(defaults) + n_keys
    assert "  lr: 0.002" in lines
    assert any(line.startswith("  sample_rate: auto  # ") for line in lines)
    assert "  manifest: null  # the manifest CSV (set by --data)" in lines


def test_each_choice_is_declared_once_and_matches_what_acts_on_it():
    """The config declares the allowed values; the frontend registry and the sweep samplers agree with it."""
    from clipwise import config as cfg
    from clipwise.frontends import FRONTENDS
    from clipwise.models.registry import MODELS
    from clipwise.sweep.space import SAMPLERS

    assert set(cfg.FRONTEND_NAMES) == set(FRONTENDS.names())
    assert SAMPLERS == cfg.SWEEP_SAMPLERS
    assert cfg.DEFAULT_MODEL in MODELS and cfg.Config().model.name == cfg.DEFAULT_MODEL
    with pytest.raises(ConfigError, match="pad_mode"):
        load_config(overrides=["data.pad_mode=mirror"])
