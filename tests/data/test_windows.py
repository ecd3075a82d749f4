"""emoexp.data.windows: one vocabulary (window_size, stride) and the seeds' spellings turned into it."""

from __future__ import annotations

import numpy as np
import pytest

from emoexp.data.windows import (
    n_windows,
    stride_from_fraction,
    stride_from_overlap,
    window_starts,
    window_view,
)


def test_window_starts_every_stride():
    assert window_starts(10, 4, 2).tolist() == [0, 2, 4, 6]
    assert window_starts(10, 4, 4).tolist() == [0, 4]
    assert window_starts(3, 4, 1).tolist() == []
    assert window_starts(10, 4, 2).dtype == np.int64
    assert n_windows(10, 4, 2) == 4 and n_windows(3, 4, 1) == 0


def test_cover_end_adds_a_last_window_ending_at_the_last_sample():
    assert window_starts(50, 20, 15, cover_end=True).tolist() == [0, 15, 30]    # ends exactly
    assert window_starts(47, 20, 15, cover_end=True).tolist() == [0, 15, 27]
    assert window_starts(5, 20, 15, cover_end=True).tolist() == []


@pytest.mark.parametrize(("window_size", "stride"), [(0, 1), (4, 0), (4, -2)])
def test_bad_sizes_are_errors(window_size, stride):
    with pytest.raises(ValueError, match="window_size and stride must be >= 1"):
        window_starts(10, window_size, stride)


def test_seed_spellings_become_a_stride():
    assert stride_from_overlap(128, 64) == 64          # seed 004: train_eeg_llm overlap
    assert stride_from_overlap(4, 0) == 4
    with pytest.raises(ValueError, match="overlap must lie in"):
        stride_from_overlap(4, 4)
    assert stride_from_fraction(512, 0.0) == 512       # emoexp predict --overlap
    assert stride_from_fraction(512, 0.5) == 256
    assert stride_from_fraction(3, 0.9) == 1           # never less than one sample
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\)"):
            stride_from_fraction(512, bad)


def test_window_view_matches_the_starts():
    x = np.arange(2 * 11).reshape(2, 11)                   # (C, T)
    w = window_view(x, 4, 3)                               # (n, C, 4)
    assert w.shape == (3, 2, 4)
    for k, s in enumerate(window_starts(11, 4, 3)):
        np.testing.assert_array_equal(w[k], x[:, s:s + 4])
    t_first = window_view(x.T, 4, 3, axis=0)               # (T, C) -> (n, 4, C)
    assert t_first.shape == (3, 4, 2)
    np.testing.assert_array_equal(t_first[1], x.T[3:7])
    assert np.shares_memory(w, x)                          # views, not copies
