"""DEAP: the synthetic files' format, the reader's checks and bad inputs, baseline handling,
rating thresholds, windows, and the EEG token sequences (normalisation, quantization, layout,
token maps) that seed 004's language model reads."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from emoexp.data.base import BadFilePolicy, DataError, MissingDatasetError
from emoexp.data.deap import (
    DEAP_BASELINE_SAMPLES,
    DEAP_EEG_CHANNELS,
    apply_baseline,
    find_deap_files,
    load_deap,
    parse_bin_edges,
    rating_classes,
    read_deap_file,
)
from emoexp.data.eeg_tokens import (
    Tokenizer,
    fit_bin_edges,
    own_token_map,
    tokenizer_token_map,
)
from emoexp.data.synth import synth_deap

SECONDS = 6


@pytest.fixture(scope="module")
def deap_dir(tmp_path_factory) -> Path:
    return synth_deap(tmp_path_factory.mktemp("deap"), subjects=4, seed=0, trials=12, seconds=SECONDS,
                      amplitude=12.0)  # the plain plant: its levels are asserted


def test_synthetic_files_have_deaps_format(deap_dir):
    import pickletools

    files = find_deap_files(deap_dir)
    assert [f.name for f in files] == ["s01.dat", "s02.dat", "s03.dat", "s04.dat"]
    raw = files[0].read_bytes()
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2, as DEAP's Python 2 cPickle files
    # Python 2's form: keys and array buffers are byte strings (BINSTRING), no unicode, no
    # _codecs.encode; Python 3 reads them only with a decoding for those byte strings
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert {"SHORT_BINSTRING", "BINSTRING"} <= ops and not ops & {"BINUNICODE", "SHORT_BINUNICODE"}
    assert b"_codecs" not in raw and b"numpy.core.multiarray\n_reconstruct" in raw
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)
    obj = pickle.loads(raw, encoding="latin1")
    assert set(obj) == {"data", "labels"}
    assert obj["data"].dtype == np.float64 and obj["data"].shape == (12, 40, DEAP_BASELINE_SAMPLES + SECONDS * 128)
    assert obj["labels"].dtype == np.float64 and obj["labels"].shape == (12, 4)
    assert obj["labels"].min() >= 1 and obj["labels"].max() <= 9


def test_parent_folder_with_data_preprocessed_python_is_found(tmp_path):
    synth_deap(tmp_path / "DEAP" / "data_preprocessed_python", subjects=1, trials=2, seconds=2)
    assert [f.name for f in find_deap_files(tmp_path / "DEAP")] == ["s01.dat"]
    with pytest.raises(MissingDatasetError, match="emoexp data synth deap"):
        find_deap_files(tmp_path / "nowhere")
    with pytest.raises(MissingDatasetError, match="no sNN.dat"):
        find_deap_files(tmp_path)


def test_ratings_are_planted_in_band_power(deap_dir):
    """Frontal alpha power tracks valence and central beta power arousal, on held-out subjects."""
    from scipy.signal import welch
    from sklearn.linear_model import LogisticRegression

    d = load_deap(deap_dir)
    f, p = welch(d.eeg, fs=128, nperseg=128, axis=-1)
    x = np.concatenate([np.log(p[..., (f >= 8) & (f < 12)].mean(-1)), np.log(p[..., (f >= 16) & (f < 26)].mean(-1))], 1)
    train, test = d.subject <= 3, d.subject == 4
    for target in ("valence", "arousal"):
        y = d.targets[target]
        acc = LogisticRegression(max_iter=2000).fit(x[train], y[train]).score(x[test], y[test])
        assert acc >= 0.75, (target, acc)


def test_eeg_is_band_passed_as_in_deaps_preprocessed_files(tmp_path):
    """DEAP's readme: the EEG was band-passed 4-45 Hz. The synthetic EEG channels keep almost no
    power outside that band and all of it inside (the planted rhythms); the 8 peripheral channels
    stay as drawn."""
    from scipy.signal import welch

    def data(bandpass: bool) -> np.ndarray:
        d = synth_deap(tmp_path / str(bandpass), subjects=1, seed=3, trials=3, seconds=8, bandpass=bandpass)
        with open(d / "s01.dat", "rb") as fh:
            return pickle.load(fh, encoding="latin1")["data"]

    on, off = data(True), data(False)
    f, p_on = welch(on[:, :32], fs=128, nperseg=256, axis=-1)
    _, p_off = welch(off[:, :32], fs=128, nperseg=256, axis=-1)
    below, inside, above = f < 2, (f >= 8) & (f <= 30), f > 55
    assert p_on[..., below].sum() < 1e-3 * p_off[..., below].sum()
    assert p_on[..., above].sum() < 1e-3 * p_off[..., above].sum()
    assert 0.95 < p_on[..., inside].sum() / p_off[..., inside].sum() < 1.05
    assert np.array_equal(on[:, 32:], off[:, 32:])


def _write(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


@pytest.mark.parametrize("obj, message", [
    (np.zeros((2, 40, 500)), "expected a dict with 'data' and 'labels'"),
    ({"data": np.zeros((2, 500, 40)), "labels": np.ones((2, 4))}, "axis 1 looks like the samples"),
    ({"data": np.zeros((500, 40, 2)), "labels": np.ones((500, 4))}, "axis 0 looks like the samples"),
    ({"data": np.zeros((40, 2, 500)), "labels": np.ones((40, 4))}, "at least 32 channels on axis 1"),
    ({"data": np.zeros((2, 40, 300)), "labels": np.ones((2, 4))}, "at least 385 are needed"),
    ({"data": np.zeros((2, 40, 500)), "labels": np.ones((2, 3))}, "4 ratings"),
    ({"data": np.zeros((2, 40, 500)), "labels": np.full((2, 4), 10.0)}, r"ratings span \[10, 10\]"),
    ({"data": np.full((2, 40, 500), np.nan), "labels": np.ones((2, 4))}, "NaN"),
])
def test_bad_files_are_named_with_the_problem(tmp_path, obj, message):
    path = _write(tmp_path / "s01.dat", obj)
    with pytest.raises(DataError, match=message) as e:
        read_deap_file(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("channels", [32, 40, 48])
@pytest.mark.parametrize("writer", ["python2", "python3"])
def test_files_with_32_channels_or_more_are_read(tmp_path, channels, writer):
    """TorchEEG's fake DEAP records hold (40 trials, 32 channels, 8064): 40 trials is not a hint of
    a transposition, and 32 channels (the EEG) are enough; extra channels are left out."""
    from emoexp.data import py2pickle

    rng = np.random.default_rng(0)
    data = rng.standard_normal((40, channels, DEAP_BASELINE_SAMPLES + 200))
    obj = {"data": data, "labels": rng.uniform(1, 9, (40, 4))}
    path = tmp_path / "s01.dat"
    py2pickle.dump(obj, path) if writer == "python2" else _write(path, obj)
    eeg, labels = read_deap_file(path)
    assert eeg.shape == (40, 32, DEAP_BASELINE_SAMPLES + 200) and eeg.dtype == np.float32
    np.testing.assert_allclose(eeg, data[:, :32].astype(np.float32))
    np.testing.assert_array_equal(labels, obj["labels"])


def test_every_rating_and_the_quadrants_are_targets(deap_dir):
    d = load_deap(deap_dir)
    r = d.ratings
    assert set(d.targets) == {"valence", "arousal", "dominance", "liking", "quadrant"}
    for k, name in enumerate(("valence", "arousal", "dominance", "liking")):
        np.testing.assert_array_equal(d.targets[name], (r[:, k] >= 5).astype(int))
        assert d.target_classes[name] == ["low", "high"]
    assert d.target_classes["quadrant"] == ["LVLA", "LVHA", "HVLA", "HVHA"]
    names = np.asarray(d.target_classes["quadrant"])[d.targets["quadrant"]]
    expect = [("H" if v >= 5 else "L") + "V" + ("H" if a >= 5 else "L") + "A" for v, a in r[:, :2]]
    assert names.tolist() == expect
    three = load_deap(deap_dir, levels=3)
    assert "quadrant" not in three.targets and three.target_classes["liking"] == ["low", "medium", "high"]


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = _write(tmp_path / "s01.dat", {"data": Evil(), "labels": np.ones((1, 4))})
    with pytest.raises(DataError, match="s01.dat"):
        read_deap_file(path)


def test_skip_policy_counts_bad_subjects(deap_dir, tmp_path):
    import shutil

    root = tmp_path / "deap"
    shutil.copytree(deap_dir, root)
    (root / "s02.dat").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="s02.dat"):
        load_deap(root)
    policy = BadFilePolicy("skip")
    d = load_deap(root, policy=policy)
    assert sorted(set(d.subject.tolist())) == [1, 3, 4] and len(policy.skipped) == 1


def test_baseline_subtract_drop_keep():
    sr = 128
    base_chunk = np.arange(sr, dtype=np.float32)            # the same 1-s chunk three times
    trial = np.ones(2 * sr, dtype=np.float32) * 5
    x = np.concatenate([np.tile(base_chunk, 3), trial])[None, None, :]
    assert apply_baseline(x, "keep").shape[-1] == 5 * sr
    np.testing.assert_array_equal(apply_baseline(x, "drop")[0, 0], trial)
    np.testing.assert_allclose(apply_baseline(x, "subtract")[0, 0], 5 - np.tile(base_chunk, 2))
    with pytest.raises(ValueError, match="subtract, drop, keep"):
        apply_baseline(x, "mean")


def test_rating_thresholds_are_configurable():
    r = np.array([1.0, 4.99, 5.0, 5.01, 9.0])
    assert rating_classes(r).tolist() == [0, 0, 1, 1, 1]                        # TorchEEG: 5 is high
    assert rating_classes(r, high_inclusive=False).tolist() == [0, 0, 0, 1, 1]  # "> 5"
    assert rating_classes(r, threshold=4.0).tolist() == [0, 1, 1, 1, 1]
    thirds = np.array([1.0, 3.66, 3.67, 6.33, 6.34, 9.0])
    assert rating_classes(thirds, levels=3).tolist() == [0, 0, 1, 1, 2, 2]
    assert rating_classes(np.array([3.9, 4.0, 6.5]), levels=3, bin_edges=parse_bin_edges("4,6.5")).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="two increasing"):
        rating_classes(r, levels=3, bin_edges=(6.0, 4.0))
    with pytest.raises(ValueError, match="two numbers"):
        parse_bin_edges("4;6")
    assert parse_bin_edges("") is None


# ------------------------------------------------------------------------------------------------
# tokens

def _tokenizer(num_bins=8, window=32, downsample=4, normalize="train", token_map=None):
    c = len(DEAP_EEG_CHANNELS)
    return Tokenizer(mean=np.zeros(c, np.float32), std=np.ones(c, np.float32),
                     edges=np.linspace(-2, 2, num_bins - 1).astype(np.float32),
                     token_map=token_map or own_token_map(num_bins), window_size=window, downsample=downsample,
                     normalize=normalize)


def test_token_layout_markers_then_symbols():
    tok = _tokenizer()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32)).astype(np.float32)
    ids = tok(x)
    steps = 32 // 4
    assert ids.shape == (1 + 32 * (steps + 1),) == (tok.seq_len,)
    assert ids[0] == 0                                                      # BOS
    rows = ids[1:].reshape(32, steps + 1)
    assert rows[:, 0].tolist() == list(range(1, 33))                       # channel markers
    symbols = rows[:, 1:] - 33
    assert symbols.min() >= 0 and symbols.max() < 8
    # every 4th sample, binned at the edges: larger amplitudes never get a lower symbol
    np.testing.assert_array_equal(symbols, np.searchsorted(tok.edges, x[:, ::4]))
    batch = tok(np.stack([x, -x]))
    assert batch.shape == (2, tok.seq_len) and (batch[0] == ids).all()
    # the tokenizer survives its JSON form (stored with the model, used by serving)
    again = Tokenizer.from_dict(tok.to_dict())
    assert (again(x) == ids).all()


def test_train_normalisation_keeps_power_differences_segment_removes_them():
    tok_train, tok_seg = _tokenizer(), _tokenizer(normalize="segment")
    rng = np.random.default_rng(1)
    quiet = rng.normal(size=(32, 32)).astype(np.float32)
    loud = 3 * quiet
    extreme = lambda ids: np.isin(ids, [33, 33 + 7]).sum()  # noqa: E731  (outermost bins)
    assert extreme(tok_train(loud)) > 2 * extreme(tok_train(quiet))
    assert (tok_seg(loud) == tok_seg(quiet)).all()


def test_bin_edges_uniform_and_quantile():
    rng = np.random.default_rng(0)
    v = rng.normal(size=100_000)
    q = fit_bin_edges(v, 4, "quantile")
    shares = np.bincount(np.searchsorted(q, v), minlength=4) / v.size
    np.testing.assert_allclose(shares, 0.25, atol=0.01)
    u = fit_bin_edges(v, 4, "uniform")
    np.testing.assert_allclose(np.diff(u), np.diff(u)[0], rtol=1e-6)         # equal widths
    lo, hi = np.percentile(v, [0.5, 99.5])
    np.testing.assert_allclose(u, np.linspace(lo, hi, 5)[1:-1], atol=1e-6)
    assert (np.diff(fit_bin_edges(np.zeros(100), 4, "quantile")) > 0).all()  # ties nudged apart
    with pytest.raises(ValueError, match="uniform, quantile"):
        fit_bin_edges(v, 4, "kmeans")


def test_pretrained_tokenizer_map_uses_existing_tokens(word_tokenizer):
    tk = word_tokenizer
    tm = tokenizer_token_map(tk, 16)
    assert tm.symbols == tk.convert_tokens_to_ids([chr(ord("A") + k) for k in range(16)])
    assert tm.bos == [tk.bos_token_id]
    assert tm.channels[0] == tk.encode(" Fp1:", add_special_tokens=False) == [tk.convert_tokens_to_ids("Fp1"), 2]
    ids = _tokenizer(num_bins=16, token_map=tm)(np.zeros((32, 32), np.float32))
    assert set(ids.tolist()) <= set(range(len(tk)))
    with pytest.raises(ValueError, match="26 capital letters"):
        tokenizer_token_map(tk, 27)
