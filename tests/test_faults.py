"""Faults and bad inputs (issue 16 section 6): runs killed at any point (real SIGKILL of real
`python -m emoexp` processes) are seen as dead and continued to the end; checkpoints fall back and
complete; killed sweeps reattach and finish; models from elsewhere run no code in emoexp's
commands; settings are checked before any data is read; hints are right."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import engine, faults, liveness
from emoexp import tracking as T
from emoexp.cli import main as cli
from emoexp.config import ConfigError, apply_overrides
from emoexp.tasks import get_task


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    from emoexp.data.synth_posture import synth_features

    return Path(synth_features(tmp_path_factory.mktemp("features") / "f", subjects=4, seed=0, n=240))


def _env(**extra: str) -> dict[str, str]:
    """A `python -m emoexp` child: the venv first on PATH; bytecode written and read where Python
    keeps it (PYTHONDONTWRITEBYTECODE would make every child compile torch and mlflow again)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", faults.ENV, engine.FAULT_ENV)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _killed(args: list[str], fault: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run `python -m emoexp ARGS` until it SIGKILLs itself at ``fault`` (emoexp.faults)."""
    proc = subprocess.run([sys.executable, "-m", "emoexp", *args], env=_env(**{faults.ENV: fault}),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-3000:])
    return proc


def _train_args(features: Path, experiment: str, *extra: str) -> list[str]:
    return ["train", "train_classifier", "--data-dir", str(features), "--epochs", "3", "--batch-size", "32",
            "--seed", "5", "--checkpoint-every", "1", "--patience", "0", "--experiment-name", experiment, *extra]


def _runs(experiment: str, status: str | None = None):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    filt = f"attributes.status = '{status}'" if status else ""
    return client.search_runs([exp.experiment_id], filter_string=filt)


def _curve(run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient().get_metric_history(run_id, key)}


def _stored_checkpoints(run_id: str) -> set[str]:
    return {a.path.rsplit("/", 1)[-1] for a in MlflowClient().list_artifacts(run_id, T.ART_CKPT_DIR)}


def _reference(features: Path, experiment: str, **kw):
    task = get_task("train_classifier")
    cfg = apply_overrides(task.default_config(), {
        "data_dir": str(features), "epochs": 3, "batch_size": 32, "seed": 5, "checkpoint_every": 1,
        "patience": 0, "experiment_name": experiment, "log_model": False, **kw})
    return engine.fit(task, cfg)


def _same_curves(run_id: str, ref_id: str, epochs: int = 3) -> None:
    for key in (T.M_TRAIN_LOSS, T.M_VAL_LOSS, T.M_VAL_F1, T.M_LR):
        got, want = _curve(run_id, key), _curve(ref_id, key)
        assert sorted(got) == list(range(1, epochs + 1)), (key, got)
        np.testing.assert_allclose([got[e] for e in got], [want[e] for e in got], rtol=1e-5, atol=1e-6,
                                   err_msg=key)


def _complete_set(run_id: str, local_dir: Path, epochs: int = 3) -> None:
    want = {T.ART_LAST, T.ART_BEST, *(T.epoch_checkpoint_name(e) for e in range(1, epochs + 1))}
    assert _stored_checkpoints(run_id) == want
    assert {p.name for p in local_dir.iterdir()} == want  # and no temporary file of a killed write
    from emoexp.checkpoints import load_checkpoint

    assert load_checkpoint(local_dir / T.ART_LAST)["epoch"] == epochs
    for e in range(1, epochs + 1):
        assert load_checkpoint(local_dir / T.epoch_checkpoint_name(e))["epoch"] == e


# ----------------------------------------------------------------------------------------------
# Killed runs


def test_run_killed_during_log_model_is_seen_dead_and_continue_finishes_it(features):
    """The issue's case: SIGKILL inside log_model left the run RUNNING, its model PENDING, and
    `resume --run` answered "nothing to do"."""
    _killed(_train_args(features, "kill-model", "--epochs", "2"), "log_model")
    (run,) = _runs("kill-model")
    run_id = run.info.run_id
    assert run.info.status == "RUNNING"
    tags = run.data.tags
    assert tags[T.TAG_HOST] == liveness.hostname() and int(tags[T.TAG_PID]) != os.getpid()
    assert T.run_liveness(run).dead
    assert [str(m.status) for m in T.logged_models(run_id)] == ["PENDING"]

    listed = CliRunner().invoke(cli, ["runs", "list", "--experiment", "kill-model"])
    assert listed.exit_code == 0, listed.output
    row = next(ln for ln in listed.output.splitlines() if ln.startswith(run_id))
    assert " DEAD " in row
    assert f"emoexp resume --run {run_id}" in listed.output and f"mark-killed {run_id}" in listed.output

    res = CliRunner().invoke(cli, ["resume", "--run", run_id])
    assert res.exit_code == 0, res.output
    assert f"model: runs:/{run_id}/model" in res.output
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[T.TAG_STOP_REASON] == "completed"
    assert T.M_TEST_ACC in run.data.metrics and T.M_BEST_VAL_F1 in run.data.metrics
    assert [str(m.status) for m in T.logged_models(run_id)] == ["READY"]  # the PENDING one is gone
    from emoexp.apps.predict import load_model

    model, _ = load_model(f"runs:/{run_id}/model")
    assert model.task.name == "train_classifier"
    assert T.run_liveness(run) is None
    assert "DEAD" not in CliRunner().invoke(cli, ["runs", "list", "--experiment", "kill-model"]).output


def test_kill_mid_checkpoint_write_continues_to_the_same_run_with_every_checkpoint(features, tmp_path, caplog):
    """SIGKILL while epoch 2's second checkpoint file is half written (its temp file left behind;
    epoch_002.pt in place, last.pt still at epoch 1, nothing of epoch 2 uploaded): the continue
    starts from epoch_002.pt, removes the temp file, completes and uploads epoch 2's set, and ends
    with the curves and checkpoints of an uninterrupted run."""
    ref = CliRunner().invoke(cli, _train_args(features, "kill-ckpt-ref", "--log-model", "false"))
    assert ref.exit_code == 0, ref.output
    assert "model:" not in ref.output  # --log-model false: no model line for a model that does not exist
    (ref_run,) = _runs("kill-ckpt-ref")

    _killed(_train_args(features, "kill-ckpt", "--log-model", "false"), "checkpoint_tmp@2#2")
    (run,) = _runs("kill-ckpt", "RUNNING")
    run_id = run.info.run_id
    local = tmp_path / ".emoexp" / "runs" / run_id / T.ART_CKPT_DIR
    assert any(p.name.endswith(".tmp") for p in local.iterdir()), list(local.iterdir())
    assert T.epoch_checkpoint_name(2) in {p.name for p in local.iterdir()}
    assert T.epoch_checkpoint_name(2) not in _stored_checkpoints(run_id)

    res = CliRunner().invoke(cli, ["resume", "--run", run_id])
    assert res.exit_code == 0, res.output
    assert "epoch_002.pt (epoch 2) is newer than last.pt" in caplog.text
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[T.TAG_CONTINUED] == "2"
    _same_curves(run_id, ref_run.info.run_id)
    _complete_set(run_id, local)


@pytest.mark.slow(reason="one `python -m emoexp` process killed per point (~30 s each on 2 cores)")
@pytest.mark.parametrize("fault", ["checkpoint_tmp@3", "checkpoint_file@2#1", "upload@2", "epoch_end@2",
                                   "checkpoint_file@3#2", "log_model", "before_status"])
def test_killed_at_any_point_continues_to_the_uninterrupted_result(features, tmp_path, fault):
    experiment = "kill-" + fault.replace("@", "-").replace("#", "-")
    ref = _reference(features, experiment + "-ref")
    _killed(_train_args(features, experiment, "--log-model", "true"), fault)
    (run,) = _runs(experiment)
    run_id = run.info.run_id
    assert run.info.status == "RUNNING" and T.run_liveness(run).dead
    res = CliRunner().invoke(cli, ["resume", "--run", run_id])
    assert res.exit_code == 0, res.output
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    _same_curves(run_id, ref.run_id)
    _complete_set(run_id, tmp_path / ".emoexp" / "runs" / run_id / T.ART_CKPT_DIR)
    assert [str(m.status) for m in T.logged_models(run_id)] == ["READY"]
    for key in (T.M_TEST_ACC, T.M_BEST_VAL_F1):  # logged once, at the last epoch
        assert [m.step for m in MlflowClient().get_metric_history(run_id, key)] == [3], key


def test_liveness_same_host_by_pid_other_hosts_by_heartbeat():
    me = liveness.this_process()
    assert liveness.check(me["host"], me["pid"], me["start"]).alive
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert liveness.check(me["host"], gone.pid).dead
    # the pid is ours, but it started at another time: a reused pid, the recorded process is gone
    assert liveness.check(me["host"], me["pid"], float(me["start"]) - 3600).dead
    now = time.time()
    assert liveness.check("elsewhere", "42", None, now - 10, 30, now=now).alive
    assert liveness.check("elsewhere", "42", None, now - 100, 30, now=now).dead
    assert liveness.check("elsewhere", "42").state == liveness.UNKNOWN


def test_mark_killed_refuses_a_live_run_and_ends_a_dead_one():
    with T.mlflow_run(experiment_name="mark-killed", run_name="live") as tracker:
        live = tracker.run_id
        res = CliRunner().invoke(cli, ["runs", "mark-killed", live])
        assert res.exit_code == 1 and "is running" in res.output, res.output
        assert MlflowClient().get_run(live).info.status == "RUNNING"
        # a heartbeat thread keeps the tag fresh while the run lives
        assert float(MlflowClient().get_run(live).data.tags[T.TAG_HEARTBEAT]) > time.time() - 60
        with pytest.raises(ValueError, match="still running"):
            engine.plan_continue(live)
    gone = subprocess.Popen(["true"])
    gone.wait()
    client = MlflowClient()
    dead = client.create_run(client.get_experiment_by_name("mark-killed").experiment_id,
                             tags={T.TAG_HOST: liveness.hostname(), T.TAG_PID: str(gone.pid),
                                   T.TAG_TASK: "train_classifier"}).info.run_id
    assert "DEAD" in CliRunner().invoke(cli, ["runs", "list", "--experiment", "mark-killed"]).output
    res = CliRunner().invoke(cli, ["runs", "mark-killed", dead])
    assert res.exit_code == 0 and "KILLED" in res.output, res.output
    run = client.get_run(dead)
    assert run.info.status == "KILLED" and run.data.tags[T.TAG_STOP_REASON] == "killed"
    assert f"process {gone.pid}" in run.data.tags[T.TAG_KILLED_WHY]
    # `mlflow run` made a run, then its step failed before emoexp started: no process ever recorded
    exp_id = client.get_experiment_by_name("mark-killed").experiment_id
    orphan = client.create_run(exp_id, start_time=int((time.time() - 3600) * 1000),
                               tags={"mlflow.project.entryPoint": "train_classifier"}).info.run_id
    fresh = client.create_run(exp_id, tags={"mlflow.project.entryPoint": "train_classifier"}).info.run_id
    listed = CliRunner().invoke(cli, ["runs", "list", "--experiment", "mark-killed"]).output
    assert f"DEAD {orphan}: RUNNING, but RUNNING for 60 min and no emoexp process" in listed, listed
    assert fresh not in listed  # it may still be starting
    res = CliRunner().invoke(cli, ["runs", "mark-killed", orphan, fresh])
    assert res.exit_code == 1 and "--force ends it anyway" in res.output, res.output
    assert [client.get_run(r).info.status for r in (orphan, fresh)] == ["KILLED", "RUNNING"]
    assert CliRunner().invoke(cli, ["runs", "mark-killed", "--force", fresh]).exit_code == 0
    assert client.get_run(fresh).info.status == "KILLED"


# ----------------------------------------------------------------------------------------------
# Checkpoint fallback


def test_unreadable_last_checkpoint_falls_back_to_the_newest_readable_one(features, tmp_path, caplog):
    """last.pt truncated in the stage and random bytes in the artifact store: the continue says so
    and starts from epoch_002.pt, and the run ends as an uninterrupted one."""
    ref = _reference(features, "fallback-ref")
    task = get_task("train_classifier")
    cfg = apply_overrides(task.default_config(), {
        "data_dir": str(features), "epochs": 3, "batch_size": 32, "seed": 5, "checkpoint_every": 1,
        "patience": 0, "experiment_name": "fallback", "log_model": False})

    def crash(epoch, metrics):
        if epoch == 2:
            raise RuntimeError("injected crash after epoch 2")

    with pytest.raises(RuntimeError):
        engine.fit(task, cfg, epoch_callback=crash)
    (run,) = _runs("fallback")
    run_id = run.info.run_id
    assert run.info.status == "FAILED"
    stage = tmp_path / ".emoexp" / "runs" / run_id / T.ART_CKPT_DIR / T.ART_LAST
    stage.write_bytes(stage.read_bytes()[:1000])
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / T.ART_CKPT_DIR / T.ART_LAST
    assert stored.is_file()
    stored.write_bytes(np.random.default_rng(0).bytes(4096))

    res = CliRunner().invoke(cli, ["resume", "--run", run_id])
    assert res.exit_code == 0, res.output
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "unreadable" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert said[0].count("last.pt") == 2 and "unreadable; continuing from" in said[0]  # stage and artifact
    assert "epoch_002.pt (epoch 2), the newest readable checkpoint" in said[0]
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    _same_curves(run_id, ref.run_id)
    _complete_set(run_id, stage.parent)


def test_no_readable_checkpoint_is_one_line_naming_what_was_tried(features, tmp_path):
    client = MlflowClient()
    exp = client.get_experiment_by_name("fallback-none") or client.get_experiment(
        client.create_experiment("fallback-none"))
    run_id = client.create_run(exp.experiment_id).info.run_id
    client.set_terminated(run_id, "FAILED")
    stage = tmp_path / ".emoexp" / "runs" / run_id / T.ART_CKPT_DIR
    stage.mkdir(parents=True)
    (stage / T.ART_LAST).write_bytes(b"\x00" * 100)
    res = CliRunner().invoke(cli, ["resume", "--run", run_id])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no readable checkpoint" in res.output and "last.pt" in res.output
    assert f"emoexp runs mark-killed {run_id}" in res.output


# ----------------------------------------------------------------------------------------------
# Killed sweeps


def test_killed_sweep_restarted_at_once_reattaches_and_ends_with_the_asked_trials(features, tmp_path):
    """SIGKILL the worker in its second trial; the same command again, at once (no grace period:
    the dead worker ran on this host), reattaches to the sweep run, queues the lost trial again and
    ends with exactly 3 COMPLETE trials; no run is left RUNNING."""
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["sweep", "train_classifier", "--n-trials", "3", "--storage", storage, "--study-name", "killed",
            "--space", str(space), "--pruner", "none", "--heartbeat", "60", "--data-dir", str(features),
            "--epochs", "2", "--batch-size", "32", "--log-model", "false", "--experiment-name", "kill-sweep"]
    _killed(args, "epoch_end@1#2")
    (parent,) = [r for r in _runs("kill-sweep") if r.data.tags.get(T.TAG_SWEEP) == T.SWEEP_PARENT]
    assert parent.info.status == "RUNNING" and T.run_liveness(parent).dead

    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1 and "RUNNING" not in states, states
    lost = next(t for t in trials if t.state.name == "FAIL")
    assert any(t.params == lost.params and t.state.name == "COMPLETE" for t in trials if t is not lost)
    runs = _runs("kill-sweep")
    parents = [r for r in runs if r.data.tags.get(T.TAG_SWEEP) == T.SWEEP_PARENT]
    assert [r.info.run_id for r in parents] == [parent.info.run_id]  # reattached, not a new one
    assert parents[0].info.status == "FINISHED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1 and failed[0].data.tags[T.TAG_STOP_REASON] == "worker_lost"
    trial_runs = [r for r in runs if r.data.tags.get(T.TAG_TRIAL) is not None and r.info.status == "FINISHED"]
    assert len(trial_runs) == 3
    assert all(r.data.tags[T.MLFLOW_PARENT_RUN] == parent.info.run_id for r in trial_runs)


# ----------------------------------------------------------------------------------------------
# Models from elsewhere run no code in emoexp's commands


class _Payload:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def faced_model(faced_root, tmp_path_factory) -> Path:
    """A logged pretrain_faced model, downloaded as a folder."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("faced-model"))
    try:
        task = get_task("pretrain_faced")
        cfg = apply_overrides(task.default_config(), {
            "data_dir": str(faced_root), "epochs": 1, "window_size": 256, "stride": 256, "max_subjects": 3,
            "experiment_name": "faults-model", "log_model": True, "checkpoint_every": 0})
        result = engine.fit(task, cfg)
        out = tmp_path_factory.mktemp("downloaded")
        return Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(out)))
    finally:
        os.chdir(cwd)


def _crafted(model_dir: Path, tmp_path: Path, what: str = "python_model.pkl") -> tuple[Path, Path]:
    import shutil

    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted"
    shutil.copytree(model_dir, crafted)
    target = crafted / what if what == "python_model.pkl" else next(crafted.rglob("checkpoint.pt"))
    target.write_bytes(pickle.dumps(_Payload(marker)))
    return crafted, marker


def test_emoexp_commands_never_unpickle_a_models_python_model(faced_model, faced_root, tmp_path):
    crafted, marker = _crafted(faced_model, tmp_path)
    rec = tmp_path / "rec.npy"
    np.save(rec, np.random.default_rng(0).standard_normal((30, 600)).astype(np.float32))
    res = CliRunner().invoke(cli, ["predict", str(crafted), str(rec)])
    assert res.exit_code == 0, res.output
    assert "rec.npy" in res.output and not marker.exists()
    for cmd in (["listen", str(crafted), "--input", str(rec)],                 # a speech model is needed
                ["predict-video", str(crafted), str(rec)]):                     # a face model is needed
        res = CliRunner().invoke(cli, cmd)
        assert res.exit_code != 0 and "pretrain_faced model, not a" in res.output, res.output
        assert not marker.exists()
    res = CliRunner().invoke(cli, ["evaluate", str(crafted), "--data", str(faced_root), "--split", "val",
                                   "--new-run", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert not marker.exists()
    # what the README warns of: MLflow's own loader (and `mlflow models serve`) runs the model's code
    with pytest.raises(AttributeError):  # the payload ran, then the int it returned is no model
        mlflow.pyfunc.load_model(str(crafted))
    assert marker.exists()


def test_a_crafted_checkpoint_is_refused_in_one_line(faced_model, tmp_path):
    crafted, marker = _crafted(faced_model, tmp_path, "checkpoint.pt")
    rec = tmp_path / "rec.npy"
    np.save(rec, np.zeros((30, 300), np.float32))
    res = CliRunner().invoke(cli, ["predict", str(crafted), str(rec)])
    assert res.exit_code == 1 and "weights_only" in res.output and "Traceback" not in res.output, res.output
    assert not marker.exists()


def test_predict_answers_the_good_files_and_names_the_bad_ones(faced_model, tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.random.default_rng(0).standard_normal((30, 600)).astype(np.float32))
    nan = np.random.default_rng(1).standard_normal((30, 600)).astype(np.float32)
    nan[3, 10:20] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "shape.npy", np.zeros((7, 600), np.float32))
    (tmp_path / "notes.txt").write_text("hello")
    files = [str(good), str(tmp_path / "nan.npy"), str(tmp_path / "shape.npy"), str(tmp_path / "notes.txt"),
             str(tmp_path / "missing.npy")]
    res = CliRunner().invoke(cli, ["predict", str(faced_model), *files, "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    import pandas as pd

    df = pd.read_csv(tmp_path / "p.csv")
    assert set(df["file"]) == {str(good)} and len(df) == 2
    assert f"{tmp_path / 'nan.npy'}: segment 0: eeg holds 10 NaN or infinite value(s)" in res.output
    assert f"{tmp_path / 'shape.npy'}: array has shape (7, 600)" in res.output
    assert f"{tmp_path / 'notes.txt'}: unknown file type '.txt'" in res.output
    assert f"{tmp_path / 'missing.npy'}: no such file" in res.output


def test_serving_errors_carry_no_stack_trace(faced_model):
    """MLflow's scoring server answers an exception from predict with 400 and, for anything but
    an MlflowException, the server's traceback; emoexp's model raises only one-line reasons."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations

    model = mlflow.pyfunc.load_model(str(faced_model))  # our own model: the server's view of it
    schema = model.metadata.get_input_schema()
    good = {"eeg": np.zeros((2, 30, 256)).tolist()}
    cases = [({"eeg": np.zeros((2, 7, 256)).tolist()}, "got (2, 7, 256)"),       # channels
             ({"eeg": [[["a"] * 256] * 30]}, "not a regular array of numbers"),  # not numbers
             (good, "RuntimeError: out of memory")]                             # the network fails
    network = model.unwrap_python_model().model
    for inputs, reason in cases:
        if reason.startswith("RuntimeError"):
            def fail(*a, **k):
                raise RuntimeError("out of memory\nmore lines of a torch error")

            network.forward = fail
        with pytest.raises(MlflowException) as info:
            invocations(json.dumps({"inputs": inputs}), "application/json", model, schema)
        body = json.loads(info.value.serialize_as_json())
        assert "stack_trace" not in body and "Traceback" not in body["message"], body
        assert reason in body["message"] and "\n" not in body["message"], body
        assert info.value.get_http_status_code() == 400


# ----------------------------------------------------------------------------------------------
# Settings checked before any data is read


@pytest.mark.parametrize("extra, env, problem", [
    (["--lr", "nan"], {}, "lr must be a finite number, got nan"),
    (["--patience", "-1"], {}, "patience must be >= 0, got -1"),
    (["--checkpoint-every", "-2"], {}, "checkpoint_every must be >= 0"),
    (["--max-subjects", "-1"], {}, "max_subjects must be >= 0"),
    (["--dropout", "1.5"], {}, "dropout must lie in [0, 1)"),
    (["--monitor", "val_acc"], {}, "monitor: 'val_acc' is not a metric the runs log (did you mean val_accuracy?)"),
    (["--device", "cuda"], {}, "device=cuda but no CUDA device is available"),
    ([], {"MLFLOW_TRACKING_URI": "nosuchscheme://x"}, "tracking store nosuchscheme://x:"),
    ([], {"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/a-file/mlflow.db"}, "tracking store sqlite:///"),
])
def test_bad_settings_are_one_line_before_any_data_is_read(tmp_path, monkeypatch, extra, env, problem):
    if "cuda" in extra:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    store = mlflow.get_tracking_uri()
    (tmp_path / "a-file").write_text("a file, not a folder")
    for k, v in env.items():
        v = v.replace("{tmp}", str(tmp_path))
        monkeypatch.setenv(k, v)
        mlflow.set_tracking_uri(v)
    try:
        res = CliRunner().invoke(cli, ["train", "train_classifier", "--data-dir", str(tmp_path / "no-such-data"),
                                       "--experiment-name", "bad-settings", *extra])
    finally:
        mlflow.set_tracking_uri(store)
    assert res.exit_code != 0
    assert problem in res.output and "no-such-data" not in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_settings_the_data_decides_leave_no_run_behind(features):
    """A monitor of a head the data does not have is known once the data is read: still before
    the run starts, so no FAILED run is left."""
    res = CliRunner().invoke(cli, ["train", "train_classifier", "--data-dir", str(features), "--epochs", "1",
                                   "--monitor", "gender.val_macro_f1", "--experiment-name", "bad-monitor"])
    assert res.exit_code == 1 and "monitor: train_classifier logs no 'gender.val_macro_f1'" in res.output
    assert "Traceback" not in res.output
    assert _runs("bad-monitor") == []


@pytest.mark.parametrize("extra, problem", [
    (["--storage", "nosuchdb://x"], "optuna storage nosuchdb://x: "),
    (["--storage", "sqlite:///{tmp}/a-file/o.db"], "unable to open database file"),
    (["--metric", "val_acc"], "metric: 'val_acc' is not a metric the runs log"),
    (["--heartbeat", "0"], "heartbeat must be >= 1"),
    (["--sweep-seed", "-1"], "-1 is not in the range x>=0"),
    (["--lr", "nan"], "lr must be a finite number"),
])
def test_bad_sweep_settings_are_one_line_before_any_data_is_read(tmp_path, extra, problem):
    (tmp_path / "a-file").write_text("a file, not a folder")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    res = CliRunner().invoke(cli, ["sweep", "train_classifier", "--n-trials", "1", "--data-dir",
                                   str(tmp_path / "no-such-data"), "--storage", f"sqlite:///{tmp_path / 'o.db'}",
                                   "--experiment-name", "bad-sweep", *extra])
    assert res.exit_code != 0 and problem in res.output, res.output
    assert "no-such-data" not in res.output and "Traceback" not in res.output
    assert _runs("bad-sweep") == []


def test_app_options_reject_nan_and_negative_counts(tmp_path):
    for cmd, problem in ((["listen", "m", "--window", "nan"], "'nan' is not a finite number"),
                         (["predict-video", "m", "v.mp4", "--fps", "-5"], "-5.0 is not in the range x>0"),
                         (["runs", "list", "--max", "-1"], "-1 is not in the range x>=1"),
                         (["data", "import", "bold", str(tmp_path), "--out", "o", "--stride", "0"], "x>=1")):
        res = CliRunner().invoke(cli, cmd)
        assert res.exit_code == 2 and problem in res.output, (cmd, res.output)


def test_config_layer_checks_every_number_of_every_task():
    from emoexp.tasks import list_tasks

    for name in list_tasks():
        task = get_task(name)
        apply_overrides(task.default_config(), {})  # the defaults pass
        with pytest.raises(ConfigError, match="must be a finite number"):
            apply_overrides(task.default_config(), {"lr": float("inf")})
        with pytest.raises(ConfigError, match="seed must be >= 0"):
            apply_overrides(task.default_config(), {"seed": -1})


# ----------------------------------------------------------------------------------------------
# Hints


def test_one_actor_ravdess_hint_names_a_split_train_speech_accepts(tmp_path):
    from emoexp.data.synth_speech import synth_ravdess

    root = synth_ravdess(tmp_path / "rav", subjects=1, seed=0)
    res = CliRunner().invoke(cli, ["train", "train_speech", "--data-dir", str(root), "--epochs", "1",
                                   "--experiment-name", "one-actor"])
    assert res.exit_code == 1 and "needs at least 2 subjects" in res.output, res.output
    assert "split=trial" not in res.output and "split=random" in res.output
    assert "random" in get_task("train_speech").config_cls.CHOICES["split"]


@pytest.mark.parametrize("body_fails", [True, False])
def test_a_sigterm_while_the_status_is_written_waits_for_it(monkeypatch, body_fails):
    """torchrun SIGTERMs rank 0 when another rank dies, often while rank 0 is already ending its run
    FAILED on the collective's error (or FINISHED). The run still gets its status, and the signal
    reaches the rank's handler afterwards (here: fail_on_sigterm's RankLost)."""
    from emoexp.distributed import Dist, RankLost, fail_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)
    fail_on_sigterm(Dist(rank=0, world=2))
    real_end_run = mlflow.end_run

    def end_run_under_sigterm(status="FINISHED"):
        os.kill(os.getpid(), signal.SIGTERM)     # torchrun's SIGTERM, just as the status is written
        time.sleep(0.05)
        real_end_run(status)

    monkeypatch.setattr(mlflow, "end_run", end_run_under_sigterm)
    try:
        with pytest.raises(RankLost):
            with T.mlflow_run(experiment_name="sigterm-at-end", run_name="r") as tracker:
                run_id = tracker.run_id
                if body_fails:
                    raise RuntimeError("Connection closed by peer")   # gloo, when a rank dies
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert MlflowClient().get_run(run_id).info.status == ("FAILED" if body_fails else "FINISHED")
