"""Keypoints from video (emoexp.apps.posture_extract): the error messages, the landmark -> feature
path on a synthetic stick figure, and the frame loop with a stand-in PoseLandmarker.

MediaPipe ships no model, so no test here runs the real PoseLandmarker; the loop is driven by a
fake one that answers like the Tasks API (lists of landmarks with x, y, z, visibility).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from emoexp.apps import posture_extract as pv
from emoexp.data.base import DataError
from emoexp.data.posture import FEATURES, MEDIAPIPE33, canonical_from_mediapipe, posture_features

FEAT = {name: i for i, (name, _) in enumerate(FEATURES)}
HINT_PARTS = ("MediaPipe ships no models", "pose_landmarker_lite.task",
              "https://ai.google.dev/edge/mediapipe/solutions/vision/pose_landmarker#models",
              "--pose-model")


def _mediapipe_importable() -> bool:
    if importlib.util.find_spec("mediapipe") is None:
        return False
    try:
        import mediapipe  # noqa: F401
        from mediapipe.tasks.python import vision  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _write_video(path: Path, n_frames: int = 8, fps: float = 10.0, size=(160, 120)) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert w.isOpened()
    for i in range(n_frames):
        frame = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.circle(frame, (20 + 10 * i, 60), 12, (200, 180, 160), -1)
        w.write(frame)
    w.release()
    return path


@pytest.fixture
def video(tmp_path) -> Path:
    return _write_video(tmp_path / "clip.mp4")


@pytest.fixture
def junk_model(tmp_path) -> Path:
    path = tmp_path / "x.task"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


# ---------------------------------------------------------------------------------------------
# errors

def test_missing_model_says_where_models_come_from(tmp_path, video) -> None:
    missing = tmp_path / "pose_landmarker_full.task"
    with pytest.raises(FileNotFoundError) as e:
        pv.video_to_features(video, missing)
    msg = str(e.value)
    assert str(missing) in msg and "does not exist" in msg
    for part in HINT_PARTS:
        assert part in msg
    assert "\n" not in msg
    with pytest.raises(FileNotFoundError, match="is a folder"):
        pv.extract_pose_sequence(video, tmp_path)


def test_junk_model_file(video, junk_model) -> None:
    """Whichever this environment has: mediapipe installed -> MediaPipe's rejection, reworded
    with the download hint; not installed -> how to install it."""
    if _mediapipe_importable():
        with pytest.raises(pv.PoseModelError) as e:
            pv.open_pose_landmarker(junk_model)
        assert "is not a MediaPipe PoseLandmarker model bundle" in str(e.value)
        assert str(junk_model) in str(e.value)
        for part in HINT_PARTS:
            assert part in str(e.value)
        with pytest.raises(pv.PoseModelError, match="is not a MediaPipe PoseLandmarker"):
            pv.video_to_features(video, junk_model)
    else:
        with pytest.raises(pv.PoseModelError, match="pip install mediapipe"):
            pv.video_to_features(video, junk_model)


def test_mediapipe_not_installed(monkeypatch, video, junk_model) -> None:
    # None in sys.modules makes `import mediapipe` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(pv.PoseModelError) as e:
        pv.video_to_features(video, junk_model)
    msg = str(e.value)
    assert "`pip install mediapipe`" in msg and "MediaPipe ships no models" in msg
    with pytest.raises(pv.PoseModelError, match="pip install mediapipe"):
        pv.open_pose_landmarker(junk_model)


def test_unreadable_video_is_named(tmp_path, junk_model) -> None:
    # The video is checked before mediapipe is needed, so this holds with or without it.
    bad = tmp_path / "not_a_video.mp4"
    bad.write_text("this is not a video\n")
    with pytest.raises(DataError) as e:
        pv.video_to_features(bad, junk_model)
    assert "not_a_video.mp4" in str(e.value) and "cannot be opened as a video" in str(e.value)
    with pytest.raises(DataError, match=r"nothing\.mp4: does not exist"):
        pv.extract_pose_sequence(tmp_path / "nothing.mp4", junk_model)


def test_bad_arguments(video, junk_model) -> None:
    with pytest.raises(ValueError, match="max_frames"):
        pv.extract_pose_sequence(video, junk_model, max_frames=0)
    with pytest.raises(ValueError, match="fps"):
        pv.extract_pose_sequence(video, junk_model, fps=-1)


# ---------------------------------------------------------------------------------------------
# landmarks -> features, on a stick figure

# A person standing facing the camera, world-like units (metres), origin between the hips,
# y down. The person's left is the image right (x > 0).
FIGURE = {
    "nose": (0.0, -0.65, -0.05),
    "left_eye": (0.03, -0.68, -0.05), "right_eye": (-0.03, -0.68, -0.05),
    "left_ear": (0.07, -0.66, 0.0), "right_ear": (-0.07, -0.66, 0.0),
    "left_shoulder": (0.2, -0.5, 0.0), "right_shoulder": (-0.2, -0.5, 0.0),
    "left_elbow": (0.25, -0.25, 0.0), "right_elbow": (-0.25, -0.25, 0.0),
    "left_wrist": (0.27, 0.0, 0.0), "right_wrist": (-0.27, 0.0, 0.0),
    "left_hip": (0.1, 0.0, 0.0), "right_hip": (-0.1, 0.0, 0.0),
    "left_knee": (0.1, 0.45, 0.0), "right_knee": (-0.1, 0.45, 0.0),
    "left_ankle": (0.1, 0.9, 0.0), "right_ankle": (-0.1, 0.9, 0.0),
}
TORSO = 0.5  # |neck - mid-hip|


def stick_figure(t: int, *, lean_rad: float = 0.0, velocity=(0.0, 0.0, 0.0),
                 fps: float = 30.0) -> np.ndarray:
    """(t, 33, 4) MediaPipe landmarks of FIGURE, the upper body (y < 0) leant forward by
    ``lean_rad`` (rotation about the x axis through the hips), moving at ``velocity`` per s."""
    lm = np.zeros((t, 33, 4))
    lm[..., :3] = FIGURE["nose"]           # landmarks without a role here sit at the nose
    lm[..., 3] = 0.99
    c, s = math.cos(lean_rad), math.sin(lean_rad)
    for name, (x, y, z) in FIGURE.items():
        if y < 0:
            y, z = c * y - s * z, s * y + c * z
        lm[:, MEDIAPIPE33[name], :3] = (x, y, z)
    lm[..., :3] += np.arange(t)[:, None, None] / fps * np.asarray(velocity)
    return lm.astype(np.float32)


def test_landmarks_to_features_is_the_training_path() -> None:
    lm = stick_figure(12)
    feats = pv.landmarks_to_features(lm, 30.0)
    assert feats.shape == (12, 15) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats, posture_features(canonical_from_mediapipe(lm), fps=30.0))
    f = feats[0]
    assert abs(f[FEAT["trunk_inclination"]]) < 1e-5
    assert abs(f[FEAT["lateral_lean"]]) < 1e-5
    assert f[FEAT["shoulder_width"]] == pytest.approx(0.4 / TORSO, rel=1e-5)
    assert f[FEAT["head_height"]] == pytest.approx(0.15 / TORSO, rel=1e-4)
    assert f[FEAT["wrist_spread"]] == pytest.approx(0.54 / TORSO, rel=1e-5)
    assert abs(f[FEAT["body_speed"]]) < 1e-5 and abs(f[FEAT["limb_speed"]]) < 1e-5


def test_stick_figure_lean_and_motion() -> None:
    lean = math.radians(25)
    f = pv.landmarks_to_features(stick_figure(6, lean_rad=lean), 30.0)
    np.testing.assert_allclose(f[:, FEAT["trunk_inclination"]], lean, atol=1e-5)
    # Sway of 0.3 m/s sideways = 0.6 torso lengths per second; the limbs move with the body.
    moving = stick_figure(10, velocity=(0.3, 0.0, 0.0), fps=30.0)
    f = pv.landmarks_to_features(moving, 30.0)
    np.testing.assert_allclose(f[:, FEAT["body_speed"]], 0.3 / TORSO, rtol=1e-4)
    np.testing.assert_allclose(f[:, FEAT["limb_speed"]], 0.0, atol=1e-4)
    # The same frames said to be sampled at half the rate: half the speed.
    f15 = pv.landmarks_to_features(moving, 15.0)
    np.testing.assert_allclose(f15[:, FEAT["body_speed"]], 0.15 / TORSO, rtol=1e-4)


def test_missing_frames_and_hidden_joints_are_filled() -> None:
    lm = stick_figure(9, velocity=(0.3, 0.0, 0.0))
    full = pv.landmarks_to_features(lm, 30.0)
    gappy = lm.copy()
    gappy[[0, 4]] = np.nan                                  # no person in two frames
    gappy[6, MEDIAPIPE33["left_wrist"], 3] = 0.1            # a wrist hidden in one frame
    f = pv.landmarks_to_features(gappy, 30.0)
    assert np.isfinite(f).all()
    # Linear motion: interpolating the gaps gives back the same posture (from frame 2 on: the
    # first frame is filled with the second, so the speed at frame 1 sees half the motion).
    np.testing.assert_allclose(f[2:], full[2:], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# the frame loop, with a stand-in for MediaPipe

def _points(lm: np.ndarray, *, visibility: bool = True) -> list[SimpleNamespace]:
    return [SimpleNamespace(x=float(p[0]), y=float(p[1]), z=float(p[2]),
                            visibility=float(p[3]) if visibility else None, presence=None)
            for p in lm]


class FakeLandmarker:
    """Answers detect_for_video like PoseLandmarker: frame k gets FIGURE (image landmarks
    shifted to the frame middle, world landmarks as they are) unless k is in ``no_person``."""

    def __init__(self, no_person=(), no_world=()):
        self.no_person, self.no_world = set(no_person), set(no_world)
        self.timestamps: list[int] = []
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True

    def detect_for_video(self, image, timestamp_ms: int):
        assert isinstance(timestamp_ms, int)
        assert image.data.shape == (120, 160, 3) and image.data.dtype == np.uint8
        k = len(self.timestamps)
        self.timestamps.append(timestamp_ms)
        if k in self.no_person:
            return SimpleNamespace(pose_landmarks=[], pose_world_landmarks=[])
        world = stick_figure(1)[0]
        img = world.copy()
        img[:, :2] = img[:, :2] * 0.5 + 0.5
        return SimpleNamespace(
            pose_landmarks=[_points(img)],
            # The world landmarks of this stand-in leave visibility unset: taken from the image ones.
            pose_world_landmarks=[] if k in self.no_world else [_points(world, visibility=False)],
        )


@pytest.fixture
def fake_mediapipe(monkeypatch):
    made: list[FakeLandmarker] = []

    def install(**kw):
        def open_landmarker(path, *, min_confidence=0.5):
            pv.check_pose_model_path(path)
            made.append(FakeLandmarker(**kw))
            return made[-1]

        class Image:
            def __init__(self, image_format, data):
                self.image_format, self.data = image_format, data

        mp = SimpleNamespace(Image=Image, ImageFormat=SimpleNamespace(SRGB="srgb"))
        monkeypatch.setattr(pv, "_import_mediapipe", lambda: (mp, None, None))
        monkeypatch.setattr(pv, "open_pose_landmarker", open_landmarker)
        return made

    return install


def test_extract_pose_sequence_loop(fake_mediapipe, video, junk_model) -> None:
    made = fake_mediapipe(no_person=(2,))
    seq = pv.extract_pose_sequence(video, junk_model)
    assert made[0].closed
    assert seq.landmarks.shape == (8, 33, 4) and seq.landmarks.dtype == np.float32
    assert np.isnan(seq.landmarks[2]).all() and np.isfinite(np.delete(seq.landmarks, 2, 0)).all()
    assert seq.n_no_person == 1 and seq.coordinates == "world"
    assert seq.fps_sampled == pytest.approx(10.0)
    np.testing.assert_allclose(seq.times_s, np.arange(8) / 10.0)
    assert made[0].timestamps == [0, 100, 200, 300, 400, 500, 600, 700]
    # World coordinates as given; visibility from the image landmarks.
    np.testing.assert_allclose(seq.landmarks[0], stick_figure(1)[0], atol=1e-6)

    feats = pv.landmarks_to_features(seq.landmarks, seq.fps_sampled)
    assert np.isfinite(feats).all()


def test_image_coordinates_when_world_is_missing(fake_mediapipe, video, junk_model) -> None:
    fake_mediapipe(no_world=(1,))
    seq = pv.extract_pose_sequence(video, junk_model, fps=5.0, max_frames=3)
    assert seq.coordinates == "image"
    assert seq.landmarks.shape == (3, 33, 4)
    np.testing.assert_allclose(seq.times_s, [0.0, 0.2, 0.4])
    assert seq.fps_sampled == pytest.approx(5.0)
    # x (and z) in frame heights: the 160x120 frame is 4/3 heights wide.
    img = stick_figure(1)[0]
    np.testing.assert_allclose(seq.landmarks[0, :, 0], (img[:, 0] * 0.5 + 0.5) * 160 / 120, atol=1e-6)
    np.testing.assert_allclose(seq.landmarks[0, :, 1], img[:, 1] * 0.5 + 0.5, atol=1e-6)


def test_no_person_anywhere(fake_mediapipe, video, junk_model) -> None:
    fake_mediapipe(no_person=range(100))
    with pytest.raises(DataError) as e:
        pv.extract_pose_sequence(video, junk_model)
    assert "clip.mp4" in str(e.value) and "no person found in any of the 8 sampled frames" in str(e.value)


def test_video_to_features_saves_atomically(fake_mediapipe, video, junk_model, tmp_path) -> None:
    fake_mediapipe(no_person=(0,))
    out = tmp_path / "posture" / "train" / "sequences" / "seq_001.npy"
    feats = pv.video_to_features(video, junk_model, out_npy=out)
    assert feats.shape == (8, 15) and np.isfinite(feats).all()
    np.testing.assert_array_equal(np.load(out), feats)
    assert sorted(p.name for p in out.parent.iterdir()) == ["seq_001.npy"]  # no temporary left
    seq = pv.extract_pose_sequence(video, junk_model)
    np.testing.assert_array_equal(feats, pv.landmarks_to_features(seq.landmarks, 10.0))
