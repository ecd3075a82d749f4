"""``emoexp evaluate``: a trained model on a dataset folder -> reports in the run and on disk.

The model (a checkpoint, ``runs:/ID/model`` or ``models:/NAME@ALIAS``) is rebuilt from its own
checkpoint; the data are read with the model's task and config, pointed at ``data_dir`` (other
options may be changed, e.g. ``dataset=fer2013`` for an AffectNet model). Written: confusion
matrix (PNG, CSV), per-class precision/recall/F1 (txt, JSON), ROC, and the training curves from
the source run's metric history.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoexp import tracking as T
from emoexp.data.io import atomic_write_text

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train")


@dataclass
class Evaluation:
    task: str
    split: str
    n: int
    metrics: dict[str, float]
    out_dir: Path
    run_id: str | None            # the run the reports went to (source or new evaluation run)
    source_run_id: str | None


def source_run_of(uri: str) -> str | None:
    """The training run behind ``runs:/ID/...`` or ``models:/NAME@ALIAS|/VERSION``; None for a file."""
    m = re.match(r"^runs:/([^/]+)", uri)
    if m:
        return m.group(1)
    m = re.match(r"^models:/([^/@]+)(?:@([^/]+)|/([^/]+))", uri)
    if m:
        from mlflow import MlflowClient

        client = MlflowClient()
        name, alias, version = m.groups()
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        return mv.run_id
    return None


def run_history(run_id: str) -> list[dict[str, float]]:
    """Per-epoch metrics of a run (steps >= 1), from MLflow's metric history."""
    from mlflow import MlflowClient

    client = MlflowClient()
    by_step: dict[int, dict[str, float]] = {}
    for key in (T.M_TRAIN_LOSS, T.M_VAL_LOSS, T.M_VAL_ACC, T.M_VAL_F1):
        for m in client.get_metric_history(run_id, key):
            if m.step >= 1:
                by_step.setdefault(m.step, {})[key] = m.value
    return [by_step[s] for s in sorted(by_step)]


def evaluate_model(
    model_uri: str,
    data_dir: str,
    *,
    split: str = "test",
    out_dir: str | Path = "evaluation",
    overrides: dict[str, Any] | None = None,
    new_run: bool = False,
    experiment_name: str = "",
    track: bool = True,
) -> Evaluation:
    """Evaluate ``model_uri`` on ``split`` of the dataset at ``data_dir``; see the module doc."""
    import torch

    from emoexp.checkpoints import load_from_uri
    from emoexp.config import apply_overrides, saved_config
    from emoexp.engine import evaluate_split
    from emoexp.evaluation import plot_curves, report_files
    from emoexp.tasks import get_task

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    st = load_from_uri(model_uri)
    task = get_task(st["task"])
    cfg = saved_config(task.default_config(), st["config"])
    info = st["info"]
    changes: dict[str, Any] = {"data_dir": str(data_dir), **(overrides or {})}
    changes.update(task.evaluation_overrides(cfg, info, changes))
    cfg = task.prepare(apply_overrides(cfg, changes))
    data = task.reuse_fitted(task.build_data(cfg), info)
    heads = info["heads"]
    if list(data.heads[data.primary_head]) != list(heads[next(iter(heads))]):
        raise ValueError(f"{data_dir}: its classes {data.class_names} differ from the model's "
                         f"{heads[next(iter(heads))]}")
    dataset = {"test": data.test, "val": data.val, "train": data.train}[split]
    if dataset is None or not len(dataset):
        raise ValueError(f"{data_dir}: the {split} split is empty; pick another with --split")
    if split == "train" and hasattr(dataset, "augment"):
        dataset.augment = False
    model = task.build_model(cfg, info)
    model.load_state_dict(st["model"])
    model.eval()
    device = torch.device("cpu")
    loss_weights = task.head_loss_weights(cfg, info)
    metrics, preds = evaluate_split(model, dataset, heads, next(iter(heads)), device, cfg, loss_weights,
                               prefix="eval", return_preds=True, task=task)
    source = source_run_of(model_uri) if track else None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    primary = next(iter(heads))
    for head, classes in heads.items():
        prefix = "" if head == primary else f"{head}."
        report_files(preds[head]["targets"], preds[head]["probs"], classes, out, prefix,
                     title=f"{head} ({split}, {Path(data_dir).name})")
    task.error_analysis(dataset, preds, heads, out)
    history = run_history(source) if source else []
    if history:
        plot_curves(history, out / "training_curves.png")
    summary = {"model_uri": model_uri, "task": task.name, "data_dir": str(data_dir), "split": split,
               "n": len(dataset), "metrics": metrics, "source_run_id": source,
               "overrides": {k: v for k, v in changes.items() if k != "data_dir"}}
    atomic_write_text(out / "evaluation.json", json.dumps(summary, indent=2, default=str))

    run_id = None
    if track:
        run_id = _log(task, cfg, model_uri, source, out, metrics, split, new_run, experiment_name)
    return Evaluation(task=task.name, split=split, n=len(dataset), metrics=metrics, out_dir=out,
                      run_id=run_id, source_run_id=source)


def _log(task, cfg, model_uri, source, out: Path, metrics, split, new_run, experiment_name) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{split}-{Path(cfg.data_dir).name or 'data'}")
    if source and not new_run:
        client.log_artifacts(source, str(out), f"{T.ART_EVAL_DIR}/{tag}")
        for k, v in metrics.items():
            client.log_metric(source, f"{tag}/{k}", v)  # e.g. test-fer2013/eval_macro_f1
        client.set_tag(source, "emoexp.evaluated_on", f"{cfg.data_dir} ({split})")
        return source
    if experiment_name:
        exp = experiment_name
    elif source:
        exp = client.get_experiment(client.get_run(source).info.experiment_id).name
    else:
        exp = f"{task.name}-evaluation"
    # T.mlflow_run: the same lifecycle (FAILED on error) and code tags as every other run
    with T.mlflow_run(experiment_name=exp, run_name=f"evaluate-{task.name}-{tag}",
                      description=f"Evaluation of {model_uri} on {cfg.data_dir} ({split})") as run:
        # Not tagged emoexp.task: an evaluation run is no training run (promote and runs list skip it).
        run.set_tags({"emoexp.evaluated_task": task.name, "emoexp.evaluation": "true",
                      "emoexp.evaluated_model": model_uri, **({"emoexp.evaluated_run": source} if source else {})})
        run.log_params({"model_uri": model_uri, "data_dir": str(cfg.data_dir), "split": split})
        run.log_metrics(dict(metrics), step=0)
        run.log_artifacts(str(out), T.ART_EVAL_DIR)
        return run.run_id
