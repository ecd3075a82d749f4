"""Every emoexp command against the team stack's HTTP server (basic-auth on, logged in), and the
stack's own commands on an existing PostgreSQL (``--postgres-url``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import engine
from emoexp import stack as S
from emoexp import tracking as T
from emoexp.cli import main as cli

pytestmark = pytest.mark.slow  # ~4 min on 2 cores: a dozen commands, a killed run, a model server


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, f"{args}: {res.output[-3000:]}"
    return res.output


def _only_run(experiment: str):
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                filter_string=f"tags.`{T.TAG_TASK}` = 'train_classifier'")
    return run


def test_every_command_works_on_the_http_server(on_server, features_data, tmp_path, model_server):
    data = ["--data-dir", str(features_data), "--batch-size", "32"]
    _ok(["train", "train_classifier", *data, "--epochs", "2", "--experiment-name", "so-cmd"])
    parent = _only_run("so-cmd").info.run_id
    # branch from the server's artifact, and continue a killed run
    out = _ok(["resume", f"runs:/{parent}/checkpoints/last.pt", "--epochs", "1"])
    assert "a branch" in out
    env = {**os.environ, engine.FAULT_ENV: "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    killed = subprocess.run([sys.executable, "-m", "emoexp", "train", "train_classifier", *data, "--epochs", "3",
                             "--log-model", "false", "--experiment-name", "so-kill"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode != 0
    victim = _only_run("so-kill").info.run_id
    env.pop(engine.FAULT_ENV)
    # in a process of its own, as after a crash (in this one, set_experiment of the calls above
    # would clash with the run's experiment)
    cont = subprocess.run([sys.executable, "-m", "emoexp", "resume", "--run", victim], env=env, capture_output=True,
                          text=True, timeout=300)
    assert cont.returncode == 0, cont.stderr[-3000:]
    assert MlflowClient().get_run(victim).info.status == "FINISHED"
    assert sorted(m.step for m in MlflowClient().get_metric_history(victim, T.M_VAL_F1)) == [1, 2, 3]
    # a sweep on the stack's PostgreSQL (--storage from EMOEXP_OPTUNA_STORAGE)
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}\n")
    out = _ok(["sweep", "train_classifier", "--n-trials", "2", "--study-name", "so-cmd", "--space", str(space),
               "--pruner", "none", *data, "--epochs", "2", "--log-model", "false", "--experiment-name", "so-cmd-sweep"])
    assert "2 trials (2 complete)" in out, out[-1500:]
    # cross-validation with the baseline, its folds claimed as params on the server's parent run
    _ok(["cv", "train_classifier", *data, "--epochs", "1", "--folds", "kfold:2", "--baseline",
         "--experiment-name", "so-cv"])
    client = MlflowClient()
    cv_runs = client.search_runs([client.get_experiment_by_name("so-cv").experiment_id])
    (cv_parent,) = [r for r in cv_runs if T.TAG_CV_SCHEME in r.data.tags and "mlflow.parentRunId" not in r.data.tags]
    assert {"test_macro_f1_mean", "baseline.test_macro_f1_mean"} <= set(cv_parent.data.metrics)
    # registry, evaluation, lists, dashboards
    assert "@staging" in _ok(["promote", "features", "--experiment", "so-cmd"])
    assert "emoexp-classifier" in _ok(["registry", "list"])
    _ok(["evaluate", "models:/emoexp-classifier@staging", "--data", str(features_data), "--out", str(tmp_path / "ev")])
    assert victim in _ok(["runs", "list", "--task", "train_classifier"])
    _ok(["runs", "lineage", parent])
    index = _ok(["dashboard", "--out", str(tmp_path / "dash")]).strip().splitlines()[-1]
    assert "so-cmd" in (Path(index).parent / "sweeps.html").read_text()
    # serving the registry's model, fetched from the server
    import pandas as pd

    feats = pd.read_csv(features_data / "features.csv").drop(columns=["sample_id"]).to_numpy()[:2]
    with model_server("models:/emoexp-classifier@staging", tmp_path / "serve.log") as url:
        import urllib.request

        req = urllib.request.Request(f"{url}/invocations", data=json.dumps(
            {"inputs": {"features": feats.tolist()}}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            preds = json.loads(r.read())["predictions"]
    assert len(preds) == 2 and "label" in preds[0]


def test_stack_commands_on_an_existing_postgres(team_stack, tmp_path):
    d = tmp_path / "second"
    out = CliRunner().invoke(cli, ["stack", "up", "--dir", str(d), "--port", str(S.free_port()),
                                   "--postgres-url", team_stack.pg_url])
    assert out.exit_code == 0, out.output
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:" in out.output
    assert "export EMOEXP_OPTUNA_STORAGE=postgresql://" in out.output
    try:
        status = CliRunner().invoke(cli, ["stack", "status", "--dir", str(d)])
        assert status.exit_code == 0 and "mlflow    up" in status.output and "postgres  up" in status.output
        busy = CliRunner().invoke(cli, ["stack", "up", "--dir", str(tmp_path / "third"), "--port",
                                        str(S.load(d).port), "--postgres-url", team_stack.pg_url])
        assert busy.exit_code == 1 and "is in use" in busy.output
    finally:
        assert CliRunner().invoke(cli, ["stack", "down", "--dir", str(d)]).exit_code == 0
    status = CliRunner().invoke(cli, ["stack", "status", "--dir", str(d)])
    assert status.exit_code == 1 and "mlflow    DOWN" in status.output and "postgres  up" in status.output
