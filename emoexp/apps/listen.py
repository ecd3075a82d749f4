"""Streaming speech emotion: sliding windows over a file (read block by block) or the microphone.

``emoexp listen MODEL_URI --input file.wav --window 3 --stride 1`` prints one line per window as soon
as its samples have arrived. The microphone needs the optional ``sounddevice`` package (PortAudio);
without it, or without an input device, :class:`NoMicrophone` says so and how to proceed.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoexp.data.base import DataError

SILENT_PEAK = 1e-3  # windows quieter than this (float samples) are reported as silence, not guessed


class NoMicrophone(RuntimeError):
    """No audio input library or device: the message says what is missing and what to do."""


@dataclass
class WindowPrediction:
    start_s: float
    end_s: float
    label: str                    # "(silence)" for a silent window
    prob: float
    probs: dict[str, float]


def speech_model(model_uri: str):
    """(predict(waves (B, n) float32 at rate) -> (B, K) probs, classes, sample rate) of a speech model."""
    from emoexp.serving import modality_model, predict_frame

    m, classes = modality_model(model_uri, "speech", "train_speech")
    rate = int(m.info["sample_rate"])

    def predict(waves: np.ndarray) -> np.ndarray:
        df = predict_frame(m.task, m.cfg, m.info, m.model,
                           {"waveform": waves, "sample_rate": np.full(len(waves), rate)})
        return df[[f"prob_{c}" for c in classes]].to_numpy()

    return predict, classes, rate


def file_blocks(path: str | Path, rate: int, block_seconds: float = 0.5) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``path`` at ``rate``, read incrementally (long files never load whole)."""
    import soundfile as sf

    from emoexp.data.audio import check_wav_data_chunk, resample

    try:
        check_wav_data_chunk(path)  # a wav cut short is named, not streamed as if whole
        f = sf.SoundFile(str(path))
    except DataError:
        raise
    except Exception as e:  # LibsndfileError, RuntimeError, OSError
        raise DataError(path, f"cannot read audio: {e}") from None
    with f:
        if f.frames == 0:
            raise DataError(path, "audio file holds no samples")
        block = max(1, int(f.samplerate * block_seconds))
        for data in f.blocks(blocksize=block, dtype="float32", always_2d=True):
            # Resampling each block alone is exact enough at block edges for windows of seconds.
            yield resample(data.mean(axis=1), f.samplerate, rate)


def microphone_blocks(rate: int, block_seconds: float = 0.5, device: str | int | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks from the default (or given) input device, until interrupted."""
    try:
        import sounddevice as sd
    except ImportError:
        raise NoMicrophone(
            "no audio input library: live input needs the optional `sounddevice` package "
            "(pip install sounddevice; it uses the PortAudio system library). "
            "Pass --input FILE.wav to stream a file instead") from None
    except OSError as e:  # sounddevice installed but PortAudio missing
        raise NoMicrophone(f"sounddevice cannot load PortAudio ({e}); install the PortAudio library "
                           "(Debian: libportaudio2) or pass --input FILE.wav") from None
    try:
        sd.query_devices(device, kind="input")
    except Exception as e:  # PortAudioError / ValueError: no such device
        raise NoMicrophone(f"no audio input device ({e}); plug in a microphone, pick one with --device, "
                           "or pass --input FILE.wav") from None
    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def callback(indata, frames, time, status):  # runs on PortAudio's thread
        blocks.put(indata[:, 0].copy())

    with sd.InputStream(samplerate=rate, channels=1, dtype="float32", device=device,
                        blocksize=int(rate * block_seconds), callback=callback):
        while True:
            yield blocks.get()


def sliding_windows(blocks: Iterable[np.ndarray], rate: int, window_s: float,
                    stride_s: float) -> Iterator[tuple[float, np.ndarray]]:
    """(start seconds, window (n,)) every ``stride_s`` once ``window_s`` of audio has arrived
    (``window_size`` and ``stride`` in samples, as everywhere: :mod:`emoexp.data.windows`).

    A stream shorter than one window yields it once, whole (the model pads it).
    """
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"--window and --stride (--hop) must be positive, got {window_s} and {stride_s}")
    window_size, stride = max(1, int(round(window_s * rate))), max(1, int(round(stride_s * rate)))
    buf = np.zeros(0, dtype=np.float32)
    start = 0  # sample index of buf[0] in the stream
    emitted = False
    for block in blocks:
        buf = np.concatenate([buf, np.asarray(block, dtype=np.float32)])
        while len(buf) >= window_size:
            yield start / rate, buf[:window_size].copy()
            emitted = True
            drop = min(stride, len(buf))
            buf, start = buf[drop:], start + drop
    if not emitted and len(buf):
        yield start / rate, buf


def listen(predict: Callable[[np.ndarray], np.ndarray], classes: list[str], rate: int,
           blocks: Iterable[np.ndarray], window_s: float = 3.0, stride_s: float = 1.0) -> Iterator[WindowPrediction]:
    """Predict each sliding window as it completes."""
    for start, w in sliding_windows(blocks, rate, window_s, stride_s):
        end = start + len(w) / rate
        if float(np.max(np.abs(w), initial=0.0)) < SILENT_PEAK:
            yield WindowPrediction(start, end, "(silence)", 1.0, {})
            continue
        p = predict(w[None])[0]
        k = int(np.argmax(p))
        yield WindowPrediction(start, end, classes[k], float(p[k]), dict(zip(classes, map(float, p))))


def format_line(wp: WindowPrediction, top: int = 2) -> str:
    """``  3.0-  6.0 s  happy     0.81  (sad 0.09)``"""
    head = f"{wp.start_s:6.1f}-{wp.end_s:6.1f} s  {wp.label:<10} {wp.prob:5.2f}"
    if not wp.probs:
        return head
    rest = sorted(((p, c) for c, p in wp.probs.items() if c != wp.label), reverse=True)[: max(0, top - 1)]
    return head + ("  (" + ", ".join(f"{c} {p:.2f}" for p, c in rest) + ")" if rest else "")
