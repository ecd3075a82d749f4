"""Posture: the joint maps, the 15 features (invariances, hand-computed values, missing joints),
the layout reader/writer and its bad inputs, padding/cropping, the synthetic generators'
learnability, and the MultiPosture and BoLD importers on small trees built here."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emoexp.data import posture as posture_module
from emoexp.data.base import BadFilePolicy, DataError
from emoexp.data.posture import (
    FEATURE_NAMES,
    FEATURES,
    JOINTS,
    MEDIAPIPE33,
    MEDIAPIPE33_NAMES,
    N_FEATURES,
    OPENPOSE18,
    POSTURE_HEADS,
    PostureWarning,
    canonical_from_mediapipe,
    canonical_from_openpose18,
    fit_length,
    load_posture_dataset,
    posture_features,
    windows,
    write_posture_dataset,
)
from emoexp.data.posture_import import (
    BOLD_CATEGORIES,
    MULTIPOSTURE_HEADS,
    import_bold,
    import_multiposture,
)
from emoexp.data.registry import get_dataset
from emoexp.data.registry import synthesize as synth
from emoexp.data.synth_posture import (
    synth_features,
    synth_posture,
    synth_posture_keypoints,
    to_mediapipe33,
)

J = {name: i for i, name in enumerate(JOINTS)}
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _figure(T: int = 1) -> np.ndarray:
    """A hand-built seated figure (T, J, 3), torso length 1, arms hanging straight down."""
    p = {
        "nose": (0, -1.3, 0), "neck": (0, -1, 0),
        "left_shoulder": (0.4, -1, 0), "right_shoulder": (-0.4, -1, 0),
        "left_elbow": (0.4, -0.5, 0), "right_elbow": (-0.4, -0.5, 0),
        "left_wrist": (0.4, 0, 0), "right_wrist": (-0.4, 0, 0),
        "left_hip": (0.2, 0, 0), "right_hip": (-0.2, 0, 0),
        "left_knee": (0.2, 0, -1), "right_knee": (-0.2, 0, -1),
        "left_ankle": (0.25, 1, -1), "right_ankle": (-0.25, 1, -1),
        "left_eye": (0.05, -1.35, 0), "right_eye": (-0.05, -1.35, 0),
        "left_ear": (0.1, -1.3, 0.1), "right_ear": (-0.1, -1.3, 0.1),
    }
    x = np.array([p[name] for name in JOINTS], dtype=np.float64)
    return np.repeat(x[None], T, axis=0)


def _synth_joints(seed: int = 0, T: int = 60, **classes) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = {"posture": 2, "stress": 1, "trajectory": 1} | classes
    return synth_posture_keypoints(rng, codes["posture"], codes["stress"], codes["trajectory"], T, 30.0)


# ---------------------------------------------------------------------------------------------
# joints and features

def test_features_table_has_15_documented_entries():
    assert N_FEATURES == len(FEATURES) == 15
    names = [n for n, _ in FEATURES]
    assert len(set(names)) == 15 and all(n.isidentifier() for n in names)
    for name, text in FEATURES:
        assert len(text) > 30, f"{name} is not described"
        assert name in posture_module.__doc__, f"{name} missing from the module's feature table"


def test_joint_maps_follow_the_official_orders():
    assert OPENPOSE18 == {n: i for i, n in enumerate(JOINTS)}
    assert [JOINTS[i] for i in range(14)] == [
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
        "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
        "left_knee", "left_ankle"]
    expected = {"nose": 0, "left_shoulder": 11, "right_shoulder": 12, "left_elbow": 13,
                "right_elbow": 14, "left_wrist": 15, "right_wrist": 16, "left_hip": 23,
                "right_hip": 24, "left_knee": 25, "right_knee": 26, "left_ankle": 27,
                "right_ankle": 28, "left_eye": 2, "right_eye": 5, "left_ear": 7, "right_ear": 8}
    assert MEDIAPIPE33 == expected
    assert len(MEDIAPIPE33_NAMES) == 33 and MEDIAPIPE33_NAMES[32] == "right_foot_index"


def test_canonical_from_mediapipe_neck_and_visibility():
    rng = np.random.default_rng(0)
    lm = rng.normal(size=(4, 33, 4))
    lm[..., 3] = 0.9
    lm[1, 15, 3] = 0.3                        # left wrist barely visible in frame 1
    lm[2, 12, 3] = 0.1                        # right shoulder in frame 2 -> neck missing too
    out = canonical_from_mediapipe(lm)
    assert out.shape == (4, len(JOINTS), 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, J["left_wrist"]], lm[0, 15, :3], rtol=1e-6)
    np.testing.assert_allclose(out[0, J["neck"]], (lm[0, 11, :3] + lm[0, 12, :3]) / 2, rtol=1e-5)
    assert np.isnan(out[1, J["left_wrist"]]).all()
    assert np.isnan(out[2, J["neck"]]).all() and np.isnan(out[2, J["right_shoulder"]]).all()
    assert np.isfinite(out[3]).all()
    # without a visibility column nothing is dropped
    assert np.isfinite(canonical_from_mediapipe(lm[..., :3])).all()
    with pytest.raises(ValueError, match="33"):
        canonical_from_mediapipe(np.zeros((2, 18, 3)))


def test_canonical_from_openpose18_confidence():
    kp = np.ones((3, 18, 3))
    kp[..., :2] = np.arange(36).reshape(18, 2)
    kp[0, 4, 2] = 0.0                         # undetected right wrist
    kp[1, 7, 2] = 0.05                        # weak left wrist
    out = canonical_from_openpose18(kp)
    assert np.isnan(out[0, J["right_wrist"]]).all() and np.isfinite(out[1]).all()
    assert (out[2, :, 2] == 0).all()
    np.testing.assert_array_equal(out[2, :, :2], kp[2, :, :2])
    assert np.isnan(canonical_from_openpose18(kp, min_confidence=0.1)[1, J["left_wrist"]]).all()


def test_features_of_a_hand_built_figure():
    x = _figure(T=5)
    x += np.arange(5)[:, None, None] * np.array([0.5, 0.0, 0.0])     # drifts right 0.5 per frame
    f = posture_features(x, fps=30.0)
    assert f.shape == (5, 15) and f.dtype == np.float32
    expect = {
        "trunk_inclination": 0.0, "lateral_lean": 0.0, "head_height": 0.3, "head_offset": 0.0,
        "shoulder_width": 0.8, "shoulder_tilt": 0.0, "elbow_angle_left": np.pi,
        "elbow_angle_right": np.pi, "wrist_spread": 0.8,
        "wrist_to_opposite_shoulder": np.hypot(0.8, 1.0), "hand_to_face": np.hypot(0.4, 1.3),
        "hip_angle": np.pi / 2, "ankle_spread": 0.5, "body_speed": 15.0, "limb_speed": 0.0,
    }
    for name, value in expect.items():
        np.testing.assert_allclose(f[:, COL[name]], value, atol=1e-4, err_msg=name)
    # lean the trunk 30 degrees to the person's left (image right): the neck moves, hips stay
    y = _figure()
    upper = [J[n] for n in JOINTS if not any(k in n for k in ("hip", "knee", "ankle"))]
    a = np.deg2rad(30)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    y[:, upper] = y[:, upper] @ rot.T
    g = posture_features(y)
    np.testing.assert_allclose(g[0, COL["trunk_inclination"]], a, atol=1e-5)
    np.testing.assert_allclose(g[0, COL["lateral_lean"]], np.sin(a), atol=1e-5)
    np.testing.assert_allclose(g[0, COL["head_height"]], 0.3, atol=1e-5)   # the head leans along
    # crossing the wrists over to the opposite shoulders
    z = _figure()
    z[:, J["left_wrist"]] = z[:, J["right_shoulder"]] + [0.0, 0.1, -0.1]
    z[:, J["right_wrist"]] = z[:, J["left_shoulder"]] + [0.0, 0.1, -0.1]
    h = posture_features(z)
    assert h[0, COL["wrist_to_opposite_shoulder"]] < 0.2 < f[0, COL["wrist_to_opposite_shoulder"]]
    assert h[0, COL["elbow_angle_left"]] < 2.0


def test_features_are_translation_and_scale_invariant():
    x = _synth_joints(seed=3)
    f = posture_features(x)
    assert f.std(axis=0).min() > 0, "some feature is constant over a moving figure"
    moved = x * 2.7 + np.array([-130.0, 55.0, 12.0], dtype=np.float32)
    np.testing.assert_allclose(posture_features(moved), f, rtol=1e-3, atol=1e-3)
    small = x / 300.0 - 4.0
    np.testing.assert_allclose(posture_features(small), f, rtol=1e-3, atol=1e-3)
    # ... but not rotation-invariant: the trunk's inclination is measured from the image's vertical
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    turned = posture_features(np.nan_to_num(x) @ rot.T)
    assert abs(turned[:, 0].mean() - f[:, 0].mean()) > 0.05


def test_missing_joints_are_interpolated_over_time():
    T = 12
    x = _figure(T)
    # the left wrist moves linearly, so linear interpolation reconstructs it exactly
    x[:, J["left_wrist"]] += np.linspace(0, 0.6, T)[:, None] * np.array([1.0, -0.5, 0.2])
    full = posture_features(x)
    gap = x.copy()
    gap[4:8, J["left_wrist"]] = np.nan                       # inside: interpolated
    gap[6, J["nose"], 0] = np.nan                            # one coordinate = the joint is missing
    np.testing.assert_allclose(posture_features(gap), full, atol=1e-5)
    edge = x.copy()
    edge[:3, J["left_wrist"]] = np.nan                       # leading frames: nearest valid (frame 3)
    filled = x.copy()
    filled[:3, J["left_wrist"]] = x[3, J["left_wrist"]]
    np.testing.assert_allclose(posture_features(edge), posture_features(filled), atol=1e-5)


def test_a_joint_missing_everywhere_zeroes_its_features_with_a_warning():
    x = _synth_joints(seed=5, T=40)
    x[:, J["left_wrist"]] = np.nan
    with pytest.warns(PostureWarning, match="left_wrist") as rec:
        f = posture_features(x)
    zero = {"elbow_angle_left", "wrist_spread", "wrist_to_opposite_shoulder"}
    assert all(n in str(rec[0].message) for n in zero)
    for name in FEATURE_NAMES:
        is_zero = bool((f[:, COL[name]] == 0).all())
        assert is_zero == (name in zero), name
    # no torso and no shoulders: no scale, everything 0
    y = _synth_joints(seed=5, T=10)
    y[:, [J[n] for n in ("neck", "left_shoulder", "right_shoulder", "left_hip", "right_hip")]] = np.nan
    with pytest.warns(PostureWarning, match="no body scale"):
        assert (posture_features(y) == 0).all()
    # eyes and ears are not used: missing, no warning
    z = _synth_joints(seed=5, T=10)
    z[:, [J["left_ear"], J["right_eye"]]] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error", PostureWarning)
        posture_features(z)


def test_posture_features_rejects_bad_shapes():
    with pytest.raises(ValueError, match="canonical joints"):
        posture_features(np.zeros((5, 33, 3)))
    with pytest.raises(ValueError, match="fps"):
        posture_features(_figure(3), fps=0)
    # 2-D keypoints work (z = 0) and a single frame has zero speeds
    f = posture_features(_figure(1)[..., :2])
    assert f.shape == (1, 15) and f[0, COL["body_speed"]] == 0


# ---------------------------------------------------------------------------------------------
# fixed lengths

def test_fit_length_pads_and_crops_as_documented():
    seq = np.arange(20, dtype=np.float32).reshape(10, 2)       # frame t = (2t, 2t + 1)
    padded = fit_length(seq, 14, mode="centre")
    assert padded.shape == (14, 2)
    np.testing.assert_array_equal(padded[:10], seq)
    np.testing.assert_array_equal(padded[10:], np.repeat(seq[-1:], 4, axis=0))
    np.testing.assert_array_equal(fit_length(seq, 4, mode="centre"), seq[3:7])
    np.testing.assert_array_equal(fit_length(seq, 4, mode="start"), seq[:4])
    np.testing.assert_array_equal(fit_length(seq, 10, mode="random", rng=np.random.default_rng(0)), seq)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(40):
        crop = fit_length(seq, 4, mode="random", rng=rng)
        s = int(crop[0, 0]) // 2
        np.testing.assert_array_equal(crop, seq[s:s + 4])        # a contiguous window
        starts.add(s)
    assert starts == set(range(7))                               # every start is possible
    with pytest.raises(ValueError, match="rng"):
        fit_length(seq, 4, mode="random")
    with pytest.raises(ValueError, match="mode"):
        fit_length(seq, 4, mode="middle")


def test_windows_cover_the_sequence():
    seq = np.arange(50, dtype=np.float32)[:, None]
    w = windows(seq, 20, 15)
    assert [int(x[0, 0]) for x in w] == [0, 15, 30]              # 30 + 20 = 50: ends exactly
    w = windows(seq[:47], 20, 15)
    assert [int(x[0, 0]) for x in w] == [0, 15, 27]              # last one end-aligned
    short = windows(seq[:5], 20, 15)
    assert short.shape == (1, 20, 1) and (short[0, 5:] == 4).all()


# ---------------------------------------------------------------------------------------------
# the layout

def _random_items(rng, n, width=15, heads=POSTURE_HEADS, prefix="seq"):
    return [(f"{prefix}_{i:03d}", rng.normal(size=(int(rng.integers(5, 20)), width)).astype(np.float32),
             {h: int(rng.integers(len(c))) for h, c in heads.items()}) for i in range(n)]


@pytest.fixture
def small_layout(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    sides = {"train": _random_items(rng, 6), "val": _random_items(rng, 3)}
    return write_posture_dataset(tmp_path / "posture", sides, POSTURE_HEADS)


def test_layout_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    heads = {"mood": ["low", "high"], "energy": ["a", "b", "c"]}
    sides = {"train": _random_items(rng, 5, width=7, heads=heads),
             "val": _random_items(rng, 2, width=7, heads=heads),
             "test": _random_items(rng, 2, width=7, heads=heads)}
    out = write_posture_dataset(tmp_path / "d", sides, heads)
    assert json.loads((out / "heads.json").read_text()) == heads
    data = load_posture_dataset(out)
    assert data.heads == heads and data.n_features == 7 and data.sides == ["train", "val", "test"]
    for side, items in sides.items():
        assert data.ids[side] == [sid for sid, _, _ in items]
        for got, (_, seq, _) in zip(data.sequences[side], items):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, seq)
        for h in heads:
            assert data.labels[side][h].dtype == np.int64
            assert data.labels[side][h].tolist() == [c[h] for _, _, c in items]
    assert not list(out.rglob("*.tmp"))
    # a rewrite with fewer sequences removes the stale files
    write_posture_dataset(out, {"train": sides["train"][:2]}, heads)
    assert sorted(p.stem for p in (out / "train" / "sequences").glob("*.npy")) == ["seq_000", "seq_001"]


def test_heads_are_resolved_without_heads_json(small_layout, tmp_path):
    (small_layout / "heads.json").unlink()
    assert load_posture_dataset(small_layout).heads == POSTURE_HEADS     # seed 001's three heads
    rng = np.random.default_rng(2)
    heads = {"x": ["a", "b", "c"]}
    out = write_posture_dataset(tmp_path / "other", {"train": _random_items(rng, 4, heads=heads),
                                                      "val": _random_items(rng, 2, heads=heads)}, heads)
    (out / "heads.json").unlink()
    labels = json.loads((out / "train" / "labels.json").read_text())
    top = max(e["x"] for e in labels.values())
    assert load_posture_dataset(out).heads == {"x": [str(i) for i in range(top + 1)]}
    # explicit heads: a subset of the entries' heads is fine
    assert load_posture_dataset(small_layout, heads={"stress": POSTURE_HEADS["stress"]}).heads == {
        "stress": POSTURE_HEADS["stress"]}


def _edit_labels(root: Path, side: str, fn) -> Path:
    path = root / side / "labels.json"
    labels = json.loads(path.read_text())
    fn(labels)
    path.write_text(json.dumps(labels))
    return path


BAD_CASES = {
    "missing val folder": lambda r: (shutil.rmtree(r / "val"), r / "val")[1],
    "missing labels.json": lambda r: ((r / "train" / "labels.json").unlink(), r / "train" / "labels.json")[1],
    "labels.json not JSON": lambda r: ((r / "val" / "labels.json").write_text("{oops"), r / "val" / "labels.json")[1],
    "labels.json a list": lambda r: ((r / "val" / "labels.json").write_text("[1, 2]"), r / "val" / "labels.json")[1],
    "entry without .npy": lambda r: ((r / "train" / "sequences" / "seq_002.npy").unlink(),
                                     r / "train" / "sequences" / "seq_002.npy")[1],
    "code out of range": lambda r: _edit_labels(r, "train", lambda d: d["seq_001"].update(posture=4)),
    "negative code": lambda r: _edit_labels(r, "train", lambda d: d["seq_001"].update(stress=-1)),
    "float code": lambda r: _edit_labels(r, "val", lambda d: d["seq_000"].update(trajectory=1.5)),
    "string code": lambda r: _edit_labels(r, "val", lambda d: d["seq_000"].update(trajectory="1")),
    "head missing": lambda r: _edit_labels(r, "train", lambda d: d["seq_003"].pop("stress")),
    "entry not an object": lambda r: _edit_labels(r, "train", lambda d: d.update(seq_003=2)),
}


def _save(path: Path, a) -> Path:
    np.save(path, a, allow_pickle=True)
    return path


BAD_FILES = {
    "wrong width for seed heads": lambda p: _save(p, np.zeros((10, 14), np.float32)),
    "3-D array": lambda p: _save(p, np.zeros((10, 15, 2), np.float32)),
    "empty": lambda p: _save(p, np.zeros((0, 15), np.float32)),
    "mostly NaN": lambda p: _save(p, np.where(np.arange(10)[:, None] < 5, np.nan, np.ones((10, 15)))),
    "infinite": lambda p: _save(p, np.full((10, 15), np.inf)),
    "object array": lambda p: _save(p, np.array([{"a": 1}], dtype=object)),
    "strings": lambda p: _save(p, np.full((10, 15), "x")),
    "not npy": lambda p: (p.write_bytes(pickle.dumps([1, 2, 3])), p)[1],
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_layouts_give_a_data_error_naming_the_file(small_layout, case):
    path = BAD_CASES[case](small_layout)
    with pytest.raises(DataError) as e:
        load_posture_dataset(small_layout)
    assert e.value.path == str(path), e.value
    if "entry" in case or "code" in case or "head" in case:
        assert "seq_0" in e.value.problem                     # names the entry too


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_sequence_files_give_a_data_error_naming_the_file(small_layout, case):
    path = BAD_FILES[case](small_layout / "val" / "sequences" / "seq_001.npy")
    with pytest.raises(DataError) as e:
        load_posture_dataset(small_layout)
    assert e.value.path == str(path), e.value
    # skip mode passes over it and records it
    data = load_posture_dataset(small_layout, policy=BadFilePolicy("skip"))
    assert data.ids["val"] == ["seq_000", "seq_002"] and len(data.labels["val"]["posture"]) == 2
    assert [p for p, _ in data.skipped] == [str(path)]


def test_widths_must_agree_for_other_heads(tmp_path):
    rng = np.random.default_rng(3)
    heads = {"x": ["a", "b"]}
    out = write_posture_dataset(tmp_path / "d", {"train": _random_items(rng, 4, width=6, heads=heads),
                                                  "val": _random_items(rng, 2, width=6, heads=heads)}, heads)
    odd = out / "train" / "sequences" / "seq_002.npy"
    np.save(odd, np.zeros((8, 5), np.float32))
    with pytest.raises(DataError, match="5 features per frame; expected 6") as e:
        load_posture_dataset(out)
    assert e.value.path == str(odd)


def test_few_nans_are_interpolated_and_unlabelled_files_skipped(small_layout, caplog):
    path = small_layout / "train" / "sequences" / "seq_001.npy"
    seq = np.load(path)
    holed = seq.copy()
    holed[2, 3] = np.nan                       # one NaN, between two frames
    np.save(path, holed)
    np.save(small_layout / "train" / "sequences" / "stray.npy", np.zeros((4, 15), np.float32))
    with caplog.at_level(logging.WARNING):
        data = load_posture_dataset(small_layout)
    got = data.sequences["train"][data.ids["train"].index("seq_001")]
    np.testing.assert_allclose(got[2, 3], (seq[1, 3] + seq[3, 3]) / 2, rtol=1e-6)
    assert "stray" not in data.ids["train"] and "stray.npy" in caplog.text
    assert any(p.endswith("stray.npy") for p, _ in data.skipped)


def test_writer_refuses_bad_input(tmp_path):
    seq = np.zeros((5, 15), np.float32)
    codes = {"posture": 0, "stress": 0, "trajectory": 0}
    for sides, match in (
        ({"train": [("../x", seq, codes)]}, "plain file stem"),
        ({"train": [("a", seq, codes), ("a", seq, codes)]}, "twice"),
        ({"train": [("a", seq, codes | {"posture": 9})]}, "posture code"),
        ({"train": [("a", seq, {"posture": 0})]}, "stress"),
        ({"train": [("a", np.full((5, 15), np.nan), codes)]}, "NaN"),
        ({"dev": [("a", seq, codes)]}, "sides"),
    ):
        with pytest.raises(ValueError, match=match):
            write_posture_dataset(tmp_path / "w", sides, POSTURE_HEADS)


# ---------------------------------------------------------------------------------------------
# synthetic data

def _summary(seqs: list[np.ndarray]) -> np.ndarray:
    """Per sequence: mean, std and (last third - first third) mean of each feature.

    The drift term is there because a trajectory's *direction* (deteriorating vs improving) is
    invisible to the mean and std of a sequence."""
    out = []
    for s in seqs:
        k = len(s) // 3
        out.append(np.concatenate([s.mean(0), s.std(0), s[-k:].mean(0) - s[:k].mean(0)]))
    return np.array(out)


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    root = synth_posture(tmp_path_factory.mktemp("posture"), seed=0)
    return load_posture_dataset(root)


def test_synthetic_posture_layout(synth_data):
    assert synth_data.heads == POSTURE_HEADS and synth_data.n_features == 15
    assert synth_data.sides == ["train", "val"]                # test: 0 -> not written
    assert len(synth_data.ids["train"]) == 1920 and len(synth_data.ids["val"]) == 240
    assert synth_data.ids["train"][:2] == ["seq_0001", "seq_0002"]   # zero-padded to the longest side
    for side in ("train", "val"):
        assert all(s.shape == (60, 15) for s in synth_data.sequences[side])
        for h, classes in POSTURE_HEADS.items():
            assert set(synth_data.labels[side][h].tolist()) == set(range(len(classes)))


def test_synthetic_classes_separate_in_feature_space(tmp_path):
    """On the plain plant (one way to hold each posture, no sitting noise) a linear classifier on
    per-sequence summaries beats chance by far on the val bodies. (The calibrated defaults are
    meant to stop it near 0.7: tests/test_calibration.py.)

    Measured (seed 0): posture 1.00, stress 0.93, trajectory 1.00 (chance 0.25, 0.25, 0.33)."""
    synth_data = load_posture_dataset(synth_posture(tmp_path / "plain", seed=0, subjects=4, variety=0.0,
                                                    pose_noise=0.0, n_per_side={"train": 240, "val": 60}))
    xtr, xva = _summary(synth_data.sequences["train"]), _summary(synth_data.sequences["val"])
    floor = {"posture": 0.8, "stress": 0.7, "trajectory": 0.7}
    for h in POSTURE_HEADS:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(xtr, synth_data.labels["train"][h])
        acc = clf.score(xva, synth_data.labels["val"][h])
        assert acc >= floor[h], f"{h}: val accuracy {acc:.2f}"


def test_synthetic_keypoints_show_the_classes_directly():
    """The generator's geometry, read off the features: slouched leans more than upright, open
    arms are wider apart than closed ones, stillness moves less than restlessness, and
    deteriorating sequences lean more at the end than at the start."""
    def mean_feature(name, seeds=range(6), **classes):
        return np.mean([posture_features(_synth_joints(seed=s, **classes))[:, COL[name]].mean() for s in seeds])

    flat = {"stress": 0, "trajectory": 0}
    assert mean_feature("trunk_inclination", posture=1, **flat) > mean_feature("trunk_inclination", posture=0, **flat) + 0.2
    assert mean_feature("wrist_spread", posture=2, **flat) > 2 * mean_feature("wrist_spread", posture=3, **flat)
    still, restless = ({"posture": 0, "trajectory": 0, "stress": s} for s in (3, 2))
    assert mean_feature("body_speed", **restless) > 2 * mean_feature("body_speed", **still)
    f = posture_features(_synth_joints(seed=1, posture=0, stress=0, trajectory=1))
    assert f[-10:, 0].mean() > f[:10, 0].mean() + 0.15
    g = posture_features(_synth_joints(seed=1, posture=0, stress=0, trajectory=2))
    assert g[-10:, 0].mean() < g[:10, 0].mean() - 0.15


def test_synthesizers_registry_and_cli_style_options(tmp_path):
    assert get_dataset("posture").synth is synth_posture and get_dataset("features").synth is synth_features
    root = synth("posture", tmp_path / "p", subjects=2, seed=1, n_per_side="train:8,val:4,test:4",
                 seq_length=12)
    data = load_posture_dataset(root)
    assert {s: len(v) for s, v in data.ids.items()} == {"train": 8, "val": 4, "test": 4}
    assert data.sequences["test"][0].shape == (12, 15)
    with pytest.raises(ValueError, match="every class"):
        synth_posture(tmp_path / "q", n_per_side={"train": 3, "val": 4})
    f = synth("features", tmp_path / "f", n=30, n_features=8, heads="mood:low/high")
    assert json.loads((f / "heads.json").read_text()) == {"mood": ["low", "high"]}


def test_synth_features_round_trip_and_learnability(tmp_path):
    """Measured (seed 0, 300 train / 100 held out): depression 0.74 (chance 0.33), anxiety 0.77
    (chance 0.50); seeds 1-3 give 0.66-0.79 and 0.80-0.95."""
    out = synth_features(tmp_path / "features", seed=0, n=400, n_features=32)
    table = pd.read_csv(out / "features.csv")
    labels = json.loads((out / "labels.json").read_text())
    heads = json.loads((out / "heads.json").read_text())
    assert heads == {"depression": ["none", "mild", "severe"], "anxiety": ["low", "high"]}
    assert list(table.columns) == ["sample_id"] + [f"f{j:02d}" for j in range(32)]
    assert len(table) == 400 and table["sample_id"].is_unique
    assert set(table["sample_id"]) == set(labels)
    assert table.iloc[:, 1:].dtypes.map(lambda d: d.kind == "f").all()
    x = table.iloc[:, 1:].to_numpy()
    for h, classes in heads.items():
        y = np.array([labels[s][h] for s in table["sample_id"]])
        assert set(y.tolist()) == set(range(len(classes)))
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[:300], y[:300])
        acc = clf.score(x[300:], y[300:])
        chance = 1 / len(classes)
        assert acc > chance + 0.2, f"{h}: {acc:.2f} (chance {chance:.2f})"


# ---------------------------------------------------------------------------------------------
# MultiPosture

UPPER_OF_POSTURE = {0: "TUP", 1: "TLF", 2: "TLL", 3: "TLR"}
LOWER = ["LAP", "LWA"]


def _multiposture_frame(tmp_path: Path, rows_per_run: int = 40) -> tuple[pd.DataFrame, list]:
    """A data.csv-like table: 4 subjects x 4 upper x 2 lower labels, rows_per_run rows each,
    landmarks in metres around the hip midpoint with y down (MediaPipe world coordinates)."""
    rng = np.random.default_rng(7)
    records, runs = [], []
    for subject in (1, 2, 3, 4):
        for p in range(4):
            for lower in LOWER:
                joints = synth_posture_keypoints(rng, p, 0, 0, rows_per_run, 30.0).astype(np.float64)
                joints = np.nan_to_num(joints, nan=0.0)          # the file has no gaps
                lm = to_mediapipe33(joints)
                hips = lm[:, [23, 24]].mean(axis=1, keepdims=True)
                lm = (lm - hips) / 300.0                         # pixels -> "metres", hip-centred
                runs.append((subject, UPPER_OF_POSTURE[p], lower, lm))
                for t in range(rows_per_run):
                    row = {"subject": subject, "upperbody_label": UPPER_OF_POSTURE[p], "lowerbody_label": lower}
                    for k, name in enumerate(MEDIAPIPE33_NAMES):
                        for a, axis in enumerate("xyz"):
                            row[f"{name}_{axis}"] = lm[t, k, a]
                    records.append(row)
    df = pd.DataFrame(records)
    cols = list(df.columns)
    rng.shuffle(cols)                                           # column order is [UNCERTAIN]
    return df[cols], runs


@pytest.fixture(scope="module")
def multiposture_csv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiposture")
    df, runs = _multiposture_frame(tmp)
    path = tmp / "data.csv"
    df.to_csv(path, index=False)
    return path, df, runs


def test_import_multiposture(multiposture_csv, tmp_path):
    path, _, runs = multiposture_csv
    out = import_multiposture(path, tmp_path / "mp", seq_length=30, stride=15, val_fraction=0.25, seed=0)
    data = load_posture_dataset(out)
    assert data.heads == MULTIPOSTURE_HEADS and data.n_features == 15
    info = json.loads((out / "import_info.json").read_text())
    assert len(info["val_subjects"]) == 1 and len(info["train_subjects"]) == 3
    # 40 rows, 30-frame windows every 15 frames: starts 0 and 10 (end-aligned)
    assert len(data.ids["train"]) == 3 * 8 * 2 and len(data.ids["val"]) == 8 * 2
    val_subject = info["val_subjects"][0]
    assert all(sid.startswith(f"s{val_subject}_") for sid in data.ids["val"])
    assert not any(sid.startswith(f"s{val_subject}_") for sid in data.ids["train"])
    # the first window of a run holds exactly the features of that run's landmarks
    subject, upper, lower, lm = runs[0]
    side = "val" if str(subject) == val_subject else "train"
    i = next(k for k, sid in enumerate(data.ids[side])
             if sid.startswith(f"s{subject}_{upper}_{lower}_") and sid.endswith("_w00"))
    expect = posture_features(canonical_from_mediapipe(lm))[:30]
    np.testing.assert_allclose(data.sequences[side][i], expect, rtol=1e-4, atol=1e-4)
    assert data.labels[side]["upperbody"][i] == MULTIPOSTURE_HEADS["upperbody"].index(upper)
    assert data.labels[side]["lowerbody"][i] == MULTIPOSTURE_HEADS["lowerbody"].index(lower)


def test_import_multiposture_other_column_styles_and_y_up(multiposture_csv, tmp_path):
    path, df, _ = multiposture_csv
    base = load_posture_dataset(import_multiposture(path, tmp_path / "a"))
    renamed = df.rename(columns={f"{n}_{a}": f"landmark_{k}_{a}" for k, n in enumerate(MEDIAPIPE33_NAMES)
                                 for a in "xyz"})
    for a in "y":                                               # y up instead of down
        cols = [c for c in renamed.columns if c.endswith(f"_{a}")]
        renamed[cols] = -renamed[cols]
    other = tmp_path / "styled.csv"
    renamed.rename(columns=str.upper).to_csv(other, index=False)
    again = load_posture_dataset(import_multiposture(other, tmp_path / "b"))
    assert again.ids == base.ids
    for side in base.sides:
        np.testing.assert_allclose(np.stack(again.sequences[side]), np.stack(base.sequences[side]), atol=1e-4)
    assert json.loads((tmp_path / "b" / "import_info.json").read_text())["flip_y"] is True


def test_import_multiposture_bad_input(multiposture_csv, tmp_path):
    path, df, _ = multiposture_csv
    bad = tmp_path / "bad.csv"
    df.drop(columns=["left_wrist_y", "nose_z"]).to_csv(bad, index=False)
    with pytest.raises(DataError, match="left_wrist_y") as e:
        import_multiposture(bad, tmp_path / "o1")
    assert e.value.path == str(bad) and "nose_z" in e.value.problem
    df.drop(columns=["lowerbody_label"]).to_csv(bad, index=False)
    with pytest.raises(DataError, match="lowerbody_label"):
        import_multiposture(bad, tmp_path / "o2")
    text = df.copy()
    text["nose_x"] = text["nose_x"].astype(object)
    text.loc[5, "nose_x"] = "abc"
    text.to_csv(bad, index=False)
    with pytest.raises(DataError, match="row 7: nose_x is not a number") as e:
        import_multiposture(bad, tmp_path / "o3")
    assert e.value.path == str(bad)
    labels = df.copy()
    labels.loc[3, "upperbody_label"] = "TXX"
    labels.to_csv(bad, index=False)
    with pytest.raises(DataError, match="'TXX' is not one of TLB, TLF, TLL, TLR, TUP"):
        import_multiposture(bad, tmp_path / "o4")
    # skip mode drops the bad row and goes on
    policy = BadFilePolicy("skip")
    out = import_multiposture(bad, tmp_path / "o5", policy=policy)
    assert len(policy.skipped) == 1 and (out / "train" / "labels.json").is_file()
    with pytest.raises(DataError, match="does not exist"):
        import_multiposture(tmp_path / "nope.csv", tmp_path / "o6")
    df[df["subject"] == 1].to_csv(bad, index=False)
    with pytest.raises(DataError, match="subject split"):
        import_multiposture(bad, tmp_path / "o7")


# ---------------------------------------------------------------------------------------------
# BoLD

def _openpose_rows(joints: np.ndarray, person: int, first_frame: int) -> np.ndarray:
    """Canonical joints (T, 18, 3) -> BoLD joint rows (T, 56): frame, person, 18 x (x, y, c)."""
    T = joints.shape[0]
    kp = np.zeros((T, 18, 3))
    ok = np.isfinite(joints).all(axis=-1)
    kp[..., :2] = np.where(ok[..., None], joints[..., :2], 0.0)
    kp[..., 2] = np.where(ok, 0.8, 0.0)
    return np.concatenate([(first_frame + np.arange(T))[:, None], np.full((T, 1), person),
                           kp.reshape(T, -1)], axis=1)


def _bold_tree(root: Path) -> dict:
    """annotations/{train,val}.csv (no header, 37 columns) + joints/003/<clip>.mp4/0001.npy, each
    with two persons; the annotated one is seen in frames 5..44 (counted from the file's first
    frame, 1000)."""
    rng = np.random.default_rng(11)
    truth = {}
    for side, n in (("train", 6), ("val", 3)):
        lines = []
        for i in range(n):
            video = f"003/{side}{i}.mp4/0001.mp4"
            a = synth_posture_keypoints(rng, i % 4, 0, 0, 50, 30.0)
            b = synth_posture_keypoints(rng, 0, 2, 0, 50, 30.0)
            arr = np.concatenate([_openpose_rows(a, 1, 1000), _openpose_rows(b, 2, 1000)])
            arr = arr[np.argsort(arr[:, 0], kind="stable")]          # rows in frame order
            path = root / "joints" / "003" / f"{side}{i}.mp4" / "0001.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, arr)
            scores = rng.uniform(0, 0.4, size=26)
            top = (3 * i + 1) % 26
            scores[top] = 0.9
            vad = [rng.uniform(1, 10) for _ in range(3)]
            values = [video, 1, 5, 44, *scores, *vad, 1, 2, 3, 0.8]
            lines.append(",".join(str(v) for v in values))
            truth[(side, i)] = (a[5:45], top, vad)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{side}.csv").write_text("\n".join(lines) + "\n")
    return truth


def test_import_bold(tmp_path):
    root = tmp_path / "BOLD_public"
    truth = _bold_tree(root)
    out = import_bold(root, tmp_path / "bold", seq_length=30, stride=15)
    data = load_posture_dataset(out)
    assert list(data.heads) == ["emotion", "valence", "arousal"]
    assert data.heads["emotion"] == list(BOLD_CATEGORIES) and len(BOLD_CATEGORIES) == 26
    # 40 frames -> windows at 0 and 10
    assert len(data.ids["train"]) == 12 and len(data.ids["val"]) == 6
    for side, n in (("train", 6), ("val", 3)):
        for i in range(n):
            a, top, _ = truth[(side, i)]
            k = data.ids[side].index(f"r{i + 1:05d}_003_{side}{i}_mp4_0001_p1_w00")
            assert data.labels[side]["emotion"][k] == top
            expect = posture_features(canonical_from_openpose18(_openpose_rows(a, 1, 0)[:, 2:].reshape(-1, 18, 3),
                                                                min_confidence=0.1))
            np.testing.assert_allclose(data.sequences[side][k], expect[:30], rtol=1e-4, atol=1e-4)
    info = json.loads((out / "import_info.json").read_text())
    cut = info["vad_cut_points"]["valence"]
    for i in range(6):
        k = data.ids["train"].index(f"r{i + 1:05d}_003_train{i}_mp4_0001_p1_w00")
        v = truth[("train", i)][2][0]
        assert data.labels["train"]["valence"][k] == (0 if v <= cut[0] else 1 if v <= cut[1] else 2)
    # a subset of categories: the emotion head lists only those
    sub = load_posture_dataset(import_bold(root, tmp_path / "sub", categories="Peace, Esteem, disconnect",
                                           vad_heads=False))
    assert sub.heads == {"emotion": ["Peace", "Esteem", "Disconnection"]}


def test_import_bold_bad_input(tmp_path):
    root = tmp_path / "BOLD_public"
    _bold_tree(root)
    missing = root / "joints" / "003" / "train2.mp4" / "0001.npy"
    missing.unlink()
    with pytest.raises(DataError, match="is missing") as e:
        import_bold(root, tmp_path / "o1")
    assert e.value.path == str(missing)
    policy = BadFilePolicy("skip")
    data = load_posture_dataset(import_bold(root, tmp_path / "o2", policy=policy))
    assert len(data.ids["train"]) == 10 and [p for p, _ in policy.skipped] == [str(missing)]
    csv = root / "annotations" / "val.csv"
    csv.write_text("\n".join(line.rsplit(",", 1)[0] for line in csv.read_text().splitlines()) + "\n")
    with pytest.raises(DataError, match="36 columns") as e:
        import_bold(root, tmp_path / "o3", policy=BadFilePolicy("skip"))
    assert e.value.path == str(csv)
    (root / "annotations" / "val.csv").unlink()
    with pytest.raises(DataError, match="is missing"):
        import_bold(root, tmp_path / "o4", policy=BadFilePolicy("skip"))
    with pytest.raises(ValueError, match="not a BoLD category"):
        import_bold(root, tmp_path / "o5", categories="Joy,Peace")


def test_cli_import_then_train_posture_on_the_imported_labels(multiposture_csv, tmp_path):
    """`emoexp data import multiposture` writes the layout; train_posture trains on its own heads."""
    from click.testing import CliRunner

    from emoexp import engine
    from emoexp.cli import main as cli
    from emoexp.config import apply_overrides
    from emoexp.tasks import get_task

    path, _, _ = multiposture_csv
    res = CliRunner().invoke(cli, ["data", "import", "multiposture", str(path), "--out", str(tmp_path / "mp")])
    assert res.exit_code == 0, res.output
    task = get_task("train_posture")
    cfg = apply_overrides(task.default_config(), {"data_dir": str(tmp_path / "mp"), "epochs": 1,
                                                  "checkpoint_every": 0, "log_model": False})
    data = task.build_data(cfg)
    assert list(data.heads) == ["upperbody", "lowerbody"]
    assert engine.fit(task, cfg, track=False).stop_reason == "completed"
    res = CliRunner().invoke(cli, ["data", "import", "bold", str(tmp_path / "nope"), "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "nope" in res.output
