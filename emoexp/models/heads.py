"""Classification heads: (B, in_dim) -> (B, n_classes) logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emoexp.models.registry import register_model


@register_model("classifier_head", family="head",
                example=lambda: (dict(in_dim=16, n_classes=3, hidden=(8,)), torch.randn(4, 16)))
class ClassifierHead(nn.Module):
    """An MLP: Linear -> ReLU -> Dropout per hidden size, then a Linear to the logits.

    The default (256, 128) widens the 128-d latent before narrowing, as in the seed pipeline.
    """

    def __init__(
        self,
        in_dim: int = 128,
        n_classes: int = 5,
        hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.3,
    ):
        super().__init__()
        self.in_dim = in_dim
        self.n_classes = n_classes
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
