"""TCNLSTM and FeatureMLP (emoexp.models.posture): shapes, heads, gradients, state dicts, and
that each learns a small toy problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emoexp.models.posture import TCNLSTM, FeatureMLP

HEADS = {"posture": 4, "stress": 4, "trajectory": 3}
F = 15


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (conftest's ``one_thread``)."""


def small_tcn(**kw) -> TCNLSTM:
    kw = {"channels": 16, "levels": 2, "lstm_hidden": 16, "head_hidden": (16,), **kw}
    return TCNLSTM(F, HEADS, **kw)


@pytest.mark.parametrize(("b", "t"), [(2, 1), (3, 30), (5, 77)])
def test_tcn_lstm_shapes_any_length(b: int, t: int) -> None:
    model = TCNLSTM(F, HEADS)  # the defaults
    assert model.latent_dim == 2 * 2 * 64
    for mode in (model.train, model.eval):
        mode()
        # Raw, un-normalised features (as the extractor writes them): offsets and large scales.
        out = model({"sequence": torch.randn(b, t, F) * 50 + 100})
        assert set(out) == set(HEADS)
        for name, n in HEADS.items():
            assert out[name].shape == (b, n)
            assert torch.isfinite(out[name]).all()
    assert model.encode({"sequence": torch.randn(b, t, F)}).shape == (b, model.latent_dim)


def test_tcn_lstm_options_and_heads() -> None:
    model = TCNLSTM(7, {"only": 5}, channels=8, levels=4, kernel_size=2, lstm_hidden=6,
                    lstm_layers=2, bidirectional=False, head_hidden=())
    assert model.latent_dim == 2 * 6
    assert model.receptive_field == 1 + 2 * 1 * 15
    out = model({"sequence": torch.randn(4, 9, 7)})
    assert list(out) == ["only"] and out["only"].shape == (4, 5)
    with pytest.raises(ValueError, match="F=7"):
        model({"sequence": torch.randn(4, 9, 6)})
    with pytest.raises(ValueError, match="at least one head"):
        TCNLSTM(7, {})


def test_tcn_lstm_gradient_reaches_every_parameter() -> None:
    model = small_tcn().train()
    out = model({"sequence": torch.randn(4, 12, F)})
    loss = sum((o * torch.randn_like(o)).sum() for o in out.values())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_tcn_lstm_missing_values_do_not_poison_the_batch() -> None:
    model = small_tcn().train()
    x = torch.randn(3, 10, F)
    x[0, 4, 2] = float("nan")
    x[1, :, 5] = float("nan")
    out = model({"sequence": x})
    assert all(torch.isfinite(o).all() for o in out.values())
    assert torch.isfinite(model.norm.running_mean).all()


def test_tcn_lstm_state_dict_round_trip() -> None:
    model = small_tcn()
    model.train()
    model({"sequence": torch.randn(4, 20, F) * 3 + 1})  # moves the BatchNorm running stats
    model.eval()
    x = {"sequence": torch.randn(3, 25, F)}
    fresh = small_tcn().eval()
    fresh.load_state_dict(model.state_dict())
    ref, got = model(x), fresh(x)
    for name in HEADS:
        torch.testing.assert_close(got[name], ref[name])


def test_feature_mlp_shapes_standardisation_and_round_trip() -> None:
    model = FeatureMLP(F, HEADS)
    assert model.latent_dim == 64
    state = model.state_dict()
    assert "feature_mean" in state and "feature_std" in state
    mean, std = np.arange(F, dtype=np.float32), np.full(F, 2.0, dtype=np.float32)
    std[3] = 0.0  # a constant feature: centred only
    model.set_standardisation(mean, std)
    assert model.feature_std[3] == 1.0
    model.eval()
    for b in (1, 7):
        out = model({"features": torch.randn(b, F)})
        assert {k: tuple(v.shape) for k, v in out.items()} == {k: (b, n) for k, n in HEADS.items()}

    fresh = FeatureMLP(F, HEADS).eval()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.feature_mean, torch.from_numpy(mean))
    x = {"features": torch.randn(5, F) * 4 + 7}
    x["features"][0, 1] = float("nan")
    ref, got = model(x), fresh(x)
    for name in HEADS:
        assert torch.isfinite(got[name]).all()
        torch.testing.assert_close(got[name], ref[name])

    with pytest.raises(ValueError, match=r"shape \(15,\)"):
        model.set_standardisation(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="F=15"):
        model({"features": torch.randn(2, 14)})


def test_feature_mlp_gradient_reaches_every_parameter() -> None:
    model = FeatureMLP(F, {"a": 3, "b": 2}, hidden=(8,)).train()
    out = model({"features": torch.randn(6, F)})
    sum((o * torch.randn_like(o)).sum() for o in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(not b.requires_grad for b in model.buffers())


F_TOY = 6


def _sine_sequences(n: int, t: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k: feature 1 is a sine of 1, 2.5 or 4 cycles per 30 frames (random phase and
    amplitude) around an offset of 90; the other features are frame jitter in their own units
    (each feature's offset and scale fixed, like a real feature's).

    Six features, not 15: with 14 nuisance features 120 sequences are memorised (train accuracy
    0.99 after 15 epochs, held-out at chance); with 600 they are learnt in 4 epochs.
    """
    units = np.random.default_rng(123)
    offset, scale = units.uniform(-50, 50, F_TOY), units.uniform(0.5, 20, F_TOY)
    y = rng.integers(0, 3, n)
    cycles = np.array([1.0, 2.5, 4.0])[y]
    frames = np.arange(t)
    x = 0.3 * rng.normal(0, 1, (n, t, F_TOY)) * scale + offset
    phase = rng.uniform(0, 2 * math.pi, (n, 1))
    amp = rng.uniform(5, 15, (n, 1))
    x[:, :, 1] = 90 + amp * np.sin(2 * math.pi * cycles[:, None] * frames / 30 + phase) \
        + rng.normal(0, 1, (n, t))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_tcn_lstm_learns_sine_frequency() -> None:
    rng = np.random.default_rng(0)
    x, y = _sine_sequences(120, 30, rng)
    # A second head on random labels: training both must not break the first.
    other = torch.tensor(rng.integers(0, 2, 120))
    model = TCNLSTM(F_TOY, {"freq": 3, "other": 2}, channels=32, lstm_hidden=32,
                    head_hidden=(32,), dropout=0.1)
    epochs, steps = 20, math.ceil(120 / 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(16):
            out = model({"sequence": x[idx]})
            loss = loss_fn(out["freq"], y[idx]) + loss_fn(out["other"], other[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model({"sequence": x})["freq"].argmax(1) == y).float().mean().item()
        xt, yt = _sine_sequences(90, 30, rng)
        test_acc = (model({"sequence": xt})["freq"].argmax(1) == yt).float().mean().item()
    # Chance is 1/3; seeds 0-14 all reach >= 0.99 on train, >= 0.88 held out.
    assert acc >= 0.9, acc
    assert test_acc >= 0.8, test_acc


def test_feature_mlp_learns_gaussian_blobs() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (4, F)) * 2.0
    scale = rng.uniform(1, 100, F)  # mixed units: learning relies on the standardisation
    y = rng.integers(0, 4, 200)
    x = (centres[y] + rng.normal(0, 1, (200, F))) * scale + 10 * scale
    model = FeatureMLP(F, {"blob": 4})
    model.fit_standardisation(x[:150])
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        model.train()
        for idx in torch.randperm(150).split(32):
            loss = torch.nn.functional.cross_entropy(model({"features": xt[idx]})["blob"], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model({"features": xt})["blob"].argmax(1)
    train_acc = (pred[:150] == yt[:150]).float().mean().item()
    held_acc = (pred[150:] == yt[150:]).float().mean().item()
    assert train_acc >= 0.9, train_acc   # chance is 1/4
    assert held_acc >= 0.8, held_acc
