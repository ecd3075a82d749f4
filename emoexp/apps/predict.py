"""Run a logged or registered emoexp model on raw files: EEG ``.npy``, FACED ``.pkl``, EAV ``.mat``,
DEAP ``.dat``, ``.wav``, face images ``.jpg``/``.png``.

Each reader turns a file into *segments* (a recording, a clip, a trial), each a dict of
continuous arrays at the model's rates; every segment is cut into the model's windows and
predicted. The readers live in :mod:`emoexp.data.raw_files`; the dataset registry
(:func:`emoexp.data.registry.file_readers`) says which one reads a file suffix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoexp.data.base import DataError
from emoexp.data.raw_files import Segment
from emoexp.data.registry import file_readers
from emoexp.data.windows import stride_from_fraction, window_starts, window_view

_BATCH = 256  # windows per model call: bounds memory on long recordings


@dataclass
class ModelSpec:
    """What readers need to know about the model, from its signature and checkpoint info."""

    task: str
    inputs: dict[str, tuple[int, ...]]          # input name -> schema shape, (-1, C, T) or (-1, n)
    required: tuple[str, ...]                   # inputs a file must provide (others are optional)
    sample_rate: float = 0.0                    # EEG samples per second the model was trained on
    n_channels: int = 0
    channel_names: list[str] | None = None
    audio_sample_rate: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def rate(self, name: str) -> float:
        """Samples per second of input ``name``."""
        return float(self.audio_sample_rate if name == "audio" else self.sample_rate)

    def window(self, name: str) -> int:
        """Samples per window of input ``name`` (the schema's last dimension; for an input the
        schema leaves open, such as the EEG-LLM's, the window the model was trained on)."""
        if self.inputs[name] == (-1,) and self.extra.get("window_size"):
            return int(self.extra["window_size"])
        return int(self.inputs[name][-1])


def load_model(model_uri: str):
    """-> (:class:`~emoexp.serving.EmoexpModel`, the MLflow model's metadata), emoexp's own way:
    the metadata from the ``MLmodel`` file (YAML), the network rebuilt by the task registry from
    the config and ``weights_only`` state in its ``checkpoint.pt``. The model's
    ``python_model.pkl`` is never unpickled, so a model folder from elsewhere runs no code here
    (``mlflow.pyfunc.load_model`` and ``mlflow models serve`` would run it: MLflow's design)."""
    from mlflow.models import Model

    from emoexp.checkpoints import CheckpointError, fetched, load_from_uri
    from emoexp.serving import EmoexpModel

    try:
        with fetched(model_uri) as local:
            mlmodel = local / "MLmodel" if local.is_dir() else None
            if mlmodel is None or not mlmodel.is_file():
                raise ValueError(f"{model_uri}: not an MLflow model (no MLmodel file); predict takes runs:/<id>/model, "
                                 "models:/<name>@<alias> or a model folder")
            try:
                metadata = Model.load(str(mlmodel))
            except Exception as e:
                raise ValueError(f"{model_uri}: unreadable MLmodel file ({type(e).__name__}: {e})") from None
            model = EmoexpModel()
            model._from_state(load_from_uri(str(local)))
    except CheckpointError as e:
        raise ValueError(f"{model_uri}: cannot load the model ({str(e).split(': ', 1)[-1]})") from None
    return model, metadata


def model_spec(model, metadata=None) -> ModelSpec:
    """The :class:`ModelSpec` of a loaded emoexp model (its metadata's inputs + checkpoint info):
    an :class:`~emoexp.serving.EmoexpModel` with its ``metadata`` (:func:`load_model`), or a pyfunc."""
    from emoexp.serving import EmoexpModel, input_shapes

    if isinstance(model, EmoexpModel):
        py = model
    else:
        py, metadata = model.unwrap_python_model(), model.metadata
    if not isinstance(py, EmoexpModel):
        raise ValueError(f"{metadata.artifact_path or 'model'}: not an emoexp model "
                         f"(python model {type(py).__name__})")
    inputs = input_shapes(metadata)
    info, cfg = py.info, py.cfg
    return ModelSpec(
        task=py.task.name,
        inputs=inputs,
        required=tuple(getattr(py.task, "serving_inputs", tuple(inputs))),
        sample_rate=float(info.get("sample_rate", 0.0)),
        n_channels=int(info.get("n_channels", 0)),
        channel_names=info.get("channel_names"),
        # a speech model's audio rate is its only rate; an EEG+audio model keeps the two apart
        audio_sample_rate=int(info["sample_rate"] if "waveform" in inputs
                              else getattr(cfg, "audio_sample_rate", 0) or 0),
        extra={"classes": next(iter(info["heads"].values())), "clip_samples": int(info.get("clip_samples", 0)),
               "seq_length": int(info.get("seq_length", 0)), "n_features": int(info.get("n_features", 0)),
               "fps": float(info.get("fps", 30.0)), "window_size": int(info.get("window_size", 0)),
               "baseline": getattr(cfg, "baseline", "")},
    )


def _segment_inputs(path: Path, k: int, seg: Segment, spec: ModelSpec, overlap: float) -> tuple[dict, np.ndarray]:
    """One segment -> ({input: windows (n, ...)}, start seconds (n,)); absent optional inputs zero."""
    ref = next(iter(seg))
    rate, size = spec.rate(ref), spec.window(ref)
    length = seg[ref].shape[-1]
    if length < size:
        raise DataError(path, f"segment {k} has {length} samples at {rate:g} Hz, shorter than model "
                              f"{spec.task}'s window of {size} samples ({size / rate:.2f} s)")
    starts_s = window_starts(length, size, stride_from_fraction(size, overlap)) / rate
    n = len(starts_s)
    out: dict[str, np.ndarray] = {}
    for name, shape in spec.inputs.items():
        if name in seg:
            w_size = spec.window(name)   # (..., T) -> (n, ..., w_size), each input at its own rate
            views = window_view(seg[name], w_size, stride_from_fraction(w_size, overlap))
            out[name] = np.ascontiguousarray(views[:n], dtype=np.float32)
        elif name in spec.required:
            raise DataError(path, f"model {spec.task} needs a {name!r} input, which this file does not hold")
        else:
            # e.g. the audio of an EEG+audio model: silence stands for "no audio" (masked)
            out[name] = np.zeros((n, *shape[1:]), dtype=np.float32)
    return out, starts_s


def _speech_windows(wave: np.ndarray, spec: ModelSpec, overlap: float) -> tuple[dict, np.ndarray]:
    """A speech recording -> clip-length windows (one window, whole, when it is no longer than a
    clip: the model trims and pads it as in training)."""
    rate, size = spec.audio_sample_rate, spec.extra["clip_samples"]
    if len(wave) <= size:
        windows, starts = [wave], np.zeros(1)
    else:
        begin = window_starts(len(wave), size, stride_from_fraction(size, overlap))
        windows, starts = [wave[b:b + size] for b in begin], begin / rate
    batch = np.empty(len(windows), dtype=object)
    batch[:] = windows
    return {"waveform": batch, "sample_rate": np.full(len(windows), rate, dtype=np.int64)}, starts


def _sequence_windows(seq: np.ndarray, spec: ModelSpec, overlap: float) -> tuple[dict, np.ndarray]:
    """A posture-feature sequence -> seq_length windows (one, padded by the model, when shorter);
    start times assume the seed's 30 frames per second."""
    size = spec.extra["seq_length"]
    if len(seq) <= size:
        return {"sequence": seq[None]}, np.zeros(1)
    begin = window_starts(len(seq), size, stride_from_fraction(size, overlap))
    return {"sequence": np.stack([seq[b:b + size] for b in begin])}, begin / spec.extra["fps"]


def predict_files(model_uri: str, files: list[str], *, overlap: float = 0.0,
                  errors: list[tuple[str, str]] | None = None) -> Any:
    """Predict every window of every file -> DataFrame, one row per window.

    Columns: ``file``, ``segment`` (recording / clip / trial), ``window``, ``start_s``, ``label``,
    ``prob`` (the label's probability), then the model's ``prob_<class>`` columns.
    ``overlap`` in [0, 1): 0 cuts back-to-back windows, 0.5 half-overlapping ones; it is a
    fraction of each model input's own window, turned into a stride in samples per input
    (:func:`emoexp.data.windows.stride_from_fraction`).

    ``errors``: a list to collect ``(file, problem)`` of the files that could not be predicted,
    while the others are; without it the first bad file raises :class:`DataError`. When no file
    could be predicted, that raises either way.
    """
    import pandas as pd

    stride_from_fraction(1, overlap)   # checks overlap in [0, 1) before loading anything
    if not files:
        raise ValueError("no files to predict")
    paths = [Path(f) for f in files]
    readers = file_readers()
    bad: list[tuple[str, str]] = []

    def reject(path: Path, why: str) -> None:
        if errors is None:
            raise DataError(path, why)
        bad.append((os.fspath(path), why))

    good = []
    for p in paths:
        if p.suffix.lower() not in readers:
            reject(p, f"unknown file type {p.suffix or '(none)'!r}; known: {', '.join(readers)}")
        elif not p.is_file():
            reject(p, "no such file")
        else:
            good.append(p)
    if not good:
        if errors is not None:
            errors.extend(bad)
        raise DataError(bad[0][0], bad[0][1]) if len(bad) == 1 else ValueError(
            f"no file could be predicted: {'; '.join(f'{p}: {w}' for p, w in bad)}")
    model, metadata = load_model(model_uri)
    spec = model_spec(model, metadata)
    frames = []
    for path in good:
        try:
            frames += _predict_file(model, spec, readers[path.suffix.lower()], path, overlap)
        except DataError as e:
            reject(path, e.problem if e.path == os.fspath(path) else str(e))
        except ValueError as e:  # the model refused what the file held (emoexp.serving.InputError)
            reject(path, str(e))
    if errors is not None:
        errors.extend(bad)
    if not frames:
        if len(bad) == 1:
            raise DataError(bad[0][0], bad[0][1])
        raise ValueError(f"no file could be predicted: {'; '.join(f'{p}: {w}' for p, w in bad)}")
    return pd.concat(frames, ignore_index=True)


def _predict_file(model, spec: ModelSpec, reader, path: Path, overlap: float) -> list:
    """One file -> one DataFrame per segment (see :func:`predict_files`)."""
    import pandas as pd

    from emoexp.serving import predict_frame

    frames = []
    for k, seg in enumerate(reader(path, spec)):
        _check_finite(path, k, seg)
        if "image" in seg:  # an image is one sample, not a signal to cut into windows
            inputs, starts = {"image": seg["image"][None]}, np.zeros(1)
        elif "sequence" in seg:
            inputs, starts = _sequence_windows(seg["sequence"], spec, overlap)
        elif "waveform" in seg:
            inputs, starts = _speech_windows(seg["waveform"], spec, overlap)
        else:
            inputs, starts = _segment_inputs(path, k, seg, spec, overlap)
        preds = [predict_frame(model.task, model.cfg, model.info, model.model,
                               {n: a[i : i + _BATCH] for n, a in inputs.items()})
                 for i in range(0, len(starts), _BATCH)]
        df = pd.concat(preds, ignore_index=True)
        prob_cols = [c for c in df.columns if c.startswith("prob_")]
        df.insert(0, "prob", df[prob_cols].max(axis=1))
        df.insert(0, "label", df.pop("label"))
        meta = pd.DataFrame({"file": os.fspath(path), "segment": k, "window": np.arange(len(starts)),
                             "start_s": np.round(starts, 4)})
        frames.append(pd.concat([meta, df], axis=1))
    return frames


def _check_finite(path: Path, k: int, seg: Segment) -> None:
    """A segment's signals must be finite numbers: NaN or infinite samples are the file's error."""
    for name, a in seg.items():
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            n = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise DataError(path, f"segment {k}: {name} holds {n} NaN or infinite value(s)")
