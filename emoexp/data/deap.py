"""DEAP (Koelstra et al. 2012), ``data_preprocessed_python/sNN.dat``: 32 subjects x 40 trials.

Each ``sNN.dat`` is a Python 2 pickle of ``{'data': (40, 40, 8064) float64, 'labels': (40, 4)}``:
trial x channel x sample at 128 Hz, the first 3 s (384 samples) a pre-trial baseline; channels
0-31 EEG in the Geneva order, 32-39 peripheral; labels valence, arousal, dominance, liking in
[1, 9] (docs/datasets.md section 3). Files are read with the restricted unpickler, which decodes
the Python 2 byte strings (keys, array buffers) as latin-1; the synthetic files are written in the
same Python 2 form (:mod:`emoexp.data.py2pickle`). A file with 32 channels or more is taken (only
the first 32, the EEG, are used: TorchEEG's own test records hold exactly 32).

What :func:`load_deap` does (seed 004), in order:

1. keep the 32 EEG channels (float32);
2. baseline: ``subtract`` the mean 1-s chunk of the 3-s baseline from every second of the trial
   and drop the baseline (TorchEEG's DEAP recipe) | ``drop`` it | ``keep`` all 63 s;
3. ratings -> classes per target: ``levels=2`` low/high at ``threshold`` (5; whether a rating of
   exactly 5 counts as high is ``high_inclusive``: TorchEEG says yes, many papers say no);
   ``levels=3`` low/medium/high at ``bin_edges`` (default: equal thirds of [1, 9], 3.667 and
   6.333; a rating equal to an edge goes to the upper class). Every rating is a target
   (valence, arousal, dominance, liking), and with ``levels=2`` so is ``quadrant``: valence and
   arousal together as one 4-class target, LVLA, LVHA, HVLA, HVHA (TorchEEG offers both).

Windows (``window_size`` samples, one every ``stride = window_size - overlap`` samples: seed 004
spells it ``overlap``; :func:`emoexp.data.windows.window_starts`) are indices
(trial, start) into the trial array, never copies; z-scoring and quantization happen per window
when a dataset item is read (:mod:`emoexp.data.eeg_tokens`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.deap_labels import (  # noqa: F401  (re-exported: the reader's vocabulary)
    ALL_TARGETS,
    DEAP_RATINGS,
    LEVEL_NAMES,
    QUADRANT,
    QUADRANT_NAMES,
    TARGETS,
)
from emoexp.data.safe_pickle import load_pickle

log = logging.getLogger(__name__)

DEAP_SAMPLE_RATE = 128
DEAP_BASELINE_SAMPLES = 3 * DEAP_SAMPLE_RATE
DEAP_EEG_CHANNELS = [
    "Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7", "PO3", "O1", "Oz", "Pz",
    "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz", "C4", "T8", "CP6", "CP2", "P4", "P8", "PO4", "O2",
]
DEAP_PERIPHERAL = ["hEOG", "vEOG", "zEMG", "tEMG", "GSR", "Respiration", "Plethysmograph", "Temperature"]
DEAP_CHANNELS = DEAP_EEG_CHANNELS + DEAP_PERIPHERAL
DEFAULT_BIN_EDGES = (11.0 / 3.0, 19.0 / 3.0)  # equal thirds of the [1, 9] rating scale
BASELINE_MODES = ("subtract", "drop", "keep")

_FILE_RE = re.compile(r"s(\d{2})\.dat")


def find_deap_files(data_dir: str | os.PathLike) -> list[Path]:
    """``sNN.dat`` files in ``data_dir`` or its ``data_preprocessed_python/``, by subject number."""
    root = Path(data_dir)
    if not root.is_dir():
        raise MissingDatasetError(root, "deap")
    for folder in (root, root / "data_preprocessed_python"):
        files = sorted(p for p in folder.glob("s*.dat") if _FILE_RE.fullmatch(p.name))
        if files:
            return files
    raise MissingDatasetError(root, "deap", "holds no sNN.dat files (nor does data_preprocessed_python/ in it)")


def subject_of(path: str | os.PathLike) -> int:
    m = _FILE_RE.fullmatch(Path(path).name)
    if not m:
        raise DataError(path, "is not named sNN.dat (DEAP subject files are s01.dat ... s32.dat)")
    return int(m.group(1))


def read_deap_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One subject file -> (EEG (trials, 32, T) float32, ratings (trials, 4) float64), validated."""
    obj = load_pickle(path)
    if not isinstance(obj, dict) or not {"data", "labels"} <= set(obj):
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(path, f"holds {keys}; expected a dict with 'data' and 'labels' (DEAP preprocessed python)")
    data, labels = obj["data"], obj["labels"]
    if not isinstance(data, np.ndarray) or data.ndim != 3:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(path, f"'data' is {shape}; expected a (trials, 40 channels, samples) array")
    longest = int(np.argmax(data.shape))
    if longest != 2 and data.shape[longest] > DEAP_BASELINE_SAMPLES:
        # the samples (8064 in DEAP) outnumber trials and channels by far: they belong last
        raise DataError(path, f"'data' has shape {data.shape}; expected (trials, channels, samples): axis "
                              f"{longest} looks like the samples (looks transposed)")
    if data.shape[1] < len(DEAP_EEG_CHANNELS):
        raise DataError(path, f"'data' has shape {data.shape}; expected at least {len(DEAP_EEG_CHANNELS)} channels "
                              "on axis 1 (DEAP's 32 EEG channels, then 8 peripheral ones)")
    if data.dtype.kind not in "fiu":
        raise DataError(path, f"'data' has dtype {data.dtype}; expected real numbers")
    if data.shape[0] == 0:
        raise DataError(path, f"'data' has shape {data.shape}: no trials (DEAP subject files hold 40)")
    if data.shape[2] <= DEAP_BASELINE_SAMPLES:
        raise DataError(path, f"trials have {data.shape[2]} samples; DEAP trials are 3 s of baseline + 60 s "
                              f"(8064 at 128 Hz), at least {DEAP_BASELINE_SAMPLES + 1} are needed")
    if not isinstance(labels, np.ndarray) or labels.shape != (data.shape[0], len(DEAP_RATINGS)):
        shape = getattr(labels, "shape", type(labels).__name__)
        raise DataError(path, f"'labels' is {shape}; expected ({data.shape[0]} trials, 4 ratings: "
                              "valence, arousal, dominance, liking)")
    try:
        if labels.dtype.kind not in "fiuO":
            raise TypeError(labels.dtype)
        labels = labels.astype(np.float64)  # an object array of numbers is fine
    except (TypeError, ValueError):
        raise DataError(path, f"'labels' holds non-numeric ratings (dtype {labels.dtype}); DEAP ratings "
                              "are numbers in [1, 9]") from None
    if not np.all(np.isfinite(labels)):
        bad = sorted({int(t) for t in np.argwhere(~np.isfinite(labels))[:, 0]})
        raise DataError(path, f"'labels' holds missing, NaN or infinite ratings (trials {bad[:5]}); DEAP ratings "
                              "are numbers in [1, 9]")
    if labels.min() < 1 - 1e-6 or labels.max() > 9 + 1e-6:
        raise DataError(path, f"ratings span [{np.nanmin(labels):g}, {np.nanmax(labels):g}]; DEAP ratings lie in [1, 9]")
    eeg = np.asarray(data[:, : len(DEAP_EEG_CHANNELS)], dtype=np.float32)
    if not np.all(np.isfinite(eeg)):
        bad = sorted({int(t) for t in np.argwhere(~np.isfinite(eeg))[:, 0]})
        raise DataError(path, f"EEG holds NaN or infinite samples (trials {bad[:5]})")
    return eeg, labels


def apply_baseline(eeg: np.ndarray, mode: str) -> np.ndarray:
    """(trials, C, 384 + T) -> (trials, C, T) for ``subtract``/``drop``; unchanged for ``keep``."""
    if mode == "keep":
        return eeg
    if mode not in BASELINE_MODES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINE_MODES)}, not {mode!r}")
    trial = eeg[:, :, DEAP_BASELINE_SAMPLES:]
    if mode == "drop":
        return np.ascontiguousarray(trial)
    sr = DEAP_SAMPLE_RATE
    base = eeg[:, :, :DEAP_BASELINE_SAMPLES].reshape(eeg.shape[0], eeg.shape[1], 3, sr).mean(axis=2)
    reps = -(-trial.shape[2] // sr)
    return np.ascontiguousarray(trial - np.tile(base, (1, 1, reps))[:, :, : trial.shape[2]])


def rating_classes(ratings: np.ndarray, *, levels: int = 2, threshold: float = 5.0, high_inclusive: bool = True,
                   bin_edges: tuple[float, ...] | None = None) -> np.ndarray:
    """Continuous ratings in [1, 9] -> class codes (0 low ... levels-1 high), int64."""
    r = np.asarray(ratings, dtype=np.float64)
    if levels == 2:
        high = r >= threshold if high_inclusive else r > threshold
        return high.astype(np.int64)
    if levels == 3:
        edges = tuple(bin_edges) if bin_edges else DEFAULT_BIN_EDGES
        if len(edges) != 2 or not edges[0] < edges[1]:
            raise ValueError(f"levels=3 needs two increasing bin edges, got {edges}")
        return np.searchsorted(np.asarray(edges), r, side="right").astype(np.int64)
    raise ValueError(f"levels must be 2 or 3, not {levels}")


def parse_bin_edges(text: str) -> tuple[float, ...] | None:
    """``"4,6.5"`` -> (4.0, 6.5); empty -> None (the default edges)."""
    if not str(text).strip():
        return None
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"bin_edges must be two numbers like '4,6.5', not {text!r}") from None


@dataclass
class DeapTrials:
    """Every loaded trial: EEG (n, 32, T) float32, classes per target, subject per trial."""

    eeg: np.ndarray
    targets: dict[str, np.ndarray]
    ratings: np.ndarray                  # (n, 4) as stored
    subject: np.ndarray                  # (n,) int, from the file name
    trial: np.ndarray                    # (n,) trial index within its subject (video order)
    class_names: list[str]               # of each rating: low/high or low/medium/high
    target_classes: dict[str, list[str]] | None = None   # per target (quadrant: QUADRANT_NAMES)


def load_deap(data_dir: str | os.PathLike, *, baseline: str = "subtract", levels: int = 2, threshold: float = 5.0,
              high_inclusive: bool = True, bin_edges: tuple[float, ...] | None = None, max_subjects: int = 0,
              policy: BadFilePolicy | None = None) -> DeapTrials:
    """Read every subject of a DEAP folder (see the module docstring for the steps)."""
    policy = policy or BadFilePolicy()
    files = find_deap_files(data_dir)
    if max_subjects:
        files = files[:max_subjects]
    eegs, ratings, subjects, trials = [], [], [], []
    length = None
    for path in files:
        try:
            eeg, lab = read_deap_file(path)
            eeg = apply_baseline(eeg, baseline)
        except DataError as e:
            policy.bad(path, e.problem)
            continue
        if length is not None and eeg.shape[2] != length:
            policy.bad(path, f"trials have {eeg.shape[2]} samples after the baseline step, the others {length}")
            continue
        length = eeg.shape[2]
        eegs.append(eeg)
        ratings.append(lab)
        subjects.append(np.full(len(eeg), subject_of(path)))
        trials.append(np.arange(len(eeg)))
    if not eegs:
        raise DataError(data_dir, "no readable DEAP subject file")
    r = np.concatenate(ratings)
    targets = {name: rating_classes(r[:, DEAP_RATINGS.index(name)], levels=levels, threshold=threshold,
                                    high_inclusive=high_inclusive, bin_edges=bin_edges) for name in DEAP_RATINGS}
    classes = {name: list(LEVEL_NAMES[levels]) for name in DEAP_RATINGS}
    if levels == 2:
        targets[QUADRANT] = 2 * targets["valence"] + targets["arousal"]
        classes[QUADRANT] = list(QUADRANT_NAMES)
    return DeapTrials(eeg=np.concatenate(eegs), targets=targets, ratings=r, subject=np.concatenate(subjects),
                      trial=np.concatenate(trials), class_names=list(LEVEL_NAMES[levels]), target_classes=classes)
