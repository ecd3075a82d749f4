from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import scipy.io

from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.eav import (
    EAV_CLASSES,
    load_eav,
    parse_eav_media_name,
    read_eav_eeg,
)
from emoexp.data.synth import synth_eav

from .conftest import EAV_SAMPLES, EAV_TRIALS


def _one_subject(tmp_path, **kw):
    kw.setdefault("n_samples", 500)
    kw.setdefault("trials", 10)
    return synth_eav(tmp_path / "eav", subjects=1, seed=3, **kw)


def test_parse_media_names():
    assert parse_eav_media_name("003_Trial_03_Listening_Anger.mp4") == (3, "listening", "anger")
    assert parse_eav_media_name("002_Trial_02_Speaking_Neutral_Aud.wav") == (2, "speaking", "neutral")
    assert parse_eav_media_name("/x/196_Trial_10_Speaking_Sadness_aud.wav") == (196, "speaking", "sadness")
    assert parse_eav_media_name("200_trial_20_SPEAKING_happiness.MP4") == (200, "speaking", "happiness")
    for bad in ("Trial_03_Listening_Anger.mp4", "03_Trial_03_Listening_Anger.mp4",
                "003_Trial_03_Watching_Anger.mp4", "notes.txt"):
        with pytest.raises(DataError, match="does not match NNN_Trial_NN_<Listening\\|Speaking>_<Emotion>") as err:
            parse_eav_media_name(bad)
        assert err.value.path == bad


def test_round_trip_with_audio(eav_dir):
    rec = load_eav(eav_dir, use_audio=True, progress=False)
    assert rec.subject_ids == ["subject1", "subject2", "subject3"]
    assert rec.class_names == EAV_CLASSES and rec.channel_names is None
    assert rec.n_channels == 30 and rec.sample_rate == 250
    assert rec.eeg["subject2"].shape == (EAV_TRIALS, EAV_SAMPLES // 2, 30)   # 500 -> 250 Hz
    for s in rec.subject_ids:
        labels = rec.trial_labels[s]
        assert np.bincount(labels, minlength=5).tolist() == [EAV_TRIALS // 5] * 5
        cond = rec.trial_conditions[s]
        # odd 1-based trial numbers listen, even ones speak
        assert cond.tolist() == ["listening", "speaking"] * (EAV_TRIALS // 2)
        assert rec.info["condition_source"][s] == "media names + label rows"
        mask = rec.audio_mask[s]
        assert mask.tolist() == [0.0, 1.0] * (EAV_TRIALS // 2)
        mf = rec.audio_mfcc(s)                      # (n_trials, n_mfcc, F)
        assert mf.shape == (EAV_TRIALS, 13, EAV_SAMPLES // 500 * 100)
        assert np.all(mf[mask == 0] == 0) and np.all(np.abs(mf[mask == 1]).max(axis=(1, 2)) > 0)
    assert rec.audio_frame_rate == 100


def test_round_trip_matches_source(eav_dir):
    rec = load_eav(eav_dir, sample_rate=500, progress=False, max_subjects=1)
    eeg, labels, rows = read_eav_eeg(eav_dir / "subject1/EEG/subject1_eeg.mat",
                                     eav_dir / "subject1/EEG/subject1_eeg_label.mat")
    assert eeg.shape == (EAV_TRIALS, EAV_SAMPLES, 30)
    assert (rows % 2).tolist() == [0, 1] * (EAV_TRIALS // 2)     # synth: odd rows speak
    np.testing.assert_array_equal(labels, rec.trial_labels["subject1"])
    np.testing.assert_allclose(rec.eeg["subject1"].load(), eeg.astype(np.float32))


def test_condition_selects_trials(eav_dir):
    rec = load_eav(eav_dir, condition="speaking", use_audio=True, progress=False, max_subjects=2)
    s = "subject1"
    assert rec.n_trials(s) == EAV_TRIALS // 2
    assert set(rec.trial_conditions[s]) == {"speaking"} and np.all(rec.audio_mask[s] == 1)
    assert rec.trial_index[s].tolist() == list(range(1, EAV_TRIALS, 2))
    full = load_eav(eav_dir, progress=False, max_subjects=2)
    np.testing.assert_array_equal(rec.eeg[s].load(), full.eeg[s].load()[1::2])
    lis = load_eav(eav_dir, condition="listening", progress=False, max_subjects=1)
    assert lis.trial_index[s].tolist() == list(range(0, EAV_TRIALS, 2))
    with pytest.raises(ValueError, match="condition"):
        load_eav(eav_dir, condition="watching", progress=False)


def test_speaking_parity_read_from_data(tmp_path):
    root = _one_subject(tmp_path)
    label_path = root / "subject1/EEG/subject1_eeg_label.mat"
    label = scipy.io.loadmat(label_path)["label"]
    # swap each row pair: now even rows speak, as the authors' code claims
    scipy.io.savemat(label_path, {"label": label.reshape(5, 2, -1)[:, ::-1].reshape(10, -1)})
    rec = load_eav(root, progress=False)
    assert rec.trial_conditions["subject1"].tolist() == ["listening", "speaking"] * 5


def test_zero_padded_folder_and_no_media_fallback(tmp_path, caplog):
    root = _one_subject(tmp_path, with_audio=False)
    (root / "subject1").rename(root / "subject01")
    for f in (root / "subject01/EEG").iterdir():
        f.rename(f.with_name(f.name.replace("subject1", "subject01")))
    with caplog.at_level(logging.WARNING):
        rec = load_eav(root, progress=False)
    assert rec.subject_ids == ["subject1"]
    assert rec.trial_conditions["subject1"].tolist() == ["listening", "speaking"] * 5
    assert rec.info["condition_source"]["subject1"] == "trial parity"
    assert "trial-number parity" in caplog.text


def test_missing_folder(tmp_path):
    with pytest.raises(MissingDatasetError, match="emoexp data synth eav"):
        load_eav(tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDatasetError, match="subject"):
        load_eav(tmp_path / "empty", progress=False)


def test_mat_without_eeg_variable(tmp_path):
    root = _one_subject(tmp_path)
    mat = root / "subject1/EEG/subject1_eeg.mat"
    scipy.io.savemat(mat, {"data": np.zeros((100, 30, 10)), "seg": np.zeros((100, 29, 10))})
    with pytest.raises(DataError) as err:
        load_eav(root, progress=False)
    msg = str(err.value)
    assert str(mat) in msg and "'seg1' or 'seg'" in msg and "data" in msg and "(100, 29, 10)" in msg


@pytest.mark.parametrize(
    "label, message",
    [
        (lambda lab: lab.T, "looks transposed"),
        (lambda lab: lab * 2, "not one-hot"),
        (lambda lab: np.zeros_like(lab), "not one-hot"),
        (lambda lab: lab[:, :18], "18 trials but the EEG has 20"),
    ],
)
def test_bad_label_matrix(tmp_path, label, message):
    root = _one_subject(tmp_path, trials=20, with_audio=False)
    path = root / "subject1/EEG/subject1_eeg_label.mat"
    scipy.io.savemat(path, {"label": label(scipy.io.loadmat(path)["label"])})
    with pytest.raises(DataError, match=message) as err:
        load_eav(root, progress=False)
    assert str(path) in str(err.value)


def test_media_name_disagreeing_with_labels(tmp_path):
    root = _one_subject(tmp_path)
    wav = sorted((root / "subject1/Audio").iterdir())[0]
    emotion = wav.name.split("_")[4]
    other = "Anger" if emotion != "Anger" else "Calmness"
    moved = wav.with_name(wav.name.replace(emotion, other))
    wav.rename(moved)
    with pytest.raises(DataError, match="media and EEG labels disagree") as err:
        load_eav(root, progress=False)
    assert moved.name in str(err.value)


def test_unparseable_media_name_follows_policy(tmp_path):
    root = _one_subject(tmp_path)
    bad = root / "subject1/Audio/recording_final.wav"
    shutil.copy(next((root / "subject1/Audio").iterdir()), bad)
    with pytest.raises(DataError, match="recording_final.wav.*does not match"):
        load_eav(root, progress=False)
    policy = BadFilePolicy("skip")
    rec = load_eav(root, on_bad_file=policy, progress=False)
    assert rec.n_trials("subject1") == 10 and [p for p, _ in policy.skipped] == [str(bad)]


def test_bad_wav_skipped_with_mask_zero(tmp_path):
    root = _one_subject(tmp_path)
    wavs = sorted((root / "subject1/Audio").iterdir())
    wavs[0].write_bytes(b"RIFF0000WAVEjunk")           # unreadable
    trial = int(wavs[0].name[:3]) - 1
    with pytest.raises(DataError, match="without a data chunk|cannot read audio"):
        load_eav(root, use_audio=True, progress=False)
    policy = BadFilePolicy("skip")
    rec = load_eav(root, use_audio=True, on_bad_file=policy, progress=False)
    mask = rec.audio_mask["subject1"]
    assert mask[trial] == 0 and mask.sum() == 4
    assert [p for p, _ in policy.skipped] == [str(wavs[0])]
    # a second load reuses the audio cache and still reports the bad file
    policy2 = BadFilePolicy("skip")
    load_eav(root, use_audio=True, on_bad_file=policy2, progress=False)
    assert policy2.skipped == policy.skipped


def test_missing_wav_gives_zero_mask(tmp_path):
    root = _one_subject(tmp_path)
    wavs = sorted((root / "subject1/Audio").iterdir())
    wavs[1].unlink()
    rec = load_eav(root, use_audio=True, progress=False)
    assert rec.audio_mask["subject1"][int(wavs[1].name[:3]) - 1] == 0
    assert rec.audio_mask["subject1"].sum() == 4


def test_eeg_cache_reused_and_invalidated(tmp_path, cache_dir):
    root = _one_subject(tmp_path)
    rec = load_eav(root, progress=False)
    path = rec.eeg["subject1"].path
    mtime = path.stat().st_mtime_ns
    assert load_eav(root, progress=False).eeg["subject1"].path == path
    assert path.stat().st_mtime_ns == mtime
    rec200 = load_eav(root, sample_rate=200, progress=False)
    assert rec200.eeg["subject1"].path != path and rec200.n_samples("subject1") == 200
    mat = root / "subject1/EEG/subject1_eeg.mat"
    x = scipy.io.loadmat(mat)["seg1"]
    scipy.io.savemat(mat, {"seg1": x * 2})
    rec2 = load_eav(root, progress=False)
    assert rec2.eeg["subject1"].path != path
    np.testing.assert_allclose(rec2.eeg["subject1"].load(), 2 * rec.eeg["subject1"].load(), rtol=1e-5, atol=1e-4)
