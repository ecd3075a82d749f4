"""The seed-002 speech model: shapes, freezing, the feature cache, local pretrained weights,
checkpoint round trip, and that it learns a toy task. Everything uses the tiny random wav2vec2."""

from __future__ import annotations

import ast
import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import emoexp.models.speech as speech_mod
from emoexp.models.speech import (
    TINY_WAV2VEC2,
    SpeechNet,
    load_wav2vec2_weights,
    wav2vec2_config,
)

HEADS = {"emotion": 6, "gender": 2}
SR = 16000


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _net(**kwargs) -> SpeechNet:
    kwargs.setdefault("hidden", 32)
    return SpeechNet(
        kwargs.pop("heads", HEADS), kwargs.pop("wav2vec2", wav2vec2_config()), **kwargs
    )


def _save_tiny_pretrained(path: Path, **overrides) -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    model = Wav2Vec2Model(Wav2Vec2Config(**{**TINY_WAV2VEC2, **overrides}))
    model.save_pretrained(str(path))
    return model


def test_module_import_is_light() -> None:
    # transformers and torchaudio cost seconds to import; only functions may import them.
    tree = ast.parse(Path(speech_mod.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert not any(n.split(".")[0] in {"transformers", "torchaudio"} for n in names), names


@pytest.mark.parametrize("spec_branch", [True, False])
def test_output_shapes_for_two_lengths(spec_branch: bool) -> None:
    net = _net(spec_branch=spec_branch).eval()
    assert net.latent_dim == (64 if spec_branch else 32)
    with torch.no_grad():
        for n in (SR // 2, 12345):  # 0.5 s, and a length no stride divides
            out = net({"waveform": torch.randn(3, n)})
            assert set(out) == set(HEADS)
            assert out["emotion"].shape == (3, 6) and out["gender"].shape == (3, 2)
            assert all(torch.isfinite(o).all() for o in out.values())
            assert net.embed({"waveform": torch.randn(3, n)}).shape == (3, net.latent_dim)


def test_input_scale_is_normalised_away() -> None:
    # Per-utterance normalisation: a louder copy of the same audio gives the same prediction.
    net = _net().eval()
    x = torch.randn(2, SR // 2)
    with torch.no_grad():
        a, b = net({"waveform": x})["emotion"], net({"waveform": 7.0 * x + 0.3})["emotion"]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_short_or_misshapen_waveform_is_rejected() -> None:
    net = _net().eval()
    with pytest.raises(ValueError, match="at least 400"):
        net({"waveform": torch.randn(2, 100)})
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        net({"waveform": torch.randn(SR)})


def _backward(net: SpeechNet, n: int = SR // 2) -> None:
    net.train()
    out = net({"waveform": torch.randn(4, n)})
    sum((o * torch.randn_like(o)).sum() for o in out.values()).backward()


def _grad_ok(p: nn.Parameter) -> bool:
    return p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0


def test_frozen_feature_encoder_gets_no_grad() -> None:
    net = _net()  # freeze_feature_extractor=True by default
    conv = list(net.wav2vec2.feature_extractor.parameters())
    assert conv and all(not p.requires_grad for p in conv)
    assert net.feature_encoder_frozen
    _backward(net)
    assert all(p.grad is None for p in conv)
    for part in (
        net.context,
        net.pool,
        net.heads,
        net.spec,
        net.wav2vec2.encoder,
        net.wav2vec2.feature_projection,
    ):
        params = list(part.parameters())
        assert params and all(_grad_ok(p) for p in params), type(part).__name__
    # Frozen and without dropout, the conv features are the same in training mode, call to call.
    x = torch.randn(2, SR // 2)
    assert torch.equal(net._conv_features(x), net._conv_features(x))


def test_unfrozen_feature_encoder_trains() -> None:
    net = _net(freeze_feature_extractor=False)
    conv = list(net.wav2vec2.feature_extractor.parameters())
    assert all(p.requires_grad for p in conv) and not net.feature_encoder_frozen
    _backward(net)
    assert all(_grad_ok(p) for p in conv)
    with pytest.raises(ValueError, match="frozen feature encoder"):
        net.cache_features = True


def test_feature_cache_matches_and_counts() -> None:
    net = _net().eval()
    x = torch.randn(4, SR // 2)
    utt = torch.tensor([0, 1, 2, -1])
    keys_before = set(net.state_dict())
    with torch.no_grad():
        ref = net({"waveform": x, "utt": utt})
        assert net.feature_cache_misses == 0 and not net._feature_cache  # cache off by default
        net.cache_features = True
        cold = net({"waveform": x, "utt": utt})
        assert (net.feature_cache_hits, net.feature_cache_misses) == (0, 3)
        assert set(net._feature_cache) == {0, 1, 2}  # -1 is never cached
        warm = net({"waveform": x, "utt": utt})
        assert (net.feature_cache_hits, net.feature_cache_misses) == (3, 3)
        # Cold: one batch as without the cache, so bit for bit the same. Warm: rows 0-2 come from
        # the cache and row 3 is computed alone; a conv kernel may round a batch of one
        # differently (seen on CPU), hence closeness there and exactness for the cached rows.
        for k in HEADS:
            assert torch.equal(ref[k], cold[k])
            assert torch.equal(ref[k][:3], warm[k][:3])
            torch.testing.assert_close(ref[k][3], warm[k][3])
        # The usual evaluation case: every id cached, the same batches as before -> exact.
        all_ids = torch.tensor([0, 1, 2, 3])
        net.clear_feature_cache()
        net({"waveform": x, "utt": all_ids})
        again = net({"waveform": x, "utt": all_ids})
        assert (net.feature_cache_hits, net.feature_cache_misses) == (4, 4)
        for k in HEADS:
            assert torch.equal(ref[k], again[k])
        net.clear_feature_cache()
        net({"waveform": x, "utt": utt})
        net({"waveform": x, "utt": utt})
        assert (net.feature_cache_hits, net.feature_cache_misses) == (3, 3)
        # Partly cached and reordered: only id 3 (new) is computed, rows follow the batch order.
        order = [3, 1, 0, 2]
        mixed = net({"waveform": x[order], "utt": torch.tensor([3, 1, 0, 2])})
        assert (net.feature_cache_hits, net.feature_cache_misses) == (6, 4)
        for k in HEADS:
            torch.testing.assert_close(mixed[k], ref[k][order])
        # The cached tensors really are what the model uses: spoil one, its row changes.
        net._feature_cache[0] = torch.zeros_like(net._feature_cache[0])
        spoiled = net({"waveform": x, "utt": utt})
        assert not torch.allclose(spoiled["emotion"][0], ref["emotion"][0])
        torch.testing.assert_close(spoiled["emotion"][1:], ref["emotion"][1:])
        # Without ids nothing is cached or counted.
        net({"waveform": x})
        assert (net.feature_cache_hits, net.feature_cache_misses) == (9, 4)
    entry = net._feature_cache[1]
    assert entry.device.type == "cpu" and entry.dtype == torch.float32 and not entry.requires_grad
    assert set(net.state_dict()) == keys_before  # nothing of the cache in the checkpoint
    net.clear_feature_cache()
    assert not net._feature_cache and net.feature_cache_hits == net.feature_cache_misses == 0


def test_feature_cache_other_length_recomputes_and_load_clears() -> None:
    net = _net().eval()
    net.cache_features = True
    with torch.no_grad():
        net({"waveform": torch.randn(2, SR // 2), "utt": torch.tensor([5, 6])})
        longer = torch.randn(2, SR)
        out = net({"waveform": longer, "utt": torch.tensor([5, 6])})
        assert (net.feature_cache_hits, net.feature_cache_misses) == (0, 4)
        net.cache_features = False
        torch.testing.assert_close(out["emotion"], net({"waveform": longer})["emotion"])
    net.load_state_dict(net.state_dict())  # new weights (here the same) invalidate the cache
    assert not net._feature_cache


def test_feature_cache_in_training_never_stores_negative_ids() -> None:
    net = _net()
    net.cache_features = True
    net.train()  # time masking (mask_time_prob > 0) runs after the cached part
    out = net({"waveform": torch.randn(4, SR // 2), "utt": torch.tensor([-1, -2, 7, -1])})
    sum(o.sum() for o in out.values()).backward()
    assert set(net._feature_cache) == {7}
    assert all(_grad_ok(p) for p in net.wav2vec2.encoder.parameters())


def test_pretrained_directory_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    saved = _save_tiny_pretrained(tmp_path / "w2v")
    cfg = wav2vec2_config(str(tmp_path / "w2v"))
    assert cfg["model_type"] == "wav2vec2" and cfg["hidden_size"] == TINY_WAV2VEC2["hidden_size"]
    # A checkpoint stores the config as JSON; the net must build from what comes back.
    cfg = json.loads(json.dumps(cfg))
    torch.manual_seed(2)
    net = _net(wav2vec2=cfg)
    want = saved.state_dict()
    assert not torch.equal(
        net.wav2vec2.state_dict()["feature_projection.projection.weight"],
        want["feature_projection.projection.weight"],
    )
    net.cache_features = True
    net.eval()
    with torch.no_grad():
        net({"waveform": torch.randn(1, SR // 2), "utt": torch.tensor([0])})
    load_wav2vec2_weights(net, str(tmp_path / "w2v"))
    got = net.wav2vec2.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert net.feature_encoder_frozen  # loading keeps the freeze
    assert not net._feature_cache  # features of the old weights are gone


def test_tiny_config_is_a_copy() -> None:
    cfg = wav2vec2_config("")
    assert cfg == TINY_WAV2VEC2
    cfg["conv_dim"][0] = 1
    assert TINY_WAV2VEC2["conv_dim"][0] == 32


def test_bad_pretrained_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"nope.*save_pretrained.*config\.json"):
        wav2vec2_config(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*no config\.json"):
        wav2vec2_config(str(empty))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    with pytest.raises(ValueError, match=r"bert.*model_type 'bert'"):
        wav2vec2_config(str(bert))
    net = _net()
    with pytest.raises(ValueError, match=r"bert.*not 'wav2vec2'"):
        load_wav2vec2_weights(net, str(bert))
    no_weights = tmp_path / "cfg_only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    assert wav2vec2_config(str(no_weights))["model_type"] == "wav2vec2"
    with pytest.raises(ValueError, match=r"cfg_only.*no weights file"):
        load_wav2vec2_weights(net, str(no_weights))


def test_pretrained_of_other_shape_is_rejected(tmp_path: Path) -> None:
    _save_tiny_pretrained(tmp_path / "wide", hidden_size=48, intermediate_size=96)
    net = _net()
    before = copy.deepcopy(net.wav2vec2.state_dict())
    with pytest.raises(ValueError, match=r"wide.*differ in shape.*wav2vec2_config"):
        load_wav2vec2_weights(net, str(tmp_path / "wide"))
    assert all(torch.equal(v, before[k]) for k, v in net.wav2vec2.state_dict().items())


def test_state_dict_loads_into_fresh_net(tmp_path: Path) -> None:
    kwargs = dict(context_layers=1, pool_heads=2, n_mels=32)
    a = _net(**kwargs).eval()
    torch.save(a.state_dict(), tmp_path / "sd.pt")
    torch.manual_seed(123)
    b = _net(wav2vec2=copy.deepcopy(a.wav2vec2_config), **kwargs).eval()
    x = {"waveform": torch.randn(2, SR // 2)}
    with torch.no_grad():
        assert not torch.allclose(a(x)["emotion"], b(x)["emotion"])
        b.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True), strict=True)
        for k in HEADS:
            assert torch.equal(a(x)[k], b(x)[k])
    assert b.feature_encoder_frozen


def _tones(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n clips of 0.5 s: class 0 a 200 Hz tone, class 1 400 Hz, random phase and level, noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    t = torch.arange(SR // 2) / SR
    freq = torch.where(y == 1, 400.0, 200.0)[:, None]
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    level = 0.2 + torch.rand(n, 1, generator=g)
    x = level * torch.sin(2 * math.pi * freq * t + phase) + 0.3 * torch.randn(
        n, SR // 2, generator=g
    )
    return x, y


def test_learns_two_tones() -> None:
    x, y = _tones(32, seed=0)
    net = _net(heads={"tone": 2}, context_layers=1, dropout=0.1)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()

    def eval_loss() -> float:
        net.eval()
        with torch.no_grad():
            return loss_fn(net({"waveform": x})["tone"], y).item()

    before = eval_loss()
    for _ in range(12):
        net.train()
        opt.zero_grad()
        loss_fn(net({"waveform": x})["tone"], y).backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)
    # New clips (other phases, levels, noise) are told apart too, not just the 32 seen ones.
    x_new, y_new = _tones(16, seed=1)
    with torch.no_grad():
        acc = (net({"waveform": x_new})["tone"].argmax(1) == y_new).float().mean().item()
    assert acc >= 0.8, acc


@pytest.mark.parametrize("train", [False, True])
def test_split_forward_matches_transformers(train: bool) -> None:
    # encode_wav2vec2 re-implements Wav2Vec2Model.forward around the cache; with the same random
    # state (numpy draws the time masks, torch the dropout) both must give the same states.
    import numpy as np

    net = _net().train(train)
    x = torch.randn(2, SR)
    states = []
    for fn in (lambda: net.encode_wav2vec2(x), lambda: net.wav2vec2(x).last_hidden_state):
        np.random.seed(0)
        torch.manual_seed(0)
        with torch.no_grad():
            states.append(fn())
    torch.testing.assert_close(states[0], states[1], atol=0, rtol=0)
    if train:  # and the masking did happen: eval-mode states differ
        with torch.no_grad():
            assert not torch.allclose(states[0], net.eval().encode_wav2vec2(x))


def test_a_checkpoint_saved_before_spec_encoder_rebuilds_its_own_network(monkeypatch) -> None:
    """Checkpoints from before ``spec_encoder`` hold the 2-D CNN branch and a config without the
    key: read through saved_config they rebuild the CNN, not today's default (TDNN); a resume may
    restate the saved value but not change it (an architecture key)."""
    from emoexp import engine
    from emoexp.config import apply_overrides, saved_config
    from emoexp.tasks import get_task

    task = get_task("train_speech")
    old_cfg = apply_overrides(task.default_config(), {"spec_encoder": "cnn", "n_mels": 16, "context_layers": 1})
    info = {"heads": {"emotion": ["a", "b", "c"]}, "wav2vec2": wav2vec2_config(), "sample_rate": SR}
    old = task.build_model(old_cfg, info)
    saved = {k: v for k, v in old_cfg.to_dict().items() if k != "spec_encoder"}

    fresh = apply_overrides(task.default_config(), saved)           # the naive reading: today's default
    assert fresh.spec_encoder == "tdnn"
    with pytest.raises(RuntimeError, match="spec"):
        task.build_model(fresh, info).load_state_dict(old.state_dict(), strict=True)

    cfg = saved_config(task.default_config(), saved)
    assert cfg.spec_encoder == "cnn"
    task.build_model(cfg, info).load_state_dict(old.state_dict(), strict=True)
    state = {"config": saved}
    assert engine._config_from_state(task, state, {"spec_encoder": "cnn"}).spec_encoder == "cnn"
    with pytest.raises(ValueError, match="cannot change architecture keys on resume: spec_encoder"):
        engine._config_from_state(task, state, {"spec_encoder": "tdnn"})


def test_saved_before_values_are_valid_architecture_settings() -> None:
    from emoexp.config import apply_overrides
    from emoexp.tasks import get_task, list_tasks

    for task in map(get_task, list_tasks()):
        cls = task.config_cls
        for key, value in cls.SAVED_BEFORE.items():
            assert key in cls.ARCH_KEYS, (task.name, key)
            apply_overrides(task.default_config(), {key: value})      # a known key, an allowed value


@pytest.mark.parametrize("encoder", ["tdnn", "cnn"])
def test_both_spectrogram_encoders_give_one_vector_per_clip(encoder: str) -> None:
    net = _net(spec_encoder=encoder, n_mels=16, context_layers=1, pool_heads=2).eval()
    with torch.no_grad():
        a = net.spec(torch.randn(3, SR // 2))
        b = net.spec(torch.randn(1, SR))          # another length, one clip
    assert a.shape == (3, 32) and b.shape == (1, 32)
    with pytest.raises(ValueError, match="spectrogram encoder must be one of tdnn, cnn"):
        _net(spec_encoder="lstm")
