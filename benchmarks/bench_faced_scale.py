#!/usr/bin/env python
"""FACED at full scale: cache build, peak memory, window loading vs training consumption.

1. Generates (once) a synthetic FACED release at the real shape: ``--subjects`` (123) pickles of
   float64 (28 clips, 32 channels, 7500 samples), about 54 MB each, 6.6 GB in all, in ``--data``
   (default /tmp/emoexp-bench/faced-full); skipped when a complete set is already there.
2. In a FRESH subprocess (so its resident set owes nothing to the generation), measures:
   * ``load_faced`` time: building every subject's float32 (28, T, 30) .npy cache
     (``--reuse-cache`` keeps existing caches and times the reuse instead);
   * a ``WindowDataset`` over all subjects (window 512, stride 256);
   * (ii) the window loading rate: random access through the engine's DataLoader pattern
     (``RandomSampler``, batch 32, batched ``__getitems__``, no workers), no model;
   * (iii) the consumption rate: the task's own model (CNN encoder + classifier head) doing
     forward + backward + Adam on batches of 32 already in memory, torch threads = ``--threads``;
   * the end-to-end rate of the two together (the engine's training loop, minus its bookkeeping);
   * (i) peak RSS of the process (``ru_maxrss`` and /proc/self/status ``VmHWM``) plus the peak of
     each phase (a sampler thread reads VmRSS every 20 ms).
   The engine has no "max batches" option, so the rates are timed over ``--train-batches``
   batches with the same DataLoader and model the engine builds, instead of a whole epoch.
3. Unless ``--no-fit``: in another fresh subprocess, the real thing, ``fit(track=False,
   epochs=1)`` on all subjects (subject split 60/20/20: train, validation, test, evaluation
   artifacts), for the engine's own peak RSS (per phase of fit), epoch time and samples/s. A few minutes on 2 idle
   cores (~500 windows/s); several times longer when other processes compete for the CPUs.

Targets (issue): peak RSS <= 1.5 GB while training; loading rate >= 10x consumption rate.
Note: the caches were just written, so reads are served from the page cache (which does not
count toward RSS); a cold disk would load slower. Results: benchmarks/results/bench_faced_scale.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, loadavg, table, verdict, wait_quiet, write_result  # noqa: E402

RSS_TARGET_GB = 1.5
RATIO_TARGET = 10.0
MARKER = ".bench-complete.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", default="/tmp/emoexp-bench/faced-full",
                   help="synthetic FACED folder (generated once; default /tmp/emoexp-bench/faced-full)")
    p.add_argument("--cache-dir", default="/tmp/emoexp-bench/cache",
                   help="EMOEXP cache root for the .npy caches (default /tmp/emoexp-bench/cache)")
    p.add_argument("--subjects", type=int, default=123, help="subjects to generate and load (default 123)")
    p.add_argument("--samples", type=int, default=7500, help="samples per clip T (default 7500 = 30 s)")
    p.add_argument("--reuse-cache", action="store_true",
                   help="keep existing .npy caches (default: delete them and time the build)")
    p.add_argument("--load-batches", type=int, default=300, help="batches timed for the loading rate (default 300)")
    p.add_argument("--train-batches", type=int, default=40,
                   help="batches timed for the consumption and end-to-end rates (default 40)")
    p.add_argument("--rounds", type=int, default=4,
                   help="interleaved slices the timings are split into (default 4)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="max seconds to wait for other processes to go quiet before the rate timings (default 60)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32, the task's)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the measuring process (default 2)")
    p.add_argument("--no-fit", action="store_true", help="skip the full fit(track=False, epochs=1) run")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_faced_scale.json)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: measure, write JSON here
    p.add_argument("--child-fit", default=None, help=argparse.SUPPRESS)  # internal: fit, write JSON here
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# generation (parent)

def _complete(data: Path, subjects: int, samples: int) -> bool:
    try:
        m = json.loads((data / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if m.get("samples") != samples or m.get("subjects", 0) < subjects:
        return False
    files = sorted((data / "Processed_data").glob("sub*.pkl"))
    want = 28 * 32 * samples * 8
    return len(files) >= subjects and all(f.stat().st_size >= want for f in files[:subjects])


def generate(data: Path, subjects: int, samples: int) -> float:
    """Write the synthetic set with a progress bar; returns seconds (0 when already there)."""
    if _complete(data, subjects, samples):
        print(f"data: {subjects} subjects already in {data}")
        return 0.0
    from tqdm import tqdm

    from emoexp.data.synth import synth_faced

    folder = data / "Processed_data"
    if folder.exists():
        shutil.rmtree(folder)
    (data / MARKER).unlink(missing_ok=True)
    gb = subjects * 28 * 32 * samples * 8 / 1e9
    print(f"generating {subjects} synthetic FACED subjects (28, 32, {samples}) float64, "
          f"{gb:.1f} GB, in {data}")
    err: list[BaseException] = []

    def work():
        try:
            synth_faced(data, subjects=subjects, seed=0, n_samples=samples)
        except BaseException as e:  # shown after the bar
            err.append(e)

    t0 = time.perf_counter()
    th = threading.Thread(target=work, daemon=True)
    th.start()
    with tqdm(total=subjects, unit="subject", desc="synth FACED") as bar:
        while th.is_alive():
            th.join(0.5)
            # a file appears when its subject starts being written; count those finished
            done = max(0, len(list(folder.glob("sub*.pkl"))) - (1 if th.is_alive() else 0))
            bar.update(done - bar.n)
    if err:
        raise err[0]
    dt = time.perf_counter() - t0
    (data / MARKER).write_text(json.dumps({"subjects": subjects, "samples": samples, "seed": 0,
                                           "seconds": round(dt, 1)}))
    return dt


# ---------------------------------------------------------------------------------------------
# measurement (child)

def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """Peak VmRSS per named phase, sampled every ``period`` seconds."""

    def __init__(self, period: float = 0.02):
        super().__init__(daemon=True)
        self.period, self.phase, self.peaks = period, "start", {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.period)

    def sample(self) -> None:
        rss = _status_mb("VmRSS")
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)

    def enter(self, phase: str) -> None:
        self.sample()
        self.phase = phase
        self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def _stepped(step, batch):
    step(batch)
    return batch


def child(args: argparse.Namespace) -> None:
    sampler = RssSampler()
    sampler.start()
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from emoexp.config import apply_overrides
    from emoexp.data.eeg import WindowDataset, resolve_cache_dir
    from emoexp.data.faced import load_faced
    from emoexp.tasks import get_task

    res: dict = {"rss_after_imports_mb": _status_mb("VmRSS")}
    cdir = resolve_cache_dir(args.cache_dir, "faced")
    before = len(list(cdir.glob("*.npy"))) if cdir.is_dir() else 0

    sampler.enter("load_faced")
    t0 = time.perf_counter()
    rec = load_faced(args.data, cache_dir=args.cache_dir, max_subjects=args.subjects, progress=True)
    res["load_faced_s"] = time.perf_counter() - t0
    after = len(list(cdir.glob("*.npy")))
    res["caches_built"] = max(0, after - before)
    res["subjects"] = len(rec.subject_ids)
    res["cache_gb"] = sum(rec.eeg[s].path.stat().st_size for s in rec.subject_ids) / 1e9
    t0 = time.perf_counter()
    load_faced(args.data, cache_dir=args.cache_dir, max_subjects=args.subjects, progress=False)
    res["load_faced_reuse_s"] = time.perf_counter() - t0

    sampler.enter("window_dataset")
    t0 = time.perf_counter()
    ds = WindowDataset(rec, rec.subject_ids, window_size=512, stride=256)
    res["window_dataset_s"] = time.perf_counter() - t0
    res["windows"] = len(ds)

    def loader():
        return DataLoader(ds, batch_size=args.batch_size, sampler=RandomSampler(ds),
                          collate_fn=lambda b: b, num_workers=0)

    sampler.enter("model+warmup")
    # the task's model, optimiser and loss, as fit() builds them
    task = get_task("pretrain_faced")
    cfg = task.prepare(apply_overrides(task.default_config(), {"data_dir": args.data}))
    info = {"n_channels": rec.n_channels, "encoder": cfg.encoder, "heads": {"emotion": rec.class_names}}
    model = task.build_model(cfg, info)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    crit = torch.nn.CrossEntropyLoss()

    def step(batch) -> None:
        out = model(batch)
        loss = crit(out["emotion"], batch["emotion"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def batches():  # endless random batches, a fresh epoch whenever one runs out
        while True:
            yield from loader()

    src = batches()
    pool = [next(src) for _ in range(8)]  # in-memory batches: the model's cost alone
    for b in pool[:3]:
        step(b)  # warm-up: allocator, descriptors, first reads

    if args.quiet_wait > 0:
        res["foreign_cpu_before"] = wait_quiet(args.quiet_wait)
    # The three timings run interleaved, in --rounds slices, so that a burst of other load on
    # the machine falls on all of them alike instead of skewing one.
    kinds = {
        "loading": (args.load_batches, lambda i: next(src)),                  # (ii) no model
        "consumption": (args.train_batches, lambda i: _stepped(step, pool[i % len(pool)])),  # (iii)
        "training_end_to_end": (args.train_batches, lambda i: _stepped(step, next(src))),
    }
    acc = {k: {"batches": 0, "windows": 0, "seconds": 0.0, "foreign": []} for k in kinds}
    for rnd in range(args.rounds):
        for k, (total, fn) in kinds.items():
            sampler.enter(k)
            todo = total // args.rounds + (1 if rnd < total % args.rounds else 0)
            a = acc[k]
            with Contention() as busy:
                t0 = time.perf_counter()
                for _ in range(todo):
                    a["windows"] += int(fn(a["batches"])["eeg"].shape[0])
                    a["batches"] += 1
                a["seconds"] += time.perf_counter() - t0
            a["foreign"].append(busy.foreign)
    for k, a in acc.items():
        res[k] = {"batches": a["batches"], "windows": a["windows"], "seconds": a["seconds"],
                  "windows_per_s": a["windows"] / a["seconds"],
                  "foreign_cpu": max(a["foreign"]) if a["foreign"] else float("nan")}
    sampler.stop()
    res["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    res["vmhwm_mb"] = _status_mb("VmHWM")
    res["rss_end_mb"] = _status_mb("VmRSS")
    res["phase_peak_rss_mb"] = sampler.peaks
    res["torch"] = torch.__version__
    res["torch_threads"] = torch.get_num_threads()
    res["numpy"] = np.__version__
    Path(args.child).write_text(json.dumps(res, indent=2))


def child_fit(args: argparse.Namespace) -> None:
    """One real epoch through the engine, untracked, all subjects; peak RSS and timings."""
    import tempfile

    sampler = RssSampler()
    sampler.start()
    import torch

    torch.set_num_threads(args.threads)
    from emoexp.config import apply_overrides
    from emoexp.engine import fit
    from emoexp.tasks import get_task

    work = Path(tempfile.mkdtemp(prefix="emoexp-bench-fit-"))
    task = get_task("pretrain_faced")
    cfg = apply_overrides(task.default_config(), {
        "data_dir": args.data, "cache_dir": args.cache_dir, "max_subjects": args.subjects,
        "epochs": 1, "seed": 0, "patience": 0, "device": "cpu", "log_model": False,
        "batch_size": args.batch_size, "output_dir": str(work / "out"),
    })
    marks: dict[str, float] = {}

    def on_epoch(epoch, metrics):
        marks["epoch_end"] = time.perf_counter()
        return False

    # Name the phases of fit() for the RSS sampler by wrapping the engine's pieces (the engine
    # looks them up as module globals at call time).
    from emoexp import engine, evaluation

    def phased(mod, name: str, phase: str):
        fn = getattr(mod, name)

        def wrapper(*a, **kw):
            sampler.enter(phase)
            try:
                return fn(*a, **kw)
            finally:
                sampler.enter("fit: other (data, model, checkpoints)")
        setattr(mod, name, wrapper)

    phased(engine, "_train_one_epoch", "fit: train epoch")
    phased(engine, "evaluate_split", "fit: validation / test metrics")
    phased(evaluation, "write_eval_artifacts", "fit: eval artifacts")

    sampler.enter("fit: other (data, model, checkpoints)")
    t0 = time.perf_counter()
    result = fit(task, cfg, track=False, epoch_callback=on_epoch)
    t1 = time.perf_counter()
    sampler.stop()
    h = result.history[0]
    res = {
        "wall_s": t1 - t0,
        "to_epoch_end_s": marks["epoch_end"] - t0,
        "after_epoch_s": t1 - marks["epoch_end"],
        "epoch_time_s": h["epoch_time_s"],
        "train_windows": int(round(h["samples_per_s"] * h["epoch_time_s"])),
        "samples_per_s": h["samples_per_s"],
        "val_loss": h["val_loss"],
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vmhwm_mb": _status_mb("VmHWM"),
        "phase_peak_rss_mb": sampler.peaks,
    }
    shutil.rmtree(work, ignore_errors=True)
    Path(args.child_fit).write_text(json.dumps(res, indent=2))


# ---------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(args)
        return {}
    if args.child_fit:
        child_fit(args)
        return {}
    t_start = time.perf_counter()
    data = Path(args.data)
    gen_s = generate(data, args.subjects, args.samples)
    cdir = Path(args.cache_dir) / "faced"
    if not args.reuse_cache and cdir.exists():
        shutil.rmtree(cdir)
    with_tmp = Path(args.cache_dir) / "child-result.json"
    with_tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(with_tmp),
           "--data", str(data), "--cache-dir", args.cache_dir, "--subjects", str(args.subjects),
           "--samples", str(args.samples), "--load-batches", str(args.load_batches),
           "--train-batches", str(args.train_batches), "--rounds", str(args.rounds), "--quiet-wait", str(args.quiet_wait), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads)]
    print("measuring in a fresh process ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    child_s = time.perf_counter() - t0
    r = json.loads(with_tmp.read_text())
    with_tmp.unlink()
    f = None
    if not args.no_fit:
        print("fit(track=False, epochs=1) on all subjects in a fresh process ...", flush=True)
        fit_cmd = [c if c != "--child" else "--child-fit" for c in cmd]
        with Contention() as busy:
            subprocess.run(fit_cmd, check=True)
        f = json.loads(with_tmp.read_text())
        f["foreign_cpu"] = busy.foreign
        with_tmp.unlink()
    load_rate = r["loading"]["windows_per_s"]
    use_rate = r["consumption"]["windows_per_s"]
    ratio = load_rate / use_rate
    peak_gb = max(r["ru_maxrss_mb"], r["vmhwm_mb"]) / 1024
    rows = [
        ["subjects / windows", f"{r['subjects']} / {r['windows']}", ""],
        ["load_faced (cache build)" if r["caches_built"] else "load_faced (caches reused)",
         f"{r['load_faced_s']:.1f} s ({r['caches_built']} built, {r['cache_gb']:.2f} GB)", ""],
        ["load_faced (reuse)", f"{r['load_faced_reuse_s']:.2f} s", ""],
        ["WindowDataset build", f"{r['window_dataset_s']:.3f} s", ""],
        ["(i) peak RSS ru_maxrss / VmHWM", f"{r['ru_maxrss_mb']:.0f} / {r['vmhwm_mb']:.0f} MB",
         f"<= {RSS_TARGET_GB} GB: {verdict(peak_gb, RSS_TARGET_GB, False)}"],
        ["    RSS after imports", f"{r['rss_after_imports_mb']:.0f} MB", ""],
        *[[f"    peak RSS in {k}", f"{v:.0f} MB", ""] for k, v in r["phase_peak_rss_mb"].items()],
        ["(ii) loading rate", f"{load_rate:.0f} windows/s", ""],
        ["(iii) consumption rate", f"{use_rate:.1f} windows/s", ""],
        ["(ii)/(iii)", f"{ratio:.1f}x", f">= {RATIO_TARGET:g}x: {verdict(ratio, RATIO_TARGET, True)}"],
        ["end-to-end training rate", f"{r['training_end_to_end']['windows_per_s']:.1f} windows/s", ""],
    ]
    if f is not None:
        fit_gb = max(f["ru_maxrss_mb"], f["vmhwm_mb"]) / 1024
        rows += [
            ["fit(epochs=1): peak RSS ru_maxrss / VmHWM", f"{f['ru_maxrss_mb']:.0f} / {f['vmhwm_mb']:.0f} MB",
             f"<= {RSS_TARGET_GB} GB: {verdict(fit_gb, RSS_TARGET_GB, False)}"],
            *[[f"    peak RSS in {k}", f"{v:.0f} MB", ""] for k, v in f["phase_peak_rss_mb"].items()],
            ["fit: wall / epoch_time_s / after epoch",
             f"{f['wall_s']:.0f} / {f['epoch_time_s']:.0f} / {f['after_epoch_s']:.0f} s", ""],
            ["fit: train windows, samples/s", f"{f['train_windows']}, {f['samples_per_s']:.1f}/s", ""],
        ]
    print()
    print(table(rows, ["measure", "value", "target"]))
    foreign = max(r[k]["foreign_cpu"] for k in ("loading", "consumption", "training_end_to_end"))
    print(f"other processes used up to {100 * foreign:.0f}% of the CPUs during the timings")
    payload = {
        "settings": {k: v for k, v in vars(args).items() if k != "child"},
        "targets": {"peak_rss_gb_max": RSS_TARGET_GB, "loading_over_consumption_min": RATIO_TARGET},
        "generation_s": gen_s,
        "child_wall_s": child_s,
        "total_wall_s": time.perf_counter() - t_start,
        "peak_rss_gb": peak_gb,
        "loading_windows_per_s": load_rate,
        "consumption_windows_per_s": use_rate,
        "loading_over_consumption": ratio,
        "fit_peak_rss_gb": None if f is None else max(f["ru_maxrss_mb"], f["vmhwm_mb"]) / 1024,
        "fit": f,
        "loadavg_end": loadavg(),
        "child": r,
    }
    path = write_result("bench_faced_scale", payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
