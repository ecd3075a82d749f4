"""Deployment: `mlflow models serve` of the @staging model over HTTP, and `emoexp predict` on raw files."""

from __future__ import annotations

import json
import os
import pickle
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from emoexp import engine
from emoexp.cli import main as cli
from emoexp.config import apply_overrides
from emoexp.data.faced import FACED_CLASSES
from emoexp.registry import promote
from emoexp.tasks import get_task

URI = "models:/emoexp-eeg-encoder@staging"


@pytest.fixture(scope="module")
def staged(tmp_path_factory, faced_root):
    """A store of this module's own holding one pretrain_faced run promoted to @staging."""
    root = tmp_path_factory.mktemp("serving")
    old_uri, old_cwd = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    os.chdir(root)
    try:
        task = get_task("pretrain_faced")
        cfg = apply_overrides(task.default_config(), {
            "data_dir": str(faced_root), "epochs": 1, "window_size": 256, "stride": 256, "max_subjects": 4,
            "experiment_name": "serving", "log_model": True, "checkpoint_every": 0,
        })
        engine.fit(task, cfg)
        assert promote("eeg", task="pretrain_faced")[0].action == "promoted"
        yield root
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri
            mlflow.set_tracking_uri(old_uri)


@pytest.fixture(scope="module")
def server(staged, model_server):
    """`mlflow models serve` of the @staging model; always terminated."""
    with model_server(URI, staged / "serve.log") as url:
        yield url


def test_served_staging_model_answers_invocations(server):
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(URI)
    example = Model.load(local).load_input_example(local)
    assert set(example) == {"eeg"} and example["eeg"].shape[1:] == (30, 256)
    body = json.dumps({"inputs": {k: np.asarray(v).tolist() for k, v in example.items()}}).encode()
    req = urllib.request.Request(f"{server}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        preds = pd.DataFrame(json.loads(r.read())["predictions"])
    assert len(preds) == len(example["eeg"])
    assert set(preds["label"]) <= set(FACED_CLASSES)
    probs = preds[[f"prob_{c}" for c in FACED_CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_predict_npy_recording_is_cut_into_windows(staged, tmp_path):
    path = tmp_path / "rec.npy"
    np.save(path, np.random.default_rng(0).standard_normal((30, 1000)).astype(np.float32))
    out = tmp_path / "preds.csv"
    res = CliRunner().invoke(cli, ["predict", URI, str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    # 1000 samples, 256-sample windows back to back at 250 Hz -> 3 windows
    assert df["window"].tolist() == [0, 1, 2] and df["segment"].tolist() == [0, 0, 0]
    np.testing.assert_allclose(df["start_s"], [0.0, 1.024, 2.048])
    probs = df[[f"prob_{c}" for c in FACED_CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(df["prob"], probs.max(axis=1))
    assert (df["label"] == np.asarray(FACED_CLASSES)[probs.argmax(axis=1)]).all()
    assert "rec.npy" in res.output and "wrote 3 rows" in res.output


def test_predict_faced_pickle_windows_every_clip(staged, tmp_path):
    from emoexp.apps.predict import predict_files

    path = tmp_path / "sub900.pkl"
    with open(path, "wb") as f:
        pickle.dump(np.random.default_rng(1).standard_normal((28, 32, 600)), f)
    df = predict_files(URI, [str(path)], overlap=0.5)
    # 600 samples, windows of 256 every 128 -> 3 per clip
    assert len(df) == 28 * 3 and sorted(set(df["segment"])) == list(range(28))
    assert df.groupby("segment")["window"].max().eq(2).all()


@pytest.mark.parametrize("name, content, problem", [
    ("notes.txt", "hello", "unknown file type '.txt'"),
    ("bad.npy", np.zeros((31, 1000), np.float32), "shape (31, 1000); model pretrain_faced expects (30, T)"),
    ("short.npy", np.zeros((30, 100), np.float32), "shorter than model pretrain_faced's window"),
    ("voice.wav", np.zeros(16000, np.float32), "takes no 'audio' input"),
])
def test_predict_bad_input_is_one_line_naming_the_file(staged, tmp_path, name, content, problem):
    import soundfile as sf

    path = tmp_path / name
    if name.endswith(".txt"):
        path.write_text(content)
    elif name.endswith(".wav"):
        sf.write(path, content, 16000)
    else:
        np.save(path, content)
    res = CliRunner().invoke(cli, ["predict", URI, str(path)])
    assert res.exit_code != 0
    assert str(path) in res.output and problem in res.output, res.output
    assert "Traceback" not in res.output


def test_predict_unknown_model_is_one_line(staged, tmp_path):
    path = tmp_path / "rec.npy"
    np.save(path, np.zeros((30, 300), np.float32))
    res = CliRunner().invoke(cli, ["predict", "models:/emoexp-nope@staging", str(path)])
    assert res.exit_code != 0 and "models:/emoexp-nope@staging: cannot load the model" in res.output
    assert "Traceback" not in res.output
