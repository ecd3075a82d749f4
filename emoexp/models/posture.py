"""Posture models of seed 001 (sections 2 and 3).

:class:`TCNLSTM` reads a sequence of per-frame keypoint features, ``batch["sequence"]`` of shape
(B, T, F) (F = 15 from :func:`emoexp.data.posture.posture_features`), and predicts several tasks
at once (posture, stress, trajectory): one :class:`ClassifierHead` per task on a shared vector.

    (B, T, F) -> feature BatchNorm -> TCN (dilated residual Conv1d) -> LSTM
              -> [last hidden state of each direction, mean over time] -> heads

:class:`FeatureMLP` is the "classifier head" model of section 3: an MLP on one feature vector
per sample, ``batch["features"]`` (B, F), with the input standardisation stored as buffers so a
checkpoint carries it.

Both take the features as they come out of the feature extractor, in their own units (angles,
distances, velocities): the normalisation is part of the model. A NaN (a joint the pose model did
not see) is replaced by the feature's mean, so one missing joint cannot turn a whole batch's loss
into NaN.

Both are registered whole networks (family ``network``: a batch dict in, a dict of logits out).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from emoexp.models.heads import ClassifierHead
from emoexp.models.registry import register_model


def _check_heads(heads: dict[str, int], who: str) -> dict[str, int]:
    if not heads:
        raise ValueError(f"{who} needs at least one head, e.g. {{'posture': 4}}")
    bad = {k: v for k, v in heads.items() if not isinstance(v, int) or v < 2}
    if bad:
        raise ValueError(f"{who}: every head needs an int number of classes >= 2, got {bad}")
    return {str(k): int(v) for k, v in heads.items()}


def _check_input(x: Tensor, n_features: int, key: str, ndim: int, who: str) -> None:
    if x.dim() != ndim or x.shape[-1] != n_features:
        shape = "(B, T, F)" if ndim == 3 else "(B, F)"
        raise ValueError(f"{who}: batch[{key!r}] must have shape {shape} with F={n_features}, "
                         f"got {tuple(x.shape)}")


class TemporalBlock(nn.Module):
    """Two weight-normed dilated Conv1d (same padding: output length = input length), each with
    ReLU and dropout, plus a residual (a 1x1 conv when the widths differ): (B, C_in, T) ->
    (B, C_out, T).

    Same padding, not causal: the whole sequence is known when it is classified, and the LSTM
    after the TCN reads it in both directions anyway. Weight norm rather than batch norm keeps a
    batch's outputs independent of the other samples in it (the TCN paper's choice as well).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        span = (kernel_size - 1) * dilation
        # Split the span so any kernel size (odd or even) keeps the length.
        self.pad = (span // 2, span - span // 2)
        self.conv1 = weight_norm(nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(c_out, c_out, kernel_size, dilation=dilation))
        self.dropout = nn.Dropout(dropout)
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        # Zero padding is the feature mean here: the input was normalised before the TCN.
        h = self.dropout(F.relu(self.conv1(F.pad(x, self.pad))))
        h = self.dropout(F.relu(self.conv2(F.pad(h, self.pad))))
        return F.relu(h + self.residual(x))


@register_model("tcn_lstm", family="network",
                example=lambda: (dict(n_features=5, heads={"posture": 3, "stress": 2}, channels=8, levels=2,
                                      lstm_hidden=8, head_hidden=(8,)),
                                 {"sequence": torch.randn(4, 12, 5)}))
class TCNLSTM(nn.Module):
    """Multi-task TCN-LSTM on keypoint-feature sequences; ``forward(batch) -> {head: (B, n)}``.

    ``batch["sequence"]`` is (B, T, F) float32, any T >= 1 (it may change between calls; the
    sequences of one batch share T). ``heads`` maps each task to its number of classes, e.g.
    ``{"posture": 4, "stress": 4, "trajectory": 3}``.

    * Per-feature ``BatchNorm1d`` (learnable affine): the features arrive in mixed units.
    * ``levels`` :class:`TemporalBlock` of width ``channels``, dilations 1, 2, 4, ...: the
      receptive field is ``1 + 2 (kernel_size - 1) (2**levels - 1)`` frames (29 by default,
      about a second at 30 fps).
    * An LSTM (``lstm_layers``, ``bidirectional``) over the TCN output.
    * The shared vector of width :attr:`latent_dim` = 2 x directions x ``lstm_hidden``: the last
      hidden state of each direction (forward: after the last frame, backward: after the first)
      and the mean of the LSTM outputs over time, which keeps evidence from the whole sequence
      that the final state may have forgotten.
    * One :class:`ClassifierHead` (hidden layers ``head_hidden``) per task.
    """

    def __init__(
        self,
        n_features: int,
        heads: dict[str, int],
        *,
        channels: int = 64,
        levels: int = 3,
        kernel_size: int = 3,
        lstm_hidden: int = 64,
        lstm_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.3,
        head_hidden: Sequence[int] = (64,),
    ):
        super().__init__()
        heads = _check_heads(heads, "TCNLSTM")
        if n_features < 1 or channels < 1 or levels < 1 or kernel_size < 1 or lstm_hidden < 1 or lstm_layers < 1:
            raise ValueError("TCNLSTM: n_features, channels, levels, kernel_size, lstm_hidden and "
                             "lstm_layers must all be >= 1")
        self.n_features = n_features
        self.head_sizes = heads
        self.norm = nn.BatchNorm1d(n_features)
        blocks = []
        for level in range(levels):
            blocks.append(TemporalBlock(n_features if level == 0 else channels, channels,
                                        kernel_size, 2**level, dropout))
        self.tcn = nn.Sequential(*blocks)
        self.receptive_field = 1 + 2 * (kernel_size - 1) * (2**levels - 1)
        self.lstm = nn.LSTM(channels, lstm_hidden, num_layers=lstm_layers, batch_first=True,
                            bidirectional=bidirectional,
                            # PyTorch applies this between stacked layers only (warns if 1 layer).
                            dropout=dropout if lstm_layers > 1 else 0.0)
        self.n_directions = 2 if bidirectional else 1
        self.latent_dim = 2 * self.n_directions * lstm_hidden
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({
            name: ClassifierHead(self.latent_dim, n, tuple(head_hidden), dropout)
            for name, n in heads.items()
        })

    def _normalise(self, x: Tensor) -> Tensor:
        """(B, F, T) raw features -> (B, F, T) normalised; NaN -> the feature's running mean."""
        mean = self.norm.running_mean
        if mean is not None:
            x = torch.where(torch.isnan(x), mean.view(1, -1, 1).to(x.dtype), x)
        if self.training and x.shape[0] * x.shape[2] == 1:
            # A single value per feature has no variance to normalise by (BatchNorm raises):
            # fall back to the running statistics for this one step.
            return F.batch_norm(x, self.norm.running_mean, self.norm.running_var,
                                self.norm.weight, self.norm.bias, False, 0.0, self.norm.eps)
        return self.norm(x)

    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """The shared vector: (B, T, F) -> (B, latent_dim)."""
        x = batch["sequence"]
        _check_input(x, self.n_features, "sequence", 3, "TCNLSTM")
        if x.shape[1] < 1:
            raise ValueError("TCNLSTM: batch['sequence'] has no frames (T = 0)")
        x = self._normalise(x.float().transpose(1, 2))       # (B, F, T)
        h = self.tcn(x)                                       # (B, C, T)
        out, (h_n, _) = self.lstm(h.transpose(1, 2))          # (B, T, D*H); h_n (L*D, B, H)
        last = h_n[-self.n_directions:].transpose(0, 1).reshape(x.shape[0], -1)  # (B, D*H)
        return torch.cat([last, out.mean(dim=1)], dim=1)      # (B, 2*D*H)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        z = self.dropout(self.encode(batch))
        return {name: head(z) for name, head in self.heads.items()}


@register_model("feature_mlp", family="network",
                example=lambda: (dict(n_features=6, heads={"mood": 2, "sleep": 3}, hidden=(8,)),
                                 {"features": torch.randn(4, 6)}))
class FeatureMLP(nn.Module):
    """MLP heads on one feature vector per sample; ``forward(batch) -> {head: (B, n)}``.

    ``batch["features"]`` is (B, F) in the extractor's units; it is standardised with the
    buffers ``feature_mean`` and ``feature_std`` (identity until :meth:`set_standardisation`
    or :meth:`fit_standardisation` is called with training-set statistics; being buffers, they
    are saved in the state dict), then a shared trunk (Linear -> ReLU -> Dropout per width in
    ``hidden``) feeds one linear head per task. :attr:`latent_dim` is the trunk's output width.
    """

    def __init__(
        self,
        n_features: int,
        heads: dict[str, int],
        *,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.4,
    ):
        super().__init__()
        heads = _check_heads(heads, "FeatureMLP")
        if n_features < 1:
            raise ValueError(f"FeatureMLP: n_features must be >= 1, not {n_features}")
        self.n_features = n_features
        self.head_sizes = heads
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        layers: list[nn.Module] = []
        prev = n_features
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = width
        self.trunk = nn.Sequential(*layers)
        self.latent_dim = prev
        self.heads = nn.ModuleDict({
            name: ClassifierHead(prev, n, (), dropout) for name, n in heads.items()
        })

    @torch.no_grad()
    def set_standardisation(self, mean, std, *, eps: float = 1e-6) -> None:
        """Standardise inputs as ``(x - mean) / std``; ``mean`` and ``std`` are (F,) array-likes.

        A std <= ``eps`` (a constant feature) becomes 1: such a feature is only centred.
        """
        m = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        s = torch.as_tensor(np.asarray(std, dtype=np.float32))
        if m.shape != (self.n_features,) or s.shape != (self.n_features,):
            raise ValueError(f"FeatureMLP: mean and std must have shape ({self.n_features},), got "
                             f"{tuple(m.shape)} and {tuple(s.shape)}")
        if not (torch.isfinite(m).all() and torch.isfinite(s).all()) or (s < 0).any():
            raise ValueError("FeatureMLP: mean and std must be finite, std >= 0")
        s = torch.where(s <= eps, torch.ones_like(s), s)
        self.feature_mean.copy_(m)
        self.feature_std.copy_(s)

    def fit_standardisation(self, features) -> None:
        """Set the standardisation from training features (N, F), ignoring NaNs."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features or x.shape[0] < 1:
            raise ValueError(f"FeatureMLP: features must have shape (N, {self.n_features}), got {x.shape}")
        with np.errstate(all="ignore"):
            mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        # An all-NaN column has no statistics: leave it unscaled (it becomes 0 after NaN filling).
        self.set_standardisation(np.nan_to_num(mean), np.nan_to_num(std, nan=1.0))

    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """The trunk's output: (B, F) -> (B, latent_dim)."""
        x = batch["features"]
        _check_input(x, self.n_features, "features", 2, "FeatureMLP")
        x = (x.float() - self.feature_mean) / self.feature_std
        # After standardisation 0 is the mean: a missing value becomes the average one.
        return self.trunk(torch.where(torch.isnan(x), torch.zeros_like(x), x))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        z = self.encode(batch)
        return {name: head(z) for name, head in self.heads.items()}
