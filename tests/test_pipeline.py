"""The `main` pipeline's step reuse: same params, code and data -> the finished run is reused."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from emoexp import pipeline as P
from emoexp.project import code_fingerprint


def test_step_key_depends_on_params_code_and_data():
    k = P.step_key("finetune_eav", {"epochs": 3}, "code1", "data1")
    assert k == P.step_key("finetune_eav", {"epochs": "3"}, "code1", "data1")
    assert k != P.step_key("finetune_eav", {"epochs": 4}, "code1", "data1")
    assert k != P.step_key("finetune_eav", {"epochs": 3}, "code2", "data1")
    assert k != P.step_key("finetune_eav", {"epochs": 3}, "code1", "data2")
    assert k != P.step_key("pretrain_faced", {"epochs": 3}, "code1", "data1")


def test_code_fingerprint_is_stable():
    assert code_fingerprint() == code_fingerprint()


def test_data_fingerprint_sees_changed_files(tmp_path):
    (tmp_path / "a.txt").write_text("1")
    fp = P.data_fingerprint(tmp_path)
    (tmp_path / "b.txt").write_text("2")
    assert P.data_fingerprint(tmp_path) != fp


def test_finished_identical_step_is_reused_unless_forced(monkeypatch):
    exp_id = mlflow.create_experiment("test-reuse")
    steps = P._Steps(exp_id, force=False)
    key = P.step_key("pretrain_faced", {"epochs": 2}, steps.code, "d")
    client = MlflowClient()
    done = client.create_run(exp_id, tags={P.TAG_STEP_KEY: key})
    client.set_terminated(done.info.run_id, "FINISHED")
    failed = client.create_run(exp_id, tags={P.TAG_STEP_KEY: P.step_key("pretrain_faced", {"epochs": 3}, steps.code, "d")})
    client.set_terminated(failed.info.run_id, "FAILED")

    launched = []

    class Submitted:
        run_id = "new-run"

    def fake_run(uri, entry_point, parameters, **kw):
        launched.append((entry_point, parameters))
        return Submitted()

    monkeypatch.setattr(mlflow.projects, "run", fake_run)
    monkeypatch.setattr(MlflowClient, "set_tag", lambda *a, **k: None)
    assert steps.run("pretrain_faced", "pretrain_faced", {"epochs": 2}, data="d") == done.info.run_id
    assert steps.reused["pretrain_faced"] is True and not launched
    # A FAILED run with the same key is not reused.
    assert steps.run("pretrain_faced", "pretrain_faced", {"epochs": 3}, data="d") == "new-run"
    # force=true re-runs even a finished identical step.
    forced = P._Steps(exp_id, force=True)
    assert forced.run("pretrain_faced", "pretrain_faced", {"epochs": 2}, data="d") == "new-run"
    assert len(launched) == 2


def test_missing_demo_data_is_clear(tmp_path):
    from emoexp.data.base import DataError

    with pytest.raises(DataError, match="emoexp data synth faced"):
        P.run_pipeline(data_root=str(tmp_path), pretrain_epochs=1, finetune_epochs=1, use_audio=False, seed=0)


def test_steps_that_cannot_start_or_fail_end_in_one_line(tmp_path, monkeypatch):
    """Both ways a step ends early (its command is not on PATH; its `mlflow run` fails) are one
    line from `emoexp pipeline` that names the cause, not a traceback through mlflow.projects."""
    from click.testing import CliRunner

    from emoexp.cli import main

    for name in ("faced", "eav"):
        (tmp_path / name).mkdir()
    args = ["pipeline", "--data-root", str(tmp_path), "--sweep-trials", "0"]

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and r.exception is not None and "Traceback" not in r.output
    assert "steps run emoexp and mlflow from PATH" in r.output and "source .venv/bin/activate" in r.output

    monkeypatch.setattr(P, "check_steps_can_start", lambda: None)

    def failing_run(uri, entry_point, parameters, **kw):
        raise mlflow.exceptions.ExecutionException("Run (ID 'abc') failed")

    monkeypatch.setattr(mlflow.projects, "run", failing_run)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1] == (
        "Error: step pretrain_faced (mlflow run . -e pretrain_faced) failed: Run (ID 'abc') failed; "
        "its output above says why")
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("emoexp-pipeline").experiment_id])
    assert [r.info.status for r in runs if r.info.run_name == "main"] == ["FAILED"]


def test_paths_reach_the_steps_as_the_project_folder_sees_them(tmp_path, monkeypatch):
    """The steps run in the project folder (`mlflow run .`), so a path given relative to another
    folder would point elsewhere there: inside the project it stays relative (the demo's records
    say data/demo/...), outside it becomes absolute."""
    from emoexp.project import project_dir

    monkeypatch.chdir(project_dir())
    assert P.for_steps("data/demo/eav") == "data/demo/eav"
    monkeypatch.chdir(tmp_path)
    assert P.for_steps("data/eav") == str(tmp_path.resolve() / "data" / "eav")
    assert P.for_steps(project_dir() / "dashboards" / "x") == "dashboards/x"


def test_the_sweep_step_finds_its_storage_in_the_environment_and_logs_no_password(tmp_path, monkeypatch):
    """On a stack, $EMOEXP_OPTUNA_STORAGE is a PostgreSQL URL with a password: the sweep step gets an
    empty storage (the sweep reads the variable itself) so no step's params hold the password, and
    its study, and so its reuse key, still differ from one storage to another."""
    from types import SimpleNamespace

    for name in ("faced", "eav"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(P, "check_steps_can_start", lambda: None)
    client = MlflowClient()
    launched = []

    def fake_run(uri, entry_point, parameters, experiment_id, **kw):
        launched.append((entry_point, parameters))
        run = client.create_run(experiment_id)
        client.set_terminated(run.info.run_id, "FINISHED")
        return SimpleNamespace(run_id=run.info.run_id)

    monkeypatch.setattr(mlflow.projects, "run", fake_run)
    studies = []
    for db in ("optuna", "other"):
        monkeypatch.setenv("EMOEXP_OPTUNA_STORAGE", f"postgresql://emo:s3cret@db.lan/{db}")
        launched.clear()
        P.run_pipeline(data_root=str(tmp_path), pretrain_epochs=1, finetune_epochs=1, use_audio=False, seed=0,
                       sweep_trials=1, dashboards_dir=str(tmp_path / "dash"))
        (sweep,) = [params for entry, params in launched if entry == "sweep"]
        assert sweep["storage"] == ""
        assert not [v for _, params in launched for v in params.values() if "s3cret" in v]
        studies.append(sweep["study_name"])
    assert studies[0] != studies[1]


def test_store_urls_lose_their_password_and_an_empty_storage_comes_from_the_environment(monkeypatch):
    from emoexp.config import DEFAULT_OPTUNA_STORAGE as DEFAULT_STORAGE
    from emoexp.config import OPTUNA_STORAGE_ENV as STORAGE_ENV
    from emoexp.config import redact
    from emoexp.sweeps import resolve_storage

    assert redact("postgresql://emo:s3cret@db.lan:5433/optuna") == "postgresql://emo:***@db.lan:5433/optuna"
    assert redact("postgresql+psycopg://emo:s3cret@h/db") == "postgresql+psycopg://emo:***@h/db"
    for plain in ("sqlite:///optuna.db", "journal:/tmp/j.log", "postgresql://emo@h/db", "http://h:port/x"):
        assert redact(plain) == plain
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_storage("") == DEFAULT_STORAGE
    monkeypatch.setenv(STORAGE_ENV, "postgresql://emo:pw@h/db")
    assert resolve_storage("") == "postgresql://emo:pw@h/db"
    assert resolve_storage("sqlite:///x.db") == "sqlite:///x.db"
