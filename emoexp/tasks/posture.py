"""Body posture (seed 001): a multi-task TCN-LSTM over posture-feature sequences, and MLP
classifier heads on feature vectors ("mental health heads on custom features")."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from emoexp.config import ConfigError, TrainConfig, opt, parse_weights
from emoexp.data.registry import dataset_dir
from emoexp.tasks.base import Task, register_task

if TYPE_CHECKING:  # numpy stays out of `emoexp --help`
    import numpy as np

log = logging.getLogger(__name__)


@dataclass
class PostureConfig(TrainConfig):
    """Seed 001's posture model: a multi-task TCN-LSTM over per-frame posture features."""

    data_dir: str = opt(dataset_dir("posture"), "DIR/{train,val[,test]}/sequences/seq_NNN.npy (T, 15) + labels.json (seed 001's layout; `emoexp data import` writes it)")
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
    CHOICES: ClassVar[dict[str, Any]] = {"split": ("dataset",)}


@dataclass
class ClassifierConfig(TrainConfig):
    """Seed 001's "mental health heads on custom features": MLP heads on feature vectors."""

    data_dir: str = opt(dataset_dir("features"), "folder holding features.csv (or .npy/.parquet) and labels.json; or give features and labels")
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
    CHOICES: ClassVar[dict[str, Any]] = {"split": ("random",)}


class SequenceDataset:
    """Sequences (T_i, F) -> ``{"sequence": (seq_length, F) float32, <head>: int64}``: a random
    crop per draw in training, the centre otherwise; shorter ones repeat their last frame."""

    def __init__(self, sequences: list[np.ndarray], labels: dict[str, np.ndarray], seq_length: int,
                 train: bool = False):
        import numpy as np

        self.sequences = sequences
        self.targets = {h: np.asarray(t, dtype=np.int64) for h, t in labels.items()}
        self.seq_length = int(seq_length)
        self.train = train

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict:
        import numpy as np
        import torch

        from emoexp.data.posture import fit_length

        seq = self.sequences[i]
        if self.train:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))  # the engine's seed
            x = fit_length(seq, self.seq_length, mode="random", rng=rng)
        else:
            x = fit_length(seq, self.seq_length, mode="centre")
        item = {"sequence": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))}
        for head, t in self.targets.items():
            item[head] = torch.tensor(t[i])
        return item


class FeatureDataset:
    """Feature rows (N, F) -> ``{"features": (F,) float32, <head>: int64}``."""

    def __init__(self, x: np.ndarray, labels: dict[str, np.ndarray]):
        import numpy as np

        self.x = np.asarray(x, dtype=np.float32)
        self.targets = {h: np.asarray(t, dtype=np.int64) for h, t in labels.items()}

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        import torch

        item = {"features": torch.from_numpy(self.x[i])}
        for head, t in self.targets.items():
            item[head] = torch.tensor(t[i])
        return item


def _loss_weights(spec: str, heads: dict[str, list[str]]) -> dict[str, float]:
    try:
        return parse_weights(spec, list(heads))
    except ConfigError as e:
        raise ConfigError("loss_" + str(e).replace("classes are", "heads are")) from None


def _counts(labels: dict[str, np.ndarray], heads: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    import numpy as np

    return {h: {c: int(np.sum(labels[h] == k)) for k, c in enumerate(names)} for h, names in heads.items()}


@register_task
class TrainPosture(Task):
    name = "train_posture"
    modality = "posture"
    dataset = "posture"
    registered_model = "emoexp-posture"
    config_cls = PostureConfig
    summary = "Body posture, stress and trajectory from keypoint-feature sequences (multi-task TCN-LSTM)."
    serving_inputs = ("sequence",)
    flexible_inputs = ("sequence",)  # one (T, F) sequence or a (B, T, F) batch, any T
    ragged_inputs = ("sequence",)    # or a list of sequences of different lengths
    option_aliases = {"data_dir": ("--data",), "output_dir": ("--output",)}  # seed 001's flags

    def build_data(self, cfg: PostureConfig):
        import numpy as np

        from emoexp.data.base import BadFilePolicy, DataBundle
        from emoexp.data.posture import load_posture_dataset

        if cfg.seq_length < 2:
            raise ConfigError(f"seq_length must be >= 2, got {cfg.seq_length}")
        policy = BadFilePolicy(cfg.on_bad_file)
        pd_ = load_posture_dataset(cfg.data_dir, policy=policy)
        heads = {h: list(c) for h, c in pd_.heads.items()}
        sides = {s: (pd_.sequences.get(s) or [], pd_.labels.get(s) or {}) for s in ("train", "val", "test")}
        if not sides["train"][0] or not sides["val"][0]:
            raise ConfigError(f"{cfg.data_dir}: needs train/ and val/ sequences (found "
                              f"{', '.join(f'{s}: {len(v[0])}' for s, v in sides.items())})")
        train = SequenceDataset(*sides["train"], cfg.seq_length, train=True)
        val = SequenceDataset(*sides["val"], cfg.seq_length)
        test = SequenceDataset(*sides["test"], cfg.seq_length) if sides["test"][0] else None
        counts = {s: _counts(lab, heads) for s, (seqs, lab) in sides.items() if seqs}
        lengths = [len(q) for q in sides["train"][0]]
        info = {"dataset": "posture", "source": str(cfg.data_dir), "n_features": int(pd_.n_features),
                "seq_length": int(cfg.seq_length), "class_counts": counts,
                "train_lengths": {"min": int(min(lengths)), "median": float(np.median(lengths)),
                                  "max": int(max(lengths))}}
        ex = [val.sequences[i][: cfg.seq_length] for i in range(min(2, len(val)))]
        example = np.stack([np.pad(e, ((0, cfg.seq_length - len(e)), (0, 0)), mode="edge") for e in ex])
        return DataBundle(
            train=train, val=val, test=test, heads=heads, train_targets=train.targets[next(iter(heads))],
            split={"scheme": "dataset", "counts": counts, "ids": {s: pd_.ids.get(s, []) for s in sides}},
            input_example={"sequence": example.astype(np.float32)}, info=info,
            skipped_files=list(policy.skipped),
        )

    def cv_pool(self, cfg: PostureConfig, data):
        """Units: the sequences of every side (no subjects: folds are stratified over sequences);
        random crops on the train side only."""
        import numpy as np

        from emoexp.data.folds import CVPool, FoldViews

        parts = [d for d in (data.train, data.val, data.test) if d is not None]
        seqs = [q for d in parts for q in d.sequences]
        targets = {h: np.concatenate([d.targets[h] for d in parts]) for h in data.heads}

        def views(sides: dict[str, np.ndarray]) -> FoldViews:
            out = {s: SequenceDataset([seqs[i] for i in idx], {h: t[idx] for h, t in targets.items()},
                                      cfg.seq_length, train=s == "train") for s, idx in sides.items()}
            return FoldViews(out, {s: np.asarray(i) for s, i in sides.items()})

        return CVPool(unit="sequence", labels=targets[data.primary_head], subjects=None, trials=None, views=views)

    def build_model(self, cfg: PostureConfig, info: dict[str, Any]):
        from emoexp.models import create_model

        return create_model("tcn_lstm", n_features=int(info["n_features"]),
                            heads={h: len(c) for h, c in info["heads"].items()}, channels=cfg.tcn_channels,
                            levels=cfg.tcn_levels, kernel_size=cfg.kernel_size, lstm_hidden=cfg.lstm_hidden,
                            dropout=cfg.dropout)

    def head_loss_weights(self, cfg: PostureConfig, info: dict[str, Any]) -> dict[str, float]:
        return _loss_weights(cfg.loss_weights, info["heads"])

    def serving_batch(self, inputs: dict[str, Any], cfg: PostureConfig, info: dict[str, Any]) -> dict:
        import torch

        return {"sequence": torch.from_numpy(prepare_sequences(inputs, int(info["n_features"]),
                                                               int(info["seq_length"])))}


def prepare_sequences(inputs: dict[str, Any], n_features: int, seq_length: int) -> np.ndarray:
    """Serving input -> (B, seq_length, F) float32: one (T, F) sequence, a (B, T, F) batch, or a
    list of sequences of different lengths; centre-cropped or last-frame padded as in evaluation."""
    import numpy as np

    from emoexp.data.posture import fit_length

    if "sequence" not in inputs:
        raise ValueError(f"input needs 'sequence' ((T, {n_features}) features per frame, or a batch); "
                         f"got {sorted(inputs)}")
    raw = inputs["sequence"]
    arr = np.asarray(raw) if not isinstance(raw, list | tuple) else None
    if arr is not None and arr.dtype == object and arr.ndim == 1 and all(np.ndim(s) == 2 for s in arr):
        seqs = [np.asarray(s, dtype=np.float32) for s in arr]
    elif isinstance(raw, list | tuple) and raw and all(np.ndim(s) == 2 for s in raw):
        seqs = [np.asarray(s, dtype=np.float32) for s in raw]
    else:
        try:
            a = np.asarray(np.asarray(raw).tolist(), dtype=np.float32)
        except (ValueError, TypeError):
            raise ValueError(f"sequence: expected (T, {n_features}) or (B, T, {n_features}) numbers") from None
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ValueError(f"sequence: expected (T, {n_features}) or (B, T, {n_features}), got shape {a.shape}")
        seqs = list(a)
    out = []
    for k, s in enumerate(seqs):
        if s.ndim != 2 or s.shape[1] != n_features:
            raise ValueError(f"sequence {k}: shape {s.shape}; the model takes (T, {n_features}) features per frame")
        if len(s) == 0 or not np.all(np.isfinite(s)):
            raise ValueError(f"sequence {k}: empty or holds NaN/inf (interpolate missing keypoints first)")
        out.append(fit_length(s, seq_length, mode="centre"))
    return np.stack(out).astype(np.float32)


@register_task
class TrainClassifier(Task):
    name = "train_classifier"
    modality = "features"
    dataset = "features"
    registered_model = "emoexp-classifier"
    config_cls = ClassifierConfig
    summary = "MLP classifier heads on feature vectors, one head per label key (seed 001's custom-feature heads)."
    serving_inputs = ("features",)

    def build_data(self, cfg: ClassifierConfig):
        import numpy as np

        from emoexp.data.base import DataBundle
        from emoexp.data.features import load_feature_table
        from emoexp.data.splits import split_trials

        if not cfg.data_dir and not cfg.features:
            raise ConfigError("give data_dir (holding features.csv and labels.json) or features= and labels=")
        x, labels, heads, ids = load_feature_table(cfg.data_dir, features=cfg.features, labels=cfg.labels)
        primary = next(iter(heads))
        sides = split_trials({"all": labels[primary]}, val_fraction=cfg.val_fraction,
                             test_fraction=cfg.test_fraction, seed=cfg.seed)
        idx = {s: sides[s]["all"] for s in ("train", "val", "test")}
        if not len(idx["train"]) or not len(idx["val"]):
            raise ConfigError(f"{cfg.features or cfg.data_dir}: {len(x)} samples are too few for a train and a val side")

        def make(side):
            i = idx[side]
            return FeatureDataset(x[i], {h: t[i] for h, t in labels.items()}) if len(i) else None

        train, val, test = make("train"), make("val"), make("test")
        mean, std = x[idx["train"]].mean(axis=0), x[idx["train"]].std(axis=0)
        counts = {s: _counts({h: t[i] for h, t in labels.items()}, heads) for s, i in idx.items() if len(i)}
        info = {"dataset": "features", "source": str(cfg.features or cfg.data_dir), "n_features": int(x.shape[1]),
                "feature_mean": mean.tolist(), "feature_std": std.tolist(), "class_counts": counts}
        return DataBundle(
            train=train, val=val, test=test, heads=heads, train_targets=train.targets[primary],
            split={"scheme": "random", "counts": counts, **{s: [ids[j] for j in i] for s, i in idx.items()}},
            input_example={"features": x[idx["val"][:2]].astype(np.float32)}, info=info,
        )

    def cv_pool(self, cfg: ClassifierConfig, data):
        """Units: the feature rows; each fold standardises with its own training rows."""
        import numpy as np

        from emoexp.data.folds import CVPool, FoldViews

        parts = [d for d in (data.train, data.val, data.test) if d is not None]
        x = np.concatenate([d.x for d in parts])
        targets = {h: np.concatenate([d.targets[h] for d in parts]) for h in data.heads}

        def views(sides: dict[str, np.ndarray]) -> FoldViews:
            out = {s: FeatureDataset(x[idx], {h: t[idx] for h, t in targets.items()}) for s, idx in sides.items()}
            train = x[sides["train"]]
            info = {"feature_mean": train.mean(axis=0).tolist(), "feature_std": train.std(axis=0).tolist()}
            return FoldViews(out, {s: np.asarray(i) for s, i in sides.items()}, info)

        return CVPool(unit="row", labels=targets[data.primary_head], subjects=None, trials=None, views=views)

    def build_model(self, cfg: ClassifierConfig, info: dict[str, Any]):
        import numpy as np

        from emoexp.models import create_model

        try:
            hidden = tuple(int(h) for h in str(cfg.hidden).split(",") if h.strip())
        except ValueError:
            raise ConfigError(f"hidden: {cfg.hidden!r} is not a comma-separated list of widths") from None
        net = create_model("feature_mlp", n_features=int(info["n_features"]),
                           heads={h: len(c) for h, c in info["heads"].items()}, hidden=hidden, dropout=cfg.dropout)
        net.set_standardisation(np.asarray(info["feature_mean"], dtype=np.float32),
                                np.asarray(info["feature_std"], dtype=np.float32))
        return net

    def evaluation_overrides(self, cfg: ClassifierConfig, info: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        # read the tables of --data, not the training ones (unless given explicitly)
        return {k: "" for k in ("features", "labels") if k not in given}

    def head_loss_weights(self, cfg: ClassifierConfig, info: dict[str, Any]) -> dict[str, float]:
        return _loss_weights(cfg.loss_weights, info["heads"])

    def serving_batch(self, inputs: dict[str, Any], cfg: ClassifierConfig, info: dict[str, Any]) -> dict:
        import numpy as np
        import torch

        n = int(info["n_features"])
        x = np.asarray(inputs.get("features"), dtype=np.float32) if "features" in inputs else None
        if x is None:
            raise ValueError(f"input needs 'features' ((B, {n}) float32); got {sorted(inputs)}")
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != n or not np.all(np.isfinite(x)):
            raise ValueError(f"features: expected finite (B, {n}) values, got shape {x.shape}")
        return {"features": torch.from_numpy(x)}
