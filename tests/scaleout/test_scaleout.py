"""Scale-out on the team stack (PostgreSQL + MLflow server with basic-auth): two DDP ranks tracked on the server,
two sweep workers on PostgreSQL with one SIGKILLed mid-trial, basic-auth refusal and acceptance,
and a server restart in the middle of a training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import stack as S
from emoexp import tracking as T
from emoexp.cli import main as cli

PER_EPOCH = (T.M_TRAIN_LOSS, T.M_VAL_LOSS, T.M_VAL_ACC, T.M_VAL_F1, T.M_LR)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(k, None)
    return env


def _runs(experiment: str):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _everything(trials, logs) -> str:
    """What a failed sweep-worker check saw: every trial, every run of every experiment, both logs."""
    client = MlflowClient()
    lines = [f"trial {t.number} {t.state.name} {t.params} {t.user_attrs}" for t in trials]
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id], run_view_type=3):
            lines.append(f"{exp.name} {r.info.run_name} {r.info.status} {r.info.lifecycle_stage} "
                         f"trial={r.data.tags.get(T.TAG_TRIAL)} parent={r.data.tags.get('mlflow.parentRunId')}")
    for lg in logs:
        lines.append(f"--- {lg.name}\n" + lg.read_text()[-3000:])
    return "\n".join(lines)


def _steps(run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient().get_metric_history(run_id, key))


def _train_args(features: Path, experiment: str, epochs: int, *extra: str) -> list[str]:
    return ["train", "train_classifier", "--data-dir", str(features), "--epochs", str(epochs),
            "--batch-size", "32", "--log-model", "false", "--experiment-name", experiment, *extra]


@pytest.mark.slow(reason="35 s: torchrun against the HTTP server; the fast suite keeps two ranks logging one run "
                  "(tests/test_ddp.py) and training on the server (the sweep-worker test below)")
def test_two_ranks_log_one_run_on_the_server(on_server, features_data):
    res = subprocess.run([sys.executable, "-m", "emoexp", *_train_args(features_data, "so-ddp", 1, "--nproc", "2")],
                         env=_env(), capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = _runs("so-ddp")  # rank 0 logs the one run
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the tracking server
    for key in PER_EPOCH:
        assert _steps(run.info.run_id, key) == [1], key
    arts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, T.ART_CKPT_DIR)}
    assert "checkpoints/last.pt" in arts


def test_two_sweep_workers_on_postgres_survive_a_killed_one(on_server, features_data, tmp_path):
    """Worker A is SIGKILLed mid-trial; B notices the stopped heartbeat, runs A's trial again and
    the study ends with exactly the asked number of COMPLETE trials."""
    import optuna

    n, study = 2, "so-workers"
    storage = on_server.optuna_storage
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}\n")
    cmd = [sys.executable, "-m", "emoexp", "sweep", "train_classifier", "--n-trials", str(n), "--storage", storage,
           "--study-name", study, "--space", str(space), "--pruner", "none", "--heartbeat", "1",
           "--data-dir", str(features_data), "--epochs", "15", "--log-model", "false", "--checkpoint-every", "0",
           "--experiment-name", "so-sweep"]
    env = _env(OMP_NUM_THREADS="1")
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=open(lg, "wb"), stderr=subprocess.STDOUT,
                              start_new_session=True) for lg in logs]
    victim = None
    try:
        deadline = time.monotonic() + 240
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                st = optuna.load_study(study_name=study, storage=storage)
            except Exception:  # not created yet
                continue
            for t in st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                pid = int(t.user_attrs.get("emoexp.worker", ":0").rsplit(":", 1)[1])
                runs = _runs("so-sweep")
                mine = [r for r in runs if r.data.tags.get(T.TAG_TRIAL) == str(t.number)]
                if pid in {p.pid for p in procs} and mine and _steps(mine[0].info.run_id, T.M_TRAIN_LOSS):
                    victim = next(p for p in procs if p.pid == pid)  # mid-trial: an epoch is logged
                    break
        assert victim is not None, "no worker got a trial under way: " + logs[0].read_text()[-2000:]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        survivor = next(p for p in procs if p is not victim)
        assert survivor.wait(timeout=300) == 0, logs[procs.index(survivor)].read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    states = [t.state.name for t in trials if not t.user_attrs.get("emoexp.surplus")]
    assert states.count("COMPLETE") == n and states.count("FAIL") == 1, states
    assert not {"RUNNING", "WAITING"} & set(states)
    (lost,) = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("emoexp.surplus")]
    assert any(t.params == lost.params and t.state.name == "COMPLETE" for t in trials)  # run again
    runs = [r for r in _runs("so-sweep") if T.TAG_TRIAL in r.data.tags]
    assert sorted(r.info.status for r in runs) == ["FAILED"] + ["FINISHED"] * n, _everything(trials, logs)
    (failed,) = [r for r in runs if r.info.status == "FAILED"]
    assert failed.data.tags[T.TAG_STOP_REASON] == "worker_lost"


def test_basic_auth_refuses_without_a_login_and_accepts_one(on_server, features_data, monkeypatch):
    args = _train_args(features_data, "so-auth", 1, "--checkpoint-every", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1].startswith("Error: ")
    assert "wants a login" in refused.output and "Traceback" not in refused.output
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    wrong = CliRunner().invoke(cli, ["runs", "list"])
    assert wrong.exit_code == 1 and "refused the login of 'admin'" in wrong.output
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", on_server.admin_password)
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    (run,) = _runs("so-auth")
    assert run.info.status == "FINISHED"


@pytest.mark.slow(reason="40 s: stops and restarts the fixture's MLflow server; the fast suite keeps the DDP and sweep-worker scale-out tests")
def test_a_server_restart_mid_training_loses_no_metric(on_server, features_data):
    """At the end of epoch 2 the server stops; it is started again while the training goes on.
    The client's retries (emoexp's defaults) carry every later call over the outage."""
    from emoexp import engine
    from emoexp.config import apply_overrides
    from emoexp.tasks import get_task

    task = get_task("train_classifier")
    cfg = apply_overrides(task.default_config(), {
        "data_dir": str(features_data), "epochs": 5, "batch_size": 32, "log_model": False,
        "experiment_name": "so-restart"})
    restarted = threading.Event()
    outage: dict[str, float] = {}

    def restart() -> None:
        on_server.mlflow_pid = S.start_mlflow(on_server)
        outage["s"] = time.monotonic() - outage["t0"]
        restarted.set()

    def on_epoch(epoch, metrics) -> bool:
        if epoch == 2:
            assert S.stop_mlflow(on_server)
            assert not S.http_ok(f"{on_server.tracking_uri}/health")
            outage["t0"] = time.monotonic()
            threading.Thread(target=restart, daemon=True).start()
        return False

    result = engine.fit(task, cfg, epoch_callback=on_epoch)
    assert restarted.wait(timeout=200)
    S._save(on_server)  # the new pid, for the session's `down`
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED", run.info.status
    for key in PER_EPOCH:
        assert _steps(result.run_id, key) == [1, 2, 3, 4, 5], key
    arts = {a.path for a in MlflowClient().list_artifacts(result.run_id, T.ART_CKPT_DIR)}
    assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= arts
    assert outage["s"] > 1.0  # the server was really away
