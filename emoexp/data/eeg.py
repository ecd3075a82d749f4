"""EEG trial storage, window datasets, normalisation and the on-disk cache.

Every dataset loader turns its files into per-subject arrays of shape (n_trials, T, C) float32:
time-major, so one window (W consecutive samples of all channels) is a single contiguous block
that can be read from a cache file with one ``os.pread`` call. Windows are cut on the fly by
:class:`WindowDataset`, so a split over trials or subjects never needs a copy of the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoexp.data.base import DataError
from emoexp.data.windows import window_starts

log = logging.getLogger(__name__)

# Bump when the layout or meaning of cache files changes: old files then stop matching.
CACHE_FORMAT_VERSION = 1

# Canonical EEG bands (Hz) of band-power features (the baselines, the ``bands`` encoder); gamma
# is capped below the Nyquist frequency of slow recordings where they are used.
EEG_BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0),
}


# ---------------------------------------------------------------------------------------------
# numeric helpers

def zscore(x: np.ndarray, axis: int = -1, eps: float = 1e-6) -> np.ndarray:
    """Z-score along ``axis`` (time): one window (C, T) or a batch (B, C, T) -> float32.

    Training and serving both call this, so a served model sees inputs scaled exactly as in
    training. A flat channel comes out as zeros rather than NaN thanks to ``eps``.
    """
    x = np.asarray(x, dtype=np.float32)
    centered = x - x.mean(axis=axis, keepdims=True)
    std = np.sqrt(np.mean(np.square(centered), axis=axis, keepdims=True))
    centered /= std + np.float32(eps)
    return centered


def _rate_ratio(orig_sr: float, target_sr: float) -> tuple[int, int]:
    ratio = Fraction(target_sr).limit_denominator(10_000) / Fraction(orig_sr).limit_denominator(10_000)
    return ratio.numerator, ratio.denominator


def resample_poly_axis(x: np.ndarray, orig_sr: float, target_sr: float, axis: int) -> np.ndarray:
    """Polyphase resampling of ``x`` along ``axis`` from ``orig_sr`` to ``target_sr`` (float32)."""
    up, down = _rate_ratio(orig_sr, target_sr)
    if up == down:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly

    return resample_poly(x, up, down, axis=axis).astype(np.float32, copy=False)


def resampled_length(n: int, orig_sr: float, target_sr: float) -> int:
    """Length resample_poly_axis gives for ``n`` input samples."""
    up, down = _rate_ratio(orig_sr, target_sr)
    return -(-n * up // down)


# ---------------------------------------------------------------------------------------------
# cache files

def default_cache_dir() -> Path:
    """``$EMOEXP_CACHE_DIR``, else ``~/.cache/emoexp``."""
    env = os.environ.get("EMOEXP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emoexp"


def resolve_cache_dir(cache_dir: str | os.PathLike | None, dataset: str) -> Path:
    """The folder where ``dataset``'s cache files go (created on demand)."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / dataset


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies a source file's content cheaply: absolute path, size, mtime_ns."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def eeg_cache_path(cache_dir: str | os.PathLike, source_path: str | os.PathLike, key: dict) -> Path:
    """Cache file for ``source_path`` preprocessed with the parameters in ``key``.

    The name hashes the source's path, size and mtime_ns together with ``key`` (channels kept,
    target rate, dtype...) and the cache format version: editing or replacing the source, or
    changing a parameter, gives another file instead of silently reusing stale data.
    """
    ident = {"source": file_fingerprint(source_path), "key": key, "format": CACHE_FORMAT_VERSION}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
    stem = Path(source_path).name.split(".")[0] or "data"
    return Path(cache_dir) / f"{stem}-{digest[:20]}.npy"


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, without reading the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(shape), np.dtype(dtype), bool(fortran), f.tell()


# ---------------------------------------------------------------------------------------------
# trial arrays

class TrialArray:
    """A (n_trials, L, D) float32 array held in memory or in a .npy file.

    ``read``/``read_many`` return (length, D) blocks starting at a row of a trial, zero-padded
    past the end of the trial. File-backed arrays read each block with one positional read from a
    descriptor opened lazily per process, so nothing is memory-mapped and the resident set stays
    at the size of the blocks actually requested (the page cache does not count toward RSS).
    ``rows`` maps logical trials to rows of the underlying array (a trial subset without a copy).
    """

    def __init__(
        self,
        data: np.ndarray | None = None,
        *,
        path: str | os.PathLike | None = None,
        rows: np.ndarray | None = None,
    ):
        if (data is None) == (path is None):
            raise ValueError("give exactly one of data or path")
        self.path = Path(path) if path is not None else None
        self._data: np.ndarray | None = None
        self._offset = 0
        if data is not None:
            data = np.ascontiguousarray(data, dtype=np.float32)
            if data.ndim != 3:
                raise ValueError(f"expected a (n_trials, L, D) array, got shape {data.shape}")
            self._data = data
            base_shape = data.shape
        else:
            try:
                shape, dtype, fortran, offset = npy_header(self.path)
            except (OSError, ValueError) as e:
                raise DataError(self.path, f"is not a readable .npy cache file: {e}") from e
            if len(shape) != 3 or dtype != np.dtype("<f4") or fortran:
                raise DataError(
                    self.path,
                    f"cache file holds {dtype} {shape} (fortran={fortran}); expected C-ordered "
                    "little-endian float32 (n_trials, L, D)",
                )
            expected = offset + int(np.prod(shape)) * 4
            if self.path.stat().st_size < expected:
                raise DataError(self.path, "cache file is truncated")
            base_shape = shape
            self._offset = offset
        self._base_shape: tuple[int, int, int] = tuple(int(s) for s in base_shape)  # type: ignore[assignment]
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows is not None and self.rows.size and (
            self.rows.min() < 0 or self.rows.max() >= self._base_shape[0]
        ):
            raise IndexError("trial rows out of range")
        self._fd: int | None = None
        self._fd_pid: int | None = None

    @classmethod
    def from_npy(cls, path: str | os.PathLike) -> TrialArray:
        return cls(path=path)

    # -- shape
    @property
    def shape(self) -> tuple[int, int, int]:
        n = self._base_shape[0] if self.rows is None else len(self.rows)
        return (n, self._base_shape[1], self._base_shape[2])

    @property
    def n_trials(self) -> int:
        return self.shape[0]

    @property
    def length(self) -> int:
        return self._base_shape[1]

    @property
    def width(self) -> int:
        return self._base_shape[2]

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def __len__(self) -> int:
        return self.n_trials

    def __repr__(self) -> str:
        where = str(self.path) if self.path else "memory"
        return f"TrialArray(shape={self.shape}, {where})"

    def subset(self, trials: np.ndarray) -> TrialArray:
        """Logical trials ``trials`` of this array, sharing the storage."""
        trials = np.asarray(trials, dtype=np.int64)
        rows = trials if self.rows is None else self.rows[trials]
        out = TrialArray.__new__(TrialArray)
        out.__dict__.update(self.__dict__)
        out.rows = rows
        out._fd, out._fd_pid = None, None
        return out

    def _row(self, trials: np.ndarray) -> np.ndarray:
        return trials if self.rows is None else self.rows[trials]

    # -- process-local descriptor (DataLoader workers fork: each process opens its own)
    def _descriptor(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._fd_pid != pid:
            self._fd = os.open(self.path, os.O_RDONLY)
            self._fd_pid = pid
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd, self._fd_pid = None, None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict:
        # A descriptor number means nothing in another process (spawned workers, pickling).
        state = self.__dict__.copy()
        state["_fd"], state["_fd_pid"] = None, None
        return state

    # -- reading
    def load(self) -> np.ndarray:
        """The whole (n_trials, L, D) array in memory (for tests and small data)."""
        if self._data is not None:
            return self._data if self.rows is None else self._data[self.rows]
        n = self.n_trials
        return self.read_many(np.arange(n), np.zeros(n, dtype=np.int64), self.length)

    def read(self, trial: int, start: int, length: int) -> np.ndarray:
        """(length, D) float32 rows ``start:start+length`` of ``trial``, zeros past the end."""
        return self.read_many(np.array([trial]), np.array([start]), length)[0]

    def read_many(self, trials: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """(B, length, D) float32 blocks; trials/starts are (B,) integer arrays."""
        trials = np.asarray(trials, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        rows = self._row(trials)
        L, D = self._base_shape[1], self._base_shape[2]
        if self._data is not None:
            # Vectorised gather; positions past the end are clamped, then zeroed.
            pos = starts[:, None] + np.arange(length)[None, :]          # (B, length)
            out = self._data[rows[:, None], np.minimum(pos, L - 1)]      # (B, length, D)
            past = pos >= L
            if past.any():
                out[past] = 0.0
            return out
        out = np.zeros((len(rows), length, D), dtype=np.float32)
        fd = self._descriptor()
        row_bytes = D * 4
        for i, (r, s) in enumerate(zip(rows.tolist(), starts.tolist(), strict=True)):
            n = min(length, L - s)
            if n <= 0:
                continue
            want = n * row_bytes
            # one contiguous read straight into the output block
            got = os.preadv(fd, [memoryview(out[i, :n]).cast("B")], self._offset + (r * L + s) * row_bytes)
            if got != want:
                raise DataError(self.path, f"short read ({got} of {want} bytes): cache file truncated?")
        return out


class FrameArray:
    """Video frames of trials: a (n_rows, F, S, S, 3) uint8 array (a .npy file, memory-mapped
    per process, or in memory) and ``row_of`` (n_trials,) giving each trial's row, -1 for none.

    Only trials that have a video take space (in EAV, the speaking half). ``read_many`` gathers
    given frames of given trials and gives zeros for trials without a video.
    """

    def __init__(self, data: np.ndarray | None = None, *, path: str | os.PathLike | None = None,
                 row_of: np.ndarray):
        if (data is None) == (path is None):
            raise ValueError("give exactly one of data or path")
        self.path = Path(path) if path is not None else None
        self._data = None if data is None else np.ascontiguousarray(data, dtype=np.uint8)
        if self._data is not None:
            shape = self._data.shape
        else:
            try:
                shape, dtype, fortran, _ = npy_header(self.path)
            except (OSError, ValueError) as e:
                raise DataError(self.path, f"is not a readable .npy cache file: {e}") from e
            if dtype != np.dtype("u1") or fortran:
                raise DataError(self.path, f"cache file holds {dtype} (fortran={fortran}); expected uint8 frames")
        if len(shape) != 5 or shape[-1] != 3 or shape[2] != shape[3]:
            raise ValueError(f"expected (n_rows, F, S, S, 3) frames, got shape {tuple(shape)}")
        self._shape: tuple[int, ...] = tuple(int(v) for v in shape)
        self.row_of = np.asarray(row_of, dtype=np.int64)
        if self.row_of.ndim != 1 or (self.row_of.size and self.row_of.max() >= self._shape[0]):
            raise IndexError("row_of must be (n_trials,) rows of the frame array, -1 for none")
        self._mm: np.ndarray | None = None
        self._mm_pid: int | None = None

    @classmethod
    def from_npy(cls, path: str | os.PathLike, row_of: np.ndarray) -> FrameArray:
        return cls(path=path, row_of=row_of)

    @property
    def n_trials(self) -> int:
        return len(self.row_of)

    @property
    def n_frames(self) -> int:
        return self._shape[1]

    @property
    def size(self) -> int:
        return self._shape[2]

    @property
    def has_video(self) -> np.ndarray:
        """(n_trials,) bool: which trials have frames."""
        return self.row_of >= 0

    def __repr__(self) -> str:
        return f"FrameArray({self.n_trials} trials, {int(self.has_video.sum())} with {self.n_frames} frames of {self.size}px)"

    def subset(self, trials: np.ndarray) -> FrameArray:
        out = FrameArray.__new__(FrameArray)
        out.__dict__.update(self.__getstate__())
        out.row_of = self.row_of[np.asarray(trials, dtype=np.int64)]
        return out

    def __getstate__(self) -> dict:
        # a memory map is reopened in each process (DataLoader workers), never pickled whole
        state = self.__dict__.copy()
        state["_mm"], state["_mm_pid"] = None, None
        return state

    def _array(self) -> np.ndarray:
        if self._data is not None:
            return self._data
        if self._mm is None or self._mm_pid != os.getpid():
            # np.load cannot map a 0-byte array: a subject with no readable video
            self._mm = np.load(self.path, mmap_mode="r") if self._shape[0] else np.zeros(self._shape, np.uint8)
            self._mm_pid = os.getpid()
        return self._mm

    def read_many(self, trials: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """(B, K, S, S, 3) uint8: frames ``frames`` (B, K) of ``trials`` (B,), clipped to the
        last frame; zeros for a trial without video."""
        trials = np.asarray(trials, dtype=np.int64)
        frames = np.minimum(np.asarray(frames, dtype=np.int64), self.n_frames - 1)
        S = self.size
        out = np.zeros((len(trials), frames.shape[1], S, S, 3), dtype=np.uint8)
        rows = self.row_of[trials]
        have = rows >= 0
        if have.any():
            out[have] = self._array()[rows[have][:, None], frames[have]]
        return out


# ---------------------------------------------------------------------------------------------
# per-subject recordings

@dataclass
class EEGRecordings:
    """Per-subject EEG trials of one dataset, plus labels and optional audio features.

    ``eeg[s]`` is a :class:`TrialArray` (n_trials, T, C) float32 (T may differ between subjects).
    ``audio[s]``, when present, holds MFCC frames stored frame-major (n_trials, F, n_mfcc) so that
    a window's frames are one contiguous block; :meth:`audio_mfcc` gives (n_trials, n_mfcc, F).
    ``audio_mask[s]`` (n_trials,) float32 is 0 where a trial has no audio. ``video[s]``, when
    present, is a :class:`FrameArray` of face crops sampled at ``video_fps``; ``video_mask[s]``
    (n_trials,) float32 is 0 where a trial has no (readable) video.
    """

    subject_ids: list[str]
    class_names: list[str]
    sample_rate: float
    channel_names: list[str] | None
    trial_labels: dict[str, np.ndarray]
    eeg: dict[str, TrialArray]
    trial_conditions: dict[str, np.ndarray] | None = None
    trial_index: dict[str, np.ndarray] | None = None   # trial's index in the source file
    audio: dict[str, TrialArray] | None = None
    audio_mask: dict[str, np.ndarray] | None = None
    audio_frame_rate: float | None = None
    video: dict[str, FrameArray] | None = None
    video_mask: dict[str, np.ndarray] | None = None
    video_fps: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.subject_ids:
            raise ValueError("EEGRecordings needs at least one subject")
        widths = {self.eeg[s].width for s in self.subject_ids}
        if len(widths) != 1:
            raise ValueError(f"subjects disagree on the channel count: {sorted(widths)}")
        if self.channel_names is not None and len(self.channel_names) != self.n_channels:
            raise ValueError(
                f"{len(self.channel_names)} channel names for {self.n_channels} channels"
            )
        for s in self.subject_ids:
            labels = np.asarray(self.trial_labels[s], dtype=np.int64)
            self.trial_labels[s] = labels
            if labels.shape != (self.eeg[s].n_trials,):
                raise ValueError(
                    f"{s}: {labels.shape} labels for {self.eeg[s].n_trials} trials"
                )
            if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise ValueError(f"{s}: labels outside 0..{len(self.class_names) - 1}")
            if self.audio is not None:
                if self.audio[s].n_trials != labels.size:
                    raise ValueError(f"{s}: audio trials do not match EEG trials")
                if self.audio_mask is None or self.audio_mask[s].shape != labels.shape:
                    raise ValueError(f"{s}: audio_mask missing or of the wrong shape")
            if self.video is not None:
                if self.video[s].n_trials != labels.size:
                    raise ValueError(f"{s}: video trials do not match EEG trials")
                if self.video_mask is None or self.video_mask[s].shape != labels.shape:
                    raise ValueError(f"{s}: video_mask missing or of the wrong shape")
        if self.audio is not None and not self.audio_frame_rate:
            raise ValueError("audio needs audio_frame_rate")
        if self.video is not None and not self.video_fps:
            raise ValueError("video needs video_fps")

    @classmethod
    def from_arrays(
        cls,
        eeg: dict[str, np.ndarray],
        labels: dict[str, np.ndarray],
        *,
        sample_rate: float,
        class_names: list[str],
        channel_names: list[str] | None = None,
        conditions: dict[str, Any] | None = None,
        audio: dict[str, np.ndarray] | None = None,
        audio_mask: dict[str, np.ndarray] | None = None,
        audio_frame_rate: float | None = None,
        info: dict[str, Any] | None = None,
    ) -> EEGRecordings:
        """In-memory recordings: ``eeg[s]`` (n_trials, T, C); ``audio[s]`` (n_trials, n_mfcc, F)."""
        subjects = list(eeg)
        audio_arrays = None
        if audio is not None:
            # (n_trials, n_mfcc, F) -> (n_trials, F, n_mfcc): frame-major storage
            audio_arrays = {s: TrialArray(np.asarray(audio[s]).transpose(0, 2, 1)) for s in subjects}
            if audio_mask is None:
                audio_mask = {s: np.ones(len(labels[s]), dtype=np.float32) for s in subjects}
            audio_mask = {s: np.asarray(audio_mask[s], dtype=np.float32) for s in subjects}
        return cls(
            subject_ids=subjects,
            class_names=list(class_names),
            sample_rate=float(sample_rate),
            channel_names=None if channel_names is None else list(channel_names),
            trial_labels={s: np.asarray(labels[s], dtype=np.int64) for s in subjects},
            eeg={s: TrialArray(eeg[s]) for s in subjects},
            trial_conditions=None if conditions is None else {s: np.asarray(conditions[s]) for s in subjects},
            audio=audio_arrays,
            audio_mask=audio_mask,
            audio_frame_rate=audio_frame_rate,
            info=dict(info or {}),
        )

    @property
    def n_channels(self) -> int:
        return self.eeg[self.subject_ids[0]].width

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def video_size(self) -> int | None:
        return None if self.video is None else self.video[self.subject_ids[0]].size

    @property
    def n_mfcc(self) -> int | None:
        return None if self.audio is None else self.audio[self.subject_ids[0]].width

    def n_trials(self, subject: str) -> int:
        return self.eeg[subject].n_trials

    def n_samples(self, subject: str) -> int:
        """Samples per trial (T) for ``subject``."""
        return self.eeg[subject].length

    def audio_mfcc(self, subject: str) -> np.ndarray:
        """(n_trials, n_mfcc, F) float32 MFCC frames of ``subject`` in memory."""
        if self.audio is None:
            raise ValueError("these recordings carry no audio")
        # (n_trials, F, n_mfcc) -> (n_trials, n_mfcc, F)
        return np.ascontiguousarray(self.audio[subject].load().transpose(0, 2, 1))


# ---------------------------------------------------------------------------------------------
# window dataset

class WindowDataset(torch.utils.data.Dataset):
    """Fixed-size windows cut from the selected trials of the selected subjects.

    Items are ``{"eeg": (C, window_size) float32 z-scored per channel, target_key: int64}`` and,
    with ``with_audio``, ``"audio"`` (n_mfcc, F_win) float32 frames over the same time span and
    ``"audio_mask"`` () float32. With ``with_video``, ``"video"`` (video_frames, 3, S, S) float32
    face crops evenly spaced over the window, normalised as the face models' inputs (grey first
    with ``video_grayscale``), exactly zero where the trial has no video, and ``"video_mask"`` ()
    float32. The index is three flat numpy arrays (subject, trial, start), so even millions of
    windows cost a few bytes each. ``__getitems__`` returns a ready batch.
    """

    def __init__(
        self,
        recordings: EEGRecordings,
        subjects: list[str],
        window_size: int,
        stride: int,
        trials: dict[str, np.ndarray] | None = None,
        target_key: str = "emotion",
        with_audio: bool = False,
        with_video: bool = False,
        video_frames: int = 4,
        video_grayscale: bool = False,
    ):
        if window_size < 1 or stride < 1:
            raise ValueError("window_size and stride must be >= 1")
        unknown = [s for s in subjects if s not in recordings.eeg]
        if unknown:
            raise KeyError(f"unknown subjects: {unknown}")
        if with_audio and not recordings.has_audio:
            raise ValueError("with_audio=True but the recordings carry no audio (use_audio=False?)")
        if with_video and not recordings.has_video:
            raise ValueError("with_video=True but the recordings carry no video (use_video=False?)")
        if with_video and video_frames < 1:
            raise ValueError(f"video_frames must be >= 1, not {video_frames}")
        self.recordings = recordings
        self.subjects = list(subjects)
        self.window_size = int(window_size)
        self.stride = int(stride)
        self.target_key = target_key
        self.with_audio = with_audio
        self.with_video = with_video
        self.video_frames = int(video_frames)
        self.video_grayscale = bool(video_grayscale)
        self._eeg = [recordings.eeg[s] for s in self.subjects]
        self._labels = [recordings.trial_labels[s] for s in self.subjects]

        sub_parts = [np.zeros(0, dtype=np.int32)]
        trial_parts, start_parts, label_parts = ([np.zeros(0, dtype=np.int64)] for _ in range(3))
        n_selected = 0
        for k, s in enumerate(self.subjects):
            if trials is None:
                sel = np.arange(recordings.n_trials(s), dtype=np.int64)
            else:
                if s not in trials:
                    raise KeyError(f"trials has no entry for subject {s}")
                sel = np.asarray(trials[s], dtype=np.int64)
            n_selected += sel.size
            starts = window_starts(recordings.n_samples(s), self.window_size, self.stride)
            n_w = len(starts)
            if n_w == 0 or sel.size == 0:
                continue
            # every selected trial has the same T within a subject: n_w windows each
            trial_parts.append(np.repeat(sel, n_w))
            start_parts.append(np.tile(starts, sel.size))
            sub_parts.append(np.full(sel.size * n_w, k, dtype=np.int32))
            label_parts.append(np.repeat(self._labels[k][sel], n_w))
        if n_selected and len(sub_parts) == 1:
            # trials were asked for but none is long enough: a config error worth stopping on.
            # (No trials at all, e.g. an empty test side, gives an empty dataset instead.)
            lengths = {s: recordings.n_samples(s) for s in self.subjects}
            raise ValueError(
                f"no windows: window_size {window_size} is longer than every selected trial "
                f"(samples per trial: {lengths})"
            )
        self.subject_idx = np.concatenate(sub_parts)
        self.trial_idx = np.concatenate(trial_parts)
        self.starts = np.concatenate(start_parts)
        self._targets = np.concatenate(label_parts).astype(np.int64, copy=False)

        if with_audio:
            rate = float(recordings.audio_frame_rate)
            self.audio_frames = math.ceil(self.window_size / recordings.sample_rate * rate)
            # frame index of each window's first sample; same time base as the EEG
            self.audio_starts = np.round(self.starts / recordings.sample_rate * rate).astype(np.int64)
            self._audio = [recordings.audio[s] for s in self.subjects]
            self._mask = [recordings.audio_mask[s] for s in self.subjects]
        if with_video:
            self._video = [recordings.video[s] for s in self.subjects]
            self._video_mask = [recordings.video_mask[s] for s in self.subjects]

    @property
    def targets(self) -> np.ndarray:
        """(N,) int64 label of every window, in index order."""
        return self._targets

    @property
    def n_channels(self) -> int:
        return self.recordings.n_channels

    def __len__(self) -> int:
        return len(self.subject_idx)

    def video_frame_index(self, starts: np.ndarray) -> np.ndarray:
        """(B, video_frames) indices into the cached frames for windows starting at ``starts``:
        the frames nearest to evenly spaced points (the centres of equal slices) of each window."""
        fps, sr = float(self.recordings.video_fps), float(self.recordings.sample_rate)
        t = (np.asarray(starts, dtype=np.float64)[:, None]
             + (np.arange(self.video_frames) + 0.5)[None, :] * self.window_size / self.video_frames) / sr
        return np.floor(t * fps).astype(np.int64)                      # (B, F)

    def read_video(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Raw frames (B, video_frames, S, S, 3) uint8 of windows ``indices`` and their mask (B,)."""
        idx = np.asarray(indices, dtype=np.int64)
        idx = np.where(idx < 0, idx + len(self), idx)
        subj, trial = self.subject_idx[idx], self.trial_idx[idx]
        frame_idx = self.video_frame_index(self.starts[idx])
        S = self.recordings.video_size
        frames = np.zeros((len(idx), self.video_frames, S, S, 3), dtype=np.uint8)
        mask = np.zeros(len(idx), dtype=np.float32)
        for k in np.unique(subj).tolist():
            m = subj == k
            frames[m] = self._video[k].read_many(trial[m], frame_idx[m])
            mask[m] = self._video_mask[k][trial[m]]
        return frames, mask

    def _video_tensor(self, frames: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """uint8 (B, F, S, S, 3) -> normalised float32 (B, F, 3, S, S); masked samples all zero."""
        from emoexp.data.images import normalise, to_gray3

        if self.video_grayscale:
            frames = to_gray3(frames)
        B, F, S = frames.shape[0], frames.shape[1], frames.shape[2]
        x = torch.from_numpy(np.ascontiguousarray(frames)).view(B * F, S, S, 3).permute(0, 3, 1, 2)  # -> (B*F, 3, S, S)
        x = normalise(x).view(B, F, 3, S, S)
        # exact zeros mark "no video": the video encoder skips such samples (see models/video.py)
        x[torch.from_numpy(mask) == 0] = 0.0
        return x

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < 0:
            i += len(self)
        k, t, s = int(self.subject_idx[i]), int(self.trial_idx[i]), int(self.starts[i])
        window = self._eeg[k].read(t, s, self.window_size)                 # (W, C)
        item = {
            "eeg": torch.from_numpy(zscore(window.T, axis=-1)),             # (W, C) -> (C, W)
            self.target_key: torch.tensor(self._targets[i], dtype=torch.int64),
        }
        if self.with_audio:
            frames = self._audio[k].read(t, int(self.audio_starts[i]), self.audio_frames)  # (F, n_mfcc)
            item["audio"] = torch.from_numpy(np.ascontiguousarray(frames.T))  # (F, n_mfcc) -> (n_mfcc, F)
            item["audio_mask"] = torch.tensor(self._mask[k][t], dtype=torch.float32)
        if self.with_video:
            frames, mask = self.read_video([i])
            item["video"] = self._video_tensor(frames, mask)[0]          # (F, 3, S, S)
            item["video_mask"] = torch.tensor(mask[0], dtype=torch.float32)
        return item

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        idx = np.where(idx < 0, idx + len(self), idx)
        subj, trial, start = self.subject_idx[idx], self.trial_idx[idx], self.starts[idx]
        B = len(idx)
        eeg = np.empty((B, self.window_size, self.n_channels), dtype=np.float32)
        audio = np.empty((B, self.audio_frames, self.recordings.n_mfcc), dtype=np.float32) if self.with_audio else None
        mask = np.empty(B, dtype=np.float32) if self.with_audio else None
        # one vectorised read per subject present in the batch
        for k in np.unique(subj).tolist():
            m = subj == k
            eeg[m] = self._eeg[k].read_many(trial[m], start[m], self.window_size)
            if self.with_audio:
                audio[m] = self._audio[k].read_many(trial[m], self.audio_starts[idx[m]], self.audio_frames)
                mask[m] = self._mask[k][trial[m]]
        batch = {
            "eeg": torch.from_numpy(zscore(eeg.transpose(0, 2, 1), axis=-1)),  # (B, W, C) -> (B, C, W)
            self.target_key: torch.from_numpy(self._targets[idx].copy()),
        }
        if self.with_audio:
            batch["audio"] = torch.from_numpy(np.ascontiguousarray(audio.transpose(0, 2, 1)))  # (B, F, n_mfcc) -> (B, n_mfcc, F)
            batch["audio_mask"] = torch.from_numpy(mask)
        if self.with_video:
            frames, vmask = self.read_video(idx)
            batch["video"] = self._video_tensor(frames, vmask)              # (B, F, 3, S, S)
            batch["video_mask"] = torch.from_numpy(vmask)
        return batch
