"""Drawn cartoon faces whose expression depends on the class, in the FER2013 / AffectNet layouts.

Every face is drawn with OpenCV in face-local coordinates ``(u, v)``: ``u`` runs -1..1 across
the face oval (left to right in the image), ``v`` -1..1 from the top of the head to the chin.
The expression moves a few parts, as in the facial action units a human coder would look for:

=========  ===========  ===========================  =====================================
class      eyes         brows                        mouth
=========  ===========  ===========================  =====================================
neutral    normal       level                        flat line
happy      a bit narrow level, a bit raised          corners up, often open with teeth
sad        a bit narrow inner ends up                corners down
surprise   wide open    high, arched                 open round "O"
fear       wide open    raised, inner ends up        stretched wide, open, wavy lips
anger      narrow       lowered, inner ends down     short, pressed, thick; frown crease
disgust    narrow       lowered                      one side of the upper lip raised; nose wrinkles
contempt   normal       level                        one corner raised (smirk)
=========  ===========  ===========================  =====================================

Identity (skin tone, hair, proportions), pose (position, scale, in-plane rotation), lighting,
background and noise vary per image, so the class is in the expression only. :func:`draw_face`
at its defaults draws a tidy, frontal set (EAV's video frames and the tests use it); the dataset
generators :func:`synth_fer2013` and :func:`synth_affectnet` spread pose (``pose``) and identity
(``identity``) much wider, like an in-the-wild set: the calibration of ``benchmarks/
bench_calibration.py`` puts the HOG + logistic regression baseline mid-range on their defaults
(validation macro-F1 about 0.56, not ~0.98), a set a pose-invariant CNN does better on. The
faces carry
what OpenCV's Haar frontal-face cascade looks for (dark brows and eye sockets above lighter
cheeks, a lit nose bridge between the eyes, shaded sides), so a face detector finds them in a
larger frame.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from emoexp.data.faces import canonical_class

# Canonical class names (the reader's names); the generators write the datasets' own folder names.
FACE_EMOTIONS = ["neutral", "happy", "sad", "surprise", "fear", "anger", "disgust", "contempt"]

# FER2013: CSV codes (DATASETS.md section 5) and the Kaggle folder names
FER2013_CODES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
# relative class frequencies of the real training set (3995 angry ... 436 disgust), so that
# balancing matters on the synthetic set too
FER2013_SHARES = {
    "angry": 0.56,
    "disgust": 0.15,
    "fear": 0.57,
    "happy": 1.0,
    "neutral": 0.69,
    "sad": 0.67,
    "surprise": 0.44,
}
AFFECTNET_FOLDERS = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
DEFAULT_VIDEO_SEGMENTS = [("neutral", 2.0), ("happy", 2.0), ("sad", 2.0), ("surprise", 2.0)]


def canonical_emotion(name: str) -> str:
    """``"Angry"`` -> ``"anger"``; ValueError naming the known names if ``name`` is none of them."""
    key = canonical_class(name)  # the readers' one table of spellings
    if key not in FACE_EMOTIONS:
        raise ValueError(f"unknown emotion {name!r}; known: {', '.join(FACE_EMOTIONS)}")
    return key


@dataclass(frozen=True)
class _Expression:
    """How far each part moves from the neutral face (lengths in face half-heights)."""

    eye_open: float = 1.0  # eye opening, x neutral
    brow_raise: float = 0.0  # whole brow up (+) / down (-)
    brow_tilt: float = 0.0  # inner end up (+: sad, fear) / down (-: anger)
    brow_arch: float = 0.0  # extra arch in the middle (surprise)
    mouth_curve: float = 0.0  # corners up (+: smile) / down (-: frown)
    mouth_open: float = 0.0  # opening height
    mouth_width: float = 1.0  # x neutral width
    mouth_shape: str = "line"  # line | smile | o | wide | tight | sneer | smirk
    lip_raise: float = 0.0  # one-sided lift: upper lip (disgust) or lip corner (contempt)
    wrinkle: float = 0.0  # frown crease (anger) / nose wrinkles (disgust), 0..1


_NEUTRAL = _Expression()
_EXPRESSIONS = {
    "neutral": _NEUTRAL,
    "happy": _Expression(
        eye_open=0.72,
        brow_raise=0.02,
        mouth_curve=0.11,
        mouth_open=0.12,
        mouth_width=1.25,
        mouth_shape="smile",
    ),
    "sad": _Expression(
        eye_open=0.8, brow_tilt=0.09, brow_raise=-0.01, mouth_curve=-0.09, mouth_width=0.9
    ),
    "surprise": _Expression(
        eye_open=1.3,
        brow_raise=0.1,
        brow_arch=0.05,
        mouth_open=0.15,
        mouth_width=0.5,
        mouth_shape="o",
    ),
    "fear": _Expression(
        eye_open=1.5,
        brow_raise=0.06,
        brow_tilt=0.07,
        mouth_curve=-0.04,
        mouth_open=0.09,
        mouth_width=1.3,
        mouth_shape="wide",
    ),
    "anger": _Expression(
        eye_open=0.55,
        brow_raise=-0.05,
        brow_tilt=-0.11,
        mouth_curve=-0.015,
        mouth_width=0.78,
        mouth_shape="tight",
        wrinkle=1.0,
    ),
    "disgust": _Expression(
        eye_open=0.62,
        brow_raise=-0.03,
        brow_tilt=-0.04,
        mouth_curve=-0.04,
        mouth_open=0.05,
        lip_raise=0.09,
        mouth_shape="sneer",
        wrinkle=1.0,
    ),
    "contempt": _Expression(eye_open=0.9, lip_raise=0.1, mouth_shape="smirk"),
}
_NUMERIC = (
    "eye_open",
    "brow_raise",
    "brow_tilt",
    "brow_arch",
    "mouth_curve",
    "mouth_open",
    "mouth_width",
    "lip_raise",
    "wrinkle",
)


def _expression(emotion: str, intensity: float, rng: np.random.Generator | None) -> _Expression:
    """The class's expression scaled by ``intensity`` (0 = neutral), with +-15% per-image jitter."""
    e = _EXPRESSIONS[canonical_emotion(emotion)]
    values = {}
    for k in _NUMERIC:
        n, x = getattr(_NEUTRAL, k), getattr(e, k)
        jitter = rng.uniform(0.85, 1.15) if rng is not None else 1.0
        values[k] = n + intensity * (x - n) * jitter
    return replace(e, **values)


# skin tones (RGB) from light to dark; each face blends two neighbours and jitters
_SKIN = np.array(
    [
        [241, 206, 180],
        [226, 185, 152],
        [205, 160, 120],
        [176, 128, 92],
        [141, 98, 68],
        [105, 72, 50],
    ],
    dtype=np.float32,
)
_HAIR = np.array(
    [[25, 20, 18], [55, 38, 28], [95, 65, 40], [150, 110, 70], [200, 170, 120], [120, 120, 120]],
    dtype=np.float32,
)


@dataclass
class _Style:
    """Who the face belongs to: fixed across the frames of a video, drawn anew per image."""

    skin: np.ndarray
    hair: np.ndarray
    hair_style: int  # 0 short, 1 long (falls behind the face), 2 cropped
    hairline: float  # v of the hairline at the centre
    iris: np.ndarray
    clothes: np.ndarray
    aspect: float  # face half-height / half-width
    eye_u: float  # eye centre, u (mirrored)
    eye_v: float
    mouth_v: float
    brow_thick: float
    happy_open: bool  # a happy face shows teeth (or a closed smile)
    side: int  # which side a one-sided expression lifts (+1 right, -1 left)


def _spread(x: float, centre: float, k: float) -> float:
    """``x`` drawn around ``centre`` with its spread scaled by ``k`` (1: as drawn)."""
    return float(x) if k == 1.0 else float(centre + (x - centre) * k)


def _sample_style(rng: np.random.Generator, identity: float = 1.0) -> _Style:
    """Who the face belongs to; ``identity`` scales how far the proportions (face shape, where
    the eyes and mouth sit, brow thickness) spread around the average face (1: the tidy set)."""
    k = float(identity)
    i = rng.uniform(0, len(_SKIN) - 1)
    lo = int(i)
    skin = _SKIN[lo] + (i - lo) * (_SKIN[min(lo + 1, len(_SKIN) - 1)] - _SKIN[lo])
    skin = skin * rng.uniform(0.94, 1.06, size=3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
    return _Style(
        skin=np.clip(skin, 0, 255).astype(np.float32),
        hair=np.clip(hair, 0, 255).astype(np.float32),
        hair_style=int(rng.integers(3)),
        hairline=float(rng.uniform(-0.7, -0.56)),
        iris=rng.uniform([15, 15, 10], [75, 80, 95]).astype(
            np.float32
        ),  # dark: eyes read dark in grey
        clothes=rng.uniform(20, 235, size=3).astype(np.float32),
        aspect=_spread(rng.uniform(1.2, 1.34), 1.27, k),
        eye_u=_spread(rng.uniform(0.34, 0.4), 0.37, k),
        eye_v=_spread(rng.uniform(-0.16, -0.08), -0.12, k),
        mouth_v=_spread(rng.uniform(0.46, 0.54), 0.5, k),
        brow_thick=max(0.02, _spread(rng.uniform(0.045, 0.07), 0.0575, k)),
        happy_open=bool(rng.random() < 0.6),
        side=int(rng.choice([-1, 1])),
    )


@dataclass
class _Pose:
    cx: float  # face centre, pixels of the working canvas
    cy: float
    a: float  # face half-width, pixels
    angle: float  # in-plane rotation, radians


class _Face:
    """Maps face-local (u, v) to canvas pixels for one pose."""

    def __init__(self, pose: _Pose, style: _Style):
        self.p, self.s = pose, style
        self.a, self.b = pose.a, pose.a * style.aspect
        self.c, self.sn = np.cos(pose.angle), np.sin(pose.angle)

    def xy(self, u, v) -> np.ndarray:
        """(n,) u, v -> (n, 2) int32 pixel coordinates."""
        u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        au, bv = self.a * u, self.b * v
        x = self.p.cx + au * self.c - bv * self.sn
        y = self.p.cy + au * self.sn + bv * self.c
        return np.stack([x, y], axis=-1).round().astype(np.int32)

    def uv_grid(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Face-local coordinates of every canvas pixel, each (h, w) float32."""
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = x - self.p.cx, y - self.p.cy
        u = (dx * self.c + dy * self.sn) / self.a
        v = (-dx * self.sn + dy * self.c) / self.b
        return u, v

    def oval(self, u0: float, v0: float, ru: float, rv: float, n: int = 40) -> np.ndarray:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return self.xy(u0 + ru * np.cos(t), v0 + rv * np.sin(t))

    def px(self, length_v: float) -> int:
        """A length in face half-heights -> pixels (line thickness), at least 1."""
        return max(1, int(round(length_v * self.b)))


def _blob(u: np.ndarray, v: np.ndarray, u0: float, v0: float, ru: float, rv: float) -> np.ndarray:
    """Gaussian bump (h, w) centred on (u0, v0) with radii (ru, rv)."""
    return np.exp(-(((u - u0) / ru) ** 2 + ((v - v0) / rv) ** 2))


def _shading(f: _Face, e: _Expression, h: int, w: int, step: int = 2) -> np.ndarray:
    """Multiplicative light/shadow map (h, w) float32: roundness, eye sockets, lit nose and cheeks.

    Smooth, so computed on a ``step``-times coarser grid and upsampled (the bumps cost most of a
    face's drawing time at full resolution).
    """
    import cv2

    s = f.s
    # a coarse pixel i covers full pixels step*i .. step*i + step-1 (centre step*i + (step-1)/2)
    off = (step - 1) / 2
    coarse = _Face(_Pose((f.p.cx - off) / step, (f.p.cy - off) / step, f.p.a / step, f.p.angle), s)
    u, v = coarse.uv_grid(-(-h // step), -(-w // step))
    m = np.ones_like(u)

    def shade(weight: np.ndarray, factor: float) -> None:
        m[:] *= 1.0 - weight + weight * factor

    r2 = u**2 + v**2
    # roundness: the face darkens towards its edges, the chin and under it
    shade((r2 < 1.0) * np.clip(r2, 0.0, 1.0) ** 1.5, 0.62)
    shade(_blob(u, v, 0.0, 0.95, 0.5, 0.12), 0.75)
    # eye sockets and the shadow under the brows: the dark band a face detector keys on
    for side in (-1, 1):
        shade(_blob(u, v, side * s.eye_u, s.eye_v - 0.04, 0.26, 0.13), 0.62)
    # lit forehead, nose bridge and cheeks
    shade(_blob(u, v, 0.0, -0.42, 0.5, 0.16), 1.12)
    shade(_blob(u, v, 0.0, 0.02, 0.09, 0.22), 1.15)
    for side in (-1, 1):
        shade(_blob(u, v, side * 0.45, 0.2, 0.22, 0.14), 1.08)
    # nose: a shadow down one side, under the tip
    shade(_blob(u, v, 0.13, 0.08, 0.05, 0.2), 0.78)
    shade(_blob(u, v, 0.0, 0.3, 0.16, 0.05), 0.8)
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random smooth backdrop (h, w, 3) float32: a gradient and a few faint shapes."""
    import cv2

    c0, c1 = rng.uniform(30, 230, size=(2, 3))
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :] * np.cos(rng.uniform(0, np.pi))
    t = t + np.linspace(0, 1, h, dtype=np.float32)[:, None] * np.sin(rng.uniform(0, np.pi))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = (c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]).astype(
        np.float32
    )
    for _ in range(int(rng.integers(0, 4))):
        color = tuple(float(x) for x in rng.uniform(30, 230, size=3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(w // 10, w // 3))
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), r, color, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r), color, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), w / 60)


def _render(f: _Face, e: _Expression, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw the face of pose/style ``f`` with expression ``e``: (h, w, 3) float32 RGB, (h, w) alpha."""
    import cv2

    s = f.s
    img = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    aa = cv2.LINE_AA

    def fill(poly: np.ndarray, color, target=img) -> None:
        cv2.fillPoly(target, [poly], tuple(float(x) for x in np.broadcast_to(color, (3,))), aa)

    def line(pts: np.ndarray, color, thick: int) -> None:
        cv2.polylines(img, [pts], False, tuple(float(x) for x in color), thick, aa)

    skin, hair = s.skin, s.hair
    # silhouette, back to front: clothes, neck, long hair behind the head, head of hair, ears, face
    parts = [
        (f.oval(0.0, 1.75, 1.9, 0.75), s.clothes),
        (f.xy([-0.42, 0.42, 0.5, -0.5], [0.6, 0.6, 1.3, 1.3]), skin * 0.72),
    ]
    if s.hair_style == 1:
        parts.append((f.xy([-1.12, -1.05, 1.05, 1.12], [-0.3, 0.95, 0.95, -0.3]), hair * 0.85))
    parts.append((f.oval(0.0, -0.08, 1.1, 0.97), hair))
    parts += [(f.oval(side * 0.98, -0.02, 0.13, 0.2), skin * 0.88) for side in (-1, 1)]
    parts.append((f.oval(0.0, 0.0, 1.0, 1.0, n=72), skin))
    for poly, color in parts:
        fill(poly, color)
        cv2.fillPoly(alpha, [poly], 1.0, aa)

    # hair over the forehead: above a hairline curving down to the temples
    if s.hair_style != 2:
        hu = np.linspace(-1.05, 1.05, 24)
        arc = np.linspace(np.arctan2(s.hairline + 0.35 * 1.05**2, 1.05), -np.pi / 2, 12)
        arc = np.concatenate([arc, -np.pi - arc[::-1][1:]])  # right end, over the top, left end
        fill(
            np.concatenate(
                [f.xy(hu, s.hairline + 0.35 * hu**2), f.xy(1.01 * np.cos(arc), 1.01 * np.sin(arc))]
            ),
            hair,
        )
    img *= _shading(f, e, h, w)[..., None]
    for side in (-1, 1):
        fill(f.oval(side * 0.075, 0.3, 0.045, 0.022), skin * 0.35)
    line(
        f.xy([-0.13, -0.06, 0.0, 0.06, 0.13], [0.27, 0.32, 0.33, 0.32, 0.27]),
        skin * 0.55,
        f.px(0.012),
    )

    # eyes: sclera, iris clipped to it, eyelids
    ew, eh = 0.17, 0.075 * e.eye_open
    for side in (-1, 1):
        u0 = side * s.eye_u
        sclera = f.oval(u0, s.eye_v, ew, eh, n=32)
        # iris and pupil clipped to the sclera, worked out in the eye's bounding box only
        x0, y0 = np.maximum(sclera.min(axis=0) - 2, 0)
        x1, y1 = np.minimum(sclera.max(axis=0) + 3, (w, h))
        if x1 > x0 and y1 > y0:
            shift = np.array([x0, y0], np.int32)
            mask = np.zeros((y1 - y0, x1 - x0), np.float32)
            cv2.fillPoly(mask, [sclera - shift], 1.0, aa)
            eye = np.empty((y1 - y0, x1 - x0, 3), np.float32)
            eye[:] = (
                0.6 * np.array([215.0, 210.0, 205.0]) + 0.4 * s.skin
            )  # sclera, in the socket shade
            cv2.fillPoly(
                eye,
                [f.oval(u0, s.eye_v, 0.085, 0.085 / s.aspect, n=24) - shift],
                tuple(float(x) for x in s.iris),
                aa,
            )
            cv2.fillPoly(
                eye,
                [f.oval(u0, s.eye_v, 0.035, 0.035 / s.aspect, n=16) - shift],
                (10.0, 10.0, 10.0),
                aa,
            )
            roi = img[y0:y1, x0:x1]
            roi[:] = roi * (1 - mask[..., None]) + eye * mask[..., None]
        t = np.linspace(np.pi, 2 * np.pi, 16)
        # upper lid: a thick dark arc; anger/disgust tilt it down towards the nose
        tilt = -0.4 * min(0.0, e.brow_tilt) * side
        lid = f.xy(u0 + 1.08 * ew * np.cos(t), s.eye_v + 1.08 * eh * np.sin(t) + tilt * np.cos(t))
        line(lid, (20, 15, 15), f.px(0.028))
        # lid crease: keeps the eye region dark however wide the eye opens
        crease = f.xy(
            u0 + 1.1 * ew * np.cos(t), s.eye_v - 0.035 + 1.25 * eh * np.sin(t) + tilt * np.cos(t)
        )
        line(crease, s.skin * 0.45, f.px(0.025))
        t = np.linspace(0, np.pi, 12)
        line(f.xy(u0 + ew * np.cos(t), s.eye_v + eh * np.sin(t)), skin * 0.5, f.px(0.01))

    # brows: inner end at |u| 0.12, outer at 0.62; thicker at the inner end
    brow = hair * 0.55
    vb = s.eye_v - 0.2 - e.brow_raise
    for side in (-1, 1):
        t = np.linspace(0.0, 1.0, 12)
        bu = side * (0.1 + 0.52 * t)
        v_inner, v_outer = vb - e.brow_tilt, vb + 0.02
        bv = v_inner + (v_outer - v_inner) * t - (0.05 + e.brow_arch) * np.sin(np.pi * t)
        half = s.brow_thick * (1.1 - 0.5 * t) / 2
        fill(np.concatenate([f.xy(bu, bv - half), f.xy(bu[::-1], (bv + half)[::-1])]), brow)

    if e.wrinkle > 0 and e.mouth_shape == "tight":  # anger: frown crease
        for side in (-1, 1):
            line(
                f.xy([side * 0.05, side * 0.07], [vb - 0.05, vb + 0.1]),
                skin * 0.5,
                f.px(0.015 * e.wrinkle),
            )
    if e.wrinkle > 0 and e.mouth_shape == "sneer":  # disgust: nose wrinkles
        for side in (-1, 1):
            for k in range(3):
                vk = 0.0 + 0.05 * k
                line(
                    f.xy([side * 0.06, side * 0.17], [vk, vk - 0.04]),
                    skin * 0.5,
                    f.px(0.012 * e.wrinkle),
                )

    _mouth(f, e, img, fill, line)
    return img, alpha


def _mouth(f: _Face, e: _Expression, img: np.ndarray, fill, line) -> None:
    s = f.s
    lip = s.skin * np.array([0.78, 0.5, 0.5]) + np.array([30, 0, 0])
    dark = np.array([45.0, 15.0, 20.0])
    teeth = np.array([235.0, 230.0, 215.0])
    vm, hw = s.mouth_v, 0.3 * e.mouth_width
    u = np.linspace(-hw, hw, 25)
    x = u / hw  # -1 .. 1 across the mouth
    lip_px = f.px(0.035)
    shape = e.mouth_shape
    if shape == "smile" and not s.happy_open:
        shape, curve = "line", e.mouth_curve * 1.3
    else:
        curve = e.mouth_curve
    # centre line: corners lifted by `curve`
    mid = vm - curve * x**2
    if shape in ("line", "tight"):
        thick = f.px(0.05) if shape == "tight" else lip_px
        line(f.xy(u, mid), lip * (0.7 if shape == "tight" else 0.85), thick)
        line(f.xy(u * 0.8, mid + 0.05 - 0.5 * curve * x**2), s.skin * 0.85, f.px(0.015))
    elif shape == "smile":
        top = mid - 0.02 * (1 - x**2)
        bottom = top + e.mouth_open * (1 - x**2)
        fill(np.concatenate([f.xy(u, top), f.xy(u[::-1], bottom[::-1])]), dark)
        teeth_low = top + 0.45 * e.mouth_open * (1 - x**2)
        fill(np.concatenate([f.xy(u * 0.85, top), f.xy(u[::-1] * 0.85, teeth_low[::-1])]), teeth)
        line(f.xy(u, top), lip, lip_px)
        line(f.xy(u, bottom), lip, lip_px)
    elif shape == "o":
        fill(f.oval(0.0, vm + 0.02, hw * 0.75, e.mouth_open * 0.6), lip)
        fill(f.oval(0.0, vm + 0.02, hw * 0.55, e.mouth_open * 0.45), dark)
    elif shape == "wide":
        wave = 0.012 * np.sin(4 * np.pi * x)
        top = mid - 0.35 * e.mouth_open * (1 - x**4) + wave
        bottom = mid + 0.65 * e.mouth_open * (1 - x**4) - wave
        fill(np.concatenate([f.xy(u, top), f.xy(u[::-1], bottom[::-1])]), dark)
        fill(
            np.concatenate(
                [f.xy(u * 0.8, top), f.xy(u[::-1] * 0.8, (top + 0.2 * e.mouth_open)[::-1])]
            ),
            teeth,
        )
        line(f.xy(u, top), lip, lip_px)
        line(f.xy(u, bottom), lip, lip_px)
    elif shape == "sneer":
        # one side of the upper lip pulled up, baring the teeth there
        lift = e.lip_raise * np.clip(s.side * x, 0, None) ** 0.7
        top = mid - lift - e.mouth_open * 0.3 * (1 - x**2)
        fill(np.concatenate([f.xy(u, top), f.xy(u[::-1], mid[::-1])]), dark)
        fill(np.concatenate([f.xy(u, top), f.xy(u[::-1], (top + 0.5 * (mid - top))[::-1])]), teeth)
        line(f.xy(u, top), lip, lip_px)
        line(f.xy(u, mid + 0.01), lip, lip_px)
        # the raised side deepens the fold from nose to mouth
        line(f.xy([s.side * 0.2, s.side * 0.33], [0.25, 0.45]), s.skin * 0.55, f.px(0.02))
    elif shape == "smirk":
        lift = e.lip_raise * np.clip(s.side * x, 0, None) ** 2
        line(f.xy(u, mid - lift), lip * 0.85, lip_px)
        line(
            f.xy(
                [s.side * (hw + 0.02), s.side * (hw + 0.05)],
                [vm - e.lip_raise - 0.03, vm - e.lip_raise + 0.04],
            ),
            s.skin * 0.55,
            f.px(0.015),
        )
    else:  # pragma: no cover - shapes are fixed above
        raise ValueError(shape)


def _finish(
    img: np.ndarray, rng: np.random.Generator, size: int, color: bool, noise: bool = True,
    variation: float = 1.0,
) -> np.ndarray:
    """Lighting, blur, resize to (size, size), noise -> uint8 RGB (size, size, 3).

    ``variation`` scales the side light's strength, the exposure and offset spread, the blur and
    the noise (1: the default look)."""
    import cv2

    h, w = img.shape[:2]
    v = float(variation)
    # directional light and global exposure
    phi = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j].astype(np.float32)
    light = 1.0 + min(0.8, rng.uniform(0.0, 0.25) * v) * (xx * np.cos(phi) + yy * np.sin(phi))
    exposure = rng.uniform(0.75, 1.2)
    if v != 1.0:
        exposure = float(np.clip(1.0 + (exposure - 1.0) * v, 0.35, 2.0))
    img = img * light[..., None] * exposure + rng.uniform(-20, 20) * v
    img = cv2.GaussianBlur(img, (0, 0), max(0.5, w / 260) * (rng.uniform(1.0, v) if v > 1 else 1.0))
    if (h, w) != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    if noise:
        img = img + rng.normal(0.0, rng.uniform(2.0, 7.0) * v, size=img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if not color:
        gray = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        out = np.repeat(gray[..., None], 3, axis=2)
    return out


def _working_size(size: int) -> int:
    # drawn at >= 2x (>= 192 px) and shrunk with INTER_AREA: anti-aliased even at 48 px
    return max(2 * size, 192)


def _sample_pose(rng: np.random.Generator, n: int, fill: float = 0.34, variation: float = 1.0) -> _Pose:
    """Where the face sits: centre +-4% (x) and +-3% (y) of the side, size -8%..+6%, in-plane
    rotation +-8 degrees; ``variation`` scales every spread (1: these; the dataset generators'
    3.5: centre +-14% / +-10.5%, size -28%..+21%, rotation +-28 degrees)."""
    v = float(variation)
    return _Pose(
        cx=n * (0.5 + rng.uniform(-0.04, 0.04) * v),
        cy=n * (0.52 + rng.uniform(-0.03, 0.03) * v),
        a=n * fill * (1.0 + (rng.uniform(0.92, 1.06) - 1.0) * v),
        angle=float(np.deg2rad(rng.uniform(-8, 8) * v)),
    )


def draw_face(
    emotion: str, size: int, rng: np.random.Generator, *, color: bool = True, intensity: float = 1.0,
    variation: float = 1.0, pose: float | None = None, identity: float = 1.0,
) -> np.ndarray:
    """One drawn face showing ``emotion``: (size, size, 3) uint8 RGB, the face filling most of it.

    ``intensity`` scales the expression (0 = neutral face, 1 = the full expression); identity,
    pose, lighting, background and noise are drawn from ``rng``; ``variation`` scales how much
    pose (position, size, rotation), lighting, blur and noise vary (1: a tidy, frontal set);
    ``pose``, when given, scales the pose spread on its own (``variation`` then scales only the
    lighting, blur and noise); ``identity`` scales the spread of the face's proportions (face
    shape, eye and mouth positions, brow thickness; 1: the tidy set). The dataset generators use
    wider spreads (``pose=3.5, identity=2.5``). ``color=False`` gives a grey image (three equal
    channels).

    >>> img = draw_face("happy", 48, np.random.default_rng(0), color=False)
    >>> img.shape, img.dtype
    ((48, 48, 3), dtype('uint8'))
    """
    n = _working_size(int(size))
    style = _sample_style(rng, identity)
    f = _Face(_sample_pose(rng, n, variation=variation if pose is None else pose), style)
    face, alpha = _render(f, _expression(emotion, intensity, rng), n, n)
    bg = _background(rng, n, n)
    img = bg * (1 - alpha[..., None]) + face * alpha[..., None]
    return _finish(img, rng, int(size), color, variation=variation)


# ------------------------------------------------------------------------------------------------
# dataset generators


def _write_image(path: Path, img: np.ndarray) -> None:
    """uint8 RGB (H, W, 3) or grey (H, W) -> JPEG/PNG at ``path``."""
    import cv2

    arr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), arr, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write {path}")


def _class_counts(
    n_per_class: int, shares: dict[str, float] | None, names: list[str]
) -> dict[str, int]:
    if shares is None:
        return {c: n_per_class for c in names}
    top = max(shares.values())
    # the most common class gets 1.5 x n_per_class, the rarest ~0.2 x: balancing has work to do
    return {c: max(4, int(round(1.5 * n_per_class * shares[c] / top))) for c in names}


def synth_fer2013(
    out: str | os.PathLike,
    *,
    subjects: int | None = None,
    seed: int = 0,
    n_per_class: int = 460,
    layout: str = "folders",
    classes: int = 7,
    variation: float = 1.0,
    min_intensity: float = 1.0,
    pose: float | None = 3.5,
    identity: float = 2.5,
) -> Path:
    """Write a small FER2013: 48x48 grey drawn faces with the real set's class imbalance.

    ``layout="folders"`` (Kaggle ``msambare/fer2013``)::

        out/train/<angry|disgust|fear|happy|neutral|sad|surprise>/Training_<id>.jpg
        out/test/<...>/PublicTest_<id>.jpg | PrivateTest_<id>.jpg

    ``layout="csv"``: ``out/fer2013.csv`` with ``emotion,pixels,Usage`` and the real codes
    (0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral). ``n_per_class`` sets
    the size (happy gets 1.5x, disgust ~0.2x of it, as in the real set); 80% go to training,
    10% each to PublicTest and PrivateTest. ``classes=6`` leaves disgust out. ``subjects`` is
    accepted for the CLI and ignored (FER2013 has no subject ids).

    The defaults are calibrated (``benchmarks/bench_calibration.py``) for ``train_face`` at batch
    64: ``n_per_class=460`` writes 2,815 images (2,173 training images of the 6 default classes:
    33 optimizer steps per epoch; at least 30 PublicTest (validation) images per class, surprise
    the fewest; disgust, rare as in the real set, has 10 with ``classes=7``), in about half a
    minute on one core. Faces vary in pose (``pose=3.5``: shifted up to 14% of the side, rotated
    up to 28 degrees, scaled -28%..+21%) and identity (``identity=2.5``), which HOG features do
    not absorb: the HOG + logistic regression baseline scores a validation macro-F1 of about
    0.56, the small CNN (8 epochs at lr 1e-3) about 0.63. ``variation`` scales
    lighting, blur and noise (and the pose too, when ``pose=None``); each face's expression
    intensity is drawn from ``min_intensity``..1 (1: always the full expression).
    """
    del subjects
    if layout not in ("folders", "csv"):
        raise ValueError(f"layout must be 'folders' or 'csv', not {layout!r}")
    if classes not in (6, 7):
        raise ValueError(f"classes must be 6 or 7, not {classes!r}")
    names = [c for c in FER2013_CODES if classes == 7 or c != "disgust"]
    counts = _class_counts(int(n_per_class), FER2013_SHARES, names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2013])
    rows: list[tuple[int, str, str]] = []  # (code, pixels, Usage)
    next_id = 0
    for name in names:
        n = counts[name]
        n_test = max(1, n // 10)
        usages = (
            ["PublicTest"] * n_test + ["PrivateTest"] * n_test + ["Training"] * (n - 2 * n_test)
        )
        for usage in usages:
            strength = 1.0 if min_intensity >= 1.0 else float(rng.uniform(min_intensity, 1.0))
            img = draw_face(name, 48, rng, color=False, intensity=strength, variation=variation,
                            pose=pose, identity=identity)[..., 0]  # (48, 48) grey
            next_id += 1
            if layout == "csv":
                rows.append(
                    (FER2013_CODES.index(name), " ".join(map(str, img.ravel().tolist())), usage)
                )
            else:
                folder = out / ("train" if usage == "Training" else "test") / name
                folder.mkdir(parents=True, exist_ok=True)
                _write_image(folder / f"{usage}_{next_id}.jpg", img)
    if layout == "csv":
        order = rng.permutation(len(rows))  # the real file is not sorted by class
        with open(out / "fer2013.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["emotion", "pixels", "Usage"])
            for i in order:
                w.writerow(rows[i])
    return out


def synth_affectnet(
    out: str | os.PathLike,
    *,
    subjects: int | None = None,
    seed: int = 0,
    n_per_class: int = 500,
    with_labels_csv: bool = True,
    variation: float = 1.0,
    min_intensity: float = 0.7,
    pose: float | None = 3.5,
    identity: float = 2.5,
) -> Path:
    """Write a tiny Kaggle-mirror AffectNet: 96x96 colour drawn faces.

    ::

        out/Train/<anger|contempt|disgust|fear|happy|neutral|sad|surprise>/imageNNNNNNN.jpg
        out/Test/<...>/imageNNNNNNN.jpg
        out/labels.csv      ,pth,label,relFCs    (pth relative to the split root: anger/image0000006.jpg)

    ``n_per_class`` images per class, 80% in Train. Image numbers are unique across the splits.
    ``subjects`` is accepted for the CLI and ignored.

    The defaults are calibrated (``benchmarks/bench_calibration.py``) for ``train_face`` at batch
    64: ``n_per_class=500`` writes 4,000 images (with the 20% validation share carved from Train,
    1,920 training images of the 6 default classes: 30 optimizer steps per epoch; 80 validation
    images per class), in about 35 s on one core; the HOG + logistic regression baseline scores a
    validation macro-F1 of about 0.56, the small CNN (8 epochs at lr 1e-3) about 0.58. Pose
    (``pose=3.5``) and identity (``identity=2.5``) vary as in
    :func:`synth_fer2013`; ``variation`` scales lighting, blur and noise (and the pose too, when
    ``pose=None``); each face's expression intensity is drawn from ``min_intensity``..1.1.
    """
    del subjects
    out = Path(out)
    rng = np.random.default_rng([seed, 8])
    records = []
    next_id = 0
    for name in AFFECTNET_FOLDERS:
        n = int(n_per_class)
        n_test = max(1, n // 5)
        for k in range(n):
            split = "Test" if k < n_test else "Train"
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            next_id += 1
            fname = f"image{next_id:07d}.jpg"
            _write_image(
                folder / fname,
                draw_face(name, 96, rng, color=True, intensity=float(rng.uniform(min_intensity, 1.1)),
                          variation=variation, pose=pose, identity=identity),
            )
            records.append((f"{name}/{fname}", name, round(float(rng.uniform(0.5, 1.0)), 4)))
    if with_labels_csv:
        import pandas as pd

        df = pd.DataFrame(records, columns=["pth", "label", "relFCs"])
        df.to_csv(out / "labels.csv")  # index written: ",pth,label,relFCs"
    return out


def face_video_transitions(segments) -> list[tuple[float, str, str]]:
    """``[(emotion, seconds), ...]`` -> ``[(time_s, from, to), ...]`` at each change of emotion.

    >>> face_video_transitions([("neutral", 2.0), ("happy", 1.5), ("happy", 1.0), ("sad", 2.0)])
    [(2.0, 'neutral', 'happy'), (4.5, 'happy', 'sad')]
    """
    out: list[tuple[float, str, str]] = []
    t = 0.0
    prev: str | None = None
    for emotion, seconds in segments:
        emotion = canonical_emotion(emotion)
        if prev is not None and emotion != prev:
            out.append((round(t, 6), prev, emotion))
        prev = emotion
        t += float(seconds)
    return out


def _parse_segments(segments) -> list[tuple[str, float]]:
    """Segments as a list of pairs, or (from the CLI) ``"neutral:2,happy:2"``."""
    if segments is None:
        return list(DEFAULT_VIDEO_SEGMENTS)
    if isinstance(segments, str):
        pairs = []
        for item in segments.split(","):
            name, _, sec = item.partition(":")
            pairs.append((name.strip(), float(sec) if sec else 2.0))
        segments = pairs
    out = [(canonical_emotion(str(n)), float(s)) for n, s in segments]
    if not out or any(s <= 0 for _, s in out):
        raise ValueError(f"segments must be (emotion, seconds > 0) pairs, not {segments!r}")
    return out


def synth_face_video(
    out: str | os.PathLike,
    *,
    subjects: int | None = None,
    seed: int = 0,
    segments=None,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    face_size: int = 140,
) -> Path:
    """Write an .mp4 of one drawn face whose expression changes at known times; return its path.

    ``segments``: ``[(emotion, seconds), ...]`` (default neutral, happy, sad, surprise, 2 s each;
    from the CLI ``--set segments=neutral:2,happy:2``). ``size`` is (width, height); the face
    (``face_size`` px square) drifts and sways a little on a fixed background. Next to the video,
    ``<stem>.transitions.csv`` holds ``time_s,from,to`` of every change (see
    :func:`face_video_transitions`). ``out`` is the video path (``x.mp4``; another suffix becomes
    ``.mp4``) or a folder, existing or a name without suffix (``face_video.mp4`` inside it).
    ``subjects`` is accepted for the CLI and ignored.
    """
    import cv2

    del subjects
    segs = _parse_segments(segments)
    if isinstance(size, str):
        size = tuple(int(x) for x in size.lower().replace("x", ",").split(","))
    width, height = (int(x) for x in size)
    fps, face_size = int(fps), int(face_size)
    if face_size > min(width, height) - 8:
        raise ValueError(f"face_size {face_size} does not fit a {width}x{height} frame")
    path = Path(out)
    if path.suffix.lower() != ".mp4":
        path = (
            path / "face_video.mp4"
            if path.is_dir() or not path.suffix
            else path.with_suffix(".mp4")
        )
    path.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng([seed, 7])
    style = _sample_style(rng)
    # drawn at 2x into the whole frame, so that the neck and shoulders run on to its edge, then
    # shrunk (anti-aliasing); the face square sits a little above the centre
    k = 2
    bg = _background(rng, k * height, k * width)
    base = _Pose(
        cx=k * width / 2, cy=k * (height / 2 - 0.05 * face_size), a=k * 0.34 * face_size, angle=0.0
    )
    expressions = {name: _expression(name, 1.0, None) for name, _ in segs}
    # frame i shows the segment holding time i / fps: changes fall on exact frame boundaries
    bounds = np.cumsum([s for _, s in segs])
    n_frames = int(round(bounds[-1] * fps))
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height)
    )
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open a video writer for {path}")
    try:
        for i in range(n_frames):
            t = i / fps
            seg = min(int(np.searchsorted(bounds, t, side="right")), len(segs) - 1)
            # slow drift (a few pixels), breathing scale and sway (+-4 degrees), smooth in time
            pose = _Pose(
                cx=base.cx + k * 6 * np.sin(0.7 * t),
                cy=base.cy + k * 4 * np.sin(0.45 * t + 1),
                a=base.a * (1 + 0.02 * np.sin(0.3 * t)),
                angle=float(np.deg2rad(4 * np.sin(0.6 * t))),
            )
            face, alpha = _render(
                _Face(pose, style), expressions[segs[seg][0]], k * height, k * width
            )
            frame = bg * (1 - alpha[..., None]) + face * alpha[..., None]
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            frame = frame + rng.normal(0.0, 2.0, size=frame.shape)
            writer.write(cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    with open(path.with_name(path.stem + ".transitions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "from", "to"])
        w.writerows(face_video_transitions(segs))
    return path
