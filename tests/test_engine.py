"""The engine end to end on synthetic FACED/EAV: learning, the MLflow vocabulary, resume, lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import engine
from emoexp import tracking as T
from emoexp.cli import main as cli
from emoexp.config import ConfigError, apply_overrides
from emoexp.tasks import get_task


def _cfg(task: str, **overrides):
    t = get_task(task)
    return t, apply_overrides(t.default_config(), overrides)


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        if a.is_dir:
            out |= _artifacts(client, run_id, a.path)
        else:
            out.add(a.path)
    return out


def _history(client, run_id, key) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@pytest.fixture(scope="module")
def pretrained(faced_root, tmp_path_factory):
    """One tracked pre-training run (4 epochs, model logged) shared by the tests below."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("pretrain"))
    try:
        task, cfg = _cfg("pretrain_faced", data_dir=str(faced_root), epochs=4, window_size=256, stride=128,
                         checkpoint_every=2, experiment_name="test-pretrain", seed=0)
        result = engine.fit(task, cfg)
    finally:
        os.chdir(cwd)
    return result


def test_pretrain_learns_above_chance_and_logs_the_vocabulary(pretrained, faced_root):
    client = MlflowClient()
    run = client.get_run(pretrained.run_id)
    assert run.info.status == "FINISHED"
    # 9 classes: chance is 0.11; the planted band-power signal must be learnt on held-out subjects.
    assert run.data.metrics[T.M_TEST_ACC] > 0.3, run.data.metrics
    p = run.data.params
    assert p["epochs"] == "4" and p["window_size"] == "256" and p["lr"] == "0.001"
    assert {f"sampling_weight.{c}" for c in ("anger", "joy", "tenderness")} <= set(p)
    tags = run.data.tags
    assert tags[T.TAG_TASK] == "pretrain_faced" and tags[T.TAG_MODALITY] == "eeg"
    assert tags[T.TAG_DATASET] == "faced"
    (ds,) = run.inputs.dataset_inputs
    assert ds.dataset.name == "faced" and ds.dataset.digest and str(faced_root) in ds.dataset.source
    assert sorted(_history(client, run.info.run_id, T.M_TRAIN_LOSS)) == [1, 2, 3, 4]
    for key in (T.M_VAL_LOSS, T.M_VAL_ACC, T.M_VAL_F1, "val_f1.anger", T.M_LR, T.M_EPOCH_TIME,
                T.M_SAMPLES_PER_S):
        assert sorted(_history(client, run.info.run_id, key)) == [1, 2, 3, 4], key
    for key in (T.M_BEST_VAL_F1, T.M_BEST_EPOCH, T.M_TEST_ACC, T.M_TEST_F1):
        assert key in run.data.metrics
    arts = _artifacts(client, run.info.run_id)
    for name in ("config.yaml", "split.json", "checkpoints/last.pt", "checkpoints/best.pt",
                 "checkpoints/epoch_002.pt", "checkpoints/epoch_004.pt", "eval/confusion_matrix.png",
                 "eval/classification_report.txt", "eval/roc.png", "eval/training_curves.png"):
        assert name in arts, (name, arts)
    split = json.loads(client.download_artifacts(run.info.run_id, "split.json", ".") and
                       Path(client.download_artifacts(run.info.run_id, "split.json")).read_text())
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))


def test_logged_model_predicts_on_raw_windows(pretrained):
    model = mlflow.pyfunc.load_model(f"runs:/{pretrained.run_id}/model")
    x = (20 * np.random.default_rng(0).standard_normal((3, 30, 256))).astype(np.float32)
    out = model.predict({"eeg": x})
    assert len(out) == 3
    probs = out[[c for c in out.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape == (3, 9) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(out["label"]) <= {"anger", "disgust", "fear", "sadness", "neutral", "amusement",
                                 "inspiration", "joy", "tenderness"}
    with pytest.raises(Exception, match="30|shape"):
        model.predict({"eeg": x[:, :28]})


def test_finetune_from_logged_model_with_audio_learns(pretrained, eav_root):
    task, cfg = _cfg("finetune_eav", data_dir=str(eav_root), epochs=5, lr=1e-3, window_size=256, stride=128,
                     use_audio=True, pretrained=f"runs:/{pretrained.run_id}/model",
                     experiment_name="test-finetune", log_model=True, seed=0)
    result = engine.fit(task, cfg)
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags[T.TAG_PRETRAINED_FROM] == f"runs:/{pretrained.run_id}/model"
    assert run.data.tags[T.TAG_CHANNEL_ADAPTER] == "linear"
    # as set, and what it resolved to (the pretrained encoder's kind)
    assert run.data.params["encoder"] == "auto" and run.data.params["resolved.encoder"] == "cnn"
    assert run.data.tags[T.TAG_PRETRAINED_RUN] == pretrained.run_id
    # 5 classes: chance is 0.2.
    assert run.data.metrics[T.M_TEST_ACC] > 0.45, run.data.metrics
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    n = int(256 / 250 * 16000)
    wave = np.zeros((2, n), np.float32)  # silence: no audio for these windows (masked)
    out = model.predict({"eeg": np.random.default_rng(1).standard_normal((2, 30, 256)).astype(np.float32),
                         "audio": wave})
    assert list(out.columns[:1]) == ["label"] and len(out) == 2


def test_pretrained_encoder_weights_are_loaded(pretrained, eav_root):
    task, cfg = _cfg("finetune_eav", data_dir=str(eav_root), epochs=1, window_size=256, stride=128,
                     pretrained=f"runs:/{pretrained.run_id}/checkpoints/best.pt")
    cfg = task.prepare(cfg)
    data = task.build_data(cfg)
    info = {**data.info, "heads": data.heads}
    model = task.build_model(cfg, info)
    task.init_from_pretrained(model, cfg, info)
    from emoexp.checkpoints import load_from_uri

    src = load_from_uri(f"runs:/{pretrained.run_id}/checkpoints/best.pt")["model"]
    for k, v in model.state_dict().items():
        if k.startswith("encoders.eeg."):
            assert np.allclose(v.numpy(), src[k].numpy()), k


def test_reading_from_the_store_leaves_nothing_in_the_temporary_folder(pretrained, faced_root, tmp_path, monkeypatch):
    """Every read of a checkpoint, a logged model or a record from the artifact store downloads into
    a folder removed afterwards, and an untracked run stages beside the tracked ones (the suite once
    filled a disk with copies left in /tmp: MLflow's download without a destination never removes
    its folder)."""
    import tempfile

    from emoexp.apps.predict import load_model
    from emoexp.checkpoints import CheckpointError, fetch_text, load_from_uri

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    client = MlflowClient()
    run_id = pretrained.run_id
    assert not (Path(".emoexp") / "runs" / run_id).exists()  # its stage is elsewhere: reads go to the store

    assert load_from_uri(f"runs:/{run_id}/checkpoints/best.pt")["task"] == "pretrain_faced"
    assert load_model(f"runs:/{run_id}/model")[0] is not None
    state, src, _ = engine._newest_checkpoint(client, run_id)
    assert src == f"runs:/{run_id}/checkpoints/last.pt" and state["epoch"] == 4
    assert json.loads(fetch_text(client, run_id, "split.json"))
    # a stored file that is no checkpoint is named by its URI, not by the download's path
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with mlflow.start_run(experiment_id=client.get_run(run_id).info.experiment_id) as other:
        mlflow.log_artifact(str(bad), "broken")
    with pytest.raises(CheckpointError, match=rf"^runs:/{other.info.run_id}/broken/bad\.pt: (refused|not a readable)"):
        load_from_uri(f"runs:/{other.info.run_id}/broken/bad.pt")

    task, cfg = _cfg("pretrain_faced", data_dir=str(faced_root), epochs=1, window_size=256, stride=128)
    untracked = engine.fit(task, cfg, track=False)
    assert untracked.output_dir.parent == Path(".emoexp") / "runs"
    assert untracked.output_dir.name.startswith("untracked-")
    assert (untracked.output_dir / T.ART_CKPT_DIR / T.ART_LAST).is_file()
    assert list(scratch.iterdir()) == []


def test_channel_count_mismatch_is_explicit(faced_root, eav_root, tmp_path):
    task, cfg = _cfg("pretrain_faced", data_dir=str(faced_root), epochs=1, window_size=256, stride=128,
                     channels="all32", output_dir=str(tmp_path / "p"), log_model=False)
    engine.fit(task, cfg, track=False)
    ckpt = str(tmp_path / "p" / "checkpoints" / "best.pt")
    ft, fcfg = _cfg("finetune_eav", data_dir=str(eav_root), epochs=1, window_size=256, stride=128,
                    pretrained=ckpt, channel_adapter="identity")
    with pytest.raises(ConfigError, match="32 channels.*30"):
        ft.build_data(ft.prepare(fcfg))
    data = ft.build_data(ft.prepare(apply_overrides(fcfg, {"channel_adapter": "linear"})))
    model = ft.build_model(fcfg, {**data.info, "heads": data.heads})
    assert model.channel_adapter is not None  # 30 EAV channels -> 32 encoder inputs, learned


def test_branch_resume_records_lineage_and_continues_numbering(pretrained, tmp_path):
    client = MlflowClient()
    uri = f"runs:/{pretrained.run_id}/checkpoints/last.pt"
    child = engine.branch(uri, {"epochs": 2, "weights": "anger=5,joy=0.5", "log_model": False})
    run = client.get_run(child.run_id)
    tags = run.data.tags
    assert tags[T.TAG_PARENT_RUN] == pretrained.run_id
    assert tags[T.TAG_ROOT_RUN] == pretrained.run_id
    assert tags[T.TAG_RESUMED_FROM] == uri
    assert tags[T.TAG_RESUMED_EPOCH] == "4" and tags[T.TAG_LINEAGE_DEPTH] == "1"
    assert sorted(_history(client, child.run_id, T.M_TRAIN_LOSS)) == [5, 6]
    assert run.data.params["sampling_weight.anger"] == "5.0"
    assert run.data.params["sampling_weight.fear"] == "1.0"
    lineage = json.loads(Path(client.download_artifacts(child.run_id, "lineage.json")).read_text())
    assert [e["run_id"] for e in lineage] == [pretrained.run_id, child.run_id]
    assert lineage[0]["epoch"] == 4 and lineage[1]["sampling_weights"]["anger"] == 5.0
    changes = Path(client.download_artifacts(child.run_id, "weight_changes.log")).read_text()
    assert "anger: 1 -> 5" in changes and "joy: 1 -> 0.5" in changes

    grandchild = engine.branch(f"runs:/{child.run_id}/checkpoints/last.pt",
                               {"epochs": 1, "weights": "", "log_model": False})
    g = client.get_run(grandchild.run_id)
    assert g.data.tags[T.TAG_LINEAGE_DEPTH] == "2"
    assert g.data.tags[T.TAG_ROOT_RUN] == pretrained.run_id
    assert sorted(_history(client, grandchild.run_id, T.M_TRAIN_LOSS)) == [7]

    res = CliRunner().invoke(cli, ["runs", "lineage", grandchild.run_id])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip() and "weights:" not in ln]
    assert [pretrained.run_id in lines[0], child.run_id in lines[1], grandchild.run_id in lines[2]] == [True] * 3
    assert "epochs 1-4" in lines[0] and "epochs 5-6" in lines[1] and "epochs 7-7" in lines[2]
    assert "anger=5.0" in res.output


def test_branch_refuses_architecture_changes(pretrained):
    with pytest.raises(ValueError, match="window_size"):
        engine.branch(f"runs:/{pretrained.run_id}/checkpoints/last.pt", {"window_size": 128, "epochs": 1})


def _cli_env(tmp_path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.slow(reason="30 s: test_faults::test_killed_at_any_point_continues_to_the_uninterrupted_result covers kill-and-continue in the fast suite")
def test_killed_run_continues_to_the_same_metrics(faced_root, tmp_path):
    """SIGKILL after epoch 2, `emoexp resume --run`, and the curves equal an uninterrupted run's."""
    args = ["train", "pretrain_faced", "--data-dir", str(faced_root), "--epochs", "4", "--window-size", "256",
            "--stride", "128", "--seed", "3", "--log-model", "false", "--max-subjects", "4"]
    client = MlflowClient()
    ref = engine.fit(*_cfg("pretrain_faced", data_dir=str(faced_root), epochs=4, window_size=256, stride=128,
                           seed=3, log_model=False, max_subjects=4, experiment_name="test-kill"))

    env = _cli_env(tmp_path)
    env[engine.FAULT_ENV] = "2"
    proc = subprocess.run([sys.executable, "-m", "emoexp", *args, "--experiment-name", "test-kill"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    runs = client.search_runs([client.get_experiment_by_name("test-kill").experiment_id],
                              filter_string="attributes.status = 'RUNNING'")
    assert len(runs) == 1
    killed = runs[0].info.run_id
    assert sorted(_history(client, killed, T.M_TRAIN_LOSS)) == [1, 2]

    res = CliRunner().invoke(cli, ["resume", "--run", killed])
    assert res.exit_code == 0, res.output
    assert client.get_run(killed).info.status == "FINISHED"
    assert client.get_run(killed).data.tags[T.TAG_CONTINUED] == "2"
    for key in (T.M_TRAIN_LOSS, T.M_VAL_LOSS, T.M_VAL_F1, T.M_LR):
        got, want = _history(client, killed, key), _history(client, ref.run_id, key)
        assert sorted(got) == [1, 2, 3, 4]
        assert np.allclose([got[e] for e in range(1, 5)], [want[e] for e in range(1, 5)], rtol=1e-5, atol=1e-6), key


def test_exception_marks_run_failed_with_traceback(faced_root):
    task, cfg = _cfg("pretrain_faced", data_dir=str(faced_root), epochs=3, window_size=256, stride=128,
                     log_model=False, max_subjects=3, experiment_name="test-fail")

    def boom(epoch, metrics):
        raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError):
        engine.fit(task, cfg, epoch_callback=boom)
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("test-fail").experiment_id])[0]
    assert run.info.status == "FAILED"
    text = Path(client.download_artifacts(run.info.run_id, T.ART_ERROR)).read_text()
    assert "injected failure" in text

    def interrupt(epoch, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.fit(task, cfg, epoch_callback=interrupt)
    runs = client.search_runs([client.get_experiment_by_name("test-fail").experiment_id],
                              order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "KILLED"


def test_sampling_weights_change_what_the_model_sees(faced_root):
    """weights=anger=20 makes anger dominate the draws: the engine's sampler honours weights."""
    from emoexp.engine import _loader

    task, cfg = _cfg("pretrain_faced", data_dir=str(faced_root), window_size=256, stride=128, max_subjects=3)
    data = task.build_data(cfg)
    import torch

    from emoexp.config import parse_weights

    w = parse_weights("anger=20", data.class_names)
    loader = _loader(data.train, cfg, torch.Generator().manual_seed(0), data.train_targets, w, data.class_names)
    labels = np.concatenate([b["emotion"].numpy() for b in loader])
    share = (labels == 0).mean()
    # anger is 3 of 28 clips (~11%); weighted 20x it becomes ~70% of the draws.
    assert share > 0.5, share


def test_runs_list_shows_runs_and_checkpoints(pretrained):
    res = CliRunner().invoke(cli, ["runs", "list", "--task", "pretrain_faced", "--experiment", "test-pretrain"])
    assert res.exit_code == 0, res.output
    row = next(ln for ln in res.output.splitlines() if pretrained.run_id in ln)
    assert "FINISHED" in row and "last.pt" in row and "best.pt" in row and "epoch_004.pt" in row


def test_cli_resume_branches_with_new_weights(pretrained):
    """`emoexp resume URI --epochs N --weights ...` as a user types it."""
    uri = f"runs:/{pretrained.run_id}/checkpoints/epoch_002.pt"
    res = CliRunner().invoke(cli, ["resume", uri, "--epochs", "1", "--weights", "sadness=5,joy=0.5",
                                   "--set", "log_model=false", "--description", "sadness focus"])
    assert res.exit_code == 0, res.output
    run_id = res.output.split("run ")[1].split()[0]
    run = MlflowClient().get_run(run_id)
    assert run.data.params["sampling_weight.sadness"] == "5.0"
    assert run.data.tags[T.TAG_RESUMED_EPOCH] == "2"
    assert run.data.tags[T.MLFLOW_DESCRIPTION] == "sadness focus"
    assert sorted(_history(MlflowClient(), run_id, T.M_TRAIN_LOSS)) == [3]
