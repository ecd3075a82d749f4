#!/usr/bin/env python
"""Face training throughput (train_face): the data loader alone vs full training steps, per augmentation.

Data: a synthetic FER2013 (``synth_fer2013(layout="csv")``: 48x48 grey drawn faces with the real
set's class imbalance, ``--n-per-class`` sets the size; 6 classes, the task's default) and, with
``--affectnet``, a synthetic AffectNet (96x96 colour, balanced classes). The task's own
``build_data`` makes the training set (``FaceImageDataset``), so sizes and splits are the task's.

Augmentation settings (the task's own flags):

* ``off``         augment=false: normalisation only, one tensor op per batch
* ``standard``    augment=true: per image, torchvision v2 flip, ColorJitter, RandomPerspective,
                  GaussianBlur, RandomErasing (``FaceImageDataset.__getitems__``)
* ``aggressive``  augment=true balance=true aggressive=true, target_samples = ``--balance-factor``
                  x the largest training class: every class is drawn up to that count, so most
                  drawn images are repeats (``BalancedSampler`` yields them as index + N) and get
                  the aggressive pipeline (+ rotation, hue, stronger jitter/perspective/blur/erasing);
                  the originals still get the standard one. Its epoch is longer (repeats included).

Measured per dataset and setting, interleaved (loader runs next to the training runs of the
same setting, so a burst of other load falls near both sides of a ratio):

1. **loader**    iterate the engine's DataLoader (``engine._loader``: the task's sampler, batch
                 ``--batch-size``, batched ``__getitems__``, persistent_workers=False as in fit,
                 worker start-up included) for ``--epochs`` epochs, no model, with each of
                 ``--workers`` (default 0 and 2) worker processes: images/s.
2. **training**  ``engine._train_one_epoch`` (the loop ``fit()`` runs: loader + forward + backward
                 + AdamW step) for ``--epochs`` epochs per backbone (small_cnn, densenet121; random
                 init, after a 2-batch warm-up), loading with ``--train-workers`` (default 0, the
                 config default): images/s = the engine's ``samples_per_s``. (The engine's pieces,
                 not ``fit()``: validation, checkpoints and the test pass do not count for the rate.)
3. **probe**     per-image cost of the standard and aggressive transforms alone, at the torch
                 thread count and at 1 thread (what a DataLoader worker runs with).

Reported per configuration: loader images/s, training images/s, ratio = loader / training.
Target (issue): the data loader is not the bottleneck: loader rate comfortably above the training
rate, ratio >= 1.5, with the default num_workers=0. With num_workers=0 loading runs inline, so the
training time per image is loading + step and the ratio is 1 + loader/step rate (never below 1).
So the training runs also measure it directly: **data wait** = the share of the training epoch
spent in the DataLoader's ``next()`` (loading and augmenting inline with 0 workers; waiting for
the workers, their start-up included, otherwise). The loader is the slower stage ("slower":
loader) where that share is over 50%; "in-loop loader" = images / time waited, the loader's rate
as the training loop sees it (with 0 workers it can fall far below the loader-alone rate when
other load makes the intra-op threads of the per-image transforms wait). Where the ratio misses
with 0 workers the table says with which of ``--workers`` the loader rate meets it (workers run
beside the training process; on 2 cores they compete with it: ``--train-workers 0,2`` measures
training with them).
Also: aggressive / standard training images/s per backbone ("vs standard").

torch threads: ``--threads`` (default 2), set explicitly and printed; the figures depend on it
heavily on a busy machine (small per-image ops in parallel regions wait for descheduled threads).
Every timing records the share of the CPUs other processes used meanwhile ("other load").
Nothing is asserted. Results: benchmarks/results/bench_face_train.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, loadavg, median, table, verdict, wait_quiet, write_result  # noqa: E402

TARGET_RATIO = 1.5
AUGS = ("off", "standard", "aggressive")
BACKBONES = ("small_cnn", "densenet121")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--n-per-class", type=int, default=60,
                   help="synth_fer2013 n_per_class (default 60: ~350 images, ~280 for training)")
    p.add_argument("--affectnet", action="store_true", help="also a synthetic AffectNet (96x96 colour)")
    p.add_argument("--affectnet-per-class", type=int, default=40,
                   help="synth_affectnet n_per_class (default 40: 6 x 40 images kept)")
    p.add_argument("--backbones", default=",".join(BACKBONES),
                   help="comma-separated (default small_cnn,densenet121)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per loader and training timing (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64, the task's)")
    p.add_argument("--balance-factor", type=float, default=2.0,
                   help="aggressive setting: images per class per epoch = this x the largest "
                        "training class (default 2.0: about 2/3 of the draws are repeats)")
    p.add_argument("--workers", default="0,2",
                   help="num_workers values for the loader timings, comma-separated (default 0,2)")
    p.add_argument("--train-workers", default="0",
                   help="num_workers values for the training timings, comma-separated (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--probe-images", type=int, default=64,
                   help="images per augmentation-probe timing (default 64; 0 skips the probe)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat every timing this many times, settings in rotating order; "
                        "rates are the medians (default 1)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="before each timing, wait up to this many seconds for other processes to use "
                        "< 15%% of the CPUs (default 0: do not wait)")
    p.add_argument("--workdir", default=None, help="scratch folder, kept (default: a temp dir, removed)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_face_train.json)")
    return p.parse_args(argv)


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def aug_overrides(aug: str) -> dict:
    return {"augment": aug != "off", "balance": aug == "aggressive", "aggressive": aug == "aggressive"}


class Setting:
    """One dataset x augmentation: its config and training set (the task's build_data)."""

    def __init__(self, task, base, aug: str, factor: float):
        import numpy as np

        from emoexp.config import apply_overrides, parse_weights

        self.aug = aug
        cfg = apply_overrides(base, aug_overrides(aug))
        data = task.build_data(task.prepare(cfg))
        counts = np.bincount(np.asarray(data.train_targets), minlength=len(data.class_names))
        if aug == "aggressive":
            cfg = apply_overrides(cfg, {"target_samples": int(round(factor * counts.max()))})
        self.cfg, self.data = cfg, data
        self.weights = parse_weights(cfg.weights, data.class_names)
        self.n_train = len(data.train)
        self.drawn, self.repeats = self._epoch_draws(task)

    def _epoch_draws(self, task) -> tuple[int, int]:
        import torch

        gen = torch.Generator().manual_seed(0)
        sampler = task.epoch_sampler(self.data.train, self.cfg, gen, self.data.train_targets,
                                     self.weights, self.data.class_names)
        if sampler is None:
            return self.n_train, 0
        order = list(sampler)
        return len(order), sum(1 for i in order if i >= self.n_train)

    def loader(self, task, workers: int, epoch: int):
        import torch

        from emoexp import engine
        from emoexp.config import apply_overrides

        cfg = apply_overrides(self.cfg, {"num_workers": workers})
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)  # as _train_one_epoch
        return engine._loader(self.data.train, cfg, gen, self.data.train_targets, self.weights,
                              self.data.class_names, task)


def time_loader(task, s: Setting, workers: int, epochs: int) -> dict:
    n, t_first = 0, float("nan")
    with Contention() as busy:
        t0 = time.perf_counter()
        for e in range(1, epochs + 1):
            for batch in s.loader(task, workers, e):
                if n == 0:
                    t_first = time.perf_counter() - t0
                n += int(batch["emotion"].shape[0])
        dt = time.perf_counter() - t0
    return {"images": n, "seconds": dt, "images_per_s": n / dt, "first_batch_s": t_first,
            "foreign_cpu": busy.foreign}


def warm_up(model, optimizer, s: Setting) -> None:
    """Two forward/backward/step calls on real batches (first-call allocations, kernels)."""
    import torch

    batch = next(iter(s.loader(None, 0, 0)))
    crit = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(2):
        loss = crit(model(batch)["emotion"], batch["emotion"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


class TimedLoader:
    """Wraps the engine's DataLoader: adds up the time the training loop waits in ``next()``."""

    def __init__(self, loader):
        self.loader, self.wait_s = loader, 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)  # worker start-up (num_workers > 0) counts as waiting
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.wait_s += time.perf_counter() - t0
                return
            self.wait_s += time.perf_counter() - t0
            yield batch


def time_training(task, s: Setting, model, optimizer, workers: int, epochs: int) -> dict:
    import torch

    from emoexp import engine
    from emoexp import tracking as T
    from emoexp.config import apply_overrides

    cfg = apply_overrides(s.cfg, {"num_workers": workers})
    info = {**s.data.info, "heads": s.data.heads}
    loss_weights = task.head_loss_weights(cfg, info)
    n, dt, per_epoch, timed = 0.0, 0.0, [], []
    real_loader = engine._loader

    def timed_loader(*a, **kw):
        timed.append(TimedLoader(real_loader(*a, **kw)))
        return timed[-1]

    engine._loader = timed_loader  # _train_one_epoch looks it up at call time
    try:
        with Contention() as busy:
            for e in range(1, epochs + 1):
                m = engine._train_one_epoch(task, cfg, model, optimizer, s.data, s.weights, s.data.primary_head,
                                            loss_weights, torch.device("cpu"), e, epochs)
                n += m[T.M_SAMPLES_PER_S] * m[T.M_EPOCH_TIME]
                dt += m[T.M_EPOCH_TIME]
                per_epoch.append(m[T.M_SAMPLES_PER_S])
    finally:
        engine._loader = real_loader
    wait = sum(t.wait_s for t in timed)
    return {"images": int(round(n)), "seconds": dt, "images_per_s": n / dt if dt > 0 else float("nan"),
            "data_wait_s": wait, "data_wait_share": wait / dt if dt > 0 else float("nan"),
            "loader_in_training_images_per_s": n / wait if wait > 0 else float("nan"),
            "samples_per_s_per_epoch": per_epoch, "train_loss": m[T.M_TRAIN_LOSS],
            "foreign_cpu": busy.foreign}


def probe(pixels, n_images: int, threads: list[int]) -> list[dict]:
    """Per-image cost of the standard / aggressive transforms alone (pre + normalise + post)."""
    import torch

    from emoexp.data.images import augmentation, normalise

    x = pixels[:n_images]
    out = []
    saved = torch.get_num_threads()
    try:
        for th in threads:
            torch.set_num_threads(th)
            for strength in ("standard", "aggressive"):
                pre, post = augmentation(strength)
                post(normalise(pre(x[0])[None])[0])  # first call
                with Contention() as busy:
                    t0 = time.perf_counter()
                    for k in range(len(x)):
                        post(normalise(pre(x[k])[None])[0])
                    dt = time.perf_counter() - t0
                out.append({"transform": strength, "threads": th, "images": len(x),
                            "us_per_image": 1e6 * dt / len(x), "images_per_s": len(x) / dt,
                            "foreign_cpu": busy.foreign})
    finally:
        torch.set_num_threads(saved)
    return out


def summarize_runs(runs: list[dict]) -> dict:
    out = {"images_per_s": median([r["images_per_s"] for r in runs]),
           "foreign_cpu": median([r["foreign_cpu"] for r in runs])}
    if "data_wait_share" in runs[0]:
        out["data_wait_share"] = median([r["data_wait_share"] for r in runs])
        out["loader_in_training_images_per_s"] = median([r["loader_in_training_images_per_s"] for r in runs])
    return {**out,
            "images": runs[0]["images"], "runs": runs}


def run_dataset(name: str, task, base, args, workers: list[int], train_workers: list[int],
                backbones: list[str]) -> dict:
    import torch

    from emoexp import engine
    from emoexp.config import apply_overrides

    print(f"\n== {name}: building the three settings", flush=True)
    settings = {a: Setting(task, base, a, args.balance_factor) for a in AUGS}
    for a, s in settings.items():
        print(f"  {a:10s} train set {s.n_train} images, {s.drawn} drawn per epoch "
              f"({s.repeats} repeats, {100 * s.repeats / max(s.drawn, 1):.0f}%)"
              + (f", target_samples {s.cfg.target_samples}" if a == "aggressive" else ""), flush=True)
    models = {}
    for bb in backbones:
        cfg = apply_overrides(settings["off"].cfg, {"backbone": bb})
        engine._seed_everything(cfg.seed)
        model = task.build_model(cfg, {**settings["off"].data.info, "heads": settings["off"].data.heads})
        opt = engine._optimizer(cfg, model)
        warm_up(model, opt, settings["off"])
        models[bb] = (model, opt)
    loader_runs: dict[str, dict[int, list[dict]]] = {a: {w: [] for w in workers} for a in AUGS}
    train_runs: dict[str, dict[str, dict[int, list[dict]]]] = {
        bb: {a: {w: [] for w in train_workers} for a in AUGS} for bb in backbones}
    for rnd in range(args.rounds):
        k = rnd % len(AUGS)
        order = AUGS[k:] + AUGS[:k]
        print(f"round {rnd + 1}/{args.rounds}: {' -> '.join(order)}", flush=True)
        for a in order:
            s = settings[a]
            for w in workers:
                if args.quiet_wait > 0:
                    wait_quiet(args.quiet_wait)
                r = time_loader(task, s, w, args.epochs)
                loader_runs[a][w].append(r)
                print(f"  loader    {a:10s} workers {w}  {r['images']:5d} img  {r['seconds']:7.2f}s  "
                      f"{r['images_per_s']:8.1f} img/s  other load {100 * r['foreign_cpu']:3.0f}%", flush=True)
            for bb in backbones:
                model, opt = models[bb]
                for w in train_workers:
                    if args.quiet_wait > 0:
                        wait_quiet(args.quiet_wait)
                    r = time_training(task, s, model, opt, w, args.epochs)
                    train_runs[bb][a][w].append(r)
                    print(f"  training  {a:10s} workers {w}  {bb:11s} {r['images']:5d} img  "
                          f"{r['seconds']:7.2f}s  {r['images_per_s']:8.1f} img/s  "
                          f"data wait {100 * r['data_wait_share']:3.0f}%  other load {100 * r['foreign_cpu']:3.0f}%", flush=True)
    probe_rows = []
    if args.probe_images > 0:
        threads = sorted({torch.get_num_threads(), 1}, reverse=True)
        probe_rows = probe(settings["off"].data.train.pixels, args.probe_images, threads)
    return {
        "image_size": settings["off"].data.info["image_size"],
        "sets": {a: {"train_images": s.n_train, "drawn_per_epoch": s.drawn, "repeats_per_epoch": s.repeats,
                     "target_samples": s.cfg.target_samples} for a, s in settings.items()},
        "loader": {a: {str(w): summarize_runs(rs) for w, rs in per.items()} for a, per in loader_runs.items()},
        "training": {bb: {a: {str(w): summarize_runs(rs) for w, rs in per.items()} for a, per in by.items()}
                     for bb, by in train_runs.items()},
        "probe": probe_rows,
    }


def analyse(res: dict, workers: list[int], train_workers: list[int]) -> list[dict]:
    """Per dataset x backbone x augmentation (training at each train-workers value): the ratios."""
    rows = []
    for ds, d in res.items():
        for bb, by in d["training"].items():
            for a in AUGS:
                for tw in train_workers:
                    tr = by[a][str(tw)]["images_per_s"]
                    ratios = {w: d["loader"][a][str(w)]["images_per_s"] / tr for w in workers}
                    base = ratios.get(tw, ratios[workers[0]])
                    enough = [w for w in workers if ratios[w] >= TARGET_RATIO]
                    std = by["standard"][str(tw)]["images_per_s"]
                    rows.append({
                        "dataset": ds, "backbone": bb, "augmentation": a, "train_workers": tw,
                        "train_images_per_s": tr,
                        "loader_images_per_s": {w: d["loader"][a][str(w)]["images_per_s"] for w in workers},
                        "ratio": ratios,
                        "data_wait_share": by[a][str(tw)]["data_wait_share"],
                        "loader_in_training_images_per_s": by[a][str(tw)]["loader_in_training_images_per_s"],
                        "slower_stage": "loader" if by[a][str(tw)]["data_wait_share"] > 0.5 else "model",
                        "meets_with_own_workers": verdict(base, TARGET_RATIO, True),
                        "workers_meeting_target": enough,
                        "vs_standard": tr / std,
                        "train_foreign_cpu": by[a][str(tw)]["foreign_cpu"],
                    })
    return rows


def report(res: dict, rows: list[dict], workers: list[int]) -> None:
    print("\nloader alone (no model): images/s")
    lrows = []
    for ds, d in res.items():
        for a in AUGS:
            st = d["sets"][a]
            lrows.append([ds, a, st["drawn_per_epoch"], f"{100 * st['repeats_per_epoch'] / max(st['drawn_per_epoch'], 1):.0f}%",
                          *(d["loader"][a][str(w)]["images_per_s"] for w in workers),
                          " / ".join(f"{100 * d['loader'][a][str(w)]['foreign_cpu']:.0f}%" for w in workers)])
    print(table(lrows, ["dataset", "augmentation", "drawn/epoch", "repeats",
                        *(f"{w} workers" for w in workers), "other load"]))

    print(f"\ntraining (loader + fwd + bwd + AdamW) vs loader; ratio = loader / training, target >= {TARGET_RATIO}")
    trows = []
    for r in rows:
        trows.append([r["dataset"], r["backbone"], r["augmentation"], r["train_workers"], r["train_images_per_s"],
                      *(r["loader_images_per_s"][w] for w in workers), *(r["ratio"][w] for w in workers),
                      f"{100 * r['data_wait_share']:.0f}%", r["loader_in_training_images_per_s"], r["slower_stage"], r["meets_with_own_workers"],
                      ",".join(map(str, r["workers_meeting_target"])) or "none",
                      r["vs_standard"], f"{100 * r['train_foreign_cpu']:.0f}%"])
    print(table(trows, ["dataset", "backbone", "augmentation", "train wk", "train img/s",
                        *(f"loader {w}wk" for w in workers), *(f"ratio {w}wk" for w in workers),
                        "data wait", "in-loop loader", "slower", f">= {TARGET_RATIO}", "workers meeting", "vs standard",
                        "other load"]))

    for ds, d in res.items():
        if d["probe"]:
            print(f"\n{ds}: augmentation alone, per image ({d['image_size']}x{d['image_size']})")
            print(table([[p["transform"], p["threads"], p["us_per_image"], p["images_per_s"],
                          f"{100 * p['foreign_cpu']:.0f}%"] for p in d["probe"]],
                        ["transform", "torch threads", "us/image", "images/s", "other load"]))

    print()
    for r in rows:
        w = r["train_workers"]
        line = (f"{r['dataset']} {r['backbone']} {r['augmentation']} (training with {w} workers): "
                f"loader/training {r['ratio'].get(w, r['ratio'][workers[0]]):.2f} {r['meets_with_own_workers']}")
        if r["meets_with_own_workers"] != "meets":
            ok = r["workers_meeting_target"]
            line += (f"; with {min(ok)} loader workers {r['ratio'][min(ok)]:.1f}x" if ok
                     else f"; with none of {', '.join(map(str, workers))} loader workers")
        if r["augmentation"] == "aggressive":
            line += f"; aggressive/standard training images/s {r['vs_standard']:.2f}"
        print(line)


def main(argv=None) -> dict:
    args = parse_args(argv)
    workers, train_workers = ints(args.workers), ints(args.train_workers)
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    out = Path(args.out).resolve() if args.out else None  # before the chdir below
    work = Path(args.workdir or tempfile.mkdtemp(prefix="emoexp-bench-face-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ.setdefault("TQDM_DISABLE", "1")  # load_face_dataset's progress bar, the engine's bars
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    load_start = loadavg()

    import torch

    torch.set_num_threads(args.threads)
    import torchvision.transforms.v2  # noqa: F401  (imported before any timing: ~5 s on a cold cache)

    from emoexp.config import apply_overrides
    from emoexp.data.synth_faces import synth_affectnet, synth_fer2013
    from emoexp.tasks import get_task

    print(f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads "
          f"(interop {torch.get_num_interop_threads()}), {os.cpu_count()} CPUs, "
          f"load average {', '.join(f'{x:.2f}' for x in load_start)}", flush=True)
    task = get_task("train_face")
    common = {"device": "cpu", "seed": 0, "batch_size": args.batch_size, "num_workers": 0,
              "classes": 6, "samples_per_class": 0, "weights": ""}
    datasets = {}
    fer = work / "fer2013"
    if not (fer / "fer2013.csv").is_file():
        t0 = time.perf_counter()
        synth_fer2013(fer, seed=0, n_per_class=args.n_per_class, layout="csv")
        print(f"synthetic FER2013 written in {time.perf_counter() - t0:.1f}s", flush=True)
    datasets["fer2013"] = {"data_dir": str(fer), "dataset": "fer2013"}
    if args.affectnet:
        aff = work / "affectnet"
        if not (aff / "Train").is_dir():
            t0 = time.perf_counter()
            synth_affectnet(aff, seed=0, n_per_class=args.affectnet_per_class)
            print(f"synthetic AffectNet written in {time.perf_counter() - t0:.1f}s", flush=True)
        datasets["affectnet"] = {"data_dir": str(aff), "dataset": "affectnet"}

    res = {}
    with Contention() as whole:
        for name, over in datasets.items():
            base = apply_overrides(task.default_config(), {**common, **over})
            res[name] = run_dataset(name, task, base, args, workers, train_workers, backbones)
    rows = analyse(res, workers, train_workers)
    report(res, rows, workers)
    wall = time.perf_counter() - t_start
    print(f"\ntorch threads {torch.get_num_threads()}; other processes used {100 * whole.foreign:.0f}% of the "
          f"CPUs during the measurements; load average at the end "
          f"{', '.join(f'{x:.2f}' for x in loadavg())}; whole run {wall:.0f}s")
    payload = {
        "settings": {**vars(args), "workdir": str(work)},
        "torch_threads": torch.get_num_threads(),
        "target_ratio_min": TARGET_RATIO,
        "datasets": res,
        "rows": rows,
        "foreign_cpu_overall": whole.foreign,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "wall_s": wall,
    }
    path = write_result("bench_face_train", payload, out)
    print(f"wrote {path}")
    if not args.workdir:
        os.chdir(Path.home())
        shutil.rmtree(work, ignore_errors=True)
    return payload


if __name__ == "__main__":
    main()
