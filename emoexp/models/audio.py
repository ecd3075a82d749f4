"""Audio encoders: MFCC frames (B, n_mfcc, frames) -> (B, latent_dim)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emoexp.models.eeg import conv_block
from emoexp.models.registry import register_model


@register_model("audio_mfcc", family="audio_encoder", option="mfcc",
                example=lambda: (dict(n_mfcc=13, latent_dim=16), torch.randn(4, 13, 20)))
class AudioEncoder(nn.Module):
    """Three conv blocks over MFCC frames, global average pooling, a linear projection.

    Utterances are short (tens to hundreds of frames), so only the last two blocks downsample
    and small kernels are used; global pooling accepts any frame count (F >= 4).
    """

    def __init__(self, n_mfcc: int = 13, latent_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.n_mfcc = n_mfcc
        self.latent_dim = latent_dim
        self.features = nn.Sequential(
            conv_block(n_mfcc, 64, kernel_size=5, stride=1),  # F -> F
            conv_block(64, 128, kernel_size=5, stride=2),  # -> F/2
            conv_block(128, 128, kernel_size=3, stride=2),  # -> F/4
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(128, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.features(x)).squeeze(-1)  # (B, 128, 1) -> (B, 128)
        return self.proj(self.dropout(h))
