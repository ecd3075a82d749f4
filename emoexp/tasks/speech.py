"""Speech emotion (seed 002): RAVDESS (or EAV speaking trials) with a wav2vec2 + log-mel dual-branch
model and an auxiliary gender head."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from emoexp.config import ConfigError, TrainConfig, opt
from emoexp.data.registry import dataset_choices, dataset_dir
from emoexp.tasks.base import Task, register_task

log = logging.getLogger(__name__)

GENDERS = ["male", "female"]  # RAVDESS: odd actors male, even female


def _spec_encoders() -> tuple[str, ...]:
    from emoexp.models.speech import SPEC_ENCODERS

    return SPEC_ENCODERS


@dataclass
class SpeechConfig(TrainConfig):
    """Seed 002: RAVDESS speech emotion with a wav2vec2 + spectrogram dual-branch model."""

    data_dir: str = opt(dataset_dir("ravdess"), "RAVDESS root with Actor_XX/ folders (the Kaggle mirror's doubled tree is fine), or an EAV root with dataset=eav")
    dataset: str = opt("ravdess", "ravdess | eav (the speaking trials' audio, cut into clip_seconds clips)")
    emotion_subset: str = opt("basic6", "basic4: neutral happy sad angry | basic6: + fearful surprised (seed 002's pick) | all: 8 (RAVDESS)")
    vocal_channel: str = opt("speech", "RAVDESS: speech | song | both")
    epochs: int = opt(50, "seed 002: at least 50 epochs")
    batch_size: int = opt(16, "seed 002: 16")
    lr: float = opt(3e-5, "seed 002: 3e-5")
    optimizer: str = opt("adam", "seed 002: Adam with weight decay")
    weight_decay: float = opt(1e-4, "seed 002: Adam with weight decay")
    scheduler: str = opt("cosine", "seed 002: cosine annealing")
    split: str = opt("subject", "subject: by actor, no actor on two sides (seed 002) | random: stratified by file (leaks voices)")
    wav2vec2_path: str = opt("", "local pretrained wav2vec2 directory (save_pretrained layout); empty: a small random wav2vec2 (offline)")
    freeze_feature_extractor: bool = opt(True, "seed 002: keep wav2vec2's convolutional feature encoder fixed (stability)")
    context_layers: int = opt(2, "transformer layers over the wav2vec2 frames (seed 002's context layers)")
    pool_heads: int = opt(4, "attention-pooling heads (learned queries over time)")
    spec_branch: bool = opt(True, "seed 002's second branch: a log-mel spectrogram encoder, fused with wav2vec2")
    spec_encoder: str = opt("tdnn", "the spectrogram branch's encoder. tdnn: 1-D convolutions over time, mel bands as channels, mean+std pooling over time (keeps where energy sits in frequency) | cnn: 2-D CNN with global average pooling (checkpoints before this option)")
    n_mels: int = opt(64, "mel bands of the spectrogram branch")
    dropout: float = opt(0.3, "dropout in the heads")
    gender_loss_weight: float = opt(0.3, "loss weight of the auxiliary gender head (seed 002; RAVDESS actor parity); 0 = no gender head")
    sample_rate: int = opt(16000, "audio is resampled to this rate (wav2vec2 expects 16 kHz)")
    clip_seconds: float = opt(3.0, "leading/trailing silence is trimmed, then clips are centre-cropped or zero-padded to this length")
    augment: bool = opt(True, "waveform augmentation in training: noise, gain, time shift")
    noise_snr_db: float = opt(20.0, "augmentation: white noise at this SNR (dB), or lower down to SNR-10")
    gain_db: float = opt(6.0, "augmentation: random gain within +-gain_db dB")
    shift_seconds: float = opt(0.3, "augmentation: random circular time shift within +-shift_seconds")
    cache_features: bool = opt(True, "reuse frozen wav2vec2 conv features of un-augmented clips (val, test; train with augment=false)")
    mixed_precision: bool = opt(True, "seed 002: autocast + gradient scaling when training on CUDA (ignored on CPU)")
    cache_dir: str = opt("", "where decoded clips are cached; empty: $EMOEXP_CACHE_DIR or ~/.cache/emoexp")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = (
        "dataset", "emotion_subset", "context_layers", "pool_heads", "spec_branch", "spec_encoder", "n_mels", "dropout",
        "gender_loss_weight", "sample_rate", "clip_seconds",
    )
    CHOICES: ClassVar[dict[str, Any]] = {
        "dataset": dataset_choices("speech"), "emotion_subset": ("basic4", "basic6", "all"),
        "vocal_channel": ("speech", "song", "both"), "split": ("subject", "random"),
        "spec_encoder": _spec_encoders,
    }
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {"spec_encoder": "cnn"}

    def __post_init__(self) -> None:
        if self.clip_seconds < 0.5:
            raise ConfigError(f"clip_seconds must be >= 0.5 (wav2vec2 needs frames), got {self.clip_seconds}")
        if self.gender_loss_weight < 0:
            raise ConfigError(f"gender_loss_weight must be >= 0, got {self.gender_loss_weight}")


@register_task
class TrainSpeech(Task):
    name = "train_speech"
    modality = "speech"
    dataset = "speech"
    registered_model = "emoexp-speech"
    config_cls = SpeechConfig
    summary = "Speech emotion from RAVDESS (or EAV speaking trials): wav2vec2 + log-mel branches, gender auxiliary head."
    serving_inputs = ("waveform", "sample_rate")
    flexible_inputs = ("waveform",)  # one waveform or a batch, any length and rate (checked here)
    ragged_inputs = ("waveform",)    # a batch may hold waveforms of different lengths
    extra_requirements = ("transformers",)  # the served model rebuilds wav2vec2
    # seed 002's train script flags
    option_aliases = {"data_dir": ("--dataset-root",), "lr": ("--learning-rate",)}
    # per-emotion sampling-weight flags, as for faces (--sad 5 --angry 0.5)
    class_flags = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

    def build_data(self, cfg: SpeechConfig):
        import numpy as np

        from emoexp.data.base import BadFilePolicy, DataBundle
        from emoexp.data.eeg import resolve_cache_dir
        from emoexp.data.speech import WaveformDataset, eav_speech_clips

        policy = BadFilePolicy(cfg.on_bad_file)
        if cfg.dataset == "ravdess":
            from emoexp.data.ravdess import load_ravdess

            try:
                clips = load_ravdess(cfg.data_dir, subset=cfg.emotion_subset, sample_rate=cfg.sample_rate,
                                     clip_seconds=cfg.clip_seconds, vocal_channel=cfg.vocal_channel,
                                     policy=policy, max_actors=cfg.max_subjects,
                                     cache_dir=resolve_cache_dir(cfg.cache_dir or None, "ravdess"))
            except ValueError as e:
                if type(e) is ValueError:  # an unknown subset or channel: a config problem
                    raise ConfigError(str(e)) from None
                raise
        elif cfg.dataset == "eav":
            clips = eav_speech_clips(cfg.data_dir, sample_rate=cfg.sample_rate, clip_seconds=cfg.clip_seconds,
                                     policy=policy, max_subjects=cfg.max_subjects)
        else:
            raise ConfigError(f"dataset must be ravdess or eav, not {cfg.dataset!r}")

        names = list(clips.class_names)
        heads = {"emotion": names}
        targets = {"emotion": clips.labels}
        if cfg.gender_loss_weight > 0 and np.all(clips.gender >= 0):
            heads["gender"] = list(GENDERS)
            targets["gender"] = clips.gender
        sides = _split(clips.actor, clips.labels, cfg)
        utt = np.arange(len(clips.labels))

        def make(side: str, train: bool):
            idx = sides[side]
            if not len(idx):
                return None
            ds = WaveformDataset(clips.waves[idx], {h: t[idx] for h, t in targets.items()}, utt[idx],
                                 sample_rate=clips.sample_rate, augment=train and cfg.augment,
                                 noise_snr_db=cfg.noise_snr_db, gain_db=cfg.gain_db,
                                 shift_seconds=cfg.shift_seconds)
            # per-clip metadata for the error analysis (accuracy per actor and intensity)
            ds.meta = {"actor": clips.actor[idx], "intensity": clips.intensity[idx],
                       "path": [clips.paths[i] for i in idx]}
            return ds

        train, val, test = make("train", True), make("val", False), make("test", False)
        if train is None or val is None:
            raise ConfigError(f"{cfg.data_dir}: the {cfg.split} split left no training or validation clips "
                              f"({len(clips.labels)} clips from {len(set(clips.actor.tolist()))} speakers); "
                              "add speakers or use split=random")
        counts = {side: {c: int(np.sum(clips.labels[idx] == k)) for k, c in enumerate(names)}
                  for side, idx in sides.items()}
        speakers = {side: sorted(int(a) for a in set(clips.actor[idx].tolist())) for side, idx in sides.items()}
        info = {
            "dataset": cfg.dataset,
            "source": str(cfg.data_dir),
            "sample_rate": int(clips.sample_rate),
            "clip_samples": int(clips.waves.shape[1]),
            "n_clips": int(len(clips.labels)),
            "duplicates_dropped": int(clips.n_duplicates),
            "class_counts": counts,
            "wav2vec2": _wav2vec2_config(cfg),
        }
        split = {"scheme": cfg.split, "speakers": speakers, "counts": counts,
                 "note": "speakers (RAVDESS actors, EAV subjects) per side: none on two sides"
                 if cfg.split == "subject" else "stratified random split of clips (speakers on several sides)"}
        ex = sides["val"][:2]
        return DataBundle(
            train=train, val=val, test=test, heads=heads, train_targets=train.targets["emotion"], split=split,
            input_example={"waveform": np.ascontiguousarray(clips.waves[ex]),
                           "sample_rate": np.full(len(ex), clips.sample_rate, dtype=np.int64)},
            info=info, skipped_files=list(policy.skipped),
        )

    def cv_pool(self, cfg: SpeechConfig, data):
        """Units: the clips, in load order, by speaker; clips cut from one recording (EAV) share
        its trial. A fold's sides are waveform datasets, augmented on the train side only."""
        import numpy as np

        from emoexp.data.folds import CVPool, FoldViews
        from emoexp.data.speech import WaveformDataset

        parts = [d for d in (data.train, data.val, data.test) if d is not None]
        order = np.argsort(np.concatenate([d.utt for d in parts]), kind="stable")
        waves = np.concatenate([d.waves for d in parts])[order]
        utt = np.concatenate([d.utt for d in parts])[order]
        targets = {h: np.concatenate([d.targets[h] for d in parts])[order] for h in data.heads}
        meta = {k: np.concatenate([np.asarray(d.meta[k]) for d in parts])[order] for k in parts[0].meta}
        recording = np.asarray([str(p).split("#", 1)[0] for p in meta["path"]])
        sr = parts[0].sample_rate

        def views(sides: dict[str, np.ndarray]) -> FoldViews:
            out = {}
            for side, idx in sides.items():
                ds = WaveformDataset(waves[idx], {h: t[idx] for h, t in targets.items()}, utt[idx], sample_rate=sr,
                                     augment=side == "train" and cfg.augment, noise_snr_db=cfg.noise_snr_db,
                                     gain_db=cfg.gain_db, shift_seconds=cfg.shift_seconds)
                ds.meta = {k: v[idx] for k, v in meta.items()}
                out[side] = ds
            return FoldViews(out, {s: np.asarray(i) for s, i in sides.items()})

        trials = recording if len(set(recording.tolist())) < len(recording) else None
        return CVPool(unit="clip", labels=targets[data.primary_head], subjects=meta["actor"], trials=trials,
                      views=views, subject_word="actor" if cfg.dataset == "ravdess" else "speaker")

    def build_model(self, cfg: SpeechConfig, info: dict[str, Any]):
        from emoexp.models import create_model

        net = create_model(
            "speech_net", heads={h: len(c) for h, c in info["heads"].items()}, wav2vec2=info["wav2vec2"],
            freeze_feature_extractor=cfg.freeze_feature_extractor, context_layers=cfg.context_layers,
            pool_heads=cfg.pool_heads, spec_branch=cfg.spec_branch, spec_encoder=cfg.spec_encoder, n_mels=cfg.n_mels,
            sample_rate=int(info["sample_rate"]), dropout=cfg.dropout,
        )
        net.cache_features = bool(cfg.cache_features and cfg.freeze_feature_extractor)
        return net

    def init_from_pretrained(self, model, cfg: SpeechConfig, info: dict[str, Any]) -> dict[str, str]:
        if not cfg.wav2vec2_path:
            return {"emoexp.wav2vec2": "random init (tiny configuration)"}
        from emoexp.models.speech import load_wav2vec2_weights

        try:
            load_wav2vec2_weights(model, cfg.wav2vec2_path)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return {"emoexp.wav2vec2": str(cfg.wav2vec2_path)}

    def head_loss_weights(self, cfg: SpeechConfig, info: dict[str, Any]) -> dict[str, float]:
        return {h: (cfg.gender_loss_weight if h == "gender" else 1.0) for h in info["heads"]}

    def serving_batch(self, inputs: dict[str, Any], cfg: SpeechConfig, info: dict[str, Any]) -> dict:
        import torch

        waves = prepare_waveforms(inputs, int(info["sample_rate"]), int(info["clip_samples"]))
        return {"waveform": torch.from_numpy(waves)}

    def error_analysis(self, dataset, preds: dict, heads: dict[str, list[str]], out_dir: Path) -> dict:
        """Most confused emotion pairs, accuracy per speaker and per intensity, the worst clips."""
        return write_error_analysis(dataset, preds, heads, Path(out_dir))


def _wav2vec2_config(cfg: SpeechConfig) -> dict:
    from emoexp.models.speech import wav2vec2_config

    try:
        return wav2vec2_config(cfg.wav2vec2_path)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _split(actors, labels, cfg: SpeechConfig) -> dict[str, Any]:
    """Clip indices per side: by speaker (``subject``) or stratified over clips (``random``)."""
    import numpy as np

    from emoexp.data.splits import split_subjects, split_trials

    if cfg.split == "subject":
        try:
            s = split_subjects([str(a) for a in actors], val_fraction=cfg.val_fraction,
                               test_fraction=cfg.test_fraction, seed=cfg.seed,
                               instead="more actors, or split=random to split one speaker's clips")
        except ValueError as e:
            raise ConfigError(f"{cfg.data_dir}: {e}") from None
        key = np.asarray([str(a) for a in actors])
        return {side: np.flatnonzero(np.isin(key, getattr(s, side))) for side in ("train", "val", "test")}
    if cfg.split == "random":
        sides = split_trials({"all": labels}, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                             seed=cfg.seed)
        return {side: sides[side]["all"] for side in ("train", "val", "test")}
    raise ConfigError(f"split must be subject (by speaker) or random, not {cfg.split!r}")


def prepare_waveforms(inputs: dict[str, Any], sample_rate: int, clip_samples: int):
    """Serving input -> (B, clip_samples) float32 at the model's rate, as in training: mono,
    resampled, silence trimmed, centre-cropped or padded.

    ``waveform``: one (n,) waveform, a (B, n) batch, or a list/object array of 1-D waveforms of
    different lengths; ``sample_rate``: one rate or one per waveform (default: the model's).
    """
    import numpy as np

    from emoexp.data import audio
    from emoexp.data.ravdess import trim_and_fit

    if "waveform" not in inputs:
        raise ValueError(f"input needs 'waveform' (float32 samples, one clip or a batch) and 'sample_rate'; "
                         f"got {sorted(inputs)}")
    raw = inputs["waveform"]
    if isinstance(raw, list | tuple) or (isinstance(raw, np.ndarray) and raw.dtype == object):
        # MLflow hands a "ragged" tensor over as an object array: of waveforms (B,), or of
        # samples (n,) / (B, n) when the request was regular
        items = list(raw) if isinstance(raw, list | tuple) or np.ndim(raw) == 1 else None  # ndim of a ragged list raises
        if items is not None and items and all(np.ndim(w) == 1 for w in items):
            waves = [np.asarray(w) for w in items]
        else:
            try:
                arr = np.asarray(np.asarray(raw).tolist(), dtype=np.float32)
            except (ValueError, TypeError):
                raise ValueError("waveform: neither one waveform, a (batch, n) array, nor a list of "
                                 "1-D waveforms") from None
            waves = [arr] if arr.ndim == 1 else list(arr) if arr.ndim == 2 else None
            if waves is None:
                raise ValueError(f"waveform must be (n,) or (batch, n) samples, got shape {arr.shape}")
    else:
        arr = np.asarray(raw)
        if arr.ndim not in (1, 2):
            raise ValueError(f"waveform must be (n,) or (batch, n) samples, got shape {arr.shape}")
        waves = [arr] if arr.ndim == 1 else list(arr)
    rates = np.asarray(inputs.get("sample_rate", sample_rate)).ravel()
    if rates.size == 1:
        rates = np.repeat(rates, len(waves))
    if rates.size != len(waves):
        raise ValueError(f"sample_rate: {rates.size} rates for {len(waves)} waveforms")
    out = []
    seconds = clip_samples / sample_rate
    for k, (w, sr) in enumerate(zip(waves, rates)):
        w = np.asarray(w)
        if w.dtype.kind not in "fiu" or w.ndim != 1:
            raise ValueError(f"waveform {k}: expected a 1-D array of samples, got dtype {w.dtype} shape {w.shape}")
        if not np.isfinite(sr) or sr <= 0:
            raise ValueError(f"sample_rate {sr!r} for waveform {k}: must be a positive number of Hz")
        if w.dtype.kind in "iu":
            raise ValueError(f"waveform {k}: integer samples ({w.dtype}); send floats in [-1, 1] "
                             "(int16 PCM: divide by 32768)")
        w = w.astype(np.float32)
        if np.max(np.abs(w), initial=0.0) > 4.0:
            raise ValueError(f"waveform {k}: peak {np.max(np.abs(w)):.0f}; send floats in [-1, 1] "
                             "(int16 PCM: divide by 32768)")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"waveform {k}: holds NaN or infinite samples")
        w = audio.resample(w, int(round(float(sr))), sample_rate)
        if len(w) < sample_rate // 10:
            raise ValueError(f"waveform {k}: {len(w)} samples at {sample_rate} Hz is shorter than 0.1 s")
        out.append(trim_and_fit(w, sample_rate, seconds)[0])
    return np.stack(out).astype(np.float32)


def write_error_analysis(dataset, preds: dict, heads: dict[str, list[str]], out_dir: Path) -> dict:
    """``error_analysis.json`` and ``.txt``: confused pairs, accuracy per speaker/intensity, worst clips."""
    import numpy as np

    primary = next(iter(heads))
    classes = heads[primary]
    y = np.asarray(preds[primary]["targets"])
    probs = np.asarray(preds[primary]["probs"])
    if not len(y):
        return {}
    pred = probs.argmax(axis=1)
    right = pred == y
    pairs: dict[tuple[str, str], int] = {}
    for t, p in zip(y[~right], pred[~right]):
        key = (classes[int(t)], classes[int(p)])
        pairs[key] = pairs.get(key, 0) + 1
    confused = [{"true": t, "predicted": p, "count": n, "share_of_true": n / max(int(np.sum(y == classes.index(t))), 1)}
                for (t, p), n in sorted(pairs.items(), key=lambda kv: -kv[1])[:10]]
    meta = getattr(dataset, "meta", {}) or {}

    def by(key: str) -> dict[str, dict[str, float]]:
        values = np.asarray(meta.get(key, []))
        if len(values) != len(y):
            return {}
        return {str(v): {"accuracy": float(right[values == v].mean()), "n": int(np.sum(values == v))}
                for v in sorted(set(values.tolist()), key=str)}

    paths = meta.get("path", [])
    conf = probs[np.arange(len(y)), pred]
    worst = [{"clip": paths[i] if len(paths) == len(y) else str(i), "true": classes[int(y[i])],
              "predicted": classes[int(pred[i])], "confidence": float(conf[i])}
             for i in np.argsort(-conf) if not right[i]][:20]
    result = {"accuracy": float(right.mean()), "n": int(len(y)), "most_confused": confused,
              "per_speaker": by("actor"), "per_intensity": by("intensity"), "confident_errors": worst}
    for head in heads:
        if head != primary:
            t = np.asarray(preds[head]["targets"])
            result[f"{head}_accuracy"] = float((np.asarray(preds[head]["probs"]).argmax(1) == t).mean())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "error_analysis.json").write_text(json.dumps(result, indent=2))
    lines = [f"accuracy {result['accuracy']:.3f} over {result['n']} clips", "", "most confused (true -> predicted):"]
    lines += [f"  {c['true']:>10} -> {c['predicted']:<10} {c['count']:4d}  ({c['share_of_true']:.0%} of {c['true']})"
              for c in confused] or ["  none"]
    for title, key in (("per speaker", "per_speaker"), ("per intensity", "per_intensity")):
        if result[key]:
            lines += ["", f"accuracy {title}:"]
            lines += [f"  {k:>10}: {v['accuracy']:.3f}  (n={v['n']})" for k, v in result[key].items()]
    if worst:
        lines += ["", "most confident errors:"]
        lines += [f"  {w['clip']}: {w['true']} -> {w['predicted']} ({w['confidence']:.2f})" for w in worst]
    (out_dir / "error_analysis.txt").write_text("\n".join(lines) + "\n")
    return result
