"""Body posture: canonical joints, the 15 per-frame posture features, and seed 001's layout.

This module is the one definition of what a posture "frame" is. Everything that turns keypoints
into model input -- the video extractor, the synthetic generator, the MultiPosture and BoLD
importers -- goes through :func:`posture_features`, so training and inference see the same
numbers.

Canonical joints
----------------
:data:`JOINTS` are the 18 joints of OpenPose COCO-18, in OpenPose order (so :data:`OPENPOSE18`
is the identity). MediaPipe Pose has 17 of them (:data:`MEDIAPIPE33`); its ``neck`` is the
midpoint of the shoulders (landmarks 11 and 12). Coordinates keep the image convention of both
detectors: x to the image right, **y down**, z depth (MediaPipe; 0 for 2-D detectors). "Left" is
the person's left. A missing joint is NaN.

The 15 features (:data:`FEATURES`)
----------------------------------
L is the torso length: the median over the sequence of the distance neck -- mid-hip (mid-hip =
midpoint of the hips, or the one hip seen); if the torso is never seen, 1.25 x the median
shoulder width stands in. One L per sequence, so that a torso foreshortened in some frames
(leaning toward the camera) shows up as a change instead of being normalised away. Lengths are
divided by L and speeds are in L per second, so every feature is translation- and
scale-invariant. Angles are radians.

===  ===========================  ============================================================
 #   name                         definition (joints)
===  ===========================  ============================================================
 0   trunk_inclination            angle between mid-hip->neck and the image up direction (0:
                                  upright trunk; grows with leaning in any direction)
 1   lateral_lean                 (neck.x - mid_hip.x) / L: signed sideways lean in the image
 2   head_height                  (nose - neck) along the unit trunk axis / L: head above the
                                  shoulders; drops when the head hangs forward/down
 3   head_offset                  distance of the nose from the trunk axis line through the neck
                                  / L: head pushed forward (or tilted sideways)
 4   shoulder_width               |left_shoulder - right_shoulder| / L: narrows when shoulders
                                  round forward or the body turns
 5   shoulder_tilt                (left_shoulder.y - right_shoulder.y) / L: > 0 when the left
                                  shoulder is lower
 6   elbow_angle_left             angle at the left elbow, shoulder-elbow-wrist (pi: straight)
 7   elbow_angle_right            the same for the right arm
 8   wrist_spread                 |left_wrist - right_wrist| / L: open (large) or closed arms
 9   wrist_to_opposite_shoulder   mean of |left_wrist - right_shoulder| and |right_wrist -
                                  left_shoulder|, / L: small when the arms are crossed
10   hand_to_face                 min over the wrists of |wrist - nose| / L: self-touch, face
                                  covering
11   hip_angle                    angle at the hip between neck and knee, mean of both sides
                                  (about pi/2 sitting upright, ~pi standing)
12   ankle_spread                 (left_ankle - right_ankle) projected on the right->left
                                  shoulder direction, / L: > 0 natural stance, ~0 together,
                                  < 0 crossed
13   body_speed                   speed of the trunk centre (midpoint of neck and mid-hip), L/s:
                                  sway, position shifts; ~0 when still
14   limb_speed                   mean speed of wrists and ankles relative to the trunk centre,
                                  L/s: fidgeting hands and legs
===  ===========================  ============================================================

Features 0-12 describe the posture (upright / slouched / open / closed), 13-14 the movement
energy and, over time, its rhythm (stress), and all of them drift over a sequence when the
posture deteriorates or improves (trajectory).

Seed 001's layout
-----------------
::

    DIR/heads.json                          {"head": ["class0", ...]}   (optional)
    DIR/{train,val[,test]}/labels.json      {"seq_001": {"posture": 0, "stress": 1, "trajectory": 0}}
    DIR/{train,val[,test]}/sequences/seq_001.npy   (T, F) float, F = 15 for posture features

Read with :func:`load_posture_dataset`, written with :func:`write_posture_dataset`.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.io import atomic_save_npy, atomic_write_bytes
from emoexp.data.windows import window_starts

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# joints

JOINTS: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
N_JOINTS = len(JOINTS)
_J = {name: i for i, name in enumerate(JOINTS)}

# OpenPose COCO-18 order: 0 Nose, 1 Neck, 2 RShoulder, 3 RElbow, 4 RWrist, 5 LShoulder, 6 LElbow,
# 7 LWrist, 8 RHip, 9 RKnee, 10 RAnkle, 11 LHip, 12 LKnee, 13 LAnkle, 14 REye, 15 LEye, 16 REar,
# 17 LEar -- JOINTS was chosen in this order, so the map is the identity.
OPENPOSE18: dict[str, int] = dict(_J)

# MediaPipe Pose's 33 landmarks, in the order of its PoseLandmark enum (lower case, as MultiPosture
# names its columns).
MEDIAPIPE33_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
# Every canonical joint but "neck", which MediaPipe does not have: canonical_from_mediapipe takes
# the midpoint of MEDIAPIPE_NECK (the two shoulders) instead.
MEDIAPIPE33: dict[str, int] = {
    name: MEDIAPIPE33_NAMES.index(name) for name in JOINTS if name != "neck"
}
MEDIAPIPE_NECK: tuple[int, int] = (MEDIAPIPE33["left_shoulder"], MEDIAPIPE33["right_shoulder"])
MEDIAPIPE_MIN_VISIBILITY = 0.5


def canonical_from_mediapipe(landmarks: np.ndarray) -> np.ndarray:
    """MediaPipe Pose landmarks (T, 33, 3|4) -> canonical joints (T, J, 3) float32.

    A 4th column is MediaPipe's visibility: landmarks below 0.5 become NaN (missing). A single
    frame (33, C) is taken as T = 1. Works for image (normalised) and world (metres) landmarks
    alike; the features do not care about the unit. Neck = midpoint of the shoulders (NaN if
    either is missing).
    """
    x = np.asarray(landmarks, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != len(MEDIAPIPE33_NAMES) or x.shape[2] not in (3, 4):
        raise ValueError(f"MediaPipe landmarks must be (T, 33, 3) or (T, 33, 4), not {x.shape}")
    xyz = x[..., :3].copy()
    if x.shape[2] == 4:
        vis = x[..., 3]
        # a NaN visibility counts as not visible
        xyz[~(vis >= MEDIAPIPE_MIN_VISIBILITY)] = np.nan
    out = np.full((x.shape[0], N_JOINTS, 3), np.nan)
    for name, k in MEDIAPIPE33.items():
        out[:, _J[name]] = xyz[:, k]
    a, b = MEDIAPIPE_NECK
    out[:, _J["neck"]] = 0.5 * (xyz[:, a] + xyz[:, b])     # NaN propagates
    return out.astype(np.float32)


def canonical_from_openpose18(kp: np.ndarray, *, min_confidence: float = 0.0) -> np.ndarray:
    """OpenPose COCO-18 keypoints (T, 18, 2|3) -> canonical joints (T, J, 3) float32, z = 0.

    With a 3rd confidence column, joints whose confidence is 0 (OpenPose's "not detected") or
    below ``min_confidence`` become NaN (BoLD loaders use 0.1). Without one, a joint at exactly
    (0, 0) -- OpenPose's marker for an undetected joint -- is NaN. A single frame (18, C) is
    taken as T = 1.
    """
    x = np.asarray(kp, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != 18 or x.shape[2] not in (2, 3):
        raise ValueError(f"OpenPose COCO-18 keypoints must be (T, 18, 2) or (T, 18, 3), not {x.shape}")
    out = np.zeros((x.shape[0], N_JOINTS, 3))
    out[..., :2] = x[..., :2]
    if x.shape[2] == 3:
        conf = x[..., 2]
        missing = ~(conf > 0) | (conf < min_confidence)
    else:
        missing = (x[..., 0] == 0) & (x[..., 1] == 0)
    out[missing] = np.nan
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# features

FEATURES: tuple[tuple[str, str], ...] = (
    ("trunk_inclination",
     "angle (rad) between the mid-hip->neck vector and the image up direction; 0 = upright trunk"),
    ("lateral_lean",
     "(neck.x - mid_hip.x) / L: signed sideways lean of the trunk in the image"),
    ("head_height",
     "(nose - neck) along the unit mid-hip->neck axis / L: drops when the head hangs forward/down"),
    ("head_offset",
     "distance of the nose from the trunk axis line through the neck / L: head pushed forward"),
    ("shoulder_width",
     "|left_shoulder - right_shoulder| / L: narrows when the shoulders round forward"),
    ("shoulder_tilt",
     "(left_shoulder.y - right_shoulder.y) / L: > 0 when the left shoulder is lower (y down)"),
    ("elbow_angle_left",
     "angle (rad) at the left elbow between left shoulder and left wrist; pi = straight arm"),
    ("elbow_angle_right",
     "angle (rad) at the right elbow between right shoulder and right wrist; pi = straight arm"),
    ("wrist_spread",
     "|left_wrist - right_wrist| / L: large for open arms, small for closed ones"),
    ("wrist_to_opposite_shoulder",
     "mean of |left_wrist - right_shoulder| and |right_wrist - left_shoulder|, / L: small when arms cross"),
    ("hand_to_face",
     "min over the wrists of |wrist - nose| / L: hand near the face (self-touch)"),
    ("hip_angle",
     "angle (rad) at the hip between neck and knee, mean of both sides: ~pi/2 sitting upright"),
    ("ankle_spread",
     "(left_ankle - right_ankle) along the right->left shoulder direction / L: < 0 when crossed"),
    ("body_speed",
     "speed of the trunk centre (midpoint of neck and mid-hip) in L per second: sway, shifts"),
    ("limb_speed",
     "mean speed of wrists and ankles relative to the trunk centre, L per second: fidgeting"),
)
N_FEATURES = 15
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in FEATURES)
assert len(FEATURES) == N_FEATURES

# Seed 001's three heads and their codes.
POSTURE_HEADS: dict[str, list[str]] = {
    "posture": ["upright", "slouched", "open", "closed"],
    "stress": ["calm", "fidgeting", "restless", "excessive_stillness"],
    "trajectory": ["stable", "deteriorating", "improving"],
}

# typical torso (neck - mid-hip, ~0.50 m) over shoulder width (~0.40 m): the fallback scale
_TORSO_PER_SHOULDER = 1.25
_EPS = 1e-12


class PostureWarning(UserWarning):
    """Features set to 0 because the joints they need are missing in every frame."""


def fill_missing_joints(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of missing joints over time, per joint; edges take the nearest valid.

    (T, J, C) with NaN (a joint counts as missing in a frame if any coordinate is not finite)
    -> (filled (T, J, C) float64, absent (J,) bool). Joints missing in every frame stay NaN and
    are flagged in ``absent``.
    """
    x = np.array(joints, dtype=np.float64)            # a copy: filled in place
    ok = np.isfinite(x).all(axis=-1)                   # (T, J)
    t = np.arange(x.shape[0], dtype=np.float64)
    absent = ~ok.any(axis=0)
    for j in np.flatnonzero(~ok.all(axis=0) & ~absent):
        good = ok[:, j]
        for c in range(x.shape[2]):
            # np.interp holds the end values beyond the first/last valid frame: nearest-valid fill
            x[:, j, c] = np.interp(t, t[good], x[good, j, c])
    x[:, absent] = np.nan
    return x, absent


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt((v * v).sum(axis=-1))


def _angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle (rad) between vectors (..., 3); NaN where either is NaN, pi/2 for a zero vector."""
    cos = (u * v).sum(axis=-1) / np.maximum(_norm(u) * _norm(v), _EPS)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _mean_present(*arrays: np.ndarray) -> np.ndarray:
    """Mean over the inputs that are finite, per element (over the last axis if it is a point);
    NaN where none is. All arrays the same shape."""
    s = np.stack(arrays)                                               # (k, ...)
    ok = np.isfinite(s)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, s, 0.0).sum(axis=0) / n                    # 0/0 -> NaN


def _speed(p: np.ndarray, fps: float) -> np.ndarray:
    """|dp/dt| of a (T, 3) trajectory, central differences; 0 for T = 1."""
    if p.shape[0] < 2:
        return np.zeros(p.shape[0]) * p[:, 0]          # keeps NaN for an absent point
    return _norm(np.gradient(p, axis=0)) * fps


def posture_features(joints: np.ndarray, fps: float = 30.0) -> np.ndarray:
    """Canonical joints (T, J, 3) (or (T, J, 2), z = 0), NaN = missing -> (T, 15) float32.

    The 15 features are :data:`FEATURES` (table in the module docstring). ``fps`` converts the
    motion features (13, 14) to per-second speeds.

    Missing joints: each joint is interpolated linearly over time between the frames where it
    was seen; frames before the first / after the last sighting take the nearest seen value
    (:func:`fill_missing_joints`). A joint missing in *every* frame cannot be filled: the
    features that need it are 0 in every frame and a :class:`PostureWarning` names them. Some
    features get by with part of their joints: mid-hip uses the one hip seen, hand_to_face and
    hip_angle the one side seen, limb_speed the wrists/ankles seen, the trunk centre the neck
    alone. If neither the torso nor the shoulders are ever seen there is no scale: all
    features are 0 (with the warning). Eyes and ears are not used.
    """
    x = np.asarray(joints, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != N_JOINTS or x.shape[2] not in (2, 3):
        raise ValueError(f"joints must be (T, {N_JOINTS}, 3) canonical joints (see JOINTS), not {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("joints hold no frames (T = 0)")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, not {fps}")
    if x.shape[2] == 2:
        x = np.concatenate([x, np.zeros(x.shape[:2] + (1,))], axis=-1)
    x, absent = fill_missing_joints(x)
    T = x.shape[0]

    def p(name: str) -> np.ndarray:              # (T, 3)
        return x[:, _J[name]]

    nose, neck = p("nose"), p("neck")
    ls, rs = p("left_shoulder"), p("right_shoulder")
    le, re = p("left_elbow"), p("right_elbow")
    lw, rw = p("left_wrist"), p("right_wrist")
    lh, rh = p("left_hip"), p("right_hip")
    lk, rk = p("left_knee"), p("right_knee")
    la, ra = p("left_ankle"), p("right_ankle")

    mid_hip = _mean_present(lh, rh)                          # (T, 3), NaN if no hip at all
    trunk = neck - mid_hip                                   # (T, 3) mid-hip -> neck
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN medians -> NaN, handled
        scale = float(np.nanmedian(_norm(trunk)))
        if not (np.isfinite(scale) and scale > 0):
            scale = _TORSO_PER_SHOULDER * float(np.nanmedian(_norm(ls - rs)))
    if not (np.isfinite(scale) and scale > 0):
        warnings.warn(
            "posture_features: neither the torso (neck, hips) nor the shoulders are ever seen, "
            "so there is no body scale; all 15 features are 0", PostureWarning, stacklevel=2)
        return np.zeros((T, N_FEATURES), np.float32)

    axis = trunk / np.maximum(_norm(trunk), _EPS)[:, None]   # (T, 3) unit trunk direction
    up = np.array([0.0, -1.0, 0.0])                          # image y points down
    head = nose - neck
    along = (head * axis).sum(axis=-1)                       # (T,)
    perp = head - along[:, None] * axis
    shoulder_axis = ls - rs
    shoulder_axis = shoulder_axis / np.maximum(_norm(shoulder_axis), _EPS)[:, None]
    centre = _mean_present(neck, mid_hip)                    # (T, 3) trunk centre
    limb_speeds = [_speed(w - centre, fps) for w in (lw, rw, la, ra)]

    f = np.empty((T, N_FEATURES))
    f[:, 0] = _angle(trunk, up[None])
    f[:, 1] = (neck[:, 0] - mid_hip[:, 0]) / scale
    f[:, 2] = along / scale
    f[:, 3] = _norm(perp) / scale
    f[:, 4] = _norm(ls - rs) / scale
    f[:, 5] = (ls[:, 1] - rs[:, 1]) / scale
    f[:, 6] = _angle(ls - le, lw - le)
    f[:, 7] = _angle(rs - re, rw - re)
    f[:, 8] = _norm(lw - rw) / scale
    f[:, 9] = 0.5 * (_norm(lw - rs) + _norm(rw - ls)) / scale
    f[:, 10] = np.fmin(_norm(lw - nose), _norm(rw - nose)) / scale     # fmin: the wrist seen
    f[:, 11] = _mean_present(_angle(neck - lh, lk - lh), _angle(neck - rh, rk - rh))
    f[:, 12] = ((la - ra) * shoulder_axis).sum(axis=-1) / scale
    f[:, 13] = _speed(centre, fps) / scale
    f[:, 14] = _mean_present(*limb_speeds) / scale

    # After filling, a NaN can only come from a joint absent in every frame: whole columns.
    bad = ~np.isfinite(f).all(axis=0)
    if bad.any():
        f[:, bad] = 0.0
        warnings.warn(
            f"posture_features: joint(s) {', '.join(np.asarray(JOINTS)[absent])} missing in every "
            f"frame; feature(s) {', '.join(np.asarray(FEATURE_NAMES)[bad])} set to 0",
            PostureWarning, stacklevel=2)
    return f.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# fixed-length sequences

def fit_length(
    seq: np.ndarray, seq_length: int, *, mode: str = "centre",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(T, F) -> (seq_length, F): the one padding/cropping policy for posture sequences.

    Shorter: the last frame is repeated (edge padding -- a held pose, not a jump to zeros).
    Longer: ``mode="random"`` crops a random window (training; needs ``rng``), ``mode="centre"``
    the middle one (evaluation; ``"center"`` also accepted), ``mode="start"`` the first one.
    Equal: returned unchanged (as a copy).
    """
    a = np.asarray(seq)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"a sequence is a non-empty (T, F) array, not shape {a.shape}")
    if int(seq_length) < 1:
        raise ValueError(f"seq_length must be >= 1, not {seq_length}")
    n, T = int(seq_length), a.shape[0]
    if T < n:
        return np.concatenate([a, np.repeat(a[-1:], n - T, axis=0)], axis=0)
    if mode == "random":
        if rng is None:
            raise ValueError("fit_length(mode='random') needs rng, a numpy Generator")
        start = int(rng.integers(0, T - n + 1))
    elif mode in ("centre", "center"):
        start = (T - n) // 2
    elif mode == "start":
        start = 0
    else:
        raise ValueError(f"mode must be 'random', 'centre' or 'start', not {mode!r}")
    return a[start:start + n].copy()


def windows(seq: np.ndarray, window_size: int, stride: int) -> np.ndarray:
    """Cut a long (T, F) sequence into windows (n, window_size, F), a new one every ``stride``
    frames (:func:`emoexp.data.windows.window_starts`).

    If the last window stops short of the end, one more window ending at the last frame is
    added, so no frame is dropped. A sequence shorter than ``window_size`` gives one window,
    edge-padded like :func:`fit_length`.
    """
    a = np.asarray(seq)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"a sequence is a non-empty (T, F) array, not shape {a.shape}")
    n, T = int(window_size), a.shape[0]
    starts = window_starts(T, n, stride, cover_end=True)   # checks window_size, stride >= 1
    if T <= n:
        return fit_length(a, n)[None]
    return np.stack([a[s:s + n] for s in starts])


# ---------------------------------------------------------------------------------------------
# the layout: reading

SIDES = ("train", "val", "test")


@dataclass
class PostureData:
    """A posture dataset in memory, per side ("train", "val" and, if present, "test").

    ``sequences[side][i]`` is (T_i, n_features) float32, ``labels[side][head]`` (N,) int64 codes
    into ``heads[head]``, ``ids[side][i]`` the sequence's name (its file stem). ``skipped`` lists
    (path, why) for bad files passed over in skip mode and ``.npy`` files without a label.
    """

    sequences: dict[str, list[np.ndarray]]
    labels: dict[str, dict[str, np.ndarray]]
    ids: dict[str, list[str]]
    heads: dict[str, list[str]]
    n_features: int
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sides(self) -> list[str]:
        return list(self.sequences)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def _check_heads(heads: Any, path: Path | None) -> dict[str, list[str]]:
    """Validate {head: [class names]}; DataError naming ``path`` (or ValueError if none)."""
    def fail(problem: str) -> None:
        if path is None:
            raise ValueError(f"heads: {problem}")
        raise DataError(path, problem)

    if not isinstance(heads, Mapping) or not heads:
        fail('must be a non-empty object {"head": ["class0", "class1", ...]}')
    out: dict[str, list[str]] = {}
    for name, classes in heads.items():
        if not isinstance(name, str) or not name:
            fail(f"head name {name!r} is not a non-empty string")
        if (isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 1
                or not all(isinstance(c, str) and c for c in classes)):
            fail(f"head {name!r} must list its class names as non-empty strings, not {classes!r}")
        if len(set(classes)) != len(classes):
            fail(f"head {name!r} lists a class name twice: {list(classes)}")
        out[name] = list(classes)
    return out


def _is_code(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _interpolate_nan_columns(a: np.ndarray) -> np.ndarray:
    """Fill NaNs of each column of (T, F) linearly over time (edges: nearest valid)."""
    t = np.arange(a.shape[0], dtype=np.float64)
    for c in np.flatnonzero(np.isnan(a).any(axis=0)):
        good = ~np.isnan(a[:, c])
        a[:, c] = np.interp(t, t[good], a[good, c])
    return a


def read_sequence(path: str | os.PathLike) -> np.ndarray:
    """One ``.npy`` sequence -> (T, F) float32; DataError(path, why) if it is unusable.

    Plain numeric arrays only (``allow_pickle=False``); 2-D, at least one frame and one feature,
    no infinities. NaN policy: a column with NaN in fewer than half of its frames is
    interpolated linearly over time (edges: nearest valid value); a column NaN in half its
    frames or more makes the file bad.
    """
    path = Path(path)
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(path, "holds Python objects (needs pickle); only plain numeric .npy arrays are read") from None
        raise DataError(path, f"is not a readable .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(path, f"cannot be read as a .npy file ({e})") from None
    if not isinstance(a, np.ndarray):
        a.close()
        raise DataError(path, "is an .npz archive, not a single .npy array")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(path, f"holds {a.dtype} values; a sequence holds real numbers")
    if a.ndim != 2:
        raise DataError(path, f"has shape {a.shape}; a sequence is 2-D (frames, features)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(path, f"is empty (shape {a.shape})")
    a = a.astype(np.float64)
    if np.isinf(a).any():
        raise DataError(path, "holds infinite values")
    nan = np.isnan(a).sum(axis=0)                       # (F,)
    if nan.any():
        worst = int(np.argmax(nan))
        if 2 * nan[worst] >= a.shape[0]:
            raise DataError(
                path, f"feature column {worst} is NaN in {nan[worst]} of {a.shape[0]} frames; "
                "only columns NaN in fewer than half their frames are interpolated")
        a = _interpolate_nan_columns(a)
    return a.astype(np.float32)


def _resolve_heads(
    root: Path, raw: dict[str, dict[str, Any]], heads: dict[str, list[str]] | None
) -> dict[str, list[str]]:
    """The class names per head: given, else heads.json, else seed 001's, else inferred."""
    if heads is not None:
        return _check_heads(heads, None)
    heads_json = root / "heads.json"
    if heads_json.is_file():
        # the dataset's own declaration (written by the writer and the importers) wins
        return _check_heads(_read_json(heads_json), heads_json)
    order: list[str] = []
    for entries in raw.values():
        for entry in entries.values():
            if isinstance(entry, dict):
                order += [k for k in entry if k not in order]
    if set(order) == set(POSTURE_HEADS):
        return {h: list(c) for h, c in POSTURE_HEADS.items()}
    if not order:
        raise DataError(root, "its labels.json entries name no heads")
    # imported data without heads.json: codes only; class names are the codes as text
    inferred = {}
    for h in order:
        codes = [e[h] for entries in raw.values() for e in entries.values()
                 if isinstance(e, dict) and _is_code(e.get(h)) and e[h] >= 0]
        inferred[h] = [str(i) for i in range(max(codes, default=0) + 1)]
    log.info("%s: no heads.json; class names inferred from the codes: %s", root,
             {h: len(c) for h, c in inferred.items()})
    return inferred


def load_posture_dataset(
    root: str | os.PathLike, *, heads: dict[str, list[str]] | None = None,
    policy: BadFilePolicy | None = None,
) -> PostureData:
    """Read seed 001's layout (module docstring) into a :class:`PostureData`.

    ``train/`` and ``val/`` are required, ``test/`` is read if present. Heads: ``heads`` if
    given (entries may carry more heads, which are ignored), else ``DIR/heads.json``, else
    :data:`POSTURE_HEADS` when labels.json uses exactly its three heads, else ``["0", "1", ...]``
    up to the largest code seen.

    Bad input -> :class:`DataError` naming the file: a missing side folder, ``labels.json`` or
    ``sequences/``; labels.json that is not JSON or not ``{id: {head: code}}``. Per-entry and
    per-file problems go through ``policy`` (error: DataError; skip: recorded and passed over):
    an entry without its ``.npy``, a head missing from an entry, a non-integer or out-of-range
    code, an unreadable / non-2-D / empty / infinite / mostly-NaN sequence (see
    :func:`read_sequence` for the NaN policy), and a width that differs from the others (or
    is not 15 when the heads are :data:`POSTURE_HEADS`). ``.npy`` files without an entry in
    labels.json are logged and listed in ``skipped``.
    """
    policy = policy or BadFilePolicy()
    root = Path(root)
    if not root.exists():
        raise MissingDatasetError(root, "posture")
    if not root.is_dir():
        raise MissingDatasetError(root, "posture", "is not a folder")
    sides = [s for s in SIDES if s != "test" or (root / s).is_dir()]
    raw: dict[str, dict[str, Any]] = {}
    for side in sides:
        folder = root / side
        if not folder.is_dir():
            raise DataError(folder, f"is missing: a posture dataset has {', '.join(SIDES[:2])} "
                                    "folders, each with sequences/*.npy and labels.json")
        labels_path = folder / "labels.json"
        if not labels_path.is_file():
            raise DataError(labels_path, 'is missing: each side holds labels.json, {"seq_001": {"head": code, ...}, ...}')
        if not (folder / "sequences").is_dir():
            raise DataError(folder / "sequences", "is missing: the folder of .npy sequences (T, F)")
        entries = _read_json(labels_path)
        if not isinstance(entries, dict):
            raise DataError(labels_path, f'must be an object {{"seq_001": {{"head": code}}}}, not a JSON {type(entries).__name__}')
        if not entries:
            raise DataError(labels_path, "has no entries")
        raw[side] = entries
    heads = _resolve_heads(root, raw, heads)
    posture_heads = heads == POSTURE_HEADS

    loaded: dict[str, list[tuple[str, np.ndarray, dict[str, int], Path]]] = {}
    skipped_unlabelled: list[tuple[str, str]] = []
    for side in sides:
        labels_path = root / side / "labels.json"
        seq_dir = root / side / "sequences"
        items = []
        for sid in sorted(raw[side]):
            entry = raw[side][sid]
            if not isinstance(entry, dict):
                policy.bad(labels_path, f"entry {sid!r} must be an object {{head: code}}, not {entry!r}")
                continue
            if not sid or Path(sid).name != sid or sid in (".", ".."):
                policy.bad(labels_path, f"entry {sid!r} is not a plain file stem (the sequence is sequences/<id>.npy)")
                continue
            codes: dict[str, int] = {}
            problem = None
            for h, classes in heads.items():
                v = entry.get(h)
                if h not in entry:
                    problem = f"entry {sid!r} has no {h!r} label (heads: {', '.join(heads)})"
                elif not _is_code(v):
                    problem = f"entry {sid!r}: {h} code {v!r} is not an integer"
                elif not 0 <= v < len(classes):
                    problem = (f"entry {sid!r}: {h} code {v} is out of range 0..{len(classes) - 1} "
                               f"({', '.join(classes)})")
                if problem:
                    break
                codes[h] = int(v)
            if problem:
                policy.bad(labels_path, problem)
                continue
            path = seq_dir / f"{sid}.npy"
            if not path.is_file():
                policy.bad(path, f"is missing: {labels_path} has an entry {sid!r} but there is no such sequence file")
                continue
            try:
                seq = read_sequence(path)
            except DataError as e:
                policy.bad(path, e.problem)
                continue
            items.append((sid, seq, codes, path))
        loaded[side] = items
        labelled = {f"{sid}.npy" for sid in raw[side]}
        extra = sorted(p for p in seq_dir.glob("*.npy") if p.name not in labelled)
        if extra:
            log.warning("%s: %d .npy file(s) without an entry in labels.json are not used (%s%s)",
                        seq_dir, len(extra), ", ".join(p.name for p in extra[:3]),
                        ", ..." if len(extra) > 3 else "")
            skipped_unlabelled += [(str(p), f"no entry in {labels_path}") for p in extra]

    widths = Counter(seq.shape[1] for items in loaded.values() for _, seq, _, _ in items)
    if posture_heads:
        width, why = N_FEATURES, f"the {N_FEATURES} posture features (heads are seed 001's)"
    elif widths:
        width = widths.most_common(1)[0][0]
        why = f"the width of the other {widths[width]} sequence(s)"
    else:
        width, why = 0, ""
    out = PostureData({}, {}, {}, heads, width)
    for side in sides:
        keep = []
        for sid, seq, codes, path in loaded[side]:
            if seq.shape[1] != width:
                policy.bad(path, f"has {seq.shape[1]} features per frame; expected {width}, {why}")
                continue
            keep.append((sid, seq, codes))
        if not keep:
            raise DataError(root / side, "has no usable sequences")
        out.ids[side] = [sid for sid, _, _ in keep]
        out.sequences[side] = [seq for _, seq, _ in keep]
        out.labels[side] = {h: np.array([c[h] for _, _, c in keep], dtype=np.int64) for h in heads}
    out.skipped = list(policy.skipped) + skipped_unlabelled
    return out


# ---------------------------------------------------------------------------------------------
# the layout: writing

def write_posture_dataset(
    out: str | os.PathLike,
    sides: Mapping[str, Iterable[tuple[str, np.ndarray, Mapping[str, int]]]],
    heads: Mapping[str, Sequence[str]],
) -> Path:
    """Write seed 001's layout: ``out/heads.json`` and per side ``labels.json`` + ``sequences/``.

    ``sides`` maps "train" / "val" / "test" to ``(id, seq (T, F), {head: code})`` items; a side
    with no items is not written. Every file is written atomically (temporary file + rename);
    ``.npy`` files left in a written side's ``sequences/`` from an earlier write that are not
    among the new ids are removed, so the folder matches its labels.json. Sequences are stored
    as float32 and must be finite. Wrong input raises ValueError (a caller's bug, not a file's).
    """
    heads = _check_heads(heads, None)
    out = Path(out)
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        raise ValueError(f"sides must be among {', '.join(SIDES)}, not {', '.join(unknown)}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "heads.json", (json.dumps(heads, indent=1) + "\n").encode())
    for side, items in sides.items():
        items = list(items)
        if not items:
            continue
        folder = out / side / "sequences"
        folder.mkdir(parents=True, exist_ok=True)
        labels: dict[str, dict[str, int]] = {}
        for sid, seq, codes in items:
            if not isinstance(sid, str) or not sid or Path(sid).name != sid or sid.startswith("."):
                raise ValueError(f"{side}: sequence id {sid!r} must be a plain file stem")
            if sid in labels:
                raise ValueError(f"{side}: sequence id {sid!r} occurs twice")
            a = np.asarray(seq, dtype=np.float32)
            if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
                raise ValueError(f"{side}/{sid}: a sequence is a non-empty (T, F) array, not shape {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{side}/{sid}: the sequence holds NaN or infinite values")
            entry = {}
            for h, classes in heads.items():
                if h not in codes:
                    raise ValueError(f"{side}/{sid}: no code for head {h!r}")
                c = codes[h]
                if not isinstance(c, int | np.integer) or isinstance(c, bool) or not 0 <= int(c) < len(classes):
                    raise ValueError(f"{side}/{sid}: {h} code {c!r} is not an integer in 0..{len(classes) - 1}")
                entry[h] = int(c)
            atomic_save_npy(folder / f"{sid}.npy", a)
            labels[sid] = entry
        for stale in folder.glob("*.npy"):
            if stale.stem not in labels:
                stale.unlink()
        atomic_write_bytes(out / side / "labels.json", (json.dumps(labels, indent=1) + "\n").encode())
    return out
