from __future__ import annotations

import numpy as np
import pytest

from emoexp.data.faced import FACED_CLIP_EMOTION
from emoexp.data.splits import Split, split_subjects, split_trials

IDS = [f"sub{i:03d}" for i in range(10)]


def test_subject_split_disjoint_covering_deterministic():
    sp = split_subjects(IDS, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert isinstance(sp, Split) and sp.scheme == "subject"
    sides = [set(sp.train), set(sp.val), set(sp.test)]
    assert sum(map(len, sides)) == len(IDS) and set().union(*sides) == set(IDS)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (6, 2, 2)
    assert split_subjects(list(reversed(IDS)), seed=3) == sp           # input order does not matter
    assert split_subjects(IDS, seed=4) != sp
    d = sp.to_dict()
    assert d == {"train": sp.train, "val": sp.val, "test": sp.test, "scheme": "subject"}


def test_subject_split_small_counts():
    sp = split_subjects(["a", "b", "c"], val_fraction=0.1, test_fraction=0.1)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (1, 1, 1)
    sp = split_subjects(["a", "b", "c", "d"], val_fraction=0.2, test_fraction=0.0)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (3, 1, 0)
    sp = split_subjects(["a", "b"])
    assert (len(sp.train), len(sp.val), sp.test) == (1, 1, [])
    with pytest.raises(ValueError, match="split=trial"):
        split_subjects(["a"])
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_subjects(IDS, val_fraction=0.5, test_fraction=0.5)


def test_trial_split_disjoint_covering_stratified():
    labels = {s: np.asarray(FACED_CLIP_EMOTION) for s in IDS[:4]}
    sp = split_trials(labels, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert set(sp) == {"train", "val", "test"}
    for s in labels:
        parts = [sp[side][s] for side in ("train", "val", "test")]
        allidx = np.concatenate(parts)
        assert len(allidx) == 28 and len(set(allidx.tolist())) == 28        # disjoint, covering
        assert [len(p) for p in parts] == [16, 6, 6]
        for side in ("val", "test"):   # 6 held-out trials from 6 different emotions
            assert len(set(labels[s][sp[side][s]].tolist())) == 6
        assert len(set(labels[s][sp["train"][s]].tolist())) == 9
    # each subject's split differs (own stream), and the same seed reproduces it
    assert not np.array_equal(sp["test"]["sub000"], sp["test"]["sub001"])
    again = split_trials(labels, val_fraction=0.2, test_fraction=0.2, seed=0)
    for side in sp:
        for s in labels:
            np.testing.assert_array_equal(again[side][s], sp[side][s])
    other = split_trials(labels, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert any(not np.array_equal(other["test"][s], sp["test"][s]) for s in labels)
    # a subject's split does not depend on the other subjects loaded
    alone = split_trials({"sub002": labels["sub002"]}, val_fraction=0.2, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(alone["test"]["sub002"], sp["test"]["sub002"])


def test_trial_split_few_trials():
    sp = split_trials({"a": np.array([0, 1]), "b": np.array([0, 1, 1])}, val_fraction=0.2,
                      test_fraction=0.2, seed=0)
    assert (len(sp["train"]["a"]), len(sp["val"]["a"]), len(sp["test"]["a"])) == (1, 1, 0)
    assert (len(sp["train"]["b"]), len(sp["val"]["b"]), len(sp["test"]["b"])) == (1, 1, 1)
