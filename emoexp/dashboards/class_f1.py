"""``class_f1.html``: per-class validation F1 against the class's sampling weight.

Two views per task. Every run: ``val_f1.<class>`` at its last epoch against
``sampling_weight.<class>``. Every branch whose parent is loaded: how much each class's F1
moved from the parent (at the branch epoch) to the branch's end, against how much its weight
was multiplied; classes left at the same weight show the drift that more training alone gives.
"""

from __future__ import annotations

import math
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

FILENAME = "class_f1.html"
TITLE = "Per-class F1 vs sampling weights"
JITTER = 0.035   # horizontal spread between classes (log2 units), so equal weights do not overlap


def classes_of(runs: Sequence[RunView]) -> list[str]:
    seen: dict[str, None] = {}
    for r in runs:
        for c in r.weights:
            seen.setdefault(c, None)
    return list(seen)


def build(snap: Snapshot) -> Page:
    desc = ("For each run, every class's validation F1 at its last epoch against that class's sampling "
            "weight (colour = class, hover = run); for each resumed run, the change in F1 against the "
            "change in weight: what reweighting did.")
    runs = [r for r in snap.training_runs if r.weights]
    if not runs:
        return Page(FILENAME, TITLE, desc, "no runs", empty("No runs with sampling weights logged yet."))
    branches = [r for r in runs if r.parent_id in snap.by_id and r.resumed_epoch]
    snap.prefetch((r.parent_id, f"{T.M_VAL_F1_CLASS}{c}") for r in branches for c in r.weights)  # type: ignore[misc]
    parts: list[str] = []
    n_fig = 0
    for task, task_runs in group_by_task(runs).items():
        classes = classes_of(task_runs)
        colours = dict(zip(classes, palette(len(classes))))
        parts.append(f"<h2>{esc(task)}</h2>")
        fig = weight_figure(snap, task, task_runs, classes, colours)
        if fig is None:
            parts.append(empty(f"No run of {task} has logged per-class F1 yet."))
            continue
        parts.append(figure_html(fig, f"class-f1-{task}"))
        n_fig += 1
        task_branches = [r for r in branches if r.task == task]
        fig = change_figure(snap, task, task_branches, classes, colours)
        if fig is not None:
            parts.append(figure_html(fig, f"class-f1-change-{task}"))
            n_fig += 1
        else:
            parts.append("<p class='note'>No resumed runs of this task (with their parent loaded) to "
                         "show the effect of a weight change.</p>")
    count = f"{len(runs)} runs, {len(branches)} reweighted branches"
    return Page(FILENAME, TITLE, desc, count, "\n".join(parts), n_fig)


def weight_figure(snap: Snapshot, task: str, runs: Sequence[RunView], classes: Sequence[str],
                  colours: dict[str, str]):
    import plotly.graph_objects as go

    fig = go.Figure()
    all_w = [w for r in runs for w in r.weights.values()]
    log_x = all(w > 0 for w in all_w)
    for i, c in enumerate(classes):
        offset = (i - (len(classes) - 1) / 2) * JITTER
        xs, ys, hover = [], [], []
        for r in runs:
            w, f1 = r.weights.get(c), r.metrics.get(f"{T.M_VAL_F1_CLASS}{c}")
            if w is None or f1 is None:
                continue
            xs.append(w * 2 ** offset if log_x else w + offset)
            ys.append(f1)
            hover.append([snap.label(r), r.run_id[:8], f"{w:g}"])
        if xs:
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="markers", name=c, customdata=hover,
                marker={"color": colours[c], "size": 9, "opacity": 0.85, "line": {"width": 0.5, "color": "#333"}},
                hovertemplate=(f"<b>{esc(c)}</b>: weight %{{customdata[2]}}, F1 %{{y:.3f}}"
                               "<br>%{customdata[0]}<extra>%{customdata[1]}</extra>"),
            ))
    if not fig.data:
        return None
    fig.update_layout(
        title=f"{task}: {T.M_VAL_F1_CLASS}&lt;class&gt; at the last epoch vs {T.PARAM_WEIGHT_PREFIX}&lt;class&gt;",
        xaxis={"title": {"text": "sampling weight" + (" (log scale)" if log_x else "")},
               "type": "log" if log_x else "linear", **_weight_ticks(all_w)},
        yaxis={"title": {"text": "validation F1"}, "rangemode": "tozero"},
        legend={"title": {"text": "class"}}, height=440, margin={"t": 70},
    )
    return fig


def change_figure(snap: Snapshot, task: str, branches: Sequence[RunView], classes: Sequence[str],
                  colours: dict[str, str]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, c in enumerate(classes):
        offset = (i - (len(classes) - 1) / 2) * JITTER
        key = f"{T.M_VAL_F1_CLASS}{c}"
        xs, ys, hover = [], [], []
        for r in branches:
            parent = snap.by_id[r.parent_id]  # type: ignore[index]
            new_w, old_w = r.weights.get(c), parent.weights.get(c, 1.0)
            after = r.metrics.get(key)
            before = dict(snap.history(parent.run_id, key)).get(r.resumed_epoch, parent.metrics.get(key))  # type: ignore[arg-type]
            if new_w is None or after is None or before is None or new_w <= 0 or old_w <= 0:
                continue
            xs.append(math.log2(new_w / old_w) + offset)
            ys.append(after - before)
            hover.append([snap.label(r), r.run_id[:8], f"{old_w:g} → {new_w:g}", f"{before:.3f} → {after:.3f}",
                          snap.label(parent), r.resumed_epoch])
        if xs:
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="markers", name=c, customdata=hover,
                marker={"color": colours[c], "size": 10, "symbol": "diamond", "opacity": 0.85,
                        "line": {"width": 0.5, "color": "#333"}},
                hovertemplate=(f"<b>{esc(c)}</b>: weight %{{customdata[2]}}, F1 %{{customdata[3]}}"
                               "<br>%{customdata[0]}, branched from %{customdata[4]} at epoch %{customdata[5]}"
                               "<extra>%{customdata[1]}</extra>"),
            ))
    if not fig.data:
        return None
    span = max(1, math.ceil(max(abs(x) for tr in fig.data for x in tr.x)))
    ticks = list(range(-span, span + 1))
    reach = max(0.05, 1.15 * max(abs(y) for tr in fig.data for y in tr.y))
    fig.add_hline(y=0, line={"color": "#999", "width": 1})
    fig.add_vline(x=0, line={"color": "#999", "width": 1, "dash": "dot"})
    fig.update_layout(
        title=f"{task}: change in per-class F1 after a branch vs the change of that class's weight",
        xaxis={"title": {"text": "weight: new / parent's"}, "tickvals": ticks,
               "ticktext": [f"×{2.0 ** t:g}" for t in ticks], "range": [-span - 0.5, span + 0.5]},
        # Symmetric about 0 and at least ±0.05: better or worse is what the eye looks for.
        yaxis={"title": {"text": "F1 change (branch end − parent at branch epoch)"}, "zeroline": False,
               "tickformat": "+.2f", "range": [-reach, reach]},
        legend={"title": {"text": "class"}}, height=440, margin={"t": 70},
    )
    return fig


def _weight_ticks(weights: Sequence[float]) -> dict:
    """Ticks at the weights actually used: a log axis's own minor labels (2, 3, ... 9) mislead."""
    ticks = sorted(set(weights))
    if not ticks or len(ticks) > 12:
        return {}
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}
