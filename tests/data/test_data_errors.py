"""Every data error names the file (issue 16 section 6): DEAP files with no trials or with ratings
that are not numbers, and a wav whose data chunk is shorter than its header says (decoders read
the stump without a word)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoexp.data.base import BadFilePolicy, DataError


def _deap(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


@pytest.mark.parametrize("labels, message", [
    (np.array([["high", "low", "5", "5"]] * 2), "non-numeric ratings"),
    (np.array([[5.0, None, 5.0, 5.0]] * 2, dtype=object), r"missing, NaN or infinite ratings \(trials \[0, 1\]\)"),
    (np.array([[5.0, 5.0, 5.0, 5.0]] * 2, dtype=object), None),  # numbers in an object array: fine
])
def test_deap_ratings_that_are_not_numbers_name_the_file(tmp_path, labels, message):
    from emoexp.data.deap import read_deap_file

    path = _deap(tmp_path / "s01.dat", {"data": np.zeros((2, 40, 500)), "labels": labels})
    if message is None:
        assert read_deap_file(path)[1].dtype == np.float64
        return
    with pytest.raises(DataError, match=message) as err:
        read_deap_file(path)
    assert err.value.path == str(path)


def test_deap_file_with_no_trials_is_named_by_the_loader(tmp_path):
    from emoexp.data.deap import load_deap
    from emoexp.data.synth import synth_deap

    root = synth_deap(tmp_path / "deap", subjects=3, seed=0, trials=4, seconds=4)
    empty = _deap(Path(root) / "s02.dat", {"data": np.zeros((0, 40, 896)), "labels": np.zeros((0, 4))})
    with pytest.raises(DataError, match="no trials") as err:
        load_deap(root)
    assert err.value.path == str(empty)


def _wav(path: Path, seconds: float = 1.0, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


def _cut(path: Path, keep: float) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def test_wav_shorter_than_its_header_says_is_named(tmp_path):
    from emoexp.data.audio import read_wav

    good = _wav(tmp_path / "good.wav")
    assert read_wav(good)[0].shape == (1, 16000)
    cut = _cut(_wav(tmp_path / "cut.wav"), 0.6)
    assert len(sf.read(str(cut))[0]) < 16000  # soundfile itself reads the stump without a word
    with pytest.raises(DataError, match=r"data chunk says 32000 bytes but the file holds \d+ after it") as err:
        read_wav(cut)
    assert err.value.path == str(cut)
    no_data = tmp_path / "header.wav"
    no_data.write_bytes(good.read_bytes()[:36])  # RIFF + fmt, the data chunk cut off
    with pytest.raises(DataError, match="without a data chunk|cannot read audio"):
        read_wav(no_data)


def test_truncated_wav_in_a_ravdess_tree_is_an_error_or_skipped(tmp_path):
    """Trained on silently before: now the loader names it, or skips and counts it."""
    from emoexp.data.ravdess import load_ravdess
    from emoexp.data.synth_speech import synth_ravdess

    src = synth_ravdess(tmp_path / "src", subjects=1, seed=3, statements=1, repetitions=1)
    root = Path(shutil.copytree(src, tmp_path / "data"))
    cut = _cut(root / "Actor_01" / "03-01-05-02-01-01-01.wav", 0.5)
    with pytest.raises(DataError, match="wav data chunk says") as err:
        load_ravdess(root, subset="all")
    assert err.value.path == str(cut)
    data = load_ravdess(root, subset="all", policy=BadFilePolicy("skip"))
    assert [p for p, _ in data.skipped] == [str(cut)] and str(cut) not in data.paths


def test_listen_names_a_truncated_wav(tmp_path):
    from emoexp.apps.listen import file_blocks

    cut = _cut(_wav(tmp_path / "talk.wav", seconds=2.0), 0.5)
    with pytest.raises(DataError, match="truncated") as err:
        next(file_blocks(cut, 16000))
    assert err.value.path == str(cut)
