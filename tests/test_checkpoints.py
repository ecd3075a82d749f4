"""Checkpoints: atomic writes, weights_only loading, clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from emoexp.checkpoints import CheckpointError, load_checkpoint, load_from_uri, save_checkpoint


def test_round_trip_and_no_temp_files_left(tmp_path):
    path = save_checkpoint({"epoch": 3, "model": {"w": torch.ones(2)}, "history": [{"a": 1.0}]}, tmp_path / "c.pt")
    st = load_checkpoint(path)
    assert st["epoch"] == 3 and torch.equal(st["model"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError):
        save_checkpoint({"epoch": 2, "bad": Unsaveable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_code_in_a_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "emoexp-checkpoint/1", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_foreign_files_are_named(tmp_path):
    path = save_checkpoint({"epoch": 1, "model": {"w": torch.zeros(1000)}}, tmp_path / "t.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="t.pt: not a readable checkpoint"):
        load_checkpoint(path)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.pt: not an emoexp checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no such file"):
        load_from_uri(str(tmp_path / "missing.pt"))
    (tmp_path / "p.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "p.pkl")
