"""emoexp.data.io: atomic writes leave the old file or the new one, and never a temporary file."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from emoexp.data.io import (
    atomic_save_npy,
    atomic_save_npz,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


class Boom(RuntimeError):
    pass


def _fail_halfway(f):
    f.write(b"half of the new content")
    raise Boom("disk full")


def test_writes_bytes_text_json_and_creates_the_folder(tmp_path):
    assert atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01") == tmp_path / "a" / "b.bin"
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "t.txt", "h\u00e9llo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "h\u00e9llo\n"
    atomic_write_json(tmp_path / "j.json", {"x": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "j.json").read_text().endswith("\n")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.bin", "j.json", "t.txt"]


def test_a_writer_function_gets_a_binary_file(tmp_path):
    out = atomic_write(tmp_path / "w.bin", lambda f: f.write(b"from a function"), fsync=False)
    assert out.read_bytes() == b"from a function"


def test_replaces_an_existing_file(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old content")
    with pytest.raises(Boom):
        atomic_write(path, _fail_halfway)
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        atomic_write(tmp_path / "new.bin", _fail_halfway)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_removes_the_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "x.txt"
    path.write_text("old")

    def no_replace(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_interrupt_also_cleans_up(tmp_path):
    def interrupted(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "k.bin", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_the_file_gets_the_umask_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        out = atomic_write_text(tmp_path / "shared.html", "<html></html>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_numpy_arrays_keep_their_name_and_values(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T       # not C-contiguous
    out = atomic_save_npy(tmp_path / "cache.npy", a)
    np.testing.assert_array_equal(np.load(out), a)
    npz = atomic_save_npz(tmp_path / "bundle.cache", waves=a, n=np.int64(3))   # name kept as given
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["waves"], a)
        assert int(z["n"]) == 3
    packed = atomic_save_npz(tmp_path / "c.npz", compressed=True, x=np.zeros(1000))
    assert packed.stat().st_size < 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.cache", "c.npz", "cache.npy"]


def test_numpy_refuses_object_arrays_and_leaves_no_temp_file(tmp_path):
    with pytest.raises(ValueError):
        atomic_save_npy(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    assert list(tmp_path.iterdir()) == []
