from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from emoexp.data.eeg import (
    EEGRecordings,
    TrialArray,
    WindowDataset,
    eeg_cache_path,
    resample_poly_axis,
    zscore,
)
from emoexp.data.io import atomic_save_npy


def _recordings(tmp_path=None, *, with_audio=False, seed=0):
    """Two subjects with different trial lengths; on disk when tmp_path is given."""
    rng = np.random.default_rng(seed)
    eeg = {"a": rng.normal(5, 20, (4, 300, 3)).astype(np.float32),
           "b": rng.normal(-2, 7, (3, 260, 3)).astype(np.float32)}
    labels = {"a": np.array([0, 1, 2, 1]), "b": np.array([2, 0, 1])}
    kw = {}
    if with_audio:
        # frame f of trial t holds the value 1000 * t + f in every coefficient: alignment is
        # visible. 25 frames (2.5 s) is shorter than subject a's 3 s trials, to exercise padding.
        audio = {s: np.broadcast_to((1000 * np.arange(n)[:, None, None] + np.arange(25)[None, None, :]),
                                    (n, 4, 25)).astype(np.float32)
                 for s, n in (("a", 4), ("b", 3))}
        kw = {"audio": audio, "audio_mask": {"a": np.array([1, 0, 1, 0]), "b": np.array([1, 1, 0])},
              "audio_frame_rate": 10.0}
    rec = EEGRecordings.from_arrays(eeg, labels, sample_rate=100, class_names=["x", "y", "z"], **kw)
    if tmp_path is not None:
        for s in rec.subject_ids:
            rec.eeg[s] = TrialArray.from_npy(atomic_save_npy(tmp_path / f"{s}.npy", eeg[s]))
            if with_audio:
                rec.audio[s] = TrialArray.from_npy(
                    atomic_save_npy(tmp_path / f"{s}-audio.npy", rec.audio[s].load()))
    return rec


def test_zscore_window_and_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(50, 30, (4, 8, 200))
    x[1, 2] = 7.0                                           # a flat channel
    z = zscore(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z.mean(-1), 0, atol=1e-4)
    std = z.std(-1)
    std[1, 2] = 1.0
    np.testing.assert_allclose(std, 1, atol=1e-3)
    assert np.all(z[1, 2] == 0)
    np.testing.assert_allclose(zscore(x[3]), z[3], atol=1e-5)  # one window == batch row


def test_resample_poly_axis():
    x = np.random.default_rng(0).standard_normal((3, 1000, 2))
    y = resample_poly_axis(x, 500, 250, axis=1)
    assert y.shape == (3, 500, 2) and y.dtype == np.float32
    assert resample_poly_axis(x, 250, 250, axis=1).shape == x.shape
    assert resample_poly_axis(x, 500, 128, axis=1).shape == (3, 256, 2)


def test_window_count_and_targets():
    rec = _recordings()
    ds = WindowDataset(rec, ["a", "b"], window_size=100, stride=30)
    per_a, per_b = (300 - 100) // 30 + 1, (260 - 100) // 30 + 1
    assert len(ds) == 4 * per_a + 3 * per_b
    assert ds.targets.dtype == np.int64
    assert ds.targets.tolist() == sum(([int(y)] * per_a for y in [0, 1, 2, 1]), []) + sum(
        ([int(y)] * per_b for y in [2, 0, 1]), [])
    sel = WindowDataset(rec, ["b"], 100, 30, trials={"b": np.array([2])}, target_key="valence")
    assert len(sel) == per_b and set(sel.targets.tolist()) == {1}
    assert sel[0]["valence"].item() == 1
    with pytest.raises(ValueError, match="no windows"):
        WindowDataset(rec, ["b"], window_size=261, stride=1)
    # no trials selected (e.g. a test side with test_fraction=0): an empty dataset, not an error
    empty = WindowDataset(rec, ["a", "b"], 100, 30, trials={"a": np.array([], int), "b": []})
    assert len(empty) == 0 and empty.targets.shape == (0,) and empty.targets.dtype == np.int64
    assert len(WindowDataset(rec, [], 100, 30)) == 0
    with pytest.raises(KeyError):
        WindowDataset(rec, ["a", "b"], 100, 30, trials={"a": np.array([0])})


def test_item_is_zscored_window():
    rec = _recordings()
    ds = WindowDataset(rec, ["a", "b"], window_size=64, stride=50)
    i = len(ds) - 1
    item = ds[i]
    assert item["eeg"].dtype == torch.float32 and item["eeg"].shape == (3, 64)
    assert item["emotion"].dtype == torch.int64
    x = item["eeg"].numpy()
    np.testing.assert_allclose(x.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(1), 1, atol=1e-3)
    k, t, s = ds.subject_idx[i], ds.trial_idx[i], ds.starts[i]
    raw = rec.eeg[ds.subjects[k]].load()[t, s:s + 64].T    # (64, C) -> (C, 64)
    np.testing.assert_allclose(x, zscore(raw), atol=1e-5)


@pytest.mark.parametrize("on_disk", [False, True])
def test_getitems_equals_stacked_getitem(tmp_path, on_disk):
    rec = _recordings(tmp_path if on_disk else None, with_audio=True)
    ds = WindowDataset(rec, ["a", "b"], window_size=64, stride=40, with_audio=True)
    idx = [0, len(ds) - 1, 7, 3, 7, 20]
    batch = ds.__getitems__(idx)
    items = [ds[i] for i in idx]
    assert set(batch) == {"eeg", "emotion", "audio", "audio_mask"}
    for key in batch:
        torch.testing.assert_close(batch[key], torch.stack([it[key] for it in items]))


def test_on_disk_reads_equal_in_memory(tmp_path):
    mem = WindowDataset(_recordings(), ["a", "b"], window_size=50, stride=17)
    disk_rec = _recordings(tmp_path)
    assert disk_rec.eeg["a"].on_disk
    disk = WindowDataset(disk_rec, ["a", "b"], window_size=50, stride=17)
    idx = list(range(len(mem)))
    for key in ("eeg", "emotion"):
        torch.testing.assert_close(disk.__getitems__(idx)[key], mem.__getitems__(idx)[key])
    torch.testing.assert_close(disk[5]["eeg"], mem[5]["eeg"])
    # trial subsets map to the right rows on disk too
    sub = disk_rec.eeg["a"].subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.load(), _recordings().eeg["a"].load()[[3, 1]])


def test_audio_window_alignment():
    rec = _recordings(with_audio=True)
    ds = WindowDataset(rec, ["a"], window_size=64, stride=40, with_audio=True)
    f_win = math.ceil(64 / 100 * 10)                        # 7 frames for 0.64 s
    assert ds.audio_frames == f_win
    for i in range(len(ds)):
        item = ds[i]
        t, s = ds.trial_idx[i], ds.starts[i]
        assert item["audio"].shape == (4, f_win)
        first = round(s / 100 * 10)
        expect = np.array([1000 * t + f if f < 25 else 0 for f in range(first, first + f_win)])
        np.testing.assert_array_equal(item["audio"][0].numpy(), expect)
        assert item["audio_mask"].item() == [1, 0, 1, 0][t]
    # the last window (samples 200..264 = frames 20..26) runs past the 25 frames: zero-padded
    last = ds[len(ds) - 1]["audio"][0].numpy()
    assert last[-1] == 0 and last[0] != 0


def test_trial_array_pickles_without_descriptor(tmp_path):
    arr = TrialArray.from_npy(atomic_save_npy(tmp_path / "x.npy", np.ones((2, 5, 3), np.float32)))
    arr.read(1, 0, 5)
    assert arr._fd is not None
    clone = pickle.loads(pickle.dumps(arr))
    assert clone._fd is None
    np.testing.assert_array_equal(clone.read(1, 3, 4), [[1, 1, 1]] * 2 + [[0, 0, 0]] * 2)


def test_dataloader_workers_read_on_disk(tmp_path):
    rec = _recordings(tmp_path)
    ds = WindowDataset(rec, ["a", "b"], window_size=50, stride=25)
    rec.eeg["a"].read(0, 0, 1)                             # parent opens its descriptor first
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=lambda b: b)
    got = torch.cat([b["eeg"] for b in loader])
    torch.testing.assert_close(got, ds.__getitems__(list(range(len(ds))))["eeg"])


def test_cache_path_keys(tmp_path):
    src = tmp_path / "s.pkl"
    src.write_bytes(b"abc")
    key = {"channels": ["A", "B"], "sample_rate": 250}
    p1 = eeg_cache_path(tmp_path / "c", src, key)
    assert p1 == eeg_cache_path(tmp_path / "c", src, dict(key))
    assert p1 != eeg_cache_path(tmp_path / "c", src, {**key, "sample_rate": 200})
    assert p1 != eeg_cache_path(tmp_path / "c", src, {**key, "channels": ["A"]})
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert p1 != eeg_cache_path(tmp_path / "c", src, key)
    src.write_bytes(b"abcd")
    assert p1 != eeg_cache_path(tmp_path / "c", src, key)


def test_atomic_save_leaves_no_temp_files(tmp_path):
    out = atomic_save_npy(tmp_path / "d" / "x.npy", np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.npy"]
    assert TrialArray.from_npy(out).shape == (1, 2, 3)


def test_package_import_is_light():
    import subprocess
    import sys

    code = ("import sys, emoexp.data as d; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'scipy' not in sys.modules; d.DataError; d.BadFilePolicy")
    subprocess.run([sys.executable, "-c", code], check=True)
