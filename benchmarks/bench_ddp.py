#!/usr/bin/env python
"""Data-parallel training: 2 ranks x 1 thread (torchrun, DDP) against 1 process x 1 thread.

Both train the same task on the same synthetic data with the same global batch (``batch_size`` is
global: each of the 2 ranks takes half). Reported: training throughput (the engine's per-epoch
``samples_per_s``, median over epochs after the first), each command's wall time (torchrun's
start included), and each run's test accuracy and macro-F1. Target: >= 1.7x samples/s at equal
accuracy (+- 0.02). On a GPU machine the same script runs NCCL (``--device cuda``).

    python benchmarks/bench_ddp.py                       # pretrain_faced, 8 subjects, 6 epochs
    python benchmarks/bench_ddp.py --task train_classifier
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
from _common import median, table, verdict, write_result  # noqa: E402

TASKS = {
    # task -> (synth dataset, synth options, train options)
    "pretrain_faced": ("faced", ["--subjects", "8", "--set", "n_samples=7500"],
                       ["--window-size", "512", "--stride", "256", "--batch-size", "64"]),
    "train_classifier": ("features", ["--subjects", "6", "--set", "n=6000", "--set", "n_features=256"],
                         ["--batch-size", "64", "--hidden", "512,256"]),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=list(TASKS), default="pretrain_faced")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (gloo) | cuda (nccl)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_ddp.json)")
    return p.parse_args(argv)


def _emoexp(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emoexp", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    a = parse_args(argv)
    from mlflow import MlflowClient

    dataset, synth_opts, train_opts = TASKS[a.task]
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
               "EMOEXP_CACHE_DIR": str(tmp / "cache"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        data = tmp / dataset
        subprocess.run([sys.executable, "-m", "emoexp", "data", "synth", dataset, "--out", str(data),
                        "--seed", str(a.seed), *synth_opts], env=env, check=True, stdout=subprocess.DEVNULL)
        common = ["train", a.task, "--data-dir", str(data), "--epochs", str(a.epochs), "--seed", str(a.seed),
                  "--log-model", "false", "--device", a.device, *train_opts]
        # warm the data cache once, so that neither side pays for building it
        _emoexp([*common, "--epochs", "1", "--experiment-name", "warm"], env)
        rows, out = [], {}
        for nproc in (1, 2):
            exp = f"nproc{nproc}"
            wall = _emoexp([*common, "--nproc", str(nproc), "--experiment-name", exp], env)
            os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
            client = MlflowClient(env["MLFLOW_TRACKING_URI"])
            (run,) = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
            sps = [m.value for m in client.get_metric_history(run.info.run_id, "samples_per_s") if m.step > 1]
            m = run.data.metrics
            out[exp] = {"samples_per_s": median(sps), "wall_s": wall, "test_accuracy": m.get("test_accuracy"),
                        "test_macro_f1": m.get("test_macro_f1"), "world_size": run.data.params.get("world_size")}
            rows.append([nproc, out[exp]["samples_per_s"], wall, out[exp]["test_accuracy"], out[exp]["test_macro_f1"]])
    speedup = out["nproc2"]["samples_per_s"] / out["nproc1"]["samples_per_s"]
    wall_ratio = out["nproc1"]["wall_s"] / out["nproc2"]["wall_s"]
    acc_gap = abs(out["nproc2"]["test_accuracy"] - out["nproc1"]["test_accuracy"])
    print(table(rows, ["ranks", "samples/s", "wall s", "test_acc", "test_f1"]))
    print(f"speed-up (samples/s): {speedup:.2f}x  {verdict(speedup, 1.7, True)} (target >= 1.7x)")
    print(f"wall-time ratio (startup included): {wall_ratio:.2f}x")
    print(f"test accuracy gap: {acc_gap:.3f}  {verdict(acc_gap, 0.02, False)} (target <= 0.02)")
    result = {"task": a.task, "epochs": a.epochs, "device": a.device, "runs": out, "speedup": speedup,
              "wall_ratio": wall_ratio, "accuracy_gap": acc_gap}
    path = write_result("bench_ddp", result, a.out)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
