"""train_posture (multi-task TCN-LSTM) and train_classifier (MLP heads on features): learning on
synthetic data, per-head metrics, serving, `emoexp predict` on .npy, evaluate per head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import engine
from emoexp import tracking as T
from emoexp.cli import main as cli
from emoexp.config import ConfigError, apply_overrides
from emoexp.tasks import get_task

POSTURE = ["upright", "slouched", "open", "closed"]


@pytest.fixture(scope="session")
def posture_root(session_tmp) -> Path:
    from emoexp.data.synth_posture import synth_posture

    # the plain plant (one way per posture, no sitting noise): the learning test trains a few epochs
    return Path(synth_posture(session_tmp / "posture", subjects=4, seed=0, variety=0.0, pose_noise=0.0,
                              n_per_side={"train": 240, "val": 48, "test": 48}))


@pytest.fixture(scope="session")
def trained_posture(posture_root):
    task = get_task("train_posture")
    cfg = apply_overrides(task.default_config(), {
        "data_dir": str(posture_root), "epochs": 10, "lr": 3e-3, "batch_size": 16, "checkpoint_every": 0,
        "experiment_name": "test-posture", "loss_weights": "stress=0.5"})
    return engine.fit(task, cfg)


def test_tcn_lstm_learns_three_heads(trained_posture):
    """Chance: posture 0.25, stress 0.25, trajectory 0.33 (macro F1 about the same)."""
    run = MlflowClient().get_run(trained_posture.run_id)
    m, p = run.data.metrics, run.data.params
    assert m["test_macro_f1"] > 0.6, m                       # posture, the primary head
    assert m["stress.test_macro_f1"] > 0.45 and m["trajectory.test_macro_f1"] > 0.5, m
    assert "stress.val_macro_f1" in m and "trajectory.val_accuracy" in m
    # sampling weights belong to the primary head only; loss weights are config
    assert {f"{T.PARAM_WEIGHT_PREFIX}{c}" for c in POSTURE} <= set(p)
    assert not any(k.startswith(T.PARAM_WEIGHT_PREFIX + "calm") for k in p)
    assert p["loss_weights"] == "stress=0.5" and p["seq_length"] == "30"


def test_loss_weights_are_checked(posture_root):
    task = get_task("train_posture")
    cfg = apply_overrides(task.default_config(), {"data_dir": str(posture_root), "loss_weights": "mood=2"})
    info = {"heads": {"posture": POSTURE, "stress": ["a"], "trajectory": ["b"]}}
    with pytest.raises(ConfigError, match="loss_weights.*heads are posture, stress, trajectory"):
        task.head_loss_weights(cfg, info)
    cfg = apply_overrides(cfg, {"loss_weights": "traj=0.2"})
    assert task.head_loss_weights(cfg, info) == {"posture": 1.0, "stress": 1.0, "trajectory": 0.2}


def test_served_posture_model_takes_a_sequence_or_a_batch(trained_posture):
    import mlflow

    model = mlflow.pyfunc.load_model(f"runs:/{trained_posture.run_id}/model")
    rng = np.random.default_rng(0)
    one = model.predict({"sequence": rng.normal(size=(45, 15)).astype(np.float32)})
    assert len(one) == 1 and one["label"][0] in POSTURE and "stress.label" in one and "trajectory.label" in one
    batch = model.predict({"sequence": rng.normal(size=(3, 12, 15)).astype(np.float32)})  # shorter: padded
    assert len(batch) == 3
    with pytest.raises(Exception, match="15"):
        model.predict({"sequence": rng.normal(size=(30, 14)).astype(np.float32)})


def test_predict_and_evaluate_posture(trained_posture, posture_root, tmp_path):
    seq = np.load(next((posture_root / "val" / "sequences").glob("*.npy")))
    long = np.concatenate([seq, seq, seq])[:90]
    np.save(tmp_path / "walk.npy", long)
    res = CliRunner().invoke(cli, ["predict", f"runs:/{trained_posture.run_id}/model", str(tmp_path / "walk.npy")])
    assert res.exit_code == 0, res.output
    assert sum(1 for ln in res.output.splitlines() if "walk.npy" in ln) == 3   # 90 frames, windows of 30
    out = tmp_path / "ev"
    res = CliRunner().invoke(cli, ["evaluate", f"runs:/{trained_posture.run_id}/model", "--data", str(posture_root),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    for prefix in ("", "stress.", "trajectory."):
        assert (out / f"{prefix}confusion_matrix.csv").is_file()
    ev = json.loads((out / "evaluation.json").read_text())
    assert "stress.eval_macro_f1" in ev["metrics"]


@pytest.fixture(scope="session")
def features_root(session_tmp) -> Path:
    from emoexp.data.synth_posture import synth_features

    return Path(synth_features(session_tmp / "features", seed=0, n=400))


def test_classifier_heads_learn_and_serve(features_root, tmp_path):
    import mlflow

    task = get_task("train_classifier")
    cfg = apply_overrides(task.default_config(), {
        "features": str(features_root / "features.csv"), "labels": str(features_root / "labels.json"),
        "epochs": 15, "checkpoint_every": 0, "experiment_name": "test-classifier"})
    res = engine.fit(task, cfg)
    heads = json.loads((features_root / "heads.json").read_text())
    first, second = list(heads)
    m = MlflowClient().get_run(res.run_id).data.metrics
    assert m["test_accuracy"] > 1.0 / len(heads[first]) + 0.2, m
    assert m[f"{second}.test_accuracy"] > 1.0 / len(heads[second]) + 0.15, m
    model = mlflow.pyfunc.load_model(f"runs:/{res.run_id}/model")
    out = model.predict({"features": np.zeros((2, 32), np.float32)})
    assert len(out) == 2 and out["label"][0] in heads[first] and f"{second}.label" in out
    # evaluate on a folder holding features.csv + labels.json: every head reported
    ev = CliRunner().invoke(cli, ["evaluate", f"runs:/{res.run_id}/model", "--data", str(features_root),
                                  "--out", str(tmp_path / "ev")])
    assert ev.exit_code == 0, ev.output
    assert (tmp_path / "ev" / f"{second}.confusion_matrix.csv").is_file()


def test_classifier_reports_bad_labels(features_root, tmp_path):
    labels = json.loads((features_root / "labels.json").read_text())
    sid = next(iter(labels))
    labels[sid] = {h: 99 for h in labels[sid]}
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps(labels))
    (tmp_path / "heads.json").write_text((features_root / "heads.json").read_text())  # the class names
    task = get_task("train_classifier")
    cfg = apply_overrides(task.default_config(), {"features": str(features_root / "features.csv"),
                                                  "labels": str(bad)})
    with pytest.raises(ValueError, match=f"labels.json: {sid}: .*=99 is not a code"):
        task.build_data(cfg)


def test_posture_extract_without_a_model_file_says_where_models_come_from(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 10)
    res = CliRunner().invoke(cli, ["posture", "extract", str(video), "--pose-model", str(tmp_path / "nope.task"),
                                   "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 1 and "nope.task" in res.output and "pose_landmarker" in res.output
