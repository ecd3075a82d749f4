"""train_speech: learning on synthetic RAVDESS, the gender head, serving a waveform, evaluate's error
analysis, `emoexp predict` on .wav, `emoexp listen`, and EAV audio."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import engine
from emoexp import tracking as T
from emoexp.cli import main as cli
from emoexp.config import ConfigError, apply_overrides
from emoexp.tasks import get_task

BASIC4 = ["neutral", "happy", "sad", "angry"]


@pytest.fixture(scope="session")
def ravdess_root(session_tmp) -> Path:
    from emoexp.data.synth_speech import synth_ravdess

    # the plain plant (evenly acted, one level, one microphone): the learning test trains a few epochs
    return Path(synth_ravdess(session_tmp / "ravdess", subjects=6, seed=0, acting=0.0, level_db_std=1.0,
                              channel=0.0, room_snr_db=0.0))


def _cfg(data_dir, **kw):
    task = get_task("train_speech")
    base = {"data_dir": str(data_dir), "emotion_subset": "basic4", "epochs": 2, "batch_size": 16, "lr": 1e-3,
            "clip_seconds": 2.0, "log_model": False, "checkpoint_every": 0, "augment": False}
    return task, apply_overrides(task.default_config(), {**base, **kw})


@pytest.fixture(scope="session")
def trained(ravdess_root):
    """One tracked run on 6 synthetic actors (4 train, 1 val, 1 test), basic4, model logged."""
    task, cfg = _cfg(ravdess_root, epochs=8, log_model=True, experiment_name="test-speech")
    return engine.fit(task, cfg)


def test_learns_synthetic_emotions_across_actors(trained):
    """basic4 on an unseen actor: chance accuracy is 0.25; the planted contours are learnable."""
    assert trained.test_metrics["test_accuracy"] > 0.5, trained.test_metrics
    run = MlflowClient().get_run(trained.run_id)
    m, p = run.data.metrics, run.data.params
    assert run.data.tags[T.TAG_TASK] == "train_speech"
    assert "gender.val_macro_f1" in m and "gender.test_accuracy" in m
    assert p["emotion_subset"] == "basic4" and p["freeze_feature_extractor"] == "true"
    assert {f"{T.PARAM_WEIGHT_PREFIX}{c}" for c in BASIC4} <= set(p)
    split = json.loads(Path(MlflowClient().download_artifacts(trained.run_id, "split.json")).read_text())
    sides = split["speakers"]
    assert not (set(sides["train"]) & set(sides["val"])) and not (set(sides["train"]) & set(sides["test"]))
    arts = {a.path for a in MlflowClient().list_artifacts(trained.run_id, T.ART_EVAL_DIR)}
    assert f"{T.ART_EVAL_DIR}/error_analysis.json" in arts and f"{T.ART_EVAL_DIR}/roc.png" in arts


def test_subsets_and_heads(ravdess_root):
    task, cfg = _cfg(ravdess_root, emotion_subset="basic6")
    data = task.build_data(cfg)
    assert data.class_names == ["neutral", "happy", "sad", "angry", "fearful", "surprised"]
    assert data.heads["gender"] == ["male", "female"]
    task, cfg = _cfg(ravdess_root, emotion_subset="all", gender_loss_weight=0)
    data = task.build_data(cfg)
    assert len(data.class_names) == 8 and "gender" not in data.heads
    with pytest.raises(ConfigError, match="emotion_subset: 'basic5' is not one of basic4, basic6, all"):
        _cfg(ravdess_root, emotion_subset="basic5")


def test_frozen_feature_cache_is_used_without_augmentation(ravdess_root):
    """augment=false: epoch 2 reuses the conv features of every training clip of epoch 1;
    augment=true: nothing is cached (each draw differs)."""
    import torch

    task, cfg = _cfg(ravdess_root, epochs=2, max_subjects=3, batch_size=4)  # no partial batch dropped
    data = task.build_data(cfg)
    model = task.build_model(cfg, {**data.info, "heads": data.heads})
    assert model.cache_features and len(data.train) % 4 == 0
    opt = engine._optimizer(cfg, model)
    weights = {c: 1.0 for c in data.class_names}
    n = len(data.train)
    losses = []
    for epoch in (1, 2):
        m = engine._train_one_epoch(task, cfg, model, opt, data, weights, "emotion",
                                    task.head_loss_weights(cfg, data.info | {"heads": data.heads}),
                                    torch.device("cpu"), epoch, 2)
        losses.append(m[T.M_TRAIN_LOSS])
    assert model.feature_cache_misses == n and model.feature_cache_hits == n
    assert all(np.isfinite(losses))
    data.train.augment = True
    model.clear_feature_cache()
    engine._train_one_epoch(task, cfg, model, opt, data, weights, "emotion", {}, torch.device("cpu"), 3, 3)
    assert model.feature_cache_hits == 0 and len(model._feature_cache) == 0


def test_resume_with_new_weights_shows_lineage(trained):
    ckpt = f"runs:/{trained.run_id}/checkpoints/last.pt"
    res = engine.branch(ckpt, {"epochs": 1, "weights": "sad=5,angry=0.5"})
    run = MlflowClient().get_run(res.run_id)
    assert run.data.params[f"{T.PARAM_WEIGHT_PREFIX}sad"] == "5.0"
    assert run.data.tags[T.TAG_PARENT_RUN] == trained.run_id


def _tone(seconds: float, rate: int, f0: float = 180.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_served_model_takes_a_waveform_and_its_rate(trained):
    """In process: one waveform, a batch, other rates and lengths; bad input is a clear error."""
    import mlflow

    model = mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model")
    out = model.predict({"waveform": _tone(2.5, 44100), "sample_rate": np.array([44100])})
    assert len(out) == 1 and out["label"][0] in BASIC4 and out["gender.label"][0] in ("male", "female")
    assert abs(sum(out[f"prob_{c}"][0] for c in BASIC4) - 1.0) < 1e-5
    ragged = np.empty(2, dtype=object)
    ragged[:] = [_tone(1.0, 16000), _tone(4.0, 48000)]
    out = model.predict({"waveform": ragged, "sample_rate": np.array([16000, 48000])})
    assert len(out) == 2
    with pytest.raises(Exception, match="int16|integer"):
        model.predict({"waveform": (_tone(1.0, 16000) * 32767).astype(np.int16), "sample_rate": np.array([16000])})


@pytest.mark.slow(reason="25 s: a `mlflow models serve` process; the speech pyfunc's inputs are checked in process by "
                         "test_served_model_takes_a_waveform_and_its_rate, the HTTP layer by test_serving_readme (fast)")
def test_served_over_http(trained, tmp_path, model_server):
    import urllib.error
    import urllib.request

    wave = _tone(2.0, 16000).tolist()
    with model_server(f"runs:/{trained.run_id}/model", tmp_path / "serve.log") as url:
        body = {"inputs": {"waveform": [wave, wave[:8000]], "sample_rate": [16000, 16000]}}
        req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                preds = json.loads(r.read())["predictions"]
        except urllib.error.HTTPError as e:
            raise AssertionError(e.read().decode()[:2000]) from None
    assert len(preds) == 2 and preds[0]["label"] in BASIC4


def test_predict_cli_reads_wav(trained, tmp_path):
    wav = tmp_path / "talk.wav"
    sf.write(wav, _tone(7.0, 48000), 48000, subtype="PCM_16")
    res = CliRunner().invoke(cli, ["predict", f"runs:/{trained.run_id}/model", str(wav), "--out",
                                   str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    import pandas as pd

    df = pd.read_csv(tmp_path / "p.csv")
    assert len(df) == 3 and set(df["label"]) <= set(BASIC4)  # 7 s in 2 s clips, back to back
    assert list(df["start_s"]) == [0.0, 2.0, 4.0]


def test_evaluate_writes_error_analysis(trained, ravdess_root, tmp_path):
    out = tmp_path / "ev"
    res = CliRunner().invoke(cli, ["evaluate", f"runs:/{trained.run_id}/model", "--data", str(ravdess_root),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    ea = json.loads((out / "error_analysis.json").read_text())
    assert set(ea["per_intensity"]) == {"normal", "strong"}
    assert len(ea["per_speaker"]) == 1  # the test side holds one actor
    assert "gender_accuracy" in ea and (out / "confusion_matrix.png").is_file()
    assert "most confused" in (out / "error_analysis.txt").read_text()


def test_listen_streams_a_file(trained, tmp_path):
    wav = tmp_path / "talk.wav"
    sig = np.concatenate([_tone(3.0, 16000), np.zeros(16000 * 3, np.float32)])
    sf.write(wav, sig, 16000)
    res = CliRunner().invoke(cli, ["listen", f"runs:/{trained.run_id}/model", "--input", str(wav),
                                   "--window", "2", "--hop", "1"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if " s  " in ln]
    assert len(lines) == 5  # windows start at 0..4 s in 6 s of audio
    assert "(silence)" in lines[-1] and any(c in lines[0] for c in BASIC4)


def test_listen_without_microphone_says_what_is_missing(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    res = CliRunner().invoke(cli, ["listen", f"runs:/{trained.run_id}/model"])
    assert res.exit_code == 1 and "sounddevice" in res.output and "--input" in res.output


def test_listen_refuses_a_missing_file(tmp_path, trained):
    res = CliRunner().invoke(cli, ["listen", f"runs:/{trained.run_id}/model", "--input", str(tmp_path / "x.wav")])
    assert res.exit_code == 1 and "no such file" in res.output


def test_eav_speaking_audio_trains(tmp_path):
    from emoexp.data.synth import synth_eav

    root = synth_eav(tmp_path / "eav", subjects=3, seed=0, trials=20, n_samples=2000)
    task, cfg = _cfg(root, dataset="eav", epochs=1)
    data = task.build_data(cfg)
    assert data.class_names == ["neutral", "sadness", "anger", "happiness", "calmness"]
    assert list(data.heads) == ["emotion"]  # EAV records no gender
    res = engine.fit(task, cfg, track=False)
    assert np.isfinite(res.history[0][T.M_TRAIN_LOSS])
