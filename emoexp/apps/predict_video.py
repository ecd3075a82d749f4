"""Emotion over time in a video: sample frames, find the face, classify it, smooth, find changes.

    frames --(iter_frames, ~fps)--> detector --(square crop)--> classify --> smooth --> transitions

``predict_video(classify, class_names, "clip.mp4")`` returns a :class:`VideoPrediction`
(one row per sampled frame, the transitions between stable emotional states);
``write_outputs`` writes ``<stem>.frames.csv``, ``<stem>.transitions.csv`` and a self-contained
plotly ``<stem>.timeline.html``. ``classify`` is any callable from a batch of face crops
``(B, H, W, 3)`` uint8 RGB to ``(B, C)`` probabilities, so the pipeline knows no model format.

Frame decoding and the face detectors (Haar, MediaPipe, YuNet, whole frame) live in
:mod:`emoexp.data.frames`, shared with the EAV loader.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emoexp.data.frames import FaceDetector, check_fps, crop, iter_frames, make_detector, video_info
from emoexp.data.io import atomic_write_text

log = logging.getLogger(__name__)

Classify = Callable[[np.ndarray], Any]                # (B, H, W, 3) uint8 RGB -> (B, C) probs

SMOOTHING_METHODS = ("ema", "median", "mean")
# What write_outputs writes next to each other: <video stem><suffix>
OUTPUT_SUFFIXES = {"frames": ".frames.csv", "transitions": ".transitions.csv", "timeline": ".timeline.html"}


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
    check_fps(fps)
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
    atomic_write_text(paths["frames"], pred.frames.round(6).to_csv(index=False))
    atomic_write_text(paths["transitions"], pred.transitions.round(6).to_csv(index=False))
    fig = timeline_figure(pred, title=f"{Path(video_name).name}: emotion over time")
    atomic_write_text(paths["timeline"], fig.to_html(include_plotlyjs=True, full_html=True))
    return paths
