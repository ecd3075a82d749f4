"""EEG entry points of seed 000: pre-train on FACED, fine-tune on EAV (EEG + audio + video)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from emoexp import tracking as T
from emoexp.config import ConfigError, TrainConfig, opt
from emoexp.data.registry import dataset_dir
from emoexp.tasks.base import Task, register_task

log = logging.getLogger(__name__)

# The face encoder behind finetune_eav's video: "small_cnn" (trained jointly) or a train_face URI.
# TODO(lead): move to emoexp.tracking with the other tag names.
TAG_VIDEO_ENCODER = "emoexp.video_encoder"
JOINT_VIDEO_ENCODER = "small_cnn"
JOINT_VIDEO_SIZE = 48            # FER2013's side: small faces, cheap per frame


def _encoder_choices() -> tuple[str, ...]:
    """``auto`` (resolved in ``prepare``) and the registry's EEG encoders."""
    from emoexp.models import model_options

    return ("auto", *model_options("eeg_encoder"))


def _fusion_choices() -> tuple[str, ...]:
    from emoexp.models.fusion import FUSIONS

    return FUSIONS


def _pooling_choices() -> tuple[str, ...]:
    from emoexp.models.video import POOLINGS

    return POOLINGS


@dataclass
class EEGConfig(TrainConfig):
    """What the two EEG entry points of seed 000 share: windows and the encoder."""

    window_size: int = opt(512, "samples per EEG window (512 at 250 Hz is ~2 s)")
    stride: int = opt(256, "samples between window starts (half-overlapping by default)")
    encoder: str = opt("cnn", "cnn (4 temporal conv blocks) | cnn_lstm (2 conv blocks + BiLSTM) | bands (log band power per channel in 5 bands + MLP)")
    latent_dim: int = opt(128, "size of the encoder's latent vector")
    dropout: float = opt(0.3, "dropout in the classifier head")
    cache_dir: str = opt("", "where preprocessed .npy caches go; empty: $EMOEXP_CACHE_DIR or ~/.cache/emoexp")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = ("window_size", "encoder", "latent_dim", "dropout")
    CHOICES: ClassVar[dict[str, Any]] = {"encoder": _encoder_choices}

    def __post_init__(self) -> None:
        if self.window_size < 16 or self.stride < 1:
            raise ConfigError("window_size must be >= 16 and stride >= 1")


@dataclass
class PretrainFacedConfig(EEGConfig):
    """Seed 000's pre-training of the EEG encoder on FACED."""

    data_dir: str = opt(dataset_dir("faced"), "FACED Processed_data folder (sub*.pkl)")
    epochs: int = opt(50, "seed 000: 50 epochs of pre-training")
    batch_size: int = opt(32, "seed 000: 32")
    lr: float = opt(1e-3, "seed 000: Adam 1e-3")
    scheduler: str = opt("cosine", "seed 000: cosine annealing over the run")
    monitor: str = opt("val_loss", "seed 000 keeps the encoder with the best validation loss")
    label_scheme: str = opt("emotion", "emotion (9 classes) | valence (negative/neutral/positive)")
    channels: str = opt("eeg30", "eeg30 (drop the A1/A2 mastoids) | all32")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = EEGConfig.ARCH_KEYS + ("label_scheme", "channels")
    CHOICES: ClassVar[dict[str, Any]] = {"label_scheme": ("emotion", "valence"), "channels": ("eeg30", "all32")}


@dataclass
class FinetuneEavConfig(EEGConfig):
    """Seed 000's fine-tuning on EAV, optionally fusing the speaking trials' audio and video."""

    data_dir: str = opt(dataset_dir("eav"), "EAV root holding subject*/ folders")
    epochs: int = opt(30, "seed 000: 30 epochs of fine-tuning")
    batch_size: int = opt(16, "seed 000: 16, smaller for stability")
    lr: float = opt(1e-4, "seed 000: 10x lower than pre-training to keep the encoder's features")
    scheduler: str = opt("step", "seed 000: StepLR, gamma 0.5 every 5 epochs")
    checkpoint_every: int = opt(2, "seed 000: a checkpoint every 2 epochs")
    encoder: str = opt("auto", "auto (the pretrained encoder's kind, else cnn) | cnn | cnn_lstm | bands")
    pretrained: str = opt("none", "encoder source: none | checkpoint path/URI | runs:/ID/model | models:/NAME@ALIAS")
    channel_adapter: str = opt(
        "linear",
        "how EAV's montage meets the pretrained encoder's: linear (learned channel mixing, "
        "identity-initialised) | identity (assert the channels align; error if counts differ)",
    )
    use_audio: bool = opt(False, "fuse MFCC audio of speaking trials (listening trials: masked)")
    fusion: str = opt("concat", "concat | attention (cross-modal attention pooling)")
    condition: str = opt("both", "listening | speaking | both")
    sample_rate: float = opt(250.0, "EEG is resampled to this rate so a window spans FACED's duration")
    audio_sample_rate: int = opt(16000, "audio is resampled to this rate before MFCC")
    n_mfcc: int = opt(13, "MFCC coefficients (seed 000: 13)")
    use_video: bool = opt(False, "fuse face video of speaking trials (listening trials, missing videos: masked)")
    video_encoder: str = opt(
        "small_cnn",
        "face encoder for video frames: small_cnn (trained jointly) | a train_face model URI "
        "(runs:/ID/model, models:/emoexp-face@staging, a checkpoint): its encoder weights are loaded",
    )
    freeze_video_encoder: bool = opt(
        True, "keep a loaded face encoder fixed (a few EAV subjects would overfit it); small_cnn always trains")
    video_fps: float = opt(5.0, "frames decoded per second of video and cached (EAV videos are 30 fps)")
    video_frames: int = opt(4, "face crops per EEG window, evenly spaced over its span")
    video_size: int = opt(0, "side of the square face crops; 0: the face model's image_size, 48 for small_cnn")
    video_pooling: str = opt("mean", "how a window's frames are pooled: mean | attention (learned weights)")
    video_detector: str = opt(
        "auto", "face detector for the crops: auto (OpenCV Haar if shipped, else whole frame) | haar | "
        "none (central square) | a .task/.tflite/.onnx model path")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = EEGConfig.ARCH_KEYS + (
        "use_audio", "fusion", "sample_rate", "audio_sample_rate", "n_mfcc", "channel_adapter",
        "use_video", "video_encoder", "freeze_video_encoder", "video_fps", "video_frames", "video_size",
        "video_pooling", "video_detector",
    )
    CHOICES: ClassVar[dict[str, Any]] = {
        "channel_adapter": ("linear", "identity"), "fusion": _fusion_choices,
        "condition": ("listening", "speaking", "both"), "video_pooling": _pooling_choices,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.video_frames < 1 or self.video_fps <= 0:
            raise ConfigError(f"video_frames must be >= 1 and video_fps > 0, got {self.video_frames}, {self.video_fps}")
        if self.video_size and self.video_size < 16:
            raise ConfigError(f"video_size must be 0 (the face model's) or >= 16, got {self.video_size}")


class _EEGTask(Task):
    modality = "eeg"
    serving_inputs = ("eeg",)

    def _bundle(self, rec, cfg: EEGConfig, policy, dataset: str, extra_info: dict[str, Any] | None = None):
        """Recordings -> subject- (or trial-) split window datasets, in one place for EEG tasks."""
        import numpy as np

        from emoexp.data.base import DataBundle
        from emoexp.data.eeg import WindowDataset
        from emoexp.data.splits import split_subjects, split_trials

        with_audio = bool(getattr(cfg, "use_audio", False))
        with_video = bool(getattr(cfg, "use_video", False))
        kw = dict(window_size=cfg.window_size, stride=cfg.stride, target_key="emotion", with_audio=with_audio)
        if with_video:
            kw.update(with_video=True, video_frames=cfg.video_frames,
                      video_grayscale=bool((extra_info or {}).get("video_grayscale", False)))
        if cfg.split == "subject":
            sp = split_subjects(rec.subject_ids, val_fraction=cfg.val_fraction,
                                test_fraction=cfg.test_fraction, seed=cfg.seed)
            sides = {"train": (sp.train, None), "val": (sp.val, None), "test": (sp.test, None)}
            split = sp.to_dict()
        else:
            trials = split_trials({s: rec.trial_labels[s] for s in rec.subject_ids},
                                  val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                  seed=cfg.seed)
            sides = {side: (list(t), t) for side, t in trials.items()}
            split = {"scheme": "trial", **{side: {s: [int(i) for i in idx] for s, idx in t.items()}
                                           for side, t in trials.items()}}
        ds = {}
        for side, (subjects, trials) in sides.items():
            ds[side] = WindowDataset(rec, subjects, trials=trials, **kw) if subjects else None
        if ds["train"] is None or len(ds["train"]) == 0 or ds["val"] is None or len(ds["val"]) == 0:
            raise ConfigError(
                f"{cfg.data_dir}: the {cfg.split} split left no training or validation windows "
                f"({len(rec.subject_ids)} subjects, window_size {cfg.window_size}); "
                "add subjects, shrink window_size, or use split=trial"
            )
        train = ds["train"]
        example_idx = [0, min(1, len(train) - 1)]
        if with_video:
            # windows of trials with a video, so the example shows real face crops
            has = np.zeros(len(train), dtype=bool)
            for k, s in enumerate(train.subjects):
                sel = train.subject_idx == k
                has[sel] = rec.video_mask[s][train.trial_idx[sel]] > 0
            found = np.flatnonzero(has)[:2].tolist()
            example_idx = found if len(found) == 2 else example_idx
        example_batch = train.__getitems__(example_idx)
        example = {"eeg": example_batch["eeg"].numpy().astype(np.float32)}
        info = {
            "dataset": dataset,
            "source": str(cfg.data_dir),
            "n_subjects": len(rec.subject_ids),
            "n_channels": rec.n_channels,
            "channel_names": list(rec.channel_names) if rec.channel_names else None,
            "sample_rate": float(rec.sample_rate),
            "window_size": cfg.window_size,
            **(extra_info or {}),
        }
        if with_audio:
            info["audio_window"] = int(example_batch["audio"].shape[-1])
            n = audio_samples(cfg, info)
            # The served model takes the window's waveform; the example is quiet noise of that length.
            rng = np.random.default_rng(0)
            example["audio"] = (0.01 * rng.standard_normal((2, n))).astype(np.float32)
        if with_video:
            info.update(video_frames=int(cfg.video_frames), video_size=int(rec.video_size),
                        video_fps=float(rec.video_fps), video_detector=str(cfg.video_detector),
                        **{k: rec.info[k] for k in ("n_videos", "videos_missing", "video_frames_no_face")})
            # The served model takes face crops (B, F, S, S, 3) uint8 (other frame sizes are cut
            # by the detector first); the example is the crops of the example windows.
            example["video"] = train.read_video(example_idx)[0]
        return DataBundle(
            train=train, val=ds["val"], test=ds["test"],
            heads={"emotion": list(rec.class_names)},
            train_targets=train.targets, split=split, input_example=example, info=info,
            skipped_files=list(policy.skipped),
        )

    def cv_pool(self, cfg: EEGConfig, data):
        """Units: the trials of every subject (with at least one window); a fold's sides are
        window datasets over the recordings read once."""
        import numpy as np

        from emoexp.data.eeg import WindowDataset
        from emoexp.data.folds import CVPool, FoldViews
        from emoexp.data.windows import window_starts

        rec, ref = data.train.recordings, data.train
        kw = {k: getattr(ref, k) for k in ("window_size", "stride", "target_key", "with_audio", "with_video",
                                            "video_frames", "video_grayscale")}
        subjects = [s for s in rec.subject_ids if len(window_starts(rec.n_samples(s), ref.window_size, ref.stride))]
        first = dict(zip(subjects, np.cumsum([0] + [rec.n_trials(s) for s in subjects])[:-1].tolist()))
        subj = np.concatenate([np.full(rec.n_trials(s), s, dtype=object) for s in subjects]).astype(str)
        trial = np.concatenate([np.arange(rec.n_trials(s)) for s in subjects])
        labels = np.concatenate([rec.trial_labels[s] for s in subjects])

        def views(sides: dict[str, np.ndarray]) -> FoldViews:
            out, units = {}, {}
            for side, idx in sides.items():
                chosen: dict[str, list[int]] = {}
                for u in np.sort(idx).tolist():
                    chosen.setdefault(subj[u], []).append(int(trial[u]))
                ds = WindowDataset(rec, list(chosen), trials={s: np.asarray(t) for s, t in chosen.items()}, **kw)
                offset = np.asarray([first[s] for s in ds.subjects], dtype=np.int64)
                out[side], units[side] = ds, offset[ds.subject_idx] + ds.trial_idx
            return FoldViews(out, units)

        return CVPool(unit="trial", labels=labels, subjects=subj, trials=None, views=views)

    def build_model(self, cfg: EEGConfig, info: dict[str, Any]):
        from emoexp.models import create_model, model_options

        encoder = info.get("encoder", cfg.encoder)
        in_ch = int(info.get("encoder_in_channels", info["n_channels"]))
        modalities: dict[str, dict] = {
            "eeg": {"model": model_options("eeg_encoder")[encoder], "in_channels": in_ch,
                    "latent_dim": cfg.latent_dim}
        }
        if getattr(cfg, "use_audio", False):
            modalities["audio"] = {"model": "audio_mfcc", "n_mfcc": cfg.n_mfcc, "latent_dim": cfg.latent_dim}
        if getattr(cfg, "use_video", False):
            # from the info alone (no URI is read here): a checkpoint rebuilds its model offline
            modalities["video"] = {
                "model": "video_frames", "frame_model": info["video_frame_model"],
                "frame_kwargs": dict(info.get("video_frame_kwargs") or {}), "pooling": cfg.video_pooling,
                "freeze": bool(info.get("video_frozen", False)),
            }
        adapter = (int(info["n_channels"]), in_ch) if info.get("channel_adapter") == "linear" else None
        return create_model(
            "multimodal_net",
            modalities=modalities,
            heads={h: len(c) for h, c in info["heads"].items()},
            fusion=getattr(cfg, "fusion", "concat"),
            head_dropout=cfg.dropout,
            channel_adapter=adapter,
        )

    def serving_batch(self, inputs: dict[str, Any], cfg: EEGConfig, info: dict[str, Any]) -> dict:
        import torch

        from emoexp.data.eeg import zscore

        eeg = eeg_input(inputs, int(info["n_channels"]), float(info["sample_rate"]))
        batch = {"eeg": torch.from_numpy(zscore(eeg))}
        if getattr(cfg, "use_audio", False):
            batch.update(_audio_batch(inputs.get("audio"), eeg.shape[0], cfg, info))
        if getattr(cfg, "use_video", False):
            batch.update(_video_batch(inputs.get("video"), eeg.shape[0], info))
        return batch


def eeg_input(inputs: dict[str, Any], n_channels: int, sample_rate: float, window: int = 0):
    """The serving input ``eeg``: one (C, T) window or a (B, C, T) batch -> (B, C, T) float32,
    checked (channels, ``window`` samples when the model needs exactly that many, finite values)."""
    import numpy as np

    if "eeg" not in inputs:
        raise ValueError(f"input needs 'eeg' (windows of shape (C, T) or (B, C, T)); got {sorted(inputs)}")
    eeg = _float_array(inputs["eeg"], "eeg")
    if eeg.ndim == 2:
        eeg = eeg[None]  # (C, T) -> (1, C, T)
    if window and (eeg.ndim != 3 or eeg.shape[1:] != (n_channels, window)):
        raise ValueError(f"eeg must be ({n_channels} channels, {window} samples) at {sample_rate:g} Hz, one "
                         f"window or a batch of them; got shape {eeg.shape}")
    if eeg.ndim != 3 or eeg.shape[1] != n_channels:
        raise ValueError(f"eeg must be (B, {n_channels}, T) at {sample_rate:g} Hz; got {eeg.shape}")
    if eeg.shape[2] < 16:
        raise ValueError(f"eeg windows need at least 16 samples; got {eeg.shape[2]}")
    if not np.isfinite(eeg).all():
        raise ValueError("eeg holds NaN or infinite values")
    return eeg


def _float_array(value, name: str):
    """A numeric input -> float32 array; ValueError naming the input when it is not one."""
    import numpy as np

    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: not a regular array of numbers (rows of different lengths, "
                         "or values that are not numbers)") from None


def audio_samples(cfg, info: dict[str, Any]) -> int:
    """Audio samples per EEG window: the window's span at ``audio_sample_rate``."""
    return int(round(int(info["window_size"]) / float(info["sample_rate"]) * cfg.audio_sample_rate))


def _audio_batch(audio, n: int, cfg: FinetuneEavConfig, info: dict[str, Any]) -> dict:
    """Waveforms (B, samples) at audio_sample_rate -> MFCC windows + mask (zeros: no audio)."""
    import numpy as np
    import torch

    from emoexp.data.audio import mfcc

    frames = int(info["audio_window"])
    out = np.zeros((n, cfg.n_mfcc, frames), dtype=np.float32)
    mask = np.zeros(n, dtype=np.float32)
    if audio is not None:
        audio = _float_array(audio, "audio")
        if audio.ndim == 1:
            audio = audio[None]
        want = audio_samples(cfg, info)
        if audio.ndim != 2 or audio.shape[1] != want:
            raise ValueError(f"audio must be (B, {want}) samples at {cfg.audio_sample_rate} Hz, the "
                             f"{want / cfg.audio_sample_rate:g} s of each eeg window (all zeros: no audio); "
                             f"got shape {audio.shape}")
        if audio.shape[0] != n:
            raise ValueError(f"audio has {audio.shape[0]} waveforms for {n} eeg windows")
        if not np.isfinite(audio).all():
            raise ValueError("audio holds NaN or infinite values")
        for i, wave in enumerate(audio):
            if not np.any(wave):
                continue  # silence stands for "no audio": masked like a listening trial
            m = mfcc(wave, cfg.audio_sample_rate, cfg.n_mfcc)[:, :frames]
            out[i, :, : m.shape[1]] = m
            mask[i] = 1.0
    return {"audio": torch.from_numpy(out), "audio_mask": torch.from_numpy(mask)}


_DETECTORS: dict[str, Any] = {}


def _video_batch(video, n: int, info: dict[str, Any]) -> dict:
    """Frames (B, F, H, W, 3) uint8 per EEG window -> normalised face crops + mask.

    Frames of the model's crop size (S x S) are taken as face crops, cut as in training; other
    sizes are cut here by the training's face detector. A window with no video (``video``
    absent, or all-zero frames) is masked, like a listening trial in training.
    """
    import numpy as np
    import torch

    from emoexp.data.eav import face_crops
    from emoexp.data.images import as_image_batch, preprocess

    S, F = int(info["video_size"]), int(info["video_frames"])
    gray = bool(info.get("video_grayscale", False))
    if video is None:
        return {"video": torch.zeros(n, F, 3, S, S), "video_mask": torch.zeros(n)}
    v = np.asarray(video)
    if v.ndim == 4:
        v = v[None]  # one window's frames: (F, H, W, 3) -> (1, F, H, W, 3)
    if v.ndim != 5 or v.shape[-1] != 3 or v.shape[1] < 1:
        raise ValueError(f"video must be (B, frames, H, W, 3) uint8 RGB frames per eeg window "
                         f"(face crops of {S}x{S} as in training, or whole frames); got shape {v.shape}")
    if v.shape[0] != n:
        raise ValueError(f"video has {v.shape[0]} clips for {n} eeg windows")
    out = torch.zeros(n, v.shape[1], 3, S, S)
    mask = torch.zeros(n)
    for i, clip in enumerate(v):
        if not np.any(clip):
            continue  # black frames stand for "no video": masked like a listening trial
        frames = as_image_batch(clip, what="video frames")                # (F, H, W, 3) uint8
        if frames.shape[1:3] != (S, S):
            spec = str(info.get("video_detector", "auto"))
            if spec not in _DETECTORS:
                from emoexp.data.frames import make_detector

                _DETECTORS[spec] = make_detector(spec)
            frames = face_crops(frames, _DETECTORS[spec], S)[0]
        out[i] = preprocess(frames, S, gray)                               # (F, 3, S, S)
        mask[i] = 1.0
    return {"video": out, "video_mask": mask}


@register_task
class PretrainFaced(_EEGTask):
    name = "pretrain_faced"
    dataset = "faced"
    registered_model = "emoexp-eeg-encoder"
    config_cls = PretrainFacedConfig
    summary = "Pre-train the EEG encoder on FACED (9 emotions or 3 valence classes)."

    def build_data(self, cfg: PretrainFacedConfig):
        from emoexp.data.base import BadFilePolicy
        from emoexp.data.faced import load_faced

        policy = BadFilePolicy(cfg.on_bad_file)
        rec = load_faced(cfg.data_dir, channels=cfg.channels, label_scheme=cfg.label_scheme,
                         cache_dir=cfg.cache_dir or None, on_bad_file=policy,
                         max_subjects=cfg.max_subjects or None)
        return self._bundle(rec, cfg, policy, "faced", {"encoder": cfg.encoder})

    def prepare(self, cfg: PretrainFacedConfig) -> PretrainFacedConfig:
        if cfg.encoder == "auto":
            import dataclasses

            cfg = dataclasses.replace(cfg, encoder="cnn")
        return cfg


@register_task
class FinetuneEav(_EEGTask):
    name = "finetune_eav"
    dataset = "eav"
    registered_model = "emoexp-eeg"
    config_cls = FinetuneEavConfig
    summary = "Fine-tune on EAV (5 emotions) from a pretrained encoder, optionally fusing audio and video."

    def __init__(self) -> None:
        self._pretrained: dict[str, dict] = {}

    def _load_pretrained(self, uri: str) -> dict:
        from emoexp.checkpoints import load_from_uri

        if uri not in self._pretrained:
            self._pretrained[uri] = load_from_uri(uri)
        return self._pretrained[uri]

    def prepare(self, cfg: FinetuneEavConfig) -> FinetuneEavConfig:
        import dataclasses

        if cfg.encoder == "auto":
            kind = "cnn"
            if _has_pretrained(cfg):
                kind = self._load_pretrained(cfg.pretrained)["info"].get("encoder", "cnn")
            cfg = dataclasses.replace(cfg, encoder=kind)
        if cfg.use_video:
            size = JOINT_VIDEO_SIZE
            if _video_uri(cfg):
                size = int(self._face_checkpoint(cfg)["info"]["image_size"])
                if cfg.video_size and cfg.video_size != size:
                    log.warning("video_size=%d, but the face encoder of %s was trained on %dx%d images",
                                cfg.video_size, cfg.video_encoder, size, size)
            if not cfg.video_size:
                cfg = dataclasses.replace(cfg, video_size=size)
        return cfg

    def build_data(self, cfg: FinetuneEavConfig):
        from emoexp.data.base import BadFilePolicy
        from emoexp.data.eav import load_eav

        policy = BadFilePolicy(cfg.on_bad_file)
        video = self._video_info(cfg)
        rec = load_eav(cfg.data_dir, condition=cfg.condition, sample_rate=cfg.sample_rate,
                       use_audio=cfg.use_audio, audio_sample_rate=cfg.audio_sample_rate,
                       n_mfcc=cfg.n_mfcc, use_video=cfg.use_video, video_fps=cfg.video_fps,
                       video_size=cfg.video_size or JOINT_VIDEO_SIZE, video_detector=cfg.video_detector,
                       cache_dir=cfg.cache_dir or None, on_bad_file=policy,
                       max_subjects=cfg.max_subjects or None)
        extra = {"encoder": cfg.encoder, **self._transfer_info(cfg, rec), **video}
        return self._bundle(rec, cfg, policy, "eav", extra)

    def _face_checkpoint(self, cfg: FinetuneEavConfig) -> dict:
        """The train_face checkpoint named by ``video_encoder``, checked to hold a face encoder."""
        from emoexp.checkpoints import CheckpointError

        uri = cfg.video_encoder
        try:
            face = self._load_pretrained(uri)
        except CheckpointError as e:
            raise ConfigError(f"video_encoder={uri}: {e} (give {JOINT_VIDEO_ENCODER}, or a train_face "
                              "model: runs:/ID/model, models:/emoexp-face@staging, a checkpoint path)") from None
        task = face.get("task")
        has_image = any(k.startswith("encoders.image.") for k in face.get("model", {}))
        if task != "train_face" or not has_image or "image_size" not in face.get("info", {}):
            raise ConfigError(
                f"video_encoder={uri}: a {task!r} model, not a face model; give a train_face model "
                f"(runs:/ID/model of a train_face run, models:/emoexp-face@staging) or {JOINT_VIDEO_ENCODER}"
            )
        return face

    def _video_info(self, cfg: FinetuneEavConfig) -> dict[str, Any]:
        """How the video frames are encoded: what build_model needs to rebuild the encoder alone."""
        if not cfg.use_video:
            return {}
        if not _video_uri(cfg):
            return {"video_encoder": JOINT_VIDEO_ENCODER, "video_frame_model": "face_small_cnn",
                    "video_frame_kwargs": {"latent_dim": cfg.latent_dim}, "video_grayscale": False,
                    "video_frozen": False}
        from emoexp.models import model_options

        face = self._face_checkpoint(cfg)
        backbone = face["info"].get("backbone") or face["config"].get("backbone")
        face_encoders = model_options("face_encoder")
        if backbone not in face_encoders:
            raise ConfigError(f"video_encoder={cfg.video_encoder}: unknown face backbone {backbone!r}")
        kwargs: dict[str, Any] = {}
        if backbone == "small_cnn":
            # the widths the face model was built with, read off its weights
            state = face["model"]
            kwargs = {"latent_dim": int(state["encoders.image.proj.weight"].shape[0]),
                      "width": int(state["encoders.image.features.0.0.weight"].shape[0])}
        return {"video_encoder": cfg.video_encoder, "video_frame_model": face_encoders[backbone],
                "video_frame_kwargs": kwargs, "video_grayscale": bool(face["info"].get("grayscale", False)),
                "video_frozen": bool(cfg.freeze_video_encoder), "video_face_classes":
                list(face["info"].get("heads", {}).get("emotion", []))}

    def _transfer_info(self, cfg: FinetuneEavConfig, rec) -> dict[str, Any]:
        """Decide, explicitly, how EAV's channels meet the pretrained encoder's."""
        if not _has_pretrained(cfg):
            return {"channel_adapter": "none"}
        pre = self._load_pretrained(cfg.pretrained)
        pinfo = pre["info"]
        if pre.get("task") != "pretrain_faced" and "n_channels" not in pinfo:
            raise ConfigError(f"pretrained={cfg.pretrained}: not an EEG encoder checkpoint")
        if pinfo.get("encoder", cfg.encoder) != cfg.encoder:
            raise ConfigError(
                f"pretrained={cfg.pretrained} holds a {pinfo.get('encoder')!r} encoder but encoder="
                f"{cfg.encoder!r}; pass --encoder {pinfo.get('encoder')} (or auto)"
            )
        if int(pre["config"].get("latent_dim", cfg.latent_dim)) != cfg.latent_dim:
            raise ConfigError(f"pretrained latent_dim {pre['config']['latent_dim']} != latent_dim {cfg.latent_dim}")
        src_ch, src_names = int(pinfo["n_channels"]), pinfo.get("channel_names")
        dst_ch, dst_names = rec.n_channels, rec.channel_names
        if cfg.channel_adapter == "identity":
            if src_ch != dst_ch:
                raise ConfigError(
                    f"channel_adapter=identity, but the pretrained encoder takes {src_ch} channels and "
                    f"{cfg.data_dir} has {dst_ch}; use channel_adapter=linear to learn a mapping"
                )
            if src_names and dst_names and list(src_names) != list(dst_names):
                raise ConfigError("channel_adapter=identity, but the montages differ: "
                                  f"{src_names} vs {dst_names}; use channel_adapter=linear")
            if not dst_names:
                log.warning("channel_adapter=identity: %s has no channel names; assuming they match the "
                            "pretrained encoder's %d channels one to one", cfg.data_dir, src_ch)
            return {"channel_adapter": "identity", "encoder_in_channels": src_ch}
        log.info("channel adapter: learned linear mixing %d -> %d channels (%s montage -> pretrained %s)",
                 dst_ch, src_ch, "unknown" if not dst_names else "EAV", pinfo.get("dataset", "encoder"))
        return {"channel_adapter": "linear", "encoder_in_channels": src_ch,
                "pretrained_channel_names": src_names}

    def init_from_pretrained(self, model, cfg: FinetuneEavConfig, info: dict[str, Any]) -> dict[str, str]:
        tags: dict[str, str] = {}
        if cfg.use_video:
            tags[TAG_VIDEO_ENCODER] = cfg.video_encoder
            if _video_uri(cfg):
                self._load_face_encoder(model, cfg)
        if not _has_pretrained(cfg):
            return tags
        from emoexp.models import load_encoder_state

        pre = self._load_pretrained(cfg.pretrained)
        prefix = "encoders.eeg."
        state = {k[len(prefix):]: v for k, v in pre["model"].items() if k.startswith(prefix)}
        if not state:
            raise ConfigError(f"pretrained={cfg.pretrained}: the checkpoint holds no EEG encoder weights")
        load_encoder_state(model, state, "eeg")
        log.info("loaded the pretrained EEG encoder from %s", cfg.pretrained)
        return {**tags, T.TAG_PRETRAINED_FROM: cfg.pretrained,
                T.TAG_CHANNEL_ADAPTER: info.get("channel_adapter", "none")}

    def _load_face_encoder(self, model, cfg: FinetuneEavConfig) -> None:
        """The train_face model's image encoder -> the video encoder's per-frame encoder."""
        face = self._face_checkpoint(cfg)
        prefix = "encoders.image."
        state = {k[len(prefix):]: v for k, v in face["model"].items() if k.startswith(prefix)}
        try:
            model.encoders["video"].frames.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ConfigError(f"video_encoder={cfg.video_encoder}: its face encoder does not fit the video "
                              f"encoder ({str(e).splitlines()[0]})") from None
        log.info("loaded the face encoder of %s for the video frames (%s)", cfg.video_encoder,
                 "frozen" if cfg.freeze_video_encoder else "fine-tuned")


def _has_pretrained(cfg: FinetuneEavConfig) -> bool:
    return bool(cfg.pretrained) and cfg.pretrained.lower() != "none"


def _video_uri(cfg: FinetuneEavConfig) -> bool:
    """True when video_encoder names a face model to load (anything but the jointly trained CNN)."""
    return cfg.video_encoder.strip().lower() != JOINT_VIDEO_ENCODER
