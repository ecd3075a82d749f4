"""``runs.html``: every run in a table, and its options against the chosen metric in a
parallel-coordinates plot, one per task (tasks have different options)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from emoexp import tracking as T
from emoexp.dashboards._common import (
    Code,
    Page,
    RunView,
    Snapshot,
    as_float,
    compared_params,
    empty,
    esc,
    figure_html,
    fmt_param,
    group_by_task,
    table,
    varying,
    weights_text,
)

FILENAME = "runs.html"
TITLE = "Run comparison"
MAX_AXES = 14   # past this a parallel-coordinates plot is unreadable; the table has the rest
MIN_AXES = 4    # when no option varies, still show the first key ones (one line per run)


def build(snap: Snapshot) -> Page:
    runs = snap.training_runs
    desc = (f"Every run with its options, best {T.M_VAL_F1} and {T.M_TEST_ACC}; per task, its options "
            f"against {snap.metric} as parallel coordinates (drag along an axis to filter).")
    if not runs:
        return Page(FILENAME, TITLE, desc, "no runs", empty("No training runs in this store yet."))
    parts: list[str] = []
    n_fig = 0
    by_task = group_by_task(runs)
    for task, task_runs in by_task.items():
        task_runs = sorted(task_runs, key=lambda r: r.start_time, reverse=True)
        params = compared_params(task_runs)
        parts.append(f"<h2>{esc(task)} <span class='muted'>({len(task_runs)} runs)</span></h2>")
        axes = varying(task_runs, params) or params[:MIN_AXES]
        fig, note = parallel_figure(snap, task, task_runs, axes[:MAX_AXES])
        if fig is not None:
            parts.append(figure_html(fig, f"parcoords-{task}"))
            n_fig += 1
        if note:
            parts.append(f"<p class='note'>{esc(note)}</p>")
        parts.append(_runs_table(snap, task_runs, params))
    count = f"{len(runs)} runs of {len(by_task)} task{'s' if len(by_task) != 1 else ''}"
    return Page(FILENAME, TITLE, desc, count, "\n".join(parts), n_fig)


def _runs_table(snap: Snapshot, runs: Sequence[RunView], params: Sequence[str]) -> str:
    extra = [snap.metric] if snap.metric not in (T.M_VAL_F1, T.M_BEST_VAL_F1, T.M_TEST_ACC) else []
    headers = ["run", "run id", "status", "started", *params, "sampling weights",
               T.M_BEST_VAL_F1, T.M_TEST_ACC, *extra]
    rows = []
    for r in runs:
        rows.append([
            snap.label(r), Code(r.run_id), _status(r), r.started,
            *(fmt_param(r.params.get(p)) for p in params), weights_text(r.weights),
            r.metrics.get(T.M_BEST_VAL_F1), r.metrics.get(T.M_TEST_ACC),
            *(r.summary(m) for m in extra),
        ])
    return table(headers, rows)


def _status(r: RunView) -> str:
    why = r.tags.get(T.TAG_STOP_REASON)
    return f"{r.status} ({why})" if why and why != "completed" else r.status


def parallel_figure(snap: Snapshot, task: str, runs: Sequence[RunView], params: Sequence[str]):
    """``(figure or None, note)``: one axis per option, the metric last and as the colour."""
    import plotly.graph_objects as go

    scored = [(r, r.summary(snap.metric)) for r in runs]
    kept = [(r, v) for r, v in scored if v is not None]
    note = ""
    if len(kept) < len(scored):
        note = f"{len(scored) - len(kept)} run(s) without {snap.metric} are in the table only."
    if not kept:
        return None, f"No run of {task} logged {snap.metric}."
    dims = [_dimension(p, [r.params.get(p) for r, _ in kept]) for p in params]
    values = [v for _, v in kept]
    metric_label = snap.metric if snap.metric.startswith("best_") or not any(
        f"best_{snap.metric}" in r.metrics for r, _ in kept) else f"best {snap.metric}"
    dims.append({"label": metric_label, "values": values})
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line={"color": values, "colorscale": "Viridis", "showscale": True,
              "colorbar": {"title": {"text": snap.metric}}},
        labelangle=-20,
    ))
    fig.update_layout(title=f"{task}: options against {snap.metric} ({len(kept)} runs)",
                      height=460, margin={"l": 80, "r": 40, "t": 110, "b": 40})
    return fig, note


def _dimension(name: str, raw: Sequence[str | None]) -> dict:
    """A parcoords axis: numbers as they are (log10 when they span decades, like ``lr``);
    anything else (names, booleans, a value missing on some runs) as evenly spaced categories."""
    nums = [as_float(v) for v in raw]
    if all(n is not None for n in nums):
        vals = [float(n) for n in nums]  # type: ignore[arg-type]
        lo, hi = min(vals), max(vals)
        if lo > 0 and hi / lo >= 20:
            logs = [math.log10(v) for v in vals]
            ticks = sorted(set(vals))
            if len(ticks) > 8:
                ticks = [10.0 ** e for e in range(math.floor(min(logs)), math.ceil(max(logs)) + 1)]
            return {"label": f"{name} (log)", "values": logs,
                    "tickvals": [math.log10(t) for t in ticks], "ticktext": [f"{t:g}" for t in ticks]}
        return {"label": name, "values": vals}
    cats = [v if v is not None else "(unset)" for v in raw]
    order = sorted(set(cats), key=lambda c: (as_float(c) is None, as_float(c) or 0.0, c))
    code = {c: i for i, c in enumerate(order)}
    return {"label": name, "values": [code[c] for c in cats], "tickvals": list(range(len(order))),
            "ticktext": order, "range": [-0.3, max(len(order) - 0.7, 0.3)]}
