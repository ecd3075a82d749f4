#!/usr/bin/env python
"""Run every benchmark, each in its own process, and print one summary.

Small settings by default (a few minutes on 2 cores); ``--full`` uses each script's own
defaults instead (the full-scale FACED benchmark then generates 6.6 GB of data once and takes
several minutes more). Each script's JSON goes to benchmarks/results/run_all/ (``--full``:
benchmarks/results/, as when run alone), the summary to benchmarks/results/run_all.json.
Nothing is asserted: the targets are printed next to the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, table, verdict, write_result  # noqa: E402

SMALL = {
    "bench_cli_help": ["--repeats", "5"],
    "bench_tracking": ["--subjects", "5", "--epochs", "2", "--repeats", "2", "--quiet-wait", "10"],
    "bench_faced_scale": ["--subjects", "12", "--load-batches", "100", "--train-batches", "20"],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--full", action="store_true", help="each benchmark at its own (larger) defaults")
    p.add_argument("--only", nargs="+", choices=list(SMALL), default=list(SMALL),
                   help="run only these benchmarks")
    return p.parse_args(argv)


def summary_rows(name: str, r: dict) -> list[list[str]]:
    if name == "bench_cli_help":
        forb = r["imports"]["emoexp --help"]["forbidden_imported"]
        return [["emoexp --help (median)", f"{r['help_median_s']:.3f} s", f"<= {r['target_s']} s",
                 verdict(r["help_median_s"], r["target_s"], False)],
                ["  torch/mlflow imported by --help", ", ".join(forb) or "none", "none",
                 "meets" if not forb else "misses"]]
    if name == "bench_tracking":
        t = r["target_ratio_max"]
        rows = []
        for v, rat in r["ratios_vs_untracked"].items():
            for k in ("epoch", "wall"):
                rows.append([f"A/B {v}/untracked, {k} (median)", f"{rat[k]:.3f}", f"<= {t}",
                             verdict(rat[k], t, False)])
        for v, ins in r["inside"].items():
            for k in ("epoch", "wall"):
                rows.append([f"inside {v}, {k}", f"{ins[k]:.3f}", f"<= {t}", verdict(ins[k], t, False)])
            rows.append([f"  {v}: time in tracking calls", f"{ins['tracking_per_epoch_s']:.3f} s/epoch, "
                         f"{ins['tracking_s']:.2f} s/fit", "", ""])
        return rows
    if name == "bench_faced_scale":
        t = r["targets"]
        rows = [
            [f"peak RSS, rate measurement ({r['child']['subjects']} subj)", f"{r['peak_rss_gb']:.2f} GB",
             f"<= {t['peak_rss_gb_max']} GB", verdict(r["peak_rss_gb"], t["peak_rss_gb_max"], False)],
            ["loading / consumption", f"{r['loading_over_consumption']:.1f}x "
             f"({r['loading_windows_per_s']:.0f} vs {r['consumption_windows_per_s']:.0f} windows/s)",
             f">= {t['loading_over_consumption_min']:g}x",
             verdict(r["loading_over_consumption"], t["loading_over_consumption_min"], True)],
            ["load_faced cache build", f"{r['child']['load_faced_s']:.1f} s", "", ""],
        ]
        if r.get("fit_peak_rss_gb") is not None:
            rows.insert(1, ["peak RSS, fit(track=False, epochs=1)", f"{r['fit_peak_rss_gb']:.2f} GB",
                            f"<= {t['peak_rss_gb_max']} GB",
                            verdict(r["fit_peak_rss_gb"], t["peak_rss_gb_max"], False)])
        return rows
    return []


def main(argv=None) -> None:
    args = parse_args(argv)
    out_dir = RESULTS_DIR if args.full else RESULTS_DIR / "run_all"
    results, rows, failed = {}, [], []
    for name in args.only:
        out = out_dir / f"{name}.json"
        cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--out", str(out)]
        if not args.full:
            cmd += SMALL[name]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            failed.append(name)
            rows.append([name, f"FAILED (exit {proc.returncode})", "", ""])
            continue
        r = json.loads(out.read_text())
        results[name] = {"seconds": dt, "json": str(out)}
        rows += [[name, "", "", f"({dt:.0f} s)"], *summary_rows(name, r)]
    print("\n=== summary (" + ("full" if args.full else "small") + " settings)")
    print(table(rows, ["measure", "value", "target", "verdict"]))
    path = write_result("run_all", {"full": args.full, "runs": results, "failed": failed,
                                    "summary": rows})
    print(f"wrote {path}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
