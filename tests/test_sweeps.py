"""Optuna sweeps: nested trial runs, study totals, failures, pruning, stale trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from emoexp import engine
from emoexp import tracking as T
from emoexp.config import ConfigError
from emoexp.sweeps import load_space, run_sweep


@pytest.fixture
def space(tmp_path) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text("lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}\n"
                 "dropout: {type: float, low: 0.1, high: 0.5}\n")
    return p


def _base(faced_root, **kw):
    return {"data_dir": str(faced_root), "epochs": 2, "window_size": 256, "stride": 128, "max_subjects": 3,
            "log_model": False, **kw}


def _children(client, parent_id):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_sweep_trials_are_nested_runs_and_n_trials_is_the_total(faced_root, space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    res = run_sweep("pretrain_faced", _base(faced_root), n_trials=2, storage=storage, study_name="s1",
                    space=str(space), pruner="none", experiment_name="test-sweep")
    assert res.n_trials == 2 and res.states == {"COMPLETE": 2}
    client = MlflowClient()
    parent = client.get_run(res.parent_run_id)
    assert parent.data.tags[T.TAG_STUDY] == "s1"
    assert parent.data.tags["emoexp.best_run_id"] == res.best_run_id
    assert abs(parent.data.metrics["best_val_macro_f1"] - res.best_value) < 1e-9
    assert {"best.lr", "best.dropout"} <= set(parent.data.params)
    arts = {a.path for a in client.list_artifacts(res.parent_run_id, "optuna")}
    assert {"optuna/history.html", "optuna/parallel_coordinate.html"} <= arts
    kids = _children(client, res.parent_run_id)
    assert sorted(int(k.data.tags[T.TAG_TRIAL]) for k in kids) == [0, 1]
    for k in kids:
        assert k.data.tags[T.TAG_STUDY] == "s1" and k.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(k.info.run_id, T.M_VAL_F1)) == [1, 2]
    # The same command again: the study already has its 2 trials, nothing runs.
    again = run_sweep("pretrain_faced", _base(faced_root), n_trials=2, storage=storage, study_name="s1",
                      space=str(space), pruner="none", experiment_name="test-sweep")
    assert again.n_trials == 2 and not _children(client, again.parent_run_id)
    # A larger total finishes only what is missing.
    more = run_sweep("pretrain_faced", _base(faced_root), n_trials=3, storage=storage, study_name="s1",
                     space=str(space), pruner="none", experiment_name="test-sweep")
    assert more.n_trials == 3 and len(_children(client, more.parent_run_id)) == 1


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(faced_root, space, tmp_path, monkeypatch):
    real_fit = engine.fit
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise FloatingPointError("the loss became nan at epoch 1")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(engine, "fit", flaky)
    res = run_sweep("pretrain_faced", _base(faced_root, epochs=1), n_trials=2,
                    storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="flaky", space=str(space),
                    pruner="none", experiment_name="test-sweep-fail")
    assert res.states == {"FAIL": 1, "COMPLETE": 2}  # n_trials counts finished trials: the failed one is replaced
    assert res.n_finished == 2 and res.n_trials == 3


def test_pruned_trials_stop_early_and_are_tagged(faced_root, space, tmp_path):
    """A median pruner stops a trial whose curve is below the others' (made so with a tiny lr)."""
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    # Two good trials first (fixed lr), then a hopeless one: lr 1e-7 learns nothing in 4 epochs.
    good = tmp_path / "good.yaml"
    good.write_text("lr: {type: float, low: 0.002, high: 0.003}\n")
    base = _base(faced_root, epochs=4, max_subjects=4, batch_size=16)
    run_sweep("pretrain_faced", base, n_trials=2, storage=storage, study_name="prune",
              space=str(good), pruner="median", experiment_name="test-prune")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: {type: float, low: 1.0e-8, high: 2.0e-8}\n")
    res = run_sweep("pretrain_faced", base, n_trials=3, storage=storage,
                    study_name="prune", space=str(bad), pruner="median", experiment_name="test-prune")
    assert res.states.get("PRUNED") == 1, res.states
    client = MlflowClient()
    (kid,) = _children(client, res.parent_run_id)
    assert kid.data.tags[T.TAG_STOP_REASON] == "pruned"
    assert len(client.get_metric_history(kid.info.run_id, T.M_VAL_F1)) < 4
    # A pruned trial is not evaluated on the test set and gets no report files.
    assert T.M_TEST_F1 not in kid.data.metrics
    assert not client.list_artifacts(kid.info.run_id, T.ART_EVAL_DIR)


def _draws(storage: str, name: str, workers: int, n: int) -> list[float]:
    """``n`` trials asked in turn by ``workers`` study objects (processes) made with the same seed."""
    from emoexp.sweeps import make_sampler

    studies = [optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                   sampler=make_sampler(7)) for _ in range(workers)]
    out = []
    for i in range(n):
        st = studies[i % workers]
        trial = st.ask()
        out.append(trial.suggest_float("lr", 1e-5, 1e-2, log=True))
        st.tell(trial, 0.0)
    return out


def test_workers_with_one_seed_draw_distinct_and_repeatable_params(tmp_path):
    """The sampler is seeded per trial number: two workers started with the same command line
    do not train the same parameters twice, and the draws do not depend on how many workers ran."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'seed.db'}"
    one = _draws(storage, "one", 1, 6)
    two = _draws(storage, "two", 2, 6)
    assert len(set(two)) == 6
    assert one == two


def test_space_files_are_checked(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("nosuch: {type: float, low: 0, high: 1}\n")
    with pytest.raises(ConfigError, match="nosuch: not an option of finetune_eav"):
        load_space(p, "finetune_eav")
    p.write_text("lr: {type: float, low: 0, high: 1, log: true}\n")
    with pytest.raises(ConfigError, match="log scale needs low > 0"):
        load_space(p, "finetune_eav")
    p.write_text("fusion: {type: categorical}\n")
    with pytest.raises(ConfigError, match="choices"):
        load_space(p, "finetune_eav")
    from emoexp.tasks import list_tasks

    for task in list_tasks():  # every task ships a search space
        shipped = Path(__file__).resolve().parents[1] / "experiments" / "sweeps" / f"{task}.yaml"
        assert load_space(shipped, task)


@pytest.mark.slow(reason="30 s: the SQLite twin of test_scaleout's killed sweep worker and test_faults' killed sweep, both fast")
def test_killed_worker_does_not_leave_its_trial_running(faced_root, space, tmp_path):
    """SIGKILL a worker mid-trial; the next invocation fails the stale trial, runs it again with the
    same parameters and finishes the study with its 2 trials."""
    storage = f"sqlite:///{tmp_path / 'hb.db'}"
    cmd = [sys.executable, "-m", "emoexp", "sweep", "pretrain_faced", "--n-trials", "2", "--storage", storage,
           "--study-name", "hb", "--space", str(space), "--pruner", "none", "--heartbeat", "1",
           "--data-dir", str(faced_root), "--epochs", "30", "--window-size", "256", "--stride", "128",
           "--max-subjects", "3", "--log-model", "false", "--experiment-name", "test-hb"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        study = None
        while time.time() < deadline:
            time.sleep(1)
            try:
                study = optuna.load_study(study_name="hb", storage=storage)
            except Exception:
                continue
            exp = MlflowClient().get_experiment_by_name("test-hb")
            trial_runs = exp and MlflowClient().search_runs(
                [exp.experiment_id], filter_string=f"tags.`{T.TAG_TRIAL}` = '0'")
            if trial_runs and any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials):
                break  # the trial and its MLflow run are both under way
        else:
            pytest.fail("the worker never started a trial")
        time.sleep(2)  # a heartbeat or two
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(3)  # past the grace period (2 x heartbeat)
    res = run_sweep("pretrain_faced", _base(faced_root, epochs=1), n_trials=2, storage=storage, study_name="hb",
                    space=str(space), pruner="none", heartbeat_interval=1, experiment_name="test-hb")
    trials = optuna.load_study(study_name="hb", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"] and res.n_finished == 2
    assert trials[1].params == trials[0].params  # the lost trial, run again
    client = MlflowClient()
    lost = client.search_runs([client.get_experiment_by_name("test-hb").experiment_id],
                              filter_string=f"tags.`{T.TAG_TRIAL}` = '0'")
    assert [r.info.status for r in lost] == ["FAILED"]
    assert lost[0].data.tags[T.TAG_STOP_REASON] == "worker_lost"


@pytest.mark.slow(reason="35 s: `mlflow run -e sweep`; nesting of trials is covered fast by test_sweep_trials_are_nested_runs_and_n_trials_is_the_total")
def test_sweep_entry_point_nests_every_trial_under_the_step_run(faced_root, space, tmp_path, mlflow_cli_env):
    """Under `mlflow run -e sweep` each trial is a child of the sweep's own run (none re-attach to it)."""
    env = dict(mlflow_cli_env)
    repo = Path(__file__).resolve().parents[1]
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(repo), "-e", "sweep", "--env-manager", "local",
           "--experiment-name", "test-sweep-ep", "-P", "task=pretrain_faced", "-P", "n_trials=2",
           "-P", f"storage=sqlite:///{tmp_path / 'ep.db'}", "-P", "study_name=ep", "-P", f"space={space}",
           "-P", "pruner=none", "-P", f"data_dir={faced_root}", "-P", "epochs=1",
           "-P", "options=window_size=256;stride=128;max_subjects=3;log_model=false"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("test-sweep-ep").experiment_id])
    (step,) = [r for r in runs if T.TAG_TRIAL not in r.data.tags]
    assert step.info.run_name == "sweep-ep" and step.data.tags[T.TAG_STUDY] == "ep"
    trials = [r for r in runs if T.TAG_TRIAL in r.data.tags]
    assert sorted(r.data.tags[T.TAG_TRIAL] for r in trials) == ["0", "1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {step.info.run_id}


def test_workers_started_at_once_on_a_new_storage_all_start(tmp_path):
    """Three processes creating the same new sqlite storage race to create its schema; without
    a retry one of them died with an alembic UNIQUE constraint error."""
    code = "import sys; from emoexp.sweeps import make_storage; make_storage(sys.argv[1])"
    for k in range(2):
        url = f"sqlite:///{tmp_path / f'race{k}.db'}"
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        errs = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        assert all(rc == 0 for rc, _ in errs), [e[-500:] for rc, e in errs if rc]


def test_sweep_logs_the_space_as_given_and_the_file_it_resolved_to(faced_root, tmp_path, monkeypatch):
    """`space` and `storage` are settings like any other: logged as given (empty: the task's default
    file; $EMOEXP_OPTUNA_STORAGE, as the pipeline's sweep step passes it), with what was used as
    resolved.space / resolved.storage, so `mlflow run -e sweep` and `emoexp sweep` log the same params."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setenv("EMOEXP_OPTUNA_STORAGE", storage)
    res = run_sweep("pretrain_faced", _base(faced_root, epochs=1), n_trials=1, storage="",
                    study_name="s-space", pruner="none", experiment_name="test-sweep-space")
    params = MlflowClient().get_run(res.parent_run_id).data.params
    assert params["space"] == "''" and params["storage"] == "''"   # tracking.param_text: mlflow run's form of ''
    assert params["resolved.space"].endswith("experiments/sweeps/pretrain_faced.yaml")
    assert params["resolved.storage"] == storage
    assert optuna.load_study(study_name="s-space", storage=storage).trials
