"""Run records a researcher can trust (issue 13, part A): a branch reports its own epochs, every
caller branches the same way, one config logs the same params however it starts, lineage stays in
one experiment, and every run says which code and which pretrained weights made it."""

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
from emoexp import tracking as T
from emoexp.checkpoints import load_checkpoint, resolve_local, save_checkpoint
from emoexp.cli import main as cli
from emoexp.config import apply_overrides
from emoexp.project import MLFLOW_GIT_COMMIT, TAG_VERSION, source_tags
from emoexp.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
# Keys that say where or as what a run ran, not what it trained.
RUN_SPECIFIC = {"experiment_name", "run_name", "description", "output_dir"}


def _tiny_faced(faced_root, **kw):
    return {"data_dir": str(faced_root), "window_size": 256, "stride": 128, "max_subjects": 4,
            "log_model": False, "checkpoint_every": 1, **kw}


def _history(run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient().get_metric_history(run_id, key)}


def _artifacts(run_id: str, path: str) -> set[str]:
    return {a.path for a in MlflowClient().list_artifacts(run_id, path)}


@pytest.fixture(scope="module")
def parent(faced_root, tmp_path_factory):
    """A 2-epoch run started the way `mlflow run` starts one: in an experiment of the caller's
    choosing (MLFLOW_RUN_ID set), with no experiment_name in its config. lr 5e-4 (not the default)."""
    import mlflow

    while mlflow.active_run():  # a run left active in this process would be re-attached instead
        mlflow.end_run()
    client = MlflowClient()
    exp_id = client.create_experiment("records-parent-exp")
    run = client.create_run(exp_id)
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("parent"))
    os.environ["MLFLOW_RUN_ID"] = run.info.run_id
    try:
        task = get_task("pretrain_faced")
        cfg = apply_overrides(task.default_config(), _tiny_faced(faced_root, epochs=2, lr=5e-4, seed=1))
        result = engine.fit(task, cfg)
    finally:
        os.environ.pop("MLFLOW_RUN_ID", None)
        os.chdir(cwd)
    assert result.run_id == run.info.run_id
    return result


def test_a_branch_is_judged_on_its_own_epochs(parent, tmp_path):
    """Even when its epochs do not beat the parent's best, a branch's best, best.pt, test pass and
    eval/ come from its own epoch; the parent's best stays in lineage.json."""
    state = load_checkpoint(resolve_local(f"runs:/{parent.run_id}/checkpoints/epoch_002.pt", tmp_path / "dl"))
    assert state["best"]["metric"] == "val_loss"
    state["best"] = {"value": 0.0, "epoch": 2, "metric": "val_loss"}  # a parent best no branch can beat
    unbeatable = save_checkpoint(state, tmp_path / "unbeatable.pt")

    child = engine.branch(str(unbeatable), {"epochs": 1, "weights": "anger=5,joy=0.5"})
    run = MlflowClient().get_run(child.run_id)
    m = run.data.metrics
    assert child.best_epoch == 3 and m[T.M_BEST_EPOCH] == 3
    assert m[T.M_BEST_VAL_F1] == pytest.approx(_history(child.run_id, T.M_VAL_F1)[3])
    assert child.best_val_macro_f1 == pytest.approx(m[T.M_BEST_VAL_F1])
    assert T.M_TEST_ACC in m
    assert "checkpoints/best.pt" in _artifacts(child.run_id, "checkpoints")
    best = load_checkpoint(resolve_local(f"runs:/{child.run_id}/checkpoints/best.pt", tmp_path / "best"))
    assert best["best"]["epoch"] == 3 and best["epoch"] == 3
    assert "eval/confusion_matrix.png" in _artifacts(child.run_id, "eval")
    lineage = json.loads(Path(MlflowClient().download_artifacts(child.run_id, "lineage.json")).read_text())
    assert lineage[0]["run_id"] == parent.run_id and lineage[0]["best"]["value"] == 0.0
    # the curves still continue the parent's numbering
    assert sorted(_history(child.run_id, T.M_TRAIN_LOSS)) == [3]


def test_fit_itself_branches_and_honours_explicit_defaults(parent):
    """Library code calling fit(task, cfg) with resume_from branches as the CLI does; lr given
    equal to the task's default is honoured, not dropped in favour of the parent's 5e-4."""
    task = get_task("pretrain_faced")
    default_lr = task.default_config().lr
    cfg = apply_overrides(task.default_config(), {
        "resume_from": f"runs:/{parent.run_id}/checkpoints/last.pt", "epochs": 1, "lr": default_lr})
    result = engine.fit(task, cfg)
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags[T.TAG_PARENT_RUN] == parent.run_id
    assert sorted(_history(result.run_id, T.M_TRAIN_LOSS)) == [3]
    assert run.data.params["lr"] == repr(default_lr)
    assert _history(result.run_id, T.M_LR)[3] == pytest.approx(default_lr)
    assert run.data.params["window_size"] == "256"  # architecture keys come from the checkpoint


def test_a_sweep_with_resume_from_branches_every_trial(parent, faced_root, tmp_path):
    from emoexp.sweeps import run_sweep

    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.0001, high: 0.01, log: true}\n")
    uri = f"runs:/{parent.run_id}/checkpoints/last.pt"
    res = run_sweep("pretrain_faced", {"resume_from": uri, "epochs": 1}, n_trials=2, space=str(space),
                    storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="records-branch", pruner="none")
    assert res.states.get("COMPLETE") == 2
    client = MlflowClient()
    trials = client.search_runs([client.get_run(res.parent_run_id).info.experiment_id],
                                filter_string=f"tags.`{T.TAG_STUDY}` = 'records-branch'")
    trials = [r for r in trials if T.TAG_TRIAL in r.data.tags]
    assert len(trials) == 2
    for r in trials:
        assert r.data.tags[T.TAG_RESUMED_FROM] == uri
        assert sorted(_history(r.info.run_id, T.M_TRAIN_LOSS)) == [3]
        assert r.data.tags.get(TAG_VERSION)  # sweep trials say which code made them too


def test_a_checkpoint_of_another_task_is_refused_by_name(parent, eav_root):
    res = CliRunner().invoke(cli, ["train", "finetune_eav", "--data-dir", str(eav_root), "--epochs", "1",
                                   "--resume-from", f"runs:/{parent.run_id}/checkpoints/last.pt"])
    assert res.exit_code == 1
    assert "'pretrain_faced' checkpoint cannot resume task 'finetune_eav'" in res.output


def test_a_branch_lands_in_its_parents_experiment(parent):
    client = MlflowClient()
    res = CliRunner().invoke(cli, ["resume", f"runs:/{parent.run_id}/checkpoints/epoch_001.pt",
                                   "--epochs", "1", "--set", "log_model=false"])
    assert res.exit_code == 0, res.output
    run_id = res.output.split("run ")[1].split()[0]
    parent_exp = client.get_run(parent.run_id).info.experiment_id
    assert client.get_run(run_id).info.experiment_id == parent_exp
    named = CliRunner().invoke(cli, ["resume", f"runs:/{parent.run_id}/checkpoints/epoch_001.pt",
                                     "--epochs", "1", "--set", "log_model=false",
                                     "--experiment-name", "records-elsewhere"])
    assert named.exit_code == 0, named.output
    other = named.output.split("run ")[1].split()[0]
    assert client.get_run(other).info.experiment_id == client.get_experiment_by_name("records-elsewhere").experiment_id


def test_runs_carry_the_code_that_made_them(parent):
    tags = MlflowClient().get_run(parent.run_id).data.tags
    expected = source_tags()
    assert tags[TAG_VERSION] == expected[TAG_VERSION]
    if (REPO / ".git").exists():  # a checkout (CI's fresh clone is one): the commit is recorded
        log = subprocess.run(["git", "-C", str(REPO), "log", "--format=%H", "-n", "50"],
                             capture_output=True, text=True).stdout.split()
        assert tags[MLFLOW_GIT_COMMIT] == expected[MLFLOW_GIT_COMMIT] and tags[MLFLOW_GIT_COMMIT] in log


def test_pretrained_source_is_resolved_and_inherited_by_branches(faced_root, eav_root, tmp_path):
    """models:/NAME@staging moves; the run records which version (and run) it meant, and a branch
    of the fine-tuned run inherits where its encoder came from."""
    import mlflow

    task = get_task("pretrain_faced")
    pre = engine.fit(task, apply_overrides(task.default_config(), _tiny_faced(
        faced_root, epochs=1, log_model=True, experiment_name="records-pretrained")))
    client = MlflowClient()
    mv = mlflow.register_model(f"runs:/{pre.run_id}/model", "records-eeg-encoder")
    client.set_registered_model_alias("records-eeg-encoder", "staging", mv.version)

    ft = get_task("finetune_eav")
    alias = "models:/records-eeg-encoder@staging"
    res = engine.fit(ft, apply_overrides(ft.default_config(), {
        "data_dir": str(eav_root), "epochs": 1, "window_size": 256, "stride": 128, "max_subjects": 4,
        "log_model": False, "checkpoint_every": 1, "pretrained": alias, "experiment_name": "records-pretrained"}))
    tags = client.get_run(res.run_id).data.tags
    assert tags[T.TAG_PRETRAINED_FROM] == alias
    assert tags[T.TAG_PRETRAINED_RESOLVED] == f"models:/records-eeg-encoder/{mv.version}"
    assert tags[T.TAG_PRETRAINED_RUN] == pre.run_id

    child = engine.branch(f"runs:/{res.run_id}/checkpoints/last.pt", {"epochs": 1})
    ctags = client.get_run(child.run_id).data.tags
    for key in (T.TAG_PRETRAINED_FROM, T.TAG_PRETRAINED_RESOLVED, T.TAG_PRETRAINED_RUN, T.TAG_CHANNEL_ADAPTER):
        assert ctags[key] == tags[key], key


def test_same_config_same_params_through_mlflow_run_and_emoexp_train(eav_root, tmp_path, mlflow_cli_env):
    """`mlflow run . -e finetune_eav -P ...` and `emoexp train finetune_eav --...` log identical
    params: booleans, empty strings, floats and resolved values in one text form."""
    given = {"data_dir": str(eav_root), "epochs": "1", "window_size": "256", "stride": "128",
             "max_subjects": "3", "checkpoint_every": "1", "log_model": "false", "lr": "0.0005"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(REPO), "-e", "finetune_eav",
           "--env-manager", "local", "--experiment-name", "records-mlflow-run"]
    for k, v in given.items():
        cmd += ["-P", f"{k}={v}"]
    out = subprocess.run(cmd, env=mlflow_cli_env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient()
    (via_mlflow,) = client.search_runs([client.get_experiment_by_name("records-mlflow-run").experiment_id])

    args = ["train", "finetune_eav", "--experiment-name", "records-emoexp-train"]
    for k, v in given.items():
        args += [f"--{k.replace('_', '-')}", v]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    (via_cli,) = client.search_runs([client.get_experiment_by_name("records-emoexp-train").experiment_id])

    a = {k: v for k, v in via_mlflow.data.params.items() if k not in RUN_SPECIFIC}
    b = {k: v for k, v in via_cli.data.params.items() if k not in RUN_SPECIFIC}
    assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert b["use_audio"] == "false" and b["weights"] == "''" and b["encoder"] == "auto"
    assert b["resolved.encoder"] == "cnn"


def test_processes_racing_to_create_an_experiment_all_log_into_it(tmp_path, monkeypatch):
    """Another process creates the experiment between this one's lookup and its create (two sweep
    workers starting together): the run still goes into the named experiment, not ``Default``."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'race.db'}")
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    real = TrackingServiceClient.get_experiment_by_name
    calls = {"n": 0}

    def late(self, name):
        calls["n"] += 1
        if calls["n"] == 1:  # the lookup misses; the rival creates it now
            MlflowClient().create_experiment(name)
            return None
        return real(self, name)

    monkeypatch.setattr(TrackingServiceClient, "get_experiment_by_name", late)
    with T.mlflow_run(experiment_name="raced", run_name="r") as run:
        run_id = run.run_id
    monkeypatch.setattr(TrackingServiceClient, "get_experiment_by_name", real)
    client = MlflowClient()
    assert client.get_run(run_id).info.experiment_id == client.get_experiment_by_name("raced").experiment_id
