"""Shared helpers of the benchmark scripts: result JSON, a plain-text table, machine facts.

Every benchmark reports ratios measured within one run on one machine; nothing is asserted.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# The search space of the pruning benchmarks (bench_pruning.py, bench_cv.py's Wilcoxon part): a
# learning rate wide enough that some trials do not learn, and dropout.
PRUNING_SPACE = ("lr: {type: float, low: 1.0e-6, high: 3.0e-3, log: true}\n"
                 "dropout: {type: float, low: 0.1, high: 0.6}\n")


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU count, Python, platform (torch only if already imported)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["mem_total_gb"] = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def write_result(name: str, payload: dict[str, Any], out: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` (plus machine facts and a timestamp) to benchmarks/results/<name>.json."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": machine(), **payload}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A left-aligned plain-text table; floats to 4 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    out = [line, sep]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(out)


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    """'meets' / 'misses' against a target (informational only, never an assertion)."""
    if value != value:  # NaN
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "misses"


# ---------------------------------------------------------------------------------------------
# Other load on the machine. The figures are ratios within one run, but on a shared box another
# process's burst can still land on one variant; each run records how busy the *other*
# processes kept the CPUs, and benchmarks can wait for a quiet moment before a measurement.

def _busy_cpu_s() -> float:
    """CPU-seconds spent busy by the whole machine since boot (/proc/stat), NaN if unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU-seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Contention:
    """``with Contention() as c: ...``; then ``c.foreign`` is the share of all CPUs (0..1) that
    other processes used meanwhile."""

    def __enter__(self) -> Contention:
        self._t, self._busy, self._own = time.perf_counter(), _busy_cpu_s(), _own_cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t
        other = (_busy_cpu_s() - self._busy) - (_own_cpu_s() - self._own)
        self.foreign = max(0.0, other / (wall * (os.cpu_count() or 1))) if wall > 0 else float("nan")


def wait_quiet(max_wait_s: float, threshold: float = 0.15, probe_s: float = 1.0) -> float:
    """Wait (up to ``max_wait_s``) until other processes use < ``threshold`` of the CPUs for
    ``probe_s``; returns the last measured foreign share."""
    deadline = time.monotonic() + max_wait_s
    while True:
        with Contention() as c:
            time.sleep(probe_s)
        if c.foreign < threshold or time.monotonic() >= deadline:
            return c.foreign


def loadavg() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def wait_for_load(max_wait: float, max_load: float) -> dict:
    """Wait (up to ``max_wait`` s) for a 1-min load average below ``max_load`` and a quiet CPU."""
    t0 = time.monotonic()
    while True:
        la = loadavg()
        if (not la or la[0] < max_load) and wait_quiet(0, probe_s=2.0) < 0.15:
            break
        if time.monotonic() - t0 >= max_wait:
            break
        time.sleep(15)
    return {"waited_s": round(time.monotonic() - t0, 1), "loadavg_at_start": loadavg()}
