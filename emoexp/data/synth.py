"""Small synthetic datasets in the real on-disk formats, with a planted class signal.

They exercise the real loaders end to end (no special code path) and are learnable: a few EEG
channels carry an oscillation whose frequency depends on the class, so a small CNN trained on
some subjects beats chance on held-out ones within a few epochs. Everything else is 1/f noise.

The EEG generators live here, the others in ``synth_faces``, ``synth_speech`` and
``synth_posture``; :func:`emoexp.data.registry.synthesize` finds each format's generator.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emoexp.data import py2pickle
from emoexp.data.deap import (
    DEAP_BASELINE_SAMPLES,
    DEAP_CHANNELS,
    DEAP_EEG_CHANNELS,
    DEAP_SAMPLE_RATE,
)
from emoexp.data.eav import EAV_CLASSES, EAV_N_CHANNELS, EAV_SAMPLE_RATE
from emoexp.data.faced import (
    FACED_CHANNELS,
    FACED_CLIP_EMOTION,
    FACED_EEG_CHANNELS,
    FACED_SAMPLE_RATE,
)

# FACED channels carrying the class oscillation (midline, central and occipital sites).
FACED_PLANT_CHANNELS = [FACED_EEG_CHANNELS.index(c) for c in ("FZ", "CZ", "C3", "C4", "PZ", "OZ", "O1", "O2")]
# EAV channel names are unknown; any fixed 8 of the 30 do.
EAV_PLANT_CHANNELS = [2, 5, 9, 12, 15, 20, 24, 28]


def faced_plant_frequency(emotion: int) -> float:
    """Hz of the oscillation planted for FACED emotion ``emotion`` (5 .. 25 Hz)."""
    return 5.0 + 2.5 * emotion


def eav_plant_frequency(emotion: int) -> float:
    """Hz of the oscillation planted for EAV class ``emotion`` (6 .. 22 Hz)."""
    return 6.0 + 4.0 * emotion


def pink_noise(rng: np.random.Generator, shape: tuple[int, ...], sample_rate: float, std: float) -> np.ndarray:
    """Noise with a 1/f power spectrum along the last axis, scaled to ``std`` (float64)."""
    n = shape[-1]
    spectrum = np.fft.rfft(rng.standard_normal(shape), axis=-1)
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    # amplitude 1/sqrt(f) -> power 1/f; below 1 Hz kept flat so the drift stays bounded
    spectrum *= 1.0 / np.sqrt(np.maximum(freqs, 1.0))
    x = np.fft.irfft(spectrum, n=n, axis=-1)
    x *= std / x.std(axis=-1, keepdims=True)
    return x


def class_topography(emotion: int, n_channels: int, strength: float) -> np.ndarray:
    """(n_channels,) gains in [1 - strength, 1] of class ``emotion``'s oscillation over the planted
    channels: a fixed pattern per class, the same for every subject and seed."""
    return 1.0 - strength * np.random.default_rng([0x70F0, emotion]).uniform(0.0, 1.0, size=n_channels)


def _plant(
    x: np.ndarray, emotions: np.ndarray, channels: list[int], freq: Callable[[int], float],
    sample_rate: float, amplitude: float, rng: np.random.Generator, freq_jitter: float = 0.0,
    topography: float = 0.0,
) -> None:
    """Add the class oscillation in place to x (trials, channels, T).

    ``freq_jitter`` (Hz): each subject's class frequencies are off by one shift drawn from
    +-freq_jitter, and each trial's by another +-freq_jitter/4 around it (0: exact frequencies,
    and the random stream of the generators before the jitter existed). ``topography`` (0..1):
    how much the oscillation's strength differs between the channels in a pattern of the class's
    own (the same for every subject), as real emotion effects differ between scalp regions; 0:
    equally strong on every planted channel.
    """
    n_trials, _, n = x.shape
    t = np.arange(n) / sample_rate
    gains = rng.uniform(0.7, 1.3, size=len(channels))           # subject-specific, +-30%
    offsets = rng.uniform(-0.5, 0.5, size=len(channels))        # subject-specific phase lag
    shift = rng.uniform(-freq_jitter, freq_jitter) if freq_jitter else 0.0
    for i in range(n_trials):
        f = freq(int(emotions[i])) + shift
        if freq_jitter:
            f += rng.uniform(-freq_jitter / 4, freq_jitter / 4)
        phase = rng.uniform(0, 2 * np.pi)                        # random per trial/clip
        scale = amplitude * rng.uniform(0.8, 1.2)
        if topography:
            scale = scale * class_topography(int(emotions[i]), len(channels), topography)
        # (channels, 1) x (1, T) -> (channels, T)
        x[i, channels] += (scale * gains)[:, None] * np.sin(
            2 * np.pi * f * t[None, :] + phase + offsets[:, None]
        )


def synth_faced(
    out: str | os.PathLike, *, subjects: int = 8, seed: int = 0, n_samples: int = 2500,
    amplitude: float = 8.0, freq_jitter: float = 0.5, topography: float = 0.9,
) -> Path:
    """Write ``out/Processed_data/sub000.pkl ...``: each a pickled float64 (28, 32, n_samples).

    ``amplitude`` (uV, against noise of std 15) sets how easy the planted signal is: lower is
    harder, which makes hyperparameters matter (sweeps, benchmarks). ``freq_jitter`` and
    ``topography``: see :func:`_plant` (0 and 0: the same exact frequency, equally strong on every
    planted channel, for every subject).

    The defaults are calibrated (benchmarks/bench_calibration.py): 8 subjects of 10 s clips give
    the default split (4 / 2 / 2 subjects) 28 steps of batch 32 per epoch and 48 validation
    windows per class; log band power + logistic regression reaches a validation macro-F1 of
    about 0.57 (nine classes in five bands: only the class's channel pattern and the band's edges
    tell classes of one band apart), the CNN encoder about 0.68 after 6 epochs.
    """
    out = Path(out)
    folder = out / "Processed_data"
    folder.mkdir(parents=True, exist_ok=True)
    emotions = np.asarray(FACED_CLIP_EMOTION)
    for s in range(subjects):
        rng = np.random.default_rng([seed, s])
        x = pink_noise(rng, (len(FACED_CLIP_EMOTION), len(FACED_CHANNELS), n_samples),
                       FACED_SAMPLE_RATE, std=15.0)
        # mastoids A2, A1 (indices 30, 31) stay plain noise
        _plant(x, emotions, FACED_PLANT_CHANNELS, faced_plant_frequency, FACED_SAMPLE_RATE,
               amplitude=amplitude, rng=rng, freq_jitter=freq_jitter, topography=topography)
        with open(folder / f"sub{s:03d}.pkl", "wb") as f:
            pickle.dump(x, f)
    return out


def _eav_media_stem(trial: int, condition: str, emotion: int) -> str:
    # Trial_MM restarts at 01 in every block of 20 trials, as in the real video names
    return f"{trial:03d}_Trial_{(trial - 1) % 20 + 1:02d}_{condition.capitalize()}_{EAV_CLASSES[emotion].capitalize()}"


def _speech(
    rng: np.random.Generator, emotion: int, n: int, rate: int, actor_pitch: float,
    timbre: np.ndarray,
) -> np.ndarray:
    """A harmonic 'voice' whose pitch and syllable rhythm depend on the class (float64, mono)."""
    t = np.arange(n) / rate
    f0 = (110.0, 150.0, 190.0, 240.0, 300.0)[emotion] * actor_pitch * rng.uniform(0.97, 1.03)
    vibrato = 1.0 + 0.01 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / rate
    voice = sum(w * np.sin((h + 1) * phase) for h, w in enumerate(timbre))
    syllable_rate = (2.0, 2.5, 4.5, 4.0, 1.5)[emotion]
    envelope = np.clip(np.sin(2 * np.pi * syllable_rate * t + rng.uniform(0, 2 * np.pi)), 0, None)
    loudness = (0.5, 0.3, 1.0, 0.8, 0.35)[emotion]
    y = loudness * envelope * voice + 0.02 * rng.standard_normal(n)
    return 0.8 * y / np.max(np.abs(y))


def synth_eav(
    out: str | os.PathLike,
    *,
    subjects: int = 4,
    seed: int = 0,
    trials: int = 20,
    n_samples: int = 10000,
    audio_rate: int = 22050,
    with_audio: bool = True,
    with_video: bool | None = None,
    video_fps: float = 5.0,
    video_size: int = 64,
    amplitude: float = 6.0,
    freq_jitter: float = 1.0,
    topography: float = 0.9,
    voice_spread: float = 0.15,
) -> Path:
    """Write ``out/subject{N}/EEG/...``, ``Audio/`` wavs and ``Video/`` mp4s of the speaking trials.

    Trials alternate listening (odd 1-based number) and speaking (even), in pairs with the same
    emotion; label row = 2 * emotion + (1 if speaking else 0). The loader reads the speaking
    trials' conditions from the media names and infers the listening ones from the label rows,
    or from trial parity when no media are written.

    Videos (``with_video``; None: as ``with_audio``, since the release ships both) are named like
    the real ones (``002_Trial_02_Speaking_Neutral.mp4``), last as long as the trial, and show one
    drawn face per subject (same person, room and camera in every trial) whose expression follows
    the trial's emotion: neutral, sad, angry, happy, and calmness as a slight smile. Like the EEG
    plant, the expressions are strong (1.6-2x the face generator's full expression) so that a
    small CNN learns them in a few epochs. The face drifts a little from frame to frame over
    ``video_fps`` frames per second of ``video_size`` px high, 4:3 frames (the real ones are
    640x480 at 30 fps; tiny ones keep this fast). ``amplitude`` (uV, against EEG noise of std 15)
    sets how strong the planted EEG signal is: 0 leaves the class in the audio and video only;
    ``freq_jitter`` and ``topography`` are :func:`_plant`'s (per-subject frequency shifts, a
    class-specific strength pattern over the channels).

    The defaults are calibrated (benchmarks/README.md, "Calibration"): 4 subjects x 20 trials of
    20 s give 45 optimizer steps an epoch at the default batch size; the log band-power baseline
    scores a validation macro-F1 of about 0.6 and the default CNN, at the README's smoke setting
    (8 epochs, lr 1e-3), climbs past it from about 0.15 after epoch 1.
    """
    import scipy.io
    import soundfile as sf

    if trials < 10 or trials % 10:
        raise ValueError(f"trials must be a positive multiple of 10, not {trials}")
    with_video = with_audio if with_video is None else bool(with_video)
    if with_video and (video_fps <= 0 or int(video_size) < 32):
        raise ValueError(f"video_fps must be > 0 and video_size >= 32, not {video_fps}, {video_size}")
    out = Path(out)
    n_pairs = trials // 2

    def write_video(path: Path, emotion: int, subject: int, trial: int) -> None:
        """One trial's .mp4: the subject's face showing ``emotion``, a little motion and noise."""
        import cv2

        from emoexp.data.synth_faces import canonical_emotion, draw_face

        name = EAV_CLASSES[emotion]
        vrng = np.random.default_rng([seed, subject, trial, 17])
        if name == "calmness":     # no drawn "calm" class: a relaxed face, a slight smile
            drawn, intensity = "happy", vrng.uniform(0.5, 0.7)
        else:
            drawn = canonical_emotion(name)
            intensity = 1.0 if drawn == "neutral" else vrng.uniform(1.6, 2.0)
        h = int(video_size)
        w = h * 4 // 3 + (h * 4 // 3) % 2                     # codecs want even sides
        # the same generator state for every trial of a subject: the same person and room; only
        # the expression (and its strength) differs between trials
        face = draw_face(drawn, h, np.random.default_rng([seed, subject, 0xFACE]), intensity=intensity)
        face = face.astype(np.float32) * vrng.uniform(0.9, 1.1)  # exposure differs per trial
        frame0 = cv2.copyMakeBorder(face, 0, 0, (w - h) // 2, w - h - (w - h) // 2, cv2.BORDER_REPLICATE)
        n_frames = max(1, int(round(n_samples / EAV_SAMPLE_RATE * video_fps)))
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(video_fps), (w, h))
        if not writer.isOpened():
            raise OSError(f"OpenCV could not open a video writer for {path}")
        try:
            for _ in range(n_frames):
                # head motion: +-3 degrees, +-3% scale, +-2 px
                m = cv2.getRotationMatrix2D((w / 2, h / 2), vrng.uniform(-3, 3), vrng.uniform(0.97, 1.03))
                m[:, 2] += vrng.uniform(-2, 2, size=2)
                frame = cv2.warpAffine(frame0, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
                frame = np.clip(frame + vrng.normal(0.0, 3.0, frame.shape), 0, 255).astype(np.uint8)
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()

    for s in range(1, subjects + 1):
        rng = np.random.default_rng([seed, s])
        folder = out / f"subject{s}"
        (folder / "EEG").mkdir(parents=True, exist_ok=True)
        # each emotion gets trials/10 listen+speak pairs, in a shuffled order
        pair_emotion = rng.permutation(np.repeat(np.arange(len(EAV_CLASSES)), n_pairs // len(EAV_CLASSES)))
        emotions = np.repeat(pair_emotion, 2)                   # (trials,)
        speaking = np.tile([0, 1], n_pairs)                     # trial 1 listens, trial 2 speaks
        rows = 2 * emotions + speaking
        x = pink_noise(rng, (trials, EAV_N_CHANNELS, n_samples), EAV_SAMPLE_RATE, std=15.0)
        _plant(x, emotions, EAV_PLANT_CHANNELS, eav_plant_frequency, EAV_SAMPLE_RATE,
               amplitude=amplitude, rng=rng, freq_jitter=freq_jitter, topography=topography)
        # (trials, 30, T) -> (T, 30, trials), the layout of the real .mat files
        eeg = np.ascontiguousarray(x.transpose(2, 1, 0))
        label = np.zeros((2 * len(EAV_CLASSES), trials))
        label[rows, np.arange(trials)] = 1.0
        # both variable names occur in the real release
        key = "seg1" if s % 2 == 1 else "seg"
        scipy.io.savemat(folder / "EEG" / f"subject{s}_eeg.mat", {key: eeg})
        scipy.io.savemat(folder / "EEG" / f"subject{s}_eeg_label.mat", {"label": label})
        if with_audio:
            (folder / "Audio").mkdir(exist_ok=True)
            n_audio = int(round(n_samples / EAV_SAMPLE_RATE * audio_rate))
            actor_pitch = rng.uniform(1.0 - voice_spread, 1.0 + voice_spread)
            timbre = rng.uniform(0.2, 1.0, size=6) / np.arange(1, 7)
            for i in np.flatnonzero(speaking):
                y = _speech(rng, int(emotions[i]), n_audio, audio_rate, actor_pitch, timbre)
                name = _eav_media_stem(i + 1, "speaking", int(emotions[i])) + "_Aud.wav"
                sf.write(folder / "Audio" / name, y, audio_rate, subtype="PCM_16")
        if with_video:
            # own generators (above), so the EEG and audio of a seed do not change with videos
            (folder / "Video").mkdir(exist_ok=True)
            for i in np.flatnonzero(speaking):
                name = _eav_media_stem(i + 1, "speaking", int(emotions[i])) + ".mp4"
                write_video(folder / "Video" / name, int(emotions[i]), s, i + 1)
    return out


DEAP_BAND_HZ = (4.0, 45.0)   # the preprocessed files' EEG band-pass (DEAP's readme)
# DEAP channels whose band power carries the ratings: frontal alpha for valence, central and
# parietal beta for arousal.
DEAP_VALENCE_CHANNELS = [DEAP_EEG_CHANNELS.index(c) for c in ("Fp1", "AF3", "F3", "F7", "Fp2", "AF4", "Fz", "F4", "F8")]
DEAP_AROUSAL_CHANNELS = [DEAP_EEG_CHANNELS.index(c) for c in ("C3", "CP1", "P3", "Pz", "Cz", "C4", "CP2", "P4")]


def synth_deap(
    out: str | os.PathLike, *, subjects: int = 4, seed: int = 0, trials: int = 40, seconds: float = 60.0,
    amplitude: float = 4.0, bandpass: bool = True,
) -> Path:
    """Write ``out/s01.dat ...``: DEAP's preprocessed-python pickles (Python 2 cPickle form), each a dict with
    ``data`` (trials, 40, 384 + seconds*128) float64 and ``labels`` (trials, 4) float64 in [1, 9].

    Valence and arousal ratings are drawn uniformly from [1, 9]; during the trial (not the 3-s
    baseline) the valence rating scales a 9-11 Hz (alpha) oscillation in nine frontal channels and
    the arousal rating an 18-24 Hz (beta) one in eight central/parietal channels, from 0 at
    rating 1 to 2 x ``amplitude`` uV at rating 9, over 1/f noise of 10 uV. Subjects differ in gain.
    With ``bandpass`` (default), the 32 EEG channels are then band-passed 4-45 Hz (zero-phase
    Butterworth), as in DEAP's preprocessed files: the noise below 4 Hz, half the power of the
    1/f spectrum, is gone.

    The default amplitude (4) puts the band-power baseline mid-range: validation macro-F1 0.70 on
    6 subjects x 20 trials x 10 s (benchmarks/bench_calibration.py).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = DEAP_BASELINE_SAMPLES + int(round(seconds * DEAP_SAMPLE_RATE))
    t = np.arange(n - DEAP_BASELINE_SAMPLES) / DEAP_SAMPLE_RATE
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, DEAP_BAND_HZ, btype="bandpass", fs=DEAP_SAMPLE_RATE, output="sos")
    for s in range(subjects):
        rng = np.random.default_rng([seed, s, 4])
        ratings = np.round(rng.uniform(1.0, 9.0, size=(trials, 4)), 2)
        x = pink_noise(rng, (trials, len(DEAP_CHANNELS), n), DEAP_SAMPLE_RATE, std=10.0)
        gain = rng.uniform(0.7, 1.3)
        for i in range(trials):
            for col, chans, band in ((0, DEAP_VALENCE_CHANNELS, (9.0, 11.0)), (1, DEAP_AROUSAL_CHANNELS, (18.0, 24.0))):
                strength = gain * amplitude * (ratings[i, col] - 1.0) / 4.0
                f = rng.uniform(*band)
                phase = rng.uniform(0, 2 * np.pi, size=(len(chans), 1))
                x[i, chans, DEAP_BASELINE_SAMPLES:] += strength * np.sin(2 * np.pi * f * t[None, :] + phase)
        if bandpass:
            eeg = len(DEAP_EEG_CHANNELS)
            x[:, :eeg] = sosfiltfilt(sos, x[:, :eeg], axis=-1)
        # as the real files: a Python 2 cPickle (byte-string keys and buffers), not a Python 3 one
        py2pickle.dump({"data": x, "labels": ratings}, out / f"s{s + 1:02d}.dat")
    return out
