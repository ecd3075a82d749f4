"""Face-image datasets: FER2013 and AffectNet, in the layouts they are downloaded in.

Recognised layouts (DATASETS.md sections 5 and 6), looked for in ``data_dir`` and one folder
down (Kaggle zips unpack into a wrapper such as ``archive (3)/``)::

    fer2013.csv                          emotion,pixels,Usage  (48x48 grey, 2304 ints per row)
    train/<class>/Training_<id>.jpg      Kaggle msambare/fer2013 (also test/.../PublicTest_*.jpg)
    Train|Test/<class>/imageNNNNNNN.jpg  Kaggle AffectNet mirrors, [+ labels.csv  ,pth,label,relFCs]
    <name>.csv with subDirectory_filePath,face_x,..,expression  the official AffectNet lists

Labels are mapped by class *name*, never by folder or code order: the FER2013 CSV codes
(0 Angry .. 6 Neutral), the AffectNet codes (0 Neutral .. 7 Contempt) and the folder names
(``angry``/``anger``, ``sad``/``sadness``, ...) all go to the canonical names of
:data:`FACE_CLASSES_6` / :data:`FACE_CLASSES_7`. Contempt is always dropped (neither class list
has it); disgust is dropped with ``classes=6``; AffectNet codes 8-10 (none, uncertain, no face)
are dropped. What was dropped is counted in :attr:`FaceImages.dropped` and logged.

Splits, as each source defines them: FER2013 ``Usage`` Training -> ``train``, PublicTest ->
``val``, PrivateTest -> ``test``. The FER2013 folders keep that mapping through the file names:
``train/`` -> ``train``, ``test/PublicTest_*`` -> ``val``, ``test/PrivateTest_*`` (and any other
name under ``test/``) -> ``test``, so the CSV and the folder download split alike. AffectNet
``Train`` -> ``train``, ``Test`` -> ``test`` (``Val``/``Validation`` -> ``val``); the official
``training.csv`` / ``validation.csv`` -> ``train`` / ``val``. Class folders directly under the
root (no split folder) get split ``""``. A ``fer2013.csv`` wins over FER2013 image folders next to it (it has the val split), an
official AffectNet list over the Kaggle folders.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError

log = logging.getLogger(__name__)

FACE_CLASSES_6 = [
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "anger",
]  # the default, as in seed 001
FACE_CLASSES_7 = FACE_CLASSES_6 + ["disgust"]  # classes=7 (seed 003)

# every class name the readers know, canonical; contempt is known so that it can be dropped
KNOWN_CLASSES = FACE_CLASSES_7 + ["contempt"]
_NAME_ALIASES = {
    "angry": "anger",
    "anger": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "happy": "happy",
    "happiness": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "contempt": "contempt",
}
# FER2013 csv `emotion` codes and AffectNet `expression` codes, by name
FER2013_CODE_NAMES = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
AFFECTNET_CODE_NAMES = [
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
]
_AFFECTNET_INVALID = {8: "none", 9: "uncertain", 10: "no-face"}

NATIVE_SIZE = {"fer2013": 48, "affectnet": 96}
FER2013_PIXELS = 48 * 48
_USAGE_SPLIT = {"training": "train", "publictest": "val", "privatetest": "test"}
_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}
_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_FER_CSV_NAMES = ("fer2013.csv", "icml_face_data.csv")
_OFFICIAL_COLUMNS = ("subdirectory_filepath", "expression")
_OFFICIAL_SPLIT = {
    "training": "train",
    "train": "train",
    "validation": "val",
    "val": "val",
    "test": "test",
}


@dataclass
class FaceImages:
    """A face-image dataset in memory, all images one size.

    ``dropped`` counts what the class choice removed (``{"disgust": 547, "contempt": 0, ...}``);
    ``skipped`` lists the bad files passed over in skip mode; ``info`` says where it came from.
    """

    images: np.ndarray  # (N, H, W, 3) uint8 RGB; grey sources replicated to 3 channels
    labels: np.ndarray  # (N,) int64 index into class_names
    split: np.ndarray  # (N,) str "train" | "val" | "test" as the dataset defines it ("" none)
    paths: list[str]  # per image, where it came from (file path, or "fer2013.csv:row 17")
    class_names: list[str]
    source: str  # fer2013-csv | fer2013-folders | affectnet-folders | affectnet-labels-csv | affectnet-official-csv
    grayscale: bool  # the source is grey (FER2013)
    dropped: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: n}} for logging."""
        out: dict[str, dict[str, int]] = {}
        for sp in sorted(set(self.split.tolist())):
            lab = self.labels[self.split == sp]
            out[sp] = {c: int((lab == i).sum()) for i, c in enumerate(self.class_names)}
        return out


def canonical_class(name: str) -> str | None:
    """``"Angry"`` -> ``"anger"``, ``"sadness"`` -> ``"sad"``; None for a name no source uses."""
    return _NAME_ALIASES.get(name.strip().lower())


def _known_names() -> str:
    return ", ".join(sorted(_NAME_ALIASES))


# ------------------------------------------------------------------------------------------------
# one image


def _is_truncated_jpeg(data: np.ndarray) -> bool:
    """True if the JPEG bytes stop inside the last scan (no end-of-image marker after it).

    libjpeg fills a truncated image with grey and only warns, so cv2 would return it as good.
    A stuffed 0xFF inside entropy-coded data is always followed by 0x00, so the last SOS
    (FF DA) marker belongs to the last scan and a complete file has an EOI (FF D9) after it.
    """
    raw = data.tobytes()
    if not raw.startswith(b"\xff\xd8"):
        return False
    return raw.rfind(b"\xff\xd9") < raw.rfind(b"\xff\xda")


def _decode(path: str | os.PathLike) -> np.ndarray:
    """File -> (H, W, 3) uint8 RGB, or DataError(path, what is wrong)."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise DataError(path, "is empty (0 bytes)")
    if _is_truncated_jpeg(data):
        raise DataError(path, "is a truncated JPEG (the file ends inside the image data)")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DataError(
            path, "is not a readable image (OpenCV could not decode it; corrupt or not an image)"
        )
    if img.dtype != np.uint8:
        # 16-bit PNG/TIFF: keep the top 8 bits; float TIFF: assume 0..1
        img = (
            (img >> 8).astype(np.uint8)
            if img.dtype == np.uint16
            else np.clip(img * 255, 0, 255).astype(np.uint8)
        )
    # channel count as stored: grey, grey+alpha, BGR, BGRA -> RGB
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    c = img.shape[2]
    if c == 1:
        return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2RGB)
    if c == 2:
        return cv2.cvtColor(np.ascontiguousarray(img[..., 0]), cv2.COLOR_GRAY2RGB)
    if c == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if c == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise DataError(path, f"has {c} channels; expected 1 (grey), 3 (colour) or 4 (colour + alpha)")


def read_face_image(path: str | os.PathLike) -> np.ndarray:
    """One .jpg/.png -> (H, W, 3) uint8 RGB (grey replicated, alpha dropped).

    Raises DataError naming the file if it is missing, empty, undecodable or a truncated JPEG.
    """
    if not Path(path).is_file():
        raise DataError(path, "does not exist")
    return _decode(path)


def _is_grey(img: np.ndarray) -> bool:
    # a grey source decoded to RGB has three equal channels (JPEG colour would differ)
    return bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())


# ------------------------------------------------------------------------------------------------
# layout discovery


@dataclass
class _Item:
    """One image to read: a file (and an optional face box), or pixels already in memory."""

    path: str
    label: str  # canonical class name
    split: str
    box: tuple[int, int, int, int] | None = None  # x, y, w, h (official AffectNet)
    pixels: np.ndarray | None = None  # (H, W) uint8 (FER2013 csv)


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith((".", "__")))
    except OSError:
        return []


def _split_roots(folder: Path) -> dict[str, Path]:
    """{split: folder} of the split-named subfolders of ``folder`` (case-insensitive)."""
    out: dict[str, Path] = {}
    for p in _children(folder):
        sp = _SPLIT_NAMES.get(p.name.lower())
        if sp is not None and p.is_dir():
            if sp in out:
                raise DataError(p, f"a second {sp!r} split folder next to {out[sp].name!r}")
            out[sp] = p
    return out


def _has_class_folders(folder: Path) -> bool:
    return any(p.is_dir() and canonical_class(p.name) is not None for p in _children(folder))


def _find_image_root(data_dir: Path) -> tuple[Path, dict[str, Path]] | None:
    """(root, {split: split folder}) for ImageFolder-style data in data_dir or one folder down.

    Class folders directly in the root give ``{"": root}``.
    """
    candidates = [data_dir] + [p for p in _children(data_dir) if p.is_dir()]
    found = []
    for cand in candidates:
        roots = _split_roots(cand)
        if roots:
            found.append((cand, roots))
        elif _has_class_folders(cand):
            found.append((cand, {"": cand}))
        if found and cand == data_dir:
            return found[0]  # the top level wins over wrappers
    if len(found) > 1:
        raise DataError(
            data_dir,
            "holds several dataset folders ("
            + ", ".join(repr(str(r.relative_to(data_dir))) for r, _ in found)
            + "); point data_dir at one of them",
        )
    return found[0] if found else None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_EXTS and p.is_file())


def _fer_split_from_name(split: str, name: str) -> str:
    if split != "test":
        return split
    if name.startswith("PublicTest"):
        return "val"
    return "test"


def _folder_items(
    roots: dict[str, Path], policy: BadFilePolicy, dataset: str
) -> tuple[list[_Item], list[str]]:
    """Items of ``<split>/<class>/*.jpg``, labelled by folder name; also the empty class folders."""
    items: list[_Item] = []
    empty: list[str] = []
    for split, root in roots.items():
        for folder in _children(root):
            if not folder.is_dir():
                continue
            name = canonical_class(folder.name)
            if name is None:
                policy.bad(
                    folder,
                    f"unknown class folder {folder.name!r}; known class names: {_known_names()}",
                )
                continue
            files = _image_files(folder)
            if not files:
                log.warning("%s: empty class folder (no images)", folder)
                empty.append(str(folder))
            for p in files:
                sp = _fer_split_from_name(split, p.name) if dataset == "fer2013" else split
                items.append(_Item(str(p), name, sp))
    return items, empty


def _read_csv(path: Path, **kwargs):
    """pandas read_csv with header names stripped; DataError on a broken file."""
    import pandas as pd

    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            path, f"is not a readable CSV ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _require(df, path: Path, columns: tuple[str, ...], what: str) -> dict[str, str]:
    """{wanted lower-case name: actual column}; DataError listing the missing ones."""
    by_lower = {c.lower(): c for c in df.columns}
    missing = [c for c in columns if c.lower() not in by_lower]
    if missing:
        raise DataError(
            path,
            f"{what} lacks the column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, df.columns)) or 'none'}",
        )
    return by_lower


# ------------------------------------------------------------------------------------------------
# FER2013


def _find_fer_csv(data_dir: Path) -> Path | None:
    for folder in [data_dir] + [p for p in _children(data_dir) if p.is_dir()]:
        for name in _FER_CSV_NAMES:
            p = folder / name
            if p.is_file():
                return p
    if data_dir.is_file() and data_dir.suffix.lower() == ".csv":
        return data_dir
    return None


def _parse_pixels(s: str) -> np.ndarray | None:
    """'0 12 255 ...' -> (2304,) uint8, or None if it is not 2304 ints in 0..255."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            a = np.fromstring(s, dtype=np.int32, sep=" ")  # C parser, one call per row
    except (ValueError, DeprecationWarning):
        return None
    if a.size != FER2013_PIXELS or a.min() < 0 or a.max() > 255:
        return None
    return a.astype(np.uint8)


def _fer_csv_items(
    path: Path,
    policy: BadFilePolicy,
    keep: set[str],
    dropped: Counter,
    samples_per_class: int | None,
    seed: int,
) -> list[_Item]:
    """Rows of fer2013.csv -> items holding their pixels; the label/split filter runs first."""
    df = _read_csv(path, dtype=str, keep_default_na=False)
    cols = _require(df, path, ("emotion", "pixels"), "the FER2013 CSV")
    emotion, pixels = df[cols["emotion"]].to_numpy(), df[cols["pixels"]].to_numpy()
    usage = df[cols["usage"]].to_numpy() if "usage" in cols else np.full(len(df), "", dtype=object)
    rows: list[_Item] = []
    for i in range(len(df)):
        where = f"{path}:row {i + 1}"
        code = str(emotion[i]).strip()
        if not code.isdigit() or int(code) >= len(FER2013_CODE_NAMES):
            policy.bad(
                where,
                f"emotion {code!r} is not a FER2013 code 0-6 "
                f"({', '.join(f'{k} {n}' for k, n in enumerate(FER2013_CODE_NAMES))})",
            )
            continue
        u = str(usage[i]).strip()
        split = _USAGE_SPLIT.get(u.lower(), None) if u else ""
        if split is None:
            policy.bad(where, f"Usage {u!r} is not Training, PublicTest or PrivateTest")
            continue
        name = FER2013_CODE_NAMES[int(code)]
        if name not in keep:
            dropped[name] += 1
            continue
        rows.append(_Item(where, name, split, pixels=pixels[i]))
    rows = _subsample(rows, samples_per_class, seed)
    out = []
    for it in rows:
        px = _parse_pixels(it.pixels)
        if px is None:
            n = len(str(it.pixels).split())
            what = (
                f"holds {n} values"
                if n != FER2013_PIXELS
                else "holds values that are not ints 0-255"
            )
            policy.bad(
                it.path,
                f"pixels {what}; expected {FER2013_PIXELS} space-separated ints 0-255 (48 x 48)",
            )
            continue
        it.pixels = px.reshape(48, 48)
        out.append(it)
    return out


# ------------------------------------------------------------------------------------------------
# AffectNet


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [c.strip().strip('"').lower() for c in f.readline().split(",")]
    except OSError:
        return []


def _find_official_csvs(data_dir: Path) -> list[Path]:
    """CSV files (data_dir and two folders down) whose header has subDirectory_filePath, expression."""
    out = []
    for depth_glob in ("*.csv", "*/*.csv", "*/*/*.csv"):
        for p in sorted(data_dir.glob(depth_glob)):
            head = _csv_header(p)
            if all(c in head for c in _OFFICIAL_COLUMNS):
                out.append(p)
    return out


def _resolve_image_base(csv_path: Path, data_dir: Path, rel_paths: list[str]) -> Path:
    """The folder the official CSV's subDirectory_filePath values are relative to."""
    bases = [
        csv_path.parent,
        csv_path.parent / "Manually_Annotated_Images",
        csv_path.parent.parent / "Manually_Annotated_Images",
        data_dir,
        data_dir / "Manually_Annotated_Images",
    ]
    probe = [r for r in rel_paths[:50] if r]
    best, best_hits = csv_path.parent, -1
    for b in bases:
        hits = sum((b / r).is_file() for r in probe)
        if hits > best_hits:
            best, best_hits = b, hits
    return best


def _official_items(
    paths: list[Path], data_dir: Path, policy: BadFilePolicy, keep: set[str], dropped: Counter
) -> list[_Item]:
    import pandas as pd

    items: list[_Item] = []
    for path in paths:
        df = _read_csv(path)
        cols = _require(df, path, ("subDirectory_filePath", "expression"), "the AffectNet list")
        rel = df[cols["subdirectory_filepath"]].astype(str).str.strip().tolist()
        expr = pd.to_numeric(df[cols["expression"]], errors="coerce").to_numpy()
        has_box = all(c in cols for c in ("face_x", "face_y", "face_width", "face_height"))
        if has_box:
            box = np.stack(
                [
                    pd.to_numeric(df[cols[c]], errors="coerce").to_numpy()
                    for c in ("face_x", "face_y", "face_width", "face_height")
                ],
                axis=1,
            )
        base = _resolve_image_base(path, data_dir, rel)
        split = _OFFICIAL_SPLIT.get(path.stem.lower(), "")
        for i, r in enumerate(rel):
            where = f"{path}:row {i + 1}"
            code = expr[i]
            if not np.isfinite(code) or code != int(code) or not 0 <= code <= 10:
                policy.bad(
                    where,
                    f"expression {df[cols['expression']].iloc[i]!r} is not an AffectNet code 0-10",
                )
                continue
            code = int(code)
            if code in _AFFECTNET_INVALID:
                dropped[f"code {code} ({_AFFECTNET_INVALID[code]})"] += 1
                continue
            name = AFFECTNET_CODE_NAMES[code]
            if name not in keep:
                dropped[name] += 1
                continue
            f = base / r
            if not f.is_file():
                policy.bad(where, f"image {r!r} not found (looked in {base})")
                continue
            b = None
            if has_box and np.isfinite(box[i]).all() and box[i, 2] > 0 and box[i, 3] > 0:
                b = tuple(int(x) for x in box[i])
            items.append(_Item(str(f), name, split, box=b))
    return items


def _find_labels_csv(root: Path, roots: dict[str, Path], data_dir: Path) -> Path | None:
    for folder in [root, data_dir, *roots.values()]:
        for p in _children(folder):
            if p.name.lower() == "labels.csv" and p.is_file():
                return p
    return None


def _labels_csv_items(
    path: Path,
    roots: dict[str, Path],
    folder_items: list[_Item],
    policy: BadFilePolicy,
    keep: set[str],
    dropped: Counter,
    info: dict[str, Any],
) -> list[_Item]:
    """Items of the Kaggle ``labels.csv`` (``pth,label,relFCs``): its label wins over the folder."""
    df = _read_csv(path, dtype=str, keep_default_na=False)
    cols = _require(df, path, ("pth", "label"), "labels.csv")
    by_file = {os.path.normcase(os.path.abspath(it.path)): it for it in folder_items}
    # a pth is relative to the labels.csv folder, a split root, or a class folder
    bases = [path.parent, *roots.values()]
    items: list[_Item] = []
    used: set[str] = set()
    disagree = 0
    for i, (pth, label) in enumerate(zip(df[cols["pth"]].tolist(), df[cols["label"]].tolist())):
        where = f"{path}:row {i + 1}"
        name = canonical_class(label)
        if name is None:
            policy.bad(where, f"unknown class name {label!r}; known class names: {_known_names()}")
            continue
        rel = pth.strip().replace("\\", "/")
        cands = [os.path.normcase(os.path.abspath(b / rel)) for b in bases]
        cands += [os.path.normcase(os.path.abspath(r / name / rel)) for r in roots.values()]
        hits = list(dict.fromkeys(c for c in cands if c in by_file))
        if not hits:
            policy.bad(where, f"pth {pth!r} points at no image under {path.parent}")
            continue
        if len(hits) > 1:
            policy.bad(
                where, f"pth {pth!r} matches several images ({', '.join(hits)}); cannot tell which"
            )
            continue
        it = by_file[hits[0]]
        used.add(hits[0])
        if name != it.label:
            disagree += 1
        if name not in keep:
            dropped[name] += 1
            continue
        items.append(_Item(it.path, name, it.split))
    info["labels_csv"] = str(path)
    info["labels_csv_disagrees_with_folder"] = disagree
    info["images_not_in_labels_csv"] = len(by_file) - len(used)
    if disagree:
        log.warning(
            "%s: %d labels differ from their image's folder; the CSV label is used", path, disagree
        )
    return items


# ------------------------------------------------------------------------------------------------
# reading, sizing, the public loader


def _subsample(items: list[_Item], n: int | None, seed: int) -> list[_Item]:
    """At most n items per (split, class), drawn with ``seed``; order otherwise kept."""
    if n is None:
        return items
    groups: dict[tuple[str, str], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.split, it.label), []).append(i)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for key in sorted(groups):
        idx = groups[key]
        keep += idx if len(idx) <= n else rng.choice(idx, size=int(n), replace=False).tolist()
    return [items[i] for i in sorted(keep)]


def _crop(img: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Crop to the face box when the image is larger than it (the box clamped to the image)."""
    if box is None:
        return img
    x, y, w, h = box
    H, W = img.shape[:2]
    if H <= h and W <= w:
        return img  # already the face crop
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(W, x + w), min(H, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return img
    return img[y0:y1, x0:x1]


def _resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    if img.shape[:2] == hw:
        return img
    return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def _read_all(
    items: list[_Item],
    policy: BadFilePolicy,
    size: tuple[int, int] | None,
    progress: bool,
    desc: str,
    to_grey: bool,
    stats: dict[str, Any],
) -> tuple[np.ndarray, list[int], bool]:
    """Decode items into one (N, H, W, 3) uint8 array; returns (images, kept item indices, all grey).

    ``to_grey`` turns colour images grey (a grey dataset); conversions are counted in ``stats``.

    Without ``size`` images are kept at their own size while they agree; those that differ wait
    aside and at the end everything is resized to the most common size, so no image is resized
    twice.
    """
    import cv2
    from tqdm import tqdm

    n = len(items)
    arr: np.ndarray | None = None
    shape0: tuple[int, int] | None = size
    odd: dict[int, np.ndarray] = {}  # row -> image of another size
    sizes: Counter = Counter()
    kept: list[int] = []
    grey = True
    file_items = sum(it.pixels is None for it in items)
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress or file_items == 0, leave=False)
    try:
        for i, it in enumerate(items):
            bar.update(1)
            if it.pixels is not None:
                img = np.repeat(it.pixels[..., None], 3, axis=2)  # (48, 48) -> (48, 48, 3)
            else:
                try:
                    img = _crop(_decode(it.path), it.box)
                except DataError as exc:
                    policy.bad(exc.path, exc.problem)
                    continue
                if to_grey:
                    if not _is_grey(img):
                        # a colour file in a grey dataset: made grey like the rest
                        img = cv2.cvtColor(
                            cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB
                        )
                        stats["converted_to_grey"] = stats.get("converted_to_grey", 0) + 1
                elif grey:
                    grey = _is_grey(img)
            hw = img.shape[:2]
            sizes[hw] += 1
            if shape0 is None:
                shape0 = hw
            if arr is None:
                arr = np.empty((n, *shape0, 3), np.uint8)
            row = len(kept)
            if size is not None:
                arr[row] = _resize(img, size)
            elif hw == shape0:
                arr[row] = img
            else:
                odd[row] = img
            kept.append(i)
    finally:
        bar.close()
    if arr is None:
        return np.empty((0, *(size or (0, 0)), 3), np.uint8), kept, grey
    arr = arr[: len(kept)]
    if odd:
        target = sizes.most_common(1)[0][0]
        log.info("images come in %d sizes; resizing all to %dx%d", len(sizes), target[1], target[0])
        if target != shape0:
            new = np.empty((len(kept), *target, 3), np.uint8)
            for row in range(len(kept)):
                if row not in odd:
                    new[row] = _resize(arr[row], target)
            arr = new
        for row, img in odd.items():
            arr[row] = _resize(img, target)
    return arr, kept, grey


def load_face_dataset(
    data_dir: str | os.PathLike,
    dataset: str,
    *,
    classes: int = 6,
    policy: BadFilePolicy | None = None,
    image_size: int | None = None,
    samples_per_class: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FaceImages:
    """Load FER2013 or AffectNet from ``data_dir`` in whichever layout it holds.

    classes: 6 (:data:`FACE_CLASSES_6`, disgust dropped) or 7 (:data:`FACE_CLASSES_7`).
    image_size: resize every image to this square size (cv2.INTER_AREA). Default: as stored
    (48 for FER2013, 96 for the AffectNet mirrors); mixed sizes go to the most common one, the
    official AffectNet face crops to 96.
    samples_per_class: keep at most this many per class in each split, drawn with ``seed``.
    policy: ``BadFilePolicy("skip")`` skips bad files/rows (listed in ``.skipped``) instead of
    raising DataError.

    >>> ds = load_face_dataset("data/fer2013", "fer2013", classes=7)   # doctest: +SKIP
    >>> ds.images.shape, ds.class_names[ds.labels[0]], ds.split[0]      # doctest: +SKIP
    ((35887, 48, 48, 3), 'anger', 'train')
    """
    dataset = dataset.strip().lower()
    if dataset not in NATIVE_SIZE:
        raise ValueError(f"dataset must be 'fer2013' or 'affectnet', not {dataset!r}")
    if classes not in (6, 7):
        raise ValueError(f"classes must be 6 or 7, not {classes!r}")
    if image_size is not None and int(image_size) < 8:
        raise ValueError(f"image_size must be at least 8 pixels, not {image_size!r}")
    class_names = list(FACE_CLASSES_7 if classes == 7 else FACE_CLASSES_6)
    keep = set(class_names)
    policy = policy or BadFilePolicy()
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise MissingDatasetError(data_dir, dataset)
    dropped: Counter = Counter({c: 0 for c in KNOWN_CLASSES if c not in keep})
    info: dict[str, Any] = {"dataset": dataset, "data_dir": str(data_dir)}
    items: list[_Item] | None = None
    source = ""
    if dataset == "fer2013":
        csv_path = _find_fer_csv(data_dir)
        if csv_path is not None:
            source = "fer2013-csv"
            info["csv"] = str(csv_path)
            items = _fer_csv_items(csv_path, policy, keep, dropped, samples_per_class, seed)
            samples_per_class = None  # applied before parsing the pixels
    else:
        official = _find_official_csvs(data_dir) if data_dir.is_dir() else []
        if official:
            source = "affectnet-official-csv"
            info["csv"] = [str(p) for p in official]
            items = _official_items(official, data_dir, policy, keep, dropped)
            if image_size is None:
                image_size = NATIVE_SIZE["affectnet"]  # face crops come in every size
    if items is None and data_dir.is_dir():
        found = _find_image_root(data_dir)
        if found is not None:
            root, roots = found
            info["root"] = str(root)
            info["split_folders"] = {k: str(v) for k, v in roots.items()}
            all_items, empty = _folder_items(roots, policy, dataset)
            if empty:
                info["empty_class_folders"] = empty
            labels_csv = _find_labels_csv(root, roots, data_dir) if dataset == "affectnet" else None
            if labels_csv is not None:
                source = "affectnet-labels-csv"
                items = _labels_csv_items(labels_csv, roots, all_items, policy, keep, dropped, info)
            else:
                source = f"{dataset}-folders"
                items = []
                for it in all_items:
                    if it.label in keep:
                        items.append(it)
                    else:
                        dropped[it.label] += 1
    if items is None:
        what = (
            "holds no fer2013.csv and no train/ or test/ class folders"
            if dataset == "fer2013"
            else "holds no Train/ or Test/ class folders and no AffectNet list CSV"
        )
        raise MissingDatasetError(data_dir, dataset, what)

    items = _subsample(items, samples_per_class, seed)
    size = (int(image_size), int(image_size)) if image_size is not None else None
    images, kept, grey = _read_all(
        items, policy, size, progress, f"{dataset} images", to_grey=dataset == "fer2013", stats=info
    )
    if not kept:
        if sum(dropped.values()) and not policy.skipped:
            raise DataError(
                data_dir,
                f"no images left after dropping {dict(dropped)} "
                f"(classes={classes} keeps {', '.join(class_names)})",
            )
        raise MissingDatasetError(data_dir, dataset, f"holds no readable images ({source} layout)")
    items = [items[i] for i in kept]
    index = {c: k for k, c in enumerate(class_names)}
    out = FaceImages(
        images=images,
        labels=np.array([index[it.label] for it in items], dtype=np.int64),
        split=np.array([it.split for it in items], dtype=str),
        paths=[it.path for it in items],
        class_names=class_names,
        source=source,
        grayscale=dataset == "fer2013" or grey,
        dropped=dict(dropped),
        skipped=list(policy.skipped),
        info=info,
    )
    log.info(
        "%s (%s): %d images %s; dropped %s; skipped %d bad",
        dataset,
        source,
        len(out),
        out.counts(),
        out.dropped,
        len(out.skipped),
    )
    return out
