"""Face emotion (seeds 001 and 003): FER2013 or AffectNet, DenseNet121, a small CNN, or a local
Hugging Face image classifier (``backbone=hf``, seed 003's ViT)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from emoexp.config import ConfigError, TrainConfig, opt
from emoexp.data.registry import dataset_choices, dataset_dir
from emoexp.tasks.base import Task, register_task

log = logging.getLogger(__name__)


def _backbone_choices() -> tuple[str, ...]:
    """The registry's face encoders, and its whole face networks (``hf``: :mod:`emoexp.models.face_hf`)."""
    from emoexp.models import model_options

    whole = tuple(o for o, name in model_options("network").items() if name.startswith("face_"))
    return (*model_options("face_encoder"), *whole)


@dataclass
class FaceConfig(TrainConfig):
    """Seed 001 (DenseNet121 fine-tuning, anti-overfitting set) and seed 003 (weighted runs)."""

    data_dir: str = opt(dataset_dir("affectnet"), "FER2013 (fer2013.csv or train/test folders) or AffectNet (Train/Test folders, labels.csv) root")
    dataset: str = opt("affectnet", "affectnet | fer2013 (seed 001's default is affectnet)")
    classes: int = opt(6, "6: neutral happy sad surprise fear anger (seed 001; disgust and contempt dropped) | 7: + disgust (seed 003)")
    backbone: str = opt("densenet121", "densenet121 (torchvision, seed 001) | small_cnn (4 conv blocks: quick CPU runs) | "
                                       "hf (the image classifier in hf_model, seed 003)")
    hf_model: str = opt("", "backbone=hf: a local save_pretrained folder of any AutoModelForImageClassification "
                            "(e.g. seed 003's dima806/facial_emotions_image_detection ViT; never downloaded); its image "
                            "processor sets the image size and normalisation, its classifier is replaced when its labels "
                            "differ (rows of the labels both know carried over by name)")
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
        if self.backbone == "hf" and not self.hf_model:
            raise ConfigError("backbone=hf needs hf_model=PATH, a local save_pretrained folder of an image classifier")
        if self.hf_model and self.backbone != "hf":
            raise ConfigError(f"hf_model is read with backbone=hf (backbone is {self.backbone}); add --backbone hf")
        if self.backbone == "hf" and self.image_size:
            raise ConfigError("backbone=hf takes the image size of the model's own processor: leave image_size at 0")



@register_task
class TrainFace(Task):
    name = "train_face"
    modality = "face"
    dataset = "face"
    registered_model = "emoexp-face"
    config_cls = FaceConfig
    summary = "Face emotion from FER2013 or AffectNet images (DenseNet121, a small CNN or a local Hugging Face classifier)."
    serving_inputs = ("image",)
    flexible_inputs = ("image",)  # any size, one image or a batch (see serving.log_model)
    extra_requirements = ("transformers",)  # backbone=hf rebuilds the Hugging Face model
    # seed 003's flags: --model (a local copy of the Hugging Face model), --learning-rate
    option_aliases = {"hf_model": ("--model",), "lr": ("--learning-rate",)}
    # seed 003's per-emotion weight flags (--sad 5 --happy 0.5); both spellings of anger
    class_flags = ("neutral", "happy", "sad", "surprise", "fear", "anger", "angry", "disgust")

    def build_data(self, cfg: FaceConfig):
        import numpy as np

        from emoexp.data.base import BadFilePolicy, DataBundle
        from emoexp.data.faces import NATIVE_SIZE
        from emoexp.data.images import FaceImageDataset
        from emoexp.data.registry import get_dataset

        hf = _hf_spec(cfg) if cfg.backbone == "hf" else None
        policy = BadFilePolicy(cfg.on_bad_file)
        faces = get_dataset(cfg.dataset).read(cfg.data_dir, classes=cfg.classes, policy=policy,
                                              samples_per_class=cfg.samples_per_class or None, seed=cfg.seed)
        size = hf["size"] if hf else cfg.image_size or NATIVE_SIZE[cfg.dataset]
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
            **({"hf": hf} if hf else {}),
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

    def cv_pool(self, cfg: FaceConfig, data):
        """Units: the images (no subjects: folds are stratified over images). A fold's sides are
        face datasets of the images resized once; training augmentation on the train side only."""
        import copy

        import numpy as np
        import torch

        from emoexp.data.folds import CVPool, FoldViews

        parts = [d for d in (data.train, data.val, data.test) if d is not None]
        pixels = torch.cat([d.pixels for d in parts])
        labels = np.concatenate([d.targets for d in parts])
        template = {True: data.train, False: data.val}  # augmenting, and plain

        def views(sides: dict[str, np.ndarray]) -> FoldViews:
            out = {}
            for side, idx in sides.items():
                ds = copy.copy(template[side == "train"])
                ds.pixels, ds.targets = pixels[torch.from_numpy(np.asarray(idx, dtype=np.int64))], labels[idx]
                out[side] = ds
            return FoldViews(out, {s: np.asarray(i) for s, i in sides.items()})

        return CVPool(unit="image", labels=labels, subjects=None, trials=None, views=views)

    def build_model(self, cfg: FaceConfig, info: dict[str, Any]):
        from emoexp.models import create_model, model_options

        if info.get("hf"):  # the Hugging Face classifier is the whole network (from the info alone)
            return create_model("face_hf", spec=info["hf"], heads={h: len(c) for h, c in info["heads"].items()},
                                classes=next(iter(info["heads"].values())))
        spec: dict[str, Any] = {"model": model_options("face_encoder")[cfg.backbone]}
        return create_model(
            "multimodal_net",
            modalities={"image": spec},
            heads={h: len(c) for h, c in info["heads"].items()},
            head_hidden=(256,),
            head_dropout=cfg.dropout,
        )

    def init_from_pretrained(self, model, cfg: FaceConfig, info: dict[str, Any]) -> dict[str, str]:
        if info.get("hf"):
            from emoexp.models.face_hf import load_hf_weights

            if cfg.backbone_weights not in ("", "none"):
                raise ConfigError("backbone_weights is for backbone=densenet121; backbone=hf loads hf_model's weights")
            try:
                done = load_hf_weights(model, cfg.hf_model, next(iter(info["heads"].values())))
            except ValueError as e:
                raise ConfigError(str(e)) from None
            log.info("%s: loaded with %s", cfg.hf_model, done["summary"])
            return {"emoexp.hf_model": str(cfg.hf_model), "emoexp.hf_labels": ",".join(done["labels"]),
                    "emoexp.hf_head": done["summary"]}
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
        # the model's own input size (backbone=hf: its processor's, read again); plain, unbalanced epochs
        size = 0 if info.get("hf") else int(info.get("image_size", cfg.image_size))
        return {"image_size": size, "augment": False, "balance": False}

    def serving_batch(self, inputs: dict[str, Any], cfg: FaceConfig, info: dict[str, Any]) -> dict:
        from emoexp.data.images import preprocess

        if "image" not in inputs:
            raise ValueError(f"input needs 'image' (H x W x 3 uint8 pixels, or a batch); got {sorted(inputs)}")
        return {"image": preprocess(inputs["image"], int(info["image_size"]), bool(info["grayscale"]))}


def _hf_spec(cfg: FaceConfig) -> dict[str, Any]:
    from emoexp.models.face_hf import hf_spec

    try:
        return hf_spec(cfg.hf_model)
    except ValueError as e:
        raise ConfigError(str(e)) from None


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
