from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.faced import (
    FACED_CHANNELS,
    FACED_CLASSES,
    FACED_CLIP_EMOTION,
    FACED_EEG_CHANNELS,
    FACED_VALENCE_CLASSES,
    load_faced,
    read_faced_file,
)

from .conftest import FACED_SAMPLES


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def _good(t=50, seed=0):
    return np.random.default_rng(seed).standard_normal((28, 32, t))


def test_constants():
    assert len(FACED_CHANNELS) == 32 and FACED_CHANNELS[30:] == ["A2", "A1"]
    assert FACED_EEG_CHANNELS == FACED_CHANNELS[:30]
    assert len(FACED_CLIP_EMOTION) == 28 and np.bincount(FACED_CLIP_EMOTION).tolist() == [3, 3, 3, 3, 4, 3, 3, 3, 3]


def test_round_trip(faced_dir):
    rec = load_faced(faced_dir, progress=False)
    assert rec.subject_ids == ["sub000", "sub001", "sub002"]
    assert rec.class_names == FACED_CLASSES
    assert rec.n_channels == 30 and rec.channel_names == FACED_EEG_CHANNELS
    assert rec.sample_rate == 250
    arr = rec.eeg["sub001"]
    assert arr.shape == (28, FACED_SAMPLES, 30) and arr.on_disk
    assert rec.trial_labels["sub001"].tolist() == FACED_CLIP_EMOTION
    src = read_faced_file(faced_dir / "Processed_data" / "sub001.pkl")
    # cache holds the source clip-by-clip, time-major, mastoids dropped
    np.testing.assert_allclose(arr.load(), src[:, :30, :].transpose(0, 2, 1).astype(np.float32))


def test_all32_and_valence(faced_dir):
    rec = load_faced(faced_dir, channels="all32", label_scheme="valence", progress=False, max_subjects=1)
    assert rec.subject_ids == ["sub000"]
    assert rec.n_channels == 32 and rec.channel_names == FACED_CHANNELS
    assert rec.class_names == FACED_VALENCE_CLASSES
    assert rec.trial_labels["sub000"].tolist() == [0] * 12 + [1] * 4 + [2] * 12
    with pytest.raises(ValueError, match="channels"):
        load_faced(faced_dir, channels="eeg31", progress=False)
    with pytest.raises(ValueError, match="label_scheme"):
        load_faced(faced_dir, label_scheme="arousal", progress=False)


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(MissingDatasetError) as err:
        load_faced(tmp_path / "nope", progress=False)
    assert "nope" in str(err.value) and "emoexp data synth faced" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDatasetError, match="holds no sub\\*.pkl files"):
        load_faced(tmp_path / "empty", progress=False)


def test_nested_folder_and_feature_files_ignored(tmp_path):
    _write(tmp_path / "Processed_data" / "Processed_data" / "sub007.pkl", _good())
    _write(tmp_path / "Processed_data" / "Processed_data" / "sub002.pkl", _good(seed=1))
    _write(tmp_path / "EEG_Features" / "DE" / "sub000.pkl.pkl", np.zeros((28, 32, 30, 5)))
    rec = load_faced(tmp_path, progress=False)
    assert rec.subject_ids == ["sub002", "sub007"]
    assert rec.n_samples("sub007") == 50


@pytest.mark.parametrize(
    "obj, message",
    [
        (np.zeros((32, 28, 40)), "looks transposed: clips and channels swapped"),
        (np.zeros((28, 30, 40)), "expected \\(28 clips, 32 channels, T\\)"),
        (np.zeros((28, 32)), "expected 3-D"),
        ({"data": np.zeros((28, 32, 40))}, "holds a dict, expected a numpy array"),
        (np.zeros((28, 32, 0)), "no samples"),
        (np.full((28, 32, 4), "x"), "dtype"),
    ],
)
def test_bad_arrays(tmp_path, obj, message):
    path = _write(tmp_path / "sub000.pkl", obj)
    with pytest.raises(DataError, match=message) as err:
        read_faced_file(path)
    assert err.value.path == str(path)
    with pytest.raises(DataError, match="--on-bad-file skip"):
        load_faced(tmp_path, progress=False)


def test_nan_reports_count_and_location(tmp_path):
    x = _good()
    x[3, 7, 10:13] = np.nan
    x[5, 0, 0] = np.inf
    path = _write(tmp_path / "sub004.pkl", x)
    with pytest.raises(DataError) as err:
        read_faced_file(path)
    msg = str(err.value)
    assert str(path) in msg and "4 non-finite" in msg
    assert "clip 3 channel 7 (FC1)" in msg and "clip 5 channel 0 (FP1)" in msg


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_malicious_pickle_in_dataset(tmp_path):
    path = tmp_path / "sub000.pkl"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(DataError, match="refuses to unpickle") as err:
        load_faced(tmp_path, progress=False)
    assert "sub000.pkl" in str(err.value)


def test_skip_policy_counts(tmp_path):
    _write(tmp_path / "sub000.pkl", _good())
    _write(tmp_path / "sub001.pkl", np.zeros((32, 28, 50)))
    (tmp_path / "sub002.pkl").write_bytes(b"\x80\x04garbage")
    _write(tmp_path / "sub003.pkl", _good(seed=3))
    policy = BadFilePolicy("skip")
    rec = load_faced(tmp_path, on_bad_file=policy, progress=False)
    assert rec.subject_ids == ["sub000", "sub003"]
    assert [os.path.basename(p) for p, _ in policy.skipped] == ["sub001.pkl", "sub002.pkl"]
    assert "transposed" in policy.skipped[0][1]
    # all bad -> still an error rather than an empty dataset
    bad_only = tmp_path / "bad"
    _write(bad_only / "sub000.pkl", [1, 2, 3])
    with pytest.raises(DataError, match="all skipped"):
        load_faced(bad_only, on_bad_file=BadFilePolicy("skip"), progress=False)


def test_cache_reused_keyed_and_invalidated(tmp_path, faced_dir, cache_dir):
    data = tmp_path / "faced"
    shutil.copytree(faced_dir, data)
    rec = load_faced(data, progress=False, max_subjects=2)
    path = rec.eeg["sub000"].path
    assert path.parent.parent == cache_dir and path.exists()
    mtime = path.stat().st_mtime_ns
    rec2 = load_faced(data, progress=False, max_subjects=2)
    assert rec2.eeg["sub000"].path == path and path.stat().st_mtime_ns == mtime   # reused, not rewritten
    assert not list(cache_dir.rglob("*.tmp"))

    # another preprocessing parameter -> another file, the first one untouched
    rec32 = load_faced(data, channels="all32", progress=False, max_subjects=2)
    assert rec32.eeg["sub000"].path != path and path.stat().st_mtime_ns == mtime

    # the source changes -> its cache is rebuilt from the new content
    new = _good(t=FACED_SAMPLES, seed=99)
    _write(data / "Processed_data" / "sub000.pkl", new)
    rec3 = load_faced(data, progress=False, max_subjects=2)
    assert rec3.eeg["sub000"].path != path
    np.testing.assert_allclose(rec3.eeg["sub000"].load()[4], new[4, :30].T.astype(np.float32))
    assert rec3.eeg["sub001"].path == rec.eeg["sub001"].path   # untouched subject still reused
