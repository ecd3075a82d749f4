"""FACED (Chen et al. 2023): 123 subjects x 28 video clips, 32 channels at 250 Hz.

``Processed_data/subNNN.pkl`` each pickle one bare ndarray (28 clips, 32 channels, T), clips in
video-id order with fixed labels (see /work/shared/DATASETS.md section 1). Each subject is
converted once into a (28, T, C) float32 ``.npy`` cache so that training reads windows from disk
and memory does not grow with the number of subjects.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.eeg import (
    EEGRecordings,
    TrialArray,
    eeg_cache_path,
    resolve_cache_dir,
)
from emoexp.data.io import atomic_save_npy
from emoexp.data.safe_pickle import load_pickle

log = logging.getLogger(__name__)

FACED_EEG_CHANNELS = [
    "FP1", "FP2", "FZ", "F3", "F4", "F7", "F8", "FC1", "FC2", "FC5", "FC6", "CZ", "C3", "C4",
    "T7", "T8", "CP1", "CP2", "CP5", "CP6", "PZ", "P3", "P4", "P7", "P8", "PO3", "PO4", "OZ",
    "O1", "O2",
]
# The authors' code and TorchEEG put the mastoids last. Part of the raw recordings (first cohort)
# had A1/A2 elsewhere; Processed_data is assumed to be in the unified order.
FACED_CHANNELS = FACED_EEG_CHANNELS + ["A2", "A1"]
FACED_CLASSES = [
    "anger", "disgust", "fear", "sadness", "neutral", "amusement", "inspiration", "joy", "tenderness",
]
FACED_VALENCE_CLASSES = ["negative", "neutral", "positive"]
# emotion of clip 0..27 (video-id order): 3 clips per emotion, 4 neutral ones
FACED_CLIP_EMOTION = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8]
FACED_SAMPLE_RATE = 250
FACED_N_CLIPS = 28

_CHANNEL_SETS = {"eeg30": FACED_EEG_CHANNELS, "all32": FACED_CHANNELS}
_FILE_RE = re.compile(r"sub(\d+)\.pkl")


def faced_labels(label_scheme: str = "emotion") -> tuple[np.ndarray, list[str]]:
    """Per-clip labels (28,) int64 and class names for ``label_scheme`` emotion|valence."""
    emotion = np.asarray(FACED_CLIP_EMOTION, dtype=np.int64)
    if label_scheme == "emotion":
        return emotion, list(FACED_CLASSES)
    if label_scheme == "valence":
        # anger..sadness negative, neutral neutral, amusement..tenderness positive
        return np.where(emotion < 4, 0, np.where(emotion == 4, 1, 2)), list(FACED_VALENCE_CLASSES)
    raise ValueError(f"label_scheme must be 'emotion' or 'valence', not {label_scheme!r}")


def read_faced_file(path: str | os.PathLike) -> np.ndarray:
    """One FACED subject pickle -> validated (28, 32, T) ndarray (dtype as stored)."""
    x = load_pickle(path)
    if not isinstance(x, np.ndarray):
        raise DataError(
            path, f"holds a {type(x).__name__}, expected a numpy array (28 clips, 32 channels, T)"
        )
    if x.ndim != 3:
        raise DataError(path, f"array has shape {x.shape}; expected 3-D (28 clips, 32 channels, T)")
    if x.shape[:2] == (len(FACED_CHANNELS), FACED_N_CLIPS):
        raise DataError(
            path,
            f"array has shape {x.shape}, which looks transposed: clips and channels swapped; "
            "expected (28 clips, 32 channels, T)",
        )
    if x.shape[:2] != (FACED_N_CLIPS, len(FACED_CHANNELS)):
        raise DataError(path, f"array has shape {x.shape}; expected (28 clips, 32 channels, T)")
    if x.dtype.kind not in "fiu":
        raise DataError(path, f"array has dtype {x.dtype}; expected real numbers")
    if x.shape[2] < 1:
        raise DataError(path, "array has no samples (T = 0)")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        n_bad = int(bad.sum())
        if n_bad:
            # (clip, channel) pairs holding NaN/inf, reported with channel names
            pairs = np.argwhere(bad.any(axis=2))
            where = ", ".join(
                f"clip {c} channel {ch} ({FACED_CHANNELS[ch]})" for c, ch in pairs[:5].tolist()
            )
            more = f" and {len(pairs) - 5} more clip/channel pairs" if len(pairs) > 5 else ""
            raise DataError(path, f"holds {n_bad} non-finite values (NaN/inf) in {where}{more}")
    return x


def find_faced_files(data_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """[(subject id, path)] of the ``subNNN.pkl`` files under ``data_dir``, sorted by subject."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingDatasetError(data_dir, "faced")
    found: dict[int, Path] = {}
    # recursive: the zip often unpacks to Processed_data/Processed_data/; the name pattern keeps
    # out EEG_Features' subNNN.pkl.pkl files
    for p in sorted(data_dir.rglob("sub*.pkl")):
        m = _FILE_RE.fullmatch(p.name)
        if not m or not p.is_file():
            continue
        n = int(m.group(1))
        if n in found:
            raise DataError(p, f"a second file for subject {n} (the first is {found[n]})")
        found[n] = p
    if not found:
        raise MissingDatasetError(data_dir, "faced", "holds no sub*.pkl files")
    return [(found[n].name[: -len(".pkl")], found[n]) for n in sorted(found)]


def load_faced(
    data_dir: str | os.PathLike,
    *,
    channels: str = "eeg30",
    label_scheme: str = "emotion",
    cache_dir: str | os.PathLike | None = None,
    on_bad_file: BadFilePolicy | None = None,
    max_subjects: int | None = None,
    progress: bool = True,
) -> EEGRecordings:
    """Load FACED ``Processed_data`` as :class:`EEGRecordings` backed by per-subject caches.

    channels: ``eeg30`` drops the mastoids A2/A1; ``all32`` keeps them.
    label_scheme: ``emotion`` (9 classes) or ``valence`` (negative/neutral/positive).
    """
    from tqdm import tqdm

    if channels not in _CHANNEL_SETS:
        raise ValueError(f"channels must be one of {sorted(_CHANNEL_SETS)}, not {channels!r}")
    labels, class_names = faced_labels(label_scheme)
    kept = _CHANNEL_SETS[channels]
    policy = on_bad_file or BadFilePolicy()
    files = find_faced_files(data_dir)
    if max_subjects is not None:
        files = files[: max(0, int(max_subjects))]
    cdir = resolve_cache_dir(cache_dir, "faced")
    key = {"dataset": "faced", "channels": kept, "sample_rate": FACED_SAMPLE_RATE,
           "dtype": "float32", "layout": "trial,time,channel"}

    eeg: dict[str, TrialArray] = {}
    built = 0
    for sid, path in tqdm(files, desc="FACED subjects", unit="subject", disable=not progress):
        cache = eeg_cache_path(cdir, path, key)
        array = _open_cache(cache, len(kept))
        if array is None:
            try:
                x = read_faced_file(path)
            except DataError as e:
                policy.bad(path, e.problem)
                continue
            # (28, 32, T) -> keep channels -> (28, T, C)
            data = np.ascontiguousarray(x[:, : len(kept), :].transpose(0, 2, 1), dtype=np.float32)
            del x
            atomic_save_npy(cache, data)
            del data
            array = TrialArray.from_npy(cache)
            built += 1
        eeg[sid] = array
    if not eeg:
        raise DataError(data_dir, f"no usable FACED subject files ({len(files)} found, all skipped)")
    log.info("FACED: %d subjects (%d caches built, %d reused) in %s",
             len(eeg), built, len(eeg) - built, cdir)
    subjects = list(eeg)
    return EEGRecordings(
        subject_ids=subjects,
        class_names=class_names,
        sample_rate=float(FACED_SAMPLE_RATE),
        channel_names=list(kept),
        trial_labels={s: labels.copy() for s in subjects},
        eeg=eeg,
        trial_index={s: np.arange(FACED_N_CLIPS) for s in subjects},
        info={"dataset": "faced", "source": str(Path(data_dir).resolve()), "channels": channels,
              "label_scheme": label_scheme, "cache_dir": str(cdir),
              "skipped_files": len(policy.skipped)},
    )


def _open_cache(cache: Path, n_channels: int) -> TrialArray | None:
    """The cache file as a TrialArray, or None when absent or unusable (then it is rebuilt)."""
    if not cache.exists():
        return None
    try:
        array = TrialArray.from_npy(cache)
    except DataError as e:
        log.warning("rebuilding unreadable cache %s: %s", cache, e.problem)
        return None
    if array.n_trials != FACED_N_CLIPS or array.width != n_channels:
        log.warning("rebuilding cache %s of unexpected shape %s", cache, array.shape)
        return None
    return array
