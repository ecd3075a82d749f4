"""What every dataset module shares: the bad-input error, the bad-file policy, the bundle a task hands the engine."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


def tree_fingerprint(path: str | os.PathLike) -> str:
    """Cheap fingerprint of a dataset tree: relative names, sizes and mtimes (no content reads)."""
    import hashlib
    from pathlib import Path

    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


class DataError(ValueError):
    """Bad input: names the file (or folder) and says what is wrong with it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingDatasetError(DataError):
    """The dataset folder does not exist (or holds no files of the expected kind)."""

    def __init__(self, path: str | os.PathLike, dataset: str, what: str = "does not exist"):
        super().__init__(
            path,
            f"{what}. Point data_dir at a {dataset} download, or write a small synthetic one with "
            f"`emoexp data synth {dataset} --out {path}`",
        )


@dataclass
class BadFilePolicy:
    """`on_bad_file`: 'error' stops at the first bad file; 'skip' warns, counts and goes on."""

    mode: str = "error"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ("error", "skip"):
            raise ValueError(f"on_bad_file must be 'error' or 'skip', not {self.mode!r}")

    def bad(self, path: str | os.PathLike, problem: str) -> None:
        """Report a bad file: raise DataError, or (skip mode) record it and return."""
        if self.mode == "error":
            raise DataError(path, problem + " (pass --on-bad-file skip to skip such files)")
        log.warning("skipping %s: %s", path, problem)
        self.skipped.append((str(path), problem))


@dataclass
class DataBundle:
    """What a task's data builder hands the engine.

    Datasets yield dicts: the model inputs (e.g. ``eeg`` (C, T) float32, ``audio`` (n_mfcc, F)
    float32, ``audio_mask`` () float32) and one int64 target per head, keyed by the head name.
    """

    train: Any
    val: Any
    test: Any | None
    heads: dict[str, list[str]]          # head name -> class names; the first head is primary
    train_targets: Any                   # (N_train,) int primary-head labels, for the sampler
    split: dict[str, Any]                # {"scheme": ..., "train": [ids], "val": [...], "test": [...]}
    input_example: dict[str, Any]        # raw-ish serving input (numpy arrays, batch >= 2)
    info: dict[str, Any] = field(default_factory=dict)   # dataset name, source, channels, rates
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def primary_head(self) -> str:
        return next(iter(self.heads))

    @property
    def class_names(self) -> list[str]:
        return self.heads[self.primary_head]
