#!/usr/bin/env python
"""Cross-validation (``emoexp cv``): what a fold costs beyond its training, and what Optuna's
WilcoxonPruner saves in a sweep over folds.

**overhead** -- ``run_cv("pretrain_faced", kfold:K)`` on synthetic FACED subjects at FACED's real
shape (28 clips x 32 channels x 7500 samples at 250 Hz; windows of 512, stride 256: 784 windows a
subject), ``--subjects`` of them (default 15). Per fold: the job's wall time (views, leakage
check of the views, the engine's whole ``fit``), the epoch loop (from the engine's epoch ends: the
setup before epoch 1 is the first interval minus a typical epoch), and what is left: the fold's
overhead beyond its training (the cross-validation's own work, the engine's run setup, the final
test pass, the evaluation reports). Also: the data read once for all folds, and the
cross-validation's bookkeeping outside the folds (parent run, scans of the store, claims,
aggregates), spread over the folds. Target (issue 14): overhead <= 5 % of a fold's training.
Every figure is given in this process's CPU time (training runs on ``--threads`` threads, so its
CPU time tracks the work and holds when a shared machine pauses or crowds the process) and in wall
time; read the CPU figures first on a busy machine.

**wilcoxon** -- the same ``emoexp sweep --folds loso`` study twice on a small synthetic FACED set
(``--sweep-subjects``, default 6, one fold per subject; the generator's calibrated defaults, on
which the default CNN learns over a few epochs and the learning rate decides how far), once with
``pruner="wilcoxon"`` (``WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)``, per-fold values
reported with ``trial.report(value, step=fold)``) and once with ``"none"``; the same TPE seed,
trials, folds and epochs. Reported: folds and epochs trained, wall time, the best fold-mean
``best_val_macro_f1`` of each, and the saving ``1 - folds(wilcoxon) / folds(none)``. As in
bench_pruning.py, every trial trains with the same seed, so trials with the same parameters in the
two studies are the same cross-validation: each pruned trial is listed with what it reached
unpruned. Each study runs in its own MLflow experiment (folds are reused by identity within one).

Torch runs with ``--threads`` threads (default 1: epoch counts, fold values and the pruning repeat
exactly). Nothing is asserted. Results: benchmarks/results/bench_cv.json.
"""

from __future__ import annotations

import argparse
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

TARGET_OVERHEAD = 0.05
SPACE = PRUNING_SPACE


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--part", choices=["overhead", "wilcoxon", "both"], default="both")
    p.add_argument("--subjects", type=int, default=15, help="overhead: FACED-shaped subjects (default 15)")
    p.add_argument("--folds", default="kfold:5", help="overhead: the scheme (default kfold:5)")
    p.add_argument("--epochs", type=int, default=3, help="overhead: epochs per fold (default 3)")
    p.add_argument("--sweep-subjects", type=int, default=6, help="wilcoxon: subjects = loso folds (default 6)")
    p.add_argument("--trials", type=int, default=6, help="wilcoxon: trials per study (default 6)")
    p.add_argument("--sweep-epochs", type=int, default=5, help="wilcoxon: epochs per fold (default 5)")
    p.add_argument("--sweep-seed", type=int, default=0, help="wilcoxon: TPE seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--wait-load", type=float, default=0.0,
                   help="before measuring, wait up to this many seconds for a quiet machine (default 0)")
    p.add_argument("--max-load", type=float, default=1.5, help="load average to wait for (default 1.5)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_cv.json)")
    return p.parse_args(argv)


def _quiet_logs() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("mlflow", "alembic", "emoexp", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _sandbox(tmp: Path):
    """A temp cwd, sqlite MLflow store and cache dir for everything this script writes."""
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["EMOEXP_CACHE_DIR"] = str(tmp / "cache")
    os.chdir(tmp)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


def epoch_loop_s(ends: list[float]) -> tuple[float, float]:
    """(time in the epoch loop, setup before epoch 1) from the epoch end times (s since fit start):
    epochs after the first are timed directly; the first is taken as long as their median."""
    if not ends:
        return 0.0, 0.0
    if len(ends) == 1:
        return ends[0], 0.0
    typical = statistics.median([b - a for a, b in zip(ends, ends[1:])])
    setup = max(0.0, ends[0] - typical)
    return ends[-1] - setup, setup


# ---------------------------------------------------------------------------------------------
# overhead


def run_overhead(args, tmp: Path) -> dict:
    from emoexp.config import apply_overrides
    from emoexp.cv import run_cv
    from emoexp.data.synth import synth_faced
    from emoexp.tasks import get_task

    t0 = time.perf_counter()
    root = synth_faced(tmp / "faced", subjects=args.subjects, seed=0, n_samples=7500) / "Processed_data"
    synth_s = time.perf_counter() - t0
    task = get_task("pretrain_faced")
    base = {"data_dir": str(root), "epochs": args.epochs, "window_size": 512, "stride": 256, "batch_size": 32,
            "log_model": False, "checkpoint_every": 0, "patience": 0, "experiment_name": "bench-cv-overhead"}
    # warm-up, untimed: the .npy caches, the store's tables, imports, the plots' first use
    warm = apply_overrides(task.default_config(), {**base, "epochs": 1, "max_subjects": 3,
                                                   "experiment_name": "bench-cv-warmup"})
    run_cv(task, warm, "loso", fold_callback=lambda k, m: True)
    task.build_data(task.prepare(apply_overrides(task.default_config(), base)))   # every subject's cache
    load = wait_for_load(args.wait_load, args.max_load)
    print(f"overhead: {args.subjects} subjects, {args.folds}, {args.epochs} epochs (load {load}) ...", flush=True)
    cfg = apply_overrides(task.default_config(), base)
    with Contention() as c:
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_cv(task, cfg, args.folds)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"synth_s": synth_s, "load": load, "foreign_cpu": c.foreign, "test_macro_f1_mean":
           res.aggregates.get("test_macro_f1_mean")}
    # wall time, and CPU time of this process: the latter holds when the machine pauses or
    # shares the process (training runs on --threads threads, so CPU time tracks its work)
    for clock, total, data_s, sfx in (("wall", wall, res.data_time_s, ""), ("cpu", cpu, res.data_cpu_s, "_cpu")):
        folds = []
        for f in res.folds:
            t = f["timing"]
            ends = t[f"epoch_ends{sfx}"]
            loop, setup = epoch_loop_s(ends)
            folds.append({"fold": f["fold"], "n_train_units": f["n_train"], "job_s": t[f"job{sfx}_s"],
                          "fit_s": t[f"fit{sfx}_s"], "epoch_loop_s": loop, "engine_setup_s": setup,
                          "after_last_epoch_s": t[f"fit{sfx}_s"] - ends[-1] if ends else float("nan"),
                          "overhead_s": t[f"job{sfx}_s"] - loop})
        n = len(folds)
        book = max(0.0, total - data_s - sum(f["job_s"] for f in folds))   # parent, scans, claims, aggregates
        for f in folds:   # what the cross-validation adds to the fold's own training run
            f["cv_own_s"] = f["job_s"] - f["fit_s"] + book / n
            f["cv_own_share"] = f["cv_own_s"] / f["epoch_loop_s"] if f["epoch_loop_s"] else float("nan")
            f["overhead_share"] = f["overhead_s"] / f["epoch_loop_s"] if f["epoch_loop_s"] else float("nan")
        loop = sum(f["epoch_loop_s"] for f in folds)
        over = sum(f["overhead_s"] for f in folds) + book
        out[clock] = {"total_s": total, "data_read_once_s": data_s, "bookkeeping_s": book, "folds": folds,
                      "cv_own_share": sum(f["cv_own_s"] for f in folds) / loop if loop else float("nan"),
                      "overhead_share": over / loop if loop else float("nan"),
                      "overhead_share_with_data": (over + data_s) / loop if loop else float("nan"),
                      "mean_fold_loop_s": loop / n, "mean_fold_after_last_epoch_s":
                      sum(f["after_last_epoch_s"] for f in folds) / n}
    out["train_passes_s"] = [f["timing"]["train_loop_s"] for f in res.folds]
    return out


# ---------------------------------------------------------------------------------------------
# wilcoxon


def run_wilcoxon(args, tmp: Path) -> dict:
    import optuna

    from emoexp.data.synth import synth_faced
    from emoexp.sweeps import run_sweep

    root = synth_faced(tmp / "faced-sweep", subjects=args.sweep_subjects, seed=0) / "Processed_data"
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    base = {"data_dir": str(root), "epochs": args.sweep_epochs,
            "log_model": False, "checkpoint_every": 0, "patience": 0}
    run_sweep("pretrain_faced", {**base, "epochs": 1, "max_subjects": 3}, n_trials=1, storage=storage,
              study_name="bench-cv-warmup", space=str(space), pruner="none", folds="loso",
              experiment_name="bench-cv-sweep-warmup")
    load = wait_for_load(args.wait_load, args.max_load)
    out: dict[str, dict] = {}
    for pruner in ("none", "wilcoxon"):
        study_name = f"bench-cv-{pruner}"
        print(f"sweep --folds loso, pruner={pruner}: {args.trials} trials x {args.sweep_subjects} folds x "
              f"{args.sweep_epochs} epochs ...", flush=True)
        with Contention() as c:
            t0 = time.perf_counter()
            res = run_sweep("pretrain_faced", base, n_trials=args.trials, storage=storage, study_name=study_name,
                            space=str(space), pruner=pruner, seed=args.sweep_seed, folds="loso",
                            experiment_name=f"bench-cv-sweep-{pruner}")
            wall = time.perf_counter() - t0
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = [{"number": t.number, "state": t.state.name, "params": dict(t.params), "value": t.value,
                   "folds": len(t.intermediate_values),
                   "fold_values": {int(k): round(v, 4) for k, v in sorted(t.intermediate_values.items())}}
                  for t in study.trials]
        out[pruner] = {"folds_trained": sum(t["folds"] for t in trials), "epochs_trained": res.epochs_trained,
                       "wall_s": wall, "best_value": res.best_value, "best_params": res.best_params,
                       "states": res.states, "foreign_cpu": c.foreign, "trials": trials}
        print(f"  {out[pruner]['folds_trained']} folds, {res.epochs_trained} epochs, {wall:.0f} s, "
              f"best {res.best_value:.4f}, {res.states}", flush=True)
    return {"load": load, "studies": out}


def analyse_wilcoxon(w: dict) -> dict:
    none, wil = w["studies"]["none"], w["studies"]["wilcoxon"]
    twins = {t["number"]: t for t in none["trials"]}
    pruned = []
    for t in wil["trials"]:
        if t["state"] != "PRUNED":
            continue
        twin = twins.get(t["number"])
        same = twin is not None and twin["params"] == t["params"]
        pruned.append({"number": t["number"], "after_folds": t["folds"],
                       "unpruned_twin_value": twin["value"] if same else None,
                       "would_have_beaten_best": bool(same and twin["value"] is not None
                                                      and twin["value"] > (wil["best_value"] or -1))})
    return {"fold_saving": 1.0 - wil["folds_trained"] / none["folds_trained"],
            "epoch_saving": 1.0 - wil["epochs_trained"] / none["epochs_trained"],
            "time_saving": 1.0 - wil["wall_s"] / none["wall_s"],
            "best_diff": (wil["best_value"] or float("nan")) - (none["best_value"] or float("nan")),
            "pruned": pruned}


# ---------------------------------------------------------------------------------------------


def report(r: dict) -> None:
    if "overhead" in r:
        o = r["overhead"]
        print(f"\noverhead: {r['config']['subjects']} FACED-shaped subjects, {r['config']['folds']}, "
              f"{r['config']['epochs']} epochs; other load {o['foreign_cpu']:.0%}")
        for clock in ("cpu", "wall"):
            c = o[clock]
            print(f"\n{clock} time, per fold:")
            rows = [[f["fold"], f["n_train_units"], f["job_s"], f["epoch_loop_s"], f["engine_setup_s"],
                     f["after_last_epoch_s"], f["cv_own_s"], f"{f['cv_own_share']:.2%}", f["overhead_s"],
                     f"{f['overhead_share']:.1%}"] for f in c["folds"]]
            print(table(rows, ["fold", "train trials", "job s", "epoch loop s", "run setup s", "test+reports s",
                               "cv own s", "cv own/loop", "outside loop s", "outside/loop"]))
            rows = [["what cross-validation adds per fold / fold training", f"{c['cv_own_share']:.2%}",
                     f"<= {TARGET_OVERHEAD:.0%}", verdict(c["cv_own_share"], TARGET_OVERHEAD, False)],
                    ["  (views, leakage checks, store scans, claims, parent, aggregates)", "", "", ""],
                    ["everything outside the epoch loops / fold training", f"{c['overhead_share']:.1%}",
                     f"<= {TARGET_OVERHEAD:.0%}", verdict(c["overhead_share"], TARGET_OVERHEAD, False)],
                    ["  (+ the engine's run setup, final test pass, eval reports)", "", "", ""],
                    ["  and the one data read spread over the folds", f"{c['overhead_share_with_data']:.1%}", "", ""],
                    ["data read once (all folds share it)", f"{c['data_read_once_s']:.1f} s", "", ""],
                    ["bookkeeping outside the folds", f"{c['bookkeeping_s']:.1f} s", "", ""]]
            print(table(rows, ["measure", "value", "target", "verdict"]))
    if "wilcoxon" in r:
        w, a = r["wilcoxon"], r["wilcoxon"]["analysis"]
        print(f"\nsweep --folds loso ({r['config']['sweep_subjects']} folds), {r['config']['trials']} trials x "
              f"{r['config']['sweep_epochs']} epochs per fold")
        rows = [[name, s["folds_trained"], s["epochs_trained"], s["wall_s"], s["best_value"],
                 " ".join(f"{k}={v}" for k, v in sorted(s["states"].items())), s["foreign_cpu"]]
                for name, s in w["studies"].items()]
        print(table(rows, ["pruner", "folds", "epochs", "wall s", "best fold mean", "states", "other load"]))
        print(table([["fold saving (1 - wilcoxon/none)", f"{a['fold_saving']:.1%}"],
                     ["epoch saving", f"{a['epoch_saving']:.1%}"], ["wall-time saving", f"{a['time_saving']:.1%}"],
                     ["best, wilcoxon - none", f"{a['best_diff']:+.4f}"]], ["measure", "value"]))
        for p in a["pruned"]:
            print(f"  trial {p['number']} pruned after {p['after_folds']} folds; unpruned it reached "
                  f"{p['unpruned_twin_value']}" + (" (it would have beaten the best!)" if p["would_have_beaten_best"]
                                                  else ""))


def main(argv=None) -> dict:
    args = parse_args(argv)
    _quiet_logs()
    import torch

    torch.set_num_threads(args.threads)
    cwd = os.getcwd()
    r: dict = {"config": vars(args)}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cv-") as td:
            tmp = Path(td)
            _sandbox(tmp)
            if args.part in ("overhead", "both"):
                r["overhead"] = run_overhead(args, tmp)
            if args.part in ("wilcoxon", "both"):
                r["wilcoxon"] = run_wilcoxon(args, tmp)
                r["wilcoxon"]["analysis"] = analyse_wilcoxon(r["wilcoxon"])
            os.chdir(cwd)
    finally:
        os.chdir(cwd)
    r["loadavg_after"] = loadavg()
    report(r)
    path = write_result("bench_cv", r, args.out)
    print(f"wrote {path}")
    return r


if __name__ == "__main__":
    main()
