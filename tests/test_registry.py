"""Promotion to registry aliases on real (tiny) pretrain_faced runs, in a store of this module's own."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import engine
from emoexp import tracking as T
from emoexp.cli import main as cli
from emoexp.config import apply_overrides
from emoexp.registry import modality_tasks, promote, registry_rows
from emoexp.tasks import get_task

NAME = "emoexp-eeg-encoder"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh MLflow store and cwd: the alias holders here depend on no other module's runs."""
    root = tmp_path_factory.mktemp("registry")
    old_uri, old_cwd = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    os.chdir(root)
    yield root
    os.chdir(old_cwd)
    if old_uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old_uri
        mlflow.set_tracking_uri(old_uri)


def _fit(faced_root, experiment: str, epochs: int, lr: float) -> str:
    task = get_task("pretrain_faced")
    cfg = apply_overrides(task.default_config(), {
        "data_dir": str(faced_root), "epochs": epochs, "lr": lr, "window_size": 256, "stride": 128,
        "max_subjects": 5, "experiment_name": experiment, "log_model": True, "seed": 0,
        "checkpoint_every": 0,
    })
    return engine.fit(task, cfg).run_id


def _model_f1(run_id: str) -> float:
    """val_macro_f1 of the logged model: at the run's best epoch (by its monitor, val_loss here)."""
    c = MlflowClient()
    best = int(c.get_run(run_id).data.metrics[T.M_BEST_EPOCH])
    return {m.step: m.value for m in c.get_metric_history(run_id, T.M_VAL_F1)}[best]


def _versions(run_id: str | None = None) -> list:
    filt = f"name = '{NAME}'" + (f" and run_id = '{run_id}'" if run_id else "")
    return MlflowClient().search_model_versions(filt)


@pytest.fixture(scope="module")
def first(store, faced_root):
    """A weak run (tiny lr, 1 epoch) and a better one (2 epochs), then `promote eeg`."""
    weak = _fit(faced_root, "reg-weak", epochs=1, lr=1e-6)
    good = _fit(faced_root, "reg-good", epochs=2, lr=1e-3)
    outcomes = {o.task: o for o in promote("eeg")}
    return {"weak": weak, "good": good, "outcomes": outcomes}


@pytest.fixture(scope="module")
def second(first):
    return {o.task: o for o in promote("eeg", task="pretrain_faced")}


@pytest.fixture(scope="module")
def third(second, faced_root):
    """A new, better run arrives and is promoted over the holder."""
    best = _fit(faced_root, "reg-good", epochs=4, lr=1e-3)
    return {"best": best, "outcome": promote("eeg", task="pretrain_faced")[0]}


def test_modality_tasks_come_from_the_task_registry():
    assert modality_tasks()["eeg"] == ["finetune_eav", "pretrain_faced", "train_eeg_llm"]
    assert modality_tasks()["face"] == ["train_face"] and get_task("train_face").registered_model == "emoexp-face"
    assert modality_tasks()["speech"] == ["train_speech"]
    assert get_task("train_speech").registered_model == "emoexp-speech"
    assert modality_tasks()["posture"] == ["train_posture"] and modality_tasks()["features"] == ["train_classifier"]
    assert get_task("train_posture").registered_model == "emoexp-posture"
    assert {get_task(t).registered_model for t in modality_tasks()["eeg"]} == {"emoexp-eeg", NAME, "emoexp-eeg-llm"}


def test_unknown_modality_is_one_clear_error():
    with pytest.raises(ValueError, match="no task of modality 'gait' is registered yet; known: eeg, face, features, posture, speech"):
        promote("gait")
    with pytest.raises(ValueError, match="alias must be"):
        promote("eeg", alias="canary")


def test_first_promote_registers_the_better_run_and_sets_staging(first):
    weak_f1, good_f1 = _model_f1(first["weak"]), _model_f1(first["good"])
    assert good_f1 > weak_f1 + 0.05, (weak_f1, good_f1)  # the premise: the runs differ in quality
    o = first["outcomes"]["pretrain_faced"]
    assert (o.action, o.run_id, o.registered_model) == ("promoted", first["good"], NAME)
    assert o.value == pytest.approx(good_f1) and o.previous_version is None
    assert [v.run_id for v in _versions()] == [first["good"]]  # the weak run is not registered
    c = MlflowClient()
    assert {k: str(v) for k, v in c.get_registered_model(NAME).aliases.items()} == {"staging": o.version}
    mv = c.get_model_version_by_alias(NAME, "staging")
    assert mv.tags[T.TAG_PROMOTED_METRIC] == "val_macro_f1"
    assert float(mv.tags[T.TAG_PROMOTED_VALUE]) == pytest.approx(good_f1)
    assert mv.tags[T.TAG_PREVIOUS_VERSION] == T.NO_VERSION
    assert "promoted emoexp-eeg-encoder v1" in o.message and "@staging" in o.message


def test_a_task_without_runs_has_no_candidate(first):
    o = first["outcomes"]["finetune_eav"]
    assert (o.action, o.version, o.run_id) == ("no-candidate", None, None)
    assert "no finished run" in o.message


def test_second_promote_changes_nothing(first, second):
    o = second["pretrain_faced"]
    assert (o.action, o.run_id) == ("kept", first["good"])
    assert len(_versions()) == 1
    assert MlflowClient().get_model_version_by_alias(NAME, "staging").run_id == first["good"]


def test_a_better_run_is_promoted_and_the_previous_holder_recorded(first, third):
    assert _model_f1(third["best"]) > _model_f1(first["good"]), "premise: 4 epochs beat 2"
    o = third["outcome"]
    assert (o.action, o.run_id, o.previous_version) == ("promoted", third["best"], "1")
    assert o.previous_value == pytest.approx(_model_f1(first["good"]))
    mv = MlflowClient().get_model_version_by_alias(NAME, "staging")
    assert (str(mv.version), mv.run_id) == (o.version, third["best"])
    assert mv.tags[T.TAG_PREVIOUS_VERSION] == "1"


def test_worse_runs_are_registered_once_and_never_promoted(first, third):
    outs = [promote("eeg", task="pretrain_faced", experiment="reg-weak")[0] for _ in range(2)]
    assert [o.action for o in outs] == ["registered-only", "kept"]
    assert len(_versions(first["weak"])) == 1
    assert MlflowClient().get_model_version_by_alias(NAME, "staging").run_id == third["best"]
    with pytest.raises(ValueError, match="experiment 'nope' not found"):
        promote("eeg", experiment="nope")


def test_production_follows_staging(third):
    with pytest.raises(ValueError, match="holds @staging"):
        promote("eeg", task="finetune_eav", alias="production")
    o = promote("eeg", task="pretrain_faced", alias="production")[0]
    assert (o.action, o.version) == ("promoted", third["outcome"].version)
    assert MlflowClient().get_model_version_by_alias(NAME, "production").run_id == third["best"]
    assert promote("eeg", task="pretrain_faced", alias="production")[0].action == "kept"


def test_staging_model_loads_and_predicts(third):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@staging")
    x = np.random.default_rng(0).standard_normal((3, 30, 256)).astype(np.float32)
    df = model.predict({"eeg": x})
    probs = df[[c for c in df.columns if c.startswith("prob_")]].to_numpy()
    assert len(df) == 3 and probs.shape[1] == 9
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_cli_promote_and_registry_list(third):
    runner = CliRunner()
    res = runner.invoke(cli, ["promote", "eeg", "--task", "pretrain_faced"])
    assert res.exit_code == 0, res.output
    assert f"pretrain_faced: kept {NAME}@staging at v{third['outcome'].version}" in res.output
    res = runner.invoke(cli, ["registry", "list"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if third["best"] in ln)
    assert "production,staging" in line and "val_macro_f1=" in line
    rows = {r["run_id"]: r for r in registry_rows()}
    assert rows[third["best"]]["aliases"] == ["production", "staging"]
    assert rows[third["best"]][T.M_TEST_ACC] is not None
    res = runner.invoke(cli, ["promote", "gait"])
    assert res.exit_code != 0 and "no task of modality 'gait'" in res.output
