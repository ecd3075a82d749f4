"""Config machinery: the :class:`TrainConfig` base, checked overrides, presets, sampling weights.

Each task's own config dataclass lives in its task module (``emoexp/tasks/<task>.py``), with a
one-line *why* per field. Every field is at once a dataclass attribute, an MLproject parameter
(same name) and an ``emoexp train <task> --dashed-name`` option. Overrides are checked: an unknown
key or a value of the wrong type is an error that names the key, never a silent default.

A config class checks its own keys: ``CHOICES`` (key -> allowed values, or a function returning
them, e.g. from a registry) and ``__post_init__`` for ranges; :func:`validate` adds the checks
that hold for every task.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterable
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
    batch_size: int = opt(32, "mini-batch size; with nproc N ranks (DDP) the global batch, each rank taking 1/N")
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
    nproc: int = opt(1, "data-parallel ranks on this machine: N > 1 starts torchrun (DDP; gloo on CPU, nccl on CUDA)")
    log_model: bool = opt(True, "log the MLflow model at the end (pyfunc with preprocessing)")
    output_dir: str = opt("", "local staging for checkpoints; empty: .emoexp/runs/<run_id>")

    # Keys that define the network and its input: on a branch resume they come back from the
    # checkpoint (a checkpoint rebuilds its model alone); everything else stays overridable.
    ARCH_KEYS: ClassVar[tuple[str, ...]] = ()
    # For a key added after checkpoints were saved without it: the value that gives the network
    # those checkpoints were trained with (its behaviour before the key existed). A checkpoint's
    # config is read through saved_config(), never as new defaults plus what it saved.
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {}
    # Allowed values per key: a tuple, or a function returning one (read at validation, so a
    # registry behind it loads only when a config is checked, never for `emoexp --help`).
    # A subclass lists its own keys; those of its bases still apply (see choices()).
    CHOICES: ClassVar[dict[str, tuple[Any, ...] | Callable[[], tuple[Any, ...]]]] = {
        "optimizer": ("adam", "adamw", "sgd"),
        "scheduler": ("cosine", "step", "none"),
        "split": ("subject", "trial"),
        "on_bad_file": ("error", "skip"),
        "device": ("auto", "cpu", "cuda"),
    }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    """Return a copy of ``cfg`` with ``overrides`` applied and checked.

    The copy remembers which keys were ever set this way (:func:`given_keys`), so that a branch
    resume can tell "the user asked for lr=0.0001" from "lr is at its default".
    """
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
    object.__setattr__(new, "_given", given_keys(cfg) | frozenset(changes))
    return new


def saved_values(cls: type, saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``saved`` config values, with config class ``cls``'s ``SAVED_BEFORE`` value
    for each key the checkpoint predates."""
    return {**cls.SAVED_BEFORE, **saved}


def saved_config(default: Any, saved: dict[str, Any]) -> Any:
    """The config a checkpoint was trained with: ``default`` (a task's default config) with the
    checkpoint's :func:`saved_values`, so an old checkpoint rebuilds its own network, not today's
    default."""
    return apply_overrides(default, saved_values(type(default), saved))


# Where sweeps keep their Optuna studies: the variable `emoexp stack up` exports, else a file here.
OPTUNA_STORAGE_ENV = "EMOEXP_OPTUNA_STORAGE"
DEFAULT_OPTUNA_STORAGE = "sqlite:///optuna.db"


def redact(url: str) -> str:
    """A store URL without its password (``user:***@host``), fit for logs, run params and pages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
        netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # not a URL (a bad port, say): nothing to take out
        return url
    return urlunsplit(parts._replace(netloc=netloc))


def given_keys(cfg: Any) -> frozenset[str]:
    """The keys set on ``cfg`` through :func:`apply_overrides` (as opposed to left at their defaults)."""
    return getattr(cfg, "_given", frozenset())


def choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """Allowed values per key of config class ``cls``: the ``CHOICES`` of it and its bases
    (a subclass's entry replaces its base's for the same key), functions resolved."""
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("CHOICES", {}))
    return {k: tuple(v() if callable(v) else v) for k, v in merged.items()}


# The metrics a run logs per epoch, which `monitor` may name: the primary head's, another head's
# with its name first (gender.val_macro_f1), per class (val_f1.sadness), a task's own across
# heads (val_joint_accuracy). Whether the run's heads and classes have them is checked once the
# data says which there are (emoexp.engine), still before the run starts.
_MONITOR_RE = (r"(?:[A-Za-z0-9_-]+\.)?(?:train_loss|val_loss|val_accuracy|val_macro_f1|val_f1\..+"
               r"|val_[a-z0-9]+_(?:accuracy|macro_f1|loss))")
MONITOR_EXAMPLES = "val_loss, val_accuracy, val_macro_f1, val_f1.<class>, <head>.val_macro_f1"


def validate(cfg: Any) -> None:
    """The checks every config gets, before anything is read: its keys' choices, then the generic
    ranges (a config class checks its own ranges in ``__post_init__``): every number finite
    (no NaN), every count >= 0, the monitor a metric the runs log. One line per problem."""
    import math

    d = cfg.to_dict()
    for key, allowed in choices(type(cfg)).items():
        if key in d and d[key] not in allowed:
            raise ConfigError(f"{key}: {d[key]!r} is not one of {', '.join(map(str, allowed))}")
    for key, typ in field_types(type(cfg)).items():
        v = d.get(key)
        if typ is float and isinstance(v, int | float) and not math.isfinite(v):
            raise ConfigError(f"{key} must be a finite number, got {v}")
        if typ is int and isinstance(v, int) and v < 0:
            raise ConfigError(f"{key} must be >= 0, got {v}")
        if "dropout" in key and typ is float and not 0 <= v < 1:
            raise ConfigError(f"{key} must lie in [0, 1), got {v}")
    for key in ("epochs", "batch_size", "nproc", "step_size"):
        if key in d and d[key] < 1:
            raise ConfigError(f"{key} must be >= 1, got {d[key]}")
    if d["lr"] <= 0:
        raise ConfigError(f"lr must be > 0, got {d['lr']}")
    if d.get("weight_decay", 0) < 0 or d.get("gamma", 1) <= 0:
        raise ConfigError(f"weight_decay must be >= 0 and gamma > 0, got {d.get('weight_decay')}, {d.get('gamma')}")
    if not 0 <= d.get("label_smoothing", 0) < 1:
        raise ConfigError(f"label_smoothing must lie in [0, 1), got {d['label_smoothing']}")
    if not (0 <= d["val_fraction"] < 1 and 0 <= d["test_fraction"] < 1):
        raise ConfigError("val_fraction and test_fraction must lie in [0, 1)")
    if d["val_fraction"] + d["test_fraction"] >= 1:
        raise ConfigError("val_fraction + test_fraction must be < 1 (something must be left to train on)")
    if d.get("monitor") is not None:
        check_metric_name(str(d["monitor"]), "monitor")


def check_metric_name(name: str, what: str, *, final: bool = False) -> None:
    """``name`` has the form of a per-epoch metric (``final``: or of one logged at the end, e.g.
    ``best_val_macro_f1``, ``test_accuracy``; a sweep's objective); ConfigError otherwise."""
    import re

    ok = re.fullmatch(_MONITOR_RE, name)
    if final and not ok:
        ok = name in ("best_val_macro_f1", "best_epoch") or re.fullmatch(_MONITOR_RE, name.replace("test_", "val_", 1))
    if ok:
        return
    known = ["val_loss", "val_accuracy", "val_macro_f1", "train_loss"]
    known += ["best_val_macro_f1", "test_accuracy", "test_macro_f1"] if final else []
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    extra = ", best_val_macro_f1, test_<metric>" if final else ""
    raise ConfigError(f"{what}: {name!r} is not a metric the runs log{hint}; one of {MONITOR_EXAMPLES}{extra}")


def check_device(name: str) -> None:
    """The device a run asks for exists here (checked before any data is read; a config that
    names a device is still valid where it does not, e.g. a CUDA run's checkpoint on a laptop)."""
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is available here; use device=cpu or auto")


def check_tracking_store() -> None:
    """The MLflow tracking URI names a store that opens (known scheme, database reachable, folder
    there), checked before any data is read; an HTTP server is asked only when the run starts."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    try:
        from mlflow import MlflowClient

        MlflowClient(uri)  # builds the store: an unknown scheme or an unopenable database fails here
    except Exception as e:
        import re

        shown = re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", uri)  # no password in messages
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"tracking store {shown}: {first[:300]} (set MLFLOW_TRACKING_URI)") from None


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
    if not isinstance(spec, dict):
        spec = parse_pairs(spec, sep=",;", what="weights", form="class=number")
    lower = {c.lower(): c for c in class_names}
    for name, value in spec.items():
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


def parse_pairs(text_or_items: str | Iterable[str], *, sep: str = "", what: str,
                form: str = "key=value") -> dict[str, str]:
    """``key=value`` pairs -> ``{key: value}`` (both stripped; a later key wins), the one parser
    behind every key=value option (``--options``, ``--set``, ``--weights``).

    A string is split at any character of ``sep`` (empty parts skipped); an iterable (a repeated
    option such as ``--set``) gives one pair per item, unsplit, so a value may hold ``sep``.
    Each pair splits at its first ``=``. A part without ``=`` or with an empty key is a
    :class:`ConfigError` that names ``what`` and the part.

    >>> parse_pairs("lr=0.1; epochs=3", sep=";", what="--options")
    {'lr': '0.1', 'epochs': '3'}
    >>> parse_pairs(["segments=neutral:2,happy:2"], what="--set")
    {'segments': 'neutral:2,happy:2'}
    """
    if isinstance(text_or_items, str):
        parts: Iterable[str] = [text_or_items]
        for ch in sep:
            parts = [p for part in parts for p in part.split(ch)]
        parts = [p for p in parts if p.strip()]
    else:
        parts = list(text_or_items)
    out: dict[str, str] = {}
    for part in parts:
        key, eq, value = str(part).partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{what}: {str(part).strip()!r} should look like {form}")
        out[key.strip()] = value.strip()
    return out


def format_weights(weights: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in weights.items())
