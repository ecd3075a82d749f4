"""Dataset loading: readers for the real on-disk formats, window datasets, splits, synthetic data;
one registry of the formats (:mod:`emoexp.data.registry`).

Importing this package stays cheap (no torch, scipy or numpy): the loaders live in submodules
and the names below are imported from them on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from emoexp.data.base import BadFilePolicy, DataBundle, DataError, MissingDatasetError

_LAZY = {
    "load_pickle": "safe_pickle",
    "zscore": "eeg",
    "resample_poly_axis": "eeg",
    "EEGRecordings": "eeg",
    "TrialArray": "eeg",
    "WindowDataset": "eeg",
    "eeg_cache_path": "eeg",
    "default_cache_dir": "eeg",
    "load_faced": "faced",
    "read_faced_file": "faced",
    "FACED_CHANNELS": "faced",
    "FACED_EEG_CHANNELS": "faced",
    "FACED_CLASSES": "faced",
    "FACED_VALENCE_CLASSES": "faced",
    "FACED_SAMPLE_RATE": "faced",
    "load_eav": "eav",
    "read_eav_eeg": "eav",
    "parse_eav_media_name": "eav",
    "EAV_CLASSES": "eav",
    "EAV_SAMPLE_RATE": "eav",
    "read_wav": "audio",
    "mfcc": "audio",
    "Split": "splits",
    "split_subjects": "splits",
    "split_trials": "splits",
    "DatasetFormat": "registry",
    "DatasetParts": "registry",
    "get_dataset": "registry",
    "list_datasets": "registry",
    "register_dataset": "registry",
    "synthesize": "registry",
}

__all__ = ["BadFilePolicy", "DataBundle", "DataError", "MissingDatasetError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
