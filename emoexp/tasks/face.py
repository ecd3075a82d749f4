"""Face emotion (seeds 001 and 003): FER2013 or AffectNet, DenseNet121 or a small CNN."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from emoexp.config import ConfigError, TrainConfig, opt
from emoexp.data.registry import dataset_choices, dataset_dir
from emoexp.tasks.base import Task, register_task

log = logging.getLogger(__name__)


def _backbone_choices() -> tuple[str, ...]:
    """The registry's face encoders."""
    from emoexp.models import model_options

    return tuple(model_options("face_encoder"))


@dataclass
class FaceConfig(TrainConfig):
    """Seed 001 (DenseNet121 fine-tuning, anti-overfitting set) and seed 003 (weighted runs)."""

    data_dir: str = opt(dataset_dir("affectnet"), "FER2013 (fer2013.csv or train/test folders) or AffectNet (Train/Test folders, labels.csv) root")
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
    CHOICES: ClassVar[dict[str, Any]] = {"dataset": dataset_choices("face"), "backbone": _backbone_choices,
                                         "split": ("dataset", "random")}

    def __post_init__(self) -> None:
        if self.classes not in (6, 7):
            raise ConfigError(f"classes: {self.classes} is not 6 or 7")
        if self.image_size and self.image_size < 32:
            raise ConfigError(f"image_size must be 0 (the dataset's own) or >= 32, got {self.image_size}")



@register_task
class TrainFace(Task):
    name = "train_face"
    modality = "face"
    dataset = "face"
    registered_model = "emoexp-face"
    config_cls = FaceConfig
    summary = "Face emotion from FER2013 or AffectNet images (DenseNet121 or a small CNN)."
    serving_inputs = ("image",)
    flexible_inputs = ("image",)  # any size, one image or a batch (see serving.log_model)
    # seed 003's per-emotion weight flags (--sad 5 --happy 0.5); both spellings of anger
    class_flags = ("neutral", "happy", "sad", "surprise", "fear", "anger", "angry", "disgust")

    def build_data(self, cfg: FaceConfig):
        import numpy as np

        from emoexp.data.base import BadFilePolicy, DataBundle
        from emoexp.data.faces import NATIVE_SIZE
        from emoexp.data.images import FaceImageDataset
        from emoexp.data.registry import get_dataset

        policy = BadFilePolicy(cfg.on_bad_file)
        faces = get_dataset(cfg.dataset).read(cfg.data_dir, classes=cfg.classes, policy=policy,
                                              samples_per_class=cfg.samples_per_class or None, seed=cfg.seed)
        size = cfg.image_size or NATIVE_SIZE[cfg.dataset]
        sides = _split(faces.labels, faces.split, cfg)
        names = faces.class_names

        def make(side: str, train: bool):
            idx = sides[side]
            if idx is None or not len(idx):
                return None
            return FaceImageDataset(faces.images[idx], faces.labels[idx], size=size, grayscale=faces.grayscale,
                                    augment=train and cfg.augment, aggressive=train and cfg.aggressive)

        train, val, test = make("train", True), make("val", False), make("test", False)
        if train is None or val is None:
            raise ConfigError(f"{cfg.data_dir}: the {cfg.split} split left no training or validation images "
                              f"({len(faces.labels)} images); add images or lower val_fraction")
        counts = {side: _counts(faces.labels[idx], names) for side, idx in sides.items() if idx is not None}
        ex = sides["val"][:2]
        info = {
            "dataset": cfg.dataset,
            "source": str(cfg.data_dir),
            "layout": faces.source,
            "image_size": size,
            "grayscale": bool(faces.grayscale),
            "n_images": int(len(faces.labels)),
            "backbone": cfg.backbone,
            "class_counts": counts,
        }
        split = {"scheme": cfg.split, "counts": counts,
                 "note": "images per class and side; the dataset's own split" if cfg.split == "dataset"
                 else "stratified random split with the run's seed"}
        return DataBundle(
            train=train, val=val, test=test, heads={"emotion": list(names)},
            train_targets=train.targets, split=split,
            input_example={"image": np.ascontiguousarray(faces.images[ex])},
            info=info, skipped_files=list(policy.skipped),
        )

    def build_model(self, cfg: FaceConfig, info: dict[str, Any]):
        from emoexp.models import create_model, model_options

        spec: dict[str, Any] = {"model": model_options("face_encoder")[cfg.backbone]}
        return create_model(
            "multimodal_net",
            modalities={"image": spec},
            heads={h: len(c) for h, c in info["heads"].items()},
            head_hidden=(256,),
            head_dropout=cfg.dropout,
        )

    def init_from_pretrained(self, model, cfg: FaceConfig, info: dict[str, Any]) -> dict[str, str]:
        if cfg.backbone_weights in ("", "none"):
            return {"emoexp.backbone_weights": "none"}
        if cfg.backbone != "densenet121":
            raise ConfigError(f"backbone_weights is for backbone=densenet121, not {cfg.backbone}")
        from emoexp.models.face import load_densenet_weights

        try:
            load_densenet_weights(model.encoders["image"], cfg.backbone_weights)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return {"emoexp.backbone_weights": str(cfg.backbone_weights)}

    def epoch_sampler(self, dataset, cfg: FaceConfig, generator, targets, weights, class_names):
        if not cfg.balance:
            if cfg.aggressive:
                log.warning("aggressive augmentation applies to oversampled images: it needs --balance")
            return None
        import numpy as np

        from emoexp.data.images import BalancedSampler, class_targets

        counts = {c: int(np.sum(np.asarray(targets) == k)) for k, c in enumerate(class_names)}
        per_class = class_targets(counts, weights, cfg.target_samples)
        return BalancedSampler(targets, class_names, per_class, generator)

    def evaluation_overrides(self, cfg: FaceConfig, info: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        # the model's own input size; plain, unbalanced epochs of the evaluated images
        return {"image_size": int(info.get("image_size", cfg.image_size)), "augment": False, "balance": False}

    def serving_batch(self, inputs: dict[str, Any], cfg: FaceConfig, info: dict[str, Any]) -> dict:
        from emoexp.data.images import preprocess

        if "image" not in inputs:
            raise ValueError(f"input needs 'image' (H x W x 3 uint8 pixels, or a batch); got {sorted(inputs)}")
        return {"image": preprocess(inputs["image"], int(info["image_size"]), bool(info["grayscale"]))}


def _counts(labels, names: list[str]) -> dict[str, int]:
    import numpy as np

    return {c: int(np.sum(labels == k)) for k, c in enumerate(names)}


def _split(labels, split, cfg: FaceConfig) -> dict[str, Any]:
    """Indices per side. ``dataset``: the dataset's own sides, val (and test) carved from train,
    stratified, when it has none; ``random``: one stratified split of everything."""
    import numpy as np

    rng = np.random.default_rng(cfg.seed)
    n = len(labels)
    if cfg.split == "random":
        pool = np.arange(n)
        sides = {"train": pool, "val": np.zeros(0, int), "test": np.zeros(0, int)}
        need = ("test", "val")
    else:
        split = np.asarray(split).astype(str)
        sides = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
        unlabelled = np.flatnonzero(~np.isin(split, ["train", "val", "test"]))
        sides["train"] = np.concatenate([sides["train"], unlabelled])
        need = tuple(s for s in ("test", "val") if not len(sides[s]))
    for side in need:
        frac = cfg.test_fraction if side == "test" else cfg.val_fraction
        if frac <= 0:
            continue
        pool = sides["train"]
        take = []
        for k in np.unique(labels[pool]):
            members = pool[labels[pool] == k]
            m = int(round(len(members) * frac))
            if len(members) > 1:
                m = min(max(m, 1), len(members) - 1)  # every class on both sides when possible
            else:
                m = 0
            take.append(rng.permutation(members)[:m])
        took = np.concatenate(take) if take else np.zeros(0, int)
        sides[side] = np.sort(took)
        sides["train"] = np.setdiff1d(pool, took)
    if cfg.split == "random" and not len(sides["test"]):
        sides["test"] = None
    return sides
