"""Windows over a signal, in one vocabulary: ``window_size`` samples per window, a new window
every ``stride`` samples (consecutive windows share ``window_size - stride``).

Every window cutter in emoexp (EEG and EEG-LLM datasets, posture sequences, ``emoexp predict``,
``emoexp listen``) takes its starts from :func:`window_starts`. The spellings the seeds and the
command line already use stay accepted at the interfaces and are turned into a stride here:

* ``overlap`` of ``train_eeg_llm`` (seed 004; an MLproject parameter): samples shared by
  consecutive windows, so ``stride = window_size - overlap`` (:func:`stride_from_overlap`);
* ``emoexp predict --overlap``: a fraction of the window in [0, 1) (:func:`stride_from_fraction`);
* ``--hop`` of ``emoexp listen`` (seconds) and ``emoexp data import`` (frames): the stride itself.

>>> window_starts(10, 4, 2).tolist()
[0, 2, 4, 6]
>>> window_starts(11, 4, 3, cover_end=True).tolist()   # one more window ending at the last sample
[0, 3, 6, 7]
"""

from __future__ import annotations

import numpy as np


def _check(window_size: int, stride: int) -> tuple[int, int]:
    if int(window_size) < 1 or int(stride) < 1:
        raise ValueError(f"window_size and stride must be >= 1, not {window_size} and {stride}")
    return int(window_size), int(stride)


def n_windows(n_samples: int, window_size: int, stride: int) -> int:
    """Windows of ``window_size`` every ``stride`` samples that fit in ``n_samples``."""
    window_size, stride = _check(window_size, stride)
    return 0 if n_samples < window_size else (int(n_samples) - window_size) // stride + 1


def window_starts(n_samples: int, window_size: int, stride: int, *, cover_end: bool = False) -> np.ndarray:
    """Start samples (int64) of the windows that fit in ``n_samples``: 0, stride, 2 stride...

    None when the signal is shorter than one window. ``cover_end``: when the last window stops
    short of the end, add one that ends at the last sample, so that no sample is left out.
    """
    window_size, stride = _check(window_size, stride)
    n = n_windows(n_samples, window_size, stride)
    starts = np.arange(n, dtype=np.int64) * stride
    if cover_end and n and starts[-1] + window_size < n_samples:
        starts = np.append(starts, np.int64(n_samples - window_size))
    return starts


def window_view(x: np.ndarray, window_size: int, stride: int, *, axis: int = -1) -> np.ndarray:
    """``x`` (..., T, ...) -> (n, ..., window_size, ...) windows along ``axis``, every ``stride``
    samples, as views (no copy); the window axis stays where ``axis`` was."""
    window_size, stride = _check(window_size, stride)
    a = np.asarray(x)
    ax = axis % a.ndim
    view = np.lib.stride_tricks.sliding_window_view(a, window_size, axis=ax)   # (..., T-w+1, ..., w)
    view = np.moveaxis(view, -1, ax + 1)[(slice(None),) * ax + (slice(None, None, stride),)]
    return np.moveaxis(view, ax, 0)                                            # (n, ..., w, ...)


def stride_from_overlap(window_size: int, overlap: int) -> int:
    """Seed 004's ``overlap`` (samples shared by consecutive windows) as a stride."""
    if not 0 <= int(overlap) < int(window_size):
        raise ValueError(f"overlap must lie in [0, window_size={window_size}), got {overlap}")
    return int(window_size) - int(overlap)


def stride_from_fraction(window_size: int, overlap: float) -> int:
    """``emoexp predict --overlap`` (a fraction of the window in [0, 1): 0 back to back, 0.5
    half-overlapping) as a stride of at least one sample."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), not {overlap}")
    return max(1, int(round(int(window_size) * (1.0 - overlap))))
