"""EEG to LLM (seed 004): DEAP windows as quantized tokens, a LoRA-adapted Llama, valence
(primary) and arousal heads, and their joint accuracy; ``targets`` picks other heads (dominance,
liking, the four valence-arousal quadrants)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from emoexp.config import ConfigError, TrainConfig, opt
from emoexp.data.registry import dataset_dir
from emoexp.tasks.base import Task, register_task

log = logging.getLogger(__name__)

# fitted quantizer / normalisation statistics: a sample of training windows is enough
_FIT_WINDOWS = 2000


@dataclass
class EEGLLMConfig(TrainConfig):
    """Seed 004: DEAP EEG as quantized tokens read by a LoRA-adapted Llama; valence and arousal heads."""

    data_dir: str = opt(dataset_dir("deap"), "DEAP folder holding s01.dat ... (or its parent)")
    epochs: int = opt(20, "seed 004: the backbone unfreezes after freeze_epochs, so train beyond it")
    batch_size: int = opt(8, "mini-batch size (token sequences are long: 1 + 32 x (window_size/downsample + 1))")
    lr: float = opt(1e-4, "AdamW learning rate for LoRA, head and (after freeze_epochs) the backbone")
    optimizer: str = opt("adamw", "adamw (the usual LoRA choice) | adam | sgd")
    split: str = opt("subject", "subject: no subject on two sides (default) | trial: whole trials per side "
                                "(subjects shared) | segment: seed 004's random window split (leaks trials: optimistic)")
    baseline: str = opt("subtract", "the 3-s pre-trial baseline: subtract (its mean 1-s chunk from every second, then dropped; TorchEEG) | drop | keep")
    targets: str = opt("valence,arousal", "heads, comma-separated, the first primary (its metrics are val_accuracy etc.): "
                                          "valence | arousal | dominance | liking (each rating low/high, or 3 levels) | "
                                          "quadrant (one 4-class head: LVLA, LVHA, HVLA, HVHA; levels=2)")
    levels: int = opt(2, "classes per target: 2 (low/high at threshold) | 3 (low/medium/high at bin_edges; seed 004)")
    threshold: float = opt(5.0, "levels=2: ratings at or above (see high_inclusive) are high")
    high_inclusive: bool = opt(True, "levels=2: a rating of exactly `threshold` counts as high (TorchEEG); false: > threshold (many papers)")
    bin_edges: str = opt("", "levels=3: two edges 'low,high' (a rating on an edge goes up); empty: equal thirds of [1, 9] (3.667, 6.333)")
    trial_seconds: float = opt(0.0, "use only the first N seconds of each trial (after the baseline step): fewer windows "
                                    "for a smoke run; 0: the whole trial (60 s in DEAP)")
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
        "targets", "levels", "window_size", "downsample", "normalize", "num_bins", "llm_path", "load_in_4bit", "llm_dtype",
        "lora_r", "lora_alpha", "lora_dropout",
    )
    CHOICES: ClassVar[dict[str, Any]] = {
        "split": ("subject", "trial", "segment"), "baseline": ("subtract", "drop", "keep"),
        "normalize": ("train", "segment"), "quantization": ("uniform", "quantile"),
        "llm_dtype": ("auto", "float32", "bfloat16", "float16"),
    }

    def __post_init__(self) -> None:
        if self.window_size < 16:
            raise ConfigError(f"window_size must be >= 16, got {self.window_size}")
        if self.levels not in (2, 3):
            raise ConfigError(f"levels must be 2 or 3, got {self.levels}")
        if not 0 <= self.overlap < self.window_size:
            raise ConfigError(f"overlap must lie in [0, window_size={self.window_size}), got {self.overlap}")
        if self.trial_seconds < 0:
            raise ConfigError(f"trial_seconds must be >= 0 (0: whole trials), got {self.trial_seconds}")
        if self.downsample < 1 or self.num_bins < 2 or self.freeze_epochs < 0:
            raise ConfigError("downsample must be >= 1, num_bins >= 2 and freeze_epochs >= 0")
        if self.lora_r < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_r must be >= 1 and lora_dropout in [0, 1), got {self.lora_r}, {self.lora_dropout}")
        names = self.target_names()
        if self.levels != 2 and "quadrant" in names:
            raise ConfigError("targets=quadrant splits valence and arousal at threshold: it needs levels=2")

    def target_names(self) -> list[str]:
        """The heads, primary first (checked: known, none twice)."""
        from emoexp.data.deap_labels import ALL_TARGETS

        names = [t.strip() for t in str(self.targets).split(",") if t.strip()]
        unknown = [t for t in names if t not in ALL_TARGETS]
        if not names or unknown or len(set(names)) != len(names):
            raise ConfigError(f"targets must be distinct names among {', '.join(ALL_TARGETS)}, comma-separated; "
                              f"got {self.targets!r}")
        return names


@register_task
class TrainEEGLLM(Task):
    name = "train_eeg_llm"
    modality = "eeg"
    dataset = "deap"
    registered_model = "emoexp-eeg-llm"
    config_cls = EEGLLMConfig
    summary = "DEAP valence/arousal from quantized EEG tokens read by a LoRA-adapted Llama (seed 004)."
    serving_inputs = ("eeg",)
    flexible_inputs = ("eeg",)  # one (32, T) window or a (B, 32, T) batch (checked here)
    extra_requirements = ("transformers", "peft", "accelerate", "bitsandbytes")
    option_aliases = {"lr": ("--learning-rate",), "llm_path": ("--model-path",)}
    # measured on 2 CPU cores, lightly loaded (README: EEG to LLM)
    help_more = (
        "\b\n"
        "Smoke setting: 3 subjects, the first 10 s of each trial, windows back to back, every 8th sample\n"
        "(545 tokens a window): 400 training windows, about 10 s an epoch, a minute in all on 2 CPU cores:\n"
        "  emoexp data synth deap --out data/demo/deap\n"
        "  emoexp train train_eeg_llm --data-dir data/demo/deap --max-subjects 3 --trial-seconds 10 \\\n"
        "      --overlap 0 --downsample 8 --epochs 2 --freeze-epochs 1\n"
        "The defaults on that set (60-s trials, a window every 64 samples, 1057 tokens each) train\n"
        "9520 windows an epoch: about 7.5 min of training and 8.5 min with validation per epoch."
    )

    def build_data(self, cfg: EEGLLMConfig):
        import numpy as np

        from emoexp.data.base import BadFilePolicy, DataBundle
        from emoexp.data.deap import (
            DEAP_EEG_CHANNELS,
            DEAP_SAMPLE_RATE,
            load_deap,
            parse_bin_edges,
        )
        from emoexp.data.eeg_tokens import EEGTokenDataset, cut_windows
        from emoexp.data.windows import stride_from_overlap, window_starts

        try:
            edges = parse_bin_edges(cfg.bin_edges)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        policy = BadFilePolicy(cfg.on_bad_file)
        try:
            trials = load_deap(cfg.data_dir, baseline=cfg.baseline, levels=cfg.levels, threshold=cfg.threshold,
                               high_inclusive=cfg.high_inclusive, bin_edges=edges, max_subjects=cfg.max_subjects,
                               policy=policy)
        except ValueError as e:
            if type(e) is ValueError:  # bad bin edges: a config problem; DataErrors name their file
                raise ConfigError(str(e)) from None
            raise
        if cfg.trial_seconds:  # a view: the first seconds of every trial
            trials.eeg = trials.eeg[:, :, : int(round(cfg.trial_seconds * DEAP_SAMPLE_RATE))]
        n_samples = trials.eeg.shape[2]
        starts = window_starts(n_samples, cfg.window_size, stride_from_overlap(cfg.window_size, cfg.overlap))
        if not len(starts):
            raise ConfigError(f"{cfg.data_dir}: trials hold {n_samples} samples after the baseline step, "
                              f"fewer than window_size={cfg.window_size}")
        sides = _split_windows(trials, starts, cfg)
        tokenizer = _fit_tokenizer(trials.eeg, sides["train"], cfg)
        heads = {t: list(trials.target_classes[t]) for t in cfg.target_names()}
        primary = next(iter(heads))
        targets = {h: trials.targets[h] for h in heads}

        def make(side: str):
            idx = sides[side]
            if not len(idx):
                return None
            ds = EEGTokenDataset(trials.eeg, idx, targets, tokenizer)
            ds.meta = {"subject": trials.subject[idx[:, 0]], "trial": trials.trial[idx[:, 0]]}
            return ds

        train, val, test = make("train"), make("val"), make("test")
        if train is None or val is None:
            raise ConfigError(f"{cfg.data_dir}: the {cfg.split} split left no training or validation windows "
                              f"({len(set(trials.subject.tolist()))} subjects); add subjects or use split=trial")
        counts = {side: {h: {c: int(np.sum(trials.targets[h][idx[:, 0]] == k)) for k, c in enumerate(names)}
                         for h, names in heads.items()} for side, idx in sides.items()}
        subjects = {side: sorted({int(s) for s in trials.subject[idx[:, 0]]}) for side, idx in sides.items()}
        info = {
            "dataset": "deap", "source": str(cfg.data_dir), "sample_rate": DEAP_SAMPLE_RATE,
            "channels": list(DEAP_EEG_CHANNELS), "n_channels": len(DEAP_EEG_CHANNELS),
            "window_size": cfg.window_size, "n_trials": int(len(trials.eeg)),
            "class_counts": counts, "tokenizer": tokenizer.to_dict(), "seq_len": tokenizer.seq_len,
            "llm": _llm_config(cfg, tokenizer.token_map.vocab_size),
        }
        notes = {"subject": "subjects per side: none on two sides",
                 "trial": "whole trials per side, stratified by the primary target within each subject (subjects on several sides)",
                 "segment": "seed 004's random window split: overlapping windows of one trial on several sides "
                            "(optimistic; not a generalisation estimate)"}
        split = {"scheme": cfg.split, "subjects": subjects, "counts": counts, "note": notes[cfg.split]}
        example = cut_windows(trials.eeg, val.index[:2], cfg.window_size)
        return DataBundle(train=train, val=val, test=test, heads=heads, train_targets=train.head_targets(primary),
                          split=split, input_example={"eeg": example}, info=info,
                          skipped_files=list(policy.skipped))

    def cv_pool(self, cfg: EEGLLMConfig, data):
        """Units: DEAP trials (by subject); a fold's sides are token datasets over the windows of
        its trials, with the tokenizer (statistics, bin edges) fitted on its training windows."""
        import numpy as np

        from emoexp.data.eeg_tokens import EEGTokenDataset
        from emoexp.data.folds import CVPool, FoldViews

        parts = [d for d in (data.train, data.val, data.test) if d is not None]
        pairs = np.unique(np.concatenate([d.index for d in parts]), axis=0)   # every window, sorted
        subject_of, trial_of = {}, {}   # global trial index -> subject, trial within the subject
        for d in parts:
            subject_of.update(zip(d.index[:, 0].tolist(), np.asarray(d.meta["subject"]).tolist()))
            trial_of.update(zip(d.index[:, 0].tolist(), np.asarray(d.meta["trial"]).tolist()))
        trials = np.unique(pairs[:, 0])                                       # units: trials with windows
        eeg, targets = parts[0].trials, parts[0].targets
        unit_of = np.full(int(trials.max()) + 1, -1, dtype=np.int64)
        unit_of[trials] = np.arange(len(trials))

        def views(sides: dict[str, np.ndarray]) -> FoldViews:
            rows = {s: pairs[np.isin(pairs[:, 0], trials[idx])] for s, idx in sides.items()}
            tok = _fit_tokenizer(eeg, rows["train"], cfg)
            out = {}
            for s, r in rows.items():
                ds = EEGTokenDataset(eeg, r, targets, tok)
                ds.meta = {"subject": np.asarray([subject_of[t] for t in r[:, 0].tolist()]),
                           "trial": np.asarray([trial_of[t] for t in r[:, 0].tolist()])}
                out[s] = ds
            return FoldViews(out, {s: unit_of[r[:, 0]] for s, r in rows.items()},
                             {"tokenizer": tok.to_dict(), "seq_len": tok.seq_len})

        return CVPool(unit="trial", labels=targets[data.primary_head][trials],
                      subjects=np.asarray([subject_of[t] for t in trials.tolist()]), trials=None, views=views)

    def reuse_fitted(self, data, info: dict[str, Any]):
        from emoexp.data.eeg_tokens import Tokenizer

        if "tokenizer" not in info:
            return data
        tokenizer = Tokenizer.from_dict(info["tokenizer"])
        for ds in (data.train, data.val, data.test):
            if ds is not None:
                ds.tokenizer = tokenizer
        data.info = {**data.info, "tokenizer": info["tokenizer"], "seq_len": tokenizer.seq_len}
        return data

    def build_model(self, cfg: EEGLLMConfig, info: dict[str, Any]):
        from emoexp.models import create_model
        from emoexp.models.eeg_llm import resolve_dtype

        try:
            return create_model("eeg_llm", heads={h: len(c) for h, c in info["heads"].items()}, llm=info["llm"],
                                llm_path=cfg.llm_path, load_in_4bit=cfg.load_in_4bit, lora_r=cfg.lora_r,
                                lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                freeze_epochs=cfg.freeze_epochs, dtype=resolve_dtype(cfg.llm_dtype, cfg.load_in_4bit))
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def init_from_pretrained(self, model, cfg: EEGLLMConfig, info: dict[str, Any]) -> dict[str, str]:
        backbone = cfg.llm_path or "tiny random Llama (offline)"
        return {"emoexp.llm": backbone, "emoexp.llm_4bit": str(cfg.load_in_4bit).lower(),
                "emoexp.tokens": info["tokenizer"]["token_map"].get("source", "")}

    def serving_batch(self, inputs: dict[str, Any], cfg: EEGLLMConfig, info: dict[str, Any]) -> dict:
        import torch

        from emoexp.data.eeg_tokens import Tokenizer
        from emoexp.tasks.eeg import eeg_input

        eeg = eeg_input(inputs, int(info["n_channels"]), float(info["sample_rate"]), int(info["window_size"]))
        return {"tokens": torch.from_numpy(Tokenizer.from_dict(info["tokenizer"])(eeg))}

    def extra_metrics(self, preds: dict, heads: dict[str, list[str]], prefix: str) -> dict[str, float]:
        """``<prefix>_joint_accuracy``: every target right, e.g. valence and arousal both (seed 004's
        overall accuracy); nothing for a single target."""
        import numpy as np

        if len(heads) < 2:
            return {}
        joint = np.logical_and.reduce(list(_right(preds, heads).values()))
        return {f"{prefix}_joint_accuracy": float(joint.mean()) if joint.size else 0.0}

    def error_analysis(self, dataset, preds: dict, heads: dict[str, list[str]], out_dir: Path) -> dict:
        """``test_results.txt`` (seed 004): accuracy per target and joint, per-subject accuracy."""
        return write_test_results(dataset, preds, heads, Path(out_dir))


def _llm_config(cfg: EEGLLMConfig, vocab_size: int) -> dict:
    from emoexp.models.eeg_llm import llm_config

    try:
        return llm_config(cfg.llm_path, vocab_size)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _split_windows(trials, starts, cfg: EEGLLMConfig) -> dict[str, Any]:
    """(trial, start) pairs per side; by subject (default), by trial, or by window (seed 004)."""
    import numpy as np

    from emoexp.data.splits import split_subjects, split_trials

    n = len(trials.eeg)
    pairs = np.stack(np.meshgrid(np.arange(n), starts, indexing="ij"), axis=-1).reshape(-1, 2)
    if cfg.split == "subject":
        try:
            s = split_subjects([str(x) for x in trials.subject], val_fraction=cfg.val_fraction,
                               test_fraction=cfg.test_fraction, seed=cfg.seed)
        except ValueError as e:
            raise ConfigError(f"{cfg.data_dir}: {e}") from None
        key = np.asarray([str(x) for x in trials.subject])
        return {side: pairs[np.isin(key[pairs[:, 0]], getattr(s, side))] for side in ("train", "val", "test")}
    if cfg.split == "trial":
        primary = cfg.target_names()[0]
        per_subject = {str(sub): trials.targets[primary][trials.subject == sub]
                       for sub in sorted(set(trials.subject.tolist()))}
        sides = split_trials(per_subject, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                             seed=cfg.seed)
        out = {}
        for side in ("train", "val", "test"):
            rows = [np.flatnonzero(trials.subject == int(sub))[idx] for sub, idx in sides[side].items()]
            chosen = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
            out[side] = pairs[np.isin(pairs[:, 0], chosen)]
        return out
    log.warning("split=segment: windows of one trial (overlapping ones, too) land in training and test; "
                "the scores overstate how the model does on new trials or subjects")
    order = np.random.default_rng(cfg.seed).permutation(len(pairs))
    n_test = int(round(len(pairs) * cfg.test_fraction))
    n_val = max(1, int(round(len(pairs) * cfg.val_fraction)))
    return {"test": pairs[np.sort(order[:n_test])], "val": pairs[np.sort(order[n_test:n_test + n_val])],
            "train": pairs[np.sort(order[n_test + n_val:])]}


def _fit_tokenizer(eeg, train_pairs, cfg: EEGLLMConfig):
    """Normalisation statistics and bin edges from (a seeded sample of) the training windows only."""
    import numpy as np

    from emoexp.data.eeg_tokens import (
        Tokenizer,
        channel_stats,
        cut_windows,
        fit_bin_edges,
        own_token_map,
        tokenizer_token_map,
    )

    if cfg.llm_path:
        from emoexp.models.eeg_llm import load_tokenizer

        try:
            token_map = tokenizer_token_map(load_tokenizer(cfg.llm_path), cfg.num_bins)
        except ValueError as e:
            raise ConfigError(f"{cfg.llm_path}: {e}") from None
    else:
        token_map = own_token_map(cfg.num_bins)
    train_trials = np.unique(train_pairs[:, 0])
    mean, std = channel_stats(eeg, train_trials, seed=cfg.seed)
    tok = Tokenizer(mean=mean, std=std, edges=np.zeros(cfg.num_bins - 1, dtype=np.float32), token_map=token_map,
                    window_size=cfg.window_size, downsample=cfg.downsample, normalize=cfg.normalize)
    rng = np.random.default_rng(cfg.seed)
    pick = train_pairs[np.sort(rng.permutation(len(train_pairs))[:_FIT_WINDOWS])]
    amplitudes = tok.scale(cut_windows(eeg, pick, cfg.window_size))[..., :: cfg.downsample]
    try:
        tok.edges = fit_bin_edges(amplitudes, cfg.num_bins, cfg.quantization).astype(np.float32)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return tok


def _right(preds: dict, heads: dict[str, list[str]]) -> dict:
    """Per head, whether each window's most probable class is its target (bool arrays)."""
    import numpy as np

    return {h: np.asarray(preds[h]["probs"]).argmax(1) == np.asarray(preds[h]["targets"]) for h in heads}


def write_test_results(dataset, preds: dict, heads: dict[str, list[str]], out_dir: Path) -> dict:
    """``test_results.txt`` and ``.json``: accuracy and macro-F1 per target, joint accuracy,
    accuracy per subject (the split the engine evaluated, normally test)."""
    import json

    import numpy as np
    from sklearn.metrics import f1_score

    right = _right(preds, heads)
    n = len(next(iter(right.values())))
    if not n:
        return {}
    result: dict[str, Any] = {"n": n, "targets": {}}
    for head, classes in heads.items():
        y = np.asarray(preds[head]["targets"])
        p = np.asarray(preds[head]["probs"]).argmax(1)
        result["targets"][head] = {"accuracy": float(right[head].mean()),
                                   "macro_f1": float(f1_score(y, p, average="macro", labels=range(len(classes)),
                                                              zero_division=0)),
                                   "classes": classes}
    joint = np.logical_and.reduce(list(right.values()))
    result["joint_accuracy"] = float(joint.mean())
    subjects = np.asarray(getattr(dataset, "meta", {}).get("subject", []))
    if len(subjects) == len(joint):
        result["per_subject"] = {int(s): {"joint_accuracy": float(joint[subjects == s].mean()),
                                          **{h: float(r[subjects == s].mean()) for h, r in right.items()},
                                          "windows": int(np.sum(subjects == s))}
                                 for s in sorted(set(subjects.tolist()))}
    lines = [f"windows: {result['n']}"]
    lines += [f"{h} accuracy: {m['accuracy']:.4f}  macro-F1: {m['macro_f1']:.4f}  ({'/'.join(m['classes'])})"
              for h, m in result["targets"].items()]
    lines.append(f"joint accuracy (all targets right): {result['joint_accuracy']:.4f}")
    if result.get("per_subject"):
        lines += ["", "per subject: " + "  ".join(["joint", *heads, "windows"])]
        lines += [f"  s{s:02d}: {v['joint_accuracy']:.3f}  " + "  ".join(f"{v[h]:.3f}" for h in heads)
                  + f"  {v['windows']}" for s, v in result["per_subject"].items()]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "test_results.txt").write_text("\n".join(lines) + "\n")
    (out_dir / "test_results.json").write_text(json.dumps(result, indent=2))
    return result
