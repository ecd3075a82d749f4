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


def list_runs(*, task: str | None = None, experiment: str | None = None, max_results: int = 50) -> list[dict]:
    client = _client()
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"experiment {experiment!r} not found")
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    filt = f"tags.`{T.TAG_TASK}` = '{task}'" if task else f"tags.`{T.TAG_TASK}` != ''"
    rows = []
    for run in client.search_runs(exp_ids, filter_string=filt, max_results=max_results,
                                  order_by=["attributes.start_time DESC"]):
        ckpts = [a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, T.ART_CKPT_DIR)]
        f1 = run.data.metrics.get(T.M_BEST_VAL_F1, run.data.metrics.get(T.M_VAL_F1))
        rows.append({
            "run_id": run.info.run_id,
            "task": run.data.tags.get(T.TAG_TASK, "?"),
            "status": run.info.status,
            "epochs": len(client.get_metric_history(run.info.run_id, T.M_TRAIN_LOSS)),
            "best_val_macro_f1": f"{f1:.3f}" if f1 is not None else "-",
            "checkpoints": ckpts,
        })
    return rows
