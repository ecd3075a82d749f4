"""Speech emotion model of seed 002: wav2vec2 + context transformer + attention pooling, fused
with a log-mel spectrogram CNN branch, one classifier head per task (e.g. emotion and gender).

Input is the raw waveform at 16 kHz, ``batch["waveform"]`` of shape (B, n). The network is always
*built* from a plain config dict (:data:`TINY_WAV2VEC2`, or :func:`wav2vec2_config` of a local
pretrained directory), so a saved checkpoint can be rebuilt on a machine that lacks the
pretrained directory; pretrained weights are loaded separately by :func:`load_wav2vec2_weights`.
Nothing here ever downloads: only local directories are read.

``transformers`` and ``torchaudio`` are imported inside functions because importing them costs
seconds, and every ``emoexp.models`` user would pay for it otherwise.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from typing import Any

import torch
from torch import Tensor, nn

from emoexp.models.heads import ClassifierHead
from emoexp.models.registry import register_model

# A randomly initialised wav2vec2 small enough for CPU tests (about 0.2 M parameters). The conv
# strides and kernels are wav2vec2's own, so 16 kHz audio still gives 50 frames per second and
# the code paths (group norm on the first conv, post-norm encoder, time masking) are the base
# model's. Values are Wav2Vec2Config keyword arguments: ``Wav2Vec2Config(**TINY_WAV2VEC2)``.
TINY_WAV2VEC2: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "conv_dim": [32, 32, 32, 32, 32, 32, 32],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "num_feat_extract_layers": 7,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    # The base model's positional conv has kernel 128 over 16 groups; 16 over 4 keeps it cheap.
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    # No LayerDrop: skipping one of only two layers at random would make tiny runs needlessly noisy.
    "layerdrop": 0.0,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
}

_EXPECTED = (
    "expected a directory saved by transformers' save_pretrained holding config.json and "
    "model.safetensors/pytorch_model.bin of a Wav2Vec2 model, e.g. facebook/wav2vec2-base "
    "downloaded beforehand"
)
_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def _check_pretrained_dir(path: str, *, need_weights: bool) -> None:
    """Raise ValueError naming ``path`` unless it looks like a saved wav2vec2 directory."""
    if not os.path.isdir(path):
        raise ValueError(f"{path!r}: no such directory; {_EXPECTED}")
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise ValueError(f"{path!r}: has no config.json; {_EXPECTED}")
    try:
        with open(cfg_file, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{path!r}: config.json is not readable JSON ({e}); {_EXPECTED}") from None
    # Checked on the raw file: Wav2Vec2Config.from_pretrained only warns on a foreign model_type
    # and would then build a wav2vec2 that the weights do not fit.
    if model_type != "wav2vec2":
        raise ValueError(
            f"{path!r}: config.json has model_type {model_type!r}, not 'wav2vec2'; {_EXPECTED}"
        )
    if need_weights and not any(os.path.isfile(os.path.join(path, w)) for w in _WEIGHT_FILES):
        raise ValueError(
            f"{path!r}: has no weights file (one of {', '.join(_WEIGHT_FILES)}); {_EXPECTED}"
        )


def wav2vec2_config(path: str = "") -> dict[str, Any]:
    """The wav2vec2 config dict for :class:`SpeechNet`: a copy of :data:`TINY_WAV2VEC2` for
    ``""``, else the config of the local pretrained directory ``path`` (never downloads).

    Raises ValueError naming ``path`` when it is missing, lacks config.json, or is not wav2vec2.
    """
    if not path:
        return copy.deepcopy(TINY_WAV2VEC2)
    path = os.fspath(path)
    _check_pretrained_dir(path, need_weights=False)
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config.from_pretrained(path, local_files_only=True).to_dict()


def load_wav2vec2_weights(net: SpeechNet, path: str) -> None:
    """Copy the pretrained weights of the local directory ``path`` into ``net.wav2vec2``.

    ``net`` should be built from ``wav2vec2_config(path)``; any key or shape that differs raises
    ValueError. Frozen parameters stay frozen, and the feature cache is cleared (the cached
    features were computed with the old weights).
    """
    path = os.fspath(path)
    _check_pretrained_dir(path, need_weights=True)
    from transformers import Wav2Vec2Model

    try:
        pretrained = Wav2Vec2Model.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{path!r}: loading the Wav2Vec2 weights failed ({type(e).__name__}: {e}); {_EXPECTED}"
        ) from None
    state = pretrained.state_dict()
    own = net.wav2vec2.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path!r}: the pretrained wav2vec2 does not fit this SpeechNet (built from a different "
            f"config? build it from wav2vec2_config({path!r})): missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(
            f"{path!r}: {len(bad)} wav2vec2 tensor(s) differ in shape from this SpeechNet's, e.g. {k}: "
            f"{tuple(state[k].shape)} in the directory vs {tuple(own[k].shape)} in the net; build the "
            f"net from wav2vec2_config({path!r})"
        )
    net.wav2vec2.load_state_dict(state, strict=True)  # the load hook also clears the feature cache


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def _tdnn_block(c_in: int, c_out: int, kernel: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel // 2)),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(c_out),
    )


SPEC_ENCODERS = ("tdnn", "cnn")


class SpectrogramBranch(nn.Module):
    """Log-mel spectrogram (n_fft 400 = 25 ms, hop 160 = 10 ms), standardised per utterance, then
    one of two encoders: (B, n) -> (B, out_dim).

    * ``tdnn`` (default): three 1-D convolutions over time with the mel bands as input channels
      (kernels 5, 3, 3; dilations 1, 2, 3; ``4 * width`` channels), then the mean and standard
      deviation of each channel over time (statistics pooling, as in x-vector speaker and emotion
      embeddings). Where energy sits in frequency (spectral tilt, formants) stays visible.
    * ``cnn``: a three-block 2-D CNN and global average pooling over frequency and time. The
      pooling keeps *what* local patterns occur but not at which frequency; checkpoints saved
      before ``spec_encoder`` existed use it.
    """

    def __init__(self, out_dim: int, n_mels: int = 64, sample_rate: int = 16000, width: int = 16,
                 encoder: str = "tdnn"):
        super().__init__()
        import torchaudio.transforms as T

        if encoder not in SPEC_ENCODERS:
            raise ValueError(f"spectrogram encoder must be one of {', '.join(SPEC_ENCODERS)}, not {encoder!r}")
        self.encoder = encoder
        self.mel = T.MelSpectrogram(
            sample_rate=sample_rate, n_fft=400, hop_length=160, n_mels=n_mels
        )
        self.to_db = T.AmplitudeToDB(stype="power", top_db=80.0)
        ch = 4 * width
        if encoder == "tdnn":
            self.cnn = nn.Sequential(
                _tdnn_block(n_mels, 2 * ch, 5, 1), _tdnn_block(2 * ch, 2 * ch, 3, 2), _tdnn_block(2 * ch, 2 * ch, 3, 3)
            )
            self.proj = nn.Linear(4 * ch, out_dim)   # mean and std of 2 * ch channels
        else:
            self.cnn = nn.Sequential(
                _conv_block(1, width), _conv_block(width, 2 * width), _conv_block(2 * width, ch)
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.proj = nn.Linear(ch, out_dim)

    def forward(self, wave: Tensor) -> Tensor:
        # The channel axis goes in *before* AmplitudeToDB: its top_db clamp takes the max over the
        # last three dims, so on (B, M, T) it would clamp against the whole batch's loudest frame
        # and one sample's output would depend on the others.
        spec = self.to_db(self.mel(wave).unsqueeze(1))  # (B, n) -> (B, 1, n_mels, n // 160 + 1)
        mean = spec.mean(dim=(2, 3), keepdim=True)
        std = spec.std(dim=(2, 3), keepdim=True)
        spec = (spec - mean) / (std + 1e-5)
        if self.encoder == "tdnn":
            h = self.cnn(spec.squeeze(1))  # (B, n_mels, T) -> (B, 2 * ch, T)
            return self.proj(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))
        h = self.pool(self.cnn(spec)).flatten(1)  # (B, 4w, M/8, T/8) -> (B, 4w)
        return self.proj(h)


class AttentionPooling(nn.Module):
    """``n_queries`` learned queries, each a softmax over time of the frames; the pooled vectors
    are concatenated and projected: (B, T, D) -> (B, out_dim)."""

    def __init__(self, dim: int, n_queries: int, out_dim: int):
        super().__init__()
        # Small init: every query starts near a plain mean over time.
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.proj = nn.Linear(n_queries * dim, out_dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, h: Tensor) -> Tensor:
        scores = torch.einsum("btd,qd->bqt", h, self.queries) * self.scale  # (B, Q, T)
        pooled = torch.einsum("bqt,btd->bqd", scores.softmax(dim=-1), h)  # (B, Q, D)
        return self.proj(pooled.flatten(1))  # (B, Q * D) -> (B, out_dim)


def _clear_cache_on_load(net: SpeechNet, *_: Any) -> None:
    net.clear_feature_cache()


@register_model(
    "speech_net", family="network",
    example=lambda: (dict(heads={"emotion": 4, "gender": 2}, wav2vec2=wav2vec2_config(), context_layers=1,
                          pool_heads=2, n_mels=16, hidden=16),
                     {"waveform": torch.randn(2, 8000)}),   # 0.5 s at 16 kHz
)
class SpeechNet(nn.Module):
    """The seed-002 dual-branch speech model; ``forward(batch) -> {head: logits (B, n_classes)}``.

    Branch 1: per-utterance normalised waveform -> wav2vec2 (built from the ``wav2vec2`` config
    dict, random weights until :func:`load_wav2vec2_weights`) -> ``context_layers`` transformer
    layers -> attention pooling with ``pool_heads`` queries -> (B, hidden). Branch 2 (if
    ``spec_branch``): :class:`SpectrogramBranch` with ``spec_encoder`` -> (B, hidden). The concatenation, of width
    :attr:`latent_dim`, feeds one :class:`ClassifierHead` (one hidden layer of ``hidden``) per head.

    ``freeze_feature_extractor`` freezes wav2vec2's convolutional feature encoder (as the seed
    recommends "for stability"). With it, setting :attr:`cache_features` and passing
    ``batch["utt"]`` (B,) int64 ids keeps each id's conv features in a plain dict (not in the
    state dict) so later epochs skip the conv stack; ids < 0 (e.g. augmented copies) are never
    cached. An id >= 0 must always name the same audio.

    In eval mode the cache changes nothing: a batch whose ids are all cached, or all new, gives
    bit-identical outputs to the uncached net (evaluation repeats the same batches). Only the
    missing rows of a partly cached batch are computed, as a smaller batch, and a conv kernel may
    round a different batch size differently (a batch of one on CPU does, by ~1e-7).
    """

    def __init__(
        self,
        heads: dict[str, int],
        wav2vec2: dict[str, Any],
        *,
        freeze_feature_extractor: bool = True,
        context_layers: int = 2,
        context_heads: int = 4,
        pool_heads: int = 4,
        spec_branch: bool = True,
        spec_encoder: str = "tdnn",
        n_mels: int = 64,
        sample_rate: int = 16000,
        hidden: int = 256,
        dropout: float = 0.3,
    ):
        super().__init__()
        if not heads:
            raise ValueError("SpeechNet needs at least one head, e.g. {'emotion': 6}")
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        # Kept as given so a checkpoint can store it and rebuild the same network.
        self.wav2vec2_config = copy.deepcopy(dict(wav2vec2))
        self.wav2vec2 = Wav2Vec2Model(Wav2Vec2Config(**self.wav2vec2_config))
        if freeze_feature_extractor:
            self.wav2vec2.freeze_feature_encoder()
        d_model = self.wav2vec2.config.hidden_size
        if context_layers > 0 and d_model % context_heads:
            raise ValueError(
                f"context_heads={context_heads} must divide wav2vec2's hidden_size {d_model}"
            )
        if context_layers > 0:
            layer = nn.TransformerEncoderLayer(
                d_model,
                context_heads,
                dim_feedforward=4 * d_model,
                dropout=0.1,
                activation="gelu",
                batch_first=True,
            )
            # Nested tensors only help with padding masks, which this model never passes.
            self.context: nn.Module = nn.TransformerEncoder(
                layer, context_layers, enable_nested_tensor=False
            )
        else:
            self.context = nn.Identity()
        self.pool = AttentionPooling(d_model, pool_heads, hidden)
        self.spec = (
            SpectrogramBranch(hidden, n_mels=n_mels, sample_rate=sample_rate, encoder=spec_encoder)
            if spec_branch
            else None
        )
        self.latent_dim = hidden * (2 if spec_branch else 1)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {
                name: ClassifierHead(self.latent_dim, n, (hidden,), dropout)
                for name, n in heads.items()
            }
        )

        self._cache_features = False
        # Plain attributes, so none of this enters state_dict(); float16 halves the memory at the
        # cost of outputs no longer matching the uncached ones exactly.
        self._feature_cache: dict[int, Tensor] = {}
        self.cache_dtype = torch.float32
        self.feature_cache_hits = 0
        self.feature_cache_misses = 0
        # New conv weights make cached features stale, whichever module load_state_dict is called
        # on (the net, its wav2vec2, the encoder itself). A partial of a module-level function,
        # unlike a lambda, pickles and deep-copies (the copy's hook then points at the copy).
        self.wav2vec2.feature_extractor.register_load_state_dict_pre_hook(
            functools.partial(_clear_cache_on_load, self)
        )

    # --- feature cache -------------------------------------------------------------------------

    @property
    def feature_encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.wav2vec2.feature_extractor.parameters())

    @property
    def cache_features(self) -> bool:
        return self._cache_features

    @cache_features.setter
    def cache_features(self, value: bool) -> None:
        if value and not self.feature_encoder_frozen:
            raise ValueError(
                "cache_features needs a frozen feature encoder (freeze_feature_extractor=True): "
                "features of a trained encoder change every step"
            )
        self._cache_features = bool(value)

    def clear_feature_cache(self) -> None:
        """Drop every cached feature and reset the hit/miss counters."""
        self._feature_cache.clear()
        self.feature_cache_hits = 0
        self.feature_cache_misses = 0

    def _conv_features(self, wave: Tensor) -> Tensor:
        """wav2vec2's conv feature encoder: (B, n) -> (B, C, T); no graph when frozen."""
        if self.feature_encoder_frozen:
            with torch.no_grad():
                return self.wav2vec2.feature_extractor(wave)
        return self.wav2vec2.feature_extractor(wave)

    def _cached_conv_features(self, wave: Tensor, utt: Tensor) -> Tensor:
        """As :meth:`_conv_features`, computing only the ids >= 0 not yet in the cache."""
        n_frames = int(self.wav2vec2._get_feat_extract_output_lengths(wave.shape[1]))
        ids = [int(u) for u in utt.tolist()]
        rows: list[Tensor | None] = [None] * len(ids)
        todo: list[int] = []
        for i, u in enumerate(ids):
            hit = self._feature_cache.get(u) if u >= 0 else None
            # A stored entry of another length is not this audio (a cropping change): recompute.
            if hit is not None and hit.shape[-1] == n_frames:
                rows[i] = hit.to(wave.device, wave.dtype)
                self.feature_cache_hits += 1
            else:
                todo.append(i)
        if todo:
            fresh = self._conv_features(wave[todo])  # (len(todo), C, T)
            for j, i in enumerate(todo):
                # float32 like the cached rows, also under autocast (fp16 -> fp32 is exact).
                rows[i] = fresh[j].to(wave.dtype)
                if ids[i] >= 0:
                    self._feature_cache[ids[i]] = (
                        fresh[j].detach().to("cpu", self.cache_dtype).clone()
                    )
                    self.feature_cache_misses += 1
        return torch.stack(rows)  # type: ignore[arg-type]  # every row is set above

    # --- forward -------------------------------------------------------------------------------

    def encode_wav2vec2(self, wave: Tensor, utt: Tensor | None = None) -> Tensor:
        """Normalised waveform (B, n) -> wav2vec2's last hidden states (B, T, hidden_size).

        Wav2Vec2Model.forward split in two so the conv part can come from the cache; the rest
        follows transformers' own order (projection, SpecAugment time masking in training mode,
        encoder, optional adapter) for inputs without padding.
        """
        w2v = self.wav2vec2
        if self._cache_features and utt is not None:
            feats = self._cached_conv_features(wave, utt)
        else:
            feats = self._conv_features(wave)
        # (B, C, T) -> (B, T, C) -> projected (B, T, D); the layer-normed features are not needed
        hidden, _ = w2v.feature_projection(feats.transpose(1, 2))
        hidden = w2v._mask_hidden_states(hidden)
        hidden = w2v.encoder(hidden).last_hidden_state
        if w2v.adapter is not None:
            hidden = w2v.adapter(hidden)
        return hidden

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """The fused utterance vector (B, latent_dim), before the heads."""
        wave = batch["waveform"]
        if wave.dim() != 2:
            raise ValueError(f"waveform must be (batch, samples), got shape {tuple(wave.shape)}")
        if wave.shape[1] < 400:
            raise ValueError(
                f"waveform has {wave.shape[1]} samples; wav2vec2 needs at least 400 (25 ms at 16 kHz)"
            )
        wave = wave.float()
        # As Wav2Vec2FeatureExtractor(do_normalize=True): zero mean, unit variance per utterance.
        mean = wave.mean(dim=1, keepdim=True)
        var = wave.var(dim=1, keepdim=True, unbiased=False)
        wave = (wave - mean) / torch.sqrt(var + 1e-7)
        h = self.context(self.encode_wav2vec2(wave, batch.get("utt")))  # (B, T, D)
        parts = [self.pool(h)]
        if self.spec is not None:
            parts.append(self.spec(wave))
        return self.dropout(torch.cat(parts, dim=1))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        z = self.embed(batch)
        return {name: head(z) for name, head in self.heads.items()}
