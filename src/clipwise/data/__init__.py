"""The data layer: manifests, dataset recipes, splits, audio loading and the synthetic dataset."""

from clipwise.data.audio import (
    CROP_MODES,
    PAD_MODES,
    AudioInfo,
    audio_info,
    fix_length,
    frame_windows,
    is_silent,
    load_audio,
    window_starts,
)
from clipwise.data.manifest import (
    SPLITS,
    check_files,
    label_names,
    normalise_split,
    parse_labels,
    read_manifest,
    write_manifest,
)
from clipwise.data.recipes import (
    AUDIO_EXTENSIONS,
    RECIPES,
    download_esc50,
    download_fsdd,
    list_recipes,
    prepare,
    prepare_esc50,
    prepare_folder,
    prepare_fsdd,
)
from clipwise.data.splits import assign_splits
from clipwise.data.synth import SYNTH_CLASSES, make_synthetic_dataset, synth_clip

__all__ = [
    "AUDIO_EXTENSIONS",
    "CROP_MODES",
    "PAD_MODES",
    "RECIPES",
    "SPLITS",
    "SYNTH_CLASSES",
    "AudioInfo",
    "assign_splits",
    "audio_info",
    "check_files",
    "download_esc50",
    "download_fsdd",
    "fix_length",
    "frame_windows",
    "is_silent",
    "label_names",
    "list_recipes",
    "load_audio",
    "make_synthetic_dataset",
    "normalise_split",
    "parse_labels",
    "prepare",
    "prepare_esc50",
    "prepare_folder",
    "prepare_fsdd",
    "read_manifest",
    "synth_clip",
    "window_starts",
    "write_manifest",
]
