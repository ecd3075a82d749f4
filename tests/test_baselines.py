"""Classical baselines (emoexp/baselines.py): features, the fitted classifier, the run, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_contracts import TASKS, _tiny

from emoexp import tracking as T
from emoexp.baselines import (
    EEG_BANDS,
    band_features,
    fit_baseline,
    hog_features,
    run_baseline,
    sequence_stats,
)
from emoexp.config import apply_overrides
from emoexp.tasks import get_task, list_tasks


def test_band_features_put_a_sine_in_its_band():
    sr, t = 250.0, np.arange(500) / 250.0
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal((2, 3, 500))
    x[0, 1] += np.sin(2 * np.pi * 10.0 * t)   # alpha, channel 1 of window 0
    x[1, 2] += np.sin(2 * np.pi * 20.0 * t)   # beta, channel 2 of window 1
    f = band_features(x, sr).reshape(2, 3, len(EEG_BANDS), 2)   # (N, C, band, [log power, DE])
    bands = list(EEG_BANDS)
    for kind in (0, 1):
        assert bands[int(np.argmax(f[0, 1, :, kind]))] == "alpha"
        assert bands[int(np.argmax(f[1, 2, :, kind]))] == "beta"
        assert f[0, 1, bands.index("alpha"), kind] > f[0, 0, bands.index("alpha"), kind] + 2
    # DEAP's 128 Hz: gamma is capped below Nyquist, every value finite
    assert np.isfinite(band_features(rng.standard_normal((1, 2, 128)), 128.0)).all()


def test_hog_and_sequence_features_have_fixed_sizes():
    rng = np.random.default_rng(1)
    assert hog_features(rng.integers(0, 255, (3, 96, 96, 3), dtype=np.uint8)).shape == (3, 900)
    assert hog_features(rng.integers(0, 255, (2, 48, 48), dtype=np.uint8)).shape == (2, 900)
    seq = rng.standard_normal((4, 30, 15))
    s = sequence_stats(seq)
    assert s.shape == (4, 90)
    assert np.allclose(s[:, :15], seq.mean(1), atol=1e-5)


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_has_a_baseline(name: str, tmp_path: Path):
    """The baseline fits on every task's tiny synthetic set and reports the deep runs' names."""
    task = get_task(name)
    synth_options, overrides = TASKS[name]
    cfg = task.default_config()
    dataset = overrides.get("dataset") or cfg.to_dict().get("dataset") or task.dataset
    data_dir = _tiny(dataset, tmp_path / "data", **synth_options)
    cfg = task.prepare(apply_overrides(cfg, {"data_dir": str(data_dir), "device": "cpu", **overrides}))
    data = task.build_data(cfg)
    m = fit_baseline(task, cfg, data)
    for key in ("val_accuracy", "val_macro_f1", "best_val_macro_f1"):
        assert 0.0 <= m[key] <= 1.0, (key, m)
    assert m["best_val_macro_f1"] == m["val_macro_f1"]
    assert all(f"val_f1.{c}" in m for c in data.class_names)
    if data.test is not None and len(data.test):
        assert 0.0 <= m["test_macro_f1"] <= 1.0 and 0.0 <= m["test_accuracy"] <= 1.0
    for head in list(data.heads)[1:]:
        assert f"{head}.val_macro_f1" in m
    assert all(math.isfinite(v) for k, v in m.items() if not k.endswith("baseline.C")), m


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory) -> Path:
    from emoexp.data.synth_posture import synth_features

    return Path(synth_features(tmp_path_factory.mktemp("features"), seed=0, n=240))


def test_baseline_run_is_tracked_as_a_baseline(features_dir):
    from mlflow import MlflowClient

    out = run_baseline("train_classifier", {"data_dir": str(features_dir), "experiment_name": "baselines"})
    run = MlflowClient().get_run(out["run_id"])
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert tags[T.TAG_MODEL_KIND] == T.MODEL_KIND_BASELINE
    assert tags[T.TAG_TASK] == "train_classifier" and tags[T.TAG_MODALITY] == "features"
    for key in (T.M_VAL_F1, T.M_VAL_ACC, T.M_TEST_F1, T.M_TEST_ACC, T.M_BEST_VAL_F1, "anxiety.val_macro_f1"):
        assert key in metrics, sorted(metrics)
    assert metrics[T.M_VAL_F1] == pytest.approx(out["metrics"][T.M_VAL_F1])
    # the deep runs' params where they apply, and what the baseline is
    assert params["batch_size"] == "32" and params["baseline.features"] == "given"
    assert int(params["n_train"]) > 0 and "LogisticRegression" in params["baseline.classifier"]
    arts = {a.path for a in MlflowClient().list_artifacts(out["run_id"], T.ART_EVAL_DIR)}
    assert f"{T.ART_EVAL_DIR}/confusion_matrix.csv" in arts and f"{T.ART_EVAL_DIR}/anxiety.confusion_matrix.csv" in arts
    assert {a.path for a in MlflowClient().list_artifacts(out["run_id"])} >= {T.ART_CONFIG, T.ART_SPLIT}


def test_fit_baseline_logs_to_a_given_run(features_dir):
    """How cross-validation calls it: a fold's bundle and an active (nested) run."""
    import mlflow

    task = get_task("train_classifier")
    cfg = task.prepare(apply_overrides(task.default_config(), {"data_dir": str(features_dir)}))
    data = task.build_data(cfg)
    mlflow.set_experiment("baselines")
    with mlflow.start_run() as parent, mlflow.start_run(nested=True) as child:
        m = fit_baseline(task, cfg, data, run=child)
    logged = mlflow.MlflowClient().get_run(child.info.run_id).data.metrics
    assert logged[T.M_TEST_F1] == pytest.approx(m[T.M_TEST_F1])
    assert T.M_VAL_F1 not in mlflow.MlflowClient().get_run(parent.info.run_id).data.metrics


def test_cli_baseline_command(features_dir):
    from click.testing import CliRunner

    from emoexp.cli import main

    res = CliRunner().invoke(main, ["baseline", "train_classifier", "--data-dir", str(features_dir),
                                    "--options", "seed=3;experiment_name=cli-baselines"])
    assert res.exit_code == 0, res.output
    assert "train_classifier baseline: run" in res.output and "test_macro_f1" in res.output
    res = CliRunner().invoke(main, ["baseline", "train_face", "--help"])
    assert res.exit_code == 0 and "--baseline-features" in res.output


def test_the_bands_encoder_and_the_baseline_measure_the_same_band_power():
    """Band power is computed twice: by the baseline (Welch, numpy/scipy) and inside the `bands`
    encoder (one Hann periodogram, torch). On windows with a tone in one band over 1/f-ish noise,
    both must see the same bands rise and fall (a band-edge or frequency-axis slip in either shows)."""
    import torch

    from emoexp.models.eeg import EEGBandEncoder

    sr, n, c, t = 250.0, 60, 3, 500
    rng = np.random.default_rng(0)
    noise = np.cumsum(rng.standard_normal((n, c, t)), axis=-1) * 0.05 + rng.standard_normal((n, c, t))
    noise -= noise.mean(axis=-1, keepdims=True)
    centres = [(lo + hi) / 2 for lo, hi in EEG_BANDS.values()]
    planted = rng.integers(0, len(centres), size=n)
    amp = rng.uniform(0.5, 4.0, size=(n, 1, 1))
    tt = np.arange(t) / sr
    x = noise + amp * np.sin(2 * np.pi * np.asarray(centres)[planted][:, None, None] * tt + rng.uniform(0, 6, (n, c, 1)))

    base = band_features(x, sr).reshape(n, c, len(EEG_BANDS), 2)[..., 0]               # log power (Welch)
    enc = EEGBandEncoder(in_channels=c, latent_dim=4, sample_rate=sr).band_power(torch.tensor(x)).numpy()
    assert enc.shape == base.shape
    for b in range(len(EEG_BANDS)):
        r = np.corrcoef(base[..., b].ravel(), enc[..., b].ravel())[0, 1]
        assert r > 0.9, (list(EEG_BANDS)[b], r)
    # the planted band is the one that stands out most, for both estimators
    for feats in (base, enc):
        rise = feats - np.median(feats, axis=0, keepdims=True)
        assert np.mean(rise.mean(axis=1).argmax(axis=-1) == planted) > 0.9
