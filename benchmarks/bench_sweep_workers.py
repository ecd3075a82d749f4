#!/usr/bin/env python
"""Sweep throughput: one ``emoexp sweep`` worker vs two started at once on one sqlite storage.

Each configuration runs one study of ``--n-trials`` trials (its total, shared by the workers)
of pretrain_faced on a synthetic FACED set, ``--pruner none``, ``--log-model false``, short
trials (``--epochs`` epochs on ``--subjects`` subjects, window 256 / stride 128). Workers are
``emoexp sweep ...`` subprocesses of the same command line; each configuration gets its own
Optuna sqlite file, all share one MLflow sqlite store (created beforehand) and one .npy cache
(built beforehand), everything in a temporary folder used as the workers' cwd.

Configurations (torch threads per worker set with OMP_NUM_THREADS / MKL_NUM_THREADS):

* ``1 worker x 1 thread``
* ``2 workers x 1 thread``  (both started at once on the same study)
* ``1 worker x 2 threads``  (reference: one worker using both cores)

Trials per hour = COMPLETE trials / wall time from launching the workers to the last exit
(process start-up included), and also over the study's own span (first trial start to last
trial end). Target (issue): two workers / one worker (1 thread each) >= 1.7x. The script also
checks that each study ended with exactly n_trials (or n_trials + 1: the workers' stop check
races) trials and none left RUNNING, and counts workers that exited non-zero. The Optuna schema
is created before the workers start (``--fresh-storage``: let them race to create it; on a
fresh sqlite file one of two workers can die with an alembic UNIQUE constraint error).
Nothing is asserted.
Results: benchmarks/results/bench_sweep_workers.json.

``--storage postgresql``: the team stack instead (``emoexp stack up``, emoexp/stack.py: a private
PostgreSQL holding the Optuna studies and MLflow's store, behind an MLflow server), started in
the temporary folder and stopped at the end. Target (issue 15): two workers >= 1.8x one.
Results: benchmarks/results/bench_sweep_workers_postgresql.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, loadavg, table, verdict, wait_for_load, write_result  # noqa: E402

TARGET_RATIO = 1.7
TARGET_RATIO_POSTGRES = 1.8
SPACE = ("lr: {type: float, low: 5.0e-4, high: 3.0e-3, log: true}\n"
         "dropout: {type: float, low: 0.1, high: 0.5}\n")
CONFIGS = [("1 worker x 1 thread", 1, 1), ("2 workers x 1 thread", 2, 1), ("1 worker x 2 threads", 1, 2)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--n-trials", type=int, default=24,
                   help="trials of each study, all workers together (default 24: each worker's ~11 s start-up "
                        "weighs as in a real sweep of 20+ trials, not as in a 16-trial toy)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial (default 5: ~10-20 s a trial)")
    p.add_argument("--subjects", type=int, default=5, help="synthetic FACED subjects (default 5)")
    p.add_argument("--n-samples", type=int, default=1500, help="samples per synthetic clip (default 1500)")
    p.add_argument("--only", nargs="+", type=int, choices=range(len(CONFIGS)), default=list(range(len(CONFIGS))),
                   help="configurations to run, by index: 0 = 1x1, 1 = 2x1, 2 = 1x2 (default all)")
    p.add_argument("--storage", choices=["sqlite", "postgresql"], default="sqlite",
                   help="sqlite files (default), or the team stack: PostgreSQL + MLflow server (emoexp stack up)")
    p.add_argument("--fresh-storage", action="store_true",
                   help="let the workers create the Optuna sqlite schema themselves (default: the script "
                        "creates it first; started at once on a fresh file, one worker may die in the race)")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of all configurations, order rotating; the fastest run of each counts "
                        "(other load only slows a run down) (default 1)")
    p.add_argument("--distinct-seeds", action="store_true",
                   help="give each worker its own --sweep-seed (default: the same command line for all, "
                        "as the CLI help suggests; the sampler is seeded per trial number, so the "
                        "workers still draw distinct parameters)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a configuration's workers are killed")
    p.add_argument("--wait-load", type=float, default=0.0,
                   help="before each configuration, wait up to this many seconds for the 1-min load "
                        "average to drop below --max-load (default 0: do not wait)")
    p.add_argument("--max-load", type=float, default=1.0, help="load average to wait for (default 1.0)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_sweep_workers.json)")
    return p.parse_args(argv)


def _prepare(tmp: Path, args, tracking_uri: str) -> tuple[Path, Path, dict]:
    """Data, search space, MLflow store and .npy cache, before any timing."""
    import warnings

    warnings.filterwarnings("ignore")
    from emoexp.config import apply_overrides
    from emoexp.data.synth import synth_faced
    from emoexp.tasks import get_task

    root = synth_faced(tmp / "faced", subjects=args.subjects, seed=0, n_samples=args.n_samples,
                       amplitude=8.0) / "Processed_data"
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "EMOEXP_CACHE_DIR": str(tmp / "cache"), "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    old = {k: os.environ.get(k) for k in ("EMOEXP_CACHE_DIR", "MLFLOW_TRACKING_URI")}
    os.environ.update({k: env[k] for k in old})
    try:
        task = get_task("pretrain_faced")
        cfg = task.prepare(apply_overrides(task.default_config(), {
            "data_dir": str(root), "window_size": 256, "stride": 128, "max_subjects": args.subjects}))
        task.build_data(cfg)  # the .npy caches
        from mlflow import MlflowClient

        MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()  # the store's migrations
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root, space, env


def _worker_cmd(args, root: Path, space: Path, storage: str, study: str, exp: str) -> list[str]:
    return [sys.executable, "-m", "emoexp", "sweep", "pretrain_faced", "--n-trials", str(args.n_trials),
            "--storage", storage, "--study-name", study, "--space", str(space), "--pruner", "none",
            "--sweep-seed", "0", "--data-dir", str(root), "--epochs", str(args.epochs),
            "--window-size", "256", "--stride", "128", "--max-subjects", str(args.subjects),
            "--log-model", "false", "--checkpoint-every", "0", "--patience", "0",
            "--experiment-name", exp]


def run_config(tmp: Path, args, root: Path, space: Path, env: dict, label: str, workers: int,
               threads: int, idx: str) -> dict:
    import optuna

    storage = args.pg_storage or f"sqlite:///{tmp / f'optuna-{idx}.db'}"
    study = f"workers-{idx}"
    if not args.fresh_storage:
        # Optuna's schema, created before the workers start: two workers creating it at once race
        # (one dies with "UNIQUE constraint failed: alembic_version.version_num").
        optuna.storages.RDBStorage(storage)
    wenv = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = _worker_cmd(args, root, space, storage, study, f"bench-workers-{idx}")
    logs = [tmp / f"worker-{idx}-{w}.log" for w in range(workers)]
    procs = []
    with Contention() as c:
        t0 = time.perf_counter()
        for w, lp in enumerate(logs):
            if args.distinct_seeds:
                cmd[cmd.index("--sweep-seed") + 1] = str(w)
            with open(lp, "wb") as fh:
                procs.append(subprocess.Popen(cmd, cwd=tmp, env=wenv, stdout=fh, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(1.0, args.timeout - (time.perf_counter() - t0))))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                codes.append(p.wait())
        wall = time.perf_counter() - t0
    st = optuna.load_study(study_name=study, storage=storage)
    trials = st.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    done = [t for t in trials if t.state.name == "COMPLETE"]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    span = ((max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            if done else float("nan"))
    n = len(done)
    surplus = sum(1 for t in trials if t.user_attrs.get("emoexp.surplus"))
    unique = len({tuple(sorted(t.params.items())) for t in trials if t.params and not t.user_attrs.get("emoexp.surplus")})
    return {
        "label": label, "workers": workers, "threads": threads, "exit_codes": codes, "wall_s": wall,
        "study_span_s": span, "n_complete": n, "states": states, "n_trials_in_study": len(trials),
        "trials_per_hour_wall": 3600 * n / wall, "trials_per_hour_span": 3600 * n / span if n else 0.0,
        "mean_trial_s": sum(durations) / n if n else float("nan"),
        # n_trials counts finished trials; workers drop a trial started past the total (emoexp.surplus)
        "trials_ok": n + states.get("PRUNED", 0) == args.n_trials and not {"RUNNING", "WAITING"} & set(states),
        "surplus_trials": surplus,
        "workers_failed": sum(1 for code in codes if code != 0),
        "distinct_param_sets": unique,
        "foreign_cpu": c.foreign, "loadavg_after": loadavg(),
        "log_tail": {str(lp.name): lp.read_text()[-1500:] for lp in logs if any(codes)},
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    import logging

    logging.getLogger("optuna").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as td:
        tmp = Path(td)
        args.pg_storage = ""
        tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
        if args.storage == "postgresql":
            from emoexp import stack

            tmp.chmod(0o711)  # PostgreSQL runs as postgres and must get through it
            print("starting the stack (PostgreSQL + mlflow server) ...", flush=True)
            team = stack.up(tmp / "stack", port=stack.free_port())
            tracking_uri, args.pg_storage = team.tracking_uri, team.optuna_storage
        try:
            results = _rounds(tmp, args, tracking_uri)
        finally:
            if args.storage == "postgresql":
                stack.down(tmp / "stack")
    return _report(args, results)


def _rounds(tmp: Path, args, tracking_uri: str) -> list[dict]:
    results: list[dict] = []
    root, space, env = _prepare(tmp, args, tracking_uri)
    for rep in range(args.repeats):
        k = rep % len(args.only)
        for idx in args.only[k:] + args.only[:k]:
            label, workers, threads = CONFIGS[idx]
            load = wait_for_load(args.wait_load, args.max_load)
            print(f"[{rep + 1}/{args.repeats}] {label}: {args.n_trials} trials x {args.epochs} epochs "
                  f"(load {load}) ...", flush=True)
            r = run_config(tmp, args, root, space, env, label, workers, threads, f"{idx}-{rep}")
            r.update(repeat=rep, load_before=load)
            print(f"  {r['n_complete']} complete in {r['wall_s']:.0f} s ({r['trials_per_hour_wall']:.0f}/h), "
                  f"states {r['states']}, exit {r['exit_codes']}, other load {r['foreign_cpu']:.2f}",
                  flush=True)
            results.append(r)
    return results


def _report(args, results: list[dict]) -> dict:
    target = TARGET_RATIO_POSTGRES if args.storage == "postgresql" else TARGET_RATIO
    by: dict[str, dict] = {}
    for r in results:  # the fastest run of each configuration
        if r["label"] not in by or r["trials_per_hour_wall"] > by[r["label"]]["trials_per_hour_wall"]:
            by[r["label"]] = r
    rows = [[r["label"], r["repeat"] + 1, r["n_complete"], r["wall_s"], r["trials_per_hour_wall"],
             r["trials_per_hour_span"], r["mean_trial_s"],
             " ".join(f"{k}={v}" for k, v in sorted(r["states"].items())),
             "ok" if r["trials_ok"] else "WRONG", r["workers_failed"], r["distinct_param_sets"],
             r["foreign_cpu"], "*" if by[r["label"]] is r else ""] for r in results]
    print()
    print(table(rows, ["configuration", "round", "done", "wall s", "trials/h", "trials/h (span)", "s/trial",
                       "states", "count", "failed", "distinct params", "other load", "used"]))
    ratios = {}
    one, two = by.get(CONFIGS[0][0]), by.get(CONFIGS[1][0])
    if one and two:
        ratios["two_over_one_wall"] = two["trials_per_hour_wall"] / one["trials_per_hour_wall"]
        ratios["two_over_one_span"] = two["trials_per_hour_span"] / one["trials_per_hour_span"]
        ref = by.get(CONFIGS[2][0])
        if ref:
            ratios["two_x1_over_one_x2_wall"] = two["trials_per_hour_wall"] / ref["trials_per_hour_wall"]
        print()
        print(table([["2 workers / 1 worker (1 thread each), wall", f"{ratios['two_over_one_wall']:.2f}x",
                      f">= {target}x", verdict(ratios["two_over_one_wall"], target, True)],
                     ["  same, over the study's span", f"{ratios['two_over_one_span']:.2f}x", "", ""]]
                    + ([["2 workers x 1 thread / 1 worker x 2 threads", f"{ratios['two_x1_over_one_x2_wall']:.2f}x",
                         "", ""]] if "two_x1_over_one_x2_wall" in ratios else []),
                    ["measure", "value", "target", "verdict"]))
    name = "bench_sweep_workers_postgresql" if args.storage == "postgresql" else "bench_sweep_workers"
    path = write_result(name, {"config": {k: v for k, v in vars(args).items() if k != "pg_storage"},
                               "space": SPACE, "runs": results,
                                                "used": {k: v["repeat"] for k, v in by.items()},
                                                "ratios": ratios}, args.out)
    print(f"wrote {path}")
    return {"runs": results, "ratios": ratios}


if __name__ == "__main__":
    main()
