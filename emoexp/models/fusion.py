"""Multimodal composition: per-modality encoders, a fusion step, one or more heads.

Also the pieces for transfer: a channel adapter for a target dataset whose EEG montage differs
from the pretrained encoder's, and helpers to move an encoder's weights between models.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from emoexp.models.heads import ClassifierHead
from emoexp.models.registry import create_model, register_model

FUSIONS = ("concat", "attention")


@register_model("channel_adapter", family="adapter",
                example=lambda: (dict(in_channels=6, out_channels=4), torch.randn(4, 6, 32)))
class ChannelAdapter(nn.Module):
    """A learned 1x1 Conv1d mixing ``in_channels`` into ``out_channels``: (B, in, T) -> (B, out, T).

    With equal counts it starts as the identity, so fine-tuning begins from "the channels line
    up" and only learns a remix if the data asks for one.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mix = nn.Conv1d(in_channels, out_channels, kernel_size=1)
        if in_channels == out_channels:
            with torch.no_grad():
                # (C, C) -> (C, C, 1): the conv weight's layout for kernel size 1
                self.mix.weight.copy_(torch.eye(in_channels).unsqueeze(-1))
                self.mix.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(x)


class MultimodalNet(nn.Module):
    """Encode each modality, fuse the latents, apply every head to the fused vector.

    ``batch[f"{m}_mask"]`` (shape (B,), 1 = present, 0 = missing) zeroes a modality per sample,
    so a sample lacking e.g. audio still goes through (with zeros in place of the real input).
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        heads: dict[str, nn.Module],
        fusion: str = "concat",
        channel_adapter: nn.Module | None = None,
        attn_dim: int | None = None,
    ):
        super().__init__()
        if not encoders:
            raise ValueError("MultimodalNet needs at least one encoder")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
        for name, enc in encoders.items():
            if not isinstance(getattr(enc, "latent_dim", None), int):
                raise ValueError(f"encoder {name!r} ({type(enc).__name__}) has no int `latent_dim`")
        if channel_adapter is not None and "eeg" not in encoders:
            raise ValueError("channel_adapter is applied to the 'eeg' modality, but there is none")
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict(heads)
        self.channel_adapter = channel_adapter
        self.fusion = fusion
        latent_dims = [enc.latent_dim for enc in encoders.values()]
        if fusion == "concat":
            self.fused_dim = sum(latent_dims)
        else:
            # Default to the widest latent so no modality is squeezed through a bottleneck.
            self.fused_dim = attn_dim or max(latent_dims)
            self.proj = nn.ModuleDict(
                {m: nn.Linear(enc.latent_dim, self.fused_dim) for m, enc in encoders.items()}
            )
            # Small init: the first softmax is near uniform, i.e. training starts from a mean.
            self.query = nn.Parameter(torch.randn(self.fused_dim) * 0.02)

    def encode(self, batch: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Latents (B, latent_m) per modality, already masked, and presence masks (B,) bool."""
        latents, present = [], []
        for m, encoder in self.encoders.items():
            if m not in batch:
                raise KeyError(
                    f"batch has no {m!r} input (keys: {sorted(batch)}); to mark it missing, "
                    f"pass zeros for it with batch[{m + '_mask'!r}] = 0"
                )
            x = batch[m]
            if m == "eeg" and self.channel_adapter is not None:
                x = self.channel_adapter(x)
            z = encoder(x)
            mask = batch.get(f"{m}_mask")
            if mask is None:
                present.append(torch.ones(z.shape[0], dtype=torch.bool, device=z.device))
            else:
                z = z * mask.to(z.dtype)[:, None]  # (B,) -> (B, 1)
                present.append(mask > 0)
            latents.append(z)
        return latents, present

    def fuse(self, latents: list[Tensor], present: list[Tensor]) -> Tensor:
        """(B, latent_m) per modality -> (B, fused_dim)."""
        if self.fusion == "concat":
            return torch.cat(latents, dim=1)
        tokens = torch.stack(
            [self.proj[m](z) for m, z in zip(self.encoders, latents, strict=True)], dim=1
        )  # M x (B, D) -> (B, M, D)
        keep = torch.stack(present, dim=1)  # M x (B,) -> (B, M)
        scores = tokens @ self.query / math.sqrt(self.fused_dim)  # (B, M, D) @ (D,) -> (B, M)
        # A very negative score (not -inf) gives an exact 0 weight without the NaNs that an
        # all-missing row would produce under -inf; the product with `keep` zeroes such a row.
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=1) * keep.to(scores.dtype)  # (B, M)
        return (weights.unsqueeze(-1) * tokens).sum(dim=1)  # (B, M, 1) * (B, M, D) -> (B, D)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Logits per head; keys of ``batch`` that are not modalities or masks are ignored."""
        fused = self.fuse(*self.encode(batch))
        return {name: head(fused) for name, head in self.heads.items()}


def _multimodal_example() -> tuple[dict[str, Any], dict[str, Tensor]]:
    kwargs = dict(modalities={"eeg": {"model": "eeg_cnn", "in_channels": 6, "latent_dim": 16},
                              "audio": {"model": "audio_mfcc", "n_mfcc": 13, "latent_dim": 8}},
                  heads={"emotion": 5, "arousal": 2}, fusion="attention", head_hidden=(8,),
                  channel_adapter=(8, 6))
    batch = {"eeg": torch.randn(4, 8, 64), "audio": torch.randn(4, 13, 20),
             "audio_mask": torch.tensor([1.0, 0.0, 1.0, 1.0])}
    return kwargs, batch


@register_model("multimodal_net", family="network", example=_multimodal_example)
def build_multimodal_net(
    *,
    modalities: dict[str, dict[str, Any]],
    heads: dict[str, int],
    fusion: str = "concat",
    head_hidden: tuple[int, ...] = (256, 128),
    head_dropout: float = 0.3,
    channel_adapter: tuple[int, int] | None = None,
    attn_dim: int | None = None,
) -> MultimodalNet:
    """Build encoders from the registry and a :class:`ClassifierHead` per head.

    ``channel_adapter=(data_channels, encoder_channels)`` puts a :class:`ChannelAdapter` in front
    of the EEG encoder, which is then built for ``encoder_channels``.

    >>> net = build_multimodal_net(
    ...     modalities={"eeg": {"model": "eeg_cnn", "in_channels": 30},
    ...                 "audio": {"model": "audio_mfcc", "n_mfcc": 13}},
    ...     heads={"emotion": 5},
    ... )
    """
    encoders: dict[str, nn.Module] = {}
    for m, spec in modalities.items():
        kwargs = dict(spec)  # copy: the caller's config must not lose its "model" key
        if "model" not in kwargs:
            raise ValueError(f"modality {m!r} needs a 'model' key naming a registered model")
        name = kwargs.pop("model")
        if m == "eeg" and channel_adapter is not None:
            enc_ch = channel_adapter[1]
            if kwargs.get("in_channels") not in (None, enc_ch):
                raise ValueError(
                    f"channel_adapter={channel_adapter} maps to {enc_ch} channels but the eeg "
                    f"encoder is set to in_channels={kwargs['in_channels']}"
                )
            kwargs["in_channels"] = enc_ch
        encoders[m] = create_model(name, **kwargs)
    adapter = ChannelAdapter(*channel_adapter) if channel_adapter is not None else None
    net = MultimodalNet(encoders, {}, fusion=fusion, channel_adapter=adapter, attn_dim=attn_dim)
    # Heads come after the net because their input width is the net's fused_dim.
    for head, n_classes in heads.items():
        net.heads[head] = ClassifierHead(net.fused_dim, n_classes, head_hidden, head_dropout)
    return net


def encoder_state_dict(model: MultimodalNet, modality: str = "eeg") -> dict[str, Tensor]:
    """A detached copy of one encoder's weights (the part worth transferring after pretraining)."""
    return {k: v.detach().clone() for k, v in model.encoders[modality].state_dict().items()}


def load_encoder_state(
    model: MultimodalNet, state: dict[str, Tensor], modality: str = "eeg"
) -> None:
    """Load ``state`` into ``model.encoders[modality]`` strictly, explaining any mismatch."""
    encoder = model.encoders[modality]
    own = encoder.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{modality} encoder state does not fit {type(encoder).__name__} (a different "
            f"architecture?): missing {missing}, unexpected {unexpected}"
        )
    for key, want in own.items():
        got = state[key].shape
        if got == want.shape:
            continue
        msg = (
            f"{modality} encoder layer {key!r}: expected shape {tuple(want.shape)}, "
            f"got {tuple(got)} from the checkpoint"
        )
        # A conv weight (out, in, k) differing in `in` on the first layer is a montage mismatch.
        if want.dim() == 3 and got[1] != want.shape[1]:
            msg += (
                f". The checkpoint's encoder takes {got[1]} input channels, this one "
                f"{want.shape[1]}: use channel_adapter=linear (build_multimodal_net(..., "
                f"channel_adapter=({want.shape[1]}, {got[1]}))) to map the data's channels "
                f"onto the pretrained layout"
            )
        raise ValueError(msg)
    encoder.load_state_dict(state, strict=True)
