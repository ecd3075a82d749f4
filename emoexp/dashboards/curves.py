"""``curves.html``: per task, the losses and the validation metric of every run per epoch.

A resumed run logs its epochs with the parent's numbering (a branch at epoch 5 logs 6, 7, ...);
its lines start from the parent's value at the branch epoch, so they visibly continue it.
"""

from __future__ import annotations

from collections.abc import Sequence

from emoexp import tracking as T
from emoexp.dashboards._common import (
    Page,
    RunView,
    Snapshot,
    empty,
    esc,
    figure_html,
    group_by_task,
    palette,
)

FILENAME = "curves.html"
TITLE = "Learning curves"


def curve_metric(metric: str) -> str:
    """The per-epoch metric drawn beside the losses: the chosen one when it is logged per
    epoch, else val_macro_f1 (``best_*`` and ``test_*`` are logged once, at the end)."""
    if metric.startswith(("best_", "test_")) or "loss" in metric:
        return T.M_VAL_F1
    return metric


def build(snap: Snapshot) -> Page:
    runs = snap.training_runs
    right = curve_metric(snap.metric)
    desc = (f"Per task, {T.M_TRAIN_LOSS} (solid) and {T.M_VAL_LOSS} (dashed), and {right}, per epoch for "
            "each run; resumed runs continue from their parent's epoch. Click a legend entry to hide a run.")
    if not runs:
        return Page(FILENAME, TITLE, desc, "no runs", empty("No training runs in this store yet."))
    keys = (T.M_TRAIN_LOSS, T.M_VAL_LOSS, right)
    ids = {r.run_id for r in runs} | {r.parent_id for r in runs if r.parent_id in snap.by_id}
    snap.prefetch((i, k) for i in ids for k in keys)
    parts: list[str] = []
    n_fig = drawn = 0
    for task, task_runs in group_by_task(runs).items():
        fig, n = task_figure(snap, task, task_runs, right)
        parts.append(f"<h2>{esc(task)}</h2>")
        if fig is None:
            parts.append(empty(f"No run of {task} has logged an epoch yet."))
            continue
        parts.append(figure_html(fig, f"curves-{task}"))
        n_fig += 1
        drawn += n
    return Page(FILENAME, TITLE, desc, f"{drawn} runs with curves", "\n".join(parts), n_fig)


def task_figure(snap: Snapshot, task: str, runs: Sequence[RunView], right: str):
    """``(figure or None, runs drawn)``: losses on the left, ``right`` on the right."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=(f"{T.M_TRAIN_LOSS} (solid), {T.M_VAL_LOSS} (dashed)", right))
    colours = palette(len(runs))
    drawn = 0
    for colour, run in zip(colours, runs):
        label = snap.label(run)
        first = True
        for key, col, dash in ((T.M_TRAIN_LOSS, 1, "solid"), (T.M_VAL_LOSS, 1, "dash"), (right, 2, "solid")):
            points = _continued(snap, run, key)
            if not points:
                continue
            xs, ys = zip(*points)
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=label, legendgroup=run.run_id, showlegend=first,
                line={"color": colour, "dash": dash, "width": 2}, marker={"size": 5},
                hovertemplate=f"{esc(label)}<br>{key}: %{{y:.4f}}<br>epoch %{{x}}<extra>{run.run_id[:8]}</extra>",
            ), row=1, col=col)
            first = False
        drawn += not first
    if not drawn:
        return None, 0
    fig.update_xaxes(title_text="epoch", dtick=1 if _max_epoch(fig) <= 20 else None)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text=right, row=1, col=2)
    fig.update_layout(title=f"{task}: {drawn} runs", height=460, hovermode="closest",
                      legend={"title": {"text": "run"}}, margin={"t": 80})
    return fig, drawn


def _continued(snap: Snapshot, run: RunView, key: str) -> list[tuple[int, float]]:
    """The run's own epochs of ``key``, preceded by its parent's value at the branch epoch."""
    points = [(s, v) for s, v in snap.history(run.run_id, key) if s >= 1]   # step 0: before training
    parent, epoch = run.parent_id, run.resumed_epoch
    if points and parent in snap.by_id and epoch:
        at = dict(snap.history(parent, key)).get(epoch)
        if at is not None and points[0][0] > epoch:
            points.insert(0, (epoch, at))
    return points


def _max_epoch(fig) -> float:
    xs = [x for tr in fig.data for x in (tr.x or ()) if x is not None]
    return max(xs) if xs else 0
