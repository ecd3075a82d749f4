"""Plotly dashboards of the runs in MLflow, written as static HTML (no server, no CDN).

One module per page, each with ``build(snapshot) -> Page``: ``runs`` (comparison table and
parallel coordinates), ``curves`` (learning curves), ``class_f1`` (per-class F1 vs sampling
weights), ``lineage`` (trees of resumed runs), ``sweeps`` (Optuna studies) and ``cv``
(cross-validations: folds and subjects, deep against baseline). The pages share
one local ``plotly.min.js`` in the output folder, so the folder opens offline and can be copied
or attached to a run as it is.

Example::

    from emoexp.dashboards import build_dashboards

    index = build_dashboards(experiment="emoexp-pipeline", out_dir="dashboards")
    print(index)   # dashboards/index.html: open it in a browser
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from emoexp.dashboards import class_f1, curves, cv, lineage, runs, sweeps
from emoexp.dashboards._common import (
    PLOTLY_JS,
    Link,
    Page,
    Snapshot,
    esc,
    load_snapshot,
    render,
    table,
)
from emoexp.data.io import atomic_write_text

__all__ = ["PAGES", "build_dashboards"]

log = logging.getLogger(__name__)

PAGES = (runs, curves, class_f1, lineage, sweeps, cv)   # in the order of the index and the nav bar
INDEX = "index.html"
OWNER = "emoexp-dashboards.json"   # whose pages a folder holds: {"experiment": name, "" for every one}


def build_dashboards(
    *,
    experiment: str | None = None,
    out_dir: str = "dashboards",
    metric: str = "val_macro_f1",
    optuna_storage: str | None = None,
    max_runs: int = 500,
    overwrite: bool = False,
) -> Path:
    """Write the dashboards of the current MLflow tracking URI into ``out_dir``; returns the
    path of ``index.html``.

    A folder holds the pages of one experiment (or of every one): ``out_dir`` with another's
    pages, or pages emoexp did not mark as its own, is a ValueError unless ``overwrite``.

    ``experiment``: one experiment by name (default: every active one). ``metric``: what the
    run comparison colours by and the learning curves draw beside the losses. ``optuna_storage``:
    where the sweeps' studies live, for Optuna's own plots (default: ``./optuna.db`` when it
    exists). ``max_runs``: the newest runs read, at most. An unknown experiment is a ValueError.
    """
    from plotly.offline import get_plotlyjs

    if max_runs < 1:
        raise ValueError("max_runs must be >= 1")
    out = Path(out_dir)
    claim_folder(out, experiment or "", overwrite)
    snap = load_snapshot(experiment=experiment or None, metric=metric, optuna_storage=optuna_storage or None,
                         max_runs=max_runs)
    out.mkdir(parents=True, exist_ok=True)
    js = out / PLOTLY_JS
    script = get_plotlyjs()
    # Rewritten only when it differs (a plotly upgrade), so a rebuild leaves the 4 MB file alone.
    if not js.is_file() or js.stat().st_size != len(script.encode()) or js.read_text(encoding="utf-8") != script:
        atomic_write_text(js, script)
    pages = [mod.build(snap) for mod in PAGES]
    nav = [(INDEX, "Index"), *((p.filename, p.title) for p in pages)]
    for page in pages:
        atomic_write_text(out / page.filename, render(page, nav))
        log.info("wrote %s (%s)", out / page.filename, page.count)
    index = out / INDEX
    atomic_write_text(index, render(_index_page(snap, pages), nav))
    atomic_write_text(out / OWNER, json.dumps({"experiment": experiment or "", "tracking_uri": snap.tracking_uri,
                                               "built": f"{datetime.now():%Y-%m-%d %H:%M:%S}"}, indent=1))
    return index


def claim_folder(out: Path, experiment: str, overwrite: bool = False) -> None:
    """Refuse (ValueError) to write ``experiment``'s pages over another experiment's in ``out``
    (``""``: every experiment's), or over pages of unknown origin, unless ``overwrite``."""
    marker = out / OWNER
    if marker.is_file():
        try:
            theirs = json.loads(marker.read_text(encoding="utf-8")).get("experiment")
        except (ValueError, OSError, AttributeError):
            theirs = None
    elif (out / INDEX).is_file():
        theirs = None   # written by hand, or before folders were marked
    else:
        return
    if overwrite or theirs == experiment:
        return
    whose = (f"experiment {theirs!r}'s pages" if theirs else "the pages of every experiment" if theirs == ""
             else "pages emoexp did not mark as its own")
    raise ValueError(f"{out} holds {whose}; write {'experiment ' + repr(experiment) if experiment else 'these'} "
                     f"to another folder (--out {out / (experiment or 'all')}) or pass --overwrite to replace them")


def _index_page(snap: Snapshot, pages: list[Page]) -> Page:
    exps = ", ".join(snap.experiments) if snap.experiments else "none"
    n = len(snap.runs)
    lines = [
        table(["page", "what it shows", "counted"],
              [[Link(p.filename, p.title), p.description, p.count] for p in pages], cls="index"),
        f"<p class='note'>Tracking store <code>{esc(snap.tracking_uri)}</code>; experiment(s): {esc(exps)}; "
        f"{n} run{'s' if n != 1 else ''} read"
        + (f" (the newest {n}; pass max_runs for more)" if snap.truncated else "")
        + f"; chosen metric <b>{esc(snap.metric)}</b>. Built {datetime.now():%Y-%m-%d %H:%M}.</p>",
    ]
    if not snap.training_runs:
        lines.insert(0, "<p class='empty'>No training runs in this store yet: every page says so. "
                        "Train one with <code>emoexp train pretrain_faced</code> or <code>make demo</code>.</p>")
    return Page(INDEX, "emoexp dashboards", "Runs, learning curves, reweighting, lineage and sweeps "
                "from MLflow, as static plotly pages.", f"{n} runs", "\n".join(lines))

