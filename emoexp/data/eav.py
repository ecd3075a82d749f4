"""EAV (Lee et al. 2024): 42 subjects, 200 trials of 20 s, 30-channel EEG at 500 Hz, plus audio.

Per subject (DATASETS.md section 2)::

    subject{N}/EEG/subject{N}_eeg.mat         seg1 or seg: (T, 30, n_trials) float64
    subject{N}/EEG/subject{N}_eeg_label.mat   label: (10, n_trials) one-hot, emotion = row // 2
    subject{N}/Video/NNN_Trial_MM_<Listening|Speaking>_<Emotion>.mp4
    subject{N}/Audio/NNN_Trial_MM_Speaking_<Emotion>_Aud.wav   (speaking trials only)

NNN is the 1-based trial index. Whether even or odd label rows mean "speaking" is disputed
between sources, so the loader derives it from the media file names of each subject. The EEG is
resampled (default 500 -> 250 Hz so windows span the same time as FACED's) and cached per
subject as (n_trials, T, 30) float32; MFCC frames of the speaking trials' audio are cached next
to it, and so are the speaking trials' videos: frames sampled at ``video_fps``, the face found
by a detector, cut square and resized, kept as uint8 (n_videos, F, S, S, 3). As in the authors'
vision loader, only speaking trials' videos are used; listening trials are masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from emoexp.data.audio import HOP_LENGTH, MEL_KWARGS, mfcc, read_wav, resample, to_mono
from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.eeg import (
    EEGRecordings,
    FrameArray,
    TrialArray,
    eeg_cache_path,
    file_fingerprint,
    resample_poly_axis,
    resampled_length,
    resolve_cache_dir,
)
from emoexp.data.frames import crop, iter_frames, make_detector
from emoexp.data.io import atomic_save_npy, atomic_write_json

log = logging.getLogger(__name__)

EAV_CLASSES = ["neutral", "sadness", "anger", "happiness", "calmness"]
EAV_SAMPLE_RATE = 500
EAV_N_CHANNELS = 30
EAV_CONDITIONS = ("listening", "speaking")

_MEDIA_RE = re.compile(r"^(\d{3})_Trial_(\d+)_(Listening|Speaking)_([A-Za-z]+)", re.IGNORECASE)
_SUBJECT_RE = re.compile(r"subject(\d+)", re.IGNORECASE)
_EEG_KEYS = ("seg1", "seg")
# trials resampled together: bounds the float64 temporaries to a few hundred MB at full size
_RESAMPLE_CHUNK = 25
# share of the face box added on each side of the square crop (forehead, chin, ears in view)
VIDEO_CROP_MARGIN = 0.2


def parse_eav_media_name(name: str | os.PathLike) -> tuple[int, str, str]:
    """``003_Trial_03_Listening_Anger.mp4`` -> (3, "listening", "anger")."""
    base = Path(name).name
    m = _MEDIA_RE.match(base)
    if not m:
        raise DataError(
            name,
            "file name does not match NNN_Trial_NN_<Listening|Speaking>_<Emotion>... "
            "(NNN = 1-based trial number)",
        )
    trial = int(m.group(1))
    if trial < 1:
        raise DataError(name, "trial number 000 in the file name; trials are numbered from 001")
    return trial, m.group(3).lower(), m.group(4).lower()


def _loadmat(path: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as e:   # MATLAB v7.3 (HDF5) files
        raise DataError(path, f"cannot read .mat file: {e}") from e
    except Exception as e:
        raise DataError(path, f"cannot read .mat file ({type(e).__name__}: {e})") from e


def _user_keys(mat: dict) -> list[str]:
    return sorted(k for k in mat if not k.startswith("__"))


def read_eav_labels(label_path: str | os.PathLike, n_trials: int | None = None) -> np.ndarray:
    """Validated label matrix -> raw one-hot row of each trial, (n_trials,) int64."""
    label_path = Path(label_path)
    mat = _loadmat(label_path)
    if "label" not in mat:
        raise DataError(label_path, f"no 'label' variable (found: {_user_keys(mat) or 'none'})")
    lab = np.asarray(mat["label"])
    n_rows = 2 * len(EAV_CLASSES)
    if lab.ndim != 2:
        raise DataError(label_path, f"'label' has shape {lab.shape}; expected (10, n_trials)")
    if lab.shape[0] != n_rows:
        hint = " (looks transposed)" if lab.shape[1] == n_rows else ""
        raise DataError(label_path, f"'label' has shape {lab.shape}; expected (10, n_trials){hint}")
    if lab.dtype.kind not in "biuf":
        raise DataError(label_path, f"'label' has dtype {lab.dtype}; expected numbers")
    is_binary = np.isin(lab, (0, 1))
    if not is_binary.all() or not (lab.sum(axis=0) == 1).all():
        bad_cols = np.flatnonzero(~is_binary.all(axis=0) | (lab.sum(axis=0) != 1))
        raise DataError(
            label_path,
            f"'label' is not one-hot: {len(bad_cols)} trial column(s) without exactly one 1 "
            f"(first: trial {bad_cols[0] + 1})",
        )
    if n_trials is not None and lab.shape[1] != n_trials:
        raise DataError(label_path, f"'label' has {lab.shape[1]} trials but the EEG has {n_trials}")
    return np.argmax(lab, axis=0).astype(np.int64)


def read_eav_raw(mat_path: Path) -> np.ndarray:
    """The (T, 30, n_trials) EEG array of a subject, validated."""
    mat = _loadmat(mat_path)
    for key in _EEG_KEYS:
        x = mat.get(key)
        if isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[1] == EAV_N_CHANNELS:
            break
    else:
        found = {k: getattr(mat[k], "shape", type(mat[k]).__name__) for k in _user_keys(mat)}
        raise DataError(
            mat_path,
            f"no EEG variable: expected 'seg1' or 'seg' holding a (T, 30, n_trials) array; "
            f"found {found or 'no variables'}",
        )
    if x.dtype.kind not in "fiu":
        raise DataError(mat_path, f"'{key}' has dtype {x.dtype}; expected real numbers")
    if x.shape[0] < 1 or x.shape[2] < 1:
        raise DataError(mat_path, f"'{key}' has shape {x.shape}: no samples or no trials")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        n_bad = int(bad.sum())
        if n_bad:
            # (channel, trial) pairs holding NaN/inf
            pairs = np.argwhere(bad.any(axis=0))
            where = ", ".join(f"trial {t + 1} channel {c}" for c, t in pairs[:5].tolist())
            raise DataError(mat_path, f"'{key}' holds {n_bad} non-finite values (NaN/inf) in {where}")
    return x


def read_eav_eeg(
    mat_path: str | os.PathLike, label_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One subject -> (eeg (n_trials, T, 30) as stored, emotion (n_trials,) in EAV_CLASSES order,
    raw label row (n_trials,))."""
    raw = read_eav_raw(Path(mat_path))
    rows = read_eav_labels(label_path, n_trials=raw.shape[2])
    # (T, 30, n_trials) -> (n_trials, T, 30)
    return np.moveaxis(raw, 2, 0), rows // 2, rows


# ---------------------------------------------------------------------------------------------
# folder discovery

def find_eav_subjects(data_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """[(subject number, folder)] sorted numerically; accepts subject1 and subject01 names."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingDatasetError(data_dir, "eav")

    def scan(folder: Path) -> dict[int, Path]:
        found: dict[int, Path] = {}
        for p in sorted(folder.iterdir()):
            m = _SUBJECT_RE.fullmatch(p.name)
            if m and p.is_dir():
                n = int(m.group(1))
                if n in found:
                    raise DataError(p, f"a second folder for subject {n} (the first is {found[n]})")
                found[n] = p
        return found

    found = scan(data_dir)
    if not found:
        # archives often unpack into one extra folder level (EAV/EAV/subject1...)
        for child in sorted(p for p in data_dir.iterdir() if p.is_dir()):
            found = scan(child)
            if found:
                break
    if not found:
        raise MissingDatasetError(data_dir, "eav", "holds no subject{N} folders")
    return [(n, found[n]) for n in sorted(found)]


def _eeg_files(folder: Path, n: int) -> tuple[Path | None, Path | None]:
    eeg_dir = folder / "EEG"
    names = dict.fromkeys([f"subject{n}", f"subject{n:02d}", folder.name])
    mat = next((eeg_dir / f"{b}_eeg.mat" for b in names if (eeg_dir / f"{b}_eeg.mat").is_file()), None)
    lab = next((eeg_dir / f"{b}_eeg_label.mat" for b in names
                if (eeg_dir / f"{b}_eeg_label.mat").is_file()), None)
    return mat, lab


def _media_files(folder: Path) -> tuple[list[Path], list[Path]]:
    def listing(sub: str, suffix: str) -> list[Path]:
        d = folder / sub
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir()
                      if p.is_file() and p.suffix.lower() == suffix and not p.name.startswith("."))
    return listing("Video", ".mp4"), listing("Audio", ".wav")


def eav_trial_conditions(
    folder: Path, rows: np.ndarray, label_path: Path
) -> tuple[np.ndarray, dict[int, Path], dict[int, Path], str, list[tuple[str, str]]]:
    """Condition of each trial, the speaking trials' wav and mp4 files (by 0-based trial), how
    the conditions were found, and the media files whose names could not be parsed.

    Media names give the condition and emotion of the trials they cover; each is checked against
    the label emotion. The label rows' parity that goes with "speaking" is then read off the named
    trials and used for the trials no file names (e.g. listening trials when only audio exists).
    """
    n_trials = len(rows)
    videos, wavs = _media_files(folder)
    named: dict[int, str] = {}
    wav_of: dict[int, Path] = {}
    mp4_of: dict[int, Path] = {}
    unparsed: list[tuple[str, str]] = []
    for path in videos + wavs:
        try:
            trial, condition, emotion = parse_eav_media_name(path)
        except DataError as e:
            unparsed.append((str(path), e.problem))
            continue
        if trial > n_trials:
            raise DataError(path, f"trial number {trial} but the EEG holds {n_trials} trials")
        if emotion not in EAV_CLASSES:
            raise DataError(path, f"unknown emotion {emotion!r}; expected one of {EAV_CLASSES}")
        label_emotion = EAV_CLASSES[rows[trial - 1] // 2]
        if emotion != label_emotion:
            raise DataError(
                path,
                f"file name says {emotion} but {label_path.name} labels trial {trial} "
                f"{label_emotion}: media and EEG labels disagree",
            )
        if named.get(trial, condition) != condition:
            raise DataError(path, f"trial {trial} is named both {named[trial]} and {condition}")
        named[trial] = condition
        if path.suffix.lower() == ".wav":
            wav_of[trial - 1] = path
        elif condition == "speaking":
            mp4_of[trial - 1] = path

    if not named:
        # No media: the recording protocol alternates listening (odd trial numbers) and speaking.
        log.warning("%s: no Video/Audio files; taking the condition from trial-number parity "
                    "(odd = listening, even = speaking)", folder)
        idx = np.arange(1, n_trials + 1)
        return np.where(idx % 2 == 1, "listening", "speaking"), wav_of, mp4_of, "trial parity", unparsed

    parity = {c: {int(rows[t - 1] % 2) for t, c2 in named.items() if c2 == c} for c in EAV_CONDITIONS}
    if len(parity["speaking"]) > 1 or len(parity["listening"]) > 1 or (
        parity["speaking"] & parity["listening"]
    ):
        raise DataError(
            label_path,
            "label rows do not separate listening from speaking trials consistently with the media "
            f"file names (row parities: {parity})",
        )
    if parity["speaking"]:
        speaking_parity = parity["speaking"].pop()
    else:
        speaking_parity = 1 - parity["listening"].pop()
    conditions = np.where(rows % 2 == speaking_parity, "speaking", "listening")
    log.debug("%s: speaking trials have %s label rows", folder, "odd" if speaking_parity else "even")
    return conditions, wav_of, mp4_of, "media names + label rows", unparsed


# ---------------------------------------------------------------------------------------------
# audio features

def _media_cache(cdir: Path, folder: Path, sub: str, sid: str, kind: str, key: dict) -> tuple[Path, Path]:
    """(cache .npy, its .json) for one subject's Audio/ or Video/ features: the folder anchors
    the name; the per-file fingerprints in ``key`` catch edits of single files."""
    anchor = folder / sub if (folder / sub).is_dir() else folder
    cache = eeg_cache_path(cdir, anchor, key)
    cache = cache.with_name(f"{sid}-{kind}-{cache.name.rsplit('-', 1)[-1]}")
    return cache, cache.with_suffix(".json")


def _audio_features(
    wav_of: dict[int, Path], n_trials: int, n_frames: int, audio_sample_rate: int, n_mfcc: int,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(n_trials, n_frames, n_mfcc) MFCC frames, (n_trials,) mask, [(bad file, problem)]."""
    feats = np.zeros((n_trials, n_frames, n_mfcc), dtype=np.float32)
    mask = np.zeros(n_trials, dtype=np.float32)
    bad: list[tuple[str, str]] = []
    for t, path in sorted(wav_of.items()):
        try:
            wave, sr = read_wav(path)
        except DataError as e:
            bad.append((str(path), e.problem))
            continue
        mono = to_mono(wave)
        if not np.any(mono):
            bad.append((str(path), "audio is silent (all samples zero)"))
            continue
        m = mfcc(resample(mono, sr, audio_sample_rate), audio_sample_rate, n_mfcc)   # (n_mfcc, F)
        n = min(n_frames, m.shape[1])
        feats[t, :n] = m[:, :n].T                           # (n_mfcc, n) -> (n, n_mfcc)
        mask[t] = 1.0
    return feats, mask, bad


def _subject_audio(
    folder: Path, sid: str, wav_of: dict[int, Path], n_trials: int, duration_s: float,
    audio_sample_rate: int, n_mfcc: int, cdir: Path,
) -> tuple[TrialArray, np.ndarray, list[tuple[str, str]]]:
    """Cached MFCC frames (n_trials, F, n_mfcc), audio mask, and the bad wav files met."""
    frame_rate = audio_sample_rate / HOP_LENGTH
    n_frames = int(round(duration_s * frame_rate))
    key = {
        "dataset": "eav-audio", "audio_sample_rate": audio_sample_rate, "n_mfcc": n_mfcc,
        "melkwargs": MEL_KWARGS, "n_frames": n_frames, "n_trials": n_trials,
        "layout": "trial,frame,mfcc", "dtype": "float32",
        "wavs": {str(t): file_fingerprint(p) for t, p in sorted(wav_of.items())},
    }
    cache, meta_path = _media_cache(cdir, folder, "Audio", sid, "mfcc", key)
    if cache.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        array = TrialArray.from_npy(cache)
        mask = np.asarray(meta["audio_mask"], dtype=np.float32)
        if array.shape == (n_trials, n_frames, n_mfcc) and mask.shape == (n_trials,):
            # bad files are replayed so that every load reports them under its own policy
            return array, mask, [tuple(b) for b in meta["bad"]]
    feats, mask, bad = _audio_features(wav_of, n_trials, n_frames, audio_sample_rate, n_mfcc)
    atomic_write_json(meta_path, {"audio_mask": mask.tolist(), "bad": bad})
    atomic_save_npy(cache, feats)
    missing = sum(1 for t in range(n_trials) if t not in wav_of)
    log.debug("%s: %d trials with audio, %d without a wav", sid, int(mask.sum()), missing)
    return TrialArray.from_npy(cache), mask, bad


# ---------------------------------------------------------------------------------------------
# video

def face_crops(frames, detector, size: int, margin: float = VIDEO_CROP_MARGIN) -> tuple[np.ndarray, int]:
    """RGB frames (an iterable of (H, W, 3) uint8) -> square face crops (N, size, size, 3) uint8
    and the number of frames where the detector found no face.

    The largest face found is cut square with ``margin`` around it (:func:`emoexp.data.frames.crop`);
    a frame without a face reuses the last box found in the sequence (a turned head, a blink of
    the detector), or the frame's central square before any was found. Training and serving both
    cut crops here, so a served model sees faces cut as in training.
    """
    import cv2

    out: list[np.ndarray] = []
    last = None
    no_face = 0
    for frame in frames:
        boxes = detector.detect(frame)
        if boxes and getattr(detector, "finds_faces", True):
            last = boxes[0]
        elif getattr(detector, "finds_faces", True):
            no_face += 1
        box = last if last is not None else (0, 0, frame.shape[1], frame.shape[0])
        face = crop(frame, box, margin)
        if face.shape[0] != size or face.shape[1] != size:
            interp = cv2.INTER_AREA if face.shape[0] > size else cv2.INTER_LINEAR
            face = cv2.resize(face, (size, size), interpolation=interp)
        out.append(face)
    if not out:
        return np.zeros((0, size, size, 3), dtype=np.uint8), 0
    return np.stack(out), no_face


def read_eav_video(
    path: str | os.PathLike, *, fps: float, n_frames: int, size: int, detector,
) -> tuple[np.ndarray, int]:
    """One video -> (n_frames, size, size, 3) uint8 face crops at ``fps`` from its start, and the
    count of frames without a found face. A video shorter than ``n_frames`` repeats its last
    frame; a longer one is cut. Raises :class:`DataError` naming the file if it cannot be read."""

    def frames():
        for k, (_, _, rgb) in enumerate(iter_frames(path, fps)):
            if k >= n_frames:
                break
            yield rgb

    try:
        crops, no_face = face_crops(frames(), detector, size)
    except DataError:
        raise                # already names the file
    except Exception as e:   # a decoder failing mid-file
        raise DataError(path, f"cannot decode video frames ({type(e).__name__}: {e})") from e
    if len(crops) < n_frames:
        crops = np.concatenate([crops, np.repeat(crops[-1:], n_frames - len(crops), axis=0)])
    return crops, no_face


def _detector_key(spec: str) -> str | dict:
    """What identifies a detector in a cache key: its name, or a model file's fingerprint."""
    p = Path(spec)
    return file_fingerprint(p) if spec.lower() not in ("auto", "haar", "none", "whole") and p.is_file() else spec


def _subject_video(
    folder: Path, sid: str, mp4_of: dict[int, Path], n_trials: int, duration_s: float, fps: float,
    size: int, detector_spec: str, cdir: Path, progress: bool,
) -> tuple[FrameArray, np.ndarray, list[tuple[str, str]], int]:
    """Cached face crops of the speaking trials' videos: frames, mask (n_trials,), the bad video
    files met, and the frames where no face was found."""
    from tqdm import tqdm

    n_frames = max(1, int(round(duration_s * fps)))
    key = {
        "dataset": "eav-video", "fps": float(fps), "size": int(size), "n_frames": n_frames,
        "n_trials": n_trials, "detector": _detector_key(detector_spec), "margin": VIDEO_CROP_MARGIN,
        "layout": "video,frame,y,x,rgb", "dtype": "uint8",
        "videos": {str(t): file_fingerprint(p) for t, p in sorted(mp4_of.items())},
    }
    cache, meta_path = _media_cache(cdir, folder, "Video", sid, "video", key)
    if cache.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            frames = FrameArray.from_npy(cache, np.asarray(meta["row_of"], dtype=np.int64))
            if frames.n_trials == n_trials and frames.n_frames == n_frames and frames.size == size:
                # bad files are replayed so that every load reports them under its own policy
                return (frames, np.asarray(meta["video_mask"], dtype=np.float32),
                        [tuple(b) for b in meta["bad"]], int(meta["no_face"]))
        except (DataError, ValueError, IndexError, KeyError) as e:
            log.warning("rebuilding unreadable video cache %s: %s", cache, e)

    detector = make_detector(detector_spec)
    row_of = np.full(n_trials, -1, dtype=np.int64)
    mask = np.zeros(n_trials, dtype=np.float32)
    bad: list[tuple[str, str]] = []
    no_face = 0
    crops: list[np.ndarray] = []
    for t, path in tqdm(sorted(mp4_of.items()), desc=f"{sid} videos", unit="video",
                        disable=not progress, leave=False):
        try:
            c, n_no = read_eav_video(path, fps=fps, n_frames=n_frames, size=size, detector=detector)
        except DataError as e:
            bad.append((str(path), e.problem))
            continue
        row_of[t] = len(crops)
        mask[t] = 1.0
        crops.append(c)
        no_face += n_no
    array = np.stack(crops) if crops else np.zeros((0, n_frames, size, size, 3), dtype=np.uint8)
    atomic_write_json(meta_path, {"row_of": row_of.tolist(), "video_mask": mask.tolist(), "bad": bad,
                                 "no_face": no_face})
    atomic_save_npy(cache, array)
    if no_face:
        log.info("%s: no face found in %d of %d video frames (the last box found was reused)",
                 sid, no_face, len(crops) * n_frames)
    return FrameArray.from_npy(cache, row_of), mask, bad, no_face


# ---------------------------------------------------------------------------------------------
# loader

def load_eav(
    data_dir: str | os.PathLike,
    *,
    condition: str = "both",
    sample_rate: float = 250,
    use_audio: bool = False,
    audio_sample_rate: int = 16000,
    n_mfcc: int = 13,
    use_video: bool = False,
    video_fps: float = 5.0,
    video_size: int = 48,
    video_detector: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    on_bad_file: BadFilePolicy | None = None,
    max_subjects: int | None = None,
    progress: bool = True,
) -> EEGRecordings:
    """Load EAV EEG (and optionally speech MFCCs and face video) as :class:`EEGRecordings`.

    condition: listening | speaking | both selects the trials kept. ``sample_rate`` is the EEG
    rate after resampling from 500 Hz. With ``use_audio`` every kept trial carries MFCC frames
    (zeros and audio_mask 0 where there is no audio, i.e. listening trials or a missing wav).
    With ``use_video`` every kept trial carries ``video_fps`` face crops per second of
    ``video_size`` px, found by ``video_detector`` (see :func:`emoexp.data.frames.make_detector`);
    video_mask is 0 for listening trials, a missing mp4, or (with on_bad_file skip) an
    unreadable one.
    """
    from tqdm import tqdm

    if condition not in (*EAV_CONDITIONS, "both"):
        raise ValueError(f"condition must be listening, speaking or both, not {condition!r}")
    policy = on_bad_file or BadFilePolicy()
    subjects = find_eav_subjects(data_dir)
    if max_subjects is not None:
        subjects = subjects[: max(0, int(max_subjects))]
    cdir = resolve_cache_dir(cache_dir, "eav")
    key = {"dataset": "eav", "orig_rate": EAV_SAMPLE_RATE, "sample_rate": float(sample_rate),
           "channels": EAV_N_CHANNELS, "dtype": "float32", "layout": "trial,time,channel",
           "resample": "resample_poly"}

    ids: list[str] = []
    eeg: dict[str, TrialArray] = {}
    labels: dict[str, np.ndarray] = {}
    conds: dict[str, np.ndarray] = {}
    index: dict[str, np.ndarray] = {}
    audio: dict[str, TrialArray] = {}
    masks: dict[str, np.ndarray] = {}
    how_found: dict[str, str] = {}
    video: dict[str, FrameArray] = {}
    vmasks: dict[str, np.ndarray] = {}
    video_stats = {"videos": 0, "missing": 0, "no_face_frames": 0}
    for n, folder in tqdm(subjects, desc="EAV subjects", unit="subject", disable=not progress):
        sid = f"subject{n}"
        mat_path, label_path = _eeg_files(folder, n)
        if mat_path is None or label_path is None:
            what = "EEG/subject{N}_eeg.mat" if mat_path is None else "EEG/subject{N}_eeg_label.mat"
            policy.bad(folder, f"missing {what.replace('{N}', str(n))}")
            continue
        try:
            rows = read_eav_labels(label_path)
            array = _subject_eeg(mat_path, label_path, len(rows), sample_rate, cdir, key)
            all_conds, wav_of, mp4_of, how, unparsed = eav_trial_conditions(folder, rows, label_path)
            duration = array.length / float(sample_rate)
            if use_audio:
                feats, mask, bad_wavs = _subject_audio(
                    folder, sid, wav_of, len(rows), duration, int(audio_sample_rate),
                    int(n_mfcc), cdir)
            if use_video:
                # speaking trials only (the listening half is masked), as in the authors' loader
                mp4_of = {t: p for t, p in mp4_of.items() if all_conds[t] == "speaking"}
                frames, vmask, bad_mp4s, no_face = _subject_video(
                    folder, sid, mp4_of, len(rows), duration, float(video_fps), int(video_size),
                    str(video_detector), cdir, progress)
        except DataError as e:
            # a subject whose files contradict each other is skipped whole (or stops the load)
            policy.bad(e.path, e.problem)
            continue
        # single bad media files only cost their own trial's name, audio or video
        for path, problem in unparsed + (bad_wavs if use_audio else []) + (bad_mp4s if use_video else []):
            policy.bad(path, problem)
        keep = np.flatnonzero(all_conds == condition) if condition != "both" else np.arange(len(rows))
        if use_audio:
            audio[sid] = feats.subset(keep)
            masks[sid] = mask[keep]
        if use_video:
            missing = [int(t) + 1 for t in np.flatnonzero(all_conds == "speaking") if t not in mp4_of]
            if missing:
                log.warning("%s: %d speaking trial(s) without a video file (trials %s%s): masked", sid,
                            len(missing), ", ".join(map(str, missing[:5])), "..." if len(missing) > 5 else "")
            video[sid] = frames.subset(keep)
            vmasks[sid] = vmask[keep]
            video_stats["videos"] += int(vmask.sum())
            video_stats["missing"] += len(missing)
            video_stats["no_face_frames"] += no_face
        ids.append(sid)
        eeg[sid] = array.subset(keep)
        labels[sid] = rows[keep] // 2
        conds[sid] = all_conds[keep]
        index[sid] = keep
        how_found[sid] = how
    if not ids:
        raise DataError(data_dir, f"no usable EAV subjects ({len(subjects)} found, all skipped)")
    if use_video and not video_stats["videos"]:
        raise DataError(data_dir, "use_video is set but no subject has a readable speaking-trial video "
                                  "(subject{N}/Video/NNN_Trial_MM_Speaking_<Emotion>.mp4)")
    return EEGRecordings(
        subject_ids=ids,
        class_names=list(EAV_CLASSES),
        sample_rate=float(sample_rate),
        # EAV ships no channel names (no loader or file we know of lists them): unknown.
        channel_names=None,
        trial_labels=labels,
        eeg=eeg,
        trial_conditions=conds,
        trial_index=index,
        audio=audio if use_audio else None,
        audio_mask=masks if use_audio else None,
        audio_frame_rate=audio_sample_rate / HOP_LENGTH if use_audio else None,
        video=video if use_video else None,
        video_mask=vmasks if use_video else None,
        video_fps=float(video_fps) if use_video else None,
        info={"dataset": "eav", "source": str(Path(data_dir).resolve()), "condition": condition,
              "orig_sample_rate": EAV_SAMPLE_RATE, "use_audio": use_audio,
              "audio_sample_rate": audio_sample_rate if use_audio else None,
              "n_mfcc": n_mfcc if use_audio else None, "cache_dir": str(cdir),
              "use_video": use_video,
              **({"video_fps": float(video_fps), "video_size": int(video_size),
                  "video_detector": str(video_detector), "n_videos": video_stats["videos"],
                  "videos_missing": video_stats["missing"],
                  "video_frames_no_face": video_stats["no_face_frames"]} if use_video else {}),
              "condition_source": how_found, "skipped_files": len(policy.skipped)},
    )


def _subject_eeg(
    mat_path: Path, label_path: Path, n_trials: int, sample_rate: float, cdir: Path, key: dict
) -> TrialArray:
    """The subject's resampled (n_trials, T, 30) cache, built from the .mat file when missing."""
    cache = eeg_cache_path(cdir, mat_path, key)
    array = None
    if cache.exists():
        try:
            array = TrialArray.from_npy(cache)
        except DataError as e:
            log.warning("rebuilding unreadable cache %s: %s", cache, e.problem)
    if array is not None and array.width == EAV_N_CHANNELS:
        if array.n_trials != n_trials:
            raise DataError(label_path, f"'label' has {n_trials} trials but the EEG has {array.n_trials}")
        return array
    raw = read_eav_raw(mat_path)                                  # (T, 30, n)
    if raw.shape[2] != n_trials:
        raise DataError(label_path, f"'label' has {n_trials} trials but the EEG has {raw.shape[2]}")
    T2 = resampled_length(raw.shape[0], EAV_SAMPLE_RATE, sample_rate)
    out = np.empty((raw.shape[2], T2, EAV_N_CHANNELS), dtype=np.float32)
    for j in range(0, raw.shape[2], _RESAMPLE_CHUNK):
        part = resample_poly_axis(raw[:, :, j:j + _RESAMPLE_CHUNK], EAV_SAMPLE_RATE, sample_rate, axis=0)
        out[j:j + part.shape[2]] = part.transpose(2, 0, 1)        # (T2, 30, k) -> (k, T2, 30)
    del raw
    atomic_save_npy(cache, out)
    return TrialArray.from_npy(cache)

