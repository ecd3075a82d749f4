#!/usr/bin/env python
"""How fast ``emoexp --help`` answers, and that it does not import torch or mlflow.

Each command runs as a fresh subprocess (once untimed to warm the OS file cache, then
``--repeats`` times); the median wall time is reported, next to the interpreter's own floor
(``python -c pass``) for scale. A ``python -X importtime`` run of the same command lists the
packages it imported: torch and mlflow must not be among them (``cli.py`` imports them inside
the commands). Target (issue): ``emoexp --help`` <= 0.5 s.
Results: benchmarks/results/bench_cli_help.json.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, Contention, median, table, verdict, write_result  # noqa: E402

TARGET_S = 0.5
FORBIDDEN = ("torch", "mlflow")
HEAVY = ("torch", "mlflow", "optuna", "pandas", "scipy", "sklearn", "numpy", "matplotlib",
         "librosa", "soundfile", "yaml", "sqlalchemy", "tqdm")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--repeats", type=int, default=10, help="timed runs per command (default 10)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_cli_help.json)")
    return p.parse_args(argv)


def emoexp_cmd() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m emoexp``."""
    script = Path(sys.executable).parent / "emoexp"
    if script.exists():
        return [str(script)]
    found = shutil.which("emoexp")
    return [found] if found else [sys.executable, "-m", "emoexp"]


def time_cmd(cmd: list[str], repeats: int) -> dict:
    subprocess.run(cmd, capture_output=True, check=True, cwd=REPO_ROOT)  # warm the file cache
    times, foreign = [], []
    for _ in range(repeats):
        with Contention() as busy:
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, cwd=REPO_ROOT)
            times.append(time.perf_counter() - t0)
        foreign.append(busy.foreign)
    return {"median_s": median(times), "min_s": min(times), "max_s": max(times), "runs_s": times,
            "foreign_cpu_median": median(foreign)}


def imported(args: list[str]) -> dict:
    """Packages a ``-X importtime`` run of ``python -m emoexp <args>`` imported, with times."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "emoexp", *args],
                          capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    cumulative: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [x.strip() for x in line[len("import time:"):].split("|")]
        if len(parts) != 3 or not parts[1].isdigit():
            continue  # the header line
        name = parts[2].strip()
        top = name.split(".")[0]
        if name == top or top == "emoexp":  # top-level packages (cover their submodules), emoexp's own
            cumulative[name] = max(cumulative.get(name, 0), int(parts[1]))
    slowest = sorted(cumulative.items(), key=lambda kv: -kv[1])[:10]
    return {
        "forbidden_imported": [m for m in FORBIDDEN if m in cumulative],
        "heavy_imported": [m for m in HEAVY if m in cumulative],
        "n_top_level_packages": len([m for m in cumulative if "." not in m]),
        "slowest_ms": {k: v / 1000 for k, v in slowest},
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    base = emoexp_cmd()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "emoexp --help": [*base, "--help"],
        "emoexp train pretrain_faced --help": [*base, "train", "pretrain_faced", "--help"],
    }
    timings = {}
    for name, cmd in commands.items():
        timings[name] = time_cmd(cmd, args.repeats)
        print(f"  {name:36s} median {timings[name]['median_s']:.3f} s", flush=True)
    imports = {"emoexp --help": imported(["--help"]),
               "emoexp train pretrain_faced --help": imported(["train", "pretrain_faced", "--help"])}
    floor = timings["python -c pass"]["median_s"]
    rows = []
    for name, t in timings.items():
        imp = imports.get(name)
        rows.append([name, t["median_s"], t["min_s"], t["median_s"] / floor,
                     "" if imp is None else (", ".join(imp["forbidden_imported"]) or "none"),
                     "" if name == "python -c pass" else verdict(t["median_s"], TARGET_S, False)])
    print()
    print(table(rows, ["command", "median s", "min s", "x python", "torch/mlflow imported",
                       f"<= {TARGET_S} s"]))
    for name, imp in imports.items():
        print(f"{name}: imports {', '.join(imp['heavy_imported']) or 'nothing heavy'}; slowest: "
              + ", ".join(f"{k} {v:.0f} ms" for k, v in list(imp["slowest_ms"].items())[:5]))
    payload = {
        "settings": vars(args),
        "command": base,
        "target_s": TARGET_S,
        "help_median_s": timings["emoexp --help"]["median_s"],
        "help_over_python_floor": timings["emoexp --help"]["median_s"] / floor,
        "timings": timings,
        "imports": imports,
    }
    path = write_result("bench_cli_help", payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
