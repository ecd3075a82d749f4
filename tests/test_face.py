"""train_face: learning on drawn faces, balanced/weighted epochs, resume lineage, serving, evaluate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import engine
from emoexp import tracking as T
from emoexp.cli import main as cli
from emoexp.config import ConfigError, apply_overrides
from emoexp.data.images import BalancedSampler, FaceImageDataset, class_targets, preprocess
from emoexp.tasks import get_task

FACE6 = ["neutral", "happy", "sad", "surprise", "fear", "anger"]


@pytest.fixture(scope="session")
def fer_csv(session_tmp) -> Path:
    from emoexp.data.synth_faces import synth_fer2013

    # the tidy pose and identity of the easy set: the learning test below trains 10 epochs at the
    # seeds' lr (the calibrated default set needs the smoke setting's lr 1e-3: test_calibration)
    return Path(synth_fer2013(session_tmp / "fer_csv", seed=0, n_per_class=100, layout="csv", pose=1.0,
                              identity=1.0))


@pytest.fixture(scope="session")
def affectnet_root(session_tmp) -> Path:
    from emoexp.data.synth_faces import synth_affectnet

    return Path(synth_affectnet(session_tmp / "affectnet", seed=1, n_per_class=24))


def _cfg(data_dir, **kw):
    task = get_task("train_face")
    base = {"data_dir": str(data_dir), "dataset": "fer2013", "backbone": "small_cnn", "epochs": 2,
            "batch_size": 16, "lr": 1e-3, "log_model": False, "checkpoint_every": 0}
    return task, apply_overrides(task.default_config(), {**base, **kw})


@pytest.fixture(scope="session")
def trained(fer_csv):
    """One tracked small-CNN run on synthetic FER2013 (csv), with its model logged."""
    # No augmentation here: the drawn cues are learnt in ~10 epochs without it (augmented runs need more).
    task, cfg = _cfg(fer_csv, epochs=10, augment=False, log_model=True, experiment_name="test-face")
    return engine.fit(task, cfg)


def test_small_cnn_learns_drawn_expressions(trained):
    """6 classes: chance macro F1 is about 0.17; the planted expressions are learnable."""
    assert trained.test_metrics["test_macro_f1"] > 0.5, trained.test_metrics
    run = MlflowClient().get_run(trained.run_id)
    assert run.data.tags[T.TAG_TASK] == "train_face" and run.data.tags[T.TAG_DATASET] == "fer2013"
    assert run.data.params["label_smoothing"] == "0.15" and run.data.params["optimizer"] == "adamw"
    assert {f"{T.PARAM_WEIGHT_PREFIX}{c}" for c in FACE6} <= set(run.data.params)
    arts = {a.path for a in MlflowClient().list_artifacts(trained.run_id, T.ART_EVAL_DIR)}
    assert f"{T.ART_EVAL_DIR}/confusion_matrix.png" in arts


def test_six_and_seven_classes(fer_csv):
    task, cfg = _cfg(fer_csv)
    assert task.build_data(cfg).class_names == FACE6
    task, cfg7 = _cfg(fer_csv, classes=7)
    assert task.build_data(cfg7).class_names == [*FACE6, "disgust"]
    with pytest.raises(ConfigError, match="classes"):
        _cfg(fer_csv, classes=5)


def test_affectnet_folders_train_with_densenet(affectnet_root):
    """DenseNet121 (random init, no download) runs a short epoch on 96x96 colour AffectNet."""
    task, cfg = _cfg(affectnet_root, dataset="affectnet", backbone="densenet121", epochs=1, batch_size=16,
                     samples_per_class=12, image_size=64)
    res = engine.fit(task, cfg, track=False)
    assert res.history and np.isfinite(res.history[0][T.M_TRAIN_LOSS])


def test_backbone_weights_from_a_local_file(tmp_path, fer_csv):
    from torchvision.models import densenet121

    from emoexp.models.face import FaceDenseNet, load_densenet_weights

    path = tmp_path / "densenet121.pth"
    ref = densenet121(weights=None)
    torch.save(ref.state_dict(), path)
    enc = FaceDenseNet()
    load_densenet_weights(enc, path)
    assert torch.equal(enc.features.conv0.weight, ref.features.conv0.weight)
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="bad.pth: not a DenseNet121 state dict"):
        load_densenet_weights(enc, bad)
    task, cfg = _cfg(fer_csv, backbone="small_cnn", backbone_weights=str(path))
    with pytest.raises(ConfigError, match="densenet121"):
        task.init_from_pretrained(task.build_model(cfg, {"heads": {"emotion": FACE6}}), cfg, {})


def test_balanced_epochs_draw_the_target_per_class_and_mark_repeats():
    targets = np.array([0] * 50 + [1] * 10 + [2] * 5)
    names = ["a", "b", "c"]
    per = class_targets({"a": 50, "b": 10, "c": 5}, {"a": 1.0, "b": 1.0, "c": 2.0}, 0)
    assert per == {"a": 50, "b": 50, "c": 100}
    order = list(BalancedSampler(targets, names, per, torch.Generator().manual_seed(0)))
    assert len(order) == 200
    base = np.array(order) % len(targets)
    assert np.bincount(targets[base]).tolist() == [50, 50, 100]
    # every original image of a small class is drawn once; the extra draws are marked repeats
    c_draws = [i for i in order if targets[i % len(targets)] == 2]
    assert sorted(i for i in c_draws if i < len(targets)) == list(range(60, 65))
    assert sum(i >= len(targets) for i in c_draws) == 95


def test_aggressive_augmentation_only_touches_repeats():
    imgs = np.random.default_rng(0).integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)
    ds = FaceImageDataset(imgs, np.arange(4) % 2, size=48, grayscale=False, augment=False)
    plain = ds.__getitems__([0, 1])["image"]
    assert torch.allclose(plain, preprocess(imgs[:2], 48, False))
    aug = FaceImageDataset(imgs, np.arange(4) % 2, size=48, grayscale=False, augment=True, aggressive=True)
    torch.manual_seed(0)
    b = aug.__getitems__([0, 4])  # 4 = a repeat of image 0
    assert b["image"].shape == (2, 3, 48, 48) and b["emotion"].tolist() == [0, 0]


def test_weights_and_balance_change_what_an_epoch_sees(fer_csv):
    task, cfg = _cfg(fer_csv, balance=True, target_samples=20, weights="sad=5,happy=0.5")
    data = task.build_data(cfg)
    from emoexp.config import parse_weights

    w = parse_weights(cfg.weights, data.class_names)
    sampler = task.epoch_sampler(data.train, cfg, torch.Generator().manual_seed(0), data.train_targets, w,
                                 data.class_names)
    got = np.bincount(data.train_targets[np.array(list(sampler)) % len(data.train)], minlength=6)
    assert got[FACE6.index("sad")] == 100 and got[FACE6.index("happy")] == 10 and got[0] == 20


def test_resume_with_new_weights_shows_in_the_lineage(trained):
    child = engine.branch(f"runs:/{trained.run_id}/checkpoints/last.pt",
                          {"epochs": 1, "weights": "sad=5,happy=0.5", "log_model": False})
    run = MlflowClient().get_run(child.run_id)
    assert run.data.tags[T.TAG_PARENT_RUN] == trained.run_id
    assert run.data.params[f"{T.PARAM_WEIGHT_PREFIX}sad"] == "5.0"
    res = CliRunner().invoke(cli, ["runs", "list", "--task", "train_face"])
    assert res.exit_code == 0 and trained.run_id in res.output and child.run_id in res.output


def test_served_face_model_takes_images(trained, tmp_path):
    import cv2
    import mlflow

    model = mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model")
    img = np.full((64, 64, 3), 128, dtype=np.uint8)
    one = model.predict({"image": img})
    assert list(one.columns[:1]) == ["label"] and len(one) == 1
    batch = model.predict({"image": np.stack([img, img[::-1]])})
    assert len(batch) == 2 and np.allclose(batch[[f"prob_{c}" for c in FACE6]].sum(axis=1), 1.0, atol=1e-5)
    png = tmp_path / "face.png"
    cv2.imwrite(str(png), img)
    res = CliRunner().invoke(cli, ["predict", f"runs:/{trained.run_id}/model", str(png)])
    assert res.exit_code == 0, res.output
    assert "face.png" in res.output
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    res = CliRunner().invoke(cli, ["predict", f"runs:/{trained.run_id}/model", str(junk)])
    assert res.exit_code != 0 and "junk.jpg" in res.output and "Traceback" not in res.output


def test_evaluate_writes_reports_locally_and_to_the_run(trained, fer_csv, tmp_path):
    out = tmp_path / "ev"
    res = CliRunner().invoke(cli, ["evaluate", f"runs:/{trained.run_id}/model", "--data", str(fer_csv),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    for f in ("confusion_matrix.png", "confusion_matrix.csv", "classification_report.json",
              "training_curves.png", "evaluation.json"):
        assert (out / f).is_file(), f
    assert "precision" in res.output and "macro F1" in res.output
    run = MlflowClient().get_run(trained.run_id)
    assert any(k.endswith("/eval_macro_f1") for k in run.data.metrics)
    res = CliRunner().invoke(cli, ["evaluate", f"runs:/{trained.run_id}/model", "--data", str(fer_csv),
                                   "--out", str(tmp_path / "ev2"), "--new-run"])
    assert res.exit_code == 0, res.output
    ev_runs = MlflowClient().search_runs(
        [run.info.experiment_id], filter_string=f"tags.`emoexp.evaluated_run` = '{trained.run_id}'")
    assert len(ev_runs) == 1 and "eval_macro_f1" in ev_runs[0].data.metrics


def test_train_face_cli_flags(fer_csv):
    """Seed habits: --cpu, --workers, per-emotion weight flags joining --weights."""
    res = CliRunner().invoke(cli, ["train", "train_face", "--help"])
    for flag in ("--cpu", "--workers", "--balance", "--target-samples", "--aggressive", "--sad", "--angry"):
        assert flag in res.output, flag
    res = CliRunner().invoke(cli, ["train", "train_face", "--data-dir", str(fer_csv), "--dataset", "fer2013",
                                   "--backbone", "small_cnn", "--epochs", "1", "--cpu", "--workers", "0",
                                   "--sad", "3", "--angry", "0.5", "--log-model", "false",
                                   "--samples-per-class", "10", "--experiment-name", "test-face-cli"])
    assert res.exit_code == 0, res.output
    run_id = res.output.split("run ")[1].split()[0]
    params = MlflowClient().get_run(run_id).data.params
    assert params["device"] == "cpu" and params[f"{T.PARAM_WEIGHT_PREFIX}anger"] == "0.5"
    assert params[f"{T.PARAM_WEIGHT_PREFIX}sad"] == "3.0"


@pytest.mark.slow(reason="25 s: a `mlflow models serve` process; the face pyfunc's inputs are checked in process by "
                         "test_served_face_model_takes_images, the HTTP layer by test_serving_readme (fast)")
def test_face_model_served_over_http(trained, tmp_path, model_server):
    """One (H, W, 3) image, a batch, and the saved input example, over /invocations."""
    import json
    import urllib.request

    import mlflow
    from mlflow.models import Model

    uri = f"runs:/{trained.run_id}/model"
    local = mlflow.artifacts.download_artifacts(uri)
    example = Model.load(local).load_input_example(local)
    img = np.random.default_rng(0).integers(0, 255, (60, 50, 3)).tolist()
    with model_server(uri, tmp_path / "serve.log") as url:
        for inputs, n in (({"image": img}, 1), ({"image": [img, img]}, 2),
                          ({k: np.asarray(v).tolist() for k, v in example.items()}, len(example["image"]))):
            req = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": inputs}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                preds = json.loads(r.read())["predictions"]
            assert len(preds) == n and preds[0]["label"] in FACE6
            assert abs(sum(preds[0][f"prob_{c}"] for c in FACE6) - 1.0) < 1e-5


def test_predict_video_cli_with_a_trained_face_model(trained, tmp_path):
    """The CLI wiring: a registered/logged face model over a drawn video -> CSVs and the timeline."""
    import pandas as pd

    from emoexp.data.synth_faces import synth_face_video

    video = synth_face_video(tmp_path / "clip.mp4", seed=0,
                             segments=[("neutral", 2.0), ("happy", 2.0), ("surprise", 2.0)])
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict-video", f"runs:/{trained.run_id}/model", str(video),
                                   "--fps", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    frames = pd.read_csv(out / "clip.mp4.frames.csv") if (out / "clip.mp4.frames.csv").exists() else \
        pd.read_csv(next(out.glob("*.frames.csv")))
    assert len(frames) == 30 and {f"prob_{c}" for c in FACE6} <= set(frames.columns)
    assert frames["face_found"].mean() > 0.8  # the Haar cascade finds the drawn face
    assert next(out.glob("*.timeline.html")).read_text().count("plotly") > 0
    res = CliRunner().invoke(cli, ["predict-video", f"runs:/{trained.run_id}/model", str(tmp_path / "none.mp4")])
    assert res.exit_code != 0 and "none.mp4" in res.output and "Traceback" not in res.output


@pytest.mark.slow(reason="30 s: `mlflow run -e train_face`; test_records runs the same `mlflow run` path for finetune_eav in the fast suite")
def test_mlflow_run_train_face_entry_point(affectnet_root, tmp_path, mlflow_cli_env):
    """`mlflow run . -e train_face --env-manager local -P dataset=affectnet ...` as in the README."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(repo), "-e", "train_face",
           "--env-manager", "local", "--experiment-name", "test-mlflow-face",
           "-P", f"data_dir={affectnet_root}", "-P", "dataset=affectnet", "-P", "epochs=1",
           "-P", "backbone=small_cnn", "-P", "log_model=false", "-P", "samples_per_class=10"]
    out = subprocess.run(cmd, env=mlflow_cli_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("test-mlflow-face").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("train_face")
    assert run.data.tags[T.TAG_DATASET] == "affectnet" and run.data.params["classes"] == "6"
    assert "contempt" not in "".join(run.data.params)  # dropped, not a class


# ------------------------------------------------------------------------------------------------
# backbone=hf: a local Hugging Face image classifier (seed 003's ViT), offline

SEED3_LABELS = ["sad", "disgust", "angry", "neutral", "fear", "surprise", "happy"]  # the ViT's id2label


def _tiny_vit(path: Path, labels=SEED3_LABELS) -> Path:
    """A tiny random ViT image classifier and its image processor, saved like a downloaded model."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={c: i for i, c in enumerate(labels)})
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


@pytest.mark.parametrize("classes, head", [(7, "kept"), (6, "replaced")])
def test_hf_backbone_maps_its_classifier_by_name(tmp_path, fer_csv, classes, head):
    from emoexp.models.face_hf import load_hf_weights

    vit = _tiny_vit(tmp_path / "vit")
    task, cfg = _cfg(fer_csv, backbone="hf", hf_model=str(vit), classes=classes, samples_per_class=4)
    data = task.build_data(cfg)
    assert data.info["image_size"] == 32 and data.info["hf"]["labels"] == SEED3_LABELS
    names = data.heads["emotion"]
    model = task.build_model(cfg, {**data.info, "heads": data.heads})
    done = load_hf_weights(model, vit, names)
    assert done["head"] == head and len(done["mapped"]) == classes
    from transformers import ViTForImageClassification

    src = ViTForImageClassification.from_pretrained(vit).state_dict()
    own = model.net.state_dict()
    for k, c in enumerate(names):   # our anger is their angry, etc.
        j = SEED3_LABELS.index({"anger": "angry"}.get(c, c))
        torch.testing.assert_close(own["classifier.weight"][k], src["classifier.weight"][j])
    torch.testing.assert_close(own["vit.embeddings.patch_embeddings.projection.weight"],
                               src["vit.embeddings.patch_embeddings.projection.weight"])
    # the model sees what its own processor makes of the pixels
    from transformers import ViTImageProcessor

    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    ours = preprocess(img[None], 32, grayscale=False)
    theirs = ViTImageProcessor.from_pretrained(vit)(images=[img], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours * model.in_scale + model.in_shift, theirs, atol=1e-4, rtol=1e-4)


def test_hf_backbone_trains_with_seed3_flags_and_serves_without_its_folder(tmp_path, fer_csv):
    import shutil

    import mlflow

    vit = _tiny_vit(tmp_path / "vit")
    res = CliRunner().invoke(cli, ["train", "train_face", "--data-dir", str(fer_csv), "--dataset", "fer2013",
                                   "--classes", "7", "--model", str(vit), "--backbone", "hf",
                                   "--learning-rate", "2e-5", "--batch-size", "32", "--samples-per-class", "10",
                                   "--epochs", "1", "--experiment-name", "test-face-hf"])
    assert res.exit_code == 0, res.output
    run_id = res.output.split("run ")[1].split()[0]
    run = MlflowClient().get_run(run_id)
    assert run.data.params["backbone"] == "hf" and run.data.params["lr"] == "2e-05"
    assert run.data.tags["emoexp.hf_model"] == str(vit) and "labels mapped by name" in run.data.tags["emoexp.hf_head"]
    shutil.rmtree(vit)   # served from the checkpoint alone
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    img = np.random.default_rng(1).integers(0, 255, (60, 50, 3)).astype(np.uint8)
    out = model.predict({"image": np.stack([img, img])})
    assert len(out) == 2 and set(out["label"]) <= set(FACE6 + ["disgust"])


def test_hf_backbone_config_errors(tmp_path, fer_csv):
    task = get_task("train_face")
    with pytest.raises(ConfigError, match="backbone=hf needs hf_model"):
        apply_overrides(task.default_config(), {"backbone": "hf"})
    with pytest.raises(ConfigError, match="add --backbone hf"):
        apply_overrides(task.default_config(), {"hf_model": str(tmp_path)})
    task, cfg = _cfg(fer_csv, backbone="hf", hf_model="dima806/facial_emotions_image_detection")
    with pytest.raises(ConfigError, match="Nothing is downloaded"):
        task.build_data(cfg)
