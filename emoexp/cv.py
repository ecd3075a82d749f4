"""Cross-validation as a first-class run: ``emoexp cv <task> --folds SCHEME [--baseline]``.

One parent MLflow run (tags ``emoexp.task``, ``emoexp.cv_scheme``) and one nested run per fold
(tag ``emoexp.fold``, from 0; ``emoexp.leakage_check=passed``) that is an ordinary training run
of the task (per-epoch metrics, ``split.json``, checkpoints, ``eval/``). The data is built once
(:meth:`Task.build_data`) and every fold trains on index views of it (:meth:`Task.cv_pool`,
:mod:`emoexp.data.folds`). Once every fold is done the parent gets, for each final metric M of the
folds (``test_accuracy``, ``test_macro_f1``, ``best_val_macro_f1``, ``best_epoch``, ...),
``M_mean`` and ``M_std`` (the sample standard deviation, ddof=1), and the artifacts
``cv_folds.csv`` and ``cv_subjects.csv``. With ``--baseline`` each fold also gets a nested
baseline run (:func:`emoexp.baselines.fit_baseline` on the same fold, tagged
``emoexp.model_kind=baseline``) and the parent ``baseline.M_mean`` / ``baseline.M_std``.

Running the same command again continues. A CV's identity is a hash of the task, the scheme (and a
fold file's contents), the seed, the config (minus where-and-how keys such as ``experiment_name``
or ``device``) and the data's fingerprint (:func:`emoexp.data.base.tree_fingerprint`); it tags the
parent (``emoexp.cv_key``) and each fold's run (``emoexp.cv_job``, with the fold's own sides
hashed in). A fold with a FINISHED run is reused; one whose run was killed or failed is continued
from its checkpoint (:func:`emoexp.engine.plan_continue`, the same run) or, without a checkpoint,
started again.

Several workers (the same command, the same tracking store) share the folds. A worker claims a
fold by logging the param ``cv.claim.<kind>.<fold>.<attempt>`` on the parent: MLflow params cannot
change, the store refuses a second, different value, so exactly one worker wins each attempt (the
same holds through a tracking server). Each worker keeps a heartbeat tag on the parent
(``emoexp.cv_alive.<worker>``); a fold whose claimer stopped beating (or whose process is gone, on
the same host) is claimed again as the next attempt and continued from its checkpoint. Workers
that start together may each create the parent; the oldest one is kept and the others deleted.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoexp import tracking as T
from emoexp.checkpoints import fetch_text
from emoexp.config import ConfigError, TrainConfig
from emoexp.liveness import hostname, process_start

log = logging.getLogger(__name__)

# Tags and params of the machinery (the names users read are in emoexp.tracking).
TAG_CV_KEY = "emoexp.cv_key"          # the CV's identity (parent and folds)
TAG_JOB = "emoexp.cv_job"             # a fold run's identity: the CV, the kind, the fold and its sides
TAG_ATTEMPT = "emoexp.cv_attempt"     # which claim of the job the run (last) trained under
TAG_WORKER = "emoexp.cv_worker"       # token|host|pid of the worker that (last) trained it
TAG_ALIVE = "emoexp.cv_alive."        # + worker token, on the parent: "host|pid|unix time" (time 0: ended)
CLAIM = "cv.claim."                   # + kind.fold.attempt, a param on the parent; value: the worker
KINDS = ("deep", "baseline")
ART_TEST_SUBJECTS = "test_subjects.json"  # in a fold run's eval/: per test subject, the confusion matrix

HEARTBEAT_S = float(os.environ.get("EMOEXP_CV_HEARTBEAT", "10"))  # a worker's beat
STALE_BEATS = 6                       # beats missed (a minute) before a claimer counts as gone
SETTLE_S = 1.0                        # wait before deciding which of simultaneous parents is kept
POLL_S = float(os.environ.get("EMOEXP_CV_POLL", "5"))   # wait between looks at folds other workers hold

# Options that say where or how a CV runs, not what it computes: left out of its identity.
NOT_IDENTITY = frozenset({
    "data_dir", "experiment_name", "run_name", "description", "output_dir", "cache_dir", "device",
    "num_workers", "log_model", "nproc",
})

FoldCallback = Callable[[int, dict[str, float]], bool]


@dataclass
class CVResult:
    parent_run_id: str
    scheme: str
    n_folds: int
    folds: list[dict[str, Any]]                 # per fold: fold, run_id, status, metrics, timing ...
    aggregates: dict[str, float] = field(default_factory=dict)
    subjects: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "completed"             # or "pruned" (a fold callback stopped it)
    data_time_s: float = 0.0                   # reading the data and building the pool, once
    data_cpu_s: float = 0.0                    # the same in CPU time
    wall_s: float = 0.0

    def values(self, metric: str, kind: str = "deep") -> list[float]:
        key = metric if kind == "deep" else f"baseline.{metric}"
        return [f["metrics"][key] for f in self.folds if key in f.get("metrics", {})]


# ----------------------------------------------------------------------------------------------
# The run


def run_cv(
    task,
    cfg: TrainConfig,
    folds: str,
    *,
    baseline: bool = False,
    extra_tags: dict[str, Any] | None = None,
    fold_callback: FoldCallback | None = None,
    shuffle_seed: int | None = None,
    run_name: str | None = None,
) -> CVResult:
    """Cross-validate ``task`` with ``cfg`` over the folds of ``folds`` (see the module docstring).

    Inside an active MLflow run (a sweep trial) the parent is nested under it. ``fold_callback(fold,
    metrics)`` runs as each fold's deep run is done (trained here, elsewhere, or reused), in fold
    order, or in an order shuffled with ``shuffle_seed``; returning True stops the CV there
    (``stop_reason="pruned"``, no aggregates). ``extra_tags`` go on the parent.
    """
    import mlflow
    from mlflow import MlflowClient

    from emoexp.data.folds import check_folds, make_folds, parse_scheme
    from emoexp.tasks import get_task

    t_start = time.perf_counter()
    task = get_task(task) if isinstance(task, str) else task
    scheme = parse_scheme(folds)
    if cfg.nproc > 1:
        raise ConfigError("cross-validation trains its folds in this process: nproc must be 1")
    asked = cfg
    cfg = task.prepare(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    data = task.build_data(cfg)
    pool = task.cv_pool(cfg, data)
    fold_list = make_folds(pool, scheme, seed=cfg.seed, val_fraction=cfg.val_fraction)
    data_time, data_cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(fold_list)
    order = list(range(n)) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n).tolist()
    kinds = ("deep", "baseline") if baseline else ("deep",)
    if baseline:
        _baselines()  # fails now, before any training, when the module is missing

    key = cv_key(task, asked, scheme)
    client = MlflowClient()
    active = mlflow.active_run()
    env_run = os.environ.get("MLFLOW_RUN_ID") if active is None else None
    experiment = cfg.experiment_name or task.name
    name = run_name or f"{task.run_name(asked)}-cv-{scheme.spec.replace(':', '')}"
    desc = (f"{n} folds of {scheme.spec} over {len(pool)} {pool.unit}s of {task.name}"
            + (", with the classical baseline" if baseline else "") + f": {task.summary}")
    if env_run:  # an `mlflow run` step: its run is the parent
        parent_id = env_run
        exp_id = client.get_run(env_run).info.experiment_id
    else:
        if active is not None:
            exp_id = active.info.experiment_id
        else:
            exp_id = T.ensure_experiment(experiment, client)
        tags = {TAG_CV_KEY: key, T.TAG_CV_SCHEME: scheme.spec, T.TAG_TASK: task.name}
        if active is not None:
            tags[T.MLFLOW_PARENT_RUN] = active.info.run_id
        parent_id = _find_or_create_parent(client, exp_id, key, name, tags)
    mlflow.set_experiment(experiment_id=exp_id)
    base_tags = {T.TAG_TASK: task.name, T.TAG_MODALITY: task.modality,
                 T.TAG_DATASET: str(data.info.get("dataset") or task.dataset), T.TAG_CV_SCHEME: scheme.spec,
                 TAG_CV_KEY: key}
    with T.mlflow_run(experiment_name=experiment, run_id=parent_id, nested=active is not None,
                      description=desc) as parent:
        if env_run:
            client.update_run(parent_id, name=name)
        parent.set_tags({**base_tags, **{k: str(v) for k, v in (extra_tags or {}).items()}})
        parent.log_params({**asked.to_dict(), "task": task.name, "folds": scheme.spec, "n_folds": n,
                           "cv_unit": pool.unit, "n_units": len(pool)})
        check_folds(pool, fold_list, scheme)  # a leak stops the run here, FAILED with error.txt
        parent.set_tags({T.TAG_LEAKAGE: "passed"})
        ctx = _Context(task=task, asked=asked, cfg=cfg, data=data, pool=pool, folds=fold_list, scheme=scheme,
                       key=key, client=client, parent_id=parent_id, base_tags=base_tags, run_base=name)
        with _Heartbeat(client, parent_id) as worker:
            ctx.worker = worker
            stop = _run_jobs(ctx, kinds, order, fold_callback)
            result = CVResult(parent_run_id=parent_id, scheme=scheme.spec, n_folds=n, folds=[],
                              data_time_s=data_time, data_cpu_s=data_cpu)
            done = ctx.scan()
            result.folds = _fold_rows(ctx, done, kinds)
            if stop:
                result.stop_reason = "pruned"
                parent.set_tags({T.TAG_STOP_REASON: "pruned"})
                parent.log_metrics({"n_folds_done": sum(1 for r in result.folds if "run_id" in r)}, step=0)
            else:
                result.aggregates, result.subjects = _aggregate(ctx, parent, result.folds, kinds)
                parent.set_tags({T.TAG_STOP_REASON: "completed"})
    result.wall_s = time.perf_counter() - t_start
    return result


def fold_trial(task, cfg: TrainConfig, folds: str, trial, metric: str, tags: dict[str, Any],
               count_epochs: Callable[[int], None] | None = None) -> float:
    """One sweep trial over folds (``emoexp sweep --folds``): a cross-validation whose per-fold
    values of ``metric`` are reported to Optuna (``trial.report(value, step=fold)``, folds in an
    order shuffled per trial) so that ``WilcoxonPruner`` can stop a trial that is clearly worse
    than the best after a few folds (``optuna.TrialPruned``). -> the fold mean; ``count_epochs``
    hears how many epochs the trial trained. The trial's run is the CV's parent; it also carries
    the mean under ``metric``'s own name."""
    import optuna

    values: dict[int, float] = {}

    def report(k: int, metrics: dict[str, float]) -> bool:
        if metric not in metrics:
            raise ConfigError(f"metric {metric!r} is not among a fold's final metrics: {sorted(metrics)}")
        values[k] = float(metrics[metric])
        trial.report(values[k], step=k)
        return trial.should_prune()

    result = run_cv(task, cfg, folds, extra_tags=tags, fold_callback=report,
                    shuffle_seed=int(cfg.seed) * 1_000_003 + int(trial.number), run_name=cfg.run_name or None)
    trial.set_user_attr("mlflow_run_id", result.parent_run_id)
    trial.set_user_attr("cv_folds_reported", len(values))
    if count_epochs is not None:
        count_epochs(sum(int(f.get("timing", {}).get("epochs", 0)) for f in result.folds))
    mean = float(np.mean(list(values.values()))) if values else float("nan")
    if result.stop_reason == "pruned":
        raise optuna.TrialPruned(f"pruned after {len(values)} of {result.n_folds} folds (mean so far {mean:.4f})")
    from mlflow import MlflowClient

    MlflowClient().log_metric(result.parent_run_id, metric, mean, step=0)
    return mean


def cv_key(task, cfg: TrainConfig, scheme) -> str:
    """The identity of a cross-validation: task, scheme (and fold file), seed, config, data."""
    conf = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IDENTITY}
    doc = {"v": 1, "task": task.name, "folds": scheme.spec if scheme.kind != "file" else "file",
           "folds_content": scheme.content_digest(), "config": conf, "data": data_fingerprint(cfg)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def data_fingerprint(cfg: TrainConfig) -> str:
    """The dataset's files (names, sizes, mtimes) behind ``data_dir`` (and feature tables)."""
    from emoexp.data.base import tree_fingerprint

    h = hashlib.sha256()
    for k in ("data_dir", "features", "labels"):
        p = Path(str(getattr(cfg, k, "") or ""))
        if not str(getattr(cfg, k, "") or ""):
            continue
        if p.is_dir():
            h.update(f"{k}:{tree_fingerprint(p)}".encode())
        elif p.is_file():
            st = p.stat()
            h.update(f"{k}:{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _baselines():
    try:
        from emoexp import baselines
    except ImportError as e:
        raise ConfigError(f"--baseline needs emoexp.baselines ({e})") from None
    return baselines


def _find_or_create_parent(client, exp_id: str, key: str, name: str, tags: dict[str, str]) -> str:
    """The CV's parent run: the existing one, or a new one. Workers starting together may each
    create one; after a moment all see the same set and keep the oldest (the others are deleted)."""
    found = _parents(client, exp_id, key)
    if found:
        return found[0].info.run_id
    mine = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    time.sleep(SETTLE_S)
    found = _parents(client, exp_id, key)
    keep = found[0].info.run_id if found else mine
    if keep != mine:
        log.info("another worker created this cross-validation's parent run %s at the same time: using it", keep)
        client.delete_run(mine)
    return keep


def _parents(client, exp_id: str, key: str) -> list:
    runs = _search(client, exp_id, f"tags.`{TAG_CV_KEY}` = '{key}'")
    parents = [r for r in runs if T.TAG_FOLD not in r.data.tags]
    return sorted(parents, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _search(client, exp_id: str, filter_string: str) -> list:
    out, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string=filter_string, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


# ----------------------------------------------------------------------------------------------
# Workers, claims, jobs


class _Heartbeat:
    """This worker: its token, and a daemon thread beating on the parent while it works."""

    def __init__(self, client, parent_id: str):
        self.client, self.parent_id = client, parent_id
        self.token = uuid.uuid4().hex[:12]
        self.host, self.pid = hostname(), os.getpid()
        self.claim_value = f"{self.token}|{self.host}|{self.pid}|{_process_start(self.pid) or ''}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emoexp-cv-heartbeat", daemon=True)

    def beat(self, when: float | None = None) -> None:
        t = time.time() if when is None else when
        self.client.set_tag(self.parent_id, TAG_ALIVE + self.token, f"{self.host}|{self.pid}|{t:.0f}")

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except Exception as e:  # the store hiccuped: the next beat may pass
                log.debug("heartbeat failed: %s", e)

    def __enter__(self) -> _Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.beat(0.0)  # ended: its claims are free at once


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, as a claim writes it (:func:`emoexp.liveness.process_start`)."""
    t = process_start(pid)
    return None if t is None else f"{t:.2f}"


def claimer_alive(value: str, parent_tags: dict[str, str], me: str | None = None) -> bool:
    """Is the worker of a claim (``token|host|pid|start``) still working? It has not said it
    ended (heartbeat 0); on this host its process (that pid, started then) exists, even when it
    is stopped for a while; on another host its heartbeat on the parent is recent."""
    parts = value.split("|")
    if len(parts) < 3:
        return False
    token, host, pid = parts[:3]
    start = parts[3] if len(parts) > 3 else ""
    if token == me:
        return True
    beat = parent_tags.get(TAG_ALIVE + token, "")
    try:
        last = float(beat.rsplit("|", 1)[1])
    except (IndexError, ValueError):
        return False
    if last <= 0:
        return False
    if host == hostname():
        now = _process_start(int(pid)) if pid.isdigit() else None
        return now is not None and (not start or now == start)
    return time.time() - last < STALE_BEATS * HEARTBEAT_S


@dataclass
class _Context:
    task: Any
    asked: TrainConfig
    cfg: TrainConfig
    data: Any
    pool: Any
    folds: list
    scheme: Any
    key: str
    client: Any
    parent_id: str
    base_tags: dict[str, str]
    run_base: str
    worker: _Heartbeat | None = None
    outcome: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)   # this worker's jobs

    def job_key(self, kind: str, k: int) -> str:
        doc = f"{self.key}|{kind}|{k}|{self.folds[k].digest()}"
        return hashlib.sha256(doc.encode()).hexdigest()[:20]

    def scan(self) -> dict[str, Any]:
        """The store's state: the parent's params and tags, and every fold run of this CV by job."""
        parent = self.client.get_run(self.parent_id)
        exp_id = parent.info.experiment_id
        runs: dict[str, list] = {}
        for r in _search(self.client, exp_id, f"tags.`{TAG_CV_KEY}` = '{self.key}'"):
            if T.TAG_FOLD in r.data.tags:
                runs.setdefault(r.data.tags.get(TAG_JOB, ""), []).append(r)
        return {"params": dict(parent.data.params), "tags": dict(parent.data.tags), "runs": runs}

    def job_state(self, state: dict, kind: str, k: int) -> tuple[str, Any, int]:
        """("done", run, _) | ("busy", None, _) | ("free", previous run or None, next attempt)."""
        runs = sorted(state["runs"].get(self.job_key(kind, k), []),
                      key=lambda r: (r.info.start_time or 0, r.info.run_id))
        finished = [r for r in runs if r.info.status == "FINISHED"]
        if finished:
            return "done", finished[-1], 0
        prefix = f"{CLAIM}{kind}.{k}."
        claims = {int(p[len(prefix):]): v for p, v in state["params"].items()
                  if p.startswith(prefix) and p[len(prefix):].isdigit()}
        me = self.worker.token if self.worker else None
        if claims:
            last = max(claims)
            if claimer_alive(claims[last], state["tags"], me):
                return "busy", None, last
        # a run of this fold left by a worker of another parent (an `mlflow run` step) that still beats
        for r in runs:
            if r.info.status == "RUNNING" and r.data.tags.get(TAG_WORKER) and r.data.tags.get(
                    T.MLFLOW_PARENT_RUN) != self.parent_id:
                other = self.client.get_run(r.data.tags[T.MLFLOW_PARENT_RUN]).data.tags
                if claimer_alive(r.data.tags[TAG_WORKER], other, me):
                    return "busy", None, 0
        previous = runs[-1] if runs else None
        return "free", previous, (max(claims) + 1 if claims else 0)

    def claim(self, kind: str, k: int, attempt: int) -> bool:
        """Log the claim param; True when this worker holds the attempt (the store keeps the first)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_param(self.parent_id, f"{CLAIM}{kind}.{k}.{attempt}", self.worker.claim_value)
        except MlflowException as e:
            if "Changing param values is not allowed" in str(e) or "already logged" in str(e):
                return False
            raise
        return True


def _run_jobs(ctx: _Context, kinds: tuple[str, ...], order: list[int], callback: FoldCallback | None) -> bool:
    """Work through the folds' jobs until every one is done (here or by other workers); True
    when the callback stopped it. The callback hears of the folds in ``order``."""
    reported = 0
    said_wait = False
    while True:
        state = ctx.scan()
        pending = False
        for k in order:
            for kind in kinds:
                status, state = _settle(ctx, state, kind, k)
                pending |= status != "done"
            while callback is not None and reported < len(order):
                status, run, _ = ctx.job_state(state, "deep", order[reported])
                if status != "done":
                    break
                reported += 1
                if callback(order[reported - 1], dict(run.data.metrics)):
                    return True
        if not pending:
            return False
        if not said_wait:
            log.info("cross-validation: waiting for the folds other workers hold")
            said_wait = True
        time.sleep(POLL_S)


def _settle(ctx: _Context, state: dict, kind: str, k: int) -> tuple[str, dict]:
    """Claim and run the job when it is free; -> its status afterwards (done or busy), the state."""
    while True:
        status, run, attempt = ctx.job_state(state, kind, k)
        if status != "free":
            return status, state
        if ctx.claim(kind, k, attempt):
            _do_job(ctx, kind, k, attempt, run)
            state = ctx.scan()
            status, _, _ = ctx.job_state(state, kind, k)
            if status != "done":
                raise RuntimeError(f"fold {k} ({kind}) ended without a FINISHED run")
            return status, state
        state = ctx.scan()  # another worker took this attempt: look again


def _do_job(ctx: _Context, kind: str, k: int, attempt: int, previous) -> None:
    from emoexp.data.folds import check_views, fold_bundle

    t0, c0 = time.perf_counter(), time.process_time()   # wall and CPU time (benchmarks/bench_cv.py)
    fold = ctx.folds[k]
    views = ctx.pool.views(fold.sides())
    check_views(ctx.pool, fold, views)
    bundle = fold_bundle(ctx.data, ctx.pool, fold, views, ctx.scheme)
    tags = {**ctx.base_tags, T.TAG_FOLD: str(k), T.TAG_LEAKAGE: "passed", TAG_JOB: ctx.job_key(kind, k),
            TAG_ATTEMPT: str(attempt), TAG_WORKER: ctx.worker.claim_value}
    test_subjects = None if ctx.pool.subjects is None else ctx.pool.subjects[np.asarray(views.units["test"])]
    t_views = time.perf_counter() - t0
    out: dict[str, Any] = {"kind": kind, "fold": k, "attempt": attempt, "views_s": t_views}
    if kind == "deep":
        out.update(_train_fold(ctx, k, bundle, tags, test_subjects, previous))
    else:
        out.update(_baseline_fold(ctx, k, bundle, tags, previous))
    out["job_s"], out["job_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    ctx.outcome[(kind, k)] = out


def _train_fold(ctx: _Context, k: int, bundle, tags: dict[str, str], test_subjects, previous) -> dict[str, Any]:
    from emoexp import engine
    from emoexp.config import apply_overrides

    ends: list[tuple[float, float]] = []

    def timer(epoch: int, metrics: dict[str, float]) -> bool:
        ends.append((time.perf_counter(), time.process_time()))
        return False

    proxy = _fold_task(ctx.task, test_subjects)
    resume = _continuation(ctx, previous)
    t0, c0 = time.perf_counter(), time.process_time()
    result = None
    if resume is not None:
        _, cfg, plan = resume
        ctx.client.log_batch(previous.info.run_id, tags=_run_tags({TAG_ATTEMPT: tags[TAG_ATTEMPT],
                                                                    TAG_WORKER: tags[TAG_WORKER]}))
        log.info("fold %d: continuing run %s from epoch %d", k, previous.info.run_id, int(plan.state["epoch"]))
        try:
            result = engine.fit(proxy, cfg, resume=plan, data=bundle, nested=True, epoch_callback=timer)
            status = "continued"
        except ValueError as e:
            if "nothing to do" not in str(e):
                raise
            log.info("fold run %s had trained its last epoch (%s): training the fold again", previous.info.run_id, e)
            _close(ctx.client, previous)
    if result is None:
        cfg = apply_overrides(ctx.asked, {"run_name": f"{ctx.run_base}-fold{k}"})
        log.info("fold %d of %d: training (%d train, %d val, %d test samples)", k, len(ctx.folds),
                 len(bundle.train), len(bundle.val), len(bundle.test))
        result = engine.fit(proxy, cfg, data=bundle, nested=True, extra_tags=tags, epoch_callback=timer)
        status = "trained"
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    loop = [h.get(T.M_EPOCH_TIME, 0.0) for h in result.history[result.first_epoch - 1:]]
    return {"run_id": result.run_id, "status": status, "fit_s": fit_s, "fit_cpu_s": fit_cpu_s,
            "train_loop_s": float(sum(loop)), "epoch_ends": [w - t0 for w, _ in ends],
            "epoch_ends_cpu": [c - c0 for _, c in ends], "epochs": len(ends)}


def _continuation(ctx: _Context, previous):
    """(task, cfg, Resume) to continue a killed or failed fold run, or None to start afresh
    (no run, or no checkpoint); a run not continued is closed."""
    from emoexp import engine

    if previous is None:
        return None
    run_id = previous.info.run_id
    try:
        plan = engine.plan_continue(run_id)
    except ValueError as e:
        log.info("fold run %s cannot be continued (%s): training the fold again", run_id, e)
        plan = None
    if plan is None:
        _close(ctx.client, previous)
    return plan


def _close(client, run) -> None:
    with contextlib.suppress(Exception):
        client.set_tag(run.info.run_id, T.TAG_STOP_REASON, "superseded")
        if run.info.status in ("RUNNING", "SCHEDULED"):
            client.set_terminated(run.info.run_id, "FAILED")


def _run_tags(tags: dict[str, str]):
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in tags.items()]


def _baseline_fold(ctx: _Context, k: int, bundle, tags: dict[str, str], previous) -> dict[str, Any]:
    if previous is not None:
        _close(ctx.client, previous)
    baselines = _baselines()
    t0 = time.perf_counter()
    with T.mlflow_run(experiment_name=ctx.cfg.experiment_name or ctx.task.name, nested=True,
                      run_name=f"{ctx.run_base}-fold{k}-baseline",
                      description=f"Classical baseline of fold {k} ({ctx.scheme.spec}) of {ctx.task.name}") as run:
        run.set_tags({**tags, T.TAG_MODEL_KIND: T.MODEL_KIND_BASELINE})
        run.log_params({"n_train": len(bundle.train), "n_val": len(bundle.val), "n_test": len(bundle.test),
                        "n_classes": len(bundle.class_names), "split_scheme": bundle.split["scheme"],
                        "seed": ctx.cfg.seed})
        run.log_text(json.dumps(bundle.split, indent=2, default=str), T.ART_SPLIT)
        baselines.fit_baseline(ctx.task, ctx.cfg, bundle, run=run)
    return {"run_id": run.run_id, "status": "trained", "fit_s": time.perf_counter() - t0}


def _fold_task(task, test_subjects: np.ndarray | None):
    """The task as the engine sees it for one fold: a copy of it, the same in every way, except
    that after the test pass it also writes, per test subject, the confusion matrix
    (``eval/test_subjects.json``) beside the task's own error analysis."""
    import copy

    fold_task = copy.copy(task)
    own = task.error_analysis

    def error_analysis(dataset, preds: dict, heads: dict[str, list[str]], out_dir):
        result = own(dataset, preds, heads, out_dir)
        primary = next(iter(heads))
        p = preds[primary]
        if test_subjects is not None and len(test_subjects) == len(p["targets"]):
            n_cls = len(heads[primary])
            y, yhat = np.asarray(p["targets"]), np.asarray(p["probs"]).argmax(axis=1)
            doc: dict[str, Any] = {"classes": list(heads[primary]), "subjects": {}}
            for s in sorted(set(test_subjects.tolist())):
                m = test_subjects == s
                cm = np.bincount(y[m] * n_cls + yhat[m], minlength=n_cls * n_cls).reshape(n_cls, n_cls)
                doc["subjects"][s] = {"n": int(m.sum()), "confusion": cm.tolist()}
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / ART_TEST_SUBJECTS).write_text(json.dumps(doc, indent=1))
        return result

    fold_task.error_analysis = error_analysis
    return fold_task


# ----------------------------------------------------------------------------------------------
# Aggregates


def is_final_metric(key: str) -> bool:
    """A fold's end-of-run metric (``test_*``, ``best_val_macro_f1``, ``best_epoch``, another
    head's ``<head>.test_*``), not a per-epoch, per-class or bookkeeping one."""
    if "_f1." in key:
        return False
    name = key.rsplit(".", 1)[-1]
    return name.startswith("test_") or name in (T.M_BEST_VAL_F1, T.M_BEST_EPOCH)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def _fold_rows(ctx: _Context, state: dict, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for f in ctx.folds:
        row: dict[str, Any] = {"fold": f.index, "metrics": {}, "n_train": len(f.train), "n_val": len(f.val),
                               "n_test": len(f.test)}
        if ctx.pool.subjects is not None:
            row["test_subjects"] = sorted(set(ctx.pool.subjects[f.test].tolist()))
        for kind in kinds:
            status, run, _ = ctx.job_state(state, kind, f.index)
            if status != "done":
                continue
            prefix = "" if kind == "deep" else "baseline."
            row[f"{prefix}run_id"] = run.info.run_id
            own = ctx.outcome.get((kind, f.index))
            row[f"{prefix}status"] = own["status"] if own else "reused"
            if own:
                row[f"{prefix}timing"] = {k: v for k, v in own.items()
                                          if k.endswith("_s") or k in ("epoch_ends", "epoch_ends_cpu", "epochs")}
            row["metrics"].update({prefix + m: v for m, v in run.data.metrics.items() if is_final_metric(m)})
        rows.append(row)
    return rows


def _aggregate(ctx: _Context, parent, rows: list[dict[str, Any]], kinds: tuple[str, ...]):
    """Mean and std of every final metric over the folds, ``cv_folds.csv`` and ``cv_subjects.csv``."""
    metrics: dict[str, float] = {"n_folds": float(len(rows))}
    keys = sorted({m for r in rows for m in r["metrics"]})
    for m in keys:
        vals = [r["metrics"][m] for r in rows if m in r["metrics"] and math.isfinite(r["metrics"][m])]
        if len(vals) != len(rows):
            continue  # a metric some folds lack (a class-less head): no aggregate
        mean, std = mean_std(vals)
        metrics[f"{m}_mean"] = mean
        if len(vals) > 1:
            metrics[f"{m}_std"] = std
    _log_new(parent, metrics)
    subjects = _subject_rows(ctx, rows) if ctx.pool.subjects is not None else []
    parent.log_text(_csv(_fold_table(rows, keys)), T.ART_CV_FOLDS)
    if subjects:
        parent.log_text(_csv(subjects), T.ART_CV_SUBJECTS)
    return metrics, subjects


def _log_new(parent, metrics: dict[str, float]) -> None:
    """Log only what the parent does not hold yet with the same value (several workers, reruns)."""
    have = parent.client.get_run(parent.run_id).data.metrics
    fresh = {k: v for k, v in metrics.items() if not (k in have and np.isclose(have[k], v, rtol=1e-9, atol=0))}
    if fresh:
        parent.log_metrics(fresh, step=0)


def _fold_table(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = {"fold": r["fold"], "run_id": r.get("run_id", ""), "test_subjects": ";".join(r.get("test_subjects", [])),
             "n_train": r["n_train"], "n_val": r["n_val"], "n_test": r["n_test"]}
        if any("baseline.run_id" in x for x in rows):
            d["baseline_run_id"] = r.get("baseline.run_id", "")
        d.update({m: r["metrics"].get(m, "") for m in keys})
        out.append(d)
    return out


def _subject_rows(ctx: _Context, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per test subject: its confusion matrices summed over the folds that test it, and the
    accuracy and macro-F1 they give; the baseline's where the subject was tested alone."""
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        doc = _test_subjects(ctx.client, r.get("run_id"))
        if not doc:
            continue
        for s, v in doc["subjects"].items():
            e = per.setdefault(s, {"folds": [], "n": 0, "cm": np.zeros((len(doc["classes"]),) * 2, dtype=np.int64),
                                   "baseline": []})
            e["folds"].append(r["fold"])
            e["n"] += int(v["n"])
            e["cm"] += np.asarray(v["confusion"], dtype=np.int64)
            alone = len(r.get("test_subjects", [])) == 1
            if alone and "baseline.test_accuracy" in r["metrics"]:
                e["baseline"].append((r["metrics"]["baseline.test_accuracy"], r["metrics"].get("baseline.test_macro_f1")))
    out = []
    for s in sorted(per, key=_natural):
        e = per[s]
        acc, f1 = confusion_scores(e["cm"])
        row = {"subject": s, "folds": ";".join(str(f) for f in e["folds"]), "n": e["n"],
               T.M_TEST_ACC: acc, T.M_TEST_F1: f1}
        if len(e["baseline"]) == 1:
            row[f"baseline.{T.M_TEST_ACC}"], row[f"baseline.{T.M_TEST_F1}"] = e["baseline"][0]
        out.append(row)
    return out


def confusion_scores(cm: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro-F1 (every class counted, an absent one as 0, as scikit-learn with
    ``zero_division=0``) of a confusion matrix (rows: true, columns: predicted)."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return (float(tp.sum() / total) if total else float("nan")), float(f1.mean())


def _test_subjects(client, run_id: str | None) -> dict | None:
    if not run_id:
        return None
    local = T.local_run_dir(run_id) / T.ART_EVAL_DIR / ART_TEST_SUBJECTS
    try:
        text = local.read_text() if local.is_file() else fetch_text(
            client, run_id, f"{T.ART_EVAL_DIR}/{ART_TEST_SUBJECTS}")
        return json.loads(text)
    except Exception as e:  # a fold run from before per-subject records: no row for it
        log.warning("fold run %s: no per-subject test record (%s)", run_id, e)
        return None


def _natural(s: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()
