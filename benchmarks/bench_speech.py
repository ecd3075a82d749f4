#!/usr/bin/env python
"""Speech (train_speech): feature extraction and training throughput with the frozen wav2vec2
feature encoder, and what caching its features saves.

Data: a synthetic RAVDESS (``synth_ravdess``, ``--actors`` actors, basic6, 48 kHz files read,
trimmed and resampled to 16 kHz by the task's own ``build_data``), clips of ``--clip-seconds``.

Models (random init, nothing downloaded), per ``--sizes``:

* ``tiny``  the task's default offline wav2vec2 (``TINY_WAV2VEC2``: 64 wide, 2 layers, 32-channel convs)
* ``base``  wav2vec2-base's architecture (``Wav2Vec2Config()`` defaults: 768 wide, 12 layers,
            512-channel convs, ~95 M parameters) as a real ``--wav2vec2-path`` run would load

Measured per size, in one process (ratios within the run):

1. **conv features**   the frozen convolutional feature encoder alone, eval mode: utterances/s
2. **forward**         the whole dual-branch model, eval mode, no cache: utterances/s; and with
                       the cache warm (a second evaluation pass over the same clips, as every
                       epoch's validation pass after the first): "eval speed-up"
3. **training**        ``engine._train_one_epoch`` (the loop ``fit()`` runs: loader, forward,
                       backward, Adam step) at ``--batch-size`` over ``--train-clips`` clips:
   * ``augment``       augment=true (noise, gain, shift): nothing can be cached
   * ``no cache``      augment=false, cache_features=false
   * ``cache cold``    augment=false, cache_features=true, first epoch (fills the cache)
   * ``cache warm``    the same model's next epoch (every clip's conv features reused)
   Reported: utterances/s and the speed-up of ``cache warm`` over ``no cache``.

torch threads: ``--threads`` (default 2). Waits up to ``--wait-load`` s for a quiet machine first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, table, wait_for_load, write_result  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--actors", type=int, default=4, help="synthetic RAVDESS actors (default 4: 176 basic6 clips)")
    p.add_argument("--clip-seconds", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=16, help="the task's default, 16")
    p.add_argument("--sizes", default="tiny,base", help="tiny,base (default both)")
    p.add_argument("--train-clips", type=int, default=64, help="training clips per epoch (default 64)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait-load", type=float, default=0.0, help="wait up to N s for load average < 0.5")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from emoexp import engine
    from emoexp import tracking as T
    from emoexp.config import apply_overrides
    from emoexp.data.synth_speech import synth_ravdess
    from emoexp.tasks import get_task

    torch.set_num_threads(args.threads)
    waited = wait_for_load(args.wait_load, 0.5) if args.wait_load else {}
    task = get_task("train_speech")
    with tempfile.TemporaryDirectory() as tmp:
        root = synth_ravdess(Path(tmp) / "ravdess", subjects=args.actors, seed=0)
        base_cfg = apply_overrides(task.default_config(), {
            "data_dir": str(root), "clip_seconds": args.clip_seconds, "batch_size": args.batch_size,
            "augment": False, "split": "random", "val_fraction": 0.1, "test_fraction": 0.1,
            "cache_dir": str(Path(tmp) / "cache"), "lr": 1e-4})
        data = task.build_data(base_cfg)
    n_train = min(args.train_clips, len(data.train))
    keep = np.arange(n_train)
    for attr in ("waves", "utt"):
        setattr(data.train, attr, getattr(data.train, attr)[keep])
    data.train.targets = {h: t[keep] for h, t in data.train.targets.items()}
    data.train_targets = data.train.targets["emotion"]
    waves = torch.from_numpy(np.ascontiguousarray(data.train.waves))
    weights = {c: 1.0 for c in data.class_names}
    print(f"{n_train} training clips of {args.clip_seconds:g} s, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads", flush=True)

    rows, results = [], {}
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if size == "tiny":
            w2v = dict(data.info["wav2vec2"])
        elif size == "base":
            from transformers import Wav2Vec2Config

            w2v = Wav2Vec2Config().to_dict()
        else:
            raise SystemExit(f"unknown size {size!r}; use tiny,base")
        info = {**data.info, "heads": data.heads, "wav2vec2": w2v}

        def build(cache: bool, info=info):
            engine._seed_everything(0)
            cfg = apply_overrides(base_cfg, {"cache_features": cache})
            return cfg, task.build_model(cfg, info)

        cfg, model = build(False)
        n_params = sum(p.numel() for p in model.parameters())
        model.eval()
        bs = args.batch_size
        with torch.no_grad():
            model.wav2vec2.feature_extractor(waves[:2])  # warm-up
            t0 = time.perf_counter()
            for i in range(0, n_train, bs):
                model.wav2vec2.feature_extractor(waves[i:i + bs])
            conv_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(0, n_train, bs):
                model({"waveform": waves[i:i + bs]})
            fwd_s = time.perf_counter() - t0

        def epoch(cfg, model, k: int, augment: bool, info=info) -> tuple[float, float]:
            data.train.augment = augment
            opt = getattr(model, "_bench_opt", None) or engine._optimizer(cfg, model)
            model._bench_opt = opt
            with Contention() as busy:
                m = engine._train_one_epoch(task, cfg, model, opt, data, weights, "emotion",
                                            task.head_loss_weights(cfg, info), torch.device("cpu"), k, 9)
            return m[T.M_SAMPLES_PER_S], busy.foreign

        # evaluation passes (validation runs every epoch): the same model, cache filled, reused
        cfg_e, model_e = build(True)
        model_e.eval()
        utt = torch.arange(n_train)
        with torch.no_grad():
            passes = []
            for _ in range(2):  # cold (fills), warm (reuses)
                t0 = time.perf_counter()
                for i in range(0, n_train, bs):
                    model_e({"waveform": waves[i:i + bs], "utt": utt[i:i + bs]})
                passes.append(time.perf_counter() - t0)
        fwd_warm_s = passes[1]

        train = {}
        cfg, model = build(False)
        train["augment"] = epoch(cfg, model, 1, True)
        train["no cache"] = epoch(cfg, model, 2, False)
        cfg_c, model_c = build(True)
        train["cache cold"] = epoch(cfg_c, model_c, 1, False)
        train["cache warm"] = epoch(cfg_c, model_c, 2, False)
        speedup = train["cache warm"][0] / train["no cache"][0]
        results[size] = {
            "params": n_params, "conv_utt_per_s": _rate(n_train, conv_s), "forward_utt_per_s": _rate(n_train, fwd_s),
            "train_utt_per_s": {k: v[0] for k, v in train.items()},
            "foreign_cpu_share": {k: v[1] for k, v in train.items()},
            "cache_speedup_warm_vs_no_cache": speedup,
            "forward_cached_utt_per_s": _rate(n_train, fwd_warm_s),
            "eval_cache_speedup": fwd_s / fwd_warm_s if fwd_warm_s > 0 else float("nan"),
            "conv_share_of_forward": fwd_s and conv_s / fwd_s,
        }
        rows.append([size, f"{n_params / 1e6:.2f} M", _rate(n_train, conv_s), _rate(n_train, fwd_s),
                     _rate(n_train, fwd_warm_s), fwd_s / fwd_warm_s,
                     *(train[k][0] for k in ("augment", "no cache", "cache cold", "cache warm")), speedup])
        print(table(rows[-1:], _HEADERS), flush=True)

    print()
    print(table(rows, _HEADERS))
    path = write_result("bench_speech", {"args": vars(args), "waited": waited, "train_clips": n_train,
                                         "results": results}, args.out)
    print(f"\nwrote {path}")
    return 0


_HEADERS = ["size", "params", "conv utt/s", "forward utt/s", "fwd cached utt/s", "eval speed-up",
            "train augment", "train no cache",
            "train cache cold", "train cache warm", "warm / no cache"]


if __name__ == "__main__":
    raise SystemExit(main())
