"""Data-parallel training with torchrun (gloo on CPU): one run per training, whole-set metrics,
the same result as one process with the same global batch, continue after a kill, a dead rank
fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import engine
from emoexp import tracking as T
from emoexp.cli import main as cli

# FeatureMLP has no BatchNorm (torch has no CPU SyncBatchNorm) and dropout 0 draws nothing: two
# ranks must then match one process up to the order of float sums.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    from emoexp.data.synth_posture import synth_features

    return Path(synth_features(tmp_path_factory.mktemp("features") / "f", subjects=4, seed=0, n=480))


def _args(features: Path, experiment: str, *extra: str) -> list[str]:
    return ["train", "train_classifier", "--data-dir", str(features), "--epochs", "3", "--batch-size", "32",
            "--dropout", "0", "--seed", "5", "--log-model", "false", "--checkpoint-every", "1",
            "--experiment-name", experiment, *extra]


def _runs(experiment: str):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _curve(run_id: str, key: str) -> list[float]:
    hist = sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.value for m in hist]


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    return subprocess.run([sys.executable, "-m", "emoexp", *args], env=full_env, capture_output=True,
                          text=True, timeout=400)


def test_two_ranks_match_one_process_and_log_one_run(features):
    one = CliRunner().invoke(cli, _args(features, "ddp-one"))
    assert one.exit_code == 0, one.output
    two = _cli(_args(features, "ddp-two", "--nproc", "2"))
    assert two.returncode == 0, two.stderr[-3000:]
    (r1,), (r2,) = _runs("ddp-one"), _runs("ddp-two")  # exactly one MLflow run per training
    assert r2.data.params["world_size"] == "2" and r1.data.params["world_size"] == "1"
    assert r2.data.params["nproc"] == "2"
    assert r1.data.params["n_val"] == r2.data.params["n_val"]
    for key in (T.M_TRAIN_LOSS, T.M_VAL_LOSS, T.M_VAL_ACC, T.M_VAL_F1):
        a, b = _curve(r1.info.run_id, key), _curve(r2.info.run_id, key)
        assert len(a) == len(b) == 3
        assert np.allclose(a, b, atol=TOLERANCE), (key, a, b)
    for key in (T.M_TEST_ACC, T.M_TEST_F1):
        assert abs(r1.data.metrics[key] - r2.data.metrics[key]) <= TOLERANCE, key
    arts = {a.path for a in MlflowClient().list_artifacts(r2.info.run_id, "checkpoints")}
    assert {"checkpoints/last.pt", "checkpoints/epoch_003.pt"} <= arts


@pytest.mark.slow  # three torchrun starts (~2 min on 2 cores)
def test_a_killed_two_rank_run_continues_to_the_same_metrics(features):
    ref = _cli(_args(features, "ddp-ref", "--nproc", "2", "--seed", "6"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = _cli(_args(features, "ddp-kill", "--nproc", "2", "--seed", "6"), {engine.FAULT_ENV: "1"})
    assert killed.returncode != 0
    (run,) = _runs("ddp-kill")
    assert run.info.status == "RUNNING"  # rank 0 was SIGKILLed: nothing could mark it
    cont = _cli(["resume", "--run", run.info.run_id])
    assert cont.returncode == 0, cont.stderr[-3000:]
    (ref_run,) = _runs("ddp-ref")
    client = MlflowClient()
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    for key in (T.M_TRAIN_LOSS, T.M_VAL_LOSS, T.M_VAL_F1):
        a, b = _curve(ref_run.info.run_id, key), _curve(run.info.run_id, key)
        assert len(b) == 3 and np.allclose(a, b, atol=1e-6), (key, a, b)


def test_a_dead_rank_fails_the_run_and_the_others_exit(features):
    res = _cli(_args(features, "ddp-dead", "--nproc", "2"), {engine.FAULT_ENV: "1", engine.FAULT_RANK_ENV: "1"})
    assert res.returncode != 0
    (run,) = _runs("ddp-dead")
    assert run.info.status == "FAILED", res.stderr[-4000:]
