"""Read lineage and run listings back from MLflow (the consumer side of tracking's names)."""

from __future__ import annotations

from typing import Any

from emoexp import tracking as T


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _weights(params: dict[str, str]) -> str:
    w = {k[len(T.PARAM_WEIGHT_PREFIX):]: v for k, v in params.items() if k.startswith(T.PARAM_WEIGHT_PREFIX)}
    return ",".join(f"{k}={v}" for k, v in w.items()) or "(none logged)"


def run_node(run) -> dict[str, Any]:
    client = _client()
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, T.M_TRAIN_LOSS))
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "task": run.data.tags.get(T.TAG_TASK, "?"),
        "first_epoch": steps[0] if steps else 0,
        "last_epoch": steps[-1] if steps else 0,
        "resumed_from": run.data.tags.get(T.TAG_RESUMED_FROM),
        "resumed_epoch": run.data.tags.get(T.TAG_RESUMED_EPOCH),
        "weights": _weights(run.data.params),
    }


def lineage_chain(run_id: str) -> list[dict[str, Any]]:
    """The run's ancestors, root first, each with its epochs and sampling weights."""
    client = _client()
    chain = []
    seen = set()
    current: str | None = run_id
    while current and current not in seen:
        seen.add(current)
        try:
            run = client.get_run(current)
        except Exception as e:
            if not chain:
                raise ValueError(f"run {current}: not found ({e})") from None
            chain.append({"run_id": current, "run_name": "(deleted or elsewhere)", "status": "?",
                          "first_epoch": 0, "last_epoch": 0, "weights": "?"})
            break
        chain.append(run_node(run))
        current = run.data.tags.get(T.TAG_PARENT_RUN) or None
    return list(reversed(chain))


def run_kind(tags: dict[str, str]) -> str:
    """What a run is, from its tags: ``run`` (a training), ``branch`` (resumed from a checkpoint),
    ``sweep parent`` (holds a study's trials), ``trial`` / ``pruned trial``, ``cv parent`` /
    ``cv fold`` (a cross-validation and its folds), ``baseline`` (a classical model)."""
    if tags.get(T.TAG_SWEEP) == T.SWEEP_PARENT:
        return "sweep parent"
    if T.TAG_CV_SCHEME in tags:
        return "cv fold" if T.TAG_FOLD in tags else "cv parent"
    if tags.get(T.TAG_MODEL_KIND) == "baseline":
        return "baseline"
    if T.TAG_TRIAL in tags:
        return "pruned trial" if tags.get(T.TAG_STOP_REASON) == "pruned" else "trial"
    if tags.get(T.TAG_PARENT_RUN):
        return "branch"
    return "run"


def list_runs(*, task: str | None = None, experiment: str | None = None, max_results: int = 50) -> list[dict]:
    """The newest runs of a task (or of every task), each a dict: ``experiment``, ``run_name``,
    ``kind`` (:func:`run_kind`), ``task``, ``status``, ``epochs``, ``best_val_macro_f1``,
    ``checkpoints``, ..."""
    client = _client()
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"experiment {experiment!r} not found")
        exps = {exp.experiment_id: exp.name}
    else:
        exps = {e.experiment_id: e.name for e in client.search_experiments()}
    exp_ids = list(exps)
    filt = f"tags.`{T.TAG_TASK}` = '{task}'" if task else f"tags.`{T.TAG_TASK}` != ''"
    rows = []
    for run in client.search_runs(exp_ids, filter_string=filt, max_results=max_results,
                                  order_by=["attributes.start_time DESC"]):
        ckpts = [a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, T.ART_CKPT_DIR)]
        f1 = run.data.metrics.get(T.M_BEST_VAL_F1, run.data.metrics.get(T.M_VAL_F1))
        alive = T.run_liveness(run)  # RUNNING runs: is their process still there?
        rows.append({
            "liveness": alive.state if alive else "",
            "liveness_why": alive.why if alive else "",
            "run_id": run.info.run_id,
            "experiment": exps.get(run.info.experiment_id, run.info.experiment_id),
            "run_name": run.info.run_name or "",
            "kind": run_kind(run.data.tags),
            "task": run.data.tags.get(T.TAG_TASK, "?"),
            "status": run.info.status,
            "epochs": len(client.get_metric_history(run.info.run_id, T.M_TRAIN_LOSS)),
            "best_val_macro_f1": f"{f1:.3f}" if f1 is not None else "-",
            "checkpoints": ckpts,
        })
    if not task:
        rows += _dead_project_runs(client, exps, max_results)
    return rows


def _dead_project_runs(client, exps: dict[str, str], max_results: int) -> list[dict]:
    """RUNNING runs that `mlflow run` created but no emoexp process ever took over (the step failed
    before emoexp started: a bad path parameter...): without ``emoexp.task`` they would not be
    listed, yet they stay RUNNING; shown once they are :func:`~emoexp.tracking.run_liveness` dead."""
    out = []
    for run in client.search_runs(list(exps), filter_string="attributes.status = 'RUNNING'",
                                  max_results=max_results, order_by=["attributes.start_time DESC"]):
        tags = run.data.tags
        if tags.get(T.TAG_TASK) or not tags.get("mlflow.project.entryPoint"):
            continue
        alive = T.run_liveness(run)
        if alive is None or not alive.dead:
            continue
        out.append({"liveness": alive.state, "liveness_why": alive.why, "run_id": run.info.run_id,
                    "experiment": exps.get(run.info.experiment_id, run.info.experiment_id),
                    "run_name": run.info.run_name or "", "kind": "run",
                    "task": tags.get("mlflow.project.entryPoint", "?"), "status": run.info.status, "epochs": 0,
                    "best_val_macro_f1": "-", "checkpoints": []})
    return out
