#!/usr/bin/env python
"""Cost of MLflow tracking: the same pretrain_faced training with ``track=True`` vs ``track=False``.

One synthetic FACED set, one seed, the same config; only tracking differs. Variants:

* ``untracked``      fit(track=False): no MLflow at all (checkpoints are still written locally)
* ``tracked``        fit(track=True, log_model=false): params, tags, metrics, artifacts
* ``tracked+model``  fit(track=True, log_model=true): the above plus the pyfunc model at the end

Each variant runs once as a discarded warm-up (imports, the sqlite store's migrations, the
.npy cache build), then ``--repeats`` times, the order rotating every round so drift in the
machine's speed spreads over all variants. Per run it records:

(a)  ``loop``  the sum of the engine's per-epoch ``epoch_time_s`` (the training loop proper;
               no tracking call runs inside it, so its ratio shows the noise floor);
(a') ``epoch`` the median wall interval between consecutive epoch ends (training + validation +
               checkpoints + metric and artifact logging: the full per-epoch cost; >= 2 epochs);
(b)  ``wall``  the whole fit() call (data, model, run start/end, test, eval artifacts, model);
(c)  ``cpu``   CPU time of the process during fit().

Two estimates of the ratio tracked/untracked come out of that. Target (issue): <= 1.03.

A/B      median (and minimum) of each measure per variant, divided by the untracked one.
         Honest but noisy: run-to-run spread is a few percent even on an idle machine.
inside   the tracked runs time every call into the tracker (``MlflowTracker`` methods, run
         start/end, ``log_model``) while they run; ratio = time / (time - time in tracking),
         per epoch interval and for the whole fit. Same run, so other load largely cancels;
         it misses indirect costs (none expected: MLflow logs synchronously here).

On a shared machine other processes skew single runs (two CPU-bound torch processes on 2 cores
slow each other down several-fold): before each run the script waits (up to ``--quiet-wait`` s)
for the other processes to go quiet; every run records the share of the CPUs they used
meanwhile (``foreign_cpu``), and a run during which they used more than ``--max-foreign`` is
marked disturbed and repeated (up to ``--retries`` times). Medians are taken over undisturbed
runs when every variant has one, else over all.

``--server``: the tracked variants log to an MLflow server (``mlflow server --workers 1``) on a
private PostgreSQL, the team stack of ``emoexp stack up`` (emoexp/stack.py), started in the
scratch folder and stopped at the end; artifacts go over HTTP to the server's folder. Target
(issue 15): <= 1.05. Results: benchmarks/results/bench_tracking_server.json.

Everything goes to a temporary folder (MLflow store, caches, checkpoints); nothing lands in
the repository. Results: benchmarks/results/bench_tracking.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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

TARGET = 1.03
TARGET_SERVER = 1.05   # --server: HTTP + PostgreSQL
VARIANTS = {  # name -> (track, log_model)
    "untracked": (False, False),
    "tracked": (True, False),
    "tracked+model": (True, True),
}
KEYS = ("loop_s", "epoch_s", "wall_s", "cpu_s")
TRACKER_METHODS = ("log_params", "log_metrics", "set_tags", "log_artifact", "log_text",
                   "log_input", "logged_metric_steps")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--subjects", type=int, default=6, help="synthetic FACED subjects (default 6)")
    p.add_argument("--samples", type=int, default=2500, help="samples per clip T (default 2500)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per fit, >= 2 (default 3)")
    p.add_argument("--repeats", type=int, default=5, help="measured fits per variant (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="max seconds to wait for other processes to go quiet before each run (default 60)")
    p.add_argument("--max-foreign", type=float, default=0.2,
                   help="a run is disturbed if other processes used more than this share of the CPUs (default 0.2)")
    p.add_argument("--retries", type=int, default=2, help="repeats allowed per disturbed run (default 2)")
    p.add_argument("--no-log-model", action="store_true", help="skip the tracked+model variant")
    p.add_argument("--server", action="store_true",
                   help="track to an MLflow server on a private PostgreSQL (emoexp stack up) instead of sqlite")
    p.add_argument("--workdir", default=None,
                   help="scratch folder, kept (default: a new temp dir, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (MLflow store, checkpoints)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_tracking.json)")
    return p.parse_args(argv)


class TrackingTimer:
    """Patches the tracker's entry points to add up the wall time spent inside them."""

    def __init__(self):
        self.total = 0.0
        self.by_call: dict[str, float] = {}
        self._depth = 0

    def _add(self, name: str, dt: float) -> None:
        self.by_call[name] = self.by_call.get(name, 0.0) + dt

    def wrap(self, name: str, fn):
        timer = self

        @functools.wraps(fn)
        def wrapper(*a, **kw):
            timer._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                dt = time.perf_counter() - t0
                timer._depth -= 1
                timer._add(name, dt)
                if timer._depth == 0:  # nested calls (log_model -> ...) count once
                    timer.total += dt
        return wrapper

    @contextlib.contextmanager
    def patched(self):
        from emoexp import serving
        from emoexp import tracking as T

        saved = [(T.MlflowTracker, m, getattr(T.MlflowTracker, m)) for m in TRACKER_METHODS]
        saved += [(T, "mlflow_run", T.mlflow_run), (serving, "log_model", serving.log_model)]
        timer, real_run = self, T.mlflow_run

        @contextlib.contextmanager
        def timed_run(**kw):
            cm = real_run(**kw)
            tracker = timer.wrap("run start", cm.__enter__)()
            try:
                yield tracker
            except BaseException:
                if not timer.wrap("run end", cm.__exit__)(*sys.exc_info()):
                    raise
            else:
                timer.wrap("run end", cm.__exit__)(None, None, None)

        try:
            for obj, name, fn in saved[:-2]:
                setattr(obj, name, self.wrap(name, fn))
            T.mlflow_run = timed_run
            serving.log_model = self.wrap("log_model", serving.log_model)
            yield self
        finally:
            for obj, name, fn in saved:
                setattr(obj, name, fn)


def one_fit(task, base_cfg, track: bool, log_model: bool, out_dir: Path) -> dict:
    from emoexp.config import apply_overrides
    from emoexp.engine import fit

    cfg = apply_overrides(base_cfg, {"log_model": log_model, "output_dir": str(out_dir)})
    timer = TrackingTimer()
    ends: list[tuple[float, float]] = []  # (time, tracking seconds so far) at each epoch end

    def on_epoch(epoch, metrics):
        ends.append((time.perf_counter(), timer.total))
        return False

    c0 = time.process_time()
    t0 = time.perf_counter()
    with Contention() as busy, timer.patched():
        result = fit(task, cfg, track=track, epoch_callback=on_epoch)
    t1 = time.perf_counter()
    cpu = time.process_time() - c0
    pairs = list(zip(ends, ends[1:], strict=False))
    intervals = [b[0] - a[0] for a, b in pairs]
    in_tracking = [b[1] - a[1] for a, b in pairs]
    wall = t1 - t0
    return {
        "loop_s": float(sum(h["epoch_time_s"] for h in result.history)),
        "epoch_s": median(intervals),
        "wall_s": wall,
        "cpu_s": cpu,
        "foreign_cpu": busy.foreign,
        "tracking_s": timer.total,
        "tracking_per_epoch_s": median(in_tracking),
        "tracking_by_call_s": timer.by_call,
        # the same run without its tracking calls, as a ratio (1.0 when untracked)
        "inside_epoch_ratio": median([i / (i - k) for i, k in zip(intervals, in_tracking, strict=True)]),
        "inside_wall_ratio": wall / (wall - timer.total),
        "before_first_epoch_end_s": ends[0][0] - t0 if ends else float("nan"),
        "after_last_epoch_s": t1 - ends[-1][0] if ends else float("nan"),
        "final_train_loss": result.history[-1]["train_loss"],
        "run_id": result.run_id,
    }


def summarize(variants, runs, max_foreign):
    """Per variant: medians over undisturbed runs if every variant has one (else all), minima."""
    quiet = {v: [r for r in runs[v] if r["foreign_cpu"] <= max_foreign] for v in variants}
    use_quiet = all(quiet[v] for v in variants)
    pick = quiet if use_quiet else runs
    med = {v: {k: median([r[k] for r in pick[v]]) for k in KEYS} for v in variants}
    mins = {v: {k: min(r[k] for r in runs[v]) for k in KEYS} for v in variants}

    def ratio(stats):
        return {v: {k.removesuffix("_s"): stats[v][k] / stats["untracked"][k] for k in KEYS}
                for v in variants if v != "untracked"}

    inside = {v: {"epoch": median([r["inside_epoch_ratio"] for r in pick[v]]),
                  "wall": median([r["inside_wall_ratio"] for r in pick[v]]),
                  "tracking_per_epoch_s": median([r["tracking_per_epoch_s"] for r in pick[v]]),
                  "tracking_s": median([r["tracking_s"] for r in pick[v]])}
              for v in variants if v != "untracked"}
    return {"medians_over": "undisturbed runs" if use_quiet else "all runs",
            "n_runs": {v: len(pick[v]) for v in variants},
            "medians_s": med, "minima_s": mins, "ratios_vs_untracked": ratio(med),
            "min_ratios_vs_untracked": ratio(mins), "inside": inside}


def report(variants, s) -> None:
    names = [k.removesuffix("_s") for k in KEYS]
    for title, stats, rat in (("medians over " + s["medians_over"], s["medians_s"], s["ratios_vs_untracked"]),
                              ("minima", s["minima_s"], s["min_ratios_vs_untracked"])):
        rows = [[v, *(stats[v][k] for k in KEYS),
                 *(["1"] * len(KEYS) if v == "untracked" else [rat[v][m] for m in names])]
                for v in variants]
        print(f"\nA/B, {title} (runs: {s['n_runs']}); ratio = variant / untracked")
        print(table(rows, ["variant", *(f"{m} s" for m in names), *(f"{m} ratio" for m in names)]))
    rows = [[v, i["tracking_per_epoch_s"], i["epoch"], i["tracking_s"], i["wall"],
             verdict(i["epoch"], TARGET, False), verdict(i["wall"], TARGET, False)]
            for v, i in s["inside"].items()]
    print("\ninside the tracked runs: time in tracking calls; ratio = time / (time - tracking)")
    print(table(rows, ["variant", "per epoch s", "epoch ratio", "whole fit s", "wall ratio",
                       f"epoch <= {TARGET}", f"wall <= {TARGET}"]))
    for v, r in s["ratios_vs_untracked"].items():
        print(f"A/B target <= {TARGET}, {v}: "
              + ", ".join(f"{m} {verdict(r[m], TARGET, False)}" for m in names))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the per-epoch interval needs two epoch ends)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="emoexp-bench-tracking-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # anything written relative to the cwd (.emoexp/, mlruns) stays here
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    if args.server:
        global TARGET
        from emoexp import stack

        TARGET = TARGET_SERVER
        work.chmod(0o711)  # PostgreSQL runs as postgres and must get through it
        print("starting the stack (PostgreSQL + mlflow server) ...", flush=True)
        server = stack.up(work / "stack", port=stack.free_port())
        os.environ["MLFLOW_TRACKING_URI"] = server.tracking_uri
    try:
        return _measure(args, work)
    finally:
        if args.server:
            stack.down(work / "stack")
        if not args.workdir and not args.keep:
            os.chdir(Path.home())
            shutil.rmtree(work, ignore_errors=True)


def _measure(args, work: Path) -> dict:
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

    def go(v: str, retries: int = 0) -> list[dict]:
        """Run variant v until undisturbed (or out of retries); returns every attempt."""
        nonlocal n
        track, log_model = VARIANTS[v]
        attempts = []
        for _ in range(retries + 1):
            n += 1
            if args.quiet_wait > 0:
                wait_quiet(args.quiet_wait, threshold=args.max_foreign / 2)
            r = one_fit(task, base, track, log_model, work / "out" / f"{n:03d}-{v}")
            attempts.append(r)
            disturbed = r["foreign_cpu"] > args.max_foreign
            print(f"  {v:14s} wall {r['wall_s']:6.2f}s  loop {r['loop_s']:6.2f}s  "
                  f"epoch {r['epoch_s']:5.2f}s  cpu {r['cpu_s']:6.2f}s  in tracking "
                  f"{r['tracking_s']:5.2f}s  other load {100 * r['foreign_cpu']:3.0f}%"
                  + ("  (disturbed)" if disturbed else ""), flush=True)
            if not disturbed:
                break
        return attempts

    print(f"warm-up ({args.subjects} subjects, T={args.samples}, {args.epochs} epochs):", flush=True)
    for v in variants:
        warmup[v] = go(v)[-1]
    for rnd in range(args.repeats):
        order = variants[rnd % len(variants):] + variants[: rnd % len(variants)]
        print(f"round {rnd + 1}/{args.repeats}: {' -> '.join(order)}", flush=True)
        for v in order:
            runs[v] += go(v, args.retries)

    s = summarize(variants, runs, args.max_foreign)
    report(variants, s)
    same = len({round(r["final_train_loss"], 6) for v in variants for r in runs[v]}) == 1
    foreign = [r["foreign_cpu"] for v in variants for r in runs[v]]
    print(f"identical training across variants (final train loss): {same}; other processes used "
          f"{100 * median(foreign):.0f}% of the CPUs (median over runs, max {100 * max(foreign):.0f}%)")
    payload = {
        "settings": {**vars(args), "workdir": str(work)},
        "target_ratio_max": TARGET,
        **s,
        "identical_training": same,
        "foreign_cpu_median": median(foreign),
        "loadavg_end": loadavg(),
        "warmup": warmup,
        "runs": runs,
    }
    if args.server:
        payload["tracking"] = "mlflow server (1 worker) on PostgreSQL, artifacts over HTTP"
    path = write_result("bench_tracking_server" if args.server else "bench_tracking", payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
