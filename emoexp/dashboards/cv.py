"""``cv.html``: each cross-validation (``emoexp cv``): the folds' test scores as bars with the
mean and the band of one (sample) standard deviation, per test subject where the scheme has
subjects (the parent's ``cv_subjects.csv``), the deep model against the classical baseline
where the CV ran it (``--baseline``), and the folds in a table.

A CV's folds are found by its identity tag (``emoexp.cv_key``), not by nesting: a fold reused
from an earlier invocation (``mlflow run`` makes a parent per step) still counts.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from emoexp import tracking as T
from emoexp.checkpoints import fetch_text
from emoexp.dashboards._common import (
    Code,
    Page,
    RunView,
    Snapshot,
    as_float,
    empty,
    esc,
    figure_html,
    table,
)

log = logging.getLogger(__name__)

FILENAME = "cv.html"
TITLE = "Cross-validation"
TAG_CV_KEY = "emoexp.cv_key"     # emoexp.cv.TAG_CV_KEY (not imported: cv pulls in the engine)
METRICS = (T.M_TEST_F1, T.M_TEST_ACC)
DEEP, BASELINE = "#1f77b4", "#ff7f0e"


@dataclass
class CV:
    parent: RunView
    deep: dict[int, RunView] = field(default_factory=dict)        # fold -> its FINISHED run
    baseline: dict[int, RunView] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return self.parent.tags.get(T.TAG_CV_SCHEME, "?")

    @property
    def task(self) -> str:
        return self.parent.task or "?"

    @property
    def folds(self) -> list[int]:
        return sorted(set(self.deep) | set(self.baseline))


def cross_validations(snap: Snapshot) -> list[CV]:
    """CV parents, newest first, each with its folds' newest FINISHED deep and baseline runs."""
    by_key: dict[str, list[RunView]] = {}
    for r in snap.runs:
        if T.TAG_FOLD in r.tags and r.status == "FINISHED":
            by_key.setdefault(r.tags.get(TAG_CV_KEY) or r.tags.get(T.MLFLOW_PARENT_RUN, ""), []).append(r)
    out = []
    for p in (r for r in snap.runs if r.is_cv_parent):
        cv = CV(p)
        kids = by_key.get(p.tags.get(TAG_CV_KEY, ""), []) + [
            r for r in by_key.get(p.run_id, []) if TAG_CV_KEY not in r.tags]
        for r in sorted(kids, key=lambda r: r.start_time):
            fold = as_float(r.tags.get(T.TAG_FOLD))
            if fold is None:
                continue
            kind = cv.baseline if r.tags.get(T.TAG_MODEL_KIND) == T.MODEL_KIND_BASELINE else cv.deep
            kind[int(fold)] = r
        out.append(cv)
    return sorted(out, key=lambda c: c.parent.start_time, reverse=True)


def build(snap: Snapshot) -> Page:
    desc = ("For each cross-validation: the test scores per fold and per test subject as bars, the mean "
            "and one standard deviation (ddof=1) as a line and a band, the deep model against the "
            "classical baseline where it ran, and the folds in a table.")
    found = cross_validations(snap)
    if not found:
        return Page(FILENAME, TITLE, desc, "no cross-validations",
                    empty("No cross-validations yet. Start one with: emoexp cv <task> --folds loso "
                          "(one parent run, a nested run per fold)."))
    parts: list[str] = []
    n_fig = 0
    for cv in found:
        p = cv.parent
        parts.append(f"<h2>{esc(cv.task)} · {esc(cv.scheme)} <span class='muted'>({len(cv.deep)} folds"
                     f"{', with baseline' if cv.baseline else ''})</span></h2>")
        parts.append(f"<p class='note'>Parent run {esc(snap.label(p))} (<code>{esc(p.run_id)}</code>), "
                     f"{esc(p.status)}, started {esc(p.started)}. " + _summary(cv) + "</p>")
        if not cv.folds:
            parts.append(empty("No fold has finished yet."))
            continue
        for metric in METRICS:
            fig = fold_figure(cv, metric)
            if fig is not None:
                parts.append(figure_html(fig, f"cv-folds-{metric}-{p.run_id}"))
                n_fig += 1
        subjects = subject_rows(snap, p)
        if subjects:
            fig = subject_figure(cv, subjects)
            if fig is not None:
                parts.append(figure_html(fig, f"cv-subjects-{p.run_id}"))
                n_fig += 1
        parts.append(_folds_table(snap, cv))
    n_runs = sum(len(c.deep) + len(c.baseline) for c in found)
    count = f"{len(found)} cross-validation{'s' if len(found) != 1 else ''}, {n_runs} fold runs"
    return Page(FILENAME, TITLE, desc, count, "\n".join(parts), n_fig)


def _summary(cv: CV) -> str:
    out = []
    for kind, runs in (("deep", cv.deep), ("baseline", cv.baseline)):
        vals = _values(runs, T.M_TEST_F1)
        if vals:
            mean, std = mean_std(vals)
            out.append(f"{kind} {T.M_TEST_F1} <b>{mean:.4f}</b> ± {std:.4f}")
    return "; ".join(out) + "." if out else ""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1, as the parent's ``_std`` metrics; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def _values(runs: dict[int, RunView], metric: str) -> list[float]:
    return [v for v in (runs[k].metrics.get(metric) for k in sorted(runs)) if v is not None and math.isfinite(v)]


def _bars(fig, x: list, y: list, name: str, color: str, offset: int) -> None:
    """Bars of one kind, its mean as a dashed line and mean ± std as a band."""
    import plotly.graph_objects as go

    fig.add_trace(go.Bar(x=x, y=y, name=name, marker_color=color, offsetgroup=str(offset),
                         hovertemplate="%{x}: %{y:.4f}<extra>" + name + "</extra>"))
    vals = [v for v in y if v is not None]
    if not vals:
        return
    mean, std = mean_std(vals)
    fig.add_hrect(y0=mean - std, y1=mean + std, fillcolor=color, opacity=0.12, line_width=0, layer="below")
    fig.add_hline(y=mean, line_dash="dash", line_color=color,
                  annotation_text=f"{name} mean {mean:.3f} ± {std:.3f}",
                  annotation_position="top left" if offset == 0 else "bottom left")


def fold_figure(cv: CV, metric: str):
    """``metric`` per fold: deep (and baseline) bars, means and ± std bands."""
    import plotly.graph_objects as go

    folds = cv.folds
    kinds = [(k, runs, c) for k, runs, c in (("deep", cv.deep, DEEP), ("baseline", cv.baseline, BASELINE)) if runs]
    if not any(_values(runs, metric) for _, runs, _ in kinds):
        return None
    fig = go.Figure()
    x = [f"fold {k}" for k in folds]
    for i, (name, runs, color) in enumerate(kinds):
        y = [runs[k].metrics.get(metric) if k in runs else None for k in folds]
        _bars(fig, x, y, name, color, i)
    fig.update_layout(title=f"{cv.task} {cv.scheme}: {metric} per fold", barmode="group", height=380,
                      margin={"t": 60}, yaxis={"title": {"text": metric}})
    return fig


def subject_rows(snap: Snapshot, parent: RunView) -> list[dict[str, str]]:
    """The parent's ``cv_subjects.csv`` (empty when it has none or the store cannot say)."""
    try:
        return list(csv.DictReader(io.StringIO(fetch_text(snap.client, parent.run_id, T.ART_CV_SUBJECTS))))
    except Exception as e:   # no such artifact yet (an unfinished CV), or no store at hand
        log.debug("no %s for %s: %s", T.ART_CV_SUBJECTS, parent.run_id, e)
        return []


def subject_figure(cv: CV, rows: list[dict[str, str]]):
    """test macro-F1 per test subject (pooled over the folds that test it), deep and baseline."""
    import plotly.graph_objects as go

    x = [r["subject"] for r in rows]
    kinds = [("deep", T.M_TEST_F1, DEEP), ("baseline", f"baseline.{T.M_TEST_F1}", BASELINE)]
    fig = go.Figure()
    drawn = 0
    for i, (name, col, color) in enumerate(kinds):
        y = [as_float(r.get(col)) for r in rows]
        if any(v is not None for v in y):
            _bars(fig, x, y, name, color, i)
            drawn += 1
    if not drawn:
        return None
    fig.update_layout(title=f"{cv.task} {cv.scheme}: {T.M_TEST_F1} per test subject", barmode="group",
                      height=380, margin={"t": 60}, yaxis={"title": {"text": T.M_TEST_F1}},
                      xaxis={"title": {"text": "subject"}, "type": "category"})
    return fig


def _folds_table(snap: Snapshot, cv: CV) -> str:
    rows = []
    for k in cv.folds:
        d, b = cv.deep.get(k), cv.baseline.get(k)
        rows.append([k, snap.label(d) if d else None, Code(d.run_id) if d else None,
                     *((d.metrics.get(m) if d else None) for m in (*METRICS, T.M_BEST_VAL_F1)),
                     *((b.metrics.get(m) if b else None) for m in METRICS)])
    headers = ["fold", "run", "run id", *METRICS, T.M_BEST_VAL_F1, *(f"baseline {m}" for m in METRICS)]
    return table(headers, rows)
