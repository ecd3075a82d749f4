"""A synthetic RAVDESS: acted "utterances" in the real file layout, names and wav format.

Each file is one sentence of a source-filter "voice": a sawtooth glottal source following an F0
contour, a spectral-tilt low-pass, a cascade of four formant resonators whose vowel changes per
syllable, syllable-shaped amplitude envelopes, onset noise bursts ("consonants") and a little
breath noise. It is preceded by 0.5-1.0 s and followed by 0.2-0.5 s of near-silence, as in the
real recordings.

The emotion sets the prosody, relative to the actor's voice:

=========  ========  ======================  ========  ======  ===============================
emotion    F0 shift  F0 contour (range)      loudness  rate    other
=========  ========  ======================  ========  ======  ===============================
neutral    0 st      flat, declining (2 st)  0 dB      3.2 /s
calm       -1 st     flat (1.2 st)           -4 dB     2.7 /s  darker, breathier
happy      +3.5 st   rising (6 st)           +2 dB     3.7 /s  brighter
sad        -2.5 st   falling (3 st)          -7 dB     2.3 /s  dark, breathy, slight tremolo
angry      +2 st     peaked (5 st)           +9 dB     4.0 /s  much brighter, pressed, rough
fearful    +5.5 st   shaky (2.5 st)          +1 dB     4.5 /s  breathy, jitter, 6-8 Hz tremolo
disgust    -2 st     falling (4 st)          +1 dB     2.5 /s  dark, creaky (jitter)
surprised  +7 st     rising (10 st)          +3 dB     2.9 /s  brighter
=========  ========  ======================  ========  ======  ===============================

"strong" intensity moves every effect 1.6x as far from neutral. The actor sets the voice: base
F0 by gender (odd actors male, 100-140 Hz; even female, 180-240 Hz), formant scale, timbre
(tilt, breathiness) and recording gain, so the emotion has to be learnt across voices.
Statement 01 and 02 have different syllable patterns (vowels, lengths, stress). On top of that,
:func:`synth_ravdess` varies how strongly each take is acted, its recording level and its
microphone colour and the room's noise (``acting``, ``level_db_std``, ``channel``, ``room_snr_db``).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoexp.data.io import atomic_write_bytes

# The eight RAVDESS emotions by code (01..08), as emoexp.data.ravdess.RAVDESS_EMOTIONS.
_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
KAGGLE_COPY_FOLDER = "audio_speech_actors_01-24"
FLLR_PAYLOAD = 4044  # bytes of padding in the real files' FLLR chunk
_CONTROL_RATE = 1000  # Hz (about), for the slow signals (F0 contour, envelopes)

# Male vowel formants (F1, F2, F3, F4) in Hz; the actor's formant scale shifts them.
_VOWELS = {
    "a": (730, 1090, 2440, 3400),
    "i": (280, 2250, 2950, 3500),
    "u": (310, 870, 2240, 3300),
    "e": (530, 1840, 2480, 3500),
    "o": (570, 840, 2410, 3300),
    "ae": (660, 1720, 2410, 3400),
    "er": (490, 1350, 1690, 3300),
}
_BANDWIDTHS = (80.0, 100.0, 150.0, 250.0)

# (vowel, relative length, stress) per syllable, loosely after the two RAVDESS sentences.
_STATEMENTS = {
    1: [("i", 1.0, 1.0), ("er", 0.6, 0.5), ("a", 1.1, 0.9), ("i", 0.7, 0.5),
        ("a", 0.8, 0.6), ("er", 0.5, 0.4), ("o", 1.5, 0.8)],            # Kids are talking by the door
    2: [("o", 1.1, 1.0), ("er", 0.6, 0.5), ("i", 1.0, 0.9), ("i", 0.6, 0.5),
        ("a", 0.8, 0.6), ("er", 0.5, 0.4), ("o", 1.5, 0.8)],            # Dogs are sitting by the door
}


@dataclass(frozen=True)
class _Prosody:
    """How an emotion moves the voice away from the actor's neutral delivery."""

    f0_semitones: float   # mean F0 shift
    range_semitones: float  # F0 excursion of the contour
    contour: str          # flat | rising | falling | peaked | shaky
    gain_db: float        # loudness
    rate: float           # syllables per second
    tilt: float           # + brighter (flatter spectrum), - darker
    breath: float         # + breathier
    jitter: float         # relative F0 perturbation
    tremolo: float        # relative 7 Hz amplitude/F0 modulation


_NEUTRAL = _Prosody(0.0, 2.0, "flat", 0.0, 3.2, 0.0, 0.0, 0.004, 0.0)
_PROSODY = {
    "neutral": _NEUTRAL,
    "calm": _Prosody(-1.0, 1.2, "flat", -4.0, 2.7, -0.15, 0.25, 0.003, 0.0),
    "happy": _Prosody(3.5, 6.0, "rising", 2.0, 3.7, 0.2, 0.0, 0.006, 0.0),
    "sad": _Prosody(-2.5, 3.0, "falling", -7.0, 2.3, -0.35, 0.45, 0.008, 0.02),
    "angry": _Prosody(2.0, 5.0, "peaked", 9.0, 4.0, 0.8, -0.15, 0.015, 0.0),
    "fearful": _Prosody(5.5, 2.5, "shaky", 1.0, 4.5, 0.1, 0.35, 0.03, 0.12),
    "disgust": _Prosody(-2.0, 4.0, "falling", 1.0, 2.5, -0.25, 0.1, 0.025, 0.0),
    "surprised": _Prosody(7.0, 10.0, "rising", 3.0, 2.9, 0.15, 0.15, 0.006, 0.0),
}


@dataclass(frozen=True)
class _Voice:
    """An actor's voice: what stays the same across their 60 files."""

    f0: float             # Hz, neutral mean
    formant_scale: float
    tilt: float           # actor's own brightness offset
    breath: float
    gain_db: float        # recording level
    reserve: float = 0.0  # 0..1: how much this actor holds back when acting (with ``acting`` > 0)


def _actor_voice(seed: int, actor: int) -> _Voice:
    rng = np.random.default_rng([seed, actor, 7919])
    male = actor % 2 == 1
    return _Voice(
        f0=float(rng.uniform(100, 140) if male else rng.uniform(180, 240)),
        formant_scale=float(rng.uniform(0.94, 1.06) * (1.0 if male else 1.17)),
        tilt=float(rng.uniform(-0.15, 0.15)),
        breath=float(rng.uniform(-0.1, 0.1)),
        gain_db=float(rng.uniform(-3.0, 3.0)),
        reserve=float(rng.uniform()),
    )


def _scaled(p: _Prosody, k: float) -> _Prosody:
    """Move ``p`` k times as far from neutral (strong intensity: k > 1)."""
    def f(a: float, b: float) -> float:
        return b + k * (a - b)

    n = _NEUTRAL
    return _Prosody(
        f(p.f0_semitones, n.f0_semitones), f(p.range_semitones, n.range_semitones), p.contour,
        f(p.gain_db, n.gain_db), f(p.rate, n.rate), f(p.tilt, n.tilt), f(p.breath, n.breath),
        f(p.jitter, n.jitter), f(p.tremolo, n.tremolo),
    )


def _contour(shape: str, u: np.ndarray) -> np.ndarray:
    """F0 contour over utterance time u in [0, 1], in units of the range (roughly -0.5..0.5)."""
    if shape == "rising":
        return u**2 - 0.35
    if shape == "falling":
        return 0.5 - u
    if shape == "peaked":
        return np.sin(np.pi * np.clip(1.3 * u, 0, 1)) - 0.5
    # flat, shaky: a gentle declination
    return 0.15 - 0.3 * u


def _smooth_noise(rng: np.random.Generator, n: int, sample_rate: float, hz: float) -> np.ndarray:
    """Unit-std noise varying at about ``hz`` (linear interpolation of random knots)."""
    step = max(1, int(sample_rate / hz))
    knots = rng.standard_normal(n // step + 2)
    return np.interp(np.arange(n) / step, np.arange(len(knots)), knots)


def _resonator_cascade(formants: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of four two-pole resonators in series, unit gain at 0 Hz."""
    a = np.array([1.0])
    gain = 1.0
    for f, bw in zip(formants, _BANDWIDTHS):
        f = min(float(f), 0.45 * sample_rate)
        r = np.exp(-np.pi * bw / sample_rate)
        ak = np.array([1.0, -2.0 * r * np.cos(2 * np.pi * f / sample_rate), r * r])
        gain *= ak.sum()
        a = np.convolve(a, ak)
    return np.array([gain]), a


class _NoiseBank:
    """Some seconds of white and high-passed noise; files take random slices of it.

    Drawing fresh Gaussian noise for every file costs more than the rest of its synthesis.
    """

    def __init__(self, seed: int, sample_rate: int, seconds: float = 12.0):
        rng = np.random.default_rng([seed, 0xB0B])
        self.white = rng.standard_normal(int(seconds * sample_rate))
        self.bright = np.diff(self.white, prepend=0.0)       # first difference: +6 dB/octave

    def take(self, rng: np.random.Generator, n: int, bright: bool = False) -> np.ndarray:
        src = self.bright if bright else self.white
        if n > len(src):
            x = rng.standard_normal(n)
            return np.diff(x, prepend=0.0) if bright else x
        start = int(rng.integers(0, len(src) - n + 1))
        return src[start:start + n]


def _to_audio_rate(c: np.ndarray, hop: int, n: int) -> np.ndarray:
    """Linear interpolation of a control signal (one value per ``hop`` samples) to n samples."""
    frac = np.arange(hop) / hop
    out = (np.diff(c)[:, None] * frac[None, :] + c[:-1, None]).reshape(-1)
    return out[:n]


def _mean_square(x: np.ndarray) -> float:
    return float(np.einsum("i,i->", x, x)) / max(1, len(x))   # np.dot would start BLAS threads


def _utterance(
    rng: np.random.Generator, voice: _Voice, p: _Prosody, statement: int, sample_rate: int,
    bank: _NoiseBank,
) -> np.ndarray:
    """One voiced sentence (float64, unnormalised).

    The slow signals (F0 contour, glottal phase, envelopes) are built at a 1 kHz control rate
    and interpolated to the audio rate: a 48 kHz file then costs a dozen full-length array
    operations.
    """
    from scipy.signal import lfilter

    sylls = _STATEMENTS[statement]
    rate = p.rate * rng.uniform(0.93, 1.07)
    lengths = np.array([s[1] for s in sylls]) * rng.uniform(0.85, 1.15, len(sylls))
    lengths *= len(sylls) / rate / lengths.sum()              # seconds per syllable
    # a short gap before each syllable (the filters settle in it, the envelope is 0 there)
    gaps = lengths * rng.uniform(0.12, 0.25, len(sylls))
    starts = np.concatenate([[0.0], np.cumsum(lengths + gaps)[:-1]]) + gaps
    duration = starts[-1] + lengths[-1] + 0.05
    n = int(np.ceil(duration * sample_rate))
    hop = max(1, round(sample_rate / _CONTROL_RATE))          # audio samples per control step
    control_rate = sample_rate / hop
    tc = np.arange(-(-n // hop) + 1) / control_rate           # control times, covering n samples
    u = tc / duration

    # F0 (control rate): mean + contour + stress accents + shake + jitter + tremolo
    semis = p.f0_semitones + rng.normal(0, 0.4) + p.range_semitones * _contour(p.contour, u)
    for (_, _, stress), s0, ln in zip(sylls, starts, lengths):
        mid = s0 + ln / 2
        semis += 0.25 * p.range_semitones * stress * np.exp(-0.5 * ((tc - mid) / (0.3 * ln)) ** 2)
    if p.contour == "shaky":
        semis += 1.5 * _smooth_noise(rng, len(tc), control_rate, 6.0)
    f0 = voice.f0 * 2.0 ** (semis / 12.0)
    f0 *= 1.0 + p.jitter * _smooth_noise(rng, len(tc), control_rate, 60.0)
    trem = p.tremolo * np.sin(2 * np.pi * rng.uniform(6.0, 8.0) * tc + rng.uniform(0, 2 * np.pi))
    f0 *= 1.0 + 0.5 * trem
    # glottal phase in cycles (F0 held for each 1 ms control step)
    phase = rng.uniform() + np.concatenate([[0.0], np.cumsum(f0[:-1]) / control_rate])

    # envelopes (control rate): syllables (raised-cosine attack, sustain, longer decay), bursts
    env = np.zeros(len(tc))
    benv = np.zeros(len(tc))
    for (_, _, stress), s0, ln, g in zip(sylls, starts, lengths, gaps):
        inside = (tc >= s0) & (tc < s0 + ln)
        x = (tc[inside] - s0) / ln
        w = np.minimum(1.0, np.minimum(x / 0.2, (1.0 - x) / 0.35))
        env[inside] = (0.5 - 0.5 * np.cos(np.pi * w)) * (0.6 + 0.4 * stress)
        pre = (tc >= s0 - 0.6 * g) & (tc < s0)
        benv[pre] = np.sin(np.pi * (tc[pre] - (s0 - 0.6 * g)) / (0.6 * g))
    env *= 1.0 + trem

    source = _to_audio_rate(phase, hop, n)
    source -= np.floor(source)                                # sawtooth 0..1: harmonics fall 6 dB/oct
    source -= 0.5

    # spectral tilt: one-pole low-pass, less smoothing = brighter; plus breath noise
    bright = np.clip(0.5 + p.tilt + voice.tilt, 0.0, 1.3)
    pole = float(np.clip(0.97 - 0.35 * bright, 0.3, 0.97))
    breath = np.clip(0.02 + 0.04 * (p.breath + voice.breath), 0.0025, 0.1)
    source += (breath / (1.0 - pole)) * bank.take(rng, n)
    voiced = lfilter([2.0 * (1.0 - pole)], [1.0, -pole], source)

    # vowels: each syllable (with the gap before it) through its own formant cascade
    out = np.empty(n)
    edges = np.clip(((starts - gaps) * sample_rate).astype(int), 0, n)
    edges[0] = 0
    ends = np.concatenate([edges[1:], [n]])
    fscale = voice.formant_scale * (1.0 + 0.03 * p.tilt)      # brighter emotions: formants a bit up
    for (vowel, _, _), a0, a1 in zip(sylls, edges, ends):
        formants = np.asarray(_VOWELS[vowel], dtype=float) * fscale * rng.uniform(0.97, 1.03, 4)
        b, a = _resonator_cascade(formants, sample_rate)
        out[a0:a1] = lfilter(b, a, voiced[a0:a1])
    out *= _to_audio_rate(env, hop, n)

    # consonant-like onset bursts: high-passed noise
    rms = np.sqrt(_mean_square(out)) + 1e-12
    burst = _to_audio_rate(benv, hop, n)
    burst *= bank.take(rng, n, bright=True)
    burst *= 0.2 * rms
    out += burst
    return out


def _file_signal(
    seed: int, actor: int, voice: _Voice, emotion: int, intensity: int, statement: int,
    repetition: int, sample_rate: int, bank: _NoiseBank, acting: float = 0.0, level_db_std: float = 1.0,
    channel: float = 0.0, room_snr_db: float = 0.0,
) -> np.ndarray:
    """The whole recording of one file: silence, utterance, silence (float64 in [-1, 1])."""
    rng = np.random.default_rng([seed, actor, emotion, intensity, statement, repetition])
    # the knobs draw from a stream of their own: at acting 0, level_db_std 1, channel 0 and
    # room_snr_db 0 the files are as before
    extra = np.random.default_rng([seed, actor, emotion, intensity, statement, repetition, 1])
    name = _EMOTIONS[emotion - 1]
    k = 1.6 if intensity == 2 else 1.0
    if acting:   # how strongly this actor acts, and this take
        k *= (1.0 - 0.5 * acting * voice.reserve) * float(extra.uniform(1.0 - acting, 1.0))
    p = _scaled(_PROSODY[name], k)
    y = _utterance(rng, voice, p, statement, sample_rate, bank)
    if channel:  # the take's microphone and room: a first-order tilt, darker (b < 0) or brighter
        b = float(extra.uniform(-0.8, 0.8)) * min(float(channel), 1.0)
        y = np.concatenate([y[:1], y[1:] - b * y[:-1]])
    level_db = -24.0 + p.gain_db + voice.gain_db + rng.normal(0, level_db_std)   # mic distance, take to take
    gain = 10 ** (level_db / 20) / (np.sqrt(_mean_square(y)) + 1e-12)
    peak = gain * max(y.max(), -y.min())
    if peak > 0.95:
        gain *= 0.95 / peak                                   # a careful engineer's gain, no clipping
    lead = int(rng.uniform(0.5, 1.0) * sample_rate)
    tail = int(rng.uniform(0.2, 0.5) * sample_rate)
    x = bank.take(rng, lead + len(y) + tail) * 10 ** (-66 / 20)  # room/preamp noise floor
    y *= gain
    if room_snr_db:  # the room's steady noise (ventilation, street): low-passed, at a take's own SNR
        from scipy.signal import lfilter

        snr = float(extra.uniform(room_snr_db, room_snr_db + 20.0))
        hum = lfilter([0.3], [1.0, -0.7], bank.take(extra, len(x)))
        x += hum * np.sqrt(_mean_square(y) / (_mean_square(hum) + 1e-20) / 10 ** (snr / 10))
    x[lead:lead + len(y)] += y
    return x


def add_fllr_chunk(wav: bytes, payload: int = FLLR_PAYLOAD) -> bytes:
    """Insert a RIFF ``FLLR`` padding chunk before ``data`` (as in the real RAVDESS files)."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE byte string")
    pos = 12
    while pos + 8 <= len(wav):
        cid, size = wav[pos:pos + 4], struct.unpack("<I", wav[pos + 4:pos + 8])[0]
        if cid == b"data":
            chunk = b"FLLR" + struct.pack("<I", payload) + bytes(payload + (payload & 1))
            out = wav[:pos] + chunk + wav[pos:]
            return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]
        pos += 8 + size + (size & 1)
    raise ValueError("no data chunk in the WAVE byte string")


def synth_ravdess(
    out: str | os.PathLike,
    *,
    subjects: int = 24,
    seed: int = 0,
    sample_rate: int = 48000,
    fllr: bool = True,
    kaggle_duplicate: bool = False,
    statements: int = 2,
    repetitions: int = 2,
    acting: float = 1.0,
    level_db_std: float = 6.0,
    channel: float = 1.0,
    room_snr_db: float = 3.0,
) -> Path:
    """Write ``out/Actor_XX/03-01-EE-II-SS-RR-AA.wav`` for actors 1..``subjects`` (<= 24).

    RAVDESS's speech design: per actor neutral (normal intensity only) x ``statements`` x
    ``repetitions``, and the seven other emotions x 2 intensities x the same: 60 files at the
    defaults. 16-bit PCM mono at ``sample_rate`` (48 kHz as the real files); ``fllr`` adds the
    real files' 4044-byte FLLR chunk; ``kaggle_duplicate`` also writes the Kaggle mirror's
    second copy under ``audio_speech_actors_01-24/Actor_XX/``.

    What makes the set harder than clean acted prosody (each 0 / 1.0 / 0 gives the old files):

    * ``acting`` (0..1): how unevenly the emotions are acted. Each file's effects are scaled
      (toward neutral) by U(1 - acting, 1), times the actor's own restraint
      1 - 0.5 * acting * reserve (reserve per actor in 0..1), so some takes barely differ from
      neutral.
    * ``level_db_std``: the take-to-take spread (dB, std) of the recording level (microphone
      distance), on top of the emotion's loudness and the actor's gain.
    * ``channel`` (0..1): each take's microphone/room colour, a first-order tilt
      y[n] = x[n] - b x[n-1] with b ~ U(-0.8, 0.8) * channel (darker or brighter).
    * ``room_snr_db``: the room's steady noise (low-passed white noise over the whole file,
      silences included) at a signal-to-noise ratio drawn per take from U(room_snr_db,
      room_snr_db + 20) dB; 0 = none (only the -66 dB preamp floor).

    The defaults (all 24 actors: 14 training actors, 616 basic6 files, 38 steps per epoch at
    train_speech's default subject split and batch 16; acting 1.0, level_db_std 6, channel 1,
    room_snr_db 3) put the MFCC-statistics baseline (benchmarks/bench_calibration.py) mid-range,
    at a validation macro-F1 of about 0.56 (0.72 without room noise, 0.96 with acting 0 too).
    Room noise lowers the clip statistics much more than the spectrogram model, which learns
    to look past it. The knobs draw from a random stream of their own, so the voices and
    utterances are the same whatever their values.
    """
    import soundfile as sf

    if not 1 <= int(subjects) <= 24:
        raise ValueError(f"subjects must be 1..24 (RAVDESS has 24 actors), not {subjects}")
    if not (1 <= int(statements) <= 2 and 1 <= int(repetitions) <= 2):
        raise ValueError(f"statements and repetitions must be 1 or 2, not {statements}, {repetitions}")
    if int(sample_rate) < 8000:
        raise ValueError(f"sample_rate must be >= 8000 Hz, not {sample_rate}")
    out = Path(out)
    bank = _NoiseBank(seed, int(sample_rate))
    checked = False
    for actor in range(1, int(subjects) + 1):
        voice = _actor_voice(seed, actor)
        folders = [out / f"Actor_{actor:02d}"]
        if kaggle_duplicate:
            folders.append(out / KAGGLE_COPY_FOLDER / f"Actor_{actor:02d}")
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for emotion in range(1, 9):
            for intensity in (1,) if emotion == 1 else (1, 2):
                for statement in range(1, int(statements) + 1):
                    for repetition in range(1, int(repetitions) + 1):
                        x = _file_signal(seed, actor, voice, emotion, intensity, statement,
                                         repetition, int(sample_rate), bank, acting, level_db_std, channel,
                                         room_snr_db)
                        buf = io.BytesIO()
                        sf.write(buf, x.astype(np.float32), int(sample_rate), format="WAV",
                                 subtype="PCM_16")
                        data = buf.getvalue()
                        if fllr:
                            data = add_fllr_chunk(data)
                            if not checked:  # once: libsndfile must still read the spliced file
                                back, sr = sf.read(io.BytesIO(data), dtype="int16")
                                if sr != int(sample_rate) or len(back) != len(x):
                                    raise RuntimeError("the FLLR-spliced wav does not read back")
                                checked = True
                        name = f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.wav"
                        for folder in folders:
                            atomic_write_bytes(folder / name, data)
    return out
