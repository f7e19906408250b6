"""Typed, strict configuration: defaults, YAML files and dotted ``key=value`` overrides.

Every section is a pydantic model that forbids unknown keys, so a typo (``optim.lrr=1e-3``) is an error that
names the key and suggests the closest valid one instead of being silently ignored. The resolved config (with
``auto`` values replaced by what was chosen) is saved in every run folder and checkpoint.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clipwise.errors import ConfigError


#: The allowed values of the config's choices, declared once here; the code that acts on them imports them.
PAD_MODES = ("zeros", "wrap", "reflect")
CROP_MODES = ("random", "center", "start")
VAL_GROUPS = ("auto", "group", "ignore")
SAMPLERS = ("shuffle", "balanced")  # data.sampler
FRONTEND_NAMES = ("logmel", "mfcc", "logmel_mfcc")  # registered in frontends.py
SUMMARY_FEATURES = ("logmel", "mfcc", "bands", "cqt", "spectral", "zcr")  # classical.features
SWEEP_SAMPLERS = ("grid", "random", "tpe")  # clipwise sweep --sampler
USE_CASES = ("accuracy", "speed", "balanced", "edge")  # clipwise models --use-case
EVENT_FORMATS = ("csv", "audacity", "raven")  # clipwise predict --events-format
DEFAULT_MODEL = "audiocnn"

#: train.epochs=auto: the optimiser steps a from-scratch model gets, and the epoch range that bounds them
AUTO_EPOCH_STEPS = 1600
AUTO_EPOCH_RANGE = (10, 200)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """How audio is read, cut and batched."""

    manifest: str | None = Field(None, description="the manifest CSV (set by --data)")
    task: Literal["auto", "multiclass", "multilabel"] = Field(
        "auto", description="multilabel: a clip may carry several ';'-separated labels (sigmoid outputs, BCE loss, "
        "lwlrap); auto = multilabel when any training row has more than one label"
    )
    sample_rate: int | Literal["auto"] = Field(
        "auto", description="model sample rate in Hz; auto = the most common rate in the data, at most 16000"
    )
    clip_seconds: float | Literal["auto"] = Field(
        "auto", description="model input length; auto = 95th percentile of training durations, 0.5-10 s"
    )
    pad_mode: Literal[PAD_MODES] = "zeros"
    train_crop: Literal[CROP_MODES] = "random"
    eval_hop_fraction: float = Field(0.5, gt=0, le=1, description="hop between scoring windows / clip length")
    val_fraction: float = Field(
        0.15, gt=0, lt=1, description="share of training rows held out for validation (at least one per class, "
        "at most half)"
    )
    val_groups: Literal[VAL_GROUPS] = Field(
        "auto", description="hold validation out by group; auto = by row only when most of the manifest's test "
        "rows are in groups that have training rows, so validation mirrors the test protocol"
    )
    test_fraction: float = Field(0.15, gt=0, lt=1)
    test_fold: int | None = None
    batch_size: int = Field(32, ge=1)
    sampler: Literal[SAMPLERS] = Field(
        "shuffle", description="balanced: draw training clips with probability 1/(clips of their class), so every "
        "class is seen about equally often (single process only)"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader workers (audio is decoded once and cached)")
    skip_bad: bool = False
    leakage_check: bool = Field(
        True, description="before training, check that train and test share no audio or group (cached per file)"
    )
    allow_leakage: bool = Field(
        False, description="train even when train and test share audio or a group (the report says so at the top)"
    )
    gain_db: float = Field(6.0, ge=0, description="random gain of +/- this many dB on training clips")
    clean_train_clips: int = Field(512, ge=0, description="fixed training subset scored without augmentation")


class FrontendConfig(_Section):
    """The waveform -> spectrogram frontend that lives inside the model."""

    name: Literal[FRONTEND_NAMES] = Field(
        "logmel", description="logmel, mfcc, or logmel_mfcc (both stacked along the bin axis)")
    n_mels: int = Field(64, ge=8, le=512)
    win_ms: float = Field(25.0, gt=0)
    hop_ms: float = Field(10.0, gt=0)
    n_fft: int | None = Field(None, description="FFT size; default: next power of two >= the window")
    f_min: float = Field(20.0, ge=0)
    f_max: float | None = Field(None, description="default: sample_rate / 2")
    n_mfcc: int = Field(40, ge=2)
    normalize: bool = Field(True, description="standardise each bin with training-split statistics")


class ModelConfig(_Section):
    """Which network maps the (normalised) spectrogram to logits."""

    name: str = DEFAULT_MODEL
    pretrained: bool = False
    dropout: float = Field(0.2, ge=0, lt=1)
    params: dict[str, Any] = Field(default_factory=dict, description="extra constructor arguments")


class AugmentConfig(_Section):
    """Training-time augmentation; never applied to validation, test or clean-train scoring."""

    specaugment: bool = True
    freq_masks: int = Field(2, ge=0)
    freq_mask_fraction: float = Field(0.15, ge=0, le=1, description="max width of a mask / n_mels")
    time_masks: int = Field(2, ge=0)
    time_mask_fraction: float = Field(0.1, ge=0, le=1, description="max width of a mask / frames")
    # on by default: warp 0.1 + equalisation 6 dB lifted FSDD unseen speakers (the two hardest folds
    # 69.0 -> 81.4 % and 61.8 -> 71.4 %); adding time stretch cost ESC-50 17 points within its budget: BENCHMARKS.md
    freq_warp: float = Field(
        0.1, ge=0, lt=0.5, description="random scaling of the frequency axis by up to +/- this fraction (VTLP: "
        "robustness to speakers and sources of other sizes); 0 = off"
    )
    time_stretch: float = Field(0.0, ge=0, lt=1, description="random tempo change, rates 1/(1+s) to 1+s (e.g. 0.15; "
                                "off by default: it costs most of a short step budget)")
    filter_db: float = Field(6.0, ge=0, description="random smooth equalisation of up to +/- this many dB "
                             "(FilterAugment: robustness to microphones and rooms); 0 = off")
    time_reverse: float = Field(0.0, ge=0, le=1, description="probability of playing a training clip backwards "
                                "(mirroring in time; off by default: many sounds are not time-symmetric)")
    overlay: float = Field(0.0, ge=0, le=1, description="multi-label tasks only: probability that a training "
                           "clip gets a second training clip added to its waveform (levelled, +/- overlay_gain_db) "
                           "and the union of both clips' labels; 0 = off")
    overlay_gain_db: float = Field(6.0, ge=0, description="the added clip's random gain range in dB (augment.overlay)")
    mixup_alpha: float = Field(0.3, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)
    mixup_prob: float = Field(1.0, ge=0, le=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)


class PhaseConfig(_Section):
    """One phase of a fit_one_cycle-style plan: its own one-cycle learning-rate schedule."""

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0, description="peak learning rate of this phase (of the classifier head)")
    freeze: Literal["none", "backbone"] = Field("none", description="backbone: train only the classifier head")
    backbone_lr_factor: float = Field(1.0, gt=0, le=1, description="the backbone's lr relative to the head's")
    pct_start: float = Field(0.25, gt=0, lt=1, description="share of the phase spent warming up")


class OptimConfig(_Section):
    """AdamW with a warmup and a decay schedule, stepped per batch."""

    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(2.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final lr / lr of the cosine and onecycle schedules")
    phases: list[PhaseConfig] = Field(
        default_factory=list, description="fit_one_cycle-style phases (epochs, lr, freeze, backbone_lr_factor); "
        "when set they replace schedule, lr and train.epochs (their epochs add up)"
    )


class TrainConfig(_Section):
    """The training loop: length, stopping, checkpoints, hardware."""

    epochs: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description=f"auto = about {AUTO_EPOCH_STEPS} optimiser steps: many passes over a small set, "
        f"few over a large one ({AUTO_EPOCH_RANGE[0]}-{AUTO_EPOCH_RANGE[1]} epochs)"
    )
    patience: int | None = Field(
        12, ge=1, description="early-stopping patience in epochs (training also stops once an accuracy-like "
        "monitor is perfect, since no later checkpoint could be chosen); null disables both"
    )
    monitor: Literal[
        "auto", "val_accuracy", "val_macro_f1", "val_balanced_accuracy", "val_loss", "val_lwlrap", "val_mAP"
    ] = Field("auto", description="validation metric that picks the best checkpoint; auto = val_accuracy, or "
              "val_lwlrap for multilabel tasks")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight each class's loss by n / (classes x its clips) (multi-label: positives "
        "weighted by negatives / positives)"
    )
    ema: float | Literal["auto"] | None = Field(
        None, description="exponential moving average of the weights, used for validation, the checkpoints and the "
        "final model: a decay in (0, 1), or auto = a time constant of 5 % of the planned optimiser steps; "
        "null = off"
    )
    precise_bn: int = Field(
        256, ge=0, description="before each validation, re-estimate BatchNorm statistics on this many clean "
        "(unaugmented) training clips, so checkpoints hold statistics of real inputs, not of mixup blends and "
        "masked spectra; 0 = off (models without BatchNorm skip it)"
    )
    seed: int = 0
    precision: Literal["32", "bf16"] = "32"
    grad_clip: float | None = Field(5.0, gt=0)
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    max_minutes: float | None = Field(
        None, gt=0, description="wall-time budget: after the first epoch the schedule is planned to fit it, "
        "up to train.epochs (so set train.epochs high to let the budget decide); no epoch starts that the clock says "
        "cannot end within it, and training stops at it in any case"
    )
    progress: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores")

    @field_validator("ema")
    @classmethod
    def _ema(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, float) and not 0 < v < 1:
            raise ValueError("ema must be a decay between 0 and 1 (e.g. 0.999), auto or null")
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: int | str) -> int | str:
        if isinstance(v, str) and v != "auto" and not v.isdigit() and "," not in v:
            raise ValueError("devices must be an integer, 'auto' or a comma-separated list of device ids")
        return int(v) if isinstance(v, str) and v.isdigit() else v


class ClassicalConfig(_Section):
    """Summary features of the classical baselines (model.name = logreg, svm_linear, svm_rbf, hgb or mlp)."""

    features: tuple[Literal[SUMMARY_FEATURES], ...] = SUMMARY_FEATURES
    stats: tuple[Literal["mean", "std", "min", "max", "skew"], ...] = ("mean", "std")
    n_mels: int = Field(64, ge=8, le=256)
    n_mfcc: int = Field(20, ge=2, le=128)


class Config(_Section):
    """The whole configuration of a run."""

    data: DataConfig = Field(default_factory=DataConfig)
    frontend: FrontendConfig = Field(default_factory=FrontendConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    classical: ClassicalConfig = Field(default_factory=ClassicalConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _config_key(loc: tuple) -> str:
    """The config key an error location points at: pydantic appends union members ("int", "literal['auto']")
    and sequence indices to ``loc``, which are not keys a user can write."""
    parts: list[str] = []
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None or part not in model.model_fields:
            break
        parts.append(part)
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return ".".join(parts) or ".".join(str(p) for p in loc)


def suggest_key(key: str, valid: list[str]) -> str | None:
    """The valid key a mistyped ``key`` most likely meant: within its section, a key whose name starts the typed
    one (``optim.lr_rate`` -> ``optim.lr``) or the closest name; else the closest key anywhere."""
    section, _, leaf = key.rpartition(".")
    names = {k.rpartition(".")[2]: k for k in valid if k.rpartition(".")[0] == section and section}
    starts = [n for n in names if leaf.startswith(n + "_") or (len(leaf) >= 3 and n.startswith(leaf))]
    if starts:
        return names[max(starts, key=len)]
    close = difflib.get_close_matches(leaf, list(names), n=1, cutoff=0.6)
    if close:
        return names[close[0]]
    close = difflib.get_close_matches(key, valid, n=1)
    return close[0] if close else None


def _format_validation_error(err: ValidationError, *, source: str) -> str:
    lines = []
    # section names too, so a typo in the section ("trian.epochs") gets a suggestion
    valid = list(Config.model_fields) + _valid_keys(Config)
    invalid: dict[str, tuple[list[str], Any]] = {}  # key -> (messages of every union member, received value)
    for e in err.errors():
        if e["type"] == "extra_forbidden":
            key = ".".join(str(p) for p in e["loc"])
            close = suggest_key(key, valid)
            hint = f" Did you mean {close!r}?" if close else ""
            lines.append(f"unknown config key {key!r} in {source}.{hint}")
        else:
            msgs, _ = invalid.setdefault(_config_key(e["loc"]), ([], e.get("input")))
            msgs.append(e["msg"])
    for key, (msgs, got) in invalid.items():
        lines.append(f"invalid value for {key!r} in {source}: {' or '.join(msgs)} (got {got!r})")
    lines.append("Run `clipwise config` to print every key with its default.")
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key.sub=value`` override; the value is read as YAML (``1e-3``, ``true``, ``[1, 2]``).

    Raises:
        ConfigError: the text has no ``=`` or an empty key.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (for example optim.lr=1e-3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-3 as a string; numbers written that way are what users type for learning rates.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def read_yaml_mapping(path: Path, *, what: str) -> Any:
    """The YAML document in ``path`` (None for an empty file becomes ``{}``).

    Raises:
        ConfigError: the file is missing or not valid YAML, naming it as ``what``.
    """
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from None


def load_config(
    path: str | Path | None = None,
    *,
    overrides: list[str] | dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Build a :class:`Config` from defaults, an optional base dict, a YAML file and overrides (in that order).

    Args:
        path: a YAML file with any subset of the sections.
        overrides: ``["optim.lr=1e-3", ...]`` or a ``{"optim.lr": 1e-3}`` mapping.
        base: a config dict applied before the file (e.g. a saved run's config when resuming).

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown or a value has the wrong type.
    """
    tree: dict[str, Any] = {}
    sources = []
    if base:
        tree = yaml.safe_load(yaml.safe_dump(base))  # deep copy through plain types
    if path is not None:
        p = Path(path)
        loaded = read_yaml_mapping(p, what="config file")
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(loaded).__name__}")
        for key, value in _flatten(loaded).items():
            _set_dotted(tree, key, value)
        sources.append(str(p))
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        _set_dotted(tree, key, value)
    if overrides:
        sources.append("the command-line overrides")
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source=" and ".join(sources) or "the config")) from None


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        # model.params is a free-form mapping: keep it whole rather than flattening into it
        if isinstance(value, dict) and value and dotted != "model.params":
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def describe_config() -> str:
    """Every key with its default and description, as YAML-like text (for ``clipwise config``)."""
    lines = []
    defaults = Config().to_dict()
    for section, model in Config.model_fields.items():
        lines.append(f"{section}:")
        for name, field in model.annotation.model_fields.items():  # type: ignore[union-attr]
            value = defaults[section][name]
            desc = f"  # {field.description}" if field.description else ""
            lines.append(f"  {name}: {yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}{desc}")
    return "\n".join(lines)
