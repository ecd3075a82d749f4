"""Face encoders: RGB images (B, 3, H, W), normalised with ImageNet statistics -> (B, latent_dim).

``face_densenet121`` is torchvision's DenseNet121 feature stack (seed 001), built with random
weights: nothing is ever downloaded. A local state dict (``backbone_weights=PATH``) is loaded by
:func:`load_densenet_weights`. ``face_small_cnn`` is a four-block CNN for quick CPU runs and for
embedding video frames inside the EAV fusion model.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from emoexp.models.registry import register_model


@register_model("face_densenet121", family="face_encoder", option="densenet121",
                example=lambda: ({}, torch.randn(2, 3, 32, 32)))
class FaceDenseNet(nn.Module):
    """DenseNet121 features, ReLU, global average pooling: (B, 3, H, W) -> (B, 1024).

    Any H, W >= 32 works (the stack downsamples by 32; 48x48 FER2013 images end at 1x1).
    """

    latent_dim = 1024

    def __init__(self, memory_efficient: bool = False):
        super().__init__()
        from torchvision.models import densenet121

        self.features = densenet121(weights=None, memory_efficient=memory_efficient).features
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.features(x))  # (B, 1024, H/32, W/32)
        return self.pool(h).flatten(1)    # -> (B, 1024)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@register_model("face_small_cnn", family="face_encoder", option="small_cnn",
                example=lambda: (dict(latent_dim=16, width=8), torch.randn(4, 3, 48, 48)))
class FaceSmallCNN(nn.Module):
    """Four conv blocks (16-32-64-128 by default, each halving H and W), global pooling, a projection.

    About 30 M multiply-adds for a 48x48 image: a few ms per image on one CPU core.
    """

    def __init__(self, latent_dim: int = 256, width: int = 16, dropout: float = 0.1):
        super().__init__()
        self.latent_dim = latent_dim
        self.features = nn.Sequential(
            _block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width), _block(4 * width, 8 * width)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(8 * width, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.features(x)).flatten(1)  # (B, 8w, H/16, W/16) -> (B, 8w)
        return self.proj(self.dropout(h))


def load_densenet_weights(encoder: FaceDenseNet, path: str | os.PathLike) -> dict[str, int]:
    """Load a local DenseNet121 state dict (torchvision's ImageNet file or any with ``features.*``
    keys, optionally prefixed ``module.``) into ``encoder``; the classifier is ignored.

    Reads with ``weights_only=True``; raises ValueError naming the file when it does not fit.
    """
    import re

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ValueError(f"{p}: backbone_weights file not found (give a local DenseNet121 state dict, or none)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{p}: not a readable PyTorch state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{p}: expected a state dict (mapping of tensors), got {type(state).__name__}")
    feats = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        # Old torchvision files name layers 'norm.1' where the module now says 'norm1'.
        k = re.sub(r"\.(norm|relu|conv)\.(\d+)\.", r".\1\2.", k)
        if k.startswith("features."):
            feats[k[len("features."):]] = v
    own = encoder.features.state_dict()
    missing = sorted(set(own) - set(feats))
    if not feats or missing:
        raise ValueError(f"{p}: not a DenseNet121 state dict ({len(missing)} of {len(own)} feature tensors missing, "
                         f"e.g. {missing[:3]})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(feats[k].shape)]
    if bad:
        raise ValueError(f"{p}: tensor shapes differ from DenseNet121's, e.g. {bad[0]}: "
                         f"{tuple(feats[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
    encoder.features.load_state_dict({k: feats[k] for k in own})
    return {"loaded": len(own)}
