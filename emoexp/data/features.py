"""Feature tables (seed 001's "custom features" for classifier heads): one row of features per
sample (``features.csv``/``.parquet`` with a ``sample_id`` column, or ``features.npy`` with
``features.ids.txt``) and ``labels.json`` ``{sample_id: {head: code}}`` (+ ``heads.json``, the
class names per head). ``emoexp data synth features`` writes one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from emoexp.data.base import DataError

log = logging.getLogger(__name__)


def load_feature_table(
    data_dir: str | os.PathLike = "", *, features: str | os.PathLike = "", labels: str | os.PathLike = "",
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, list[str]], list[str]]:
    """(X (N, F) float32, labels {head: (N,)}, heads {head: class names}, sample ids) from the
    feature table and labels.json (+ heads.json); only ids present in both are kept (counted).

    The table is ``features`` or ``data_dir/features.{csv,parquet,npy}``; the labels ``labels``
    or ``labels.json`` in ``data_dir`` (else beside the table).
    """
    import pandas as pd

    root = Path(data_dir) if data_dir else None
    feat = Path(features) if features else None
    if feat is None:
        if root is None:
            raise ValueError("give data_dir (holding features.csv and labels.json) or features= and labels=")
        feat = next((root / f"features{ext}" for ext in (".csv", ".parquet", ".npy")
                     if (root / f"features{ext}").is_file()), None)
        if feat is None:
            raise DataError(root, "holds no features.csv, features.parquet or features.npy")
    lab = Path(labels) if labels else (root or feat.parent) / "labels.json"
    for p in (feat, lab):
        if not p.is_file():
            raise DataError(p, "no such file")
    try:
        if feat.suffix == ".npy":
            x = np.load(feat, allow_pickle=False)
            id_file = feat.with_suffix(".ids.txt")
            ids = id_file.read_text().split() if id_file.is_file() else [str(i) for i in range(len(x))]
        else:
            df = pd.read_parquet(feat) if feat.suffix == ".parquet" else pd.read_csv(feat)
            if "sample_id" not in df.columns:
                raise DataError(feat, f"no sample_id column (columns: {', '.join(map(str, df.columns[:8]))}...)")
            ids = df.pop("sample_id").astype(str).tolist()
            x = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    except DataError:
        raise
    except Exception as e:  # unreadable table
        raise DataError(feat, f"cannot read the feature table ({type(e).__name__}: {e})") from None
    if x.ndim != 2 or len(x) != len(ids):
        raise DataError(feat, f"expected one row of features per sample, got shape {x.shape} for {len(ids)} ids")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x).all(axis=1)))
        raise DataError(feat, f"{bad} rows hold NaN, inf or non-numeric values")
    try:
        entries = json.loads(lab.read_text())
    except (OSError, ValueError) as e:
        raise DataError(lab, f"not valid JSON ({e})") from None
    if not isinstance(entries, dict) or not entries:
        raise DataError(lab, "expected {sample_id: {head: code}}")
    head_names = list(next(iter(entries.values())))
    heads_file = lab.with_name("heads.json")
    if heads_file.is_file():
        heads = {h: list(c) for h, c in json.loads(heads_file.read_text()).items()}
    else:
        heads = {h: [str(k) for k in range(1 + max(int(e[h]) for e in entries.values()))] for h in head_names}
    row = {sid: k for k, sid in enumerate(ids)}
    keep, y = [], {h: [] for h in heads}
    for sid, e in entries.items():
        if sid not in row:
            continue
        for h in heads:
            code = e.get(h) if isinstance(e, dict) else None
            if not isinstance(code, int) or not 0 <= code < len(heads[h]):
                raise DataError(lab, f"{sid}: {h}={code!r} is not a code 0..{len(heads[h]) - 1}")
            y[h].append(code)
        keep.append(row[sid])
    if not keep:
        raise DataError(lab, f"no sample id is also in {feat.name}")
    missing = len(entries) - len(keep)
    if missing:
        log.warning("%s: %d labelled ids have no feature row (ignored)", lab, missing)
    keep_a = np.asarray(keep)
    return x[keep_a], {h: np.asarray(v, dtype=np.int64) for h, v in y.items()}, heads, [ids[k] for k in keep]
