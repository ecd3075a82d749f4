"""Raw files -> *segments* for ``emoexp predict``: one reader per kind of file.

A reader takes one file and what the model expects (:class:`InputSpec`, the predict app's
``ModelSpec``) and returns segments (a recording, a clip, a trial), each a dict of continuous
arrays at the model's rates (``eeg`` (C, T), ``audio`` (n,), ``waveform``, ``sequence``,
``image``), which predict cuts into the model's windows. The dataset registry
(:mod:`emoexp.data.registry`) maps each file suffix to its reader: a format's raw files are
predictable once its entry names its reader here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emoexp.data.base import DataError

Segment = dict[str, np.ndarray]   # input name -> continuous array: eeg (C, T), audio (n,)


class InputSpec(Protocol):
    """What a reader needs to know about the model (the predict app's ``ModelSpec``)."""

    task: str
    inputs: dict[str, tuple[int, ...]]          # input name -> schema shape, (-1, C, T) or (-1, n)
    required: tuple[str, ...]                   # inputs a file must provide (others are optional)
    sample_rate: float                          # EEG samples per second the model was trained on
    n_channels: int
    channel_names: list[str] | None
    audio_sample_rate: int
    extra: dict[str, Any]


def _needs(path: Path, spec: InputSpec, name: str, what: str) -> None:
    if name not in spec.inputs:
        raise DataError(path, f"{what}, but model {spec.task} takes no {name!r} input "
                              f"(its inputs: {', '.join(spec.inputs)})")


def _resample_eeg(x: np.ndarray, orig: float, spec: InputSpec) -> np.ndarray:
    from emoexp.data.eeg import resample_poly_axis

    return resample_poly_axis(x, orig, spec.sample_rate, axis=-1)


def read_npy(path: Path, spec: InputSpec) -> list[Segment]:
    """EEG already at the model's rate: (C, T) one recording, (B, C, T) B recordings; for a
    posture model, posture features (T, F) or (B, T, F)."""
    if "sequence" in spec.inputs:
        return _read_sequences(path, spec)
    _needs(path, spec, "eeg", "a .npy file holds EEG")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:  # ValueError for pickled object arrays, OSError for junk
        raise DataError(path, f"cannot read .npy ({type(e).__name__}: {e})") from None
    shape = x.shape
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != spec.n_channels:
        raise DataError(path, f"array has shape {shape}; model {spec.task} expects ({spec.n_channels}, T) "
                              f"or (B, {spec.n_channels}, T) EEG at {spec.sample_rate:g} Hz")
    if x.dtype.kind not in "fiu":
        raise DataError(path, f"array has dtype {x.dtype}; expected real numbers")
    return [{"eeg": np.asarray(seg, dtype=np.float32)} for seg in x]


def _read_sequences(path: Path, spec: InputSpec) -> list[Segment]:
    from emoexp.data.posture import read_sequence

    n_feat = spec.extra["n_features"]
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(path, f"cannot read .npy ({type(e).__name__}: {e})") from None
    if x.ndim == 2:
        x = read_sequence(path)[None]  # validated, NaNs interpolated as in training
    if x.ndim != 3 or x.shape[-1] != n_feat:
        raise DataError(path, f"array has shape {x.shape}; model {spec.task} expects (T, {n_feat}) or "
                              f"(B, T, {n_feat}) posture features per frame")
    return [{"sequence": np.asarray(q, dtype=np.float32)} for q in x]


def read_faced_pkl(path: Path, spec: InputSpec) -> list[Segment]:
    """A FACED subject file (28 clips, 32 channels, T) at 250 Hz: one segment per clip."""
    from emoexp.data.faced import FACED_CHANNELS, FACED_SAMPLE_RATE, read_faced_file

    _needs(path, spec, "eeg", "a FACED .pkl holds EEG")
    x = read_faced_file(path)
    names = spec.channel_names
    if names and all(n in FACED_CHANNELS for n in names):
        idx = [FACED_CHANNELS.index(n) for n in names]
    elif spec.n_channels in (30, 32):
        # no FACED montage on record (e.g. an EAV model): FACED keeps its 30 EEG channels first
        idx = list(range(spec.n_channels))
    else:
        raise DataError(path, f"model {spec.task} takes {spec.n_channels} channels "
                              f"{names or ''}, which do not map onto FACED's 32")
    x = np.asarray(x[:, idx, :], dtype=np.float32)
    return [{"eeg": _resample_eeg(clip, FACED_SAMPLE_RATE, spec)} for clip in x]


def read_eav_mat(path: Path, spec: InputSpec) -> list[Segment]:
    """An EAV ``subject{N}_eeg.mat`` ((T, 30, trials) at 500 Hz): one segment per trial."""
    from emoexp.data.eav import EAV_SAMPLE_RATE, read_eav_raw

    _needs(path, spec, "eeg", "an EAV .mat holds EEG")
    raw = read_eav_raw(path)                      # (T, 30, n_trials), validated
    if raw.shape[1] != spec.n_channels:
        raise DataError(path, f"holds {raw.shape[1]} channels; model {spec.task} expects {spec.n_channels}")
    trials = np.moveaxis(raw, 2, 0).transpose(0, 2, 1)  # (n_trials, 30, T)
    return [{"eeg": _resample_eeg(np.asarray(t, dtype=np.float32), EAV_SAMPLE_RATE, spec)} for t in trials]


def read_deap_dat(path: Path, spec: InputSpec) -> list[Segment]:
    """A DEAP subject file (trials, 40, 8064) at 128 Hz: one segment per trial, the 32 EEG
    channels after the model's baseline step."""
    from emoexp.data.deap import DEAP_SAMPLE_RATE, apply_baseline, read_deap_file

    _needs(path, spec, "eeg", "a DEAP .dat holds EEG")
    if spec.n_channels != 32:
        raise DataError(path, f"holds DEAP's 32 EEG channels; model {spec.task} expects {spec.n_channels}")
    eeg, _ = read_deap_file(path)
    eeg = apply_baseline(eeg, spec.extra.get("baseline") or "drop")
    return [{"eeg": _resample_eeg(t, DEAP_SAMPLE_RATE, spec)} for t in eeg]


def read_wav(path: Path, spec: InputSpec) -> list[Segment]:
    """Audio, mono, resampled to the model's audio rate: one segment."""
    from emoexp.data import audio

    if "waveform" in spec.inputs:  # a speech model (train_speech): the waveform at the model's rate
        wave, sr = audio.read_wav(path)
        return [{"waveform": audio.resample(audio.to_mono(wave), sr, spec.audio_sample_rate)}]
    _needs(path, spec, "audio", "a .wav file holds audio")
    missing = [n for n in spec.required if n != "audio"]
    if missing:
        raise DataError(path, f"model {spec.task} needs {' and '.join(missing)} input too; a .wav gives "
                              "audio only (give the EEG recording as .npy/.mat/.pkl)")
    wave, sr = audio.read_wav(path)
    return [{"audio": audio.resample(audio.to_mono(wave), sr, spec.audio_sample_rate)}]


def read_image(path: Path, spec: InputSpec) -> list[Segment]:
    """A .jpg/.png face image -> one segment ``{"image": (H, W, 3) uint8}``, predicted whole."""
    from emoexp.data.faces import read_face_image

    _needs(path, spec, "image", "an image")
    return [{"image": read_face_image(path)}]
