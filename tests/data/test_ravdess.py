"""RAVDESS: file names, the folder scan (Kaggle duplicates, bad files), decoding, clips, the cache,
and that the synthetic set carries the emotion across voices."""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoexp.data import ravdess
from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.ravdess import (
    EMOTION_SUBSETS,
    RAVDESS_EMOTIONS,
    RavdessName,
    load_ravdess,
    parse_ravdess_name,
    read_ravdess_wav,
    scan_ravdess,
    trim_and_fit,
)
from emoexp.data.registry import get_dataset
from emoexp.data.registry import synthesize as synth
from emoexp.data.synth_speech import KAGGLE_COPY_FOLDER, synth_ravdess

ACTORS = 4


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The resampler's tiny convolutions run slower on 2 busy cores with 2 threads than with 1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def kaggle_tree(tmp_path_factory) -> Path:
    """Read-only: 4 actors x 60 files, written twice as in the Kaggle mirror; evenly acted, at one
    level and through one microphone (the plain plant: its levels and learnability are asserted)."""
    return synth_ravdess(tmp_path_factory.mktemp("ravdess"), subjects=ACTORS, seed=0,
                         kaggle_duplicate=True, acting=0.0, level_db_std=1.0, channel=0.0,
                         room_snr_db=0.0)


@pytest.fixture(scope="module")
def basic6(kaggle_tree):
    return load_ravdess(kaggle_tree, subset="basic6")


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    """Read-only: one actor, one statement, one repetition: 1 + 7 * 2 = 15 files."""
    return synth_ravdess(tmp_path_factory.mktemp("ravdess_small"), subjects=1, seed=3,
                         statements=1, repetitions=1)


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "data"))


def _tone(seconds: float, sr: int, amp: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# names


def test_parse_valid_name():
    n = parse_ravdess_name("03-01-06-01-02-01-12.wav")
    assert n == RavdessName(modality=3, vocal_channel=1, emotion="fearful", intensity="normal",
                            statement=2, repetition=1, actor=12)
    assert n.gender == "female" and n.stem == "03-01-06-01-02-01-12"
    m = parse_ravdess_name(Path("/x/Actor_07/01-02-08-02-01-02-07.WAV"))
    assert (m.modality, m.vocal_channel, m.emotion, m.intensity, m.actor) == (1, 2, "surprised", "strong", 7)
    assert m.gender == "male" and m.stem == "01-02-08-02-01-02-07"
    # every emotion code, in order
    assert [parse_ravdess_name(f"03-01-{e:02d}-01-01-01-01.wav").emotion for e in range(1, 9)] == list(RAVDESS_EMOTIONS)


@pytest.mark.parametrize("name, problem", [
    ("03-01-06-01-02-01.wav", "found 6"),
    ("03-01-06-01-02-01-12-01.wav", "found 8"),
    ("03_01_06_01_02_01_12.wav", "found 1"),
    ("3-01-06-01-02-01-12.wav", "modality field '3' is not a two-digit number"),
    ("03-01-0a-01-02-01-12.wav", "emotion field '0a' is not a two-digit number"),
    ("03-01-06-01-02-01-123.wav", "actor field '123'"),
    ("04-01-06-01-02-01-12.wav", "modality code 04 is out of range 01..03"),
    ("03-03-06-01-02-01-12.wav", "vocal channel code 03 is out of range"),
    ("03-01-00-01-02-01-12.wav", "emotion code 00 is out of range 01..08"),
    ("03-01-09-01-02-01-12.wav", "emotion code 09 is out of range"),
    ("03-01-06-03-02-01-12.wav", "intensity code 03"),
    ("03-01-06-01-03-01-12.wav", "statement code 03"),
    ("03-01-06-01-02-00-12.wav", "repetition code 00"),
    ("03-01-06-01-02-01-25.wav", "actor code 25 is out of range 01..24"),
    ("03-01-01-02-01-01-01.wav", "neutral with strong intensity"),
])
def test_parse_malformed_names(name, problem):
    with pytest.raises(ValueError, match=problem):
        parse_ravdess_name(name)


# ------------------------------------------------------------------------------------------------
# the synthetic tree


def test_synth_files_have_the_real_format_and_design(kaggle_tree):
    design = {(1, 1, s, r) for s in (1, 2) for r in (1, 2)}
    design |= {(e, i, s, r) for e in range(2, 9) for i in (1, 2) for s in (1, 2) for r in (1, 2)}
    assert len(design) == 60
    for actor in range(1, ACTORS + 1):
        files = sorted((kaggle_tree / f"Actor_{actor:02d}").iterdir())
        names = [parse_ravdess_name(f) for f in files]
        assert len(files) == 60
        assert all((n.modality, n.vocal_channel, n.actor) == (3, 1, actor) for n in names)
        got = {(RAVDESS_EMOTIONS.index(n.emotion) + 1, 1 if n.intensity == "normal" else 2,
                n.statement, n.repetition) for n in names}
        assert got == design
        copies = sorted((kaggle_tree / KAGGLE_COPY_FOLDER / f"Actor_{actor:02d}").iterdir())
        assert [c.name for c in copies] == [f.name for f in files]
    path = kaggle_tree / "Actor_02" / "03-01-05-02-01-01-02.wav"
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (48000, 1, "PCM_16")
    assert 2.0 < info.duration < 7.0
    raw = path.read_bytes()
    fllr, data = raw.find(b"FLLR"), raw.find(b"data")
    assert 12 < fllr < data and struct.unpack("<I", raw[fllr + 4:fllr + 8])[0] == 4044
    assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8          # RIFF size fixed after the splice
    x, sr = sf.read(path, dtype="int16")
    assert sr == 48000 and len(x) == info.frames and np.abs(x).max() > 3000
    # about 0.5-1 s of near-silence (a -66 dBFS noise floor: RMS 16 of 32767) before the utterance
    lead = x[: int(0.45 * sr)].astype(float)
    assert 5 < np.sqrt(np.mean(lead**2)) < 40


def test_synth_registry_and_no_fllr(tmp_path):
    assert get_dataset("ravdess").synth is synth_ravdess
    out = synth("ravdess", tmp_path / "r", subjects=1, seed=1, statements=1, repetitions=1, fllr=False)
    files = sorted((out / "Actor_01").glob("*.wav"))
    assert len(files) == 15
    assert b"FLLR" not in files[0].read_bytes()
    with pytest.raises(ValueError, match="subjects must be 1..24"):
        synth("ravdess", tmp_path / "x", subjects=25)


def test_synth_is_deterministic(tmp_path, small_tree):
    again = synth_ravdess(tmp_path / "again", subjects=1, seed=3, statements=1, repetitions=1)
    other = synth_ravdess(tmp_path / "other", subjects=1, seed=4, statements=1, repetitions=1)
    name = "Actor_01/03-01-03-02-01-01-01.wav"
    assert (again / name).read_bytes() == (small_tree / name).read_bytes()
    assert (other / name).read_bytes() != (small_tree / name).read_bytes()


@pytest.mark.parametrize("snr", [3.0, 20.0])
def test_room_noise_sits_at_the_drawn_snr_and_changes_nothing_else(tmp_path, snr):
    kw = dict(subjects=1, seed=5, statements=1, repetitions=1, sample_rate=16000, fllr=False)
    clean = synth_ravdess(tmp_path / "clean", room_snr_db=0.0, **kw)
    noisy = synth_ravdess(tmp_path / "noisy", room_snr_db=snr, **kw)
    snrs = []
    for f in sorted((clean / "Actor_01").glob("*.wav")):
        x, _ = sf.read(f, dtype="float64")
        y, _ = sf.read(noisy / "Actor_01" / f.name, dtype="float64")
        assert len(x) == len(y)                                # same take, same silences
        loud = np.flatnonzero(np.abs(x) > 1e-3)
        speech = np.mean(x[loud[0]:loud[-1] + 1] ** 2)         # the utterance, gaps included
        lead = 8000                                            # the first 0.5 s: silence in every take
        assert np.mean(x[:lead] ** 2) < 1e-6                   # clean: only the preamp floor (-66 dBFS)
        snrs.append(10 * np.log10(speech / np.mean((y[:lead] - x[:lead]) ** 2)))
    # each take at its own SNR in [snr, snr + 20] dB (a 0.5-s estimate: 1.5 dB of slack)
    assert min(snrs) > snr - 1.5 and max(snrs) < snr + 21.5
    assert np.ptp(snrs) > 5


# ------------------------------------------------------------------------------------------------
# the scan


def test_scan_deduplicates_the_kaggle_tree(kaggle_tree, caplog):
    with caplog.at_level(logging.INFO, logger="emoexp.data.ravdess"):
        files = scan_ravdess(kaggle_tree, policy=BadFilePolicy())
    assert len(files) == 60 * ACTORS
    assert files.n_duplicates == 60 * ACTORS
    assert len({p.name for p, _ in files}) == len(files)
    assert all(p.parent.parent == kaggle_tree for p, _ in files)       # kept the top-level copies
    assert [p for p, _ in files] == sorted(p for p, _ in files)
    assert sum("dropped 240 duplicate" in r.getMessage() for r in caplog.records) == 1
    assert scan_ravdess(kaggle_tree, vocal_channel="song") == []
    assert len(scan_ravdess(kaggle_tree, vocal_channel="both")) == 60 * ACTORS
    with pytest.raises(ValueError, match="vocal_channel must be one of speech, song, both"):
        scan_ravdess(kaggle_tree, vocal_channel="singing")


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(MissingDatasetError, match="does not exist.*emoexp data synth ravdess"):
        scan_ravdess(tmp_path / "nope")
    (tmp_path / "empty" / "Actor_01").mkdir(parents=True)
    (tmp_path / "empty" / "README.txt").write_text("RAVDESS")
    with pytest.raises(MissingDatasetError, match="holds no RAVDESS .wav files"):
        load_ravdess(tmp_path / "empty")


def _bad_files(root: Path) -> dict[str, Path]:
    """Add one file of each bad kind (valid audio, bad name or place) to a copied tree."""
    src = root / "Actor_01" / "03-01-03-01-01-01-01.wav"
    bad = {
        "not a RAVDESS file name": root / "Actor_01" / "recording_take2.wav",
        "disagrees with its folder Actor_01": root / "Actor_01" / "03-01-04-01-01-01-02.wav",
        "modality 02 is video-only": root / "Actor_01" / "02-01-05-01-01-01-01.wav",
    }
    for p in bad.values():
        shutil.copy(src, p)
    (root / "README.txt").write_text("not audio")
    return bad


@pytest.mark.parametrize("kind", ["not a RAVDESS file name", "disagrees with its folder Actor_01",
                                  "modality 02 is video-only"])
def test_bad_file_names_raise_naming_the_file(small_tree, tmp_path, kind):
    root = _copy(small_tree, tmp_path)
    bad = _bad_files(root)
    for other, p in bad.items():
        if other != kind:
            p.unlink()
    with pytest.raises(DataError, match=kind) as err:
        scan_ravdess(root, policy=BadFilePolicy("error"))
    assert err.value.path == str(bad[kind])
    with pytest.raises(DataError, match="--on-bad-file skip"):
        load_ravdess(root, subset="all")


def test_bad_file_names_are_skipped_and_counted(small_tree, tmp_path):
    root = _copy(small_tree, tmp_path)
    bad = _bad_files(root)
    policy = BadFilePolicy("skip")
    files = scan_ravdess(root, policy=policy)
    assert len(files) == 15                                     # README.txt ignored, not "bad"
    assert sorted(p for p, _ in policy.skipped) == sorted(str(p) for p in bad.values())
    data = load_ravdess(root, subset="all", policy=BadFilePolicy("skip"))
    assert len(data) == 15 and len(data.skipped) == 3
    assert {p for p, _ in data.skipped} == {str(p) for p in bad.values()}


def test_bad_audio_in_the_tree(small_tree, tmp_path):
    root = _copy(small_tree, tmp_path)
    silent = root / "Actor_01" / "03-01-05-02-01-01-01.wav"
    sf.write(silent, np.zeros(48000, dtype=np.float32), 48000, subtype="PCM_16")
    with pytest.raises(DataError, match="is silent") as err:
        load_ravdess(root, subset="all")
    assert err.value.path == str(silent)
    data = load_ravdess(root, subset="all", policy=BadFilePolicy("skip"))
    assert len(data) == 14 and [p for p, _ in data.skipped] == [str(silent)]
    assert str(silent) not in data.paths


# ------------------------------------------------------------------------------------------------
# one file


@pytest.mark.parametrize("sr, channels, subtype", [
    (48000, 2, "PCM_16"),
    (16000, 1, "PCM_U8"),
    (22050, 1, "PCM_16"),
    (44100, 1, "PCM_24"),
    (48000, 1, "FLOAT"),
    (8000, 2, "PCM_16"),
])
def test_read_formats_to_mono_16k(tmp_path, sr, channels, subtype):
    tone = _tone(1.0, sr, amp=0.5)
    data = np.stack([tone, np.zeros_like(tone)] if channels == 2 else [tone], axis=1)
    path = tmp_path / "03-01-03-01-01-01-01.wav"
    sf.write(path, data, sr, subtype=subtype)
    x = read_ravdess_wav(path, 16000)
    assert x.dtype == np.float32 and x.shape == (16000,)
    # a 0.5 sine has RMS 0.354; stereo with a silent right channel mixes to half that
    expected = 0.5 / np.sqrt(2) / channels
    rms = float(np.sqrt(np.mean(x[800:-800] ** 2)))
    assert rms == pytest.approx(expected, rel=0.03)
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) == 440                           # 1 s at 16 kHz: 1 Hz per bin


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk"), "without a data chunk"),
    (lambda p: sf.write(p, np.zeros(48000, np.float32), 48000, subtype="PCM_16"), "is silent"),
    (lambda p: sf.write(p, np.full(48000, 3e-5, np.float32), 48000, subtype="FLOAT"), "is silent"),
    (lambda p: sf.write(p, _tone(0.05, 48000), 48000, subtype="PCM_16"), r"0\.050 s of audio .*0\.1 s"),
    (lambda p: sf.write(p, np.where(np.arange(4800) == 7, np.nan, _tone(0.1, 48000)).astype(np.float32),
                        48000, subtype="FLOAT"), "NaN or infinite"),
])
def test_bad_audio_is_refused_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "03-01-03-01-01-01-01.wav"
    make(path)
    with pytest.raises(DataError, match=problem) as err:
        read_ravdess_wav(path)
    assert err.value.path == str(path)


def test_trim_and_fit():
    sr = 16000
    quiet = 1e-4 * np.random.default_rng(0).standard_normal(sr).astype(np.float32)  # -74 dB
    wave = np.concatenate([quiet, _tone(1.0, sr), quiet[: sr // 2]])
    clip, n = trim_and_fit(wave, sr, 3.0)
    assert clip.shape == (48000,) and clip.dtype == np.float32
    assert n == 16000                                           # the tone, to the 20 ms frame
    assert np.all(clip[n:] == 0) and np.abs(clip[:320]).max() > 0.1
    np.testing.assert_array_equal(clip[:n], wave[sr:2 * sr])
    # longer than the clip: centre crop of what is left after trimming
    long = _tone(4.0, sr) * np.linspace(0.5, 1.0, 4 * sr, dtype=np.float32)
    clip, n = trim_and_fit(np.concatenate([quiet, long]), sr, 3.0)
    assert n == 48000
    np.testing.assert_array_equal(clip, long[8000:56000])
    # 2.5 s at 16 kHz rounds, and an all-zero wave is kept as it is
    clip, n = trim_and_fit(np.zeros(100, np.float32), sr, 2.50004)
    assert clip.shape == (40001,) and n == 100


# ------------------------------------------------------------------------------------------------
# the whole set


def test_basic6_counts_labels_and_gender(basic6):
    d = basic6
    assert d.class_names == list(EMOTION_SUBSETS["basic6"])
    assert d.waves.shape == (44 * ACTORS, 48000) and d.waves.dtype == np.float32
    assert d.n_duplicates == 60 * ACTORS and d.sample_rate == 16000 and d.skipped == []
    for a in range(1, ACTORS + 1):
        lab = d.labels[d.actor == a]
        assert len(lab) == 44
        assert np.bincount(lab, minlength=6).tolist() == [4, 8, 8, 8, 8, 8]
    for path, label, actor, gender in zip(d.paths, d.labels, d.actor, d.gender):
        name = parse_ravdess_name(path)
        assert d.class_names[label] == name.emotion and actor == name.actor
        assert gender == (0 if name.actor % 2 else 1)
    assert d.gender.dtype == np.int64 and d.labels.dtype == np.int64
    assert set(d.intensity.tolist()) == {"normal", "strong"}
    assert set(d.statement.tolist()) == {1, 2}
    # the leading silence was trimmed: every clip starts with sound, and is mostly sound
    assert np.all(np.abs(d.waves[:, :640]).max(axis=1) > 1e-3)
    assert np.all(d.lengths > 1.0 * 16000) and np.all(d.lengths <= 48000)


def test_other_subsets_and_max_actors(kaggle_tree):
    d4 = load_ravdess(kaggle_tree, subset="basic4", max_actors=1)
    assert d4.class_names == ["neutral", "happy", "sad", "angry"]
    assert np.bincount(d4.labels).tolist() == [4, 8, 8, 8] and set(d4.actor.tolist()) == {1}
    d8 = load_ravdess(kaggle_tree, subset="all", max_actors=1, clip_seconds=1.0, sample_rate=8000)
    assert len(d8) == 60 and d8.waves.shape == (60, 8000) and len(d8.class_names) == 8
    with pytest.raises(ValueError, match="unknown emotion subset 'basic5'; known: basic4, basic6, all"):
        load_ravdess(kaggle_tree, subset="basic5")
    with pytest.raises(MissingDatasetError, match="holds no song files"):
        load_ravdess(kaggle_tree, vocal_channel="song")


def test_cache_round_trips_and_is_reused(small_tree, tmp_path, monkeypatch):
    root = _copy(small_tree, tmp_path)
    cache = tmp_path / "clips"
    first = load_ravdess(root, subset="all", cache_dir=cache)
    [npz] = cache.glob("*.npz")
    assert not list(cache.glob(".*tmp"))
    with np.load(npz, allow_pickle=False) as z:                 # plain arrays only
        assert z["waves"].shape == (15, 48000)

    def no_reading(*args, **kwargs):
        raise AssertionError("read a wav although the cache holds the clips")

    monkeypatch.setattr(ravdess, "read_ravdess_wav", no_reading)
    second = load_ravdess(root, subset="all", cache_dir=cache)
    for f in ("waves", "lengths", "labels", "actor", "gender", "intensity", "statement"):
        a, b = getattr(first, f), getattr(second, f)
        assert a.dtype == b.dtype, f
        np.testing.assert_array_equal(a, b, err_msg=f)
    assert (second.class_names, second.paths, second.n_duplicates, second.sample_rate, second.skipped) == (
        first.class_names, first.paths, first.n_duplicates, first.sample_rate, first.skipped)
    # other settings, or a changed file, miss the cache
    with pytest.raises(AssertionError, match="read a wav"):
        load_ravdess(root, subset="all", cache_dir=cache, clip_seconds=2.0)
    target = root / "Actor_01" / "03-01-04-01-01-01-01.wav"
    target.write_bytes(target.read_bytes())
    with pytest.raises(AssertionError, match="read a wav"):
        load_ravdess(root, subset="all", cache_dir=cache)


def test_emotion_is_learnable_across_actors(basic6):
    """Log-mel mean/std per clip + logistic regression, each actor held out in turn."""
    import torch
    import torchaudio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = basic6
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40)
    with torch.no_grad():
        logmel = torch.log(mel(torch.from_numpy(d.waves)) + 1e-6).numpy()   # (N, 40, frames)
    feats = []
    for x, n in zip(logmel, d.lengths):
        x = x[:, : max(1, int(n) // 160)]                        # the sound, not the padding
        feats.append(np.concatenate([x.mean(axis=1), x.std(axis=1)]))
    X = np.asarray(feats)
    accs = []
    for actor in range(1, ACTORS + 1):
        test = d.actor == actor
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(X[~test], d.labels[~test])
        accs.append(clf.score(X[test], d.labels[test]))
    # chance is 1/6 (0.17); measured with seed 0: 0.80 0.89 0.77 0.77 (mean 0.81); seeds 1-2: >= 0.68
    assert min(accs) >= 0.5, accs
