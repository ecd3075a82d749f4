#!/usr/bin/env python
"""Cost of MLflow tracking: the same pretrain_faced training with ``track=True`` vs ``track=False``.

One synthetic FACED set, one seed, the same config; only tracking differs. Variants:

* ``untracked``      fit(track=False): no MLflow at all (checkpoints are still written locally)
* ``tracked``        fit(track=True, log_model=false): params, tags, metrics, artifacts
* ``tracked+model``  fit(track=True, log_model=true): the above plus the pyfunc model at the end

Each variant runs once as a discarded warm-up (imports, the sqlite store's migrations, the
.npy cache build), then ``--repeats`` times, the order rotating every round so drift in the
machine's speed spreads over all variants. Per run it records:

(a) ``loop``   the sum of the engine's per-epoch ``epoch_time_s`` (the training loop proper);
(a') ``epoch`` the median wall interval between consecutive epoch ends (training + validation +
               checkpoints + metric logging: the full per-epoch cost; needs >= 2 epochs);
(b) ``wall``   the whole fit() call (data, model, run start/end, test, eval artifacts, model);
(c) ``cpu``    CPU time of the process during fit() (less sensitive to other load than wall).

It reports the medians and the ratios tracked/untracked. Target (issue): <= 1.03.
On a shared machine other processes skew single runs: before each run the script waits (up to
``--quiet-wait`` s) for the other processes to go quiet, and every run records the share of the
CPUs they used meanwhile (``foreign_cpu``). Everything goes to a temporary folder (MLflow store, caches, checkpoints); nothing lands in the
repository. Results: benchmarks/results/bench_tracking.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, loadavg, median, table, verdict, wait_quiet, write_result  # noqa: E402

TARGET = 1.03
VARIANTS = {  # name -> (track, log_model)
    "untracked": (False, False),
    "tracked": (True, False),
    "tracked+model": (True, True),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--subjects", type=int, default=6, help="synthetic FACED subjects (default 6)")
    p.add_argument("--samples", type=int, default=2500, help="samples per clip T (default 2500)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per fit, >= 2 (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="measured fits per variant (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="max seconds to wait for other processes to go quiet before each run (default 30)")
    p.add_argument("--no-log-model", action="store_true", help="skip the tracked+model variant")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a new temp dir)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_tracking.json)")
    return p.parse_args(argv)


def one_fit(task, base_cfg, track: bool, log_model: bool, out_dir: Path) -> dict:
    from emoexp.config import apply_overrides
    from emoexp.engine import fit

    cfg = apply_overrides(base_cfg, {"log_model": log_model, "output_dir": str(out_dir)})
    ends: list[float] = []

    def on_epoch(epoch, metrics):
        ends.append(time.perf_counter())
        return False

    c0 = time.process_time()
    t0 = time.perf_counter()
    with Contention() as busy:
        result = fit(task, cfg, track=track, epoch_callback=on_epoch)
    t1 = time.perf_counter()
    cpu = time.process_time() - c0
    intervals = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return {
        "loop_s": float(sum(h["epoch_time_s"] for h in result.history)),
        "epoch_s": median(intervals),
        "wall_s": t1 - t0,
        "cpu_s": cpu,
        "foreign_cpu": busy.foreign,
        "before_first_epoch_end_s": ends[0] - t0 if ends else float("nan"),
        "after_last_epoch_s": t1 - ends[-1] if ends else float("nan"),
        "best_value": result.best_value,
        "final_train_loss": result.history[-1]["train_loss"],
        "run_id": result.run_id,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the per-epoch interval needs two epoch ends)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="emoexp-bench-tracking-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # anything written relative to the cwd (.emoexp/, mlruns) stays here
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["EMOEXP_CACHE_DIR"] = str(work / "cache")
    os.environ.pop("MLFLOW_RUN_ID", None)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # mlflow's UserWarnings about dataset sources and type hints
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    import torch

    torch.set_num_threads(args.threads)
    from emoexp.config import apply_overrides
    from emoexp.data.synth import synth_faced
    from emoexp.tasks import get_task

    data = work / "faced"
    if not (data / "Processed_data").is_dir():
        synth_faced(data, subjects=args.subjects, seed=0, n_samples=args.samples)
    task = get_task("pretrain_faced")
    base = apply_overrides(task.default_config(), {
        "data_dir": str(data), "epochs": args.epochs, "seed": 0, "patience": 0,
        "device": "cpu", "experiment_name": "bench-tracking", "num_workers": 0,
    })
    variants = [v for v in VARIANTS if not (args.no_log_model and v == "tracked+model")]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    warmup: dict[str, dict] = {}
    n = 0

    def go(v: str) -> dict:
        nonlocal n
        n += 1
        track, log_model = VARIANTS[v]
        if args.quiet_wait > 0:
            wait_quiet(args.quiet_wait)
        r = one_fit(task, base, track, log_model, work / "out" / f"{n:03d}-{v}")
        print(f"  {v:14s} wall {r['wall_s']:7.2f}s  loop {r['loop_s']:7.2f}s  "
              f"epoch {r['epoch_s']:6.2f}s  cpu {r['cpu_s']:7.2f}s  "
              f"other load {100 * r['foreign_cpu']:3.0f}%", flush=True)
        return r

    print(f"warm-up ({args.subjects} subjects, T={args.samples}, {args.epochs} epochs):", flush=True)
    for v in variants:
        warmup[v] = go(v)
    for rnd in range(args.repeats):
        order = variants[rnd % len(variants):] + variants[: rnd % len(variants)]
        print(f"round {rnd + 1}/{args.repeats}: {' -> '.join(order)}", flush=True)
        for v in order:
            runs[v].append(go(v))

    keys = ("loop_s", "epoch_s", "wall_s", "cpu_s")
    med = {v: {k: median([r[k] for r in runs[v]]) for k in keys} for v in variants}
    ratios = {v: {k.removesuffix("_s"): med[v][k] / med["untracked"][k] for k in keys}
              for v in variants if v != "untracked"}
    same = len({round(r["final_train_loss"], 6) for v in variants for r in runs[v]}) == 1

    names = [k.removesuffix("_s") for k in keys]
    rows = [[v, *(med[v][k] for k in keys),
             *(["1"] * len(keys) if v == "untracked" else [ratios[v][m] for m in names])]
            for v in variants]
    print()
    print(table(rows, ["variant", *(f"{m} s" for m in names), *(f"{m} ratio" for m in names)]))
    for v in ratios:
        print(f"target tracked/untracked <= {TARGET}: {v}: "
              + ", ".join(f"{m} {verdict(ratios[v][m], TARGET, False)}" for m in names))
    foreign = [r["foreign_cpu"] for v in variants for r in runs[v]]
    print(f"other processes used {100 * median(foreign):.0f}% of the CPUs (median over runs, "
          f"max {100 * max(foreign):.0f}%)")
    print(f"identical training across variants (final train loss): {same}")
    payload = {
        "settings": {**vars(args), "workdir": str(work)},
        "target_ratio_max": TARGET,
        "medians_s": med,
        "ratios_vs_untracked": ratios,
        "identical_training": same,
        "foreign_cpu_median": median(foreign),
        "loadavg_end": loadavg(),
        "warmup": warmup,
        "runs": runs,
    }
    path = write_result("bench_tracking", payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
