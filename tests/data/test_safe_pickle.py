from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from emoexp.data.base import DataError
from emoexp.data.safe_pickle import load_pickle


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_os_system_and_does_not_run_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(DataError) as err:
        load_pickle(path)
    assert str(path) in str(err.value)
    assert "refuses to unpickle" in str(err.value)
    assert "system" in str(err.value)
    assert not marker.exists()


def test_refuses_other_globals(tmp_path):
    path2 = tmp_path / "cls.pkl"
    path2.write_bytes(pickle.dumps(DataError))  # a class from a non-allowed module
    with pytest.raises(DataError, match="refuses to unpickle emoexp.data.base.DataError"):
        load_pickle(path2)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_loads_arrays_and_dicts(tmp_path, protocol):
    a = np.random.default_rng(0).standard_normal((3, 4, 5))
    p1 = tmp_path / "a.pkl"
    p1.write_bytes(pickle.dumps(a, protocol=protocol))
    out = load_pickle(p1)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, a)

    d = {"data": a.astype(np.float32), "labels": np.arange(4), "name": "s01", "n": (1, 2.5)}
    p2 = tmp_path / "d.pkl"
    p2.write_bytes(pickle.dumps(d, protocol=protocol))
    out = load_pickle(p2)
    assert set(out) == set(d) and out["name"] == "s01" and out["n"] == (1, 2.5)
    np.testing.assert_array_equal(out["data"], d["data"])
    np.testing.assert_array_equal(out["labels"], d["labels"])


def test_truncated_and_garbage_files(tmp_path):
    good = pickle.dumps(np.zeros((10, 10)), protocol=2)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="trunc.pkl"):
        load_pickle(trunc)
    text = tmp_path / "text.pkl"
    text.write_text("this is not a pickle\n")
    with pytest.raises(DataError, match="text.pkl"):
        load_pickle(text)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_pickle(empty)
    with pytest.raises(DataError, match="missing.pkl"):
        load_pickle(tmp_path / "missing.pkl")
