#!/usr/bin/env python
"""Serving latency of one EEG window: in-process pyfunc, raw torch, and ``mlflow models serve``.

1. Trains a tiny pretrain_faced model (``--epochs`` 1, window 512, ``log_model`` true) on a
   synthetic FACED set, in a temporary folder with its own sqlite MLflow store and cache.
2. Loads it with ``mlflow.pyfunc.load_model("runs:/<id>/model")`` and times, for ONE window of
   shape (1, 30, 512) float32, ``--calls`` calls after ``--warmup`` discarded ones, interleaved
   call by call so drift hits all three alike:
   * ``pyfunc``   ``model.predict({"eeg": x})``: MLflow's input schema check + emoexp's
                  preprocessing (z-score, checks) + forward + softmax + a DataFrame;
   * ``emoexp``   ``emoexp.serving.predict_frame`` on the same network (all of the above but
                  MLflow's schema check);
   * ``torch``    the network's forward alone on the already-preprocessed tensor (no_grad).
3. Serves the same model over HTTP (``mlflow models serve --env-manager local --workers 1``) and
   times ``--requests`` POST /invocations of that one window (JSON ``{"inputs": {"eeg": ...}}``,
   body serialised once) on one reused keep-alive connection, plus GET /ping on the same
   connection as the HTTP floor, and (client side) how long decoding that JSON body takes.
   The server is always stopped (its own process group); its CPU time is read from /proc and
   left out of the "other load" figure.

Target (issue): in-process pyfunc p50 <= 10 ms. torch threads: the process default (printed).
Nothing is asserted. Results: benchmarks/results/bench_serving.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, loadavg, table, verdict, wait_for_load, write_result  # noqa: E402

TARGET_P50_MS = 10.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--calls", type=int, default=300, help="timed in-process calls per path (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="discarded calls first (default 30)")
    p.add_argument("--requests", type=int, default=200, help="timed HTTP requests (default 200)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs of the tiny model (default 1)")
    p.add_argument("--subjects", type=int, default=4, help="synthetic FACED subjects (default 4)")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP part")
    p.add_argument("--server-timeout", type=float, default=180, help="seconds to wait for /ping (default 180)")
    p.add_argument("--wait-load", type=float, default=0.0,
                   help="before measuring, wait up to this many seconds for the 1-min load average "
                        "to drop below --max-load (default 0: do not wait)")
    p.add_argument("--max-load", type=float, default=1.0, help="load average to wait for (default 1.0)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/bench_serving.json)")
    return p.parse_args(argv)


def pct(xs: list[float], q: float) -> float:
    """Percentile (nearest rank on the sorted sample), in the units of xs."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def summary(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99),
            "min_ms": min(ms), "mean_ms": sum(ms) / len(ms)}


def train(tmp: Path, args) -> str:
    from emoexp import engine
    from emoexp.config import apply_overrides
    from emoexp.data.synth import synth_faced
    from emoexp.tasks import get_task

    root = synth_faced(tmp / "faced", subjects=args.subjects, seed=0, n_samples=2500) / "Processed_data"
    task = get_task("pretrain_faced")
    cfg = apply_overrides(task.default_config(), {
        "data_dir": str(root), "epochs": args.epochs, "window_size": 512, "stride": 512,
        "max_subjects": args.subjects, "log_model": True, "checkpoint_every": 0,
        "experiment_name": "bench-serving"})
    return engine.fit(task, cfg).run_id


def in_process(uri: str, args) -> tuple[dict, dict]:
    import mlflow
    import numpy as np
    import torch

    from emoexp.serving import predict_frame

    t0 = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    load_s = time.perf_counter() - t0
    inner = model.unwrap_python_model()
    net, task, cfg, info = inner.model, inner.task, inner.cfg, inner.info
    x = np.random.default_rng(0).standard_normal((1, int(info["n_channels"]), 512)).astype(np.float32) * 15
    batch = task.serving_batch({"eeg": x}, cfg, info)

    def f_pyfunc():
        model.predict({"eeg": x})

    def f_emoexp():
        predict_frame(task, cfg, info, net, {"eeg": x})

    def f_torch():
        with torch.no_grad():
            net(batch)

    paths = {"pyfunc": f_pyfunc, "emoexp": f_emoexp, "torch": f_torch}
    for f in paths.values():
        for _ in range(args.warmup):
            f()
    times: dict[str, list[float]] = {k: [] for k in paths}
    with Contention() as c:
        for _ in range(args.calls):
            for k, f in paths.items():
                t = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t) * 1e3)
    out = {k: summary(v) for k, v in times.items()}
    meta = {"load_model_s": load_s, "torch_threads": torch.get_num_threads(), "foreign_cpu": c.foreign,
            "window": list(x.shape), "n_params": sum(p.numel() for p in net.parameters())}
    return out, meta


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(uri: str, tmp: Path, timeout: float):
    """``mlflow models serve`` of ``uri``; yields (port, start-up seconds); always stopped."""
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": str(bin_dir) + os.pathsep + os.environ.get("PATH", "")}
    cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    if "--workers" in subprocess.run([str(bin_dir / "mlflow"), "models", "serve", "--help"],
                                     capture_output=True, text=True, env=env).stdout:
        cmd += ["--workers", "1"]
    log_path = tmp / "serve.log"
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    t0 = time.perf_counter()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/ping")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"no /ping answer in {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield port, time.perf_counter() - t0, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of process group ``pgid`` (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ... utime(11) stime(12)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def over_http(uri: str, tmp: Path, args) -> dict:
    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, 30, 512)).astype(np.float32) * 15
    body = json.dumps({"inputs": {"eeg": x.tolist()}}).encode()
    headers = {"Content-Type": "application/json"}
    with served(uri, tmp, args.server_timeout) as (port, startup_s, pgid):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def post() -> bytes:
            conn.request("POST", "/invocations", body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"POST /invocations: HTTP {r.status}: {data[:500]!r}")
            return data

        def ping() -> None:
            conn.request("GET", "/ping")
            conn.getresponse().read()

        first = json.loads(post())
        for _ in range(max(5, args.warmup // 3)):
            post()
            ping()
        inv, png = [], []
        cpu0 = _group_cpu_s(pgid)
        with Contention() as c:
            for _ in range(args.requests):
                t = time.perf_counter()
                post()
                inv.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                ping()
                png.append((time.perf_counter() - t) * 1e3)
        server_cpu = _group_cpu_s(pgid) - cpu0
        conn.close()
    wall_s = (sum(inv) + sum(png)) / 1e3
    # The client's share of the request: decoding such a body is what the server does first.
    dec = []
    for _ in range(20):
        t = time.perf_counter()
        np.asarray(json.loads(body)["inputs"]["eeg"], dtype=np.float32)
        dec.append((time.perf_counter() - t) * 1e3)
    return {"invocations": summary(inv), "ping": summary(png), "startup_s": startup_s,
            "body_bytes": len(body), "json_decode_ms_p50": pct(dec, 50),
            "server_cpu_s": server_cpu, "server_cpu_share": server_cpu / (wall_s * (os.cpu_count() or 1)),
            # other processes' share of the CPUs, the server's own use taken out
            "foreign_cpu": max(0.0, c.foreign - server_cpu / (wall_s * (os.cpu_count() or 1))),
            "prediction_columns": sorted(first["predictions"][0]) if first.get("predictions") else None}


def main(argv=None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("mlflow", "alembic", "emoexp"):
        logging.getLogger(name).setLevel(logging.ERROR)
    result: dict = {"config": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as td:
        tmp = Path(td)
        old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "EMOEXP_CACHE_DIR")}
        old_cwd = os.getcwd()
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        os.environ["EMOEXP_CACHE_DIR"] = str(tmp / "cache")
        os.chdir(tmp)
        try:
            import mlflow

            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
            t0 = time.perf_counter()
            run_id = train(tmp, args)
            result["train_s"] = time.perf_counter() - t0
            uri = f"runs:/{run_id}/model"
            result["load"] = wait_for_load(args.wait_load, args.max_load)
            print(f"model {uri}; load before measuring: {result['load']}", flush=True)
            result["in_process"], result["in_process_meta"] = in_process(uri, args)
            if not args.no_http:
                result["http"] = over_http(uri, tmp, args)
            result["loadavg_after"] = loadavg()
        finally:
            os.chdir(old_cwd)
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    ip, meta = result["in_process"], result["in_process_meta"]
    raw = ip["torch"]["p50_ms"]
    rows = [[k, v["p50_ms"], v["p99_ms"], v["min_ms"], v["p50_ms"] / raw] for k, v in ip.items()]
    if "http" in result:
        h = result["http"]
        rows += [["HTTP POST /invocations", h["invocations"]["p50_ms"], h["invocations"]["p99_ms"],
                  h["invocations"]["min_ms"], h["invocations"]["p50_ms"] / raw],
                 ["HTTP GET /ping", h["ping"]["p50_ms"], h["ping"]["p99_ms"], h["ping"]["min_ms"],
                  h["ping"]["p50_ms"] / raw],
                 [f"json.loads + np.asarray of the {h['body_bytes'] // 1024} KiB body", h["json_decode_ms_p50"],
                  "", "", h["json_decode_ms_p50"] / raw]]
    print(f"\none window {meta['window']}, torch threads {meta['torch_threads']}, "
          f"{meta['n_params']} parameters, load_model {meta['load_model_s']:.2f} s"
          + (f", server start {result['http']['startup_s']:.1f} s" if "http" in result else ""))
    print(table(rows, ["path", "p50 ms", "p99 ms", "min ms", "p50 / torch p50"]))
    p50 = ip["pyfunc"]["p50_ms"]
    result["ratios"] = {"pyfunc_over_torch_p50": p50 / raw,
                        "emoexp_over_torch_p50": ip["emoexp"]["p50_ms"] / raw}
    if "http" in result:
        result["ratios"]["http_over_pyfunc_p50"] = result["http"]["invocations"]["p50_ms"] / p50
    print()
    print(table([["pyfunc predict p50, one window", f"{p50:.2f} ms", f"<= {TARGET_P50_MS:g} ms",
                  verdict(p50, TARGET_P50_MS, False)]], ["measure", "value", "target", "verdict"]))
    path = write_result("bench_serving", result, args.out)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
