"""Typed configs, one dataclass per task, with a one-line *why* per field.

Every field is at once a dataclass attribute, an MLproject parameter (same name) and an
``emoexp train <task> --dashed-name`` option. Overrides are checked: an unknown key or a value
of the wrong type is an error that names the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A bad override: unknown key, wrong type, or a bad value."""


def opt(default: Any, help: str) -> Any:  # noqa: A002 - mirrors click's word
    """A config field with its help text (the *why*), shown by ``--help`` and in the README."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """What every training entry point takes (DESIGN.md: the stable interface)."""

    data_dir: str = opt("", "dataset root; the seed's location is the default")
    epochs: int = opt(10, "epochs to train (a branch resume trains this many more)")
    batch_size: int = opt(32, "mini-batch size")
    lr: float = opt(1e-3, "initial learning rate")
    seed: int = opt(42, "seeds model init, sampling and splits: same seed, same run")
    weights: str = opt("", "per-class sampling weights 'sad=5,happy=0.5'; unnamed classes 1.0")
    resume_from: str = opt("", "checkpoint URI to branch from (runs:/ID/checkpoints/last.pt); empty for none")
    experiment_name: str = opt("", "MLflow experiment; empty: the task's name")
    run_name: str = opt("", "MLflow run name; empty: the task name plus what differs")
    description: str = opt("", "free text stored as the run's description")
    patience: int = opt(10, "early stopping: epochs without improvement of `monitor`; 0 = off")
    monitor: str = opt("val_macro_f1", "metric that picks best.pt and drives early stopping")
    checkpoint_every: int = opt(5, "write checkpoints/epoch_NNN.pt every N epochs (last.pt every epoch)")
    optimizer: str = opt("adam", "adam | adamw | sgd")
    weight_decay: float = opt(0.0, "L2 penalty (seed: 0; raise it if overfitting)")
    scheduler: str = opt("cosine", "cosine | step | none")
    step_size: int = opt(5, "StepLR: epochs between decays")
    gamma: float = opt(0.5, "StepLR: decay factor")
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing")
    split: str = opt("subject", "subject (subject-independent, default) | trial")
    val_fraction: float = opt(0.2, "share of subjects (or trials) held out for validation")
    test_fraction: float = opt(0.2, "share held out for the final test; 0 = no test split")
    max_subjects: int = opt(0, "use only the first N subjects (quick looks); 0 = all")
    on_bad_file: str = opt("error", "error | skip (skip bad files, count them as data.skipped_files)")
    num_workers: int = opt(0, "DataLoader worker processes; 0 loads in the training process")
    device: str = opt("auto", "auto | cpu | cuda")
    log_model: bool = opt(True, "log the MLflow model at the end (pyfunc with preprocessing)")
    output_dir: str = opt("", "local staging for checkpoints; empty: .emoexp/runs/<run_id>")

    # Keys that define the network and its input: on a branch resume they come back from the
    # checkpoint (a checkpoint rebuilds its model alone); everything else stays overridable.
    ARCH_KEYS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EEGConfig(TrainConfig):
    window_size: int = opt(512, "samples per EEG window (512 at 250 Hz is ~2 s)")
    stride: int = opt(256, "samples between window starts (half-overlapping by default)")
    encoder: str = opt("cnn", "cnn (4 temporal conv blocks) | cnn_lstm (2 conv blocks + BiLSTM)")
    latent_dim: int = opt(128, "size of the encoder's latent vector")
    dropout: float = opt(0.3, "dropout in the classifier head")
    cache_dir: str = opt("", "where preprocessed .npy caches go; empty: $EMOEXP_CACHE_DIR or ~/.cache/emoexp")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = ("window_size", "encoder", "latent_dim", "dropout")


@dataclass
class PretrainFacedConfig(EEGConfig):
    data_dir: str = opt("data/raw/Processed_data/Processed_data", "FACED Processed_data folder (sub*.pkl)")
    epochs: int = opt(50, "seed 000: 50 epochs of pre-training")
    batch_size: int = opt(32, "seed 000: 32")
    lr: float = opt(1e-3, "seed 000: Adam 1e-3")
    scheduler: str = opt("cosine", "seed 000: cosine annealing over the run")
    monitor: str = opt("val_loss", "seed 000 keeps the encoder with the best validation loss")
    label_scheme: str = opt("emotion", "emotion (9 classes) | valence (negative/neutral/positive)")
    channels: str = opt("eeg30", "eeg30 (drop the A1/A2 mastoids) | all32")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = EEGConfig.ARCH_KEYS + ("label_scheme", "channels")


@dataclass
class FinetuneEavConfig(EEGConfig):
    data_dir: str = opt("data/raw/EAV/EAV", "EAV root holding subject*/ folders")
    epochs: int = opt(30, "seed 000: 30 epochs of fine-tuning")
    batch_size: int = opt(16, "seed 000: 16, smaller for stability")
    lr: float = opt(1e-4, "seed 000: 10x lower than pre-training to keep the encoder's features")
    scheduler: str = opt("step", "seed 000: StepLR, gamma 0.5 every 5 epochs")
    checkpoint_every: int = opt(2, "seed 000: a checkpoint every 2 epochs")
    encoder: str = opt("auto", "auto (the pretrained encoder's kind, else cnn) | cnn | cnn_lstm")
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

    def __post_init__(self) -> None:
        if self.video_frames < 1 or self.video_fps <= 0:
            raise ConfigError(f"video_frames must be >= 1 and video_fps > 0, got {self.video_frames}, {self.video_fps}")
        if self.video_size and self.video_size < 16:
            raise ConfigError(f"video_size must be 0 (the face model's) or >= 16, got {self.video_size}")


@dataclass
class FaceConfig(TrainConfig):
    """Seed 001 (DenseNet121 fine-tuning, anti-overfitting set) and seed 003 (weighted runs)."""

    data_dir: str = opt("data/affectnet", "FER2013 (fer2013.csv or train/test folders) or AffectNet (Train/Test folders, labels.csv) root")
    dataset: str = opt("affectnet", "affectnet | fer2013 (seed 001's default is affectnet)")
    classes: int = opt(6, "6: neutral happy sad surprise fear anger (seed 001; disgust and contempt dropped) | 7: + disgust (seed 003)")
    backbone: str = opt("densenet121", "densenet121 (torchvision, seed 001) | small_cnn (4 conv blocks: quick CPU runs)")
    backbone_weights: str = opt("none", "none (random init, never downloaded) | path to a local DenseNet121 state dict")
    image_size: int = opt(0, "side the images are resized to; 0: the dataset's own (48 FER2013, 96 AffectNet)")
    dropout: float = opt(0.5, "seed 001: dropout 0.4-0.5 in the classifier head")
    epochs: int = opt(20, "seed 001: 20 epochs")
    batch_size: int = opt(64, "seed 001: 64")
    lr: float = opt(1e-4, "seed 001: 1e-4")
    optimizer: str = opt("adamw", "seed 001: AdamW")
    weight_decay: float = opt(0.05, "seed 001: 0.05 against overfitting")
    label_smoothing: float = opt(0.15, "seed 001: 0.15 against overconfidence")
    patience: int = opt(7, "seed 001: early stopping after 7 epochs without improvement")
    checkpoint_every: int = opt(5, "write checkpoints/epoch_NNN.pt every N epochs (seed 003 resumes from these)")
    split: str = opt("dataset", "dataset (its own train/val/test; val carved from train when it has none) | random (stratified)")
    augment: bool = opt(True, "seed 001: ColorJitter, GaussianBlur, RandomPerspective, RandomErasing on training images")
    balance: bool = opt(False, "seed 001: oversample minority classes up to the majority (each epoch draws target_samples per class)")
    target_samples: int = opt(0, "with balance: images per class per epoch; 0: the majority class's count")
    aggressive: bool = opt(False, "with balance: stronger augmentation for the oversampled (repeated) images")
    samples_per_class: int = opt(0, "seed 003: keep at most N images per class in each split (quick runs); 0 = all")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = ("backbone", "classes", "image_size", "dropout")
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"dataset": ("affectnet", "fer2013"),
                                                     "backbone": ("densenet121", "small_cnn"),
                                                     "split": ("dataset", "random")}


@dataclass
class SpeechConfig(TrainConfig):
    """Seed 002: RAVDESS speech emotion with a wav2vec2 + spectrogram dual-branch model."""

    data_dir: str = opt("data/raw/RAVDESS", "RAVDESS root with Actor_XX/ folders (the Kaggle mirror's doubled tree is fine), or an EAV root with dataset=eav")
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
    spec_branch: bool = opt(True, "seed 002's second branch: log-mel spectrogram CNN, fused with wav2vec2")
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
        "dataset", "emotion_subset", "context_layers", "pool_heads", "spec_branch", "n_mels", "dropout",
        "gender_loss_weight", "sample_rate", "clip_seconds",
    )
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "dataset": ("ravdess", "eav"), "emotion_subset": ("basic4", "basic6", "all"),
        "vocal_channel": ("speech", "song", "both"), "split": ("subject", "random"),
    }

    def __post_init__(self) -> None:
        if self.clip_seconds < 0.5:
            raise ConfigError(f"clip_seconds must be >= 0.5 (wav2vec2 needs frames), got {self.clip_seconds}")
        if self.gender_loss_weight < 0:
            raise ConfigError(f"gender_loss_weight must be >= 0, got {self.gender_loss_weight}")


@dataclass
class PostureConfig(TrainConfig):
    """Seed 001's posture model: a multi-task TCN-LSTM over per-frame posture features."""

    data_dir: str = opt("data/posture", "DIR/{train,val[,test]}/sequences/seq_NNN.npy (T, 15) + labels.json (seed 001's layout; `emoexp data import` writes it)")
    epochs: int = opt(50, "seed 001: 50")
    batch_size: int = opt(32, "seed 001: 32")
    lr: float = opt(1e-4, "seed 001: 1e-4")
    split: str = opt("dataset", "dataset: the layout's own train/val[/test] folders")
    monitor: str = opt("val_loss", "the heads' summed validation loss picks best.pt (the posture head alone saturates early)")
    seq_length: int = opt(30, "seed 001: frames per sequence; longer ones are cropped (random in training, centred otherwise), shorter ones repeat their last frame")
    loss_weights: str = opt("", "per-head loss weights 'posture=1,stress=0.5'; unnamed heads 1.0 (sampling weights apply to the first head only)")
    tcn_channels: int = opt(64, "TCN channels")
    tcn_levels: int = opt(3, "TCN residual blocks, dilations 1, 2, 4, ...")
    kernel_size: int = opt(3, "TCN kernel size")
    lstm_hidden: int = opt(64, "LSTM hidden size (bidirectional)")
    dropout: float = opt(0.3, "dropout in the TCN and the heads")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = ("seq_length", "tcn_channels", "tcn_levels", "kernel_size",
                                            "lstm_hidden", "dropout")
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"split": ("dataset",)}


@dataclass
class ClassifierConfig(TrainConfig):
    """Seed 001's "mental health heads on custom features": MLP heads on feature vectors."""

    data_dir: str = opt("", "folder holding features.csv (or .npy/.parquet) and labels.json; or give features and labels")
    features: str = opt("", "feature table: .csv/.parquet (a sample_id column + feature columns) or .npy (N, F) with <name>.ids.txt; empty: DATA_DIR/features.*")
    labels: str = opt("", "labels.json {sample_id: {head: code}} (+ heads.json beside it for class names); empty: DATA_DIR/labels.json")
    epochs: int = opt(50, "MLP heads converge fast; early stopping ends most runs sooner")
    batch_size: int = opt(32, "mini-batch size")
    lr: float = opt(1e-3, "Adam learning rate")
    split: str = opt("random", "random: stratified by the first head, seeded")
    loss_weights: str = opt("", "per-head loss weights 'depression=1,anxiety=0.5'; unnamed heads 1.0")
    hidden: str = opt("128,64", "hidden layer widths of the shared trunk")
    dropout: float = opt(0.4, "seed 001: dropout 0.4-0.5 in classifier heads")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = ("hidden", "dropout")
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"split": ("random",)}


@dataclass
class EEGLLMConfig(TrainConfig):
    """Seed 004: DEAP EEG as quantized tokens read by a LoRA-adapted Llama; valence and arousal heads."""

    data_dir: str = opt("data/raw/DEAP/data_preprocessed_python", "DEAP folder holding s01.dat ... (or its parent)")
    epochs: int = opt(20, "seed 004: the backbone unfreezes after freeze_epochs, so train beyond it")
    batch_size: int = opt(8, "mini-batch size (token sequences are long: 1 + 32 x (window_size/downsample + 1))")
    lr: float = opt(1e-4, "AdamW learning rate for LoRA, head and (after freeze_epochs) the backbone")
    optimizer: str = opt("adamw", "adamw (the usual LoRA choice) | adam | sgd")
    split: str = opt("subject", "subject: no subject on two sides (default) | trial: whole trials per side "
                                "(subjects shared) | segment: seed 004's random window split (leaks trials: optimistic)")
    baseline: str = opt("subtract", "the 3-s pre-trial baseline: subtract (its mean 1-s chunk from every second, then dropped; TorchEEG) | drop | keep")
    levels: int = opt(2, "classes per target: 2 (low/high at threshold) | 3 (low/medium/high at bin_edges; seed 004)")
    threshold: float = opt(5.0, "levels=2: ratings at or above (see high_inclusive) are high")
    high_inclusive: bool = opt(True, "levels=2: a rating of exactly `threshold` counts as high (TorchEEG); false: > threshold (many papers)")
    bin_edges: str = opt("", "levels=3: two edges 'low,high' (a rating on an edge goes up); empty: equal thirds of [1, 9] (3.667, 6.333)")
    window_size: int = opt(128, "samples per window at 128 Hz (1 s)")
    overlap: int = opt(64, "samples shared by consecutive windows (seed 004: overlapping segments)")
    downsample: int = opt(4, "keep every N-th sample before quantizing (sequence length / N)")
    normalize: str = opt("train", "z-score per channel with the training split's statistics (kept with the model) | segment: each window by its own")
    num_bins: int = opt(16, "amplitude symbols (seed 004's quantization)")
    quantization: str = opt("uniform", "bin edges fitted on the training split: uniform (between its 0.5/99.5 percentiles) | quantile (equal shares)")
    llm_path: str = opt("", "local causal-LM directory (save_pretrained layout, e.g. Llama-3.1-8B-Instruct); empty: a tiny random Llama (offline, CPU)")
    load_in_4bit: bool = opt(False, "seed 004: load the backbone in 4-bit NF4 through bitsandbytes (compute dtype bfloat16)")
    llm_dtype: str = opt("auto", "backbone dtype: auto (bfloat16 on CUDA or with 4-bit, else float32) | float32 | bfloat16 | float16")
    lora_r: int = opt(16, "seed 004: LoRA rank 16")
    lora_alpha: int = opt(8, "seed 004: LoRA alpha 8")
    lora_dropout: float = opt(0.1, "seed 004: LoRA dropout 0.1")
    freeze_epochs: int = opt(10, "seed 004: epochs that train LoRA and the head only; then the backbone unfreezes")

    ARCH_KEYS: ClassVar[tuple[str, ...]] = (
        "levels", "window_size", "downsample", "normalize", "num_bins", "llm_path", "load_in_4bit", "llm_dtype",
        "lora_r", "lora_alpha", "lora_dropout",
    )
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "split": ("subject", "trial", "segment"), "baseline": ("subtract", "drop", "keep"),
        "normalize": ("train", "segment"), "quantization": ("uniform", "quantile"),
        "llm_dtype": ("auto", "float32", "bfloat16", "float16"),
    }

    def __post_init__(self) -> None:
        if self.levels not in (2, 3):
            raise ConfigError(f"levels must be 2 or 3, got {self.levels}")
        if not 0 <= self.overlap < self.window_size:
            raise ConfigError(f"overlap must lie in [0, window_size={self.window_size}), got {self.overlap}")
        if self.downsample < 1 or self.num_bins < 2 or self.freeze_epochs < 0:
            raise ConfigError("downsample must be >= 1, num_bins >= 2 and freeze_epochs >= 0")
        if self.lora_r < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_r must be >= 1 and lora_dropout in [0, 1), got {self.lora_r}, {self.lora_dropout}")


# ---------------------------------------------------------------------------------------------
# Overrides


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert an override (often a string from the command line or MLproject) to ``typ``."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if typ is str:
        return "" if value is None else str(value)
    return value


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of ``cfg`` with ``overrides`` applied and checked."""
    types = field_types(type(cfg))
    changes = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown option {key!r} for {type(cfg).__name__}{hint}")
        changes[key] = coerce(key, value, types[key])
    new = dataclasses.replace(cfg, **changes)
    validate(new)
    return new


_CHOICES = {
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("cosine", "step", "none"),
    "split": ("subject", "trial"),   # EEG; image and speech tasks declare their own
    "on_bad_file": ("error", "skip"),
    "device": ("auto", "cpu", "cuda"),
    "label_scheme": ("emotion", "valence"),
    "channels": ("eeg30", "all32"),
    "channel_adapter": ("linear", "identity"),
    "fusion": ("concat", "attention"),
    "condition": ("listening", "speaking", "both"),
    "video_pooling": ("mean", "attention"),
}


def validate(cfg: Any) -> None:
    d = cfg.to_dict()
    # a task's own choices (e.g. its datasets) over the shared ones
    for key, choices in {**_CHOICES, **getattr(type(cfg), "CHOICES", {})}.items():
        if key in d and d[key] not in choices:
            raise ConfigError(f"{key}: {d[key]!r} is not one of {', '.join(choices)}")
    if "encoder" in d and d["encoder"] not in ("auto", "cnn", "cnn_lstm"):
        raise ConfigError(f"encoder: {d['encoder']!r} is not one of cnn, cnn_lstm")
    for key in ("epochs", "batch_size"):
        if d[key] < 1:
            raise ConfigError(f"{key} must be >= 1, got {d[key]}")
    if d["lr"] <= 0:
        raise ConfigError(f"lr must be > 0, got {d['lr']}")
    if not (0 <= d["val_fraction"] < 1 and 0 <= d["test_fraction"] < 1):
        raise ConfigError("val_fraction and test_fraction must lie in [0, 1)")
    if d["val_fraction"] + d["test_fraction"] >= 1:
        raise ConfigError("val_fraction + test_fraction must be < 1 (something must be left to train on)")
    if "window_size" in d and (d["window_size"] < 16 or d.get("stride", 1) < 1):
        raise ConfigError("window_size must be >= 16 and stride >= 1")
    if "classes" in d and d["classes"] not in (6, 7):
        raise ConfigError(f"classes: {d['classes']} is not 6 or 7")
    if "image_size" in d and d["image_size"] and d["image_size"] < 32:
        raise ConfigError(f"image_size must be 0 (the dataset's own) or >= 32, got {d['image_size']}")


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read an experiment preset: YAML holding only what differs from the task's defaults.

    Example ``experiments/sadness_focus.yaml``::

        # emoexp train finetune_eav --preset experiments/sadness_focus.yaml
        task: finetune_eav
        weights: sadness=5,happiness=0.5
    """
    return read_yaml_mapping(path, "preset file", "a preset is a mapping of option: value")


def read_yaml_mapping(path: str | Path, what: str, shape: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; ConfigError naming the file otherwise."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: {shape}")
    return data


# ---------------------------------------------------------------------------------------------
# Per-class sampling weights


# Emotion words spelled differently across seeds and datasets (either direction).
_SYNONYMS = {"angry": "anger", "happy": "happiness", "happiness": "happy", "sadness": "sad",
             "surprised": "surprise", "fearful": "fear", "disgusted": "disgust", "calm": "calmness",
             # RAVDESS spells them angry, surprised, fearful, calm
             "anger": "angry", "surprise": "surprised", "fear": "fearful", "calmness": "calm"}


def parse_weights(spec: str | dict | None, class_names: list[str]) -> dict[str, float]:
    """``"sadness=5,happiness=0.5"`` -> a weight for every class (unnamed classes 1.0).

    Names match case-insensitively; a unique prefix is enough (``sad`` -> ``sadness``).

    >>> parse_weights("sad=5", ["neutral", "sadness"])
    {'neutral': 1.0, 'sadness': 5.0}
    """
    weights = {c: 1.0 for c in class_names}
    if not spec:
        return weights
    items = spec.items() if isinstance(spec, dict) else _split_pairs(spec)
    lower = {c.lower(): c for c in class_names}
    for name, value in items:
        key = str(name).strip().lower()
        if key not in lower and _SYNONYMS.get(key) in lower:
            key = _SYNONYMS[key]  # seed 003 says angry/happy where datasets say anger/happiness
        if key in lower:
            cls = lower[key]
        else:
            matches = [c for lc, c in lower.items() if lc.startswith(key)] if key else []
            if len(matches) != 1:
                what = "is ambiguous" if matches else "is not a class"
                raise ConfigError(
                    f"weights: {name!r} {what}; classes are {', '.join(class_names)}"
                )
            cls = matches[0]
        try:
            w = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"weights: {name}={value!r} is not a number") from None
        if not w >= 0 or w == float("inf"):
            raise ConfigError(f"weights: {name}={value} must be a finite number >= 0")
        weights[cls] = w
    if not any(w > 0 for w in weights.values()):
        raise ConfigError("weights: at least one class needs a weight > 0")
    return weights


def _split_pairs(spec: str) -> list[tuple[str, str]]:
    pairs = []
    for part in spec.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"weights: {part!r} should look like class=number")
        name, value = part.split("=", 1)
        pairs.append((name.strip(), value.strip()))
    return pairs


def format_weights(weights: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in weights.items())
