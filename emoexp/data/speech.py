"""Speech clips for ``train_speech``: the training dataset (with waveform augmentation) and EAV's
speaking-trial audio cut into clips.

RAVDESS is read by :mod:`emoexp.data.ravdess`; both sources end up as a :class:`RavdessData`
(fixed-length clips at one sample rate, with labels, speaker and metadata per clip).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from emoexp.data.base import BadFilePolicy, DataError
from emoexp.data.ravdess import SILENCE_PEAK

log = logging.getLogger(__name__)


class WaveformDataset:
    """Clips -> dicts ``{"waveform": (n,) float32, "utt": int64, <head>: int64 ...}``.

    ``utt`` is the clip's index in the whole dataset, the key of the model's frozen-feature cache;
    an augmented clip differs on every draw, so it gets ``utt = -1`` (never cached).
    Augmentation (training only): white noise at ``noise_snr_db`` down to 10 dB lower, a random
    gain within +-``gain_db`` dB, a circular time shift within +-``shift_seconds``.
    """

    def __init__(self, waves: np.ndarray, targets: dict[str, np.ndarray], utt: np.ndarray, *,
                 sample_rate: int, augment: bool = False, noise_snr_db: float = 20.0,
                 gain_db: float = 6.0, shift_seconds: float = 0.3, seed: int = 0):
        self.waves = waves
        self.targets = {h: np.asarray(t, dtype=np.int64) for h, t in targets.items()}
        self.utt = np.asarray(utt, dtype=np.int64)
        self.sample_rate = int(sample_rate)
        self.augment = augment
        self.noise_snr_db = float(noise_snr_db)
        self.gain_db = float(gain_db)
        self.shift = int(round(float(shift_seconds) * self.sample_rate))
        self.seed = int(seed)
        self._draws = 0

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> dict:
        import torch

        wave = np.asarray(self.waves[i], dtype=np.float32)
        utt = int(self.utt[i])
        if self.augment:
            wave = self._augment(wave, torch.randint(0, 2**31 - 1, ()).item())
            utt = -1
        item = {"waveform": torch.from_numpy(np.ascontiguousarray(wave)), "utt": torch.tensor(utt)}
        for head, t in self.targets.items():
            item[head] = torch.tensor(t[i])
        return item

    def _augment(self, wave: np.ndarray, seed: int) -> np.ndarray:
        # Drawn from torch's generator (seeded by the engine), so runs with one seed repeat.
        rng = np.random.default_rng(seed)
        if self.shift:
            wave = np.roll(wave, int(rng.integers(-self.shift, self.shift + 1)))
        wave = wave * np.float32(10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0))
        power = float(np.mean(wave**2))
        if power > 0:
            snr = rng.uniform(self.noise_snr_db - 10.0, self.noise_snr_db)
            wave = wave + rng.standard_normal(wave.shape).astype(np.float32) * np.float32(
                np.sqrt(power / 10.0 ** (snr / 10.0)))
        return wave.astype(np.float32, copy=False)


def eav_speech_clips(
    data_dir: str | os.PathLike, *, sample_rate: int = 16000, clip_seconds: float = 3.0,
    policy: BadFilePolicy | None = None, max_subjects: int = 0,
):
    """EAV's speaking-trial wavs (``subject*/Audio/NNN_Trial_NN_Speaking_<Emotion>.wav``) cut into
    back-to-back ``clip_seconds`` clips (silent clips dropped) -> :class:`RavdessData`.

    The label comes from the file name; the speaker is the subject. EAV records no gender, so
    ``gender`` is -1 and there is no gender head.
    """
    from tqdm.auto import tqdm

    from emoexp.data import audio
    from emoexp.data.eav import EAV_CLASSES, find_eav_subjects, parse_eav_media_name
    from emoexp.data.ravdess import RavdessData

    policy = policy or BadFilePolicy()
    subjects = find_eav_subjects(data_dir)
    if max_subjects:
        subjects = subjects[: int(max_subjects)]
    size = int(round(clip_seconds * sample_rate))
    waves, labels, actors, paths = [], [], [], []
    files = [(n, p) for n, folder in subjects for p in sorted((folder / "Audio").glob("*.wav"))
             if (folder / "Audio").is_dir()]
    if not files:
        raise DataError(data_dir, "no subject*/Audio/*.wav files: EAV speech needs the Audio folders")
    for n, path in tqdm(files, desc="EAV audio", unit="file", disable=None):
        try:
            _, condition, emotion = parse_eav_media_name(path)
        except DataError as e:
            policy.bad(path, e.problem)
            continue
        if condition != "speaking":
            continue  # listening trials' audio is the stimulus, not the subject's voice
        if emotion not in EAV_CLASSES:
            policy.bad(path, f"unknown emotion {emotion!r}; expected one of {EAV_CLASSES}")
            continue
        try:
            wave, sr = audio.read_wav(path)
            mono = audio.resample(audio.to_mono(wave), sr, sample_rate)
        except DataError as e:
            policy.bad(path, e.problem)
            continue
        if not np.all(np.isfinite(mono)):
            policy.bad(path, "audio holds NaN or infinite samples")
            continue
        kept = 0
        for start in range(0, max(len(mono) - size, 0) + 1, size):
            clip = mono[start:start + size]
            if len(clip) < size // 2 or np.max(np.abs(clip)) < SILENCE_PEAK:
                continue
            waves.append(np.pad(clip, (0, size - len(clip))).astype(np.float32))
            labels.append(EAV_CLASSES.index(emotion))
            actors.append(n)
            paths.append(f"{path}#{start / sample_rate:.2f}s")
            kept += 1
        if not kept:
            policy.bad(path, f"no clip of {clip_seconds:g} s with sound (silent or shorter than {clip_seconds / 2:g} s)")
    if not waves:
        raise DataError(data_dir, "no usable speaking-trial audio clips")
    n = len(waves)
    return RavdessData(
        waves=np.stack(waves), lengths=np.full(n, size), labels=np.asarray(labels, dtype=np.int64),
        class_names=list(EAV_CLASSES), actor=np.asarray(actors), gender=np.full(n, -1, dtype=np.int64),
        intensity=np.full(n, "n/a"), statement=np.zeros(n, dtype=int), paths=paths, n_duplicates=0,
        sample_rate=int(sample_rate), skipped=list(policy.skipped),
    )
