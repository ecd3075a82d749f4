"""``lineage.html``: the trees of resumed runs, drawn along the epoch axis.

Each run is a bar over the epochs it trained (a root from 0, a branch from the epoch it was
resumed at); a dotted connector drops from the parent's bar at that epoch to the branch, which
is labelled with the epoch and the sampling weights that changed. Roots never resumed are only
counted: a forest of one-node trees says nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emoexp import tracking as T
from emoexp.dashboards._common import (
    Code,
    Page,
    RunView,
    Snapshot,
    compared_params,
    empty,
    esc,
    figure_html,
    fmt_param,
    palette,
    table,
)

FILENAME = "lineage.html"
TITLE = "Lineage of resumed runs"
IGNORED_CHANGES = {"epochs", "run_name", "resume_from", "description"}   # differ on every branch


@dataclass
class Node:
    run: RunView
    lane: int
    depth: int
    start: int                 # the epoch the run started from (0 for a root)
    end: int                   # its last logged epoch
    parent: RunView | None     # None for a root (or a branch whose parent is not loaded)


def forest(snap: Snapshot) -> list[list[Node]]:
    """Trees with at least one branch, root first, each in depth-first order (children by start
    time); lanes number the rows of the drawing, one blank lane between trees."""
    runs = snap.training_runs
    children: dict[str, list[RunView]] = {}
    for r in runs:
        if r.parent_id:
            children.setdefault(r.parent_id, []).append(r)
    # A root: a run with children whose own parent is not here (not resumed, or not loaded).
    roots = [r for r in runs if (r.run_id in children or r.parent_id) and r.parent_id not in snap.by_id]
    snap.prefetch((r.run_id, T.M_TRAIN_LOSS) for r in runs if r.run_id in children or r.parent_id)
    trees: list[list[Node]] = []
    lane = 0
    for root in roots:
        nodes: list[Node] = []
        stack: list[tuple[RunView, int]] = [(root, 0)]
        seen: set[str] = set()
        while stack:
            run, depth = stack.pop()
            if run.run_id in seen:   # a cycle cannot happen in MLflow, but a bad tag must not hang us
                continue
            seen.add(run.run_id)
            steps = [s for s, _ in snap.history(run.run_id, T.M_TRAIN_LOSS) if s >= 1]
            start = run.resumed_epoch or 0
            parent = snap.by_id.get(run.parent_id) if run.parent_id else None
            nodes.append(Node(run, lane, depth, start, max(steps) if steps else start, parent))
            lane += 1
            kids = sorted(children.get(run.run_id, []), key=lambda r: r.start_time, reverse=True)
            stack.extend((k, depth + 1) for k in kids)
        trees.append(nodes)
        lane += 1
    return trees


def weight_changes(old: dict[str, float], new: dict[str, float]) -> str:
    """``anger 1→5, joy 1→0.5``; classes absent on one side count as weight 1 (the default)."""
    out = [f"{c} {old.get(c, 1.0):g}→{new.get(c, 1.0):g}" for c in dict.fromkeys([*old, *new])
           if old.get(c, 1.0) != new.get(c, 1.0)]
    return ", ".join(out) if out else "weights unchanged"


def other_changes(parent: RunView, child: RunView) -> str:
    keys = [k for k in compared_params([parent, child]) if k not in IGNORED_CHANGES]
    out = [f"{k} {fmt_param(parent.params.get(k)) or '–'}→{fmt_param(child.params.get(k)) or '–'}" for k in keys
           if parent.params.get(k) != child.params.get(k)]
    return ", ".join(out)


def build(snap: Snapshot) -> Page:
    desc = ("Trees of runs resumed from checkpoints of other runs: each bar is a run over its epochs, "
            "each branch labelled with the epoch it started from and the sampling weights it changed.")
    trees = forest(snap)
    if not trees:
        n = len(snap.training_runs)
        msg = (f"No resumed runs yet ({n} run{'s' if n != 1 else ''}, none branched). "
               "Branch one with: emoexp resume runs:/<run_id>/checkpoints/last.pt --weights sadness=5")
        return Page(FILENAME, TITLE, desc, "no resumed runs", empty(msg))
    nodes = [n for t in trees for n in t]
    in_trees = {n.run.run_id for n in nodes}
    lonely = sum(1 for r in snap.training_runs if r.run_id not in in_trees)
    n_branches = sum(1 for n in nodes if n.run.parent_id)
    parts = [figure_html(tree_figure(snap, trees), "lineage")]
    if lonely:
        parts.append(f"<p class='note'>{lonely} other run(s) were never resumed and are not drawn.</p>")
    parts.append("<h2>Branches</h2>")
    parts.append(table(
        ["run", "run id", "parent", "parent id", "resumed at epoch", "epochs", "weight changes", "other changes",
         f"{T.M_BEST_VAL_F1} parent → run"],
        [[snap.label(n.run), Code(n.run.run_id), snap.label(n.parent) if n.parent else "(not loaded)",
          Code(n.run.parent_id or ""), n.start, f"{n.start + 1}–{n.end}" if n.end > n.start else "",
          weight_changes(n.parent.weights, n.run.weights) if n.parent else "",
          other_changes(n.parent, n.run) if n.parent else "", _f1_change(n)]
         for n in nodes if n.run.parent_id],
    ))
    count = f"{len(trees)} tree{'s' if len(trees) != 1 else ''}, {n_branches} resumed runs"
    return Page(FILENAME, TITLE, desc, count, "\n".join(parts), 1)


def _f1_change(n: Node) -> str:
    after = n.run.metrics.get(T.M_BEST_VAL_F1)
    before = n.parent.metrics.get(T.M_BEST_VAL_F1) if n.parent else None
    return " → ".join(f"{v:.3f}" if v is not None else "–" for v in (before, after))


def tree_figure(snap: Snapshot, trees: Sequence[Sequence[Node]]):
    import plotly.graph_objects as go

    fig = go.Figure()
    nodes = [n for t in trees for n in t]
    colours = palette(max(n.depth for n in nodes) + 1)
    lane_of = {n.run.run_id: n.lane for n in nodes}
    # Connectors first, so the bars are drawn over them.
    cx: list = []
    cy: list = []
    for n in nodes:
        if n.run.parent_id in lane_of:
            cx += [n.start, n.start, None]
            cy += [lane_of[n.run.parent_id], n.lane, None]  # type: ignore[index]
    if cx:
        fig.add_trace(go.Scatter(x=cx, y=cy, mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"color": "#888", "width": 1.5, "dash": "dot"}))
    for depth, colour in enumerate(colours):
        level = [n for n in nodes if n.depth == depth]
        bx: list = []
        by: list = []
        for n in level:
            bx += [n.start, max(n.end, n.start + 0.15), None]   # a run with no epochs still shows
            by += [n.lane, n.lane, None]
        fig.add_trace(go.Scatter(x=bx, y=by, mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"color": colour, "width": 7}))
        fig.add_trace(go.Scatter(
            x=[max(n.end, n.start + 0.15) for n in level], y=[n.lane for n in level], mode="markers+text",
            text=[snap.label(n.run) for n in level], textposition="middle right",
            marker={"color": colour, "size": 11, "line": {"width": 1, "color": "#333"}},
            name="root" if depth == 0 else f"depth {depth}", customdata=[_hover(snap, n) for n in level],
            hovertemplate="%{customdata}<extra></extra>",
        ))
    # Branch labels: where the branch leaves its parent.
    branches = [n for n in nodes if n.run.parent_id]
    fig.add_trace(go.Scatter(
        x=[n.start for n in branches], y=[n.lane for n in branches], mode="markers+text",
        text=[_edge_label(n) for n in branches], textposition="top right", textfont={"size": 11, "color": "#555"},
        marker={"symbol": "diamond", "size": 9, "color": "#fff", "line": {"width": 1.5, "color": "#555"}},
        showlegend=False, customdata=[_hover(snap, n) for n in branches],
        hovertemplate="%{customdata}<extra></extra>",
    ))
    last = max(max(n.end for n in nodes), 1)
    lanes = max(n.lane for n in nodes) + 1
    fig.update_layout(
        title=f"{len(trees)} lineage tree(s): bars are epochs trained, diamonds are resume points",
        xaxis={"title": {"text": "epoch"}, "range": [-0.3, last * 1.45 + 1], "dtick": 1 if last <= 25 else None,
               "zeroline": False},
        # lane 0 (the first root) on top
        yaxis={"showticklabels": False, "showgrid": False, "zeroline": False,
               "range": [lanes, -1]},
        height=160 + 46 * lanes, legend={"title": {"text": "lineage depth"}}, margin={"t": 60, "l": 30},
        hovermode="closest", plot_bgcolor="#fbfbfd",
    )
    return fig


def _edge_label(n: Node) -> str:
    changes = weight_changes(n.parent.weights, n.run.weights) if n.parent else "parent not loaded"
    return f"e{n.start}: {esc(changes)}"


def _hover(snap: Snapshot, n: Node) -> str:
    r = n.run
    lines = [f"<b>{esc(snap.label(r))}</b> ({r.run_id[:8]}, {esc(r.status)})",
             f"epochs {n.start + 1}–{n.end}" if n.end > n.start else "no epochs logged"]
    if r.parent_id:
        lines.append(f"resumed from {esc(r.tags.get(T.TAG_RESUMED_FROM, r.parent_id))}")
        if n.parent:
            lines.append(f"weights: {esc(weight_changes(n.parent.weights, r.weights))}")
            other = other_changes(n.parent, r)
            if other:
                lines.append(f"other: {esc(other)}")
    f1 = r.metrics.get(T.M_BEST_VAL_F1)
    if f1 is not None:
        lines.append(f"{T.M_BEST_VAL_F1}: {f1:.3f}")
    return "<br>".join(lines)
