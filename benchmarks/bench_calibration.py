#!/usr/bin/env python
"""Calibration of the synthetic datasets: classical baseline vs the task's deep model.

For each case (a task on its generator's *default* synthetic set), the script writes the set
(once; reused while the generator's source and options are unchanged), fits the classical
baseline (:func:`emoexp.baselines.fit_baseline`) and trains the task's default model with its
smoke setting (the README's epochs, no tracking), then prints one row per case:

* the data: training items, optimizer steps per epoch, the smallest class's validation count;
* the baseline's validation and test macro-F1 (target: mid-range, 0.45-0.75);
* the deep model's validation macro-F1 after epoch 1 and at its best epoch, its test macro-F1
  (targets: the best beats the baseline, epoch 1 clearly below the best), and how many classes
  its best epoch predicts (a collapse onto one class shows as 1).

The table in benchmarks/README.md ("Calibration") comes from this script. Nothing is asserted;
``--synth KEY=VALUE`` / ``--train KEY=VALUE`` change the generator options / the config of the
selected cases (``--only``), which is how the defaults were calibrated.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, table, write_result  # noqa: E402

from emoexp.smoke import SMOKE, Smoke  # noqa: E402

BASELINE_RANGE = (0.45, 0.75)


# The cases are emoexp.smoke's (a few minutes each on 2 CPUs).
CASES = SMOKE


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--only", nargs="+", choices=list(CASES), help="these cases (default: all)")
    p.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE",
                   help="generator option for the selected cases (repeatable)")
    p.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the selected cases (repeatable), e.g. epochs=3")
    p.add_argument("--baseline-only", action="store_true", help="skip the deep runs")
    p.add_argument("--seed", type=int, default=None, help="the runs' seed (default: the config's)")
    p.add_argument("--data-root", default=str(RESULTS_DIR / "calibration_data"),
                   help="where the synthetic sets are written and reused")
    p.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/bench_calibration.json)")
    return p.parse_args(argv)


def _literal(v: str) -> Any:
    import yaml

    return yaml.safe_load(v)


def _pairs(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[k.strip()] = _literal(v)
    return out


def dataset_for(case: Smoke, root: Path) -> Path:
    """The case's synthetic set, written once per (generator source, options)."""
    from emoexp.data.registry import get_dataset, synthesize

    make = get_dataset(case.dataset).synth
    src = Path(inspect.getsourcefile(make)).read_bytes()
    key = hashlib.sha256(src + json.dumps(case.synth, sort_keys=True).encode()).hexdigest()[:12]
    folder = root / f"{case.dataset}-{key}"
    done = folder / ".done"
    if not done.exists():
        t = time.perf_counter()
        opts = dict(case.synth)
        subjects = opts.pop("subjects", None)
        path = synthesize(case.dataset, folder / "data", **({"subjects": subjects} if subjects else {}), seed=0, **opts)
        done.write_text(json.dumps({"path": str(path), "options": case.synth,
                                    "seconds": time.perf_counter() - t}))
        print(f"  wrote {case.dataset} {case.synth} in {time.perf_counter() - t:.0f} s", flush=True)
    return Path(json.loads(done.read_text())["path"])


def _side_counts(ds, heads) -> dict[str, int]:
    import numpy as np

    from emoexp.baselines import head_targets

    y = head_targets(ds, heads)[next(iter(heads))]
    names = heads[next(iter(heads))]
    return {c: int(np.sum(y == k)) for k, c in enumerate(names)}


def run_case(name: str, case: Smoke, root: Path, seed: int | None, baseline_only: bool) -> dict[str, Any]:
    from emoexp import engine
    from emoexp.baselines import fit_baseline
    from emoexp.config import apply_overrides
    from emoexp.tasks import get_task

    data_dir = dataset_for(case, root)
    task = get_task(case.task)
    over = {"data_dir": str(data_dir), "device": "cpu", "log_model": False, "checkpoint_every": 0, **case.settings}
    if seed is not None:
        over["seed"] = seed
    cfg = task.prepare(apply_overrides(task.default_config(), over))
    data = task.build_data(cfg)
    val_counts = _side_counts(data.val, data.heads)
    row: dict[str, Any] = {
        "case": name, "task": case.task, "synth": case.synth, "train": case.settings,
        "n_train": len(data.train), "steps_per_epoch": len(data.train) // cfg.batch_size,
        "n_val": len(data.val), "val_min_per_class": min(val_counts.values()), "val_counts": val_counts,
        "n_classes": len(data.class_names),
    }
    t = time.perf_counter()
    base = fit_baseline(task, cfg, data)
    row.update(baseline_val_f1=base["val_macro_f1"], baseline_test_f1=base.get("test_macro_f1", math.nan),
               baseline_s=time.perf_counter() - t)
    print(f"  baseline: val {base['val_macro_f1']:.3f} test {base.get('test_macro_f1', math.nan):.3f}", flush=True)
    if baseline_only:
        return row
    t = time.perf_counter()
    result = engine.fit(task, cfg, track=False, data=data)
    curve = [h["val_macro_f1"] for h in result.history]
    best = max(range(len(curve)), key=curve.__getitem__)
    classes = data.class_names
    predicted = sum(1 for c in classes if result.history[best].get(f"val_f1.{c}", 0.0) > 0)
    row.update(
        deep_epochs=len(curve), deep_curve=curve, deep_epoch1_f1=curve[0], deep_best_f1=curve[best],
        deep_best_epoch=best + 1, deep_test_f1=result.test_metrics.get("test_macro_f1", math.nan),
        deep_classes_predicted=predicted, deep_s=time.perf_counter() - t,
    )
    print(f"  deep: val curve {' '.join(f'{v:.2f}' for v in curve)}  test {row['deep_test_f1']:.3f} "
          f"({row['deep_s']:.0f} s)", flush=True)
    return row


def main(argv=None) -> int:
    import logging

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("emoexp.data", "matplotlib", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    names = args.only or list(CASES)
    synth, train = _pairs(args.synth), _pairs(args.train)
    root = Path(args.data_root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        case = CASES[name]
        case = replace(case, synth={**case.synth, **synth}, settings={**case.settings, **train})
        print(f"{name}: synth {case.synth or 'defaults'}, train {case.settings}", flush=True)
        rows.append(run_case(name, case, root, args.seed, args.baseline_only))

    def f(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    lo, hi = BASELINE_RANGE
    out = []
    for r in rows:
        deep = "deep_best_f1" in r
        out.append([
            r["case"], r["n_train"], r["steps_per_epoch"], r["val_min_per_class"],
            f(r["baseline_val_f1"]), f(r["baseline_test_f1"]),
            r.get("deep_epochs", "-"), f(r.get("deep_epoch1_f1")),
            f"{f(r.get('deep_best_f1'))} (e{r['deep_best_epoch']})" if deep else "-", f(r.get("deep_test_f1")),
            r.get("deep_classes_predicted", "-"),
            ("baseline in range" if lo <= r["baseline_val_f1"] <= hi else "baseline OUT of range")
            + ("" if not deep else "; deep beats it" if r["deep_best_f1"] > r["baseline_val_f1"] else "; deep does NOT beat it"),
        ])
    print()
    print(table(out, ["case", "train", "steps/ep", "val min/class", "base val", "base test", "epochs",
                      "deep e1 val", "deep best val", "deep test", "classes", "verdict"]))
    path = write_result("bench_calibration", {"rows": rows}, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
