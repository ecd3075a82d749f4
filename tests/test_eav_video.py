"""finetune_eav with video: synthetic mp4s, the loader's face crops and masks, the video encoder,
fusion with EEG (+ audio), a face encoder from a train_face run, and the served model."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from emoexp import engine
from emoexp.config import ConfigError, apply_overrides
from emoexp.data.base import BadFilePolicy, DataError
from emoexp.data.eav import EAV_CLASSES, load_eav, parse_eav_media_name, read_eav_eeg
from emoexp.data.eeg import WindowDataset
from emoexp.data.images import IMAGENET_MEAN, IMAGENET_STD
from emoexp.data.synth import synth_eav
from emoexp.tasks import get_task
from emoexp.tasks.eeg import TAG_VIDEO_ENCODER

cv2 = pytest.importorskip("cv2")

# 2 s trials: 500 EEG samples at 250 Hz (2 windows of 256), 10 video frames at 5 fps
SMALL = dict(trials=10, n_samples=1000)
FAST = dict(window_size=256, stride=128, video_detector="none", video_frames=2, batch_size=8,
            checkpoint_every=0, log_model=False, split="trial", lr=1e-3)


@pytest.fixture(scope="module")
def eav_video(tmp_path_factory) -> Path:
    """3 subjects, EEG + audio + video. Read-only: tests that break files copy it first."""
    return Path(synth_eav(tmp_path_factory.mktemp("eav_video"), subjects=3, seed=2, **SMALL))


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    """A quick train_face run (1 epoch, small_cnn, 32 px) with its model logged."""
    from emoexp.data.synth_faces import synth_fer2013

    root = synth_fer2013(tmp_path_factory.mktemp("fer"), seed=0, n_per_class=10, layout="csv")
    task = get_task("train_face")
    cfg = apply_overrides(task.default_config(), {
        "data_dir": str(root), "dataset": "fer2013", "backbone": "small_cnn", "image_size": 32, "epochs": 1,
        "batch_size": 32, "log_model": True, "checkpoint_every": 0, "experiment_name": "test-eav-video-face"})
    return engine.fit(task, cfg)


def _cfg(**overrides):
    task = get_task("finetune_eav")
    return task, apply_overrides(task.default_config(), overrides)


def _fit(data_dir, **overrides):
    task, cfg = _cfg(data_dir=str(data_dir), **{**FAST, "epochs": 1, **overrides})
    return engine.fit(task, cfg, track=False)


# ---------------------------------------------------------------------------------------------
# synthetic data and the loader

def test_synth_writes_speaking_videos_with_the_real_names(eav_video):
    from emoexp.data.frames import video_info

    _, emotions, rows = read_eav_eeg(eav_video / "subject1/EEG/subject1_eeg.mat",
                                     eav_video / "subject1/EEG/subject1_eeg_label.mat")
    videos = sorted((eav_video / "subject1/Video").iterdir())
    wavs = sorted((eav_video / "subject1/Audio").iterdir())
    # one mp4 per speaking trial (even 1-based numbers), named like the wav without "_Aud"
    assert [v.name for v in videos] == [w.name.replace("_Aud.wav", ".mp4") for w in wavs]
    assert [v.name[:3] for v in videos] == [f"{t:03d}" for t in range(2, 11, 2)]
    for v in videos:
        trial, condition, emotion = parse_eav_media_name(v)
        assert condition == "speaking" and rows[trial - 1] % 2 == 1
        assert emotion == EAV_CLASSES[emotions[trial - 1]]
        assert v.name == f"{trial:03d}_Trial_{trial:02d}_Speaking_{emotion.capitalize()}.mp4"
    info = video_info(videos[0])
    assert info["fps"] == pytest.approx(5.0) and info["n_frames"] == 10     # as long as the trial
    assert (info["width"], info["height"]) == (86, 64)


def test_synth_video_default_follows_audio(tmp_path):
    root = synth_eav(tmp_path / "a", subjects=1, seed=0, trials=10, n_samples=500, with_audio=False)
    assert not (root / "subject1/Video").exists()
    root = synth_eav(tmp_path / "b", subjects=1, seed=0, trials=10, n_samples=500, with_audio=False,
                     with_video=True)
    assert len(list((root / "subject1/Video").glob("*_Speaking_*.mp4"))) == 5


def test_loader_crops_faces_and_masks_listening_trials(eav_video):
    rec = load_eav(eav_video, use_video=True, video_size=32, progress=False)   # detector auto
    assert rec.has_video and rec.video_fps == 5.0 and rec.video_size == 32
    for s in rec.subject_ids:
        assert rec.video_mask[s].tolist() == [0.0, 1.0] * 5          # listening trials: masked
        frames = rec.video[s].read_many(np.arange(10), np.tile(np.arange(10), (10, 1)))
        assert frames.shape == (10, 10, 32, 32, 3) and frames.dtype == np.uint8
        assert not frames[0::2].any() and frames[1::2].reshape(5, -1).std(axis=1).min() > 10
    assert rec.info["n_videos"] == 15 and rec.info["videos_missing"] == 0
    # the drawn faces are found in (nearly) every frame
    assert rec.info["video_frames_no_face"] <= 15
    speaking = load_eav(eav_video, use_video=True, video_size=32, condition="speaking", progress=False)
    assert speaking.video_mask["subject1"].tolist() == [1.0] * 5


def test_video_cache_is_reused_and_keyed_by_its_parameters(eav_video):
    a = load_eav(eav_video, use_video=True, video_size=32, video_detector="none", progress=False)
    b = load_eav(eav_video, use_video=True, video_size=32, video_detector="none", progress=False)
    assert a.video["subject1"].path == b.video["subject1"].path
    c = load_eav(eav_video, use_video=True, video_size=40, video_detector="none", progress=False)
    d = load_eav(eav_video, use_video=True, video_size=32, video_detector="none", video_fps=2, progress=False)
    assert len({a.video["subject1"].path, c.video["subject1"].path, d.video["subject1"].path}) == 3
    assert c.video_size == 40 and d.video["subject1"].n_frames == 4


def _broken_copy(src: Path, dst: Path) -> tuple[Path, Path]:
    """A copy of subject1 with one speaking trial's mp4 deleted and another's unreadable."""
    shutil.copytree(src / "subject1", dst / "subject1")
    videos = sorted((dst / "subject1/Video").iterdir())
    videos[0].unlink()
    videos[1].write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return videos[0], videos[1]


def test_missing_or_unreadable_video_is_masked_not_fatal(eav_video, tmp_path, caplog):
    missing, bad = _broken_copy(eav_video, tmp_path)
    kw = dict(use_video=True, video_size=32, video_detector="none", progress=False)
    with pytest.raises(DataError) as err:
        load_eav(tmp_path, **kw)
    assert str(bad) in str(err.value) and "--on-bad-file skip" in str(err.value)
    for _ in range(2):   # the second load reads the cache and reports the bad file again
        policy = BadFilePolicy("skip")
        with caplog.at_level(logging.WARNING):
            rec = load_eav(tmp_path, on_bad_file=policy, **kw)
        assert [p for p, _ in policy.skipped] == [str(bad)]
        mask = rec.video_mask["subject1"]
        assert mask[int(missing.name[:3]) - 1] == 0 and mask[int(bad.name[:3]) - 1] == 0
        assert mask.sum() == 3 and rec.info["videos_missing"] == 1
    assert "without a video file" in caplog.text
    # no video anywhere: a clear error, not an empty modality
    shutil.rmtree(tmp_path / "subject1/Video")
    with pytest.raises(DataError, match="no subject has a readable speaking-trial video"):
        load_eav(tmp_path, **kw)


def test_window_dataset_yields_video_frames_over_each_window(eav_video):
    rec = load_eav(eav_video, use_video=True, video_size=32, video_detector="none", progress=False)
    ds = WindowDataset(rec, rec.subject_ids, 256, 128, with_video=True, video_frames=3)
    # 256 samples at 250 Hz span 1.02 s: 3 frames at the centres of its thirds, at 5 fps
    assert ds.video_frame_index(np.array([0, 128, 244])).tolist() == [[0, 2, 4], [3, 5, 6], [5, 7, 9]]
    b = ds.__getitems__(list(range(len(ds))))
    assert b["video"].shape == (len(ds), 3, 3, 32, 32) and b["video"].dtype == torch.float32
    present = b["video_mask"] == 1
    assert torch.equal(present, b["video"].flatten(1).abs().amax(1) > 0)   # absent: exact zeros
    assert 0 < present.sum() < len(ds)
    one = ds[int(torch.nonzero(present)[0])]
    assert one["video"].shape == (3, 3, 32, 32) and one["video_mask"] == 1
    gray = WindowDataset(rec, rec.subject_ids, 256, 128, with_video=True, video_frames=3, video_grayscale=True)
    g = gray.__getitems__([int(torch.nonzero(present)[0])])["video"][0]        # (F, 3, S, S)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = g * std + mean                                                    # undo the normalisation
    assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-5) and torch.allclose(pixels[:, 1], pixels[:, 2], atol=1e-5)
    raw, _ = gray.read_video([0])
    assert raw.shape == (1, 3, 32, 32, 3)
    # workers get a pickled copy: the memory-mapped frames reopen there
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.read_video([1, 3])[0], ds.read_video([1, 3])[0])


# ---------------------------------------------------------------------------------------------
# training end to end

@pytest.mark.parametrize("fusion, pooling", [("concat", "mean"), ("attention", "attention")])
def test_finetune_with_video_trains(eav_video, fusion, pooling):
    res = _fit(eav_video, use_video=True, fusion=fusion, video_pooling=pooling, video_size=32)
    assert res.stop_reason == "completed" and np.isfinite(res.history[-1]["train_loss"])
    assert set(res.test_metrics) >= {"test_accuracy", "test_macro_f1"}


def test_finetune_skips_a_bad_video_and_counts_it(eav_video, tmp_path):
    for sub in ("subject2", "subject3"):
        shutil.copytree(eav_video / sub, tmp_path / sub)
    _, bad = _broken_copy(eav_video, tmp_path)
    task, cfg = _cfg(data_dir=str(tmp_path), use_video=True, video_size=32, on_bad_file="skip", **FAST)
    data = task.build_data(task.prepare(cfg))
    assert [p for p, _ in data.skipped_files] == [str(bad)] and data.info["n_videos"] == 13
    assert engine.fit(task, apply_overrides(cfg, {"epochs": 1}), track=False).stop_reason == "completed"


@pytest.fixture(scope="module")
def faces_only_eav(tmp_path_factory) -> Path:
    """EEG without any class signal (amplitude 0): only the faces tell the emotions apart."""
    return Path(synth_eav(tmp_path_factory.mktemp("eav_faces"), subjects=3, seed=5, trials=40,
                          n_samples=2000, amplitude=0.0, with_audio=False, with_video=True))


def test_video_carries_the_class_when_eeg_does_not(faces_only_eav):
    """5 classes, chance 0.2; the EEG is pure noise. Short, non-overlapping EEG windows (32
    samples) are seen only three times each, too few to memorise the noise, while every face
    frame recurs in several windows: the face CNN (trained from scratch) learns the expressions.
    (With long overlapping windows, 256 samples every 128, the EEG branch memorises its noise
    first and the video branch never learns.) Trials are split within subjects, the EAV
    authors' protocol: three drawn people are too few to generalise to a new face in a test."""
    res = _fit(faces_only_eav, use_video=True, condition="speaking", window_size=32, stride=32, video_frames=1,
               video_size=32, batch_size=16, epochs=3, scheduler="cosine", seed=0)
    # measured: 0.88 (seed 0), 0.60-0.98 over seeds 0-4; EEG alone: 0.18
    assert res.test_metrics["test_accuracy"] > 0.5, (res.test_metrics, [h["val_accuracy"] for h in res.history])


# ---------------------------------------------------------------------------------------------
# a face encoder from a train_face run, the tracked run and the served model

@pytest.fixture(scope="module")
def tracked(eav_video, face_run):
    """EEG + audio + video with the face run's encoder (frozen), tracked, model logged."""
    uri = f"runs:/{face_run.run_id}/model"
    task, cfg = _cfg(data_dir=str(eav_video), use_video=True, use_audio=True, video_encoder=uri,
                     experiment_name="test-eav-video", **{**FAST, "log_model": True, "epochs": 1})
    return uri, engine.fit(task, cfg)


def test_video_encoder_from_a_train_face_run(tracked, face_run):
    from emoexp.checkpoints import load_from_uri

    uri, res = tracked
    run = MlflowClient().get_run(res.run_id)
    assert run.data.tags[TAG_VIDEO_ENCODER] == uri
    assert run.data.params["video_size"] == "0"            # as set...
    assert run.data.params["resolved.video_size"] == "32"  # ...and resolved: the face model's image_size
    face = load_from_uri(uri)
    assert face["info"]["grayscale"] is True
    mine = load_from_uri(f"runs:/{res.run_id}/model")
    assert mine["info"]["video_grayscale"] is True and mine["info"]["video_frozen"] is True
    # frozen: after training, the frame encoder still holds the face model's weights and statistics
    frames = {k[len("encoders.video.frames."):]: v for k, v in mine["model"].items()
              if k.startswith("encoders.video.frames.")}
    src = {k[len("encoders.image."):]: v for k, v in face["model"].items() if k.startswith("encoders.image.")}
    assert frames.keys() == src.keys() and frames
    for k, v in src.items():
        assert torch.equal(frames[k], v), k


def test_wrong_video_encoder_is_a_clear_error(tracked, tmp_path):
    _, res = tracked
    task, cfg = _cfg(data_dir=str(tmp_path), use_video=True, video_encoder=f"runs:/{res.run_id}/model")
    with pytest.raises(ConfigError, match="a 'finetune_eav' model, not a face model"):
        task.prepare(cfg)
    task, cfg = _cfg(data_dir=str(tmp_path), use_video=True, video_encoder=str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match=r"video_encoder=.*nope\.pt.*no such file"):
        task.prepare(cfg)
    with pytest.raises(ConfigError, match="video_pooling"):
        _cfg(video_pooling="max")


def test_served_model_takes_video_or_none(tracked, eav_video):
    from emoexp.serving import EmoexpModel

    _, res = tracked
    uri = f"runs:/{res.run_id}/model"
    rng = np.random.default_rng(0)
    eeg = rng.standard_normal((2, 30, 256)).astype(np.float32)
    wave = np.zeros((2, int(256 / 250 * 16000)), np.float32)             # silence: no audio
    rec = load_eav(eav_video, use_video=True, video_size=32, video_detector="none", progress=False)
    ds = WindowDataset(rec, ["subject1"], 256, 128, with_video=True, video_frames=2)
    crops, mask = ds.read_video([2, 3])                                  # trial 2: speaking
    assert mask.tolist() == [1.0, 1.0]
    pyfunc = mlflow.pyfunc.load_model(uri)
    with_video = pyfunc.predict({"eeg": eeg, "audio": wave, "video": crops})
    assert len(with_video) == 2 and list(with_video.columns[:1]) == ["label"]
    # MLflow's signature lists every input: black frames say "no video" (masked), like silence
    blank = pyfunc.predict({"eeg": eeg, "audio": wave, "video": np.zeros_like(crops)})
    served = EmoexpModel.from_uri(uri)
    alone = served.predict(None, {"eeg": eeg})                           # no audio, no video: masked
    np.testing.assert_allclose(alone.filter(like="prob_").to_numpy(), blank.filter(like="prob_").to_numpy(),
                               atol=1e-5)
    assert not np.allclose(alone.filter(like="prob_").to_numpy(), with_video.filter(like="prob_").to_numpy())
    # whole frames (not crops of the model's size) go through the training's face detector
    video = next((eav_video / "subject1/Video").iterdir())
    from emoexp.data.frames import iter_frames

    frames = np.stack([f for _, _, f in iter_frames(video, 5)][:2])      # (2, 64, 86, 3)
    out = served.predict(None, {"eeg": eeg[:1], "video": frames[None]})
    assert len(out) == 1
    with pytest.raises(ValueError, match="video has 1 clips for 2 eeg windows"):
        served.predict(None, {"eeg": eeg, "video": frames[None]})
