"""Train/val/test splits by subject or by trial.

Windows are cut after splitting, so no window of a trial (or of a subject, for subject splits)
can land on two sides: overlapping windows would otherwise leak test data into training.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np

SIDES = ("train", "val", "test")


@dataclass
class Split:
    train: list
    val: list
    test: list
    scheme: str

    def to_dict(self) -> dict:
        return asdict(self)


def _side_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for n items: rounded fractions, >= 1 per non-zero side, train keeps >= 1."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
            "and sum to less than 1"
        )
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    # give items back to train from the larger held-out side, but never empty a requested side
    while n - n_val - n_test < 1:
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        elif n_val > 1:
            n_val -= 1
        elif n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def split_subjects(
    subject_ids: list[str], *, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
    instead: str = "split=trial to split one subject's trials instead",
) -> Split:
    """Subject-wise split (cross-subject evaluation), a seeded shuffle of the sorted ids.

    >= 3 subjects: every side with a non-zero fraction gets at least one subject.
    2 subjects: one for train and one for val, no test. 1 subject: ValueError, whose hint is
    ``instead`` (the caller's own alternative: a task suggests only a split it accepts).
    """
    ids = sorted(dict.fromkeys(subject_ids))
    if len(ids) < 2:
        raise ValueError(f"a subject-wise split needs at least 2 subjects, got {len(ids)}; use {instead}")
    if len(ids) == 2:
        n_val, n_test = 1, 0
    else:
        n_val, n_test = _side_counts(len(ids), val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(len(ids))
    test = sorted(ids[i] for i in order[:n_test])
    val = sorted(ids[i] for i in order[n_test:n_test + n_val])
    train = sorted(ids[i] for i in order[n_test + n_val:])
    return Split(train=train, val=val, test=test, scheme="subject")


def split_trials(
    trial_labels_per_subject: dict[str, np.ndarray],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Trial-wise split within each subject -> {side: {subject: sorted trial indices}}.

    Stratified by label: each class's trials are spread evenly over the held-out order, so the
    held-out sides draw from as many classes as their size allows. Each subject's split depends
    only on the seed and its id, not on which other subjects are loaded.
    """
    out: dict[str, dict[str, np.ndarray]] = {side: {} for side in SIDES}
    for subject, labels in trial_labels_per_subject.items():
        labels = np.asarray(labels)
        n = len(labels)
        rng = np.random.default_rng([seed, zlib.crc32(str(subject).encode())])
        if n == 0:
            for side in SIDES:
                out[side][subject] = np.zeros(0, dtype=np.int64)
            continue
        if n < 3:
            # too few trials for three sides: train first, then val
            n_val, n_test = (min(1, n - 1) if val_fraction > 0 else 0), 0
        else:
            n_val, n_test = _side_counts(n, val_fraction, test_fraction)
        # Rank each trial by its relative position within its class (shuffled), so taking a prefix
        # of the ordering takes about the same share of every class.
        position = np.empty(n, dtype=np.float64)
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            rng.shuffle(members)
            position[members] = (np.arange(len(members)) + rng.random()) / len(members)
        order = np.lexsort((rng.random(n), position))
        out["test"][subject] = np.sort(order[:n_test]).astype(np.int64)
        out["val"][subject] = np.sort(order[n_test:n_test + n_val]).astype(np.int64)
        out["train"][subject] = np.sort(order[n_test + n_val:]).astype(np.int64)
    return out
