"""``sweeps.html``: each Optuna study's trials: the objective per trial number with the
best-so-far line, the trials in a table and, where the study's Optuna storage is at hand,
Optuna's own optimization-history and parameter-importance plots.

Trials are grouped by study name (tag ``emoexp.study``), not by sweep parent run: a study
resumed by running the same sweep command again has one parent run per invocation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

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
    table,
    varying,
)

log = logging.getLogger(__name__)

FILENAME = "sweeps.html"
TITLE = "Sweeps"
DEFAULT_STORAGE_FILE = "optuna.db"   # `emoexp sweep`'s default storage, sqlite:///optuna.db


@dataclass
class Study:
    name: str
    parents: list[RunView] = field(default_factory=list)
    trials: list[RunView] = field(default_factory=list)

    @property
    def objective(self) -> str:
        for p in self.parents:
            if p.params.get(T.PARAM_SWEEP_METRIC):
                return p.params[T.PARAM_SWEEP_METRIC]
        return T.M_BEST_VAL_F1

    @property
    def minimize(self) -> bool:
        return "loss" in self.objective   # the direction rule `emoexp sweep` uses

    @property
    def task(self) -> str:
        return next((r.task for r in [*self.parents, *self.trials] if r.task), "?")


def studies(snap: Snapshot) -> list[Study]:
    """Studies seen in the runs, newest first, trials by trial number."""
    found: dict[str, Study] = {}
    for r in snap.runs:
        if r.study:
            s = found.setdefault(r.study, Study(r.study))
            (s.parents if r.is_sweep_parent else s.trials).append(r)
    for s in found.values():
        s.trials.sort(key=lambda r: (r.trial_number if r.trial_number is not None else 10**9, r.start_time))
    return sorted(found.values(), key=lambda s: max(r.start_time for r in [*s.parents, *s.trials]), reverse=True)


def trial_state(r: RunView) -> str:
    if r.tags.get(T.TAG_STOP_REASON) == "pruned":
        return "PRUNED"
    return {"FINISHED": "COMPLETE", "FAILED": "FAIL"}.get(r.status, r.status)


def storage_url(snap: Snapshot) -> str | None:
    """The Optuna storage to read studies from: the one given, else ./optuna.db if it exists
    (opening a sqlite URL of a missing file would create an empty store)."""
    if snap.optuna_storage:
        return snap.optuna_storage
    if Path(DEFAULT_STORAGE_FILE).is_file():
        return f"sqlite:///{DEFAULT_STORAGE_FILE}"
    return None


def build(snap: Snapshot) -> Page:
    desc = ("For each Optuna study (a sweep parent run and its trial runs): the objective per trial "
            "with the best so far, its trials, and Optuna's own history and importance plots.")
    found = studies(snap)
    if not found:
        msg = ("No sweeps yet. Start one with: emoexp sweep <task> --n-trials 20 "
               "(its trials are nested runs tagged emoexp.study).")
        return Page(FILENAME, TITLE, desc, "no sweeps", empty(msg))
    url = storage_url(snap)
    storage, storage_note = _open_storage(url)
    parts = [f"<p class='note'>{esc(storage_note)}</p>"] if storage_note else []
    n_fig = 0
    for s in found:
        parts.append(f"<h2>{esc(s.name)} <span class='muted'>({esc(s.task)}, {len(s.trials)} trials)</span></h2>")
        parents = ", ".join(f"{esc(p.name)} (<code>{esc(p.run_id)}</code>)" for p in s.parents) or "not loaded"
        best = s.parents[0].tags.get(T.TAG_BEST_RUN) if s.parents else None
        parts.append(f"<p class='note'>Objective: <b>{esc(s.objective)}</b> "
                     f"({'minimised' if s.minimize else 'maximised'}). Sweep parent run(s): {parents}."
                     + (f" Best trial run: <code>{esc(best)}</code>." if best else "") + "</p>")
        fig = history_figure(snap, s)
        if fig is not None:
            parts.append(figure_html(fig, f"sweep-{s.name}"))
            n_fig += 1
        else:
            parts.append(empty("No trial has a value of the objective yet."))
        figs, note = optuna_figures(storage, s.name)
        for name, f in figs:
            parts.append(figure_html(f, f"optuna-{name}-{s.name}"))
            n_fig += 1
        if note:
            parts.append(f"<p class='note'>{esc(note)}</p>")
        parts.append(_trials_table(snap, s))
    n_trials = sum(len(s.trials) for s in found)
    count = f"{len(found)} stud{'ies' if len(found) != 1 else 'y'}, {n_trials} trials"
    return Page(FILENAME, TITLE, desc, count, "\n".join(parts), n_fig)


def searched_params(s: Study) -> list[str]:
    """What the study searched: the ``best.<option>`` params of its parent, and whatever varies
    between its trials."""
    best = [k[len("best."):] for p in s.parents for k in p.params if k.startswith("best.")]
    varied = varying(s.trials, compared_params(s.trials))
    return list(dict.fromkeys([*best, *varied]))


def _trials_table(snap: Snapshot, s: Study) -> str:
    params = searched_params(s)
    rows = [[r.trial_number, snap.label(r), Code(r.run_id), trial_state(r), r.metrics.get(s.objective),
             *(fmt_param(r.params.get(p)) for p in params)] for r in s.trials]
    return table(["trial", "run", "run id", "state", s.objective, *params], rows)


def history_figure(snap: Snapshot, s: Study):
    """The objective per trial number: finished trials, pruned ones greyed, best so far."""
    import plotly.graph_objects as go

    points = [(r, r.metrics.get(s.objective)) for r in s.trials if r.trial_number is not None]
    points = [(r, v) for r, v in points if v is not None]
    if not points:
        return None
    fig = go.Figure()
    for state, style in (("COMPLETE", {"color": "#1f77b4", "symbol": "circle", "size": 10}),
                         ("PRUNED", {"color": "#aaa", "symbol": "x", "size": 9}),
                         ("other", {"color": "#d62728", "symbol": "triangle-up", "size": 9})):
        sel = [(r, v) for r, v in points
               if trial_state(r) == state or (state == "other" and trial_state(r) not in ("COMPLETE", "PRUNED"))]
        if sel:
            fig.add_trace(go.Scatter(
                x=[r.trial_number for r, _ in sel], y=[v for _, v in sel], mode="markers", name=state.lower(),
                marker=style, customdata=[[snap.label(r), r.run_id[:8]] for r, _ in sel],
                hovertemplate=f"trial %{{x}}: {s.objective} %{{y:.4f}}<br>%{{customdata[0]}}<extra>%{{customdata[1]}}</extra>",
            ))
    done = [(r.trial_number, v) for r, v in points if trial_state(r) == "COMPLETE"]
    if done:
        xs, best, cur = [], [], None
        for n, v in sorted(done):
            cur = v if cur is None else (min(cur, v) if s.minimize else max(cur, v))
            xs.append(n)
            best.append(cur)
        fig.add_trace(go.Scatter(x=xs, y=best, mode="lines", name="best so far", line={"shape": "hv", "color": "#ff7f0e"},
                                 hovertemplate="best after trial %{x}: %{y:.4f}<extra></extra>"))
    fig.update_layout(title=f"{s.name}: {s.objective} per trial", height=400, margin={"t": 60},
                      xaxis={"title": {"text": "trial number"}, "dtick": 1 if len(points) <= 25 else None},
                      yaxis={"title": {"text": s.objective}})
    return fig


def _open_storage(url: str | None):
    """``(storage or None, note)``; an unreachable storage is a note on the page, not a crash."""
    if url is None:
        return None, ("Optuna's own plots need the study's storage: pass --optuna-storage URL "
                      f"(or build from the folder holding {DEFAULT_STORAGE_FILE}).")
    import warnings

    from emoexp.sweeps import make_storage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # heartbeat options are "experimental" in Optuna
            return make_storage(url), ""
    except Exception as e:
        log.warning("could not open the Optuna storage %s: %s", url, e)
        return None, f"Could not open the Optuna storage ({type(e).__name__}: {e})."


def optuna_figures(storage, study_name: str) -> tuple[list[tuple[str, object]], str]:
    """Optuna's optimization history and parameter importances of one study, when it has them."""
    if storage is None:
        return [], ""
    import optuna
    from optuna import visualization as vis

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return [], f"Study {study_name!r} is not in the Optuna storage given."
    figs: list[tuple[str, object]] = []
    missing: list[str] = []
    for name, fn in (("history", vis.plot_optimization_history), ("importances", vis.plot_param_importances)):
        try:
            fig = fn(study)
        except Exception as e:   # importances need two finished trials whose params differ
            missing.append(f"{name}: {e}")
            continue
        fig.update_layout(title=f"Optuna: {study_name}, {fig.layout.title.text or name}", height=400)
        figs.append((name, fig))
    return figs, ("Optuna plots not drawn: " + "; ".join(missing)) if missing else ""
