"""Keypoints from video with MediaPipe's PoseLandmarker, and the posture features of a video.

    video --(iter_frames, ~fps)--> PoseLandmarker (VIDEO mode) --> (T, 33, 4) landmarks
          --> canonical_from_mediapipe --> posture_features --> (T, 15) features

:func:`extract_pose_sequence` returns the landmarks (:class:`PoseSequence`);
:func:`video_to_features` turns a video into the (T, 15) feature sequence that the posture
models train on (seed 001's ``sequences/seq_001.npy``), optionally saved atomically.
:func:`landmarks_to_features` is the one step from landmarks to features, shared by both paths
(and testable without MediaPipe or a model file).

MediaPipe is optional and imported inside the functions (``pip install mediapipe``; it is not
a dependency of emoexp). mediapipe 1.2 has the Tasks API only and ships no model: the
PoseLandmarker needs a ``.task`` bundle (lite, full or heavy) that the user downloads and passes
by path. OpenCV is imported lazily as well (through :mod:`emoexp.data.frames`).

Coordinates: PoseLandmarker gives *world* landmarks (metres, origin between the hips) and
*image* landmarks (x, y in [0, 1] of the frame width and height). World landmarks are used when
every frame with a person has them; otherwise image landmarks, with x and z rescaled to units of
the frame *height* so that distances and angles are not squeezed by the aspect ratio. Both keep
MediaPipe's axes (x right, y down, z toward the camera negative), which
:mod:`emoexp.data.posture` expects, and its features are scale-invariant, so the unit does not
matter to them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoexp.data.base import DataError
from emoexp.data.io import atomic_save_npy
from emoexp.data.posture import canonical_from_mediapipe, posture_features

N_LANDMARKS = 33

MODEL_HINT = (
    "MediaPipe ships no models: download pose_landmarker_lite.task / _full / _heavy from the "
    "MediaPipe Pose Landmarker model page "
    "(https://ai.google.dev/edge/mediapipe/solutions/vision/pose_landmarker#models) and pass "
    "its path with --pose-model"
)
INSTALL_HINT = "pip install mediapipe"


class PoseModelError(ValueError):
    """The pose model cannot be used here: mediapipe missing, or not a PoseLandmarker bundle."""


@dataclass
class PoseSequence:
    """The pose of the (first) person in each sampled frame of a video.

    ``landmarks`` (T, 33, 4) float32: x, y, z, visibility per MediaPipe landmark (in the
    PoseLandmark order); a frame where no person was found is a row of NaN.
    """

    landmarks: np.ndarray        # (T, 33, 4) float32
    times_s: np.ndarray          # (T,) float64, time of each sampled frame in the video
    fps_sampled: float           # measured: 1 / median step between the sampled frames
    n_no_person: int             # frames where no person was found (NaN rows)
    coordinates: str             # "world" (metres, hip-centred) or "image" (frame heights)
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (T,)
    params: dict[str, Any] = field(default_factory=dict)  # video, model, fps requested, native fps


def check_pose_model_path(pose_model: str | os.PathLike) -> Path:
    """The model path as a Path; FileNotFoundError with the download hint if there is no file."""
    path = Path(pose_model)
    if not path.is_file():
        what = "is a folder, not a model file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"pose model {path} {what}. {MODEL_HINT}")
    return path


def _import_mediapipe():
    """mediapipe and its vision tasks, or PoseModelError saying how to install it."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
    except (ImportError, OSError) as e:
        # OSError: a wheel that imports but misses a system library (libGL...).
        raise PoseModelError(
            f"keypoints from video need MediaPipe, which is not importable here ({e}): "
            f"`{INSTALL_HINT}` (it is optional, not installed with emoexp). {MODEL_HINT}"
        ) from None
    return mp, vision, BaseOptions


def open_pose_landmarker(pose_model: str | os.PathLike, *, min_confidence: float = 0.5):
    """A PoseLandmarker in VIDEO running mode (one person), from a ``.task`` bundle.

    Raises FileNotFoundError (no such file) or :class:`PoseModelError` (mediapipe missing, or a
    file MediaPipe rejects), each with where the model comes from.
    """
    path = check_pose_model_path(pose_model)
    mp, vision, BaseOptions = _import_mediapipe()
    options = vision.PoseLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(path)),
        running_mode=vision.RunningMode.VIDEO,
        num_poses=1,
        min_pose_detection_confidence=min_confidence,
        min_pose_presence_confidence=min_confidence,
        min_tracking_confidence=min_confidence,
    )
    try:
        return vision.PoseLandmarker.create_from_options(options)
    except Exception as e:  # noqa: BLE001 - MediaPipe raises RuntimeError/ValueError from C++
        msg = " ".join(str(e).split())[:300]
        raise PoseModelError(
            f"pose model {path} is not a MediaPipe PoseLandmarker model bundle that the Tasks API "
            f"accepts ({type(e).__name__}: {msg}). {MODEL_HINT}"
        ) from None


def _landmark_rows(points: list[Any], x_scale: float, vis_from: list[Any] | None) -> np.ndarray:
    """33 MediaPipe landmarks -> (33, 4) x, y, z, visibility; x and z times ``x_scale``.

    A visibility left unset by the model counts as seen (1.0): unset means "not supported",
    not "hidden", and canonical_from_mediapipe would otherwise drop the joint.
    """
    out = np.empty((N_LANDMARKS, 4), np.float64)
    for k, p in enumerate(points[:N_LANDMARKS]):
        vis = p.visibility
        if vis is None and vis_from is not None:
            vis = vis_from[k].visibility
        out[k] = (p.x * x_scale, p.y, p.z * x_scale, 1.0 if vis is None else vis)
    return out


def extract_pose_sequence(
    video_path: str | os.PathLike,
    pose_model: str | os.PathLike,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    min_confidence: float = 0.5,
) -> PoseSequence:
    """Run MediaPipe's PoseLandmarker over ``video_path``, about ``fps`` frames per second
    (``None``: every frame), at most ``max_frames`` sampled frames.

    The cheap checks come first, so a bad model path or an unreadable video is reported before
    MediaPipe is even imported. Errors: FileNotFoundError (no model file); :class:`PoseModelError`
    (mediapipe missing, or a file that is not a PoseLandmarker ``.task``); :class:`DataError`
    naming the video (missing, not decodable, no frames, or no person in any frame).
    """
    from emoexp.data.frames import check_fps, iter_frames, video_info

    check_fps(fps)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 (or None for all), not {max_frames}")
    model_path = check_pose_model_path(pose_model)
    video = Path(video_path)
    info = video_info(video)                           # DataError naming the video if unreadable
    mp, _, _ = _import_mediapipe()
    if hasattr(mp, "Image"):
        image_cls, fmt = mp.Image, mp.ImageFormat
    else:  # builds without the top-level re-export
        from mediapipe.tasks.python.vision.core import image as image_lib

        image_cls, fmt = image_lib.Image, image_lib.ImageFormat

    world_rows: list[np.ndarray | None] = []
    image_rows: list[np.ndarray | None] = []
    times: list[float] = []
    indices: list[int] = []
    last_ms = -1
    with open_pose_landmarker(model_path, min_confidence=min_confidence) as landmarker:
        for t, index, rgb in iter_frames(video, fps):
            if max_frames is not None and len(times) >= max_frames:
                break
            # VIDEO mode needs strictly increasing integer milliseconds.
            ms = max(int(round(t * 1000.0)), last_ms + 1)
            last_ms = ms
            image = image_cls(image_format=fmt.SRGB, data=np.ascontiguousarray(rgb))
            result = landmarker.detect_for_video(image, ms)
            h, w = rgb.shape[:2]
            img = result.pose_landmarks[0] if result.pose_landmarks else None
            wld = result.pose_world_landmarks[0] if result.pose_world_landmarks else None
            image_rows.append(_landmark_rows(img, w / h, None) if img else None)
            world_rows.append(_landmark_rows(wld, 1.0, img) if wld else None)
            times.append(t)
            indices.append(index)

    found = [r is not None for r in image_rows]
    n_no_person = len(found) - sum(found)
    if not any(found):
        raise DataError(video, f"no person found in any of the {len(found)} sampled frames "
                               f"(PoseLandmarker {model_path.name}, confidence >= {min_confidence})")
    # One coordinate system for the whole sequence: world if every frame with a person has it.
    use_world = all(w is not None for w, f in zip(world_rows, found) if f)
    rows = world_rows if use_world else image_rows
    landmarks = np.full((len(rows), N_LANDMARKS, 4), np.nan, np.float32)
    for i, r in enumerate(rows):
        if r is not None:
            landmarks[i] = r
    t_arr = np.asarray(times, np.float64)
    if len(t_arr) > 1:
        fps_sampled = 1.0 / float(np.median(np.diff(t_arr)))
    else:  # one frame: no step to measure; the rate it was asked for, else the video's own
        fps_sampled = float(fps or info["fps"] or 30.0)
    return PoseSequence(
        landmarks=landmarks, times_s=t_arr, fps_sampled=fps_sampled, n_no_person=n_no_person,
        coordinates="world" if use_world else "image",
        frame_indices=np.asarray(indices, np.int64),
        params={"video": str(video), "pose_model": str(model_path), "fps_requested": fps,
                "native_fps": info["fps"], "max_frames": max_frames,
                "min_confidence": min_confidence},
    )


def landmarks_to_features(landmarks: np.ndarray, fps: float) -> np.ndarray:
    """MediaPipe landmarks (T, 33, 3|4) -> posture features (T, 15) float32.

    The same two steps as training data made from MediaPipe keypoints: joints with visibility
    < 0.5 and NaN rows (no person) are missing and get interpolated over time by
    :func:`emoexp.data.posture.posture_features`.
    """
    return posture_features(canonical_from_mediapipe(landmarks), fps=fps)


def video_to_features(
    video_path: str | os.PathLike,
    pose_model: str | os.PathLike,
    out_npy: str | os.PathLike | None = None,
    fps: float | None = None,
    *,
    max_frames: int | None = None,
) -> np.ndarray:
    """The (T, 15) float32 posture features of ``video_path`` (T sampled frames, about ``fps``
    per second, ``None``: every frame), written to ``out_npy`` atomically if given.

    Speeds are computed at the rate actually sampled. Errors as :func:`extract_pose_sequence`.
    """
    seq = extract_pose_sequence(video_path, pose_model, fps=fps, max_frames=max_frames)
    features = landmarks_to_features(seq.landmarks, seq.fps_sampled)
    if out_npy is not None:
        atomic_save_npy(out_npy, features)
    return features
