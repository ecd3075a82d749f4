"""The model registry and the multimodal / transfer pieces (the contract every registered model
meets is in tests/test_contracts.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from emoexp.models import (
    AudioEncoder,
    ChannelAdapter,
    ClassifierHead,
    EEGEncoder,
    MultimodalNet,
    build_multimodal_net,
    create_model,
    encoder_state_dict,
    list_models,
    load_encoder_state,
    model_options,
    register_model,
)
from emoexp.models import registry as registry_mod

B = 4


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("t", [16, 37, 512])
def test_eeg_encoder_any_length(t: int) -> None:
    enc = EEGEncoder(in_channels=3, latent_dim=8).eval()
    assert enc(torch.randn(2, 3, t)).shape == (2, 8)


def test_audio_encoder_short_input() -> None:
    assert AudioEncoder(latent_dim=8).eval()(torch.randn(2, 13, 4)).shape == (2, 8)


def test_registry_duplicate_and_bad_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "_MODELS", dict(registry_mod._MODELS))
    example = lambda: ({}, torch.randn(2, 4))  # noqa: E731
    with pytest.raises(ValueError, match="already registered"):
        register_model("eeg_cnn", family="eeg_encoder", example=example)(nn.Identity)
    with pytest.raises(ValueError, match="snake_case"):
        register_model("EEG-Net", family="eeg_encoder", example=example)
    with pytest.raises(ValueError, match="option 'cnn' of family 'eeg_encoder' is taken"):
        register_model("eeg_other", family="eeg_encoder", option="cnn", example=example)(nn.Identity)


def test_registry_unknown_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'.*eeg_cnn"):
        create_model("nope")


def test_list_models_sorted() -> None:
    names = list_models()
    assert names == sorted(names) and {"eeg_cnn", "audio_mfcc", "speech_net", "eeg_llm"} <= set(names)
    assert list_models("eeg_encoder") == ["eeg_bands", "eeg_cnn", "eeg_cnn_lstm"]
    assert model_options("face_encoder") == {"densenet121": "face_densenet121", "small_cnn": "face_small_cnn"}


def test_create_model_drops_none() -> None:
    head = create_model("classifier_head", in_dim=8, n_classes=None, hidden=None, dropout=None)
    assert isinstance(head, ClassifierHead) and head.n_classes == 5


def _net(fusion: str) -> MultimodalNet:
    return build_multimodal_net(
        modalities={
            "eeg": {"model": "eeg_cnn", "in_channels": 6, "latent_dim": 16},
            "audio": {"model": "audio_mfcc", "n_mfcc": 13, "latent_dim": 8},
        },
        heads={"emotion": 5, "arousal": 2},
        fusion=fusion,
        head_hidden=(8,),
    )


def _batch() -> dict[str, Tensor]:
    return {
        "eeg": torch.randn(B, 6, 64),
        "audio": torch.randn(B, 13, 20),
        "emotion": torch.randint(0, 5, (B,)),  # a target: must be ignored
    }


@pytest.mark.parametrize("fusion, fused_dim", [("concat", 24), ("attention", 16)])
def test_multimodal_forward(fusion: str, fused_dim: int) -> None:
    net = _net(fusion)
    assert net.fused_dim == fused_dim
    out = net(_batch())
    assert set(out) == {"emotion", "arousal"}
    assert out["emotion"].shape == (B, 5) and out["arousal"].shape == (B, 2)
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_masked_modality_is_ignored(fusion: str) -> None:
    net = _net(fusion).eval()
    batch = _batch()
    batch["audio_mask"] = torch.zeros(B)
    a = net(batch)["emotion"]
    batch["audio"] = torch.randn(B, 13, 20) * 10
    b = net(batch)["emotion"]
    torch.testing.assert_close(a, b)
    # With the mask on, the audio input does matter.
    batch["audio_mask"] = torch.ones(B)
    assert not torch.allclose(net(batch)["emotion"], b)


def test_attention_all_missing_is_finite() -> None:
    net = _net("attention").eval()
    batch = _batch() | {"eeg_mask": torch.zeros(B), "audio_mask": torch.zeros(B)}
    assert torch.isfinite(net(batch)["emotion"]).all()


def test_bad_fusion() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        _net("sum")


def test_channel_adapter_identity_and_count_change() -> None:
    x = torch.randn(2, 8, 32)
    torch.testing.assert_close(ChannelAdapter(8, 8)(x), x)
    assert ChannelAdapter(8, 5)(x).shape == (2, 5, 32)


def test_net_with_channel_adapter() -> None:
    net = build_multimodal_net(
        modalities={"eeg": {"model": "eeg_cnn", "latent_dim": 8}},
        heads={"emotion": 3},
        channel_adapter=(5, 7),
    )
    assert net.encoders["eeg"].in_channels == 7
    assert net({"eeg": torch.randn(B, 5, 64)})["emotion"].shape == (B, 3)


def _eeg_net(in_channels: int, adapter: tuple[int, int] | None = None) -> MultimodalNet:
    return build_multimodal_net(
        modalities={"eeg": {"model": "eeg_cnn", "in_channels": in_channels, "latent_dim": 8}},
        heads={"emotion": 3},
        channel_adapter=adapter,
    )


def test_encoder_state_round_trip() -> None:
    src, dst = _eeg_net(6), _eeg_net(6)
    state = encoder_state_dict(src)
    load_encoder_state(dst, state)
    x = torch.randn(2, 6, 64)
    torch.testing.assert_close(dst.encoders["eeg"].eval()(x), src.encoders["eeg"].eval()(x))
    # The same pretrained encoder behind an adapter for a 4-channel montage loads too.
    load_encoder_state(_eeg_net(6, adapter=(4, 6)), state)


def test_encoder_state_channel_mismatch_is_explained() -> None:
    state = encoder_state_dict(_eeg_net(6))
    with pytest.raises(
        ValueError, match=r"features\.0\.0\.weight.*\(64, 4, 7\).*\(64, 6, 7\)"
    ) as e:
        load_encoder_state(_eeg_net(4), state)
    assert "channel_adapter=linear" in str(e.value)


def test_encoder_learns_two_frequencies() -> None:
    n, c, t = 32, 8, 128
    y = torch.arange(n) % 2
    freq = torch.where(y == 0, 4.0, 12.0)  # cycles per window
    phase = torch.rand(n, c, 1) * 2 * math.pi
    time = torch.arange(t) / t
    x = torch.sin(2 * math.pi * freq[:, None, None] * time + phase) + 0.5 * torch.randn(n, c, t)
    model = nn.Sequential(
        EEGEncoder(in_channels=c, latent_dim=16), ClassifierHead(16, 2, hidden=(16,), dropout=0.0)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(24):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9
