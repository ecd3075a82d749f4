"""RAVDESS speech/song audio: file names, the folder scan, one wav, fixed-length clips, a cache.

Layout (DATASETS.md section 4): ``Actor_01/ .. Actor_24/`` of ``MM-VV-EE-II-SS-RR-AA.wav``
files, possibly one folder down (``Audio_Speech_Actors_01-24/``). The Kaggle mirror holds the
tree twice (``Actor_XX/`` and ``audio_speech_actors_01-24/Actor_XX/``); files are therefore
de-duplicated by name. Everything the label needs is in the name, so the scan never opens a
file; reading decodes with soundfile (the real files carry an extra ``FLLR`` chunk, which
libsndfile skips), mixes to mono, resamples, trims the leading/trailing silence (about 1 s at
the start of every real file) and centre-crops or zero-pads to ``clip_seconds``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.io import atomic_save_npz

log = logging.getLogger(__name__)

RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
EMOTION_SUBSETS: dict[str, tuple[str, ...]] = {
    "basic4": ("neutral", "happy", "sad", "angry"),
    "basic6": ("neutral", "happy", "sad", "angry", "fearful", "surprised"),
    "all": RAVDESS_EMOTIONS,
}
INTENSITIES = ("normal", "strong")
VOCAL_CHANNELS = {"speech": (1,), "song": (2,), "both": (1, 2)}
N_ACTORS = 24
MIN_SECONDS = 0.1          # shorter files are refused
SILENCE_PEAK = 1e-4        # files whose peak is below this are refused as silent
TRIM_DB = 40.0             # frames this far below the loudest frame count as silence
TRIM_FRAME_SECONDS = 0.02  # frame length of the silence trim
_CACHE_VERSION = 1         # bump when the cache layout or the decoding changes

# (field name, lowest code, highest code) of the seven name fields, in order
_FIELDS = (
    ("modality", 1, 3),
    ("vocal channel", 1, 2),
    ("emotion", 1, 8),
    ("intensity", 1, 2),
    ("statement", 1, 2),
    ("repetition", 1, 2),
    ("actor", 1, N_ACTORS),
)
_ACTOR_FOLDER = re.compile(r"actor_(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class RavdessName:
    """The seven fields of a RAVDESS file name, decoded."""

    modality: int         # 1 full-AV, 2 video-only, 3 audio-only
    vocal_channel: int    # 1 speech, 2 song
    emotion: str          # one of RAVDESS_EMOTIONS
    intensity: str        # "normal" | "strong"
    statement: int        # 1 "Kids are talking by the door", 2 "Dogs are sitting by the door"
    repetition: int
    actor: int            # 1..24

    @property
    def gender(self) -> str:
        """RAVDESS actors: odd numbers are male, even female."""
        return "male" if self.actor % 2 == 1 else "female"

    @property
    def emotion_code(self) -> int:
        return RAVDESS_EMOTIONS.index(self.emotion) + 1

    @property
    def stem(self) -> str:
        """The 7-field name without the extension, e.g. ``03-01-06-01-02-01-12``."""
        codes = (self.modality, self.vocal_channel, self.emotion_code,
                 INTENSITIES.index(self.intensity) + 1, self.statement, self.repetition, self.actor)
        return "-".join(f"{c:02d}" for c in codes)


def parse_ravdess_name(name: str | os.PathLike) -> RavdessName:
    """``03-01-06-01-02-01-12.wav`` (or a path to it) -> :class:`RavdessName`.

    ValueError says what is wrong; callers add the path (``DataError(path, str(e))``).
    """
    base = Path(os.fspath(name)).name
    stem = base[:-4] if base.lower().endswith(".wav") else base
    parts = stem.split("-")
    if len(parts) != len(_FIELDS):
        raise ValueError(
            f"expected 7 two-digit fields MM-VV-EE-II-SS-RR-AA separated by '-', found {len(parts)} in {base!r}"
        )
    codes = []
    for (what, lo, hi), part in zip(_FIELDS, parts):
        if len(part) != 2 or not (part.isascii() and part.isdigit()):
            raise ValueError(f"{what} field {part!r} is not a two-digit number (in {base!r})")
        code = int(part)
        if not lo <= code <= hi:
            raise ValueError(f"{what} code {part} is out of range {lo:02d}..{hi:02d} (in {base!r})")
        codes.append(code)
    modality, vocal, emotion, intensity, statement, repetition, actor = codes
    if emotion == 1 and intensity == 2:
        raise ValueError(f"neutral with strong intensity (code 02) does not exist in RAVDESS (in {base!r})")
    return RavdessName(modality, vocal, RAVDESS_EMOTIONS[emotion - 1], INTENSITIES[intensity - 1],
                       statement, repetition, actor)


class RavdessFiles(list):
    """What :func:`scan_ravdess` returns: a list of ``(path, name)``, plus ``n_duplicates``,
    the number of second copies (same file name elsewhere in the tree) that were dropped."""

    n_duplicates: int = 0


def _folder_actor(path: Path, root: Path) -> int | None:
    """The actor number of the nearest ``Actor_XX`` folder between root and path, if any."""
    for parent in path.relative_to(root).parents:
        m = _ACTOR_FOLDER.fullmatch(parent.name)
        if m:
            return int(m.group(1))
    return None


def scan_ravdess(
    root: str | os.PathLike, *, vocal_channel: str = "speech", policy: BadFilePolicy | None = None
) -> RavdessFiles:
    """Every RAVDESS ``.wav`` under ``root`` (recursively), sorted, one per file name.

    Bad names, video-only modality codes and files whose name disagrees with their ``Actor_XX``
    folder go through ``policy`` (error: DataError naming the file; skip: recorded). Files of the
    other vocal channel are left out silently. macOS resource forks (``._*``, ``__MACOSX/``) are
    not audio and are ignored.
    """
    policy = policy or BadFilePolicy()
    if vocal_channel not in VOCAL_CHANNELS:
        raise ValueError(f"vocal_channel must be one of {', '.join(VOCAL_CHANNELS)}, not {vocal_channel!r}")
    root = Path(root)
    if not root.exists():
        raise MissingDatasetError(root, "ravdess")
    if not root.is_dir():
        raise MissingDatasetError(root, "ravdess", "is not a folder")
    wavs = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() == ".wav" and p.is_file()
        and not p.name.startswith("._") and "__MACOSX" not in p.relative_to(root).parts
    )
    if not wavs:
        raise MissingDatasetError(root, "ravdess", "holds no RAVDESS .wav files")
    channels = VOCAL_CHANNELS[vocal_channel]
    out = RavdessFiles()
    seen: dict[str, Path] = {}
    for path in wavs:
        try:
            name = parse_ravdess_name(path.name)
        except ValueError as e:
            policy.bad(path, f"not a RAVDESS file name: {e}")
            continue
        if name.modality not in (1, 3):
            policy.bad(path, f"modality {name.modality:02d} is video-only; a RAVDESS .wav is audio-only (03) or full-AV (01)")
            continue
        folder = _folder_actor(path, root)
        if folder is not None and folder != name.actor:
            policy.bad(path, f"actor field {name.actor:02d} in the name disagrees with its folder Actor_{folder:02d}")
            continue
        if name.vocal_channel not in channels:
            continue
        key = path.name.lower()
        if key in seen:
            out.n_duplicates += 1
            continue
        seen[key] = path
        out.append((path, name))
    if out.n_duplicates:
        log.info("RAVDESS: dropped %d duplicate files (same name in two folders, as in the Kaggle mirror) under %s",
                 out.n_duplicates, root)
    return out


def read_ravdess_wav(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """One file -> float32 mono (n,) at ``sample_rate``; DataError(path, why) if it is unusable.

    Any channel count, sample format (8/16/24-bit, float) and sample rate is accepted; empty,
    unreadable, shorter than 0.1 s, silent (peak < 1e-4) and NaN/inf files are refused.
    """
    from emoexp.data import audio

    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror or e})") from None
    if size == 0:
        raise DataError(path, "is empty (0 bytes)")
    wave, sr = audio.read_wav(path)
    mono = audio.to_mono(wave)
    if not np.all(np.isfinite(mono)):
        raise DataError(path, "holds NaN or infinite samples")
    if len(mono) < MIN_SECONDS * sr:
        raise DataError(path, f"holds only {len(mono) / sr:.3f} s of audio (at least {MIN_SECONDS:g} s needed)")
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise DataError(path, f"is silent (peak amplitude {peak:.2e} < {SILENCE_PEAK:g})")
    return np.ascontiguousarray(audio.resample(mono, sr, int(sample_rate)), dtype=np.float32)


def trim_and_fit(wave: np.ndarray, sample_rate: int, clip_seconds: float) -> tuple[np.ndarray, int]:
    """Trim leading/trailing silence, then centre-crop or zero-pad (at the end) to the clip length.

    Silence: 20 ms frames whose RMS is more than 40 dB below the loudest frame's. Returns the
    (round(clip_seconds * sample_rate),) float32 clip and how many of its samples are sound
    (the rest is padding).
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    size = int(round(float(clip_seconds) * int(sample_rate)))
    if size <= 0:
        raise ValueError(f"clip_seconds * sample_rate must give at least one sample, not {clip_seconds} s at {sample_rate} Hz")
    frame = max(1, int(round(TRIM_FRAME_SECONDS * int(sample_rate))))
    n_frames = -(-len(wave) // frame)
    if n_frames:
        padded = np.zeros(n_frames * frame, dtype=np.float64)
        padded[: len(wave)] = wave
        # zero padding of the last frame lowers its RMS a little; it is only ever trimmed earlier
        rms = np.sqrt(np.mean(padded.reshape(n_frames, frame) ** 2, axis=1))
        loud = rms.max()
        if loud > 0:
            voiced = np.flatnonzero(rms >= loud * 10 ** (-TRIM_DB / 20))
            wave = wave[voiced[0] * frame: min(len(wave), (voiced[-1] + 1) * frame)]
    if len(wave) >= size:
        start = (len(wave) - size) // 2
        return np.ascontiguousarray(wave[start:start + size]), size
    out = np.zeros(size, dtype=np.float32)
    out[: len(wave)] = wave
    return out, len(wave)


@dataclass
class RavdessData:
    """Fixed-length clips with labels and per-clip metadata (one row per file)."""

    waves: np.ndarray          # (N, clip_samples) float32
    lengths: np.ndarray        # (N,) int: samples of sound in each clip (the rest is zero padding)
    labels: np.ndarray         # (N,) int64 index into class_names
    class_names: list[str]     # the subset's emotions, in the subset's order
    actor: np.ndarray          # (N,) int 1..24
    gender: np.ndarray         # (N,) int64: 0 male (odd actor), 1 female (even)
    intensity: np.ndarray      # (N,) str "normal" | "strong"
    statement: np.ndarray      # (N,) int 1 | 2
    paths: list[str]
    n_duplicates: int          # second copies dropped by the scan (Kaggle mirror)
    sample_rate: int
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """{class: n} for logging."""
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}


def _cache_key(files: list[tuple[Path, RavdessName]], root: Path, **settings: object) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": _CACHE_VERSION, **settings}, sort_keys=True).encode())
    for path, _ in sorted(files, key=lambda f: str(f[0].relative_to(root))):
        st = path.stat()
        h.update(f"\n{path.relative_to(root).as_posix()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _save_cache(path: Path, data: RavdessData, root: Path) -> None:
    """One .npz of plain arrays (no pickles), written to a temporary file and renamed."""
    skipped = np.array(data.skipped, dtype=str).reshape(-1, 2)
    arrays = {
        "waves": data.waves, "lengths": data.lengths, "labels": data.labels,
        "class_names": np.array(data.class_names, dtype=str), "actor": data.actor,
        "gender": data.gender, "intensity": data.intensity.astype(str), "statement": data.statement,
        "paths": np.array([Path(p).relative_to(root).as_posix() for p in data.paths], dtype=str).reshape(-1),
        "n_duplicates": np.int64(data.n_duplicates), "sample_rate": np.int64(data.sample_rate),
        "skipped": skipped,
    }
    atomic_save_npz(path, **arrays)


def _load_cache(path: Path, root: Path) -> RavdessData:
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    n = len(a["labels"])
    if any(len(a[k]) != n for k in ("waves", "lengths", "actor", "gender", "intensity", "statement", "paths")):
        raise ValueError("arrays of different lengths")
    return RavdessData(
        waves=a["waves"], lengths=a["lengths"], labels=a["labels"],
        class_names=[str(c) for c in a["class_names"]], actor=a["actor"], gender=a["gender"],
        intensity=a["intensity"], statement=a["statement"],
        paths=[str(root / p) for p in a["paths"]], n_duplicates=int(a["n_duplicates"]),
        sample_rate=int(a["sample_rate"]), skipped=[(str(p), str(r)) for p, r in a["skipped"]],
    )


def load_ravdess(
    root: str | os.PathLike,
    *,
    subset: str = "basic6",
    sample_rate: int = 16000,
    clip_seconds: float = 3.0,
    vocal_channel: str = "speech",
    policy: BadFilePolicy | None = None,
    max_actors: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> RavdessData:
    """Scan ``root``, keep ``subset``'s emotions (and the first ``max_actors`` actors if > 0),
    and read every file into a ``clip_seconds`` clip at ``sample_rate``.

    With ``cache_dir`` the clips are kept in one ``.npz`` there, keyed by the files' relative
    paths, sizes and mtimes and the settings; the next call with the same files loads it.
    """
    from tqdm.auto import tqdm

    if subset not in EMOTION_SUBSETS:
        raise ValueError(f"unknown emotion subset {subset!r}; known: {', '.join(EMOTION_SUBSETS)}")
    if int(sample_rate) <= 0 or float(clip_seconds) <= 0:
        raise ValueError(f"sample_rate and clip_seconds must be > 0, not {sample_rate}, {clip_seconds}")
    policy = policy or BadFilePolicy()
    root = Path(root)
    class_names = list(EMOTION_SUBSETS[subset])
    first_skip = len(policy.skipped)
    files = scan_ravdess(root, vocal_channel=vocal_channel, policy=policy)
    n_duplicates = files.n_duplicates
    files = [(p, n) for p, n in files if n.emotion in class_names]
    if max_actors and max_actors > 0:
        keep = set(sorted({n.actor for _, n in files})[: int(max_actors)])
        files = [(p, n) for p, n in files if n.actor in keep]
    if not files:
        raise MissingDatasetError(root, "ravdess", f"holds no {vocal_channel} files of the {subset} emotions")

    cache = None
    if cache_dir is not None:
        key = _cache_key(files, root, sample_rate=int(sample_rate), clip_seconds=float(clip_seconds),
                         vocal_channel=vocal_channel, subset=subset, on_bad_file=policy.mode)
        cache = Path(cache_dir) / f"ravdess-{key}.npz"
        if cache.exists():
            try:
                data = _load_cache(cache, root)
            except (OSError, ValueError, KeyError) as e:
                log.warning("rebuilding unreadable RAVDESS cache %s: %s", cache, e)
            else:
                for path, problem in data.skipped:   # report them again, as a fresh read would
                    policy.bad(path, problem)
                data.skipped = list(policy.skipped[first_skip:])
                log.info("RAVDESS: %d clips from cache %s", len(data), cache)
                return data

    first_read_skip = len(policy.skipped)
    size = int(round(float(clip_seconds) * int(sample_rate)))
    waves = np.zeros((len(files), size), dtype=np.float32)
    kept: list[int] = []
    lengths: list[int] = []
    for i, (path, _) in enumerate(tqdm(files, desc="RAVDESS", unit="file", disable=None)):
        try:
            wave = read_ravdess_wav(path, int(sample_rate))
        except DataError as e:
            policy.bad(path, e.problem)
            continue
        waves[len(kept)], voiced = trim_and_fit(wave, int(sample_rate), float(clip_seconds))
        kept.append(i)
        lengths.append(voiced)
    if not kept:
        raise DataError(root, "no readable RAVDESS file (every one was skipped as bad)")
    names = [files[i][1] for i in kept]
    data = RavdessData(
        waves=waves[: len(kept)].copy() if len(kept) < len(files) else waves,
        lengths=np.asarray(lengths, dtype=np.int64),
        labels=np.asarray([class_names.index(n.emotion) for n in names], dtype=np.int64),
        class_names=class_names,
        actor=np.asarray([n.actor for n in names], dtype=np.int64),
        gender=np.asarray([0 if n.gender == "male" else 1 for n in names], dtype=np.int64),
        intensity=np.asarray([n.intensity for n in names], dtype=str),
        statement=np.asarray([n.statement for n in names], dtype=np.int64),
        paths=[str(files[i][0]) for i in kept],
        n_duplicates=n_duplicates,
        sample_rate=int(sample_rate),
        skipped=list(policy.skipped[first_read_skip:]),
    )
    if cache is not None:   # holds the read-time skips only: the scan reports its own each time
        _save_cache(cache, data, root)
    data.skipped = list(policy.skipped[first_skip:])
    return data
