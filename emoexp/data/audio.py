"""Audio I/O and MFCC features, shared by the dataset loaders and by serving.

torchaudio 2.9 cannot read or write files without torchcodec/FFmpeg, so files go through
soundfile; torchaudio is used only for its transforms (resampling, MFCC).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from emoexp.data.base import DataError

# One MFCC setting for training and serving: 25 ms windows and 10 ms hops at 16 kHz.
MEL_KWARGS = {"n_fft": 400, "hop_length": 160, "n_mels": 40}
HOP_LENGTH = MEL_KWARGS["hop_length"]


def check_wav_data_chunk(path: str | os.PathLike) -> None:
    """A RIFF/WAVE file whose ``data`` chunk is shorter than its header says (a copy cut short)
    is a :class:`DataError`: decoders read what is there without a word, and training on the
    stump would go unnoticed. Other files (FLAC, ...) and streamed WAVs (size 0 or 0xFFFFFFFF,
    RF64) pass."""
    import struct

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        endian = "<" if head[:4] == b"RIFF" else ">"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = struct.unpack(endian + "4sI", f.read(8))
            if cid == b"data":
                if n in (0, 0xFFFFFFFF):
                    return
                have = size - pos - 8
                if n > have:
                    raise DataError(path, f"wav data chunk says {n} bytes but the file holds {have} after it "
                                          f"(truncated: {100 * have / n:.0f}% of the audio is there)")
                return
            pos += 8 + n + (n & 1)  # chunks are padded to an even size
        raise DataError(path, "wav file without a data chunk (truncated header?)")


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file -> (waveform float32 (channels, n), sample_rate); a wav cut short
    (:func:`check_wav_data_chunk`) is a :class:`DataError`."""
    import soundfile as sf

    try:
        check_wav_data_chunk(path)
    except OSError as e:
        raise DataError(path, f"cannot read audio: {e}") from e
    try:
        data, sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, OSError...
        raise DataError(path, f"cannot read audio: {e}") from e
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise DataError(path, "audio file holds no samples")
    # (n, channels) -> (channels, n)
    return np.ascontiguousarray(data.T), int(sr)


def to_mono(wave: np.ndarray) -> np.ndarray:
    """(channels, n) or (n,) -> (n,) float32, averaging the channels."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise ValueError(f"expected a (channels, n) or (n,) waveform, got shape {wave.shape}")
    return wave.mean(axis=0)


def resample(wave: np.ndarray, orig: int, target: int) -> np.ndarray:
    """Resample along the last axis with torchaudio's band-limited sinc resampler (float32)."""
    wave = np.asarray(wave, dtype=np.float32)
    if int(orig) == int(target):
        return wave
    import torch
    import torchaudio.functional as AF

    with torch.no_grad():
        out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), int(orig), int(target))
    return out.numpy()


@functools.lru_cache(maxsize=8)
def _mfcc_transform(sample_rate: int, n_mfcc: int) -> Any:
    # Building the mel filterbank and DCT matrices costs more than one short clip's MFCC,
    # so each (rate, n_mfcc) transform is built once per process.
    import torchaudio.transforms as T

    return T.MFCC(sample_rate=int(sample_rate), n_mfcc=int(n_mfcc), melkwargs=dict(MEL_KWARGS))


def mfcc(wave: np.ndarray, sample_rate: int, n_mfcc: int = 13) -> np.ndarray:
    """MFCC frames of a mono waveform: (n,) -> (n_mfcc, F) float32, F = n // 160 + 1.

    A (..., n) batch gives (..., n_mfcc, F). Frames are 10 ms apart at 16 kHz
    (frame rate = sample_rate / 160).
    """
    import torch

    wave = np.asarray(wave, dtype=np.float32)
    with torch.no_grad():
        out = _mfcc_transform(int(sample_rate), int(n_mfcc))(torch.from_numpy(np.ascontiguousarray(wave)))
    return out.numpy().astype(np.float32, copy=False)


def mfcc_from_file(
    path: str | os.PathLike, sample_rate: int = 16000, n_mfcc: int = 13
) -> tuple[np.ndarray, float]:
    """File -> mono -> resampled to ``sample_rate`` -> (MFCC (n_mfcc, F), frames per second)."""
    wave, sr = read_wav(path)
    mono = resample(to_mono(wave), sr, sample_rate)
    return mfcc(mono, sample_rate, n_mfcc), sample_rate / HOP_LENGTH
