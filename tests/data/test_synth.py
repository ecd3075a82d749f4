from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from emoexp.data.eav import EAV_CLASSES, load_eav
from emoexp.data.faced import FACED_CLASSES, load_faced
from emoexp.data.registry import list_datasets
from emoexp.data.registry import synthesize as synth
from emoexp.data.synth import (
    EAV_PLANT_CHANNELS,
    FACED_PLANT_CHANNELS,
    eav_plant_frequency,
    faced_plant_frequency,
)


def _band_power_by_class(x, labels, fs, freqs, channels):
    """(n_classes, n_freqs) mean Welch power at each frequency over the planted channels."""
    f, p = welch(x[:, :, channels], fs=fs, nperseg=int(fs), axis=1)   # (trials, F, ch)
    bins = [int(np.argmin(np.abs(f - q))) for q in freqs]
    power = p[:, bins].mean(axis=2)                                   # (trials, n_freqs)
    return np.stack([power[labels == c].mean(0) for c in range(len(freqs))])


def test_faced_plant_is_there(faced_dir):
    rec = load_faced(faced_dir, channels="all32", progress=False)
    freqs = [faced_plant_frequency(k) for k in range(len(FACED_CLASSES))]
    for s in rec.subject_ids:
        x = rec.eeg[s].load()                                         # (28, T, 32)
        table = _band_power_by_class(x, rec.trial_labels[s], 250, freqs, FACED_PLANT_CHANNELS)
        # each class's own frequency carries well over twice the power of the other classes' trials
        for k in range(len(freqs)):
            others = np.delete(table[:, k], k)
            assert table[k, k] > 2.5 * others.max(), (s, k, table[:, k])
        # mastoids carry no plant
        mast = _band_power_by_class(x, rec.trial_labels[s], 250, freqs, [30, 31])
        assert np.all(np.diag(mast) < 3 * np.delete(mast, np.arange(9) * 10).max())


def test_eav_plant_is_there(eav_dir):
    rec = load_eav(eav_dir, progress=False)
    freqs = [eav_plant_frequency(k) for k in range(len(EAV_CLASSES))]
    x = rec.eeg["subject2"].load()
    table = _band_power_by_class(x, rec.trial_labels["subject2"], 250, freqs, EAV_PLANT_CHANNELS)
    for k in range(len(freqs)):
        assert table[k, k] > 2.5 * np.delete(table[:, k], k).max()


def test_eav_audio_pitch_depends_on_class(eav_dir):
    f0 = {}
    for wav in sorted((eav_dir / "subject1" / "Audio").iterdir()):
        info = sf.info(wav)
        assert info.samplerate == 22050 and info.channels == 1 and info.subtype == "PCM_16"
        y, sr = sf.read(wav)
        f, p = welch(y, fs=sr, nperseg=4096)
        band = (f > 80) & (f < 400)
        f0.setdefault(wav.name.split("_")[4].lower(), []).append(f[band][np.argmax(p[band])])
    mean = [np.mean(f0[c]) for c in EAV_CLASSES]
    assert mean == sorted(mean)                 # neutral lowest ... calmness highest pitch


def test_synth_registry(tmp_path):
    assert set(list_datasets()) >= {"faced", "eav", "fer2013", "affectnet", "face_video", "ravdess", "posture", "features"}
    out = synth("faced", tmp_path / "f", subjects=1, seed=0, n_samples=100)
    assert sorted(p.name for p in (out / "Processed_data").iterdir()) == ["sub000.pkl"]
    with pytest.raises(ValueError, match="known datasets: affectnet, deap, eav, face_video, faced, features, fer2013, posture, ravdess"):
        synth("nope", tmp_path / "x", subjects=1, seed=0)
    with pytest.raises(ValueError, match="fer2013: unknown generator option.* bogus; known: classes, .*layout, .*n_per_class"):
        synth("fer2013", tmp_path / "x", bogus=1)
    with pytest.raises(ValueError, match="multiple of 10"):
        synth("eav", tmp_path / "e", subjects=1, seed=0, trials=15)


@pytest.mark.parametrize("dataset, key, value, words", [
    ("deap", "bandpass", "maybe", "true or false"),      # a string is truthy: it would have band-passed
    ("deap", "trials", 2.5, "a whole number"),
    ("faced", "n_samples", True, "a whole number"),
    ("deap", "amplitude", "loud", "a number"),
    ("ravdess", "fllr", 1, "true or false"),
])
def test_generator_options_of_the_wrong_kind_are_refused_before_anything_is_written(tmp_path, dataset, key, value, words):
    """Every generator's options are checked against the kind of their default (CLI --set values
    arrive as strings where they are not numbers or true/false)."""
    with pytest.raises(ValueError, match=rf"^{dataset}: generator option {key} takes {words}, got {value!r}"):
        synth(dataset, tmp_path / "x", **{key: value})
    assert not (tmp_path / "x").exists()
    # what the CLI hands over for numbers (an int where the default is a float) passes
    out = synth("deap", tmp_path / "ok", subjects=1, seed=0, trials=2, seconds=2, amplitude=3, bandpass=False)
    assert (out / "s01.dat").is_file()


def test_synth_is_deterministic(tmp_path):
    a = synth("faced", tmp_path / "a", subjects=1, seed=5, n_samples=100)
    b = synth("faced", tmp_path / "b", subjects=1, seed=5, n_samples=100)
    c = synth("faced", tmp_path / "c", subjects=1, seed=6, n_samples=100)
    read = lambda p: (p / "Processed_data" / "sub000.pkl").read_bytes()  # noqa: E731
    assert read(a) == read(b) and read(a) != read(c)
