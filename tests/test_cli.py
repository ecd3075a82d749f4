"""The command line: the names scripts depend on, and clear errors (MLproject: test_mlproject.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from emoexp.cli import main as cli
from emoexp.config import field_types
from emoexp.tasks import get_task, list_tasks

REPO = Path(__file__).resolve().parents[1]


def test_help_imports_neither_torch_nor_mlflow():
    code = ("import sys; from click.testing import CliRunner; from emoexp.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
            "r = CliRunner().invoke(main, ['train', 'finetune_eav', '--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'mlflow', 'numpy', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_config_field_is_a_train_option():
    for name in list_tasks():
        res = CliRunner().invoke(cli, ["train", name, "--help"])
        assert res.exit_code == 0
        for f in field_types(get_task(name).config_cls):
            assert f"--{f.replace('_', '-')}" in res.output, (name, f)


def test_missing_dataset_is_one_clear_line(tmp_path):
    res = CliRunner().invoke(cli, ["train", "pretrain_faced", "--data-dir", str(tmp_path / "nope"), "--epochs", "1"])
    assert res.exit_code != 0
    assert str(tmp_path / "nope") in res.output and "emoexp data synth faced" in res.output
    assert "Traceback" not in res.output


def test_unknown_class_in_weights_is_clear(faced_root):
    res = CliRunner().invoke(cli, ["train", "pretrain_faced", "--data-dir", str(faced_root), "--epochs", "1",
                                   "--weights", "happy=2", "--max-subjects", "3"])
    assert res.exit_code != 0
    assert "'happy' is not a class" in res.output and "anger" in res.output


def test_transposed_faced_pickle_is_named(tmp_path):
    import pickle

    import numpy as np

    d = tmp_path / "Processed_data"
    d.mkdir()
    with open(d / "sub000.pkl", "wb") as f:
        pickle.dump(np.zeros((32, 28, 300)), f)
    res = CliRunner().invoke(cli, ["train", "pretrain_faced", "--data-dir", str(tmp_path), "--epochs", "1"])
    assert res.exit_code != 0
    assert "sub000.pkl" in res.output and "transposed" in res.output


def test_unknown_option_suggests(tmp_path):
    res = CliRunner().invoke(cli, ["train", "finetune_eav", "--epoch", "3"])
    assert res.exit_code != 0 and "--epochs" in res.output


def test_resume_needs_exactly_one_source():
    assert CliRunner().invoke(cli, ["resume"]).exit_code != 0
    res = CliRunner().invoke(cli, ["resume", "--run", "abc", "--epochs", "3"])
    assert res.exit_code != 0 and "branches" in res.output


def test_data_synth_commands_write_the_real_layouts(tmp_path):
    r = CliRunner().invoke(cli, ["data", "synth", "faced", "--out", str(tmp_path / "f"), "--subjects", "2",
                                 "--seed", "1", "--set", "n_samples=600"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "f").rglob("*.pkl")) == ["sub000.pkl", "sub001.pkl"]
    r = CliRunner().invoke(cli, ["data", "synth", "eav", "--out", str(tmp_path / "e"), "--subjects", "2",
                                 "--seed", "1", "--set", "trials=10", "--set", "n_samples=1000"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "e" / "subject1" / "EEG" / "subject1_eeg.mat").is_file()
    assert len(list((tmp_path / "e" / "subject2" / "Audio").glob("*_Aud.wav"))) == 5
    r = CliRunner().invoke(cli, ["data", "synth", "nosuch", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "known" in r.output


@pytest.mark.slow(reason="30 s: `mlflow run -e pretrain_faced`; test_records runs `mlflow run` (finetune_eav) in the fast suite")
def test_mlflow_run_entry_point(faced_root, tmp_path, mlflow_cli_env):
    """`mlflow run . -e pretrain_faced --env-manager local` works as written in the README."""
    env = dict(mlflow_cli_env)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(REPO), "-e", "pretrain_faced",
           "--env-manager", "local", "--experiment-name", "test-mlflow-run",
           "-P", f"data_dir={faced_root}", "-P", "epochs=1", "-P", "window_size=256", "-P", "stride=128",
           "-P", "log_model=false", "-P", "max_subjects=3"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("test-mlflow-run")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("pretrain_faced")  # not MLflow's random name
    assert run.data.tags["emoexp.task"] == "pretrain_faced"
    assert run.data.params["window_size"] == "256" and "sampling_weight.anger" in run.data.params
    assert "train_loss" in run.data.metrics


@pytest.mark.slow
def test_pipeline_main_entry_point(faced_root, eav_root, tmp_path, mlflow_cli_env):
    """`mlflow run .` (main): pretrain -> finetune under one parent, the second fed by the first."""
    root = tmp_path / "demo"
    root.mkdir()
    os.symlink(faced_root, root / "faced")
    os.symlink(eav_root, root / "eav")
    env = dict(mlflow_cli_env)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(REPO), "--env-manager", "local",
           "--experiment-name", "test-main", "-P", f"data_root={root}", "-P", "pretrain_epochs=1",
           "-P", "finetune_epochs=1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finetune_eav" in out.stdout and "mlflow ui" in out.stdout


def test_every_command_with_task_options_reads_them_the_same_way(monkeypatch):
    """train, sweep, baseline and cv all list --cpu and the per-class weight flags (seed 001's
    --cpu, seed 003's --sad 5): each turns them into the same config overrides (sweep once
    refused both as 'unknown option')."""
    import emoexp.baselines
    import emoexp.cli as C
    import emoexp.cv
    import emoexp.sweeps

    seen = {}

    class Stop(Exception):
        pass

    def grab(name):
        def f(*args, **kwargs):
            over = next(a for a in args if isinstance(a, dict)) if any(isinstance(a, dict) for a in args) \
                else args[1].to_dict()
            seen[name] = {k: over[k] for k in ("device", "weights", "epochs") if k in over}
            raise Stop
        return f

    monkeypatch.setattr(C, "_run_training", lambda task, cfg, overrides: grab("train")(task, cfg))
    monkeypatch.setattr(emoexp.sweeps, "run_sweep", grab("sweep"))
    monkeypatch.setattr(emoexp.baselines, "run_baseline", grab("baseline"))
    monkeypatch.setattr(emoexp.cv, "run_cv", grab("cv"))
    flags = ["--cpu", "--sad", "5", "--weights", "happy=0.5", "--epochs", "3"]
    for cmd in (["train"], ["sweep"], ["baseline"], ["cv", "--folds", "kfold:2"]):
        cli_args = [cmd[0], "train_face", *cmd[1:], *flags]
        r = CliRunner().invoke(cli, cli_args)
        assert isinstance(r.exception, Stop), (cli_args, r.output)
    want = {"device": "cpu", "weights": "happy=0.5,sad=5", "epochs": 3}
    assert seen == {"train": want, "sweep": want, "baseline": want, "cv": want}, seen
