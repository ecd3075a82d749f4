"""Cross-validation folds: the units a task's data is made of, the schemes that deal them into
train/val/test sides, the leakage check, and the :class:`~emoexp.data.base.DataBundle` of a fold.

A task exposes its data, built once, as a :class:`CVPool` (``Task.cv_pool``): one *unit* per
thing that must never be split (an EEG trial, a speech clip, a face image, a posture sequence),
each with its primary-head label, its subject (actor, speaker; None where the data has none) and,
where a unit is smaller than a trial (EAV speech clips cut from one recording), its trial. The
pool's ``views`` turns unit indices into the side datasets (the dataset's own index views, so
every fold reads the one copy of the data).

Schemes (``--folds``), every split drawn by scikit-learn and seeded:

``loso``             leave one subject out (``LeaveOneGroupOut``): one fold per subject.
``kfold:K``          K folds over subjects (``StratifiedGroupKFold``); data without subjects
                     (faces): K stratified folds over units (``StratifiedKFold``).
``subject_kfold:K``  subject-dependent: within each subject, K folds of its trials
                     (``StratifiedGroupKFold`` grouped by trial); fold k tests every subject's
                     k-th share and trains on every subject's other trials.
``trial_kfold:K``    K folds of whole trials over the pool (``StratifiedGroupKFold`` by trial).
``file:PATH``        a JSON list of folds, each naming its test subjects: ``[["1", "2"], ...]``
                     or ``[{"test": [...], "val": [...]}, ...]`` (``val`` optional).

Stratification needs some class with at least K units; where none has (a few trials per subject),
the folds are drawn unstratified (``GroupKFold``/``KFold``, shuffled and seeded as well).
The validation side is carved from the training side by the same grouping (subjects for subject
schemes, trials within each subject for ``subject_kfold``, trials for ``trial_kfold``), never from
the test units, as one fold of a ``StratifiedGroupKFold`` with about ``1/val_fraction`` folds.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SIDES = ("train", "val", "test")
SCHEMES = ("loso", "kfold", "subject_kfold", "trial_kfold", "file")


class LeakageError(ValueError):
    """A fold puts a subject, a trial or a unit on two sides (or a scheme covers units wrongly)."""


@dataclass
class FoldViews:
    """The datasets of one fold, and the pool unit of each of their samples."""

    datasets: dict[str, Any]                 # side -> dataset (the train side with training augmentation)
    units: dict[str, np.ndarray]             # side -> (n_samples,) pool unit of each sample, in dataset order
    info: dict[str, Any] = field(default_factory=dict)  # preprocessing fitted on this fold's training side


@dataclass
class CVPool:
    """A task's whole dataset as the units cross-validation deals out (see the module docstring)."""

    unit: str                                # what a unit is: trial, clip, image, sequence, row
    labels: np.ndarray                       # (U,) primary-head class of each unit (stratification)
    subjects: np.ndarray | None              # (U,) subject of each unit (str); None: no subjects
    trials: np.ndarray | None                # (U,) trial of each unit, unique across subjects; None: a unit is a trial
    views: Callable[[dict[str, np.ndarray]], FoldViews]
    subject_word: str = "subject"            # how the data calls its subjects (actor, speaker)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.labels)
        if self.subjects is not None:
            self.subjects = np.asarray(self.subjects).astype(str)
            if len(self.subjects) != n:
                raise ValueError(f"{len(self.subjects)} subjects for {n} units")
        if self.trials is not None:
            self.trials = np.asarray(self.trials).astype(str)
            if len(self.trials) != n:
                raise ValueError(f"{len(self.trials)} trials for {n} units")
        if n == 0:
            raise ValueError("cross-validation needs at least one unit of data")

    def __len__(self) -> int:
        return len(self.labels)

    def trial_groups(self) -> np.ndarray:
        """(U,) the trial of every unit: the given trials, else each unit its own."""
        if self.trials is not None:
            return self.trials
        return np.arange(len(self)).astype(str)


@dataclass
class Fold:
    """One fold: sorted unit indices per side."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sides(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def digest(self) -> str:
        """A short hash of which units are on which side (part of a fold's identity)."""
        h = hashlib.sha256()
        for side in SIDES:
            h.update(side.encode())
            h.update(np.asarray(getattr(self, side), dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Scheme:
    """A parsed ``--folds`` value."""

    kind: str
    k: int = 0
    path: str = ""

    @property
    def spec(self) -> str:
        return {"loso": "loso", "file": f"file:{self.path}"}.get(self.kind, f"{self.kind}:{self.k}")

    @property
    def by_subject(self) -> bool:
        """True when no subject may sit on two sides of a fold."""
        return self.kind in ("loso", "kfold", "file")

    @property
    def partitions(self) -> bool:
        """True when every unit is tested in exactly one fold."""
        return self.kind != "file"

    def content_digest(self) -> str:
        """What the scheme's folds depend on beyond its name: the fold file's contents."""
        if self.kind != "file":
            return ""
        return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()[:16]


def parse_scheme(text: str) -> Scheme:
    """``loso``, ``kfold:K``, ``subject_kfold:K``, ``trial_kfold:K`` or ``file:PATH`` -> Scheme."""
    from emoexp.config import ConfigError

    s = str(text).strip()
    kind, _, arg = s.partition(":")
    kind = kind.strip().lower()
    if kind == "loso" and not arg:
        return Scheme("loso")
    if kind == "file":
        if not arg or not Path(arg).is_file():
            raise ConfigError(f"--folds {s}: file:PATH needs an existing JSON file of folds")
        return Scheme("file", path=arg)
    if kind in ("kfold", "subject_kfold", "trial_kfold"):
        try:
            k = int(arg)
        except ValueError:
            k = 0
        if k < 2:
            raise ConfigError(f"--folds {s}: {kind}:K needs a whole K >= 2")
        return Scheme(kind, k=k)
    raise ConfigError(f"--folds {s!r}: not one of loso, kfold:K, subject_kfold:K, trial_kfold:K, file:PATH")


# ----------------------------------------------------------------------------------------------
# Making folds


def make_folds(pool: CVPool, scheme: Scheme, *, seed: int = 0, val_fraction: float = 0.2) -> list[Fold]:
    """The folds of ``scheme`` over ``pool`` (seeded), each with its validation side carved from
    its training side by the scheme's grouping. Errors (too few subjects, unknown subjects in a
    fold file) are ConfigErrors; the result is checked with :func:`check_folds` by the caller."""
    from emoexp.config import ConfigError

    if not 0 < val_fraction < 1:
        raise ConfigError(f"cross-validation carves validation data from each fold's training side: "
                          f"val_fraction must be in (0, 1), not {val_fraction}")
    y = pool.labels
    units = np.arange(len(pool))
    word = pool.subject_word
    if scheme.kind in ("loso", "subject_kfold", "file") and pool.subjects is None:
        raise ConfigError(f"--folds {scheme.spec}: this data has no {word}s (its units are {pool.unit}s); "
                          "use kfold:K or trial_kfold:K")
    outer: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []   # (train+val, test, val or None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "the least populated class has only n members"
        if scheme.kind == "loso":
            from sklearn.model_selection import LeaveOneGroupOut

            n_subj = len(set(pool.subjects.tolist()))
            if n_subj < 3:
                raise ConfigError(f"--folds loso needs at least 3 {word}s (one to test, one to validate, "
                                  f"one to train); the data has {n_subj}")
            outer = [(tr, te, None) for tr, te in LeaveOneGroupOut().split(units, y, groups=pool.subjects)]
            inner = pool.subjects
        elif scheme.kind in ("kfold", "trial_kfold"):
            by_subject = scheme.kind == "kfold" and pool.subjects is not None
            # kfold: by subject; without subjects (faces) by trial where units are smaller, else by unit
            groups = pool.subjects if by_subject else pool.trials
            if scheme.kind == "trial_kfold" and groups is None:
                groups = pool.trial_groups()
            outer = [(tr, te, None) for tr, te in _kfold(units, y, groups, scheme.k, seed, scheme.spec,
                                                          word if by_subject else "trial")]
            inner = groups
        elif scheme.kind == "subject_kfold":
            outer = _subject_kfold(pool, scheme.k, seed)
            inner = None   # carved per subject below
        else:
            outer = _file_folds(pool, scheme.path)
            inner = pool.subjects
    folds = []
    for k, (rest, test, val) in enumerate(outer):
        rest = np.sort(rest)
        if val is None:
            if scheme.kind == "subject_kfold":
                val = _carve_per_subject(pool, rest, val_fraction, seed * 1_000_003 + k)
            else:
                val = _carve(rest, y, inner, val_fraction, seed * 1_000_003 + k)
        val = np.sort(np.asarray(val, dtype=np.int64))
        train = np.setdiff1d(rest, val)
        folds.append(Fold(index=k, train=train.astype(np.int64), val=val, test=np.sort(test).astype(np.int64)))
    return folds


def _kfold(units, y, groups, k: int, seed: int, spec: str, word: str):
    """K seeded folds of ``units``, grouped when ``groups`` is given, stratified by ``y`` where some
    class has at least K units (otherwise plain (grouped) K-fold: stratifying is impossible)."""
    from emoexp.config import ConfigError

    n = len(units) if groups is None else len(set(np.asarray(groups).tolist()))
    if k > n:
        raise ConfigError(f"--folds {spec}: {k} folds need at least {k} {word}s; the data has {n}")
    return list(_splitter(k, seed, y, groups).split(units, y, groups))


def _splitter(k: int, seed: int, y: np.ndarray, groups):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    stratify = bool((np.bincount(np.asarray(y, dtype=np.int64)) >= k).any())
    rs = seed % 2**32
    if groups is None:
        return (StratifiedKFold if stratify else KFold)(n_splits=k, shuffle=True, random_state=rs)
    return (StratifiedGroupKFold if stratify else GroupKFold)(n_splits=k, shuffle=True, random_state=rs)


def _subject_kfold(pool: CVPool, k: int, seed: int):
    """Fold j tests every subject's j-th share of its trials (each subject split on its own)."""
    from emoexp.config import ConfigError

    trials = pool.trial_groups()
    tests: list[list[np.ndarray]] = [[] for _ in range(k)]
    for s in sorted(set(pool.subjects.tolist())):
        idx = np.flatnonzero(pool.subjects == s)
        n_trials = len(set(trials[idx].tolist()))
        if n_trials < k + 1:
            raise ConfigError(f"--folds subject_kfold:{k}: {pool.subject_word} {s} has {n_trials} trials; each "
                              f"needs at least {k + 1} (K to test, one more to train)")
        for j, (_, te) in enumerate(_kfold(idx, pool.labels[idx], trials[idx], k, _mix(seed, s), "", "trial")):
            tests[j].append(idx[te])
    units = np.arange(len(pool))
    out = []
    for parts in tests:
        test = np.sort(np.concatenate(parts))
        out.append((np.setdiff1d(units, test), test, None))
    return out


def _mix(seed: int, key: str) -> int:
    """A per-subject seed from the run's seed and the subject's name (independent of the others)."""
    return (int(seed) * 1_000_003 + zlib.crc32(str(key).encode())) % 2**32


def _carve(rest: np.ndarray, y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """About ``fraction`` of ``rest`` as validation data: one fold of a stratified (grouped) K-fold
    with K = round(1/fraction), fewer where there are fewer groups (at least one group stays)."""
    from emoexp.config import ConfigError

    g = None if groups is None else np.asarray(groups)[rest]
    n_groups = len(rest) if g is None else len(set(g.tolist()))
    if n_groups < 2:
        raise ConfigError(f"a fold's training side holds {n_groups} "
                          f"{'unit' if g is None else 'group'}: nothing to carve validation data from")
    k = int(min(max(2, round(1.0 / fraction)), n_groups))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, va = next(_splitter(k, seed, y[rest], g).split(rest, y[rest], g))
    return rest[va]


def _carve_per_subject(pool: CVPool, rest: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """subject_kfold: each subject's validation trials from its own training trials."""
    trials = pool.trial_groups()
    out = []
    for s in sorted(set(pool.subjects[rest].tolist())):
        mine = rest[pool.subjects[rest] == s]
        out.append(_carve(mine, pool.labels, trials, fraction, _mix(seed, s)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _file_folds(pool: CVPool, path: str):
    """``file:PATH``: test (and optionally val) subjects per fold, matched by name or number."""
    from emoexp.config import ConfigError

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--folds file:{path}: not a readable JSON file ({e})") from None
    if isinstance(raw, dict) and "folds" in raw:
        raw = raw["folds"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"--folds file:{path}: expected a non-empty JSON list of folds")
    known = sorted(set(pool.subjects.tolist()))
    units = np.arange(len(pool))
    out = []
    for k, entry in enumerate(raw):
        if isinstance(entry, dict):
            test_names, val_names = entry.get("test"), entry.get("val")
        else:
            test_names, val_names = entry, None
        if not isinstance(test_names, list) or not test_names:
            raise ConfigError(f"--folds file:{path}: fold {k} names no test {pool.subject_word}s")
        test_s = [match_subject(n, known, f"file:{path} fold {k}") for n in test_names]
        test = units[np.isin(pool.subjects, test_s)]
        val = None
        if val_names:
            val_s = [match_subject(n, known, f"file:{path} fold {k}") for n in val_names]
            if set(val_s) & set(test_s):
                raise LeakageError(f"--folds file:{path}: fold {k} names {sorted(set(val_s) & set(test_s))} "
                                   "for both val and test")
            val = units[np.isin(pool.subjects, val_s)]
        out.append((np.setdiff1d(units, test), test, val))
    return out


def match_subject(name: Any, known: list[str], where: str) -> str:
    """A subject named in a fold file -> the data's own id: the same text, else the same number
    (``3``, ``"03"``, ``"Actor_03"`` and ``"subject3"`` all name subject 3)."""
    from emoexp.config import ConfigError

    text = str(name).strip()
    if text in known:
        return text
    num = _number(text)
    hits = [s for s in known if num is not None and _number(s) == num]
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
    raise ConfigError(f"{where}: no {'single ' if hits else ''}subject matches {name!r} (the data has: {shown})")


def _number(text: str) -> int | None:
    m = re.search(r"(\d+)\s*$", text)
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------------------------
# Leakage


def check_folds(pool: CVPool, folds: list[Fold], scheme: Scheme) -> None:
    """Raise :class:`LeakageError` unless every fold keeps its sides apart: no unit on two sides,
    every unit on one, non-empty sides, no trial on two sides and, for subject schemes (``loso``,
    ``kfold`` with subjects, ``file``), no subject on two sides; for schemes that partition the data,
    every unit tested exactly once (``loso``: every subject tested once, alone)."""
    n = len(pool)
    trials = pool.trial_groups()
    for f in folds:
        where = f"fold {f.index} ({scheme.spec})"
        sides = f.sides()
        for side, idx in sides.items():
            if not len(idx):
                raise LeakageError(f"{where}: the {side} side is empty")
            if len(np.unique(idx)) != len(idx) or idx.min() < 0 or idx.max() >= n:
                raise LeakageError(f"{where}: the {side} side lists units twice or outside the data")
        counts = np.zeros(n, dtype=np.int64)
        for idx in sides.values():
            counts[idx] += 1
        if (counts > 1).any():
            raise LeakageError(f"{where}: {int((counts > 1).sum())} {pool.unit}s on two sides")
        if (counts == 0).any():
            raise LeakageError(f"{where}: {int((counts == 0).sum())} {pool.unit}s on no side")
        _apart(where, "trial", {s: trials[i] for s, i in sides.items()})
        if pool.subjects is not None and scheme.by_subject:
            _apart(where, pool.subject_word, {s: pool.subjects[i] for s, i in sides.items()})
    if scheme.partitions:
        tested = np.zeros(n, dtype=np.int64)
        for f in folds:
            tested[f.test] += 1
        if not (tested == 1).all():
            raise LeakageError(f"{scheme.spec}: {int((tested != 1).sum())} {pool.unit}s are not tested exactly once")
    if scheme.kind == "loso":
        per_fold = [sorted(set(pool.subjects[f.test].tolist())) for f in folds]
        if any(len(s) != 1 for s in per_fold):
            raise LeakageError(f"loso: folds test {[len(s) for s in per_fold]} {pool.subject_word}s, not one each")
        seen = [s[0] for s in per_fold]
        if sorted(seen) != sorted(set(pool.subjects.tolist())) or len(set(seen)) != len(seen):
            raise LeakageError(f"loso: the test {pool.subject_word}s are not every {pool.subject_word} exactly once")


def _apart(where: str, what: str, groups: dict[str, np.ndarray]) -> None:
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = set(groups[a].tolist()) & set(groups[b].tolist())
            if both:
                shown = ", ".join(sorted(both)[:5]) + (" ..." if len(both) > 5 else "")
                raise LeakageError(f"{where}: {what} {shown} on both the {a} and the {b} side")


def check_views(pool: CVPool, fold: Fold, views: FoldViews) -> None:
    """The datasets hold exactly the fold's units, side by side (what the model will see)."""
    for side, idx in fold.sides().items():
        ds, units = views.datasets.get(side), np.asarray(views.units.get(side, []))
        where = f"fold {fold.index}, {side} side"
        if ds is None or len(ds) != len(units):
            raise LeakageError(f"{where}: the dataset's size does not match its units")
        if set(np.unique(units).tolist()) != set(idx.tolist()):
            raise LeakageError(f"{where}: the dataset holds other {pool.unit}s than the fold's")


# ----------------------------------------------------------------------------------------------
# The bundle of a fold


def fold_bundle(base, pool: CVPool, fold: Fold, views: FoldViews, scheme: Scheme):
    """A :class:`~emoexp.data.base.DataBundle` of one fold from the data built once (``base``):
    its heads, serving example and skipped files, the fold's datasets, and a ``split`` that says
    which subjects (and, for trial schemes, trials) sit on each side."""
    from emoexp.data.base import DataBundle

    sides = fold.sides()
    split: dict[str, Any] = {"scheme": f"cv:{scheme.spec}", "fold": fold.index, "unit": pool.unit,
                             "n_units": {s: int(len(i)) for s, i in sides.items()},
                             "n_samples": {s: int(len(views.units[s])) for s in sides}}
    if pool.subjects is not None:
        split[f"{pool.subject_word}s"] = {s: sorted(set(pool.subjects[i].tolist())) for s, i in sides.items()}
    if scheme.kind in ("subject_kfold", "trial_kfold"):
        trials = pool.trial_groups()
        split["trials"] = {s: sorted(set(trials[i].tolist())) for s, i in sides.items()}
    split["counts"] = {s: {c: int(np.sum(pool.labels[i] == k)) for k, c in enumerate(base.class_names)}
                       for s, i in sides.items()}
    return DataBundle(
        train=views.datasets["train"], val=views.datasets["val"], test=views.datasets["test"], heads=base.heads,
        train_targets=pool.labels[np.asarray(views.units["train"], dtype=np.int64)], split=split,
        input_example=base.input_example, info={**base.info, **views.info},
        skipped_files=list(base.skipped_files),
    )
