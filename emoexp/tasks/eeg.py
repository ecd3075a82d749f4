"""EEG entry points of seed 000: pre-train on FACED, fine-tune on EAV (EEG + audio)."""

from __future__ import annotations

import logging
from typing import Any

from emoexp import tracking as T
from emoexp.config import ConfigError, EEGConfig, FinetuneEavConfig, PretrainFacedConfig
from emoexp.tasks.base import Task, register_task

log = logging.getLogger(__name__)

_ENCODERS = {"cnn": "eeg_cnn", "cnn_lstm": "eeg_cnn_lstm"}


class _EEGTask(Task):
    modality = "eeg"
    serving_inputs = ("eeg",)

    def _bundle(self, rec, cfg: EEGConfig, policy, dataset: str, extra_info: dict[str, Any] | None = None):
        """Recordings -> subject- (or trial-) split window datasets, in one place for EEG tasks."""
        import numpy as np

        from emoexp.data.base import DataBundle
        from emoexp.data.eeg import WindowDataset
        from emoexp.data.splits import split_subjects, split_trials

        with_audio = bool(getattr(cfg, "use_audio", False))
        kw = dict(window_size=cfg.window_size, stride=cfg.stride, target_key="emotion", with_audio=with_audio)
        if cfg.split == "subject":
            sp = split_subjects(rec.subject_ids, val_fraction=cfg.val_fraction,
                                test_fraction=cfg.test_fraction, seed=cfg.seed)
            sides = {"train": (sp.train, None), "val": (sp.val, None), "test": (sp.test, None)}
            split = sp.to_dict()
        else:
            trials = split_trials({s: rec.trial_labels[s] for s in rec.subject_ids},
                                  val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                  seed=cfg.seed)
            sides = {side: (list(t), t) for side, t in trials.items()}
            split = {"scheme": "trial", **{side: {s: [int(i) for i in idx] for s, idx in t.items()}
                                           for side, t in trials.items()}}
        ds = {}
        for side, (subjects, trials) in sides.items():
            ds[side] = WindowDataset(rec, subjects, trials=trials, **kw) if subjects else None
        if ds["train"] is None or len(ds["train"]) == 0 or ds["val"] is None or len(ds["val"]) == 0:
            raise ConfigError(
                f"{cfg.data_dir}: the {cfg.split} split left no training or validation windows "
                f"({len(rec.subject_ids)} subjects, window_size {cfg.window_size}); "
                "add subjects, shrink window_size, or use split=trial"
            )
        train = ds["train"]
        example_batch = train.__getitems__([0, min(1, len(train) - 1)])
        example = {"eeg": example_batch["eeg"].numpy().astype(np.float32)}
        info = {
            "dataset": dataset,
            "source": str(cfg.data_dir),
            "n_subjects": len(rec.subject_ids),
            "n_channels": rec.n_channels,
            "channel_names": list(rec.channel_names) if rec.channel_names else None,
            "sample_rate": float(rec.sample_rate),
            "window_size": cfg.window_size,
            **(extra_info or {}),
        }
        if with_audio:
            info["audio_window"] = int(example_batch["audio"].shape[-1])
            n = int(round(cfg.window_size / rec.sample_rate * cfg.audio_sample_rate))
            # The served model takes the window's waveform; the example is quiet noise of that length.
            rng = np.random.default_rng(0)
            example["audio"] = (0.01 * rng.standard_normal((2, n))).astype(np.float32)
        return DataBundle(
            train=train, val=ds["val"], test=ds["test"],
            heads={"emotion": list(rec.class_names)},
            train_targets=train.targets, split=split, input_example=example, info=info,
            skipped_files=list(policy.skipped),
        )

    def build_model(self, cfg: EEGConfig, info: dict[str, Any]):
        from emoexp.models import build_multimodal_net

        encoder = info.get("encoder", cfg.encoder)
        in_ch = int(info.get("encoder_in_channels", info["n_channels"]))
        modalities: dict[str, dict] = {
            "eeg": {"model": _ENCODERS[encoder], "in_channels": in_ch, "latent_dim": cfg.latent_dim}
        }
        if getattr(cfg, "use_audio", False):
            modalities["audio"] = {"model": "audio_mfcc", "n_mfcc": cfg.n_mfcc, "latent_dim": cfg.latent_dim}
        adapter = (int(info["n_channels"]), in_ch) if info.get("channel_adapter") == "linear" else None
        return build_multimodal_net(
            modalities=modalities,
            heads={h: len(c) for h, c in info["heads"].items()},
            fusion=getattr(cfg, "fusion", "concat"),
            head_dropout=cfg.dropout,
            channel_adapter=adapter,
        )

    def serving_batch(self, inputs: dict[str, Any], cfg: EEGConfig, info: dict[str, Any]) -> dict:
        import numpy as np
        import torch

        from emoexp.data.eeg import zscore

        if "eeg" not in inputs:
            raise ValueError(f"input needs 'eeg' (windows of shape (C, T) or (B, C, T)); got {sorted(inputs)}")
        eeg = np.asarray(inputs["eeg"], dtype=np.float32)
        if eeg.ndim == 2:
            eeg = eeg[None]  # (C, T) -> (1, C, T)
        n_ch = int(info["n_channels"])
        if eeg.ndim != 3 or eeg.shape[1] != n_ch:
            raise ValueError(f"eeg must be (B, {n_ch}, T) at {info['sample_rate']:g} Hz; got {eeg.shape}")
        if eeg.shape[2] < 16:
            raise ValueError(f"eeg windows need at least 16 samples; got {eeg.shape[2]}")
        if not np.isfinite(eeg).all():
            raise ValueError("eeg holds NaN or infinite values")
        batch = {"eeg": torch.from_numpy(zscore(eeg))}
        if getattr(cfg, "use_audio", False):
            batch.update(_audio_batch(inputs.get("audio"), eeg.shape[0], cfg, info))
        return batch


def _audio_batch(audio, n: int, cfg: FinetuneEavConfig, info: dict[str, Any]) -> dict:
    """Waveforms (B, samples) at audio_sample_rate -> MFCC windows + mask (zeros: no audio)."""
    import numpy as np
    import torch

    from emoexp.data.audio import mfcc

    frames = int(info["audio_window"])
    out = np.zeros((n, cfg.n_mfcc, frames), dtype=np.float32)
    mask = np.zeros(n, dtype=np.float32)
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.shape[0] != n:
            raise ValueError(f"audio has {audio.shape[0]} waveforms for {n} eeg windows")
        for i, wave in enumerate(audio):
            if not np.any(wave):
                continue  # silence stands for "no audio": masked like a listening trial
            m = mfcc(wave, cfg.audio_sample_rate, cfg.n_mfcc)[:, :frames]
            out[i, :, : m.shape[1]] = m
            mask[i] = 1.0
    return {"audio": torch.from_numpy(out), "audio_mask": torch.from_numpy(mask)}


@register_task
class PretrainFaced(_EEGTask):
    name = "pretrain_faced"
    dataset = "faced"
    registered_model = "emoexp-eeg-encoder"
    config_cls = PretrainFacedConfig
    summary = "Pre-train the EEG encoder on FACED (9 emotions or 3 valence classes)."

    def build_data(self, cfg: PretrainFacedConfig):
        from emoexp.data.base import BadFilePolicy
        from emoexp.data.faced import load_faced

        policy = BadFilePolicy(cfg.on_bad_file)
        rec = load_faced(cfg.data_dir, channels=cfg.channels, label_scheme=cfg.label_scheme,
                         cache_dir=cfg.cache_dir or None, on_bad_file=policy,
                         max_subjects=cfg.max_subjects or None)
        return self._bundle(rec, cfg, policy, "faced", {"encoder": cfg.encoder})

    def prepare(self, cfg: PretrainFacedConfig) -> PretrainFacedConfig:
        if cfg.encoder == "auto":
            import dataclasses

            cfg = dataclasses.replace(cfg, encoder="cnn")
        return cfg


@register_task
class FinetuneEav(_EEGTask):
    name = "finetune_eav"
    dataset = "eav"
    registered_model = "emoexp-eeg"
    config_cls = FinetuneEavConfig
    summary = "Fine-tune on EAV (5 emotions) from a pretrained encoder, optionally fusing audio."

    def __init__(self) -> None:
        self._pretrained: dict[str, dict] = {}

    def _load_pretrained(self, uri: str) -> dict:
        from emoexp.checkpoints import load_from_uri

        if uri not in self._pretrained:
            self._pretrained[uri] = load_from_uri(uri)
        return self._pretrained[uri]

    def prepare(self, cfg: FinetuneEavConfig) -> FinetuneEavConfig:
        import dataclasses

        if cfg.encoder == "auto":
            kind = "cnn"
            if _has_pretrained(cfg):
                kind = self._load_pretrained(cfg.pretrained)["info"].get("encoder", "cnn")
            cfg = dataclasses.replace(cfg, encoder=kind)
        return cfg

    def build_data(self, cfg: FinetuneEavConfig):
        from emoexp.data.base import BadFilePolicy
        from emoexp.data.eav import load_eav

        policy = BadFilePolicy(cfg.on_bad_file)
        rec = load_eav(cfg.data_dir, condition=cfg.condition, sample_rate=cfg.sample_rate,
                       use_audio=cfg.use_audio, audio_sample_rate=cfg.audio_sample_rate,
                       n_mfcc=cfg.n_mfcc, cache_dir=cfg.cache_dir or None, on_bad_file=policy,
                       max_subjects=cfg.max_subjects or None)
        extra = {"encoder": cfg.encoder, **self._transfer_info(cfg, rec)}
        return self._bundle(rec, cfg, policy, "eav", extra)

    def _transfer_info(self, cfg: FinetuneEavConfig, rec) -> dict[str, Any]:
        """Decide, explicitly, how EAV's channels meet the pretrained encoder's."""
        if not _has_pretrained(cfg):
            return {"channel_adapter": "none"}
        pre = self._load_pretrained(cfg.pretrained)
        pinfo = pre["info"]
        if pre.get("task") != "pretrain_faced" and "n_channels" not in pinfo:
            raise ConfigError(f"pretrained={cfg.pretrained}: not an EEG encoder checkpoint")
        if pinfo.get("encoder", cfg.encoder) != cfg.encoder:
            raise ConfigError(
                f"pretrained={cfg.pretrained} holds a {pinfo.get('encoder')!r} encoder but encoder="
                f"{cfg.encoder!r}; pass --encoder {pinfo.get('encoder')} (or auto)"
            )
        if int(pre["config"].get("latent_dim", cfg.latent_dim)) != cfg.latent_dim:
            raise ConfigError(f"pretrained latent_dim {pre['config']['latent_dim']} != latent_dim {cfg.latent_dim}")
        src_ch, src_names = int(pinfo["n_channels"]), pinfo.get("channel_names")
        dst_ch, dst_names = rec.n_channels, rec.channel_names
        if cfg.channel_adapter == "identity":
            if src_ch != dst_ch:
                raise ConfigError(
                    f"channel_adapter=identity, but the pretrained encoder takes {src_ch} channels and "
                    f"{cfg.data_dir} has {dst_ch}; use channel_adapter=linear to learn a mapping"
                )
            if src_names and dst_names and list(src_names) != list(dst_names):
                raise ConfigError("channel_adapter=identity, but the montages differ: "
                                  f"{src_names} vs {dst_names}; use channel_adapter=linear")
            if not dst_names:
                log.warning("channel_adapter=identity: %s has no channel names; assuming they match the "
                            "pretrained encoder's %d channels one to one", cfg.data_dir, src_ch)
            return {"channel_adapter": "identity", "encoder_in_channels": src_ch}
        log.info("channel adapter: learned linear mixing %d -> %d channels (%s montage -> pretrained %s)",
                 dst_ch, src_ch, "unknown" if not dst_names else "EAV", pinfo.get("dataset", "encoder"))
        return {"channel_adapter": "linear", "encoder_in_channels": src_ch,
                "pretrained_channel_names": src_names}

    def init_from_pretrained(self, model, cfg: FinetuneEavConfig, info: dict[str, Any]) -> dict[str, str]:
        if not _has_pretrained(cfg):
            return {}
        from emoexp.models import load_encoder_state

        pre = self._load_pretrained(cfg.pretrained)
        prefix = "encoders.eeg."
        state = {k[len(prefix):]: v for k, v in pre["model"].items() if k.startswith(prefix)}
        if not state:
            raise ConfigError(f"pretrained={cfg.pretrained}: the checkpoint holds no EEG encoder weights")
        load_encoder_state(model, state, "eeg")
        log.info("loaded the pretrained EEG encoder from %s", cfg.pretrained)
        return {T.TAG_PRETRAINED_FROM: cfg.pretrained, T.TAG_CHANNEL_ADAPTER: info.get("channel_adapter", "none")}


def _has_pretrained(cfg: FinetuneEavConfig) -> bool:
    return bool(cfg.pretrained) and cfg.pretrained.lower() != "none"
