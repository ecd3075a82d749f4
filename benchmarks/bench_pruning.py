#!/usr/bin/env python
"""Median pruning in sweeps: the same study with ``pruner="median"`` vs ``pruner="none"``.

One synthetic FACED set (``--amplitude`` 5: hard enough that the learning rate matters), one
search space (lr log-uniform 1e-6..3e-3, dropout 0.1..0.6), the same TPE sampler seed and the
same number of trials and epochs (default 12 x 10: the first epochs of a trial often tie at the
class-collapse floor, so 6-epoch trials judged them on too little of the curve; real sweeps train
longer still); only the pruner differs (two studies in one Optuna storage,
one MLflow store, all in a temporary folder). ``run_sweep`` is called in-process, as the CLI does.

Reported per sweep: epochs trained (``SweepResult.epochs_trained``), wall time, best value
(best validation macro-F1 of the study), trial states; and the saving
``1 - pruned_epochs / unpruned_epochs``. Targets (issue): saving >= 40 % and the pruned
sweep's best value within noise of the unpruned one.

"Noise" is measured, not assumed: the unpruned sweep's best parameters are trained again with
``--noise-seeds`` other training seeds (``fit(track=False)``), and the spread of their best
values is reported. Since the first trials of a TPE study are drawn at random (10 by default)
and every trial trains with the same seed, the trials with identical parameters in the two
studies are the same training run; the script lists what each pruned trial would have reached
unpruned, so a pruning decision that cost the best trial shows up by name.

The engine's pruner (``emoexp.sweeps.make_pruner``) is ``MedianPruner(n_startup_trials=2,
n_warmup_steps=1)`` on the running best validation macro-F1; ``--warmup``/``--startup`` swap in
another MedianPruner for ``median`` in this process only (to compare settings without patching
code), and ``--pruner hyperband`` compares the engine's HyperbandPruner instead. Torch runs with
``--threads`` intra-op threads (default 1): training is deterministic for a given thread count, so
epoch counts and best values repeat on any machine and under any load; another thread count is
another (equally valid) set of training runs. Nothing is asserted.
Results: benchmarks/results/bench_pruning.json.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PRUNING_SPACE, Contention, loadavg, table, verdict, wait_for_load, write_result  # noqa: E402

TARGET_SAVING = 0.40
SPACE = PRUNING_SPACE


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--trials", type=int, default=12, help="trials per sweep (default 12)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial (default 10)")
    p.add_argument("--subjects", type=int, default=5, help="synthetic FACED subjects (default 5)")
    p.add_argument("--n-samples", type=int, default=1500,
                   help="samples per synthetic clip (default 1500 = 6 s; keeps an epoch short)")
    p.add_argument("--amplitude", type=float, default=5.0, help="planted signal amplitude (default 5: hard)")
    p.add_argument("--sweep-seed", type=int, default=0, help="TPE sampler seed of both sweeps (default 0)")
    p.add_argument("--pruner", choices=["median", "hyperband"], default="median",
                   help="the engine pruner compared with none (default median)")
    p.add_argument("--warmup", type=int, default=None,
                   help="median only: n_warmup_steps of the MedianPruner instead of the engine's")
    p.add_argument("--startup", type=int, default=None,
                   help="median only: n_startup_trials of the MedianPruner instead of the engine's")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1; results are exact per thread count)")
    p.add_argument("--noise-seeds", type=int, default=2,
                   help="extra training seeds for the unpruned best params, to measure noise (default 2; 0: skip)")
    p.add_argument("--order", choices=["none-first", "pruned-first", "median-first"], default="none-first",
                   help="which sweep runs first (default none-first)")
    p.add_argument("--wait-load", type=float, default=0.0,
                   help="before measuring, wait up to this many seconds for the 1-min load average "
                        "to drop below --max-load (default 0: do not wait)")
    p.add_argument("--max-load", type=float, default=1.0, help="load average to wait for (default 1.0)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_pruning.json)")
    return p.parse_args(argv)


@contextlib.contextmanager
def sandbox(tmp: Path):
    """A temp cwd, sqlite MLflow store and cache dir; the old environment back afterwards."""
    keys = ("MLFLOW_TRACKING_URI", "EMOEXP_CACHE_DIR")
    old = {k: os.environ.get(k) for k in keys}
    old_cwd = os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["EMOEXP_CACHE_DIR"] = str(tmp / "cache")
    os.chdir(tmp)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        mlflow.set_tracking_uri(old["MLFLOW_TRACKING_URI"] or "")


def _quiet_logs() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("mlflow", "alembic", "emoexp", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _trials(storage: str, study_name: str) -> list[dict]:
    import optuna
    from mlflow import MlflowClient

    client = MlflowClient()
    study = optuna.load_study(study_name=study_name, storage=storage)
    out = []
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        dur = ((t.datetime_complete - t.datetime_start).total_seconds()
               if t.datetime_complete and t.datetime_start else float("nan"))
        run_id = t.user_attrs.get("mlflow_run_id")
        loop = sum(m.value for m in client.get_metric_history(run_id, "epoch_time_s")) if run_id else float("nan")
        out.append({"number": t.number, "state": t.state.name, "params": dict(t.params),
                    "value": t.value, "epochs": len(steps), "duration_s": dur, "train_loop_s": loop,
                    "curve": [round(t.intermediate_values[s], 4) for s in steps]})
    return out


def describe_pruner(p) -> str:
    """``MedianPruner(n_startup_trials=2, n_warmup_steps=1)``: what the sweep really used."""
    keys = ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials", "percentile",
            "min_resource", "max_resource", "reduction_factor")
    kw = [f"{k}={getattr(p, '_' + k)!r}" for k in keys if hasattr(p, "_" + k)]
    return f"{type(p).__name__}({', '.join(kw)})"


@contextlib.contextmanager
def pruner_override(args):
    """``--warmup``/``--startup``: the ``median`` name builds another MedianPruner, in this process only."""
    import emoexp.sweeps as sweeps

    if args.warmup is None and args.startup is None:
        yield
        return
    if args.pruner != "median":
        raise SystemExit("--warmup/--startup apply to --pruner median only")
    import optuna

    engine_default = sweeps.make_pruner("median")
    startup = engine_default._n_startup_trials if args.startup is None else args.startup
    warmup = engine_default._n_warmup_steps if args.warmup is None else args.warmup
    original = sweeps.make_pruner

    def patched(name: str):
        if name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
        return original(name)

    sweeps.make_pruner = patched
    try:
        yield
    finally:
        sweeps.make_pruner = original


def run(args) -> dict:
    _quiet_logs()
    import torch

    torch.set_num_threads(args.threads)
    with pruner_override(args):
        return _run(args)


def _run(args) -> dict:
    from emoexp import sweeps as sweeps_mod
    from emoexp.config import apply_overrides
    from emoexp.data.synth import synth_faced
    from emoexp.sweeps import run_sweep
    from emoexp.tasks import get_task

    with tempfile.TemporaryDirectory(prefix="bench-pruning-") as td:
        tmp = Path(td)
        with sandbox(tmp):
            root = synth_faced(tmp / "faced", subjects=args.subjects, seed=0, n_samples=args.n_samples,
                               amplitude=args.amplitude) / "Processed_data"
            space = tmp / "space.yaml"
            space.write_text(SPACE)
            storage = f"sqlite:///{tmp / 'optuna.db'}"
            base = {"data_dir": str(root), "epochs": args.epochs, "window_size": 256, "stride": 128,
                    "max_subjects": args.subjects, "log_model": False, "checkpoint_every": 0,
                    "patience": 0}
            # build the .npy caches once, outside the timings
            task = get_task("pretrain_faced")
            cfg = task.prepare(apply_overrides(task.default_config(), base))
            data = task.build_data(cfg)
            n_train, n_val = len(data.train), len(data.val)
            del data
            # warm-up, untimed: the MLflow store's migrations, imports, the plots' first use
            run_sweep("pretrain_faced", {**base, "epochs": 1}, n_trials=1, storage=storage,
                      study_name="bench-warmup", space=str(space), pruner="none",
                      experiment_name="bench-pruning-warmup")

            load = wait_for_load(args.wait_load, args.max_load)
            print(f"load before measuring: {load}", flush=True)
            sweeps: dict[str, dict] = {}
            order = ["none", args.pruner] if args.order == "none-first" else [args.pruner, "none"]
            for pruner in order:
                study = f"bench-{pruner}"
                print(f"sweep pruner={pruner}: {args.trials} trials x {args.epochs} epochs ...", flush=True)
                with Contention() as c:
                    t0 = time.perf_counter()
                    res = run_sweep("pretrain_faced", base, n_trials=args.trials, storage=storage,
                                    study_name=study, space=str(space), pruner=pruner,
                                    seed=args.sweep_seed, experiment_name=f"bench-pruning-{pruner}")
                    wall = time.perf_counter() - t0
                sweeps[pruner] = {"epochs_trained": res.epochs_trained, "wall_s": wall,
                                  "best_value": res.best_value, "best_params": res.best_params,
                                  "states": res.states, "n_trials": res.n_trials,
                                  "foreign_cpu": c.foreign, "loadavg_after": loadavg(),
                                  "trials": _trials(storage, study)}
                print(f"  {res.epochs_trained} epochs, {wall:.0f} s, best {res.best_value:.4f}, "
                      f"{res.states}", flush=True)

            noise: dict = {}
            if args.noise_seeds > 0 and sweeps["none"]["best_params"]:
                from emoexp import engine

                vals = [sweeps["none"]["best_value"]]
                for k in range(1, args.noise_seeds + 1):
                    c2 = apply_overrides(task.default_config(),
                                         {**base, **sweeps["none"]["best_params"], "seed": 42 + k})
                    r = engine.fit(task, c2, track=False)
                    vals.append(r.best_val_macro_f1)
                noise = {"best_params_values_by_seed": vals, "std": statistics.stdev(vals),
                         "range": max(vals) - min(vals)}
    return {"config": {**vars(args), "n_train_windows": n_train, "n_val_windows": n_val,
                       "space": SPACE, "pruner_used": describe_pruner(sweeps_mod.make_pruner(args.pruner))},
            "load": load, "sweeps": sweeps, "noise": noise}


def analyse(r: dict) -> dict:
    none, med = r["sweeps"]["none"], r["sweeps"][r["config"]["pruner"]]
    saving = 1.0 - med["epochs_trained"] / none["epochs_trained"]
    by_number = {t["number"]: t for t in none["trials"]}
    cut = []
    for t in med["trials"]:
        twin = by_number.get(t["number"])
        same = twin is not None and twin["params"] == t["params"]
        if t["state"] == "PRUNED":
            cut.append({"number": t["number"], "params": t["params"], "pruned_after_epochs": t["epochs"],
                        "unpruned_twin_value": twin["value"] if same else None,
                        "would_have_beaten_pruned_best": bool(
                            same and twin["value"] is not None and med["best_value"] is not None
                            and twin["value"] > med["best_value"])})
    diff = (med["best_value"] or float("nan")) - (none["best_value"] or float("nan"))
    trials = none["trials"] + med["trials"]
    loop = sum(t["train_loop_s"] for t in trials)
    dur = sum(t["duration_s"] for t in trials)
    return {"saving": saving, "time_saving": 1.0 - med["wall_s"] / none["wall_s"],
            "train_loop_share_of_trial_time": loop / dur if dur else float("nan"),
            "mean_trial_s_outside_train_loop": (dur - loop) / len(trials) if trials else float("nan"),
            "best_diff": diff, "pruned_trials": cut}


def report(r: dict) -> None:
    a = r["analysis"]
    rows = []
    print(f"pruned sweep: {r['config']['pruner_used']}; {r['config']['trials']} trials x "
          f"{r['config']['epochs']} epochs, sweep seed {r['config']['sweep_seed']}, "
          f"torch threads {r['config']['threads']}")
    for name in ("none", r["config"]["pruner"]):
        s = r["sweeps"][name]
        rows.append([name, s["epochs_trained"], s["wall_s"], s["best_value"] or float("nan"),
                     " ".join(f"{k}={v}" for k, v in sorted(s["states"].items())), s["foreign_cpu"]])
    print(table(rows, ["pruner", "epochs", "wall s", "best val F1", "states", "foreign cpu"]))
    noise = r.get("noise") or {}
    print()
    rows = [["epoch saving (1 - pruned/unpruned)", f"{a['saving']:.1%}", f">= {TARGET_SAVING:.0%}",
             verdict(a["saving"], TARGET_SAVING, True)],
            ["wall-time saving", f"{a['time_saving']:.1%}", "", ""],
            ["  trial time outside the training loop", f"{a['mean_trial_s_outside_train_loop']:.1f} s/trial "
             f"({1 - a['train_loop_share_of_trial_time']:.0%})", "", ""],
            [f"best value, {r['config']['pruner']} - none", f"{a['best_diff']:+.4f}",
             f"within noise (std {noise['std']:.4f})" if noise else "within noise",
             ("meets" if abs(a["best_diff"]) <= 2 * noise["std"] or a["best_diff"] >= 0 else "misses")
             if noise else "n/a"]]
    print(table(rows, ["measure", "value", "target", "verdict"]))
    lost = [t for t in a["pruned_trials"] if t["would_have_beaten_pruned_best"]]
    print(f"\npruned trials: {len(a['pruned_trials'])}; of them would have beaten the pruned "
          f"sweep's best (same params unpruned): {[t['number'] for t in lost] or 'none'}")
    for t in r["sweeps"][r["config"]["pruner"]]["trials"]:
        print(f"  trial {t['number']:2d} {t['state']:8s} lr={t['params'].get('lr', 0):.2e} "
              f"dropout={t['params'].get('dropout', 0):.2f} curve={t['curve']}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    r = run(args)
    r["analysis"] = analyse(r)
    report(r)
    path = write_result("bench_pruning", r, args.out)
    print(f"wrote {path}")
    return r


if __name__ == "__main__":
    main()
