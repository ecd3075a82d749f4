"""Optuna studies driving the engine: each trial a nested MLflow run, pruned per epoch, resumable.

``--n-trials`` is the number of finished (COMPLETE or PRUNED) trials the study ends with, whoever
runs them: the same command run again after an interruption finishes what is left
(``load_if_exists``), and workers started at once on one storage share the work. A trial that
fails is replaced (a worker gives up after ``n_trials`` failures of its own); a worker killed
mid-trial stops beating (RDB heartbeat) and its trial is run again with the same parameters by
another worker (Optuna's ``RetryHeartbeatStaleTrialCallback``). Workers do not overshoot: a trial
started when enough others are finished or running ahead of it is dropped at once (FAIL, user
attribute ``emoexp.surplus``) before it trains.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoexp import tracking as T
from emoexp.config import (
    DEFAULT_OPTUNA_STORAGE,
    OPTUNA_STORAGE_ENV,
    ConfigError,
    apply_overrides,
    check_device,
    check_metric_name,
    check_tracking_store,
    field_types,
    read_yaml_mapping,
    redact,
)
from emoexp.tasks import get_task

log = logging.getLogger(__name__)

DEFAULT_OBJECTIVE = T.M_BEST_VAL_F1
TIE_BREAK = 1e-6  # weight of the validation loss in the values reported to the pruner
MAX_RETRY = 2     # a lost worker's trial is run again at most this many times
ATTR_SURPLUS = "emoexp.surplus"   # user attr of a trial dropped because the study had its trials
ATTR_WORKER = "emoexp.worker"     # user attr: host:pid of the worker that ran the trial
ATTR_WORKER_START = "emoexp.worker_start"  # user attr: that process's start time (a reused pid is another)


@dataclass
class SweepResult:
    study_name: str
    parent_run_id: str | None
    n_trials: int                       # trials in the study now (all states, dropped ones too)
    best_value: float | None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_id: str | None = None
    states: dict[str, int] = field(default_factory=dict)   # Optuna's states, dropped surplus trials left out
    epochs_trained: int = 0             # this invocation's epochs, all trials
    n_finished: int = 0                 # COMPLETE + PRUNED: what n_trials counts
    n_surplus: int = 0                  # trials dropped before training (workers' race at the end)


# ---------------------------------------------------------------------------------------------
# Search spaces


def default_space_path(task_name: str) -> Path:
    from emoexp.project import project_dir

    try:
        root = project_dir()
    except FileNotFoundError:
        root = Path.cwd()
    return root / "experiments" / "sweeps" / f"{task_name}.yaml"


def load_space(path: str | Path, task_name: str) -> dict[str, dict[str, Any]]:
    """Read and check a search space: ``name: {type: float|int, low, high, log?, step?}`` or
    ``name: {type: categorical, choices: [...]}``; names must be the task's options."""
    p = Path(path)
    shape = "a search space is a mapping of option -> spec"
    raw = read_yaml_mapping(p, "search space (write one, or pass --space FILE)", shape)
    space = raw.get("params", raw)
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{p}: a search space is a mapping of option -> spec")
    fields = field_types(get_task(task_name).config_cls)
    for name, spec in space.items():
        where = f"{p}: {name}"
        if name not in fields:
            raise ConfigError(f"{where}: not an option of {task_name}")
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"{where}: needs a 'type' (float, int or categorical)")
        kind = spec["type"]
        if kind in ("float", "int"):
            if "low" not in spec or "high" not in spec or not spec["low"] < spec["high"]:
                raise ConfigError(f"{where}: needs low < high")
            if spec.get("log") and spec["low"] <= 0:
                raise ConfigError(f"{where}: log scale needs low > 0")
        elif kind == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ConfigError(f"{where}: needs a non-empty list of choices")
        else:
            raise ConfigError(f"{where}: unknown type {kind!r} (float, int or categorical)")
    return space


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            out[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                            log=bool(spec.get("log", False)), step=spec.get("step"))
        elif spec["type"] == "int":
            out[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]),
                                          log=bool(spec.get("log", False)), step=int(spec.get("step", 1)))
        else:
            out[name] = trial.suggest_categorical(name, spec["choices"])
    return out


# ---------------------------------------------------------------------------------------------
# Optuna plumbing


def make_pruner(name: str):
    import optuna

    if name == "median":
        # Let two trials finish and each trial see 1 epoch before judging it.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "wilcoxon":
        # per fold (sweep --folds): stop a trial once its folds are significantly worse than the best's
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    raise ConfigError(f"pruner: {name!r} is not one of median, hyperband, wilcoxon, none")


def make_sampler(seed: int):
    """TPE whose random draws are seeded per trial number (``seed`` and the trial's number), not
    per process: workers started with the same command line on one study draw different
    parameters, and a study run by one worker or by several draws the same start-up trials."""
    import optuna

    class TrialSeededTPESampler(optuna.samplers.TPESampler):
        def before_trial(self, study, trial):
            s = (int(seed) * 1_000_003 + int(trial.number)) % (2**32)
            try:  # Optuna keeps its generators in LazyRandomState objects (private, stable 3.x-5.x)
                self._rng.rng.seed(s)
                self._random_sampler._rng.rng.seed(s)
            except AttributeError:  # another layout: distinct draws still matter more than repeatability
                self.reseed_rng()
            super().before_trial(study, trial)

    return TrialSeededTPESampler(seed=seed)


def resolve_storage(url: str = "") -> str:
    """``url``, or where empty ``$EMOEXP_OPTUNA_STORAGE``, else ``sqlite:///optuna.db``. A step that
    passes an empty storage (the pipeline's sweep) then logs no URL, so no password, in its params."""
    return url or os.environ.get(OPTUNA_STORAGE_ENV) or DEFAULT_OPTUNA_STORAGE


def make_storage(url: str, heartbeat_interval: int = 60):
    """:func:`_make_storage`, with a storage that cannot be opened (unknown scheme, unparsable URL,
    missing folder, database down) a one-line :class:`ConfigError` naming the URL (no password)."""
    try:
        return _make_storage(url, heartbeat_interval)
    except ConfigError:
        raise
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if text.startswith("(") and ") " in text:  # "(sqlite3.OperationalError) unable to open ..."
            text = text.split(") ", 1)[1]
        raise ConfigError(f"optuna storage {redact(url)}: {text[:300]}") from None


def _make_storage(url: str, heartbeat_interval: int = 60):
    """A URL -> an Optuna storage. RDB URLs (sqlite, postgresql, mysql) get a heartbeat, so a
    worker killed mid-trial leaves a FAIL, not a trial RUNNING forever, and that trial is queued
    again (:class:`RetryLostTrial`); ``journal:PATH`` is the file journal (faster, no heartbeat)."""
    import warnings

    import optuna

    # Heartbeats are "experimental" in Optuna since 2.9; they are what fails a dead worker's trial.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several workers on one file: wait for the lock instead of failing "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 30}}

    import sqlalchemy.exc

    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                grace_period=max(2 * heartbeat_interval, 2),
                heartbeat_stale_trial_callback=RetryLostTrial(MAX_RETRY),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            # Workers started at once on a new database race to create its schema; the loser
            # retries once the winner's tables are there. A database that is unreachable fails.
            text = str(e).lower()  # sqlite: UNIQUE constraint, locked; PostgreSQL: duplicate key, exists
            if attempt == 5 or not any(w in text for w in ("unique", "duplicate", "locked", "exists")):
                raise
            log.info("optuna storage busy (%s); retrying", str(e).splitlines()[0])
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class RetryLostTrial:
    """The storage's ``heartbeat_stale_trial_callback``: Optuna's
    ``RetryHeartbeatStaleTrialCallback`` queues the lost trial again (WAITING, same parameters,
    at most ``max_retry`` times), and the lost trial's MLflow run ends FAILED, tagged
    ``emoexp.stop_reason=worker_lost``, so neither side shows a dead trial as RUNNING."""

    def __init__(self, max_retry: int = MAX_RETRY):
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self._retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study, trial, why: str = "no heartbeat") -> None:
        worker = trial.user_attrs.get(ATTR_WORKER, "?")
        log.warning("trial %d of %s lost its worker %s (%s): marked FAIL and queued again",
                    trial.number, study.study_name, worker, why)
        try:
            _fail_trial_runs(study.study_name, trial.number)
        except Exception as e:  # the retry matters more than the record
            log.warning("could not mark the MLflow run of trial %d FAILED: %s", trial.number, e)
        self._retry(study, trial)


def _fail_trial_runs(study_name: str, number: int) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=(
        f"tags.`{T.TAG_STUDY}` = '{study_name}' AND tags.`{T.TAG_TRIAL}` = '{number}' "
        "AND attributes.status = 'RUNNING'"))
    for run in runs:
        client.set_tag(run.info.run_id, T.TAG_STOP_REASON, "worker_lost")
        client.set_terminated(run.info.run_id, "FAILED")


def _fail_stale(study) -> None:
    """Fail the trials whose worker is gone now, not when this worker's next trial starts, and
    queue them again (:class:`RetryLostTrial`): a worker on this host is known dead at once (its
    pid), one on another host when its heartbeat stops (RDB storages)."""
    from optuna.storages import fail_stale_trials

    _fail_dead_workers(study)
    fail_stale_trials(study)


def _fail_dead_workers(study) -> None:
    """RUNNING trials whose worker ran on this host and whose process is gone: FAIL, queued again."""
    import copy

    import optuna
    from optuna.trial import TrialState

    from emoexp import liveness as L

    me = L.hostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(t.user_attrs.get(ATTR_WORKER, "")).rpartition(":")
        if host != me:
            continue
        state = L.check(host, pid, t.user_attrs.get(ATTR_WORKER_START))
        if not state.dead:
            continue
        storage = study._storage
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        RetryLostTrial(MAX_RETRY)(study, copy.deepcopy(storage.get_trial(t._trial_id)), why=state.why)


def _direction(metric: str) -> str:
    return "minimize" if "loss" in metric else "maximize"


# ---------------------------------------------------------------------------------------------
# The sweep


def run_sweep(
    task_name: str,
    base_overrides: dict[str, Any],
    *,
    n_trials: int,
    storage: str = DEFAULT_OPTUNA_STORAGE,
    study_name: str = "",
    space: str = "",
    pruner: str = "median",
    metric: str = DEFAULT_OBJECTIVE,
    seed: int = 0,
    heartbeat_interval: int = 60,
    experiment_name: str = "",
    folds: str = "",
) -> SweepResult:
    """Run (or resume) a study of ``n_trials`` trials of ``task_name``; returns its summary.

    ``folds`` (a cross-validation scheme, :mod:`emoexp.cv`): each trial is a cross-validation and
    its value the fold mean of ``metric``; trials are pruned per fold (``wilcoxon``, which the
    default ``median`` becomes) instead of per epoch. An empty ``storage`` is :func:`resolve_storage`'s."""
    import optuna

    given_storage, storage = storage, resolve_storage(storage)
    task = get_task(task_name)
    base_cfg = apply_overrides(task.default_config(), base_overrides)
    space_spec = load_space(space or default_space_path(task_name), task_name)
    fixed = set(base_overrides) & set(space_spec)
    if fixed:
        log.info("searched options also given on the command line (the search wins): %s", ", ".join(sorted(fixed)))
    study_name = study_name or f"{task_name}-sweep"
    if n_trials < 1:
        raise ConfigError("n_trials must be >= 1")
    if folds:
        from emoexp.data.folds import parse_scheme

        parse_scheme(folds)
        if pruner == "hyperband":
            raise ConfigError("--folds prunes per fold: use --pruner wilcoxon (the default) or none")
        pruner = "wilcoxon" if pruner == "median" else pruner
    if heartbeat_interval < 1:
        raise ConfigError(f"heartbeat must be >= 1 second, got {heartbeat_interval}")
    check_metric_name(metric, "metric", final=True)
    check_device(base_cfg.device)
    check_tracking_store()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name, storage=make_storage(storage, heartbeat_interval), load_if_exists=True,
        direction=_direction(metric), sampler=make_sampler(seed),
        pruner=make_pruner(pruner),
    )
    study.set_user_attr("task", task_name)
    epochs_trained = 0
    experiment = experiment_name or base_cfg.experiment_name or task_name
    parent_id = None
    reattach = _dead_parent(experiment, study_name)
    if reattach:
        log.info("study %s: reattaching to its sweep run %s, whose worker is gone", study_name, reattach)
    with T.mlflow_run(experiment_name=experiment, run_name=f"sweep-{study_name}", run_id=reattach,
                      description=f"Optuna study {study_name}: {n_trials} trials of {task_name}") as parent:
        parent_id = parent.run_id
        parent.set_tags({T.TAG_STUDY: study_name, T.TAG_TASK: task_name, T.TAG_MODALITY: task.modality,
                         T.TAG_SWEEP: T.SWEEP_PARENT})
        # storage and space as given (so `mlflow run -e sweep` and `emoexp sweep` log the same
        # params), and what an empty one resolved to, as for a task's resolved settings
        parent.log_params({"task": task_name, "n_trials": n_trials, "storage": redact(given_storage),
                           "study_name": study_name, "pruner": pruner, T.PARAM_SWEEP_METRIC: metric,
                           "space": str(space or ""), **({"folds": folds} if folds else {}),
                           **({} if given_storage else {f"{T.PARAM_RESOLVED_PREFIX}storage": redact(storage)}),
                           **({} if space else {f"{T.PARAM_RESOLVED_PREFIX}space": str(default_space_path(task_name))})})

        def objective(trial) -> float:
            nonlocal epochs_trained
            trial.set_user_attr(ATTR_WORKER, _worker_id())
            trial.set_user_attr(ATTR_WORKER_START, _worker_start())
            ahead = sum(1 for t in study.get_trials(deepcopy=False, states=_counted_states()) if t.number < trial.number)
            if ahead >= n_trials:  # another worker started the study's last trial at the same moment
                trial.set_user_attr(ATTR_SURPLUS, True)
                raise SurplusTrial(f"trial {trial.number} not needed: {ahead} trials are finished or under way "
                                   f"ahead of it (n_trials={n_trials}); dropped before training")
            params = suggest(trial, space_spec)
            cfg = apply_overrides(base_cfg, params)
            cfg = apply_overrides(cfg, {"run_name": f"{task_name}-trial{trial.number:03d}",
                                        "experiment_name": experiment})
            if folds:  # a cross-validation per trial, pruned per fold
                from emoexp.cv import fold_trial

                def count(n: int) -> None:
                    nonlocal epochs_trained
                    epochs_trained += n

                return fold_trial(task, cfg, folds, trial, metric,
                                  {T.TAG_STUDY: study_name, T.TAG_TRIAL: trial.number}, count)
            best_so_far = -math.inf if _direction(metric) == "maximize" else math.inf
            per_epoch = T.M_VAL_F1 if metric == T.M_BEST_VAL_F1 else metric

            def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
                nonlocal best_so_far, epochs_trained
                epochs_trained += 1
                v = metrics.get(per_epoch)
                if v is None:
                    return False
                if per_epoch != T.M_VAL_LOSS and math.isfinite(metrics.get(T.M_VAL_LOSS, math.nan)):
                    # Early epochs often tie on F1 (every class-collapsed model scores the same
                    # floor); a micro tie-break by validation loss lets the pruner order them.
                    sign = -1.0 if _direction(metric) == "maximize" else 1.0
                    v = v + sign * TIE_BREAK * min(metrics[T.M_VAL_LOSS], 1e3)
                best_so_far = max(best_so_far, v) if _direction(metric) == "maximize" else min(best_so_far, v)
                trial.report(best_so_far, epoch)
                return trial.should_prune()

            from emoexp import engine

            result = engine.fit(task, cfg, nested=True, epoch_callback=on_epoch,
                                extra_tags={T.TAG_STUDY: study_name, T.TAG_TRIAL: trial.number})
            trial.set_user_attr("mlflow_run_id", result.run_id)
            if result.stop_reason == "pruned":
                raise optuna.TrialPruned(f"pruned at epoch {len(result.history)}")
            value = _objective_value(result, metric)
            if not math.isfinite(value):
                raise FloatingPointError(f"trial {trial.number}: {metric} is {value}")
            return value

        _run_trials(study, objective, n_trials, heartbeat=not storage.startswith("journal:"),
                    poll_s=max(0.5, min(5.0, heartbeat_interval / 2)), metric=metric,
                    step="fold" if folds else "epoch")
        result = _summarise(study, parent_id, epochs_trained)
        _record_parent(parent, study, result, metric)
    return result


def _dead_parent(experiment: str, study_name: str) -> str | None:
    """The sweep run of ``study_name`` in ``experiment`` that a killed worker left (RUNNING with
    its process gone, or marked KILLED), newest first; None when there is none (or when this
    sweep runs inside another run, e.g. ``mlflow run``'s step, which is then its run)."""
    import mlflow
    from mlflow import MlflowClient

    if os.environ.get("MLFLOW_RUN_ID") or mlflow.active_run() is not None:
        return None
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], filter_string=(
        f"tags.`{T.TAG_STUDY}` = '{study_name}' AND tags.`{T.TAG_SWEEP}` = '{T.SWEEP_PARENT}'"))
    for run in runs:
        if run.info.status == "KILLED":
            return run.info.run_id
        state = T.run_liveness(run)
        if state is not None and state.dead:
            return run.info.run_id
    return None


class SurplusTrial(RuntimeError):
    """A trial started when the study had its trials (finished or under way): dropped untrained."""


def _finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def _counted_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def _worker_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_start() -> str:
    from emoexp.liveness import this_process

    return this_process()["start"]


def _run_trials(study, objective, n_trials: int, *, heartbeat: bool, poll_s: float, metric: str = "",
                step: str = "epoch") -> None:
    """Run trials until the study has ``n_trials`` finished (COMPLETE or PRUNED) ones, counting
    every worker's. One trial per ``optimize`` call (Optuna's heartbeat, pruning, NaN and error
    handling), with the count checked before each: ``MaxTrialsCallback`` checks only after a trial,
    so workers finishing together would each start one more. When the others' running trials would
    finish the study, this worker waits for them instead of leaving: if their worker dies, their
    heartbeat stops and the trial comes back (WAITING) to be run here."""
    from optuna.trial import TrialState

    finished_states = _finished_states()
    own_failures = 0
    said_wait = False
    last: list = []
    while True:
        _fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in finished_states for t in trials)
        if finished >= n_trials:
            log.info("study %s: %d of %d trials finished", study.study_name, finished, n_trials)
            return
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        if not waiting and finished + running >= n_trials:
            if not heartbeat:  # no heartbeat: a dead worker's trial cannot be told from a slow one
                log.info("study %s: %d finished, %d running elsewhere: leaving them to their workers",
                         study.study_name, finished, running)
                return
            if not said_wait:
                log.info("study %s: %d finished, %d running elsewhere: waiting for them (a lost worker's "
                         "trial comes back here)", study.study_name, finished, running)
                said_wait = True
            time.sleep(poll_s)
            continue
        if own_failures >= n_trials:
            log.error("study %s: %d trials failed in this worker: giving up (see the trials' error.txt)",
                      study.study_name, own_failures)
            return
        said_wait = False
        last.clear()
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True,
                       callbacks=[lambda _study, frozen: last.append(frozen)])
        if last and not last[-1].user_attrs.get(ATTR_SURPLUS):
            log.info("%s", trial_line(last[-1], metric, step))
        if last and last[-1].state == TrialState.FAIL and not last[-1].user_attrs.get(ATTR_SURPLUS):
            own_failures += 1


def trial_line(trial, metric: str, step: str = "epoch") -> str:
    """One line per finished trial: ``trial 3: lr=0.0003, batch_size=16 -> best_val_macro_f1
    0.4123``, ``... -> pruned at epoch 2`` (``at fold 2`` for cross-validated trials) or
    ``... -> failed``."""
    from optuna.trial import TrialState

    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items()) or "(no parameters)"
    if trial.state == TrialState.COMPLETE:
        outcome = f"{metric or 'value'} {trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        n = trial.last_step
        outcome = f"pruned at {step} {n + 1 if step == 'fold' else n}" if n is not None else "pruned"
    else:
        outcome = trial.state.name.lower()
    return f"trial {trial.number}: {params} -> {outcome}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_lines(result: SweepResult, metric: str) -> list[str]:
    """The end of a sweep, for people: the trials by outcome, the best trial and where it is."""
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.states.items())) or "no trials"
    lines = [f"study {result.study_name}: {result.n_trials} trials ({counts})"]
    if result.best_value is not None:
        params = ", ".join(f"{k}={_short(v)}" for k, v in result.best_params.items())
        lines.append(f"  best trial: {metric} = {result.best_value:.4f} with {params or 'the defaults'}")
        lines.append(f"  best trial's run: {result.best_run_id}   sweep run: {result.parent_run_id}")
    return lines


def _objective_value(result, metric: str) -> float:
    if metric == T.M_BEST_VAL_F1:
        return result.best_val_macro_f1
    if metric in result.test_metrics:
        return result.test_metrics[metric]
    vals = [h[metric] for h in result.history if metric in h]
    if not vals:
        raise ConfigError(f"metric {metric!r} was not logged by the trial")
    return min(vals) if "loss" in metric else max(vals)


def _summarise(study, parent_id: str | None, epochs_trained: int) -> SweepResult:
    from collections import Counter

    trials = study.get_trials(deepcopy=False)
    surplus = [t for t in trials if t.user_attrs.get(ATTR_SURPLUS)]
    states = Counter(t.state.name for t in trials if not t.user_attrs.get(ATTR_SURPLUS))
    try:
        best = study.best_trial
    except ValueError:
        best = None
    return SweepResult(
        study_name=study.study_name, parent_run_id=parent_id, n_trials=len(trials),
        best_value=best.value if best else None, best_params=dict(best.params) if best else {},
        best_run_id=best.user_attrs.get("mlflow_run_id") if best else None,
        states=dict(states), epochs_trained=epochs_trained,
        n_finished=states.get("COMPLETE", 0) + states.get("PRUNED", 0), n_surplus=len(surplus),
    )


def _record_parent(parent, study, result: SweepResult, metric: str) -> None:
    import tempfile

    if result.best_value is not None:
        parent.log_metrics({f"best_{metric}" if not metric.startswith("best_") else metric: result.best_value,
                            "n_complete": result.states.get("COMPLETE", 0),
                            "n_pruned": result.states.get("PRUNED", 0),
                            "n_failed": result.states.get("FAIL", 0)}, step=0)
        parent.log_params({f"best.{k}": v for k, v in result.best_params.items()})
        if result.best_run_id:
            parent.set_tags({T.TAG_BEST_RUN: result.best_run_id})
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write_study_plots(study, Path(tmp)).items():
            parent.log_artifact(path, "optuna")
            log.debug("logged %s", name)


def write_study_plots(study, out_dir: Path) -> dict[str, Path]:
    """Optimization history, parameter importances and parallel coordinates as plotly HTML."""
    from optuna import visualization as vis

    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for name, fn in (("history", vis.plot_optimization_history),
                     ("param_importances", vis.plot_param_importances),
                     ("parallel_coordinate", vis.plot_parallel_coordinate)):
        try:
            fig = fn(study)
        except Exception as e:  # e.g. importances need two finished trials with varied params
            log.info("no %s plot: %s", name, e)
            continue
        path = out_dir / f"{name}.html"
        fig.write_html(str(path), include_plotlyjs="cdn" if os.environ.get("EMOEXP_PLOTLY_CDN") else True)
        made[name] = path
    return made
