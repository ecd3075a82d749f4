"""Importers: MultiPosture and BoLD keypoints -> seed 001's posture layout (15 features per frame).

Both map their keypoints to the canonical joints, compute :func:`posture_features` (the same
extractor as for video), cut windows of ``seq_length`` frames every ``stride`` frames
(:func:`windows`) and write the layout with :func:`write_posture_dataset`, plus ``heads.json``
(the class names) and ``import_info.json`` (source, parameters, counts, cut points). Bad rows
and files go through the :class:`BadFilePolicy` (error: DataError naming the file and row;
skip: recorded and passed over); anything else wrong with the input is a DataError naming the
file.

MultiPosture (DATASETS.md section 7): one ``data.csv``, one row per frame, columns ``subject,
upperbody_label, lowerbody_label`` and ``<landmark>_x/_y/_z`` for the 33 MediaPipe Pose
landmarks (world coordinates, metres, hip-centred). The column order is uncertain, so columns
are found by name, case-insensitively; landmark columns are accepted as ``nose_x`` (the
documented style), ``x0`` or ``landmark_0_x``. Only the 17 landmarks the canonical joints use
are required. The rows are single frames without a time index: consecutive rows of one subject
with the same two labels are taken as a sequence. Heads: ``upperbody`` (TLB, TLF, TLL, TLR,
TUP) and ``lowerbody`` (LAP, LCL, LCR, LCS, LLL, LLR, LWA), the documented codes, sorted; labels
are matched case-insensitively. Split by subject: a ``val_fraction`` share of the subjects
(at least one) goes to ``val``.

BoLD (DATASETS.md section 7): ``annotations/{train,val}.csv`` without a header, 37 columns
(video, person_id, min_frame, max_frame, the 26 categories, valence, arousal, dominance, gender,
age, ethnicity, annotation_confidence) and ``joints/<video path with .mp4 -> .npy>`` arrays
(N, 56): frame, person id, 18 x (x, y, confidence) in OpenPose COCO-18 order. Frame numbers in
the joints are absolute and the loaders count them from the file's first row; the annotated
person's rows between min_frame and max_frame are taken in that relative numbering, or in the
absolute one if the relative one finds none ([UNCERTAIN] which one the CSV uses). Joints with
confidence below ``min_confidence`` (0.1, as the BoLD loaders) are missing. Heads: ``emotion``,
the category with the highest score (ties: the first in the list; rows where every chosen
category scores 0 are left out), and, with ``vad_heads``, ``valence`` and ``arousal`` in three
bins low / mid / high. The V/A scale is uncertain (1-10?), so the cut points are the train
side's tertiles, applied to both sides and recorded in import_info.json. ``test_meta.csv`` has
no labels and is not imported.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from emoexp.data.base import BadFilePolicy, DataError
from emoexp.data.io import atomic_write_bytes
from emoexp.data.posture import (
    _J,
    MEDIAPIPE33,
    MEDIAPIPE33_NAMES,
    PostureWarning,
    canonical_from_mediapipe,
    canonical_from_openpose18,
    posture_features,
    windows,
    write_posture_dataset,
)

log = logging.getLogger(__name__)

MULTIPOSTURE_UPPER = ("TUP", "TLF", "TLB", "TLL", "TLR")
MULTIPOSTURE_LOWER = ("LAP", "LWA", "LCS", "LCR", "LCL", "LLR", "LLL")
MULTIPOSTURE_HEADS: dict[str, list[str]] = {
    "upperbody": sorted(MULTIPOSTURE_UPPER),
    "lowerbody": sorted(MULTIPOSTURE_LOWER),
}
_MP_LABEL_COLUMNS = {"upperbody": "upperbody_label", "lowerbody": "lowerbody_label"}

BOLD_CATEGORIES: tuple[str, ...] = (
    "Peace", "Affection", "Esteem", "Anticipation", "Engagement", "Confidence", "Happiness",
    "Pleasure", "Excitement", "Surprise", "Sympathy", "Doubt/Confusion", "Disconnection",
    "Fatigue", "Embarrassment", "Yearning", "Disapproval", "Aversion", "Annoyance", "Anger",
    "Sensitivity", "Sadness", "Disquietment", "Fear", "Pain", "Suffering",
)
BOLD_N_COLUMNS = 4 + len(BOLD_CATEGORIES) + 3 + 3 + 1      # 37
BOLD_JOINT_COLUMNS = 2 + 18 * 3                            # 56
VAD_BINS = ["low", "mid", "high"]
_BOLD_ALIASES = {"disconnect": "Disconnection", "doubt": "Doubt/Confusion", "confusion": "Doubt/Confusion"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _safe(text: str) -> str:
    """A string made usable in a file stem (sequence id)."""
    return _UNSAFE.sub("_", str(text)).strip("_") or "x"


class _FeatureWarnings:
    """posture_features calls whose PostureWarnings are counted and summarised once, not each logged."""

    def __init__(self) -> None:
        self.count = 0
        self.example = ""

    def __call__(self, joints: np.ndarray, fps: float) -> tuple[np.ndarray, bool]:
        """-> (features (T, 15), whether there was no body scale at all)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PostureWarning)
            f = posture_features(joints, fps)
        msgs = [str(w.message) for w in caught if issubclass(w.category, PostureWarning)]
        if msgs:
            self.count += 1
            self.example = self.example or msgs[0]
        return f, any("no body scale" in m for m in msgs)

    def report(self, source: str) -> None:
        if self.count:
            log.warning("%s: %d sequence(s) had features set to 0 because joints were never seen (e.g. %s)",
                        source, self.count, self.example)


def _write_info(out: Path, info: dict[str, Any]) -> None:
    atomic_write_bytes(out / "import_info.json", (json.dumps(info, indent=1, default=str) + "\n").encode())


def _side_counts(items: list[tuple[str, np.ndarray, dict[str, int]]], heads: dict[str, list[str]]) -> dict:
    return {h: dict(Counter(heads[h][codes[h]] for _, _, codes in items)) for h in heads}


# ---------------------------------------------------------------------------------------------
# MultiPosture

def _landmark_columns(columns: list[str], path: Path) -> dict[str, list[str]]:
    """{landmark name: [x, y, z column names as in the file]} for the landmarks JOINTS use."""
    lower = {c.strip().lower(): c for c in columns}
    found: dict[str, list[str]] = {}
    missing: list[str] = []
    for name, k in MEDIAPIPE33.items():
        cols = []
        for axis in "xyz":
            for cand in (f"{name}_{axis}", f"{axis}{k}", f"landmark_{k}_{axis}"):
                if cand in lower:
                    cols.append(lower[cand])
                    break
            else:
                missing.append(f"{name}_{axis}")
        found[name] = cols
    if missing:
        raise DataError(
            path, f"lacks landmark column(s) {', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''} "
            f"({len(missing)} in all); landmark columns are looked for as nose_x, x0 or landmark_0_x")
    return found


def import_multiposture(
    csv_path: str | os.PathLike, out: str | os.PathLike, *, seq_length: int = 30, stride: int = 15,
    val_fraction: float = 0.2, seed: int = 0, fps: float = 30.0, flip_y: bool | None = None,
    policy: BadFilePolicy | None = None,
) -> Path:
    """MultiPosture ``data.csv`` -> the posture layout in ``out`` (heads upperbody, lowerbody).

    ``fps`` is nominal (the rows have no time stamps): it only scales the motion features.
    ``flip_y``: MediaPipe's world y points down like the image's; None checks it (neck above the
    hips in most rows) and flips if the file has y up, True/False force it. Bad rows (a label
    that is not a MultiPosture code, a non-numeric coordinate, no subject) go through
    ``policy``; empty coordinates count as a missing landmark.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    policy = policy or BadFilePolicy()
    csv_path, out = Path(csv_path), Path(out)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    df = _read_text_csv(csv_path, "does not exist (expected MultiPosture's data.csv, Zenodo 10.5281/zenodo.14230872)",
                        skipinitialspace=True)
    lower = {c.strip().lower(): c for c in df.columns}
    need = ["subject", *_MP_LABEL_COLUMNS.values()]
    absent = [c for c in need if c not in lower]
    if absent:
        raise DataError(csv_path, f"lacks column(s) {', '.join(absent)} (MultiPosture has subject, "
                                  "upperbody_label, lowerbody_label and <landmark>_x/_y/_z)")
    lm_cols = _landmark_columns(list(df.columns), csv_path)
    if df.empty:
        raise DataError(csv_path, "has no rows")

    # coordinates: (rows, 33, 3), NaN for the landmarks not used and for empty cells
    n = len(df)
    lm = np.full((n, len(MEDIAPIPE33_NAMES), 3), np.nan)
    bad_row = np.zeros(n, dtype=bool)
    for name, cols in lm_cols.items():
        for a, col in enumerate(cols):
            text = df[col].str.strip()
            values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
            wrong = np.isnan(values) & (text != "").to_numpy() & ~text.str.lower().isin(["nan", "na"]).to_numpy()
            wrong |= np.isinf(values)
            for i in np.flatnonzero(wrong & ~bad_row):
                policy.bad(csv_path, f"row {i + 2}: {col} is not a number ({df[col].iat[i]!r})")
            bad_row |= wrong
            lm[:, MEDIAPIPE33[name], a] = values
    codes: dict[str, np.ndarray] = {}
    for head, col in _MP_LABEL_COLUMNS.items():
        classes = MULTIPOSTURE_HEADS[head]
        text = df[lower[col]].str.strip().str.upper().to_numpy()
        c = np.array([classes.index(v) if v in classes else -1 for v in text])
        for i in np.flatnonzero((c < 0) & ~bad_row):
            policy.bad(csv_path, f"row {i + 2}: {col} {df[lower[col]].iat[i]!r} is not one of {', '.join(classes)}")
        bad_row |= c < 0
        codes[head] = c
    subject = df[lower["subject"]].str.strip().to_numpy()
    for i in np.flatnonzero((subject == "") & ~bad_row):
        policy.bad(csv_path, f"row {i + 2}: no subject")
    bad_row |= subject == ""
    keep = np.flatnonzero(~bad_row)
    if keep.size == 0:
        raise DataError(csv_path, "has no usable rows")

    joints = canonical_from_mediapipe(lm[keep]).astype(np.float64)      # (rows, J, 3)
    if flip_y is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # rows without hips: NaN
            hips = np.nanmean(joints[:, [_J["left_hip"], _J["right_hip"]], 1], axis=1)
            rise = np.nanmedian(joints[:, _J["neck"], 1] - hips)
        flip_y = bool(rise > 0)     # neck below the hips: the file's y points up
        if flip_y:
            log.warning("%s: the neck is below the hips in most rows, so y points up here; flipping it "
                        "(features use the image convention, y down); pass flip_y=False to keep it", csv_path)
    if flip_y:
        joints[..., 1] *= -1

    subjects = sorted(set(subject[keep]), key=lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s))
    if len(subjects) < 2:
        raise DataError(csv_path, f"holds {len(subjects)} subject; a subject split needs at least 2")
    rng = np.random.default_rng(seed)
    n_val = min(len(subjects) - 1, max(1, int(round(val_fraction * len(subjects)))))
    val_subjects = set(np.asarray(subjects, dtype=object)[rng.permutation(len(subjects))[:n_val]])

    # runs of consecutive (kept) rows with the same subject and labels
    key = list(zip(subject[keep], codes["upperbody"][keep], codes["lowerbody"][keep]))
    starts = [0] + [i for i in range(1, len(key)) if key[i] != key[i - 1]] + [len(key)]
    sides: dict[str, list] = {"train": [], "val": []}
    feats = _FeatureWarnings()
    for r, (a, b) in enumerate(tqdm(list(zip(starts[:-1], starts[1:])), desc="MultiPosture",
                                    unit="run", disable=None)):
        subj, up, low = key[a]
        f, no_scale = feats(joints[a:b], fps)
        if no_scale:
            policy.bad(csv_path, f"rows {keep[a] + 2}-{keep[b - 1] + 2}: no torso or shoulders in any row")
            continue
        side = "val" if subj in val_subjects else "train"
        labels = {"upperbody": int(up), "lowerbody": int(low)}
        stem = (f"s{_safe(subj)}_{MULTIPOSTURE_HEADS['upperbody'][up]}_"
                f"{MULTIPOSTURE_HEADS['lowerbody'][low]}_r{r:04d}")
        for k, w in enumerate(windows(f, seq_length, stride)):
            sides[side].append((f"{stem}_w{k:02d}", w, labels))
    feats.report(str(csv_path))
    for side, items in sides.items():
        if not items:
            raise DataError(csv_path, f"gives no sequences for the {side} side")
    write_posture_dataset(out, sides, MULTIPOSTURE_HEADS)
    _write_info(out, {
        "source": "multiposture", "csv": str(csv_path), "rows": n, "rows_used": int(keep.size),
        "seq_length": seq_length, "stride": stride, "fps": fps, "flip_y": flip_y, "seed": seed,
        "val_subjects": sorted(val_subjects, key=str),
        "train_subjects": sorted(set(subjects) - val_subjects, key=str),
        "counts": {s: _side_counts(items, MULTIPOSTURE_HEADS) for s, items in sides.items()},
        "skipped": policy.skipped,
    })
    log.info("MultiPosture: %d train and %d val sequences written to %s", len(sides["train"]),
             len(sides["val"]), out)
    return out


# ---------------------------------------------------------------------------------------------
# BoLD

def _bold_categories(categories: str) -> list[str]:
    if categories == "top":
        return list(BOLD_CATEGORIES)
    chosen = []
    by_lower = {c.lower(): c for c in BOLD_CATEGORIES}
    for part in categories.split(","):
        name = part.strip().lower()
        canon = by_lower.get(name) or _BOLD_ALIASES.get(name)
        if canon is None:
            raise ValueError(f"categories: {part.strip()!r} is not a BoLD category; "
                             f"known: {', '.join(BOLD_CATEGORIES)} (or 'top' for all)")
        if canon not in chosen:
            chosen.append(canon)
    if len(chosen) < 2:
        raise ValueError(f"categories: choose at least two, not {categories!r}")
    return chosen


def _joints_path(root: Path, video: str) -> Path | None:
    """``joints/<video with the last .mp4 -> .npy>``; None for a path leaving the tree."""
    rel = video.strip().replace("\\", "/")
    if ".." in Path(rel).parts or rel.startswith("/") or not rel:
        return None
    i = rel.rfind(".mp4")
    rel = rel[:i] + ".npy" + rel[i + 4:] if i >= 0 else rel + ".npy"
    return root / "joints" / rel


def _read_text_csv(path: Path, missing: str, **kw):
    """A CSV as strings (values checked by the caller); DataError naming the file otherwise."""
    import pandas as pd

    if not path.is_file():
        raise DataError(path, missing)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DataError(path, f"cannot be read as CSV ({e})") from None


def _read_bold_csv(path: Path):

    df = _read_text_csv(path, "is missing: BoLD annotations are annotations/train.csv and val.csv", header=None)
    if df.shape[1] != BOLD_N_COLUMNS:
        raise DataError(path, f"has {df.shape[1]} columns; BoLD annotations have {BOLD_N_COLUMNS} "
                              "(video, person_id, min_frame, max_frame, 26 categories, valence, "
                              "arousal, dominance, gender, age, ethnicity, annotation_confidence)")
    if len(df) and not df.iat[0, 1].strip().lstrip("-").replace(".", "", 1).isdigit():
        log.warning("%s: the first row looks like a header (%r...); it is skipped", path, list(df.iloc[0, :3]))
        df = df.iloc[1:]
    if df.empty:
        raise DataError(path, "has no rows")
    return df


def _number(text: str) -> float:
    v = float(text)
    if not np.isfinite(v):
        raise ValueError
    return v


def import_bold(
    bold_root: str | os.PathLike, out: str | os.PathLike, *, seq_length: int = 30, stride: int = 15,
    categories: str = "top", vad_heads: bool = True, fps: float = 30.0,
    min_confidence: float = 0.1, policy: BadFilePolicy | None = None,
) -> Path:
    """BoLD ``BOLD_public/`` -> the posture layout in ``out``; train.csv -> train, val.csv -> val.

    ``categories``: "top" labels each annotated person with the highest-scoring of the 26
    categories; a comma-separated list of category names ("Happiness,Sadness,Anger,Peace")
    restricts the head to those, each person labelled with the highest of them (persons scoring
    0 on all of them are left out). ``vad_heads`` adds the valence and arousal tertile heads.
    ``fps``: the clips' frame rate is not in the annotations; it scales the motion features only. A row whose numbers do not parse, whose joints file is missing or malformed,
    or whose person has no frames in range goes through ``policy``.
    """
    from tqdm.auto import tqdm

    policy = policy or BadFilePolicy()
    root, out = Path(bold_root), Path(out)
    if not root.is_dir():
        raise DataError(root, "does not exist or is not a folder (expected BoLD's BOLD_public folder)")
    if not (root / "joints").is_dir():
        raise DataError(root / "joints", "is missing: BoLD's keypoints are joints/<video path>.npy")
    cats = _bold_categories(categories)
    cat_index = [BOLD_CATEGORIES.index(c) for c in cats]
    feats = _FeatureWarnings()
    rows: dict[str, list[tuple[str, np.ndarray, int, float, float]]] = {}
    no_vote = Counter()
    cache: dict[Path, np.ndarray | None] = {}

    for side in ("train", "val"):
        csv_path = root / "annotations" / f"{side}.csv"
        df = _read_bold_csv(csv_path)
        rows[side] = []
        for line, rec in tqdm(list(zip(df.index, df.itertuples(index=False))), desc=f"BoLD {side}",
                              unit="person", disable=None):
            where = f"row {line + 1}"
            video = str(rec[0])
            try:
                pid, lo, hi = (_number(rec[k]) for k in (1, 2, 3))
                if any(v != int(v) for v in (pid, lo, hi)):
                    raise ValueError
                scores = np.array([_number(v) for v in rec[4:30]])
                valence, arousal = _number(rec[30]), _number(rec[31])
            except ValueError:
                policy.bad(csv_path, f"{where} ({video}): person_id and min/max_frame must be whole numbers, categories and valence/arousal numbers")
                continue
            if (scores < -1e-6).any() or (scores > 1 + 1e-6).any():
                policy.bad(csv_path, f"{where} ({video}): category scores must lie in 0..1")
                continue
            chosen = scores[cat_index]
            if chosen.max() <= 0:
                no_vote[side] += 1
                continue
            jpath = _joints_path(root, video)
            if jpath is None:
                policy.bad(csv_path, f"{where}: video path {video!r} leaves the dataset folder")
                continue
            if jpath not in cache:
                cache.clear()                       # rows come grouped by video: keep one file
                cache[jpath] = _load_bold_joints(jpath, policy)
            arr = cache[jpath]
            if arr is None:
                continue
            track = _bold_track(arr, int(pid), int(lo), int(hi))
            if track is None:
                policy.bad(jpath, f"has no frames of person {int(pid)} between frames {int(lo)} and {int(hi)} "
                                  f"(counted from its first row, or absolute) for {csv_path} {where}")
                continue
            f, no_scale = feats(canonical_from_openpose18(track, min_confidence=min_confidence), fps)
            if no_scale:
                policy.bad(jpath, f"person {int(pid)}: no torso or shoulders in any frame ({csv_path} {where})")
                continue
            stem = f"r{int(line) + 1:05d}_{_safe(video.removesuffix('.mp4'))}_p{int(pid)}"
            rows[side].append((stem, f, int(np.argmax(chosen)), valence, arousal))
    feats.report(str(root))

    heads: dict[str, list[str]] = {"emotion": cats}
    cuts: dict[str, list[float]] = {}
    if vad_heads:
        heads.update(valence=list(VAD_BINS), arousal=list(VAD_BINS))
        for k, head in ((3, "valence"), (4, "arousal")):
            values = np.array([r[k] for r in rows["train"]])
            cuts[head] = [float(q) for q in np.quantile(values, [1 / 3, 2 / 3])] if values.size else [0.0, 0.0]
    sides: dict[str, list] = {}
    for side, recs in rows.items():
        items = []
        for stem, f, emo, valence, arousal in recs:
            labels = {"emotion": emo}
            if vad_heads:
                # low <= first cut < mid <= second cut < high
                labels["valence"] = int(np.searchsorted(cuts["valence"], valence, side="left"))
                labels["arousal"] = int(np.searchsorted(cuts["arousal"], arousal, side="left"))
            for k, w in enumerate(windows(f, seq_length, stride)):
                items.append((f"{stem}_w{k:02d}", w, labels))
        if not items:
            raise DataError(root / "annotations" / f"{side}.csv", "gives no sequences")
        sides[side] = items
    for side, count in no_vote.items():
        log.info("BoLD %s: %d person(s) with a score of 0 on every chosen category left out", side, count)
    write_posture_dataset(out, sides, heads)
    _write_info(out, {
        "source": "bold", "root": str(root), "seq_length": seq_length, "stride": stride, "fps": fps,
        "categories": cats, "min_confidence": min_confidence, "vad_cut_points": cuts,
        "persons": {s: len(r) for s, r in rows.items()}, "no_category_vote": dict(no_vote),
        "counts": {s: _side_counts(items, heads) for s, items in sides.items()},
        "skipped": policy.skipped,
    })
    log.info("BoLD: %d train and %d val sequences written to %s", len(sides["train"]), len(sides["val"]), out)
    return out


def _load_bold_joints(path: Path, policy: BadFilePolicy) -> np.ndarray | None:
    """A joints file (N, 56) float64, or None (reported through ``policy``)."""
    if not path.is_file():
        policy.bad(path, "is missing: the annotation names a video whose joints file does not exist")
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        policy.bad(path, f"cannot be read as a plain .npy array ({e})")
        return None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != BOLD_JOINT_COLUMNS or not len(arr):
        shape = getattr(arr, "shape", None)
        policy.bad(path, f"has shape {shape}; BoLD joints are (N, {BOLD_JOINT_COLUMNS}): frame, person id, "
                         "18 x (x, y, confidence)")
        return None
    if not np.issubdtype(arr.dtype, np.number):
        policy.bad(path, f"holds {arr.dtype} values, not numbers")
        return None
    return arr.astype(np.float64)


def _bold_track(arr: np.ndarray, pid: int, lo: int, hi: int) -> np.ndarray | None:
    """The person's keypoints (T, 18, 3) over frames lo..hi, NaN in frames without a detection."""
    person = arr[:, 1] == pid
    for frames in (arr[:, 0] - arr[0, 0], arr[:, 0]):       # relative first, then absolute
        sel = person & (frames >= lo) & (frames <= hi)
        if sel.any():
            fr = frames[sel].astype(np.int64)
            track = np.full((int(fr.max() - fr.min()) + 1, 18, 3), np.nan)
            track[fr - fr.min()] = arr[sel, 2:].reshape(-1, 18, 3)
            return track
    return None
