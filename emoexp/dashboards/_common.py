"""What every page shares: the runs read once from MLflow, and the HTML shell around the figures.

Each page module has one ``build(snapshot) -> Page``; the pages never talk to MLflow except
through :class:`Snapshot`, which reads the runs with one ``search_runs`` per experiment and
metric histories only on demand (memoised, fetched a few at a time).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emoexp import tracking as T
from emoexp.config import redact

PLOTLY_JS = "plotly.min.js"    # one local copy per output folder, shared by the pages: no CDN

# Options that identify a run or where it ran, not how it was trained: they would make every
# run look different in the comparison (paths, names) without telling anything.
NOT_COMPARED = frozenset({
    "data_dir", "experiment_name", "run_name", "description", "output_dir", "resume_from",
    "cache_dir", "device", "num_workers", "log_model", "pretrained", "on_bad_file", "weights",
})
# Shown first, in this order, wherever a task has them; other options follow when they vary.
KEY_PARAMS = ("lr", "batch_size", "epochs", "dropout", "weight_decay", "window_size", "stride",
              "encoder", "latent_dim", "optimizer", "scheduler", "label_smoothing")


@dataclass(frozen=True)
class RunView:
    """One MLflow run, reduced to what the pages read."""

    run_id: str
    name: str
    experiment: str
    status: str
    start_time: int                      # ms since the epoch, as MLflow stores it
    params: dict[str, str]
    metrics: dict[str, float]            # the last logged value of each metric
    tags: dict[str, str]

    @property
    def task(self) -> str | None:
        return self.tags.get(T.TAG_TASK) or None

    @property
    def is_sweep_parent(self) -> bool:
        return self.tags.get(T.TAG_SWEEP) == T.SWEEP_PARENT

    @property
    def is_cv_parent(self) -> bool:
        """The parent run of a cross-validation (its folds are the training runs)."""
        return T.TAG_CV_SCHEME in self.tags and T.TAG_FOLD not in self.tags

    @property
    def parent_id(self) -> str | None:
        return self.tags.get(T.TAG_PARENT_RUN) or None

    @property
    def resumed_epoch(self) -> int | None:
        return as_int(self.tags.get(T.TAG_RESUMED_EPOCH))

    @property
    def study(self) -> str | None:
        return self.tags.get(T.TAG_STUDY) or None

    @property
    def trial_number(self) -> int | None:
        return as_int(self.tags.get(T.TAG_TRIAL))

    @property
    def weights(self) -> dict[str, float]:
        """Per-class sampling weights, from the ``sampling_weight.<class>`` params."""
        out = {}
        for k, v in self.params.items():
            if k.startswith(T.PARAM_WEIGHT_PREFIX):
                w = as_float(v)
                if w is not None:
                    out[k[len(T.PARAM_WEIGHT_PREFIX):]] = w
        return out

    @property
    def started(self) -> str:
        return datetime.fromtimestamp(self.start_time / 1000).strftime("%Y-%m-%d %H:%M") if self.start_time else ""

    def summary(self, metric: str) -> float | None:
        """The run's one number for ``metric``: ``best_<metric>`` where the engine logged it
        (the best epoch is the model the run keeps), else the last logged value."""
        for key in (metric if metric.startswith("best_") else f"best_{metric}", metric):
            v = self.metrics.get(key)
            if v is not None and math.isfinite(v):
                return v
        return None


@dataclass
class Snapshot:
    """The runs of one build, and their metric histories fetched on demand."""

    runs: list[RunView]
    experiments: list[str]
    tracking_uri: str
    metric: str
    optuna_storage: str | None
    truncated: bool                      # more runs matched than max_runs
    client: Any = field(default=None, repr=False)
    _histories: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict, repr=False)
    by_id: dict[str, RunView] = field(init=False, repr=False)
    _labels: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {r.run_id: r for r in self.runs}
        # Run names repeat (every sweep names its trials alike): add the id where they do.
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.name] = counts.get(r.name, 0) + 1
        self._labels = {r.run_id: r.name if counts[r.name] == 1 and r.name else f"{r.name or 'run'} ({r.run_id[:6]})"
                        for r in self.runs}

    @property
    def training_runs(self) -> list[RunView]:
        """Runs of a task (sweep trials and cross-validation folds included), oldest first; not
        sweep or cross-validation parents, nor pipelines."""
        return sorted((r for r in self.runs if r.task and not r.is_sweep_parent and not r.is_cv_parent),
                      key=lambda r: r.start_time)

    def label(self, run: RunView) -> str:
        return self._labels.get(run.run_id, run.name or run.run_id[:8])

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of one metric, sorted by step (the epoch)."""
        if (run_id, key) not in self._histories:
            self.prefetch([(run_id, key)])
        return self._histories[(run_id, key)]

    def prefetch(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Fetch many histories at once; the store answers a few queries in parallel faster."""
        from concurrent.futures import ThreadPoolExecutor

        todo = sorted({p for p in pairs if p not in self._histories})
        if not todo:
            return

        def one(pair: tuple[str, str]) -> list[tuple[int, float]]:
            try:
                hist = self.client.get_metric_history(*pair)
            except Exception:  # a run deleted meanwhile: draw the others
                return []
            last: dict[int, float] = {}
            for m in sorted(hist, key=lambda m: (m.step, m.timestamp)):
                last[m.step] = m.value        # a re-logged epoch (continued run): the latest wins
            return sorted(last.items())

        with ThreadPoolExecutor(max_workers=4) as pool:
            for pair, hist in zip(todo, pool.map(one, todo)):
                self._histories[pair] = hist


def load_snapshot(*, experiment: str | None, metric: str, optuna_storage: str | None,
                  max_runs: int) -> Snapshot:
    """Read the runs of ``experiment`` (all active experiments when None), newest first."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise ValueError(f"experiment {experiment!r} not found in {redact(mlflow.get_tracking_uri())} "
                             f"(experiments: {names})")
        exps = [exp]
    else:
        exps = list(client.search_experiments())
    runs: list[RunView] = []
    truncated = False
    for exp in exps:
        found = client.search_runs([exp.experiment_id], max_results=max_runs,
                                   order_by=["attributes.start_time DESC"])
        truncated |= bool(found.token)
        runs.extend(RunView(
            run_id=r.info.run_id, name=r.info.run_name or "", experiment=exp.name, status=r.info.status,
            start_time=r.info.start_time or 0, params=dict(r.data.params), metrics=dict(r.data.metrics),
            tags=dict(r.data.tags),
        ) for r in found)
    runs.sort(key=lambda r: r.start_time, reverse=True)
    truncated |= len(runs) > max_runs
    return Snapshot(runs=runs[:max_runs], experiments=[e.name for e in exps],
                    tracking_uri=redact(mlflow.get_tracking_uri()), metric=metric,
                    optuna_storage=optuna_storage, truncated=truncated, client=client)


# ------------------------------------------------------------------------------------------------
# Pages


@dataclass
class Page:
    """One HTML page: its file, its line on the index, and its body."""

    filename: str
    title: str
    description: str                     # what the page shows, one line
    count: str                           # what it counted, e.g. "12 runs of 2 tasks"
    body: str
    n_figures: int = 0


def figure_html(fig, div_id: str) -> str:
    """A figure as a ``<div>`` drawn by the page's shared plotly.min.js."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=slug(div_id),
                       config={"displaylogo": False, "responsive": True})


def render(page: Page, nav: Sequence[tuple[str, str]]) -> str:
    """The whole HTML document of a page (``nav``: (filename, title) of every page)."""
    links = " · ".join(
        f'<b>{esc(title)}</b>' if fname == page.filename else f'<a href="{esc(fname)}">{esc(title)}</a>'
        for fname, title in nav
    )
    script = f'<script src="{PLOTLY_JS}" charset="utf-8"></script>' if page.n_figures else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>emoexp · {esc(page.title)}</title>
{script}
<style>{_CSS}</style>
</head>
<body>
<nav>{links}</nav>
<h1>{esc(page.title)}</h1>
<p class="lead">{esc(page.description)}</p>
{page.body}
</body>
</html>
"""


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "") -> str:
    """An HTML table; cells are escaped (run names and params come from users)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def cell(value: Any) -> str:
    if value is None or value == "":
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Code):
        return f"<code>{esc(value)}</code>"
    if isinstance(value, Link):
        return f'<a href="{esc(value.href)}">{esc(value.text)}</a>'
    return esc(value)


class Code(str):
    """A table cell shown as code (run ids)."""


@dataclass(frozen=True)
class Link:
    """A table cell linking to another page of the dashboards."""

    href: str
    text: str


def empty(message: str) -> str:
    return f'<p class="empty">{esc(message)}</p>'


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "figure"


def palette(n: int) -> list[str]:
    """``n`` distinguishable colours (cycling past the palette's end)."""
    from plotly import colors

    base = colors.qualitative.Plotly + colors.qualitative.D3 + colors.qualitative.Dark24
    return [base[i % len(base)] for i in range(n)]


def group_by_task(runs: Iterable[RunView]) -> dict[str, list[RunView]]:
    out: dict[str, list[RunView]] = {}
    for r in runs:
        out.setdefault(r.task or "?", []).append(r)
    return dict(sorted(out.items()))


def compared_params(runs: Sequence[RunView]) -> list[str]:
    """The options worth comparing across ``runs``: the key ones the task has, then every
    other option whose value differs between runs (sampling weights have their own page)."""
    present: dict[str, set[str]] = {}
    for r in runs:
        for k, v in r.params.items():
            if k not in NOT_COMPARED and not k.startswith(T.PARAM_WEIGHT_PREFIX):
                present.setdefault(k, set()).add(v)
    keys = [k for k in KEY_PARAMS if k in present]
    varied = sorted(k for k, vals in present.items()
                    if k not in keys and (len(vals) > 1 or any(k not in r.params for r in runs)))
    return keys + varied


def fmt_param(value: str | None) -> str | None:
    """A param as logged, with long floats shortened (``0.0007501954443620128`` -> ``0.0007502``)."""
    f = as_float(value)
    if f is None or value is None or len(value) <= 8 or not any(ch in value for ch in ".eE"):
        return value
    return f"{f:.4g}"


def varying(runs: Sequence[RunView], keys: Iterable[str]) -> list[str]:
    """The ``keys`` whose value differs between ``runs`` (a key missing on some counts)."""
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def weights_text(weights: dict[str, float]) -> str:
    """Only the classes weighted other than 1 (the default), e.g. ``anger=5, joy=0.5``."""
    changed = [f"{c}={w:g}" for c, w in weights.items() if w != 1.0]
    return ", ".join(changed) if changed else ("all 1" if weights else "")


def as_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def as_int(v: Any) -> int | None:
    f = as_float(v)
    return int(f) if f is not None else None


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em; color: #222; }
nav { font-size: 0.95em; padding-bottom: 0.6em; border-bottom: 1px solid #ddd; }
nav a { color: #1f6feb; text-decoration: none; } nav a:hover { text-decoration: underline; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #eee; }
p.lead { color: #555; margin-top: 0; } p.empty { color: #777; font-style: italic; }
.muted { color: #999; } .note { color: #555; font-size: 0.92em; }
.scroll { overflow-x: auto; max-height: 32em; overflow-y: auto; margin: 0.6em 0; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.25em 0.7em; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; }
tr:hover td { background: #fafbfc; }
code { font-size: 0.92em; color: #444; }
table.index td { white-space: normal; }
"""
