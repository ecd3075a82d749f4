"""The dataset registry: one entry per on-disk dataset format.

An entry says where the format usually lives (the seeds' folder: the training tasks' default
``data_dir``), which modalities it holds (a task's ``dataset`` choices are the formats holding
its modality), how to read it, how to fake it, and which raw files of it ``emoexp predict`` reads.

To add a dataset: its reader in a module of its own under ``emoexp/data/``, its synthetic
generator (``emoexp/data/synth*.py``), and one ``@register_dataset`` entry at the bottom of this
file. The entry puts it under ``emoexp data synth`` and under ``tests/test_contracts.py`` (its
tiny synthetic set must pass its reader).

The entries are declared here, not in the format modules, so that listing the formats and their
folders (config defaults, ``emoexp --help``) imports no numpy: each entry's function imports its
reader and generator on first use.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DatasetParts:
    """The heavy half of an entry, loaded on first use."""

    read: Callable[..., Any]                  # read(folder, **options) -> the loaded dataset
    synth: Callable[..., Path]                # synth(out, *, subjects, seed, **options) -> what read() takes
    # file suffix -> reader of one raw file for `emoexp predict`: reader(path, spec) -> segments
    files: dict[str, Callable[..., Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetFormat:
    """One registered dataset format."""

    name: str
    modalities: tuple[str, ...]
    data_dir: str                             # the seeds' location; "" where there is none
    summary: str
    tiny: dict[str, Any]                      # generator options for a seconds-long synthetic set
    load: Callable[[], DatasetParts]

    @property
    def parts(self) -> DatasetParts:
        if self.name not in _PARTS:
            _PARTS[self.name] = self.load()
        return _PARTS[self.name]

    @property
    def read(self) -> Callable[..., Any]:
        return self.parts.read

    @property
    def synth(self) -> Callable[..., Path]:
        return self.parts.synth


_DATASETS: dict[str, DatasetFormat] = {}
_PARTS: dict[str, DatasetParts] = {}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def register_dataset(name: str, *, modalities: tuple[str, ...], data_dir: str = "", summary: str = "",
                     tiny: dict[str, Any] | None = None) -> Callable[[Callable[[], DatasetParts]], Callable[[], DatasetParts]]:
    """Register a dataset format under ``name``: decorates the function that imports and returns
    its :class:`DatasetParts` (a duplicate name is an error).

    >>> @register_dataset("mydata", modalities=("eeg",), data_dir="data/raw/mydata", tiny={"subjects": 2})
    ... def _mydata() -> DatasetParts:
    ...     from emoexp.data import mydata, synth
    ...     return DatasetParts(read=mydata.load_mydata, synth=synth.synth_mydata)
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"dataset name {name!r} must be snake_case ([a-z][a-z0-9_]*)")

    def decorator(load: Callable[[], DatasetParts]) -> Callable[[], DatasetParts]:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered; pick another name")
        _DATASETS[name] = DatasetFormat(name, tuple(modalities), data_dir, summary, dict(tiny or {}), load)
        return load

    return decorator


def get_dataset(name: str) -> DatasetFormat:
    """The entry of ``name`` (``face-video`` spells ``face_video``); ValueError listing the known ones."""
    try:
        return _DATASETS[name.replace("-", "_")]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}") from None


def list_datasets(modality: str | None = None) -> list[str]:
    """Names of the registered formats (holding ``modality``), sorted."""
    return sorted(n for n, d in _DATASETS.items() if modality is None or modality in d.modalities)


def synthesize(name: str, out: str | os.PathLike, *, subjects: int | None = None, seed: int = 0,
               **options: Any) -> Path:
    """Write the synthetic ``name`` dataset to ``out``; returns what its reader takes (a folder,
    or a file). ``subjects`` None: the generator's own default (sized for the tasks' default
    batches). An option the generator does not take is a ValueError naming the known ones."""
    make = get_dataset(name).synth
    params = inspect.signature(make).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            known = sorted(k for k in params if k not in ("out", "subjects", "seed"))
            raise ValueError(f"{name}: unknown generator option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for key, value in options.items():
        if key in params:
            _check_option(name, key, value, params[key].default)
    if subjects is not None:
        options["subjects"] = subjects
    return make(out, seed=seed, **options)


def _check_option(dataset: str, key: str, value: Any, default: Any) -> None:
    """A generator option of the kind its default is (bool, whole number, number); ValueError else."""
    kinds = ((bool, "true or false", lambda v: isinstance(v, bool)),
             (int, "a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
             (float, "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)))
    for kind, words, ok in kinds:
        if type(default) is kind:
            if not ok(value):
                raise ValueError(f"{dataset}: generator option {key} takes {words}, got {value!r}")
            return


def dataset_dir(name: str) -> str:
    """Where ``name`` usually lives (the seeds' folder): a task's default ``data_dir``."""
    return get_dataset(name).data_dir


def dataset_choices(modality: str) -> Callable[[], tuple[str, ...]]:
    """For a config's ``CHOICES``: the formats holding ``modality``, read when a config is checked."""
    return lambda: tuple(list_datasets(modality))


def file_readers() -> dict[str, Callable[..., Any]]:
    """``{suffix: reader}`` of the raw files ``emoexp predict`` reads (:mod:`emoexp.data.raw_files`),
    by suffix; a suffix two formats share (images, .wav) must have one reader."""
    out: dict[str, Callable[..., Any]] = {}
    for name in list_datasets():
        for suffix, reader in get_dataset(name).parts.files.items():
            if out.setdefault(suffix, reader) is not reader:
                raise ValueError(f"file suffix {suffix!r} has two readers (one from {name!r})")
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# The formats

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@register_dataset("faced", modalities=("eeg",), data_dir="data/raw/Processed_data/Processed_data",
                  summary="FACED: 28 film clips x 32 channels at 250 Hz per subject (sub*.pkl)",
                  tiny={"subjects": 2, "n_samples": 300})
def _faced() -> DatasetParts:
    from emoexp.data import faced, raw_files, synth

    return DatasetParts(read=faced.load_faced, synth=synth.synth_faced, files={".pkl": raw_files.read_faced_pkl})


@register_dataset("eav", modalities=("eeg", "speech", "video"), data_dir="data/raw/EAV/EAV",
                  summary="EAV: EEG (30 channels, 500 Hz), audio and video of listening and speaking trials",
                  tiny={"subjects": 1, "trials": 10, "n_samples": 600, "with_video": False})
def _eav() -> DatasetParts:
    from emoexp.data import eav, raw_files, synth

    return DatasetParts(read=eav.load_eav, synth=synth.synth_eav,
                        files={".mat": raw_files.read_eav_mat, ".wav": raw_files.read_wav})


@register_dataset("deap", modalities=("eeg",), data_dir="data/raw/DEAP/data_preprocessed_python",
                  summary="DEAP preprocessed python: 40 trials x 40 channels at 128 Hz per subject (s*.dat)",
                  tiny={"subjects": 1, "trials": 4, "seconds": 2})
def _deap() -> DatasetParts:
    from emoexp.data import deap, raw_files, synth

    return DatasetParts(read=deap.load_deap, synth=synth.synth_deap, files={".dat": raw_files.read_deap_dat})


@register_dataset("ravdess", modalities=("speech",), data_dir="data/raw/RAVDESS",
                  summary="RAVDESS speech and song: Actor_XX/03-01-EE-II-SS-RR-AA.wav",
                  tiny={"subjects": 1, "statements": 1, "repetitions": 1, "sample_rate": 16000})
def _ravdess() -> DatasetParts:
    from emoexp.data import ravdess, raw_files, synth_speech

    return DatasetParts(read=ravdess.load_ravdess, synth=synth_speech.synth_ravdess, files={".wav": raw_files.read_wav})


@register_dataset("fer2013", modalities=("face",), data_dir="data/fer2013",
                  summary="FER2013: 48x48 grey faces, fer2013.csv or train|test/<class>/ folders",
                  tiny={"n_per_class": 3})
def _fer2013() -> DatasetParts:
    import functools

    from emoexp.data import faces, raw_files, synth_faces

    return DatasetParts(read=functools.partial(faces.load_face_dataset, dataset="fer2013"),
                        synth=synth_faces.synth_fer2013, files=dict.fromkeys(IMAGE_SUFFIXES, raw_files.read_image))


@register_dataset("affectnet", modalities=("face",), data_dir="data/affectnet",
                  summary="AffectNet (Kaggle mirror): 96x96 colour faces, Train|Test/<class>/ + labels.csv",
                  tiny={"n_per_class": 3})
def _affectnet() -> DatasetParts:
    import functools

    from emoexp.data import faces, raw_files, synth_faces

    return DatasetParts(read=functools.partial(faces.load_face_dataset, dataset="affectnet"),
                        synth=synth_faces.synth_affectnet, files=dict.fromkeys(IMAGE_SUFFIXES, raw_files.read_image))


@register_dataset("face_video", modalities=("video",),
                  summary="one face on video whose expression changes at known times (.mp4 + .transitions.csv)",
                  tiny={"segments": "neutral:0.4,happy:0.4", "fps": 10, "size": (96, 72), "face_size": 48})
def _face_video() -> DatasetParts:
    from emoexp.data import frames, synth_faces

    return DatasetParts(read=frames.iter_frames, synth=synth_faces.synth_face_video)


@register_dataset("posture", modalities=("posture",), data_dir="data/posture",
                  summary="seed 001's posture layout: {train,val[,test]}/sequences/seq_NNN.npy (T, 15) + labels.json",
                  tiny={"subjects": 2, "n_per_side": "train:4,val:4", "seq_length": 12})
def _posture() -> DatasetParts:
    from emoexp.data import posture, raw_files, synth_posture

    # .npy: posture sequences (T, 15) for a posture model, or EEG windows already at an EEG model's rate
    return DatasetParts(read=posture.load_posture_dataset, synth=synth_posture.synth_posture,
                        files={".npy": raw_files.read_npy})


@register_dataset("features", modalities=("features",),
                  summary="a feature table (features.csv/.parquet/.npy) + labels.json for classifier heads",
                  tiny={"n": 20, "n_features": 8, "ring": 0.0})
def _features() -> DatasetParts:
    from emoexp.data import features, synth_posture

    return DatasetParts(read=features.load_feature_table, synth=synth_posture.synth_features)
