"""EEG windows as token sequences a language model reads (seed 004).

A window (32 channels x ``window_size`` samples) becomes tokens in four steps, the same in
training and serving (:func:`tokenize`):

1. z-score per channel: ``normalize=train`` with the training split's per-channel mean and
   standard deviation (stored with the model, so a served window is scaled as in training;
   differences in power between trials survive) | ``segment``: each window by its own statistics;
2. keep every ``downsample``-th sample (plain decimation, no low-pass filter: the amplitude
   distribution of faster rhythms survives as aliases, and the sequence is ``downsample`` times
   shorter);
3. quantize every amplitude into one of ``num_bins`` symbols with bin edges fitted on the
   training split only (:func:`fit_bin_edges`): ``uniform`` bins between the 0.5th and 99.5th
   percentiles (outer bins open-ended) | ``quantile`` bins holding equal shares of the training
   amplitudes;
4. lay the symbols out channel by channel, each channel's row introduced by its marker:
   ``BOS, <Fp1>, s, s, ..., <AF3>, s, s, ..., <O2>, s, ...``.

The token ids of the markers and symbols are a :class:`TokenMap`:

* with no tokenizer (the tiny random Llama), the model's own vocabulary: 0 BOS, 1..32 the
  channel markers, 33.. the ``num_bins`` symbols;
* with a pretrained model's tokenizer, existing vocabulary (nothing is added, so the embedding
  matrix keeps its size and LoRA needs no new rows): symbol ``k`` is the single token for the
  ``k``-th capital letter (``A`` lowest amplitude ... ``P`` for 16 bins; up to 26 bins), a channel
  marker is the tokenization of `` Fp1:`` (a few tokens), and BOS is the tokenizer's own.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emoexp.data.deap import DEAP_EEG_CHANNELS

NORMALIZE_MODES = ("train", "segment")
QUANTIZATION_MODES = ("uniform", "quantile")


@dataclass
class TokenMap:
    """Token ids for BOS, each channel's marker and each amplitude symbol."""

    bos: list[int]
    channels: list[list[int]]
    symbols: list[int]
    vocab_size: int                       # the tiny model's vocabulary; a pretrained model's otherwise
    source: str = "own vocabulary"

    def to_dict(self) -> dict[str, Any]:
        return {"bos": self.bos, "channels": self.channels, "symbols": self.symbols,
                "vocab_size": self.vocab_size, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenMap:
        return cls(bos=[int(i) for i in d["bos"]], channels=[[int(i) for i in c] for c in d["channels"]],
                   symbols=[int(i) for i in d["symbols"]], vocab_size=int(d["vocab_size"]),
                   source=str(d.get("source", "")))

    def layout(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(template (L,) int64 with markers in place, slots (C, steps) positions of the symbols)."""
        parts, slots, pos = [np.asarray(self.bos, dtype=np.int64)], [], len(self.bos)
        for marker in self.channels:
            parts.append(np.asarray(marker, dtype=np.int64))
            pos += len(marker)
            slots.append(np.arange(pos, pos + steps))
            parts.append(np.zeros(steps, dtype=np.int64))
            pos += steps
        return np.concatenate(parts), np.stack(slots)


def own_token_map(num_bins: int, channels: list[str] | None = None) -> TokenMap:
    """The tiny model's vocabulary: 0 BOS, 1..C channel markers, then the symbols."""
    n_ch = len(channels or DEAP_EEG_CHANNELS)
    return TokenMap(bos=[0], channels=[[1 + c] for c in range(n_ch)],
                    symbols=list(range(1 + n_ch, 1 + n_ch + num_bins)), vocab_size=1 + n_ch + num_bins)


def tokenizer_token_map(tokenizer, num_bins: int, channels: list[str] | None = None) -> TokenMap:
    """Existing tokens of a pretrained tokenizer (see the module docstring); ValueError if it
    lacks single tokens for the symbols."""
    if num_bins > 26:
        raise ValueError(f"num_bins={num_bins}: a pretrained tokenizer maps symbols onto the 26 capital letters")
    unk = getattr(tokenizer, "unk_token_id", None)
    symbols = []
    for letter in string.ascii_uppercase[:num_bins]:
        ids = tokenizer.convert_tokens_to_ids([letter])
        tid = ids[0] if ids else None
        if tid is None or tid == unk:  # not a vocabulary entry as such: accept a one-token encoding
            enc = tokenizer.encode(letter, add_special_tokens=False)
            tid = enc[0] if len(enc) == 1 else None
        if tid is None or tid == unk:
            raise ValueError(f"the tokenizer has no single token for {letter!r}; cannot map {num_bins} symbols")
        symbols.append(int(tid))
    if len(set(symbols)) != len(symbols):
        raise ValueError("the tokenizer maps several capital letters onto one token")
    markers = [[int(i) for i in tokenizer.encode(f" {name}:", add_special_tokens=False)]
               for name in (channels or DEAP_EEG_CHANNELS)]
    if any(not m for m in markers):
        raise ValueError("the tokenizer encodes a channel name as no tokens")
    bos = [int(tokenizer.bos_token_id)] if getattr(tokenizer, "bos_token_id", None) is not None else []
    return TokenMap(bos=bos, channels=markers, symbols=symbols, vocab_size=int(len(tokenizer)),
                    source=f"{type(tokenizer).__name__}: symbols A.., channel markers ' Name:'")


def fit_bin_edges(values: np.ndarray, num_bins: int, mode: str = "uniform") -> np.ndarray:
    """(num_bins - 1,) increasing inner bin edges from training amplitudes (already z-scored)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if num_bins < 2 or not v.size:
        raise ValueError(f"need num_bins >= 2 and some finite training amplitudes (num_bins={num_bins})")
    if mode == "uniform":
        lo, hi = np.percentile(v, [0.5, 99.5])
        edges = np.linspace(lo, hi, num_bins + 1)[1:-1]
    elif mode == "quantile":
        edges = np.quantile(v, np.linspace(0.0, 1.0, num_bins + 1)[1:-1])
    else:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATION_MODES)}, not {mode!r}")
    # ties (a quantized source, constant channels) would leave empty bins: nudge them apart
    return np.maximum.accumulate(edges + np.arange(len(edges)) * 1e-9)


@dataclass
class Tokenizer:
    """Everything :func:`tokenize` needs, JSON-able for the checkpoint's ``info``."""

    mean: np.ndarray          # (C,) per-channel training mean (normalize=train)
    std: np.ndarray           # (C,)
    edges: np.ndarray         # (num_bins - 1,)
    token_map: TokenMap
    window_size: int
    downsample: int
    normalize: str = "train"

    @property
    def steps(self) -> int:
        return -(-self.window_size // self.downsample)

    @property
    def seq_len(self) -> int:
        return len(self._template)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "edges": self.edges.tolist(),
                "token_map": self.token_map.to_dict(), "window_size": self.window_size,
                "downsample": self.downsample, "normalize": self.normalize}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        return cls(mean=np.asarray(d["mean"], dtype=np.float32), std=np.asarray(d["std"], dtype=np.float32),
                   edges=np.asarray(d["edges"], dtype=np.float32), token_map=TokenMap.from_dict(d["token_map"]),
                   window_size=int(d["window_size"]), downsample=int(d["downsample"]),
                   normalize=str(d.get("normalize", "train")))

    def __post_init__(self) -> None:
        self._template, self._slots = self.token_map.layout(self.steps)
        self._symbols = np.asarray(self.token_map.symbols, dtype=np.int64)

    def scale(self, x: np.ndarray) -> np.ndarray:
        """(..., C, T) raw microvolts -> z-scored float32 (step 1)."""
        x = np.asarray(x, dtype=np.float32)
        if self.normalize == "segment":
            mu = x.mean(axis=-1, keepdims=True)
            sd = x.std(axis=-1, keepdims=True)
        else:
            mu, sd = self.mean[:, None], self.std[:, None]
        return (x - mu) / (sd + np.float32(1e-6))

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """(C, window_size) or (B, C, window_size) -> (L,) or (B, L) int64 token ids."""
        x = np.asarray(windows)
        single = x.ndim == 2
        if single:
            x = x[None]
        z = self.scale(x)[..., :: self.downsample]
        q = np.searchsorted(self.edges, z)                      # (B, C, steps) in [0, num_bins)
        out = np.broadcast_to(self._template, (len(x), len(self._template))).copy()
        out[:, self._slots] = self._symbols[q]
        return out[0] if single else out


def cut_windows(trials: np.ndarray, pairs: np.ndarray, size: int) -> np.ndarray:
    """(n, C, T) trials and (trial, start) pairs -> (len(pairs), C, size) float32 windows (a copy)."""
    return np.stack([trials[t, :, s: s + size] for t, s in np.asarray(pairs).reshape(-1, 2)]).astype(np.float32, copy=False)


def channel_stats(trials: np.ndarray, rows: np.ndarray, sample: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over a seeded sample of at most ``sample`` of the trials ``rows``
    of a (n, C, T) array (only the sampled trials are copied)."""
    rows = np.asarray(rows)
    idx = rows[np.random.default_rng(seed).permutation(len(rows))[:sample]]
    x = np.asarray(trials[np.sort(idx)], dtype=np.float64)
    return x.mean(axis=(0, 2)).astype(np.float32), x.std(axis=(0, 2)).astype(np.float32)


class EEGTokenDataset(torch.utils.data.Dataset):
    """Windows ``(trial, start)`` of a (n, C, T) trial array, read as token sequences.

    Items: ``tokens`` (L,) int64 and one int64 target per head (the trial's class).
    """

    def __init__(self, trials: np.ndarray, index: np.ndarray, targets: dict[str, np.ndarray], tokenizer: Tokenizer):
        self.trials = trials
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 2)
        self.targets = {h: np.asarray(t, dtype=np.int64) for h, t in targets.items()}  # per trial
        self.tokenizer = tokenizer
        self.meta: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.index)

    def window(self, i: int) -> np.ndarray:
        return cut_windows(self.trials, self.index[i], self.tokenizer.window_size)[0]

    def head_targets(self, head: str) -> np.ndarray:
        """Per-window targets of ``head`` (N,)."""
        return self.targets[head][self.index[:, 0]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"tokens": torch.from_numpy(self.tokenizer(self.window(i)))}
        trial = int(self.index[i, 0])
        for head, t in self.targets.items():
            item[head] = torch.tensor(int(t[trial]), dtype=torch.int64)
        return item
