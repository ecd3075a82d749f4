"""Video encoder: a face encoder applied to every frame of a clip, pooled over the frames.

``video_frames`` takes (B, F, 3, S, S) face crops normalised like the face models' inputs
(:func:`emoexp.data.images.preprocess`) and returns (B, latent_dim), the frame encoder's width.
The frame encoder is any registered image encoder (``face_small_cnn``, ``face_densenet121``),
trained jointly or loaded from a ``train_face`` model and optionally frozen.

A sample whose frames are all exactly zero stands for "no video" (a listening trial, a missing
file; the dataset writes such zeros): it is not run through the frame encoder, so it costs
nothing and leaves the BatchNorm statistics alone, and its latent is zero (the fusion's mask
drops it anyway).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from emoexp.models.registry import create_model, register_model

POOLINGS = ("mean", "attention")


@register_model(
    "video_frames", family="video_encoder",
    example=lambda: (dict(frame_model="face_small_cnn", frame_kwargs=dict(latent_dim=16, width=8), pooling="attention"),
                     torch.randn(4, 3, 3, 32, 32)),   # (B, frames, 3, S, S)
)
class VideoFramesEncoder(nn.Module):
    """Per-frame latents from ``frame_model``, then the mean (or learned attention) over frames.

    ``freeze=True`` fixes the frame encoder: no gradients, and kept in eval mode so that its
    BatchNorm statistics and dropout stay those it was trained with.
    """

    def __init__(
        self,
        frame_model: str = "face_small_cnn",
        frame_kwargs: dict[str, Any] | None = None,
        pooling: str = "mean",
        freeze: bool = False,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        self.frames = create_model(frame_model, **(frame_kwargs or {}))
        self.latent_dim = int(self.frames.latent_dim)
        self.pooling = pooling
        if pooling == "attention":
            # no bias (a softmax ignores a shared shift); zero init: training starts from the mean
            self.score = nn.Linear(self.latent_dim, 1, bias=False)
            nn.init.zeros_(self.score.weight)
        self.freeze = bool(freeze)
        if self.freeze:
            for p in self.frames.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> VideoFramesEncoder:
        super().train(mode)
        if self.freeze:
            self.frames.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(1)  # one frame per sample: (B, 3, S, S) -> (B, 1, 3, S, S)
        B, F = x.shape[:2]
        present = x.flatten(1).abs().amax(dim=1) > 0                  # (B,)
        out = x.new_zeros(B, self.latent_dim)
        if not bool(present.any()):
            return out
        clips = x[present]                                            # (P, F, 3, S, S)
        P = clips.shape[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            z = self.frames(clips.flatten(0, 1))                      # (P*F, 3, S, S) -> (P*F, D)
        z = z.view(P, F, self.latent_dim)                             # -> (P, F, D)
        if self.pooling == "attention":
            w = self.score(z).softmax(dim=1)                          # (P, F, 1)
            pooled = (w * z).sum(dim=1)                               # (P, D)
        else:
            pooled = z.mean(dim=1)
        return out.index_put((present.nonzero(as_tuple=True)[0],), pooled)
