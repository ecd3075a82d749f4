"""Synthetic posture sequences (seed 001's layout) and feature tables for classifier heads.

:func:`synth_posture_keypoints` animates a seated stick figure in the canonical joints of
:mod:`emoexp.data.posture`, with the class written into its geometry and motion:

* posture -- upright: straight trunk, hands resting on the thighs; slouched: trunk pitched
  forward, head forward and down, shoulders rounded, hips slid forward; open: arms raised away
  from the body, wrists far apart; closed: arms crossed (wrists at the opposite upper arm) or,
  in a third of the sequences, hands held together in front of the chest.
* stress -- calm: slow small sway and breathing, an occasional slow head turn; fidgeting: the
  calm motion plus fast (2-4 Hz) small periodic hand movements and often a bouncing knee;
  restless: large irregular trunk and arm movements and sudden position shifts;
  excessive_stillness: almost no motion, and less keypoint jitter than calm.
* trajectory -- stable: no drift; deteriorating: the posture drifts toward slouched and the
  movement fades over the sequence; improving: it starts slouched and straightens up.

Each sequence also varies the person (size, proportions, per body) and the camera (distance,
a small turn of the body and tilt of the camera, position in the image), adds keypoint noise and
sometimes drops a joint for a run of frames (NaN), so the features' interpolation is exercised.

:func:`synth_posture` writes the layout with the same :func:`posture_features` that reads
video, and :func:`synth_features` a feature table for the MLP classifier heads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from emoexp.data.io import atomic_write_bytes
from emoexp.data.posture import (
    _J,
    JOINTS,
    MEDIAPIPE33,
    MEDIAPIPE33_NAMES,
    MEDIAPIPE_NECK,
    N_JOINTS,
    POSTURE_HEADS,
    posture_features,
    write_posture_dataset,
)

_DEG = np.pi / 180.0


def _code(head: str, value: int | str) -> int:
    """A class given by code or by name -> its code in POSTURE_HEADS[head]."""
    classes = POSTURE_HEADS[head]
    if isinstance(value, str):
        if value not in classes:
            raise ValueError(f"{head} must be one of {', '.join(classes)}, not {value!r}")
        return classes.index(value)
    if not 0 <= int(value) < len(classes):
        raise ValueError(f"{head} code must be in 0..{len(classes) - 1}, not {value}")
    return int(value)


def random_body(rng: np.random.Generator) -> dict[str, float]:
    """One synthetic person's segment lengths in metres (size and proportions vary)."""
    s = rng.uniform(0.85, 1.15)                       # overall size
    return {
        "torso": 0.50 * s * rng.uniform(0.92, 1.08),  # mid-hip -> neck
        "shoulder": 0.19 * s * rng.uniform(0.90, 1.10),   # half shoulder width
        "hip": 0.10 * s * rng.uniform(0.90, 1.10),        # half hip width
        "upper_arm": 0.30 * s * rng.uniform(0.93, 1.07),
        "forearm": 0.27 * s * rng.uniform(0.93, 1.07),
        "thigh": 0.45 * s * rng.uniform(0.93, 1.07),
        "shin": 0.45 * s * rng.uniform(0.93, 1.07),
        "head": s * rng.uniform(0.92, 1.08),          # scales the head's points
    }


def _rot_x(a: np.ndarray) -> np.ndarray:
    """(T,) angles -> (T, 3, 3); +a pitches points above the pivot toward the camera (-z)."""
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_z(a: np.ndarray) -> np.ndarray:
    """(T,) angles -> (T, 3, 3); in-plane rotation (roll / camera tilt)."""
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _rot_y(a: np.ndarray) -> np.ndarray:
    """(T,) angles -> (T, 3, 3); turn about the vertical axis (yaw)."""
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _apply(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations applied to points (T, 3) or (T, k, 3)."""
    if p.ndim == 2:
        return np.einsum("tij,tj->ti", r, p)
    return np.einsum("tij,tkj->tki", r, p)


def _smooth_noise(rng: np.random.Generator, T: int, fps: float, cutoff_hz: float, k: int = 1) -> np.ndarray:
    """(T, k) low-pass noise (random walk-ish), unit standard deviation per column."""
    n = max(T, 2)
    spec = np.fft.rfft(rng.standard_normal((n, k)), axis=0)
    f = np.fft.rfftfreq(n, d=1.0 / fps)
    spec *= np.exp(-0.5 * (f / cutoff_hz) ** 2)[:, None]
    x = np.fft.irfft(spec, n=n, axis=0)[:T]
    x -= x.mean(axis=0)
    return x / np.maximum(x.std(axis=0), 1e-12)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def synth_posture_keypoints(
    rng: np.random.Generator, posture: int | str, stress: int | str, trajectory: int | str,
    T: int, fps: float, *, body: dict[str, float] | None = None, variety: float = 0.0,
    min_strength: float | None = None, pose_noise: float = 0.0,
) -> np.ndarray:
    """One animated stick figure -> canonical joints (T, J, 3) float32 in image units, NaN = missing.

    Classes by code or name (:data:`POSTURE_HEADS`). ``body`` (from :func:`random_body`) fixes the
    person; None draws one. Coordinates: x right, y down (pixels), z depth in the same unit,
    as a MediaPipe-like detector would report them.

    ``variety`` (0..1) is how differently people hold a posture. 0: one canonical way each (the
    figure above). Above 0, each posture is held the second way below with probability
    ``variety / 2`` -- upright with the hands forward on a desk; slouched leaning sideways onto
    one arm (left or right); open with the hands behind the head; closed with the hands clasped
    (a third of the closed sequences already are) -- at a strength drawn from
    [1 - 0.6 * variety, 1] (how far the slouch, the arms, the lean go), with the camera turned up
    to +-(15 + 25 * variety) degrees. Two ways per class and a mirrored lean are what a linear
    model on summary statistics cannot fold together.

    ``min_strength`` (0..1, or None) overrides the weakest strength drawn: each sequence holds its
    posture at a strength from [min_strength, 1] (0: as the rest pose, hands on the thighs,
    upright); None: 1 - 0.6 * variety when ``variety`` > 0, else full strength.

    ``pose_noise`` (>= 0) is how loosely a person sits in that moment, whatever the class: the
    slouch moves by N(0, 0.4 * pose_noise) (negative: leaning back) and each wrist's target and
    elbow direction by N(0, 0.15 * pose_noise) m per axis. Near 1 it is as large as the
    differences between the classes, so the classes overlap and no model separates them all.
    0 (the default here) draws nothing extra: the sequences are exactly as without the knob.
    """
    posture = _code("posture", posture)
    stress = _code("stress", stress)
    trajectory = _code("trajectory", trajectory)
    T = int(T)
    if T < 1 or not fps > 0:
        raise ValueError(f"T must be >= 1 and fps > 0, not {T}, {fps}")
    if not (min_strength is None or 0.0 <= min_strength <= 1.0) or not pose_noise >= 0:
        raise ValueError(f"min_strength must be in 0..1 (or None) and pose_noise >= 0, not {min_strength}, {pose_noise}")
    b = body if body is not None else random_body(rng)
    t = np.arange(T) / fps
    u = np.linspace(0.0, 1.0, T)
    progress = u * u * (3 - 2 * u)                    # smoothstep 0 -> 1 over the sequence

    # --- posture: slouch amount over time ------------------------------------------------
    base_slouch = {0: 0.0, 1: 1.0, 2: 0.05, 3: 0.25}[posture] + rng.uniform(-0.1, 0.1)
    strength, second_way, lean_side = 1.0, False, 1.0
    if variety or min_strength is not None:
        lo = 1.0 - 0.6 * variety if min_strength is None else float(min_strength)
        strength = rng.uniform(lo, 1.0)
        second_way = bool(rng.random() < variety / 2)
        lean_side = float(rng.choice([-1.0, 1.0]))
        if posture == 1:
            base_slouch = base_slouch * strength * (0.35 if second_way else 1.0)   # the sideways lean is the slouch
    drift = rng.uniform(0.7, 1.0)
    if pose_noise:
        base_slouch += rng.normal(0.0, 0.4 * pose_noise)
    slouch = np.full(T, base_slouch)                  # (T,)
    energy = np.ones(T)                               # motion amplitude multiplier
    if trajectory == 1:                               # deteriorating: sinks, movement fades
        slouch = slouch + drift * progress
        energy = 1.0 - 0.6 * progress
    elif trajectory == 2:                             # improving: starts slouched, straightens
        slouch = slouch + drift * (1.0 - progress)
        energy = 0.6 + 0.4 * progress

    # --- stress: motion time series ------------------------------------------------------
    sway_amp = {0: 1.5, 1: 1.2, 2: 2.5, 3: 0.15}[stress] * _DEG
    f_sway = rng.uniform(0.15, 0.4)
    ph = rng.uniform(0, 2 * np.pi, size=4)
    pitch = sway_amp * np.sin(2 * np.pi * f_sway * t + ph[0])
    roll = 0.7 * sway_amp * np.sin(2 * np.pi * f_sway * 0.8 * t + ph[1])
    if posture == 1 and second_way:                   # slouched sideways, onto one arm
        roll = roll + lean_side * 16 * _DEG * strength
    head_yaw = np.zeros(T)
    breath = {0: 0.004, 1: 0.004, 2: 0.006, 3: 0.0008}[stress] * np.sin(2 * np.pi * rng.uniform(0.2, 0.35) * t + ph[2])
    shift = np.zeros((T, 3))                          # whole-body translation (m)
    hand_offset = np.zeros((T, 2, 3))                 # (left, right) wrist offsets (m)
    knee_bounce = np.zeros((T, 2))                    # (left, right) knee lift (m)
    if stress == 0:
        head_yaw = 6 * _DEG * np.sin(2 * np.pi * rng.uniform(0.08, 0.2) * t + ph[3])
    elif stress == 1:                                 # fidgeting: fast small periodic movements
        f_hand = rng.uniform(2.0, 4.0)
        amp = rng.uniform(0.02, 0.04)
        direction = _unit(rng.normal(size=(2, 3)))
        hands = rng.choice([0, 1, 2])                 # left, right or both hands
        for side in (0, 1):
            if hands in (side, 2):
                hand_offset[:, side] = amp * np.sin(2 * np.pi * f_hand * t + rng.uniform(0, 2 * np.pi))[:, None] * direction[side]
        if rng.random() < 0.6:
            leg = rng.integers(0, 2)
            knee_bounce[:, leg] = rng.uniform(0.015, 0.03) * np.abs(np.sin(np.pi * rng.uniform(2.0, 4.0) * t))
    elif stress == 2:                                 # restless: large irregular movement, shifts
        walk = _smooth_noise(rng, T, fps, cutoff_hz=1.2, k=9)
        pitch = pitch + 5 * _DEG * walk[:, 0]
        roll = roll + 5 * _DEG * walk[:, 1]
        head_yaw = 12 * _DEG * walk[:, 2]
        hand_offset += 0.08 * walk[:, 3:9].reshape(T, 2, 3)
        for _ in range(rng.integers(1, 4)):           # sudden shifts of position, ~0.3 s each
            t0, dur = rng.uniform(0, t[-1] + 1e-9), 0.3
            step = np.clip((t - t0) / dur, 0, 1)
            shift += step[:, None] * np.array([rng.uniform(-0.12, 0.12), rng.uniform(-0.03, 0.03), rng.uniform(-0.06, 0.06)])
    pitch, roll, head_yaw = pitch * energy, roll * energy, head_yaw * energy
    hand_offset *= energy[:, None, None]
    knee_bounce *= energy[:, None]
    shift -= shift.mean(axis=0)

    # --- the trunk frame (origin mid-hip, before the trunk's rotation) -------------------------
    P = np.zeros((T, N_JOINTS, 3))
    torso, sh = b["torso"], b["shoulder"]
    neck = np.array([0.0, -torso, 0.0])
    round_ = np.clip(slouch, 0, None)[:, None]        # (T, 1) shoulder rounding
    for name, sign in (("left_shoulder", 1.0), ("right_shoulder", -1.0)):
        P[:, _J[name]] = neck + np.concatenate(
            [sign * sh * (1 - 0.15 * round_), 0.02 + 0.02 * round_, -0.06 * round_], axis=1)
    P[:, _J["neck"]] = neck
    P[:, [_J["left_shoulder"], _J["right_shoulder"]], 1] -= breath[:, None]
    # head: points relative to the neck, pitched forward with the slouch, turned by head_yaw
    hs = b["head"]
    head_pts = hs * np.array([
        [0.0, -0.20, -0.09],      # nose
        [-0.032, -0.235, -0.07],  # right eye (person's right = image left)
        [0.032, -0.235, -0.07],   # left eye
        [-0.075, -0.21, 0.0],     # right ear
        [0.075, -0.21, 0.0],      # left ear
    ])
    head_pitch = (5 + 28 * slouch) * _DEG + 0.5 * pitch
    r_head = _rot_x(head_pitch) @ _rot_y(head_yaw)
    head = _apply(r_head, np.broadcast_to(head_pts, (T, 5, 3))) + neck
    for k, name in enumerate(("nose", "right_eye", "left_eye", "right_ear", "left_ear")):
        P[:, _J[name]] = head[:, k]

    # arms: the elbow hangs in a direction per posture, the forearm points at a wrist target
    ua, fa = b["upper_arm"], b["forearm"]
    jitter = rng.uniform(-0.04, 0.04, size=(2, 3))
    if pose_noise:
        jitter = jitter + rng.normal(0.0, 0.15 * pose_noise, size=(2, 3))
    clasped = posture == 3 and (rng.random() < 1 / 3 or second_way)
    rest_dir, rest_target = np.array([0.15, 1.0, -0.25]), np.array([0.13, 0.0, -0.32])  # hands on the thighs
    for side, (name, sign) in enumerate((("left", 1.0), ("right", -1.0))):
        shoulder = P[:, _J[f"{name}_shoulder"]]
        if posture == 2 and second_way:   # open: hands behind the head, elbows out
            elbow_dir = np.array([sign * 0.95, -0.45, 0.15])
            target = np.array([sign * 0.09, -torso * 1.18, 0.06])
        elif posture == 2:        # open: arms out to the side, wrists far apart
            elbow_dir = np.array([sign * 0.85, 0.55, -0.2])
            target = np.array([sign * 0.62, -torso * 0.75, -0.25])
        elif posture == 0 and second_way:   # upright, hands forward on a desk
            elbow_dir = np.array([sign * 0.2, 0.9, -0.5])
            target = np.array([sign * 0.16, -torso * 0.3, -0.5])
        elif posture == 3 and not clasped:   # arms crossed: wrist at the opposite upper arm
            elbow_dir = np.array([sign * 0.15, 1.0, -0.55])
            target = np.array([-sign * (sh + 0.02), -torso * (0.62 if sign > 0 else 0.55), -0.16 - 0.03 * (sign < 0)])
        elif posture == 3:        # hands held together in front of the chest
            elbow_dir = np.array([sign * 0.2, 1.0, -0.5])
            target = np.array([sign * 0.03, -torso * 0.55, -0.30])
        else:                     # upright / slouched: hands resting on the thighs
            elbow_dir = np.array([sign * 0.15, 1.0, -0.25])
            target = np.array([sign * 0.13, 0.0, -0.32])
        if strength < 1.0 and posture in (2, 3):   # arms part of the way from the rest pose
            rest = rest_dir * [sign, 1, 1], rest_target * [sign, 1, 1]
            elbow_dir = rest[0] + strength * (elbow_dir - rest[0])
            target = rest[1] + strength * (target - rest[1])
        elbow = shoulder + ua * _unit(elbow_dir + jitter[side] * 0.5)
        wrist_target = target + jitter[side] + hand_offset[:, side]          # (T, 3)
        wrist = elbow + fa * _unit(wrist_target - elbow)
        P[:, _J[f"{name}_elbow"]] = elbow
        P[:, _J[f"{name}_wrist"]] = wrist

    # rotate the upper body about the mid-hip: forward pitch grows with the slouch
    trunk_pitch = (2 + 24 * slouch) * _DEG + pitch
    r_trunk = _rot_z(roll) @ _rot_x(trunk_pitch)
    upper = [_J[n] for n in JOINTS if not any(k in n for k in ("hip", "knee", "ankle"))]
    P[:, upper] = _apply(r_trunk, P[:, upper])

    # legs (not rotated with the trunk): seated, thighs toward the camera, shins down
    spread = rng.uniform(0.02, 0.08)
    slide = 0.08 * np.clip(slouch, 0, None)           # hips slide forward when slouching
    for side, (name, sign) in enumerate((("left", 1.0), ("right", -1.0))):
        hip = np.array([sign * b["hip"], 0.0, 0.0])
        P[:, _J[f"{name}_hip"]] = hip
        knee = hip + np.array([sign * spread, 0.04, -b["thigh"]])
        knee = knee + np.stack([np.zeros(T), -knee_bounce[:, side], -slide], axis=1)
        P[:, _J[f"{name}_knee"]] = knee
        P[:, _J[f"{name}_ankle"]] = knee + np.array([sign * 0.02, b["shin"], 0.03])
    P[:, [_J["left_hip"], _J["right_hip"]], 2] -= slide[:, None] * 0.5

    # --- person in the room, camera ---------------------------------------------------------
    P += shift[:, None]
    yaw = rng.uniform(-15, 15) * (1.0 + 25.0 / 15.0 * variety) * _DEG
    tilt = rng.uniform(-4, 4) * _DEG
    cam = _rot_z(np.full(T, tilt)) @ _rot_y(np.full(T, yaw))
    P = _apply(cam, P)
    noise = 0.0012 if stress == 3 else 0.003          # metres of keypoint jitter
    P += rng.normal(0.0, noise, size=P.shape)
    px_per_m = rng.uniform(180, 420)                  # camera distance
    P *= px_per_m
    P[..., 0] += rng.uniform(150, 490)
    P[..., 1] += rng.uniform(200, 360)

    # occasional detector drop-outs: a joint missing for a run of frames
    if T > 3 and rng.random() < 0.35:
        for _ in range(rng.integers(1, 3)):
            j = rng.integers(0, N_JOINTS)
            n = rng.integers(1, max(2, T // 3))
            s0 = rng.integers(0, T - n + 1)
            P[s0:s0 + n, j] = np.nan
    return P.astype(np.float32)


def to_mediapipe33(joints: np.ndarray) -> np.ndarray:
    """Canonical joints (T, J, 3) -> MediaPipe-like landmarks (T, 33, 3), for tests and examples.

    The 17 shared joints go to their MediaPipe indices; the others (eye corners, mouth, hands,
    heels, toes) are placed next to the nearest canonical joint. The neck is dropped (MediaPipe
    has none; :func:`canonical_from_mediapipe` rebuilds it from the shoulders).
    """
    x = np.asarray(joints, dtype=np.float64)
    out = np.zeros((x.shape[0], len(MEDIAPIPE33_NAMES), 3))
    for name, k in MEDIAPIPE33.items():
        out[:, k] = x[:, _J[name]]
    near = {
        "left_eye_inner": ("left_eye", (-0.3, 0, 0)), "left_eye_outer": ("left_eye", (0.3, 0, 0)),
        "right_eye_inner": ("right_eye", (0.3, 0, 0)), "right_eye_outer": ("right_eye", (-0.3, 0, 0)),
        "mouth_left": ("nose", (0.2, 0.3, 0)), "mouth_right": ("nose", (-0.2, 0.3, 0)),
        "left_pinky": ("left_wrist", (0.1, 0.6, 0)), "right_pinky": ("right_wrist", (-0.1, 0.6, 0)),
        "left_index": ("left_wrist", (0.0, 0.7, 0)), "right_index": ("right_wrist", (0.0, 0.7, 0)),
        "left_thumb": ("left_wrist", (-0.2, 0.4, 0)), "right_thumb": ("right_wrist", (0.2, 0.4, 0)),
        "left_heel": ("left_ankle", (0, 0.4, 0.3)), "right_heel": ("right_ankle", (0, 0.4, 0.3)),
        "left_foot_index": ("left_ankle", (0, 0.5, -1.0)), "right_foot_index": ("right_ankle", (0, 0.5, -1.0)),
    }
    # offsets in units of a tenth of the shoulder width, so they scale with the figure
    a, b = MEDIAPIPE_NECK
    unit = 0.1 * np.linalg.norm(out[:, a] - out[:, b], axis=-1, keepdims=True)   # (T, 1)
    for name, (ref, off) in near.items():
        out[:, MEDIAPIPE33_NAMES.index(name)] = x[:, _J[ref]] + unit * np.asarray(off)
    return out


def _balanced_labels(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """(n,) codes per head, each class as often as possible (so all appear when n >= classes)."""
    return {h: rng.permutation(np.resize(np.arange(len(c)), n)) for h, c in POSTURE_HEADS.items()}


def _parse_mapping(text: str, what: str) -> list[tuple[str, str]]:
    """``"a:1,b:2"`` (the CLI's ``--set key=a:1,b:2``) -> [("a", "1"), ("b", "2")]."""
    pairs = []
    for item in text.split(","):
        k, sep, v = item.partition(":")
        if not sep or not k.strip() or not v.strip():
            raise ValueError(f"{what} must look like {'train:240,val:60' if what == 'n_per_side' else 'head:a/b/c,other:x/y'}, not {text!r}")
        pairs.append((k.strip(), v.strip()))
    return pairs


def synth_posture(
    out: str | os.PathLike, *, subjects: int = 12, seed: int = 0,
    n_per_side: dict[str, int] | str | None = None, seq_length: int = 60, fps: float = 30.0,
    variety: float = 1.0, min_strength: float | None = None, pose_noise: float = 1.2,
) -> Path:
    """Write seed 001's posture layout with :data:`POSTURE_HEADS` labels; returns ``out``.

    ``n_per_side`` sequences per side (default train 1920, val 240, test 0: no test side), each
    ``seq_length`` frames of the 15 features of :func:`posture_features` computed from
    :func:`synth_posture_keypoints` at ``fps``. Each head's classes are balanced on every side,
    and drawn independently of the other heads. ``subjects`` is the number of distinct
    synthetic bodies per side; every side has bodies of its own, so val/test people are never
    seen in training (a subject split). From the command line ``n_per_side`` is a string,
    ``--set n_per_side=train:240,val:60,test:30``.

    ``variety``, ``min_strength`` and ``pose_noise`` go to :func:`synth_posture_keypoints`.
    The defaults (12 bodies per side, 1920 / 240 sequences, variety 1.0, pose_noise 1.2) are
    calibrated (benchmarks/bench_calibration.py): the classes overlap, so the classical
    baseline (sequence statistics + logistic regression) scores a mid-range posture macro-F1
    (about 0.7) and train_posture's default model reaches about the same in its 8-epoch smoke
    run, at 60 optimizer steps per epoch at its default batch of 32. ``variety=0,
    pose_noise=0, subjects=4, n_per_side=train:240,val:60`` gives the old, easy set (a linear
    model scores 1.0 on it).
    """
    sizes = {"train": 1920, "val": 240, "test": 0}
    if isinstance(n_per_side, str):
        sizes.update({k: int(v) for k, v in _parse_mapping(n_per_side, "n_per_side")})
    elif n_per_side is not None:
        sizes = dict(n_per_side)
    unknown = set(sizes) - {"train", "val", "test"}
    if unknown:
        raise ValueError(f"n_per_side: sides are train, val and test, not {', '.join(sorted(unknown))}")
    smallest = max(len(c) for c in POSTURE_HEADS.values())
    for side, n in sizes.items():
        if n and n < smallest:
            raise ValueError(f"n_per_side[{side!r}] = {n}: need >= {smallest} so that every class appears")
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1, not {subjects}")
    sides = {}
    for k, side in enumerate(("train", "val", "test")):
        n = int(sizes.get(side, 0))
        if not n:
            continue
        rng = np.random.default_rng([seed, k])
        bodies = [random_body(np.random.default_rng([seed, k, 1000 + s])) for s in range(subjects)]
        labels = _balanced_labels(rng, n)
        width = max(3, len(str(n)))
        items = []
        for i in range(n):
            codes = {h: int(labels[h][i]) for h in POSTURE_HEADS}
            joints = synth_posture_keypoints(rng, codes["posture"], codes["stress"], codes["trajectory"],
                                             seq_length, fps, body=bodies[i % subjects], variety=variety,
                                             min_strength=min_strength, pose_noise=pose_noise)
            items.append((f"seq_{i + 1:0{width}d}", posture_features(joints, fps), codes))
        sides[side] = items
    return write_posture_dataset(out, sides, POSTURE_HEADS)


FEATURE_HEADS_DEFAULT: dict[str, list[str]] = {
    "depression": ["none", "mild", "severe"],
    "anxiety": ["low", "high"],
}


def synth_features(
    out: str | os.PathLike, *, subjects: int = 4, seed: int = 0, n: int = 2000,
    n_features: int = 32, heads: dict[str, list[str]] | str | None = None,
    signal_columns: int = 3, step: float = 1.0, ring: float = 2.0,
) -> Path:
    """A feature table for classifier heads: ``features.csv``, ``labels.json``, ``heads.json``.

    * ``features.csv``: a ``sample_id`` column (``s01_0001``: subject, sample) and ``n_features``
      float columns ``f00, f01, ...``; one row per sample.
    * ``labels.json``: ``{sample_id: {head: code}}``; ``heads.json``: ``{head: [class names]}``
      (default :data:`FEATURE_HEADS_DEFAULT`).

    Each head owns ``signal_columns`` columns (disjoint, at shuffled positions) where its class
    shifts the mean in steps of ``step`` noise std along a random direction (a linear cue), and,
    with ``ring`` > 0, two more columns where the K classes sit on a circle of radius ``ring``
    (noise std 1), each class at two opposite points of 2K evenly spaced ones: every class has
    the same mean there, so only a non-linear model reads that cue. The other columns are noise. ``subjects`` persons each add their own offset to every column
    (N(0, 0.3)), as real per-person feature drift does. CSV only (no parquet): readable
    anywhere, and small at this size. From the command line ``heads`` is a string,
    ``--set heads=depression:none/mild/severe,anxiety:low/high``.
    """
    if isinstance(heads, str):
        heads = {h: v.split("/") for h, v in _parse_mapping(heads, "heads")}
    heads = {h: list(c) for h, c in (FEATURE_HEADS_DEFAULT if heads is None else heads).items()}
    if not heads or any(len(c) < 2 for c in heads.values()):
        raise ValueError(f"heads must map each head to >= 2 class names, not {heads}")
    per_head = signal_columns + (2 if ring else 0)
    if len(heads) * per_head > n_features:
        raise ValueError(f"{len(heads)} heads x {per_head} signal columns do not fit in {n_features} features")
    if n < max(len(c) for c in heads.values()) or subjects < 1:
        raise ValueError(f"need n >= the largest class count and subjects >= 1, not n={n}, subjects={subjects}")
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = rng.standard_normal((n, n_features))                                  # (n, F)
    subject = np.arange(n) % subjects
    x += rng.normal(0.0, 0.3, size=(subjects, n_features))[subject]
    cols = rng.permutation(n_features)
    codes = {}
    for k, (h, classes) in enumerate(heads.items()):
        c = rng.permutation(np.resize(np.arange(len(classes)), n))             # balanced
        mine = cols[k * signal_columns:(k + 1) * signal_columns]
        direction = _unit(rng.normal(size=signal_columns)) * np.sqrt(signal_columns)
        # class k sits k steps along the direction, centred: ordinal classes stay ordered
        x[:, mine] += step * (c - (len(classes) - 1) / 2)[:, None] * direction[None]
        if ring:
            k_ = len(classes)
            pair = cols[len(heads) * signal_columns + 2 * k:len(heads) * signal_columns + 2 * k + 2]
            point = c + k_ * rng.integers(0, 2, size=n)                      # one of the class's two points
            angle = np.pi * point / k_ + rng.uniform(0, np.pi)
            x[:, pair] += ring * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        codes[h] = c
    width = max(4, len(str(n)))
    ids = [f"s{subject[i] + 1:02d}_{i + 1:0{width}d}" for i in range(n)]
    names = [f"f{j:02d}" for j in range(n_features)]
    lines = ["sample_id," + ",".join(names)]
    lines += [sid + "," + ",".join(f"{v:.6g}" for v in row) for sid, row in zip(ids, x)]
    atomic_write_bytes(out / "features.csv", ("\n".join(lines) + "\n").encode())
    labels = {sid: {h: int(codes[h][i]) for h in heads} for i, sid in enumerate(ids)}
    atomic_write_bytes(out / "labels.json", (json.dumps(labels, indent=1) + "\n").encode())
    atomic_write_bytes(out / "heads.json", (json.dumps(heads, indent=1) + "\n").encode())
    return out
