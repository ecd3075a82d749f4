"""Classical baselines: a scikit-learn model on classical features, same data, same split.

``emoexp baseline <task>`` (and ``emoexp cv <task> --baseline``, fold by fold) answers "what
does a deep run buy over the obvious classical model?". The features come from the very
datasets the task hands the engine (the same split, the same preprocessing, training-set
augmentation switched off), one function per kind of input:

=================  ==========================================================================
task               features
=================  ==========================================================================
pretrain_faced,    EEG windows as the model sees them (z-scored per channel): log band power
finetune_eav       (Welch PSD, mean over the band) and differential entropy (0.5 log(2 pi e
                   var) of the band-passed signal, 4th-order Butterworth) per channel in delta
                   1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz; with ``use_audio``
                   the MFCC windows' mean and std per coefficient and the audio mask; with
                   ``use_video`` the frames' mean grey image at 8x8
train_eeg_llm      the same band features of the raw DEAP windows (after the baseline step)
train_speech       MFCC statistics of the clip (torchaudio, 20 coefficients): mean, std, min,
                   max of each and the std of its first difference
train_face         HOG of the grey image at 48x48 (OpenCV, 8x8 cells, 2x2-cell blocks, 9
                   orientations: 900 values); ``features="pixels"``: the grey image at 24x24
train_posture      per feature of the (seq_length, 15) sequence as the model sees it: mean,
                   std, min, max, mean absolute frame-to-frame change, last minus first
train_classifier   the feature vectors as given
=================  ==========================================================================

The classifier is ``StandardScaler -> LogisticRegression(class_weight="balanced")``, one per
head, its ``C`` picked from :data:`C_GRID` by the validation macro-F1 and then scored on the test
split. Metrics carry the deep runs' names (``val_macro_f1``, ``val_f1.<class>``,
``test_accuracy``, ``stress.val_macro_f1`` ...; ``best_val_macro_f1`` is the chosen model's
validation macro-F1), so baseline and deep runs sit side by side in one comparison; a baseline
run is tagged ``emoexp.model_kind=baseline``.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emoexp import tracking as T
from emoexp.data.eeg import EEG_BANDS  # noqa: F401  (the bands' names and edges, shared with models/eeg.py)

log = logging.getLogger(__name__)

# Inverse regularisation strengths tried; the validation macro-F1 picks one.
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
_BATCH = 256
FEATURE_KINDS = ("auto", "hog", "pixels")


# ---------------------------------------------------------------------------------------------
# features


def band_features(x: np.ndarray, sample_rate: float, bands: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """(N, C, T) windows -> (N, C * n_bands * 2): per channel and band, log band power (Welch)
    then differential entropy (of the band-passed signal), channel-major.

    Both are standard EEG emotion features (TorchEEG's PSD and DE); under a Gaussian model DE is
    an affine function of the band's power, here they differ in how the power is estimated
    (Welch periodogram vs the variance of a zero-phase band-pass).
    """
    from scipy.signal import butter, sosfiltfilt, welch

    x = np.asarray(x, dtype=np.float64)
    n, c, t = x.shape
    bands = dict(bands or EEG_BANDS)
    nyq = sample_rate / 2.0
    freqs, psd = welch(x, fs=sample_rate, nperseg=min(t, int(round(sample_rate))), axis=-1)  # (N, C, F)
    lbp, de = [], []
    for lo, hi in bands.values():
        hi = min(hi, 0.95 * nyq)
        if lo >= hi:
            raise ValueError(f"band {lo}-{hi} Hz does not fit below the Nyquist frequency {nyq} Hz")
        sel = (freqs >= lo) & (freqs < hi)
        if not sel.any():  # a short window's coarse grid: the nearest bin
            sel = np.abs(freqs - (lo + hi) / 2) == np.min(np.abs(freqs - (lo + hi) / 2))
        lbp.append(np.log(psd[..., sel].mean(axis=-1) + 1e-12))                           # (N, C)
        sos = butter(4, [lo, hi], btype="bandpass", fs=sample_rate, output="sos")
        band = sosfiltfilt(sos, x, axis=-1, padlen=min(t - 1, 3 * (2 * len(sos) + 1)))
        de.append(0.5 * np.log(2 * math.pi * math.e * band.var(axis=-1) + 1e-12))          # (N, C)
    out = np.stack([np.stack(lbp, -1), np.stack(de, -1)], axis=-1)                           # (N, C, B, 2)
    return out.reshape(n, -1).astype(np.float32)


def mfcc_stats(waves: np.ndarray, sample_rate: int, n_mfcc: int = 20) -> np.ndarray:
    """(N, samples) waveforms -> (N, n_mfcc * 5): mean, std, min, max and std of the first
    difference of each MFCC over the clip's frames (torchaudio)."""
    import torch
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(
        sample_rate=int(sample_rate), n_mfcc=n_mfcc,
        melkwargs={"n_fft": 512, "hop_length": int(sample_rate) // 100, "n_mels": 40},
    )
    out = []
    for i in range(0, len(waves), _BATCH):
        with torch.no_grad():
            m = mfcc(torch.as_tensor(np.asarray(waves[i:i + _BATCH], dtype=np.float32))).numpy()  # (B, n_mfcc, F)
        d = np.diff(m, axis=-1)
        out.append(np.concatenate([m.mean(-1), m.std(-1), m.min(-1), m.max(-1), d.std(-1)], axis=1))
    return np.concatenate(out).astype(np.float32)


def hog_features(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, 3) uint8 -> (N, 900) HOG of the grey image resized to 48x48 (OpenCV)."""
    import cv2

    hog = cv2.HOGDescriptor((48, 48), (16, 16), (8, 8), (8, 8), 9)
    grey = _grey48(images, 48)
    return np.stack([hog.compute(g).ravel() for g in grey]).astype(np.float32)


def pixel_features(images: np.ndarray, size: int = 24) -> np.ndarray:
    """(N, H, W[, 3]) uint8 -> (N, size * size) grey pixels in [0, 1] (area-downscaled)."""
    return _grey48(images, size).reshape(len(images), -1).astype(np.float32) / 255.0


def _grey48(images: np.ndarray, size: int) -> np.ndarray:
    import cv2

    a = np.asarray(images)
    if a.ndim == 4:
        a = a[..., 0] if a.shape[-1] == 1 else np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in a])
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in a.astype(np.uint8)])


def sequence_stats(x: np.ndarray) -> np.ndarray:
    """(N, T, F) sequences -> (N, F * 6): per feature mean, std, min, max, mean absolute
    frame-to-frame change and last minus first."""
    x = np.asarray(x, dtype=np.float64)
    d = np.diff(x, axis=1)
    parts = [x.mean(1), x.std(1), x.min(1), x.max(1), np.abs(d).mean(1) if d.shape[1] else 0 * x[:, 0],
             x[:, -1] - x[:, 0]]
    return np.concatenate(parts, axis=1).astype(np.float32)


def _plain(dataset):
    """The dataset as evaluation sees it: training augmentation and random crops off."""
    ds = copy.copy(dataset)
    if getattr(ds, "augment", False):
        ds.augment = False
    if getattr(ds, "train", False) is True:  # posture sequences: the centre crop
        ds.train = False
    return ds


def _batches(dataset, keys: tuple[str, ...]):
    """The dataset's items in order, ``keys`` stacked as numpy arrays, a batch at a time."""
    from torch.utils.data import DataLoader, default_collate

    def collate(batch):
        return batch if isinstance(batch, dict) else default_collate(batch)

    for batch in DataLoader(_plain(dataset), batch_size=_BATCH, shuffle=False, collate_fn=collate):
        yield {k: batch[k].numpy() for k in keys if k in batch}


def _eeg_window_features(dataset, cfg, info, kind: str) -> np.ndarray:
    """pretrain_faced / finetune_eav: band features of the windows, plus audio MFCC and video
    summaries when the task fuses them."""
    sr = float(info["sample_rate"])
    parts = []
    for b in _batches(dataset, ("eeg", "audio", "audio_mask", "video")):
        cols = [band_features(b["eeg"], sr)]
        if "audio" in b:  # (B, n_mfcc, F) MFCC frames; masked (listening) windows are zeros
            a = b["audio"]
            cols.append(np.concatenate([a.mean(-1), a.std(-1), b["audio_mask"][:, None]], axis=1))
        if "video" in b:  # (B, F, 3, S, S) normalised crops -> mean grey image at 8x8
            import torch

            v = torch.from_numpy(b["video"]).mean(dim=(1, 2), keepdim=False)[:, None]  # (B, 1, S, S)
            cols.append(torch.nn.functional.adaptive_avg_pool2d(v, 8).flatten(1).numpy())
        parts.append(np.concatenate(cols, axis=1))
    return np.concatenate(parts).astype(np.float32)


def _deap_features(dataset, cfg, info, kind: str) -> np.ndarray:
    """train_eeg_llm: band features of the raw windows its tokens are made from."""
    from emoexp.data.eeg_tokens import cut_windows

    idx = dataset.index
    return np.concatenate([band_features(cut_windows(dataset.trials, idx[i:i + _BATCH], int(cfg.window_size)),
                                         float(info["sample_rate"])) for i in range(0, len(idx), _BATCH)])


def _speech_features(dataset, cfg, info, kind: str) -> np.ndarray:
    waves = np.stack([np.asarray(w, dtype=np.float32) for w in dataset.waves])
    return mfcc_stats(waves, int(dataset.sample_rate))


def _face_features(dataset, cfg, info, kind: str) -> np.ndarray:
    images = dataset.pixels.permute(0, 2, 3, 1).numpy()  # (N, S, S, 3) uint8, before normalisation
    return pixel_features(images) if kind == "pixels" else hog_features(images)


def _posture_features(dataset, cfg, info, kind: str) -> np.ndarray:
    return sequence_stats(np.concatenate([b["sequence"] for b in _batches(dataset, ("sequence",))]))


def _given_features(dataset, cfg, info, kind: str) -> np.ndarray:
    return np.asarray(dataset.x, dtype=np.float32)


# task name -> (features(dataset, cfg, info, kind) -> (N, D), a word for the params)
FEATURES: dict[str, tuple[Callable[..., np.ndarray], str]] = {
    "pretrain_faced": (_eeg_window_features, "eeg_band_power+de"),
    "finetune_eav": (_eeg_window_features, "eeg_band_power+de"),
    "train_eeg_llm": (_deap_features, "eeg_band_power+de"),
    "train_speech": (_speech_features, "mfcc_stats"),
    "train_face": (_face_features, "hog"),
    "train_posture": (_posture_features, "sequence_stats"),
    "train_classifier": (_given_features, "given"),
}


def feature_name(task_name: str, kind: str = "auto") -> str:
    if task_name not in FEATURES:
        raise ValueError(f"no baseline features for task {task_name!r}; known: {', '.join(sorted(FEATURES))}")
    return FEATURES[task_name][1] if kind in ("auto", "") else kind


def task_features(task, cfg, dataset, info: dict[str, Any], kind: str = "auto") -> np.ndarray:
    """(N, D) baseline features of ``dataset`` (one of the task's DataBundle sides)."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {', '.join(FEATURE_KINDS)}, not {kind!r}")
    if kind != "auto" and task.name != "train_face":
        raise ValueError(f"features={kind} applies to train_face only")
    fn = FEATURES[task.name][0] if task.name in FEATURES else None
    if fn is None:
        raise ValueError(f"no baseline features for task {task.name!r}; known: {', '.join(sorted(FEATURES))}")
    return fn(dataset, cfg, info, kind)


def head_targets(dataset, heads: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """(N,) int labels per head of a DataBundle side, in item order."""
    if hasattr(dataset, "head_targets"):
        return {h: np.asarray(dataset.head_targets(h)) for h in heads}
    t = dataset.targets
    if isinstance(t, dict):
        return {h: np.asarray(t[h]) for h in heads}
    return {next(iter(heads)): np.asarray(t)}


# ---------------------------------------------------------------------------------------------
# the classifier


def _pipeline(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, class_weight="balanced",
                                                              random_state=seed))


def _proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities over all classes (a class absent from training gets 0)."""
    p = np.zeros((len(x), n_classes), dtype=np.float64)
    if len(x):
        p[:, model.classes_.astype(int)] = model.predict_proba(x)
    return p


def _fit_head(xtr, ytr, xva, yva, classes: list[str], seed: int) -> tuple[Any, float, dict]:
    """The pipeline with the best validation macro-F1 over :data:`C_GRID` (ties: the smaller C)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from emoexp.evaluation import classification_metrics

    if len(np.unique(ytr)) < 2:  # e.g. a gender head on a split with one speaker's gender
        from sklearn.dummy import DummyClassifier

        model = DummyClassifier(strategy="most_frequent").fit(xtr, ytr)
        return model, float("nan"), classification_metrics(yva, _proba(model, xva, len(classes)), classes)
    best = None
    for C in C_GRID:
        model = _pipeline(C, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(xtr, ytr)
        m = classification_metrics(yva, _proba(model, xva, len(classes)), classes)
        if best is None or m["macro_f1"] > best[2]["macro_f1"]:
            best = (model, C, m)
    return best


def _split_metrics(model, x, y, classes: list[str], prefix: str, head: str, primary: bool) -> tuple[dict, np.ndarray]:
    from sklearn.metrics import log_loss

    from emoexp.evaluation import classification_metrics

    p = _proba(model, x, len(classes))
    m = classification_metrics(y, p, classes)
    q = np.clip(p, 1e-7, 1.0)
    q /= q.sum(axis=1, keepdims=True)
    out = {
        T.head_metric(head, f"{prefix}_accuracy", primary): m["accuracy"],
        T.head_metric(head, f"{prefix}_macro_f1", primary): m["macro_f1"],
        T.head_metric(head, f"{prefix}_loss", primary):
            float(log_loss(y, q, labels=list(range(len(classes))))) if len(y) else float("nan"),
    }
    out.update({T.head_metric(head, f"{prefix}_f1.{c}", primary): f for c, f in m["f1"].items()})
    return out, p


def fit_baseline(task, cfg, data, *, run=None, features: str = "auto") -> dict[str, float]:
    """Fit the classical baseline of ``task`` on ``data`` (a DataBundle) and score it.

    Returns the metrics under the deep runs' names: ``val_accuracy``, ``val_macro_f1``,
    ``val_f1.<class>``, ``val_loss``, ``test_*`` when there is a test split,
    ``best_val_macro_f1`` (the chosen model's validation macro-F1), the same for every other head
    (``stress.val_macro_f1``), the task's extra metrics (``val_joint_accuracy``) and
    ``baseline.C`` (``<head>.baseline.C``). With ``run`` (an MLflow run, or a
    :class:`~emoexp.tracking.Tracker`) the metrics, ``baseline.*`` params and the evaluation
    reports (``eval/``) are logged to it. No global state: cross-validation calls it per fold.
    """
    import time

    t0 = time.perf_counter()
    info = {**data.info, "heads": data.heads}
    primary = data.primary_head
    sides = {"train": data.train, "val": data.val}
    if data.test is not None and len(data.test):
        sides["test"] = data.test
    x = {s: task_features(task, cfg, ds, info, features) for s, ds in sides.items()}
    y = {s: head_targets(ds, data.heads) for s, ds in sides.items()}
    seed = int(getattr(cfg, "seed", 0))
    metrics: dict[str, float] = {}
    preds: dict[str, dict[str, dict]] = {s: {} for s in sides if s != "train"}
    params: dict[str, Any] = {"baseline.features": feature_name(task.name, features),
                              "baseline.n_features": int(x["train"].shape[1]),
                              "baseline.classifier": "StandardScaler+LogisticRegression(balanced)"}
    for head, classes in data.heads.items():
        is_primary = head == primary
        model, C, _ = _fit_head(x["train"], y["train"][head], x["val"], y["val"][head], classes, seed)
        metrics[T.head_metric(head, "baseline.C", is_primary)] = float(C)
        for side in preds:
            m, p = _split_metrics(model, x[side], y[side][head], classes, side, head, is_primary)
            metrics.update(m)
            preds[side][head] = {"probs": p, "targets": y[side][head], "loss": m[T.head_metric(head, f"{side}_loss", is_primary)]}
        metrics[T.head_metric(head, T.M_BEST_VAL_F1, is_primary)] = metrics[T.head_metric(head, T.M_VAL_F1, is_primary)]
    for side, p in preds.items():
        metrics.update(task.extra_metrics(p, data.heads, side))
    metrics["baseline.fit_time_s"] = time.perf_counter() - t0
    if run is not None:
        tracker = _tracker(run)
        tracker.log_params(params)
        tracker.log_metrics(metrics, step=0)
        _log_reports(tracker, preds, data.heads, primary)
    return metrics


def _tracker(run) -> T.Tracker:
    """A Tracker for ``run``: a Tracker as is, an MLflow run (or its id) wrapped."""
    if isinstance(run, T.Tracker):
        return run
    run_id = run if isinstance(run, str) else run.info.run_id
    return T.MlflowTracker(run_id)


def _log_reports(tracker, preds: dict, heads: dict[str, list[str]], primary: str) -> None:
    """Confusion matrix, per-class report and ROC of the test split (else val) under ``eval/``."""
    if not tracker.enabled:
        return
    from emoexp.evaluation import report_files

    side = "test" if "test" in preds else "val"
    with tempfile.TemporaryDirectory(prefix="emoexp-baseline-") as tmp:
        out = Path(tmp)
        for head, classes in heads.items():
            p = preds[side][head]
            report_files(p["targets"], p["probs"], classes, out, "" if head == primary else f"{head}.",
                         title=f"{head} ({side}, baseline)")
        tracker.log_artifacts(out, T.ART_EVAL_DIR)


# ---------------------------------------------------------------------------------------------
# a run


def run_baseline(task_name: str, overrides: dict[str, Any] | None = None, *, features: str = "auto",
                 track: bool = True, nested: bool = False) -> dict[str, Any]:
    """``emoexp baseline <task>``: build the task's data as the engine does, fit the baseline and
    log one MLflow run (the deep runs' params where they apply, ``baseline.*`` params, the
    metrics, ``config.yaml``, ``split.json``, ``eval/``), tagged ``emoexp.model_kind=baseline``.
    Returns ``{"run_id": ..., "metrics": {...}}``."""
    import contextlib
    import json

    import yaml

    from emoexp.config import apply_overrides
    from emoexp.tasks import get_task

    task = get_task(task_name)
    feature_name(task.name, features)  # an unknown task fails before any data is read
    asked = apply_overrides(task.default_config(), dict(overrides or {}))
    cfg = task.prepare(asked)
    data = task.build_data(cfg)
    ctx: contextlib.AbstractContextManager
    if track:
        ctx = T.mlflow_run(
            experiment_name=cfg.experiment_name or task.name,
            run_name=f"{task.run_name(cfg)}-baseline",
            nested=nested,
            description=f"Classical baseline ({feature_name(task.name, features)} + logistic regression) of "
                        f"{task.name}: {task.summary}",
        )
    else:
        ctx = contextlib.nullcontext(T.Tracker())
    with ctx as tracker:
        params = dict(asked.to_dict())
        resolved = cfg.to_dict()
        params.update({f"{T.PARAM_RESOLVED_PREFIX}{k}": v for k, v in resolved.items() if params.get(k) != v})
        params.update({
            "n_train": len(data.train), "n_val": len(data.val),
            "n_test": len(data.test) if data.test is not None else 0,
            "n_classes": len(data.class_names), "split_scheme": data.split.get("scheme", cfg.split),
        })
        tracker.log_params(params)
        tracker.set_tags({T.TAG_TASK: task.name, T.TAG_MODALITY: task.modality,
                          T.TAG_DATASET: str(data.info.get("dataset") or task.dataset),
                          T.TAG_MODEL_KIND: T.MODEL_KIND_BASELINE})
        tracker.log_text(yaml.safe_dump({"task": task.name, **resolved}, sort_keys=False), T.ART_CONFIG)
        tracker.log_text(json.dumps(data.split, indent=2, default=str), T.ART_SPLIT)
        metrics = fit_baseline(task, cfg, data, run=tracker, features=features)
        tracker.log_metrics({T.M_SKIPPED: len(data.skipped_files)}, step=0)
    return {"run_id": tracker.run_id, "metrics": metrics, "task": task.name}
