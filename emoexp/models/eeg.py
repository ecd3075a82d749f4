"""EEG encoders: (B, channels, time) -> (B, latent_dim)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emoexp.models.registry import register_model


def conv_block(in_ch: int, out_ch: int, kernel_size: int = 7, stride: int = 2) -> nn.Sequential:
    """Conv1d -> BatchNorm1d -> ReLU; with stride 2 it halves the time axis (rounding up)."""
    return nn.Sequential(
        # No conv bias: the BatchNorm that follows subtracts the mean, so a bias would be dead weight.
        nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm1d(out_ch),
        nn.ReLU(inplace=True),
    )


@register_model("eeg_cnn", family="eeg_encoder", option="cnn",
                example=lambda: (dict(in_channels=6, latent_dim=16), torch.randn(4, 6, 64)))
class EEGEncoder(nn.Module):
    """Four strided temporal conv blocks, global average pooling, a linear projection.

    Pooling over time makes the encoder indifferent to the window length (any T >= 16).
    """

    def __init__(self, in_channels: int = 30, latent_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.features = nn.Sequential(
            conv_block(in_channels, 64),  # T -> T/2
            conv_block(64, 128),  # -> T/4
            conv_block(128, 256),  # -> T/8
            conv_block(256, 256),  # -> T/16
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(256, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.features(x)).squeeze(-1)  # (B, 256, 1) -> (B, 256)
        return self.proj(self.dropout(h))


@register_model("eeg_cnn_lstm", family="eeg_encoder", option="cnn_lstm",
                example=lambda: (dict(in_channels=6, latent_dim=16, hidden=8), torch.randn(4, 6, 64)))
class EEGEncoderLSTM(nn.Module):
    """Two strided conv blocks, then a 2-layer bidirectional LSTM over the shortened sequence.

    The convs shorten T by 4 before the LSTM, which keeps the recurrent part cheap on long windows.
    """

    def __init__(
        self, in_channels: int = 30, latent_dim: int = 128, hidden: int = 64, dropout: float = 0.1
    ):
        super().__init__()
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.features = nn.Sequential(conv_block(in_channels, 64), conv_block(64, 128))
        self.lstm = nn.LSTM(
            128, hidden, num_layers=2, batch_first=True, bidirectional=True, dropout=dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * hidden, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x).transpose(1, 2)  # (B, 128, T/4) -> (B, T/4, 128)
        out, _ = self.lstm(h)  # (B, T/4, 2*hidden)
        pooled = out.mean(dim=1)  # (B, T/4, 2*hidden) -> (B, 2*hidden)
        return self.proj(self.dropout(pooled))


@register_model("eeg_bands", family="eeg_encoder", option="bands",
                example=lambda: (dict(in_channels=6, latent_dim=16, sample_rate=128.0), torch.randn(4, 6, 64)))
class EEGBandEncoder(nn.Module):
    """Band features as the model's input: log band power per channel in the five canonical bands
    (delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz, capped below Nyquist), then a
    two-layer MLP.

    The power is a Hann-windowed periodogram of each window, averaged over the band's bins;
    differential entropy, the other classical band feature, is ``0.5 log(2 pi e P)`` for a
    Gaussian band signal, an affine function of this log power, so one learned layer covers both.
    It takes the same raw windows as the other encoders (serving and the channel adapter work
    unchanged); ``sample_rate`` is the windows' rate (FACED's, and EAV's after resampling: 250).
    """

    def __init__(self, in_channels: int = 30, latent_dim: int = 128, sample_rate: float = 250.0,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        from emoexp.data.eeg import EEG_BANDS

        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.sample_rate = float(sample_rate)
        nyq = self.sample_rate / 2
        self.bands = [(lo, min(hi, 0.95 * nyq)) for lo, hi in EEG_BANDS.values() if lo < 0.95 * nyq]
        n = in_channels * len(self.bands)
        self.norm = nn.BatchNorm1d(n)  # standardises the features, as the baseline's scaler does
        self.mlp = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, latent_dim))

    def band_power(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, n_bands) log band power."""
        t = x.shape[-1]
        win = torch.hann_window(t, periodic=False, device=x.device, dtype=x.dtype)
        spec = torch.fft.rfft((x - x.mean(-1, keepdim=True)) * win, dim=-1).abs().pow(2)  # (B, C, F)
        freqs = torch.fft.rfftfreq(t, d=1.0 / self.sample_rate).to(x.device)
        mask = torch.stack([(freqs >= lo) & (freqs < hi) for lo, hi in self.bands]).to(x.dtype)  # (n_bands, F)
        mask = mask / mask.sum(-1, keepdim=True).clamp(min=1.0)
        return torch.log(spec @ mask.T + 1e-8)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.norm(self.band_power(x).flatten(1)))
