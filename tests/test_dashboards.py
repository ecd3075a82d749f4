"""The dashboards: built from real runs (a run, a branch of it, a two-trial sweep), every page
written and linked, the runs on them, an empty store, the CLI, and the pages drawn in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from emoexp.cli import main as cli

EXPERIMENT = "dash"
PAGES = ("runs.html", "curves.html", "class_f1.html", "lineage.html", "sweeps.html")


@pytest.fixture(scope="module")
def dash_runs(faced_root, tmp_path_factory) -> SimpleNamespace:
    """A root run, a branch of it with anger reweighted, and a two-trial sweep, in one experiment."""
    from emoexp import engine
    from emoexp.config import apply_overrides
    from emoexp.sweeps import run_sweep
    from emoexp.tasks import get_task

    work = tmp_path_factory.mktemp("dash")
    overrides = {"data_dir": str(faced_root), "epochs": 2, "window_size": 256, "stride": 512,
                 "max_subjects": 3, "experiment_name": EXPERIMENT, "log_model": False}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)   # checkpoint staging (.emoexp/) stays in the temp folder
        task = get_task("pretrain_faced")
        root = engine.fit(task, apply_overrides(task.default_config(), overrides))
        branch = engine.branch(f"runs:/{root.run_id}/checkpoints/last.pt",
                               {"epochs": 1, "weights": "anger=5", "log_model": False})
        space = work / "space.yaml"
        space.write_text("lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
                         "dropout: {type: float, low: 0.1, high: 0.5}\n")
        storage = f"sqlite:///{work / 'optuna.db'}"
        sweep = run_sweep("pretrain_faced", {**overrides, "epochs": 1}, n_trials=2, storage=storage,
                          study_name="dash-study", space=str(space), pruner="none", experiment_name=EXPERIMENT)
    from mlflow import MlflowClient

    client = MlflowClient()
    trials = [r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id], filter_string="tags.`emoexp.study` = 'dash-study'")]
    return SimpleNamespace(root=root.run_id, branch=branch.run_id, sweep=sweep, storage=storage,
                           trials=[t for t in trials if t != sweep.parent_run_id],
                           names={rid: client.get_run(rid).info.run_name for rid in trials + [root.run_id, branch.run_id]})


@pytest.fixture(scope="module")
def built(dash_runs, tmp_path_factory) -> Path:
    from emoexp.dashboards import build_dashboards

    out = tmp_path_factory.mktemp("dash-out") / "dashboards"
    return build_dashboards(experiment=EXPERIMENT, out_dir=str(out), optuna_storage=dash_runs.storage)


def test_every_page_is_written_linked_and_offline(built):
    out = built.parent
    index = built.read_text()
    for page in PAGES:
        assert (out / page).is_file(), page
        assert f'href="{page}"' in index, page
    assert (out / "plotly.min.js").stat().st_size > 1_000_000   # one local copy for all pages
    for page in ("index.html", *PAGES):
        text = (out / page).read_text()
        assert "cdn.plot.ly" not in text and not re.search(r"<script[^>]+src=\"https?:", text), page
        assert "plotly.min.js" in text or page == "index.html"
    assert "4 runs of 1 task" in index   # root, branch, two trials (not the sweep parent)


def test_pages_show_the_runs(built, dash_runs):
    out = built.parent
    text = {p: (out / p).read_text() for p in PAGES}
    for rid in (dash_runs.root, dash_runs.branch, *dash_runs.trials):
        assert rid in text["runs.html"], rid
        assert dash_runs.names[rid] in text["runs.html"]
    assert "Parcoords" in text["runs.html"] or "parcoords" in text["runs.html"]
    for rid in (dash_runs.root, dash_runs.branch):
        assert dash_runs.names[rid] in text["curves.html"]
    assert "anger" in text["class_f1.html"] and "class-f1-change-pretrain_faced" in text["class_f1.html"]
    lineage = text["lineage.html"]
    assert dash_runs.branch in lineage and dash_runs.root in lineage
    assert "anger 1→5" in lineage and "e2: anger 1" in lineage    # branched at epoch 2 (the label)
    sweeps = text["sweeps.html"]
    assert "dash-study" in sweeps and dash_runs.sweep.parent_run_id in sweeps
    assert all(t in sweeps for t in dash_runs.trials)
    assert "best so far" in sweeps
    assert "optuna-history-dash-study" in sweeps and "optuna-importances-dash-study" in sweeps


def test_an_empty_store_gives_pages_that_say_so(tmp_path, monkeypatch):
    import mlflow

    from emoexp.dashboards import build_dashboards

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        index = build_dashboards(out_dir=str(tmp_path / "out"))
    finally:
        mlflow.set_tracking_uri(old)
    assert "No training runs" in index.read_text()
    for page in PAGES:
        text = (index.parent / page).read_text()
        assert 'class="empty"' in text and "Plotly.newPlot" not in text, page


def test_unknown_experiment_is_one_clear_line(dash_runs, tmp_path):
    res = CliRunner().invoke(cli, ["dashboard", "--experiment", "no-such-experiment", "--out", str(tmp_path)])
    assert res.exit_code != 0
    assert "experiment 'no-such-experiment' not found" in res.output and EXPERIMENT in res.output


def test_cli_prints_the_index(dash_runs, tmp_path):
    out = tmp_path / "d"
    res = CliRunner().invoke(cli, ["dashboard", "--experiment", EXPERIMENT, "--out", str(out),
                                   "--metric", "best_val_macro_f1"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(out / "index.html")
    sweeps = (out / "sweeps.html").read_text()
    # No storage given and no ./optuna.db: the page says how to get Optuna's plots.
    assert "--optuna-storage" in sweeps and "optuna-history" not in sweeps


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("chromium not found: install the Debian package `chromium` "
                    "(apt-get install -y chromium); .ci/run does so")
    return exe


def _dom(exe: str, page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran (virtual time lets plotly finish drawing)."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
           "--dump-dom", page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_pages_draw_in_a_browser(built, tmp_path):
    exe = _chromium()
    pages = ["index.html", *PAGES]
    # Two at a time: each Chromium is mostly waiting on its own start-up.
    with ThreadPoolExecutor(max_workers=2) as pool:
        doms = dict(zip(pages, pool.map(lambda p: _dom(exe, built.parent / p, tmp_path / p), pages)))
    for page in PAGES:
        n_figures = (built.parent / page).read_text().count("Plotly.newPlot(")
        assert n_figures >= 1, page
        dom = doms[page]
        drawn = len(re.findall(r'class="plot-container', dom))
        assert drawn == n_figures, f"{page}: {drawn} of {n_figures} figures drawn"
        assert dom.count('class="main-svg"') >= n_figures, page
        assert "WebGL is not supported" not in dom, page
    for page in PAGES:
        assert f'href="{page}"' in doms["index.html"]


def test_odd_runs_do_not_break_a_page():
    """A failed run with nothing logged, a branch whose parent is gone, a zero weight, a pruned
    trial, a study without its parent run: every page still builds (no MLflow needed)."""
    from emoexp import tracking as T
    from emoexp.dashboards import PAGES as MODULES
    from emoexp.dashboards import lineage
    from emoexp.dashboards._common import RunView, Snapshot

    class NoHistory:
        def get_metric_history(self, run_id, key):
            return []

    def run(rid, **kw) -> RunView:
        base = {"name": rid, "experiment": "x", "status": "FINISHED", "start_time": len(rid),
                "params": {}, "metrics": {}, "tags": {T.TAG_TASK: "pretrain_faced"}}
        return RunView(run_id=rid, **{**base, **kw})

    runs = [
        run("failed", status="FAILED"),
        run("orphan", params={"sampling_weight.anger": "0", "lr": "0.1"},
            metrics={"val_f1.anger": 0.2, T.M_BEST_VAL_F1: 0.3},
            tags={T.TAG_TASK: "pretrain_faced", T.TAG_PARENT_RUN: "gone", T.TAG_RESUMED_EPOCH: "3"}),
        run("pruned", metrics={T.M_BEST_VAL_F1: 0.1},
            tags={T.TAG_TASK: "pretrain_faced", T.TAG_STUDY: "s", T.TAG_TRIAL: "0", T.TAG_STOP_REASON: "pruned"}),
        run("pipeline", tags={}),
    ]
    snap = Snapshot(runs=runs, experiments=["x"], tracking_uri="sqlite://", metric=T.M_VAL_F1,
                    optuna_storage=None, truncated=False, client=NoHistory())
    for mod in MODULES:
        page = mod.build(snap)
        assert page.body and page.count, mod.__name__
    assert "orphan" in lineage.build(snap).body        # drawn as a root, its parent not loaded
