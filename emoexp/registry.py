"""Register, compare and promote models with MLflow registry aliases (``staging``, ``production``).

One registered model per task (``Task.registered_model``). ``promote`` registers a task's best
finished run and moves ``@staging`` to it only when it beats the current holder on the chosen
metric, recording why on the version; ``production`` then follows ``staging`` by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emoexp import tracking as T
from emoexp.tasks import get_task, list_tasks

ACTIONS = ("promoted", "kept", "registered-only", "no-candidate")


@dataclass
class PromotionOutcome:
    """What ``promote`` did for one task (``action`` is one of :data:`ACTIONS`)."""

    task: str
    registered_model: str
    run_id: str | None
    version: str | None
    value: float | None
    previous_version: str | None
    previous_value: float | None
    action: str
    message: str
    trained: bool = True   # False: the task has no run at all (``promote`` does not mention it)


def modality_tasks() -> dict[str, list[str]]:
    """modality -> its task names, from the live task registry (tasks added later appear here)."""
    out: dict[str, list[str]] = {}
    for name in list_tasks():
        out.setdefault(get_task(name).modality, []).append(name)
    return out


# A snapshot for display; code paths call modality_tasks() so they see every registered task.
MODALITY_TASKS = modality_tasks()


def tasks_of(modality: str, task: str | None = None) -> list[str]:
    """The task names ``promote`` works on: all of ``modality``'s, or just ``task`` (checked)."""
    known = modality_tasks()
    if modality not in known:
        raise ValueError(f"no task of modality {modality!r} is registered yet; known: {', '.join(sorted(known))}")
    if task is None:
        return list(known[modality])
    if task not in known[modality]:
        get_task(task)  # an unknown name gets the registry's own error listing every task
        raise ValueError(f"task {task!r} is of modality {get_task(task).modality!r}, not {modality!r}")
    return [task]


def minimize(metric: str) -> bool:
    """Losses are minimised, everything else (accuracy, F1) maximised."""
    return "loss" in metric


def _better(candidate: float, holder: float | None, metric: str) -> bool:
    if holder is None or math.isnan(holder):
        return True
    return candidate < holder if minimize(metric) else candidate > holder


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def model_value(client, run, metric: str) -> float | None:
    """``metric`` for the run's *logged model*, i.e. at its best epoch (None if not logged).

    The engine logs the best epoch's weights (best by the run's ``monitor``), so the value at
    step ``best_epoch`` is the model's; ``best_val_macro_f1`` (the maximum over epochs) is the
    model's only when the run monitored F1, so it is a fallback for ``val_macro_f1`` only.
    """
    metrics = run.data.metrics
    if metric not in metrics and not (metric == T.M_VAL_F1 and T.M_BEST_VAL_F1 in metrics):
        return None
    value: float | None = None
    best_epoch = metrics.get(T.M_BEST_EPOCH)
    if best_epoch is not None and metric in metrics:
        at_best = [m.value for m in client.get_metric_history(run.info.run_id, metric)
                   if m.step == int(best_epoch)]
        if at_best:
            value = at_best[-1]
    if value is None:
        value = metrics.get(T.M_BEST_VAL_F1) if metric == T.M_VAL_F1 and T.M_BEST_VAL_F1 in metrics else metrics.get(metric)
    return None if value is None or math.isnan(value) else float(value)


def _experiment_ids(client, experiment: str | None) -> list[str]:
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"experiment {experiment!r} not found in {_tracking_uri()}")
        return [exp.experiment_id]
    return [e.experiment_id for e in client.search_experiments()]


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _logged_model_uri(client, run) -> str | None:
    """``models:/m-...`` of the run's logged model named ``model`` (the newest if several)."""
    outputs = getattr(run, "outputs", None)
    for out in reversed(list(getattr(outputs, "model_outputs", None) or [])):
        lm = client.get_logged_model(out.model_id)
        if lm.name == T.MODEL_NAME:
            return lm.model_uri
    return None


def _runs(client, task: str, exp_ids: list[str]) -> list:
    """Every FINISHED run of ``task`` in the experiments, all pages."""
    filt = f"tags.`{T.TAG_TASK}` = '{task}' and attributes.status = 'FINISHED'"
    runs, token = [], None
    while True:
        page = client.search_runs(exp_ids, filter_string=filt, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _has_runs(client, task: str, exp_ids: list[str]) -> bool:
    """Whether ``task`` has any run (of any status) in the experiments."""
    return bool(client.search_runs(exp_ids, filter_string=f"tags.`{T.TAG_TASK}` = '{task}'", max_results=1))


def best_candidate(client, task: str, metric: str, exp_ids: list[str]) -> tuple[Any, float, str] | None:
    """(run, value, logged model URI) of the task's best finished run with a logged model."""
    best = None
    for run in _runs(client, task, exp_ids):
        value = model_value(client, run, metric)
        if value is None:
            continue
        if best is not None and not _better(value, best[1], metric):
            continue
        uri = _logged_model_uri(client, run)
        if uri is not None:
            best = (run, value, uri)
    return best


def alias_holder(client, name: str, alias: str):
    """The version holding ``name@alias``, or None (no such model, or the alias is unset)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _holder_value(client, holder, metric: str) -> float | None:
    """The value the holder was promoted with, else recomputed from its run."""
    from mlflow.exceptions import MlflowException

    tags = holder.tags or {}
    if tags.get(T.TAG_PROMOTED_METRIC) == metric and tags.get(T.TAG_PROMOTED_VALUE):
        try:
            return float(tags[T.TAG_PROMOTED_VALUE])
        except ValueError:
            pass  # a hand-edited tag: fall back to the run
    if not holder.run_id:
        return None
    try:
        return model_value(client, client.get_run(holder.run_id), metric)
    except MlflowException:
        return None  # the run was deleted: nothing to compare with


def version_for_run(client, name: str, run_id: str, model_uri: str) -> tuple[Any, bool]:
    """(version, created): the run's existing version under ``name``, else a new one."""
    import mlflow

    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return min(existing, key=lambda v: int(v.version)), False
    return mlflow.register_model(model_uri, name), True


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def promote(
    modality: str,
    *,
    metric: str = T.M_VAL_F1,
    experiment: str | None = None,
    alias: str = T.ALIAS_STAGING,
    task: str | None = None,
) -> list[PromotionOutcome]:
    """Promote each task of ``modality`` (or just ``task``); one outcome per task.

    ``alias="staging"``: register the best finished run and move ``@staging`` to it if it beats
    the holder on ``metric``. ``alias="production"``: move ``@production`` to the ``@staging``
    version.
    """
    if alias not in (T.ALIAS_STAGING, T.ALIAS_PRODUCTION):
        raise ValueError(f"alias must be {T.ALIAS_STAGING!r} or {T.ALIAS_PRODUCTION!r}, not {alias!r}")
    names = tasks_of(modality, task)
    client = _client()
    if alias == T.ALIAS_PRODUCTION:
        outcomes = [_to_production(client, get_task(n), modality) for n in names]
        if all(o.action == "no-candidate" for o in outcomes):
            models = ", ".join(get_task(n).registered_model for n in names)
            raise ValueError(f"no version of {models} holds @{T.ALIAS_STAGING}; "
                             f"run `emoexp promote {modality}` first")
        return outcomes
    exp_ids = _experiment_ids(client, experiment)
    return [_to_staging(client, get_task(n), metric, exp_ids) for n in names]


def _to_staging(client, task, metric: str, exp_ids: list[str]) -> PromotionOutcome:
    name, alias = task.registered_model, T.ALIAS_STAGING
    holder = alias_holder(client, name, alias)
    held = str(holder.version) if holder else None
    base = dict(task=task.name, registered_model=name, previous_version=held)
    cand = best_candidate(client, task.name, metric, exp_ids)
    if cand is None:
        where = f"{name}@{alias} stays at v{held}" if held else f"{name} unchanged"
        return PromotionOutcome(**base, run_id=None, version=held, value=None, previous_value=None,
                                action="no-candidate", trained=held is not None or _has_runs(client, task.name, exp_ids),
                                message=f"{task.name}: no finished run with a logged model and {metric}; {where}")
    run, value, uri = cand
    run_id = run.info.run_id
    holder_value = _holder_value(client, holder, metric) if holder else None
    if holder is not None and holder.run_id == run_id:
        return PromotionOutcome(**base, run_id=run_id, version=held, value=value, previous_value=holder_value,
                                action="kept",
                                message=f"{task.name}: kept {name}@{alias} at v{held} ({metric} {_fmt(value)}); "
                                        "it is still the best run")
    mv, created = version_for_run(client, name, run_id, uri)
    version = str(mv.version)
    if holder is not None and not _better(value, holder_value, metric):
        action = "registered-only" if created else "kept"
        what = f"registered run {run_id} as v{version}; " if created else ""
        return PromotionOutcome(**base, run_id=run_id, version=version, value=value, previous_value=holder_value,
                                action=action,
                                message=f"{task.name}: {what}kept {name}@{alias} at v{held} ({metric} "
                                        f"{_fmt(holder_value)}); the best run {run_id} ({_fmt(value)}) is not better")
    client.set_registered_model_alias(name, alias, version)
    for key, tag in ((T.TAG_PROMOTED_METRIC, metric), (T.TAG_PROMOTED_VALUE, repr(float(value))),
                     (T.TAG_PREVIOUS_VERSION, held or T.NO_VERSION)):
        client.set_model_version_tag(name, version, key, tag)
    beat = f"it beats v{held} ({_fmt(holder_value)})" if held else "first holder"
    return PromotionOutcome(**base, run_id=run_id, version=version, value=value, previous_value=holder_value,
                            action="promoted",
                            message=f"{task.name}: promoted {name} v{version} (run {run_id}, {metric} "
                                    f"{_fmt(value)}) to @{alias}; {beat}")


def _to_production(client, task, modality: str) -> PromotionOutcome:
    name = task.registered_model
    staging = alias_holder(client, name, T.ALIAS_STAGING)
    prod = alias_holder(client, name, T.ALIAS_PRODUCTION)
    held = str(prod.version) if prod else None
    if staging is None:
        trained = prod is not None or _has_runs(client, task.name, _experiment_ids(client, None))
        return PromotionOutcome(task=task.name, registered_model=name, run_id=None, version=held, value=None,
                                previous_version=held, previous_value=None, action="no-candidate", trained=trained,
                                message=f"{task.name}: no version of {name} holds @{T.ALIAS_STAGING}; "
                                        f"run `emoexp promote {modality} --task {task.name}` first")
    version = str(staging.version)
    tags = staging.tags or {}
    value = float(tags[T.TAG_PROMOTED_VALUE]) if tags.get(T.TAG_PROMOTED_VALUE) else None
    prev_value = float(prod.tags[T.TAG_PROMOTED_VALUE]) if prod and prod.tags.get(T.TAG_PROMOTED_VALUE) else None
    out = dict(task=task.name, registered_model=name, run_id=staging.run_id, version=version, value=value,
               previous_version=held, previous_value=prev_value)
    if held == version:
        return PromotionOutcome(**out, action="kept",
                                message=f"{task.name}: {name}@{T.ALIAS_PRODUCTION} already is v{version} (@staging)")
    client.set_registered_model_alias(name, T.ALIAS_PRODUCTION, version)
    client.set_model_version_tag(name, version, T.TAG_PREVIOUS_PRODUCTION, held or T.NO_VERSION)
    return PromotionOutcome(**out, action="promoted",
                            message=f"{task.name}: promoted {name} v{version} to @{T.ALIAS_PRODUCTION} "
                                    f"(was {'v' + held if held else 'unset'})")


def registry_rows() -> list[dict[str, Any]]:
    """Every version of every ``emoexp-*`` registered model, with aliases and key metrics."""
    from mlflow.exceptions import MlflowException

    client = _client()
    rows: list[dict[str, Any]] = []
    models, token = [], None
    while True:
        page = client.search_registered_models(
            filter_string=f"name LIKE '{T.REGISTERED_MODEL_PREFIX}%'", page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            break
    for rm in sorted(models, key=lambda m: m.name):
        # search_model_versions leaves aliases empty (MLflow 3): take them from the model
        by_version: dict[str, list[str]] = {}
        for a, v in (rm.aliases or {}).items():
            by_version.setdefault(str(v), []).append(a)
        versions = client.search_model_versions(f"name = '{rm.name}'")
        for mv in sorted(versions, key=lambda v: -int(v.version)):
            metrics: dict[str, float] = {}
            if mv.run_id:
                try:
                    metrics = client.get_run(mv.run_id).data.metrics
                except MlflowException:
                    pass  # the run was deleted; the version stays listed
            tags = mv.tags or {}
            rows.append({
                "model": rm.name,
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "run_id": mv.run_id or "",
                "promoted_metric": tags.get(T.TAG_PROMOTED_METRIC, ""),
                "promoted_value": tags.get(T.TAG_PROMOTED_VALUE, ""),
                "previous_version": tags.get(T.TAG_PREVIOUS_VERSION, ""),
                T.M_BEST_VAL_F1: metrics.get(T.M_BEST_VAL_F1),
                T.M_TEST_ACC: metrics.get(T.M_TEST_ACC),
            })
    return rows
