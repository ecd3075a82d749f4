"""The one training loop, for every task: run, params, sampling, epochs, checkpoints, resume.

``fit(task, cfg)`` is importable and called in-process by the CLI, the sweeps and the tests.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoexp import distributed as D
from emoexp import faults
from emoexp import tracking as T
from emoexp.checkpoints import jsonable, resolved_source_tags
from emoexp.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    check_device,
    check_tracking_store,
    format_weights,
    given_keys,
    parse_weights,
    saved_values,
)
from emoexp.tasks.base import Task, get_task

log = logging.getLogger(__name__)

# Fault injection for the kill-and-continue test: the process SIGKILLs itself right after the
# named epoch's checkpoint is written and logged, as a crash or an OOM-killer would
# (emoexp.faults names more points: mid-checkpoint, during log_model, before the final status).
FAULT_ENV = "EMOEXP_FAULT_KILL_AFTER_EPOCH"
FAULT_RANK_ENV = faults.RANK_ENV  # under DDP: which rank dies (default 0)


@dataclass
class Resume:
    """How a run starts from a checkpoint (DESIGN.md: two kinds)."""

    kind: str                  # "branch": a new run; "continue": the same run after a crash
    state: dict[str, Any]      # the loaded checkpoint
    uri: str                   # where it came from
    run_id: str | None = None  # continue: the run to re-attach to
    experiment_id: str | None = None  # branch: the experiment to land in (the parent's)
    note: str = ""             # continue: what it starts from when that is not last.pt, and why


@dataclass
class Result:
    run_id: str | None
    monitor: str
    best_value: float
    best_epoch: int
    history: list[dict[str, float]]
    test_metrics: dict[str, float] = field(default_factory=dict)
    output_dir: Path | None = None
    stop_reason: str = "completed"
    sampling_weights: dict[str, float] = field(default_factory=dict)
    first_epoch: int = 1  # this run's first epoch (a branch's history starts with its ancestors')
    model_uri: str | None = None  # runs:/<id>/model when the run logged its model

    @property
    def best_val_macro_f1(self) -> float:
        vals = [h[T.M_VAL_F1] for h in self.history[self.first_epoch - 1:] if T.M_VAL_F1 in h]
        return max(vals) if vals else float("nan")


EpochCallback = Callable[[int, dict[str, float]], bool]


def fit(
    task: Task | str,
    cfg: TrainConfig,
    *,
    track: bool = True,
    resume: Resume | None = None,
    epoch_callback: EpochCallback | None = None,
    nested: bool = False,
    extra_tags: dict[str, str] | None = None,
    data: Any = None,
) -> Result:
    """Train ``task`` with ``cfg``; returns the :class:`Result`.

    ``epoch_callback(epoch, metrics)`` runs after each epoch is logged; returning True stops
    the run early (sweeps use it to prune). ``track=False`` runs with no MLflow at all.
    ``data``: a :class:`~emoexp.data.base.DataBundle` built already (cross-validation builds the
    data once and hands each fold its bundle); None builds it with ``task.build_data(cfg)``.
    """

    task = get_task(task) if isinstance(task, str) else task
    check_device(cfg.device)  # what the settings need of this machine, before any data is read
    if track and D.is_main_process():  # rank 0 keeps the records; the others never open the store
        check_tracking_store()
    if resume is None and cfg.resume_from:
        resume, cfg = _branch_from(task, cfg)  # one resume path, whoever calls fit
    if resume and resume.state.get("task") != task.name:
        raise ConfigError(
            f"{resume.uri}: a {resume.state.get('task')!r} checkpoint cannot resume task {task.name!r} "
            f"(branch it with `emoexp resume {resume.uri}`, which takes the task from the checkpoint)"
        )
    asked = cfg  # as set (logged as params); `prepare` resolves e.g. encoder=auto (logged as resolved.*)
    cfg = task.prepare(cfg)
    if cfg.nproc > 1 and not D.under_torchrun():
        raise ConfigError(f"nproc={cfg.nproc}: start data-parallel training with `emoexp train --nproc "
                          f"{cfg.nproc}` or `torchrun --nproc_per_node={cfg.nproc} -m emoexp train ...`")
    dist, device = D.setup(cfg.device)
    try:
        D.fail_on_sigterm(dist)
        return _fit(task, cfg, asked, resume, dist, device or _device(cfg.device), track=track and dist.is_main,
                    epoch_callback=epoch_callback, nested=nested, extra_tags=extra_tags, data=data)
    finally:
        D.teardown(dist)


def _fit(task, cfg, asked, resume, dist, device, *, track, epoch_callback, nested, extra_tags, data) -> Result:
    _seed_everything(cfg.seed)
    if data is None:
        with D.main_first(dist):  # rank 0 fills the data caches; the others then read them
            data = task.build_data(cfg)
    if resume is not None:  # the checkpoint's fitted preprocessing, not one refitted on today's data
        data = task.reuse_fitted(data, resume.state.get("info", {}))
    info = {**data.info, "heads": data.heads}
    _check_monitor(task, cfg, data)  # the heads and classes are known now, the run not started
    weights = parse_weights(cfg.weights, data.class_names)
    model = task.build_model(cfg, info)
    pretrained_tags: dict[str, str] = {}
    if resume is None:
        pretrained_tags = dict(task.init_from_pretrained(model, cfg, info))
        pretrained_tags.update(resolved_source_tags(pretrained_tags))
    if dist.enabled and hasattr(model, "optimizer_parameters"):
        raise ConfigError(f"{task.name} unfreezes parts of its network during training, which "
                          "DistributedDataParallel does not follow: train it in one process (nproc=1)")
    model.to(device)

    start_epoch = 0
    run_start = 0  # the epoch this run started after: a branch is judged on its own epochs only
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"value": None, "epoch": 0}
    patience_count = 0
    lineage: list[dict[str, Any]] = []
    if resume is not None:
        st = resume.state
        start_epoch = int(st["epoch"])
        history = list(st["history"])  # the ancestors' curves: a branch continues their numbering
        lineage = list(st.get("lineage", []))
        if resume.kind == "continue":  # the same run: its best and patience carry on
            best = dict(st["best"])
            patience_count = int(st.get("patience_count", 0))
            run_start = int(st.get("run_start_epoch", 0))
            pretrained_tags = dict(st.get("inherited_tags") or {})
        else:
            run_start = start_epoch
            pretrained_tags = _inherited_tags(st)
    continuing = resume is not None and resume.kind == "continue"
    total_epochs = cfg.epochs if (resume is None or continuing) else start_epoch + cfg.epochs
    if start_epoch >= total_epochs and not continuing:
        raise ValueError(f"nothing to do: the checkpoint is at epoch {start_epoch} of {total_epochs}")

    optimizer = _optimizer(cfg, model)
    scheduler = _scheduler(cfg, optimizer, total_epochs)
    if resume is not None:
        _restore(resume, cfg, model, optimizer, scheduler, total_epochs)
    model = D.wrap_model(model, dist, device)  # what trains: DDP across ranks, else the network
    net = D.unwrap(model)  # the network itself: its state is what checkpoints and the logged model hold

    primary = data.primary_head
    loss_weights = task.head_loss_weights(cfg, info)
    best_state = None
    if resume is not None and resume.kind == "continue":
        best_state = copy.deepcopy(resume.state.get("best_model", resume.state["model"]))

    run_ctx: contextlib.AbstractContextManager
    if track:
        run_ctx = T.mlflow_run(
            experiment_name=cfg.experiment_name or task.name,
            experiment_id=resume.experiment_id if resume else None,
            run_name=_run_name(task, cfg, resume),
            run_id=resume.run_id if resume and resume.kind == "continue" else None,
            nested=nested,
            description=task.description(cfg),
        )
    else:
        run_ctx = contextlib.nullcontext(T.Tracker())

    with run_ctx as tracker:
        out_dir = T.local_run_dir(tracker.run_id, cfg.output_dir)
        ckpt_dir = out_dir / T.ART_CKPT_DIR
        if dist.is_main:  # rank 0 writes every record; the other ranks only train
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        if continuing:
            _relog_missing_epochs(tracker, history)
            tracker.set_tags({T.TAG_CONTINUED: start_epoch})
            if dist.is_main:  # the files a kill cut off at the epoch it continues from
                _complete_checkpoints(tracker, ckpt_dir, resume.state, cfg.checkpoint_every)
        else:
            lineage = _start_run_records(
                tracker, task, asked, cfg, data, weights, resume, lineage, pretrained_tags, extra_tags, dist
            )
        if resume is not None:
            _restore_rng(resume.state["rng"])  # last: construction above consumed randomness

        stop_reason = "completed"
        if continuing and cfg.patience and patience_count >= cfg.patience:
            stop_reason = "early_stopping"  # it had stopped, and was killed while finishing
        fault_epoch = int(os.environ.get(FAULT_ENV, "0") or 0)
        epochs_left = range(start_epoch + 1, total_epochs + 1) if stop_reason == "completed" else range(0)
        if continuing and not epochs_left:
            log.info("run %s trained all its epochs before it stopped: finishing it (test pass, "
                     "evaluation, model, status)", tracker.run_id)
        for epoch in epochs_left:
            metrics = _train_one_epoch(
                task, cfg, model, optimizer, data, weights, primary, loss_weights, device, epoch, total_epochs,
                dist,
            )
            metrics.update(evaluate_split(net, data.val, data.heads, primary, device, cfg, loss_weights, task=task,
                                          dist=dist))
            scheduler.step()
            if not all(math.isfinite(v) for k, v in metrics.items() if "loss" in k):
                raise FloatingPointError(f"the loss became {metrics[T.M_TRAIN_LOSS]} at epoch {epoch}")
            history.append(metrics)

            value = metrics[cfg.monitor] if cfg.monitor in metrics else None
            if value is None:
                raise ValueError(f"monitor {cfg.monitor!r} is not among the metrics: {sorted(metrics)}")
            improved = best["value"] is None or (
                value < best["value"] if _minimize(cfg.monitor) else value > best["value"]
            )
            if improved:
                best = {"value": float(value), "epoch": epoch, "metric": cfg.monitor}
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                patience_count = 0
            else:
                patience_count += 1

            state = {
                "task": task.name,
                "config": cfg.to_dict(),
                "info": jsonable(info),
                "epoch": epoch,
                "model": net.state_dict(),
                "best_model": best_state,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "best": best,
                "patience_count": patience_count,
                "sampling_weights": weights,
                "lineage": lineage,
                "run_id": tracker.run_id,
                "run_start_epoch": run_start,
                "inherited_tags": pretrained_tags,
                "rng": _rng_state(),
            }
            if dist.is_main:
                _write_checkpoints(tracker, ckpt_dir, state, epoch, improved, cfg.checkpoint_every)
            tracker.log_metrics(metrics, step=epoch)
            faults.point("epoch_end", epoch)
            log.log(
                logging.INFO if dist.is_main else logging.DEBUG,
                "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.3f  val_f1 %.3f",
                epoch, total_epochs, metrics[T.M_TRAIN_LOSS], metrics[T.M_VAL_LOSS],
                metrics[T.M_VAL_ACC], metrics[T.M_VAL_F1],
            )
            if fault_epoch == epoch and dist.rank == int(os.environ.get(FAULT_RANK_ENV, "0") or 0):
                os.kill(os.getpid(), signal.SIGKILL)
            if epoch_callback is not None and epoch_callback(epoch, metrics):
                stop_reason = "pruned"
                break
            if cfg.patience and patience_count >= cfg.patience:
                stop_reason = "early_stopping"
                log.info("early stopping: %s did not improve for %d epochs", cfg.monitor, cfg.patience)
                break

        result = _finish(task, cfg, net, best_state, data, info, tracker, history, best, device,
                         stop_reason, out_dir, weights, loss_weights, run_start, dist, continuing=continuing)
    return result


# ----------------------------------------------------------------------------------------------
# Pieces of fit


def _check_monitor(task: Task, cfg: TrainConfig, data) -> None:
    """``monitor`` names a metric this run will log (its heads' and classes' own), else a one-line
    ConfigError before the run starts (config.validate checked its form before the data)."""
    import re

    names = {T.M_TRAIN_LOSS}
    for head, classes in data.heads.items():
        primary = head == data.primary_head
        names |= {T.head_metric(head, m, primary) for m in (T.M_VAL_LOSS, T.M_VAL_ACC, T.M_VAL_F1)}
        names |= {T.head_metric(head, f"{T.M_VAL_F1_CLASS}{c}", primary) for c in classes}
    names.add(T.M_VAL_LOSS)
    own = type(task).extra_metrics is not Task.extra_metrics  # a task's metrics across heads
    if cfg.monitor in names or (own and re.fullmatch(r"val_[a-z0-9]+_(?:accuracy|macro_f1|loss)", cfg.monitor)):
        return
    others = [h for h in data.heads if h != data.primary_head]
    raise ConfigError(f"monitor: {task.name} logs no {cfg.monitor!r}; it logs val_loss, val_accuracy, "
                      f"val_macro_f1, val_f1.<class> for classes {', '.join(data.class_names)}"
                      + (f", and <head>.val_... for heads {', '.join(others)}" if others else ""))


def _run_name(task: Task, cfg: TrainConfig, resume: Resume | None) -> str:
    name = task.run_name(cfg)
    if resume is not None and resume.kind == "branch":
        name += f"-from-e{int(resume.state['epoch']):03d}"
    return name


def _start_run_records(tracker, task, asked, cfg, data, weights, resume, lineage, pretrained_tags, extra_tags,
                       dist=D.SINGLE):
    """Params, tags, config, split, dataset and (branch) lineage records of a new run.

    Params are the config as it was set (``asked``), the same whichever way the run started
    (``mlflow run`` logs its ``-P`` values before emoexp starts), plus ``resolved.<key>`` for each
    key the task resolved (``encoder=auto`` -> ``resolved.encoder=cnn``); config.yaml holds the
    resolved config.
    """
    import yaml

    params = dict(asked.to_dict())
    resolved = cfg.to_dict()
    params.update({f"{T.PARAM_RESOLVED_PREFIX}{k}": v for k, v in resolved.items() if params.get(k) != v})
    params.update({f"{T.PARAM_WEIGHT_PREFIX}{c}": w for c, w in weights.items()})
    params.update({
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test) if data.test is not None else 0,
        "n_classes": len(data.class_names),
        "split_scheme": data.split.get("scheme", cfg.split),
        "world_size": dist.world,  # ranks that trained it (batch_size is the global batch)
    })
    tracker.log_params(params)
    dataset_name = str(data.info.get("dataset") or task.dataset)
    tags = {T.TAG_TASK: task.name, T.TAG_MODALITY: task.modality, T.TAG_DATASET: dataset_name,
            T.TAG_MODEL_KIND: T.MODEL_KIND_DEEP}
    tags.update(pretrained_tags)
    tags.update(extra_tags or {})
    entry = {
        "run_id": tracker.run_id,
        "task": task.name,
        "sampling_weights": weights,
        "started_at_epoch": 0,
    }
    if resume is not None:
        parent = resume.state
        parent_run = parent.get("run_id")
        root = lineage[0]["run_id"] if lineage else parent_run
        entry.update({
            "started_at_epoch": int(parent["epoch"]),
            "resumed_from": resume.uri,
            "parent_run_id": parent_run,
        })
        if lineage:  # the parent's entry: where the branch left it, and its own best so far
            lineage[-1] = {**lineage[-1], "checkpoint": resume.uri, "epoch": int(parent["epoch"]),
                           "best": parent.get("best")}
        tags.update({
            T.TAG_PARENT_RUN: parent_run or "",
            T.TAG_ROOT_RUN: root or "",
            T.TAG_RESUMED_FROM: resume.uri,
            T.TAG_RESUMED_EPOCH: int(parent["epoch"]),
            T.TAG_LINEAGE_DEPTH: len(lineage),
        })
        tracker.log_text(_weight_changes(parent.get("sampling_weights", {}), weights, resume.uri,
                                         int(parent["epoch"])), T.ART_WEIGHT_CHANGES)
    else:
        tags[T.TAG_LINEAGE_DEPTH] = 0
    lineage = [*lineage, entry]
    tracker.set_tags(tags)
    tracker.log_text(yaml.safe_dump({"task": task.name, **cfg.to_dict()}, sort_keys=False), T.ART_CONFIG)
    tracker.log_text(json.dumps(data.split, indent=2, default=str), T.ART_SPLIT)
    if resume is not None:
        tracker.log_text(json.dumps(lineage, indent=2, default=str), T.ART_LINEAGE)
    if data.skipped_files:
        tracker.log_text("\n".join(f"{p}\t{why}" for p, why in data.skipped_files), "skipped_files.tsv")
    tracker.log_metrics({T.M_SKIPPED: len(data.skipped_files)}, step=0)
    if tracker.enabled:
        from emoexp.data.base import tree_fingerprint

        # The dataset's digest follows its files (names, sizes, mtimes), not just its shape.
        tracker.log_input({"dataset": dataset_name, "files": tree_fingerprint(cfg.data_dir),
                           **{k: v for k, v in data.info.items() if isinstance(v, (str, int, float))}})
    return lineage


def _weight_changes(old: dict[str, float], new: dict[str, float], uri: str, epoch: int) -> str:
    lines = [f"resumed from {uri} at epoch {epoch}"]
    changed = False
    for c in new:
        o = old.get(c, 1.0)
        if o != new[c]:
            changed = True
            lines.append(f"{c}: {o:g} -> {new[c]:g}")
    if not changed:
        lines.append("sampling weights unchanged: " + format_weights(new))
    return "\n".join(lines) + "\n"


def _train_one_epoch(task, cfg, model, optimizer, data, weights, primary, loss_weights, device,
                     epoch, total_epochs, dist=D.SINGLE) -> dict[str, float]:
    import torch
    from tqdm.auto import tqdm

    # The epoch's order depends on (seed, epoch) alone, so a resumed run sees the same batches;
    # so do dropout and augmentation draws (seeded per epoch and rank), so that a continued run,
    # one process or N ranks, repeats an uninterrupted one.
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    _seed_everything(cfg.seed * 1_000_003 + epoch * 1_009 + dist.rank)
    loader = _loader(data.train, cfg, gen, data.train_targets, weights, data.class_names, task, dist)
    net = D.unwrap(model)
    if hasattr(net, "start_epoch"):  # training phases by epoch (EEG-LLM: LoRA only, then the backbone)
        net.start_epoch(epoch)
    model.train()
    lr = optimizer.param_groups[0]["lr"]
    total, n, t0 = 0.0, 0, time.perf_counter()
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    # Mixed precision where a task asks for it (seed 002) and only on CUDA: float16 autocast with
    # gradient scaling; on CPU both are no-ops and the loop is the plain float32 one.
    amp = bool(getattr(cfg, "mixed_precision", False)) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    bar = tqdm(loader, desc=f"epoch {epoch}/{total_epochs}", leave=False, disable=None if dist.is_main else True,
               unit="batch")
    for batch in bar:
        batch = _to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out = model(batch)
            loss = sum(loss_weights.get(h, 1.0) * criterion(out[h].float(), batch[h]) for h in data.heads)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        bs = int(batch[primary].shape[0])
        total += float(loss.detach()) * bs
        n += bs
        if bar.disable is False:
            bar.set_postfix(loss=f"{total / n:.4f}")
    total, n = D.all_sum([total, float(n)], dist)  # every rank's share of the epoch
    dt = time.perf_counter() - t0
    return {
        T.M_TRAIN_LOSS: total / max(n, 1),
        T.M_LR: lr,
        T.M_EPOCH_TIME: dt,
        T.M_SAMPLES_PER_S: n / dt if dt > 0 else 0.0,
    }


def evaluate_split(model, dataset, heads, primary, device, cfg, loss_weights, prefix="val", return_preds=False,
                   task=None, dist=D.SINGLE):
    """Metrics of ``model`` on the whole of ``dataset`` (and, with ``return_preds``, the predictions
    too), with ``task``'s own metrics across heads (e.g. ``val_joint_accuracy``). Under DDP each
    rank predicts one block and the blocks are gathered: every rank gets the whole set's metrics."""
    from torch.utils.data import Subset

    from emoexp.evaluation import classification_metrics, predict

    part = Subset(dataset, D.shard(len(dataset), dist).tolist()) if dist.enabled else dataset
    preds = D.gather_predictions(predict(model, part, heads, device, cfg.batch_size, _collate), dist)
    out: dict[str, float] = {}
    total_loss = 0.0
    for head, classes in heads.items():
        p = preds[head]
        total_loss += loss_weights.get(head, 1.0) * p["loss"]
        m = classification_metrics(p["targets"], p["probs"], classes)
        is_primary = head == primary
        out[T.head_metric(head, f"{prefix}_loss", is_primary)] = p["loss"]
        out[T.head_metric(head, f"{prefix}_accuracy", is_primary)] = m["accuracy"]
        out[T.head_metric(head, f"{prefix}_macro_f1", is_primary)] = m["macro_f1"]
        for c, f1 in m["f1"].items():
            out[T.head_metric(head, f"{prefix}_f1.{c}", is_primary)] = f1
    if len(heads) > 1:
        out[f"{prefix}_loss"] = total_loss  # the objective across heads; primary is head-named
    if task is not None:
        out.update(task.extra_metrics(preds, heads, prefix))
    return (out, preds) if return_preds else out


def _finish(task, cfg, model, best_state, data, info, tracker, history, best, device, stop_reason,
            out_dir, weights, loss_weights, run_start: int = 0, dist=D.SINGLE, continuing: bool = False) -> Result:
    """Best weights back in, test metrics, evaluation artifacts, the MLflow model; all from this
    run's own epochs (after ``run_start``), never an ancestor's. A continued run killed while it
    finished does what was left: final metrics not logged yet, the model unless it is logged."""
    from emoexp.evaluation import write_eval_artifacts

    if best_state is not None:
        model.load_state_dict(best_state)
    f1s = [h[T.M_VAL_F1] for h in history[run_start:] if T.M_VAL_F1 in h]
    final = {T.M_BEST_VAL_F1: max(f1s) if f1s else float("nan"), T.M_BEST_EPOCH: best["epoch"]}
    test_metrics: dict[str, float] = {}
    pruned = stop_reason == "pruned"  # a sweep dropped it: no test pass, reports or model
    eval_set, split_name = (data.test, "test") if data.test is not None and len(data.test) else (data.val, "val")
    preds = None
    if data.test is not None and len(data.test) and not pruned:
        test_metrics, preds = evaluate_split(model, data.test, data.heads, data.primary_head, device, cfg,
                                             loss_weights, prefix="test", return_preds=True, task=task, dist=dist)
        final.update({k: v for k, v in test_metrics.items() if "_f1." not in k})
    if continuing and tracker.enabled:  # killed after logging them: do not log them twice
        logged = tracker.logged_metric_steps()
        final = {k: v for k, v in final.items() if len(history) not in logged.get(k, set())}
    tracker.log_metrics(final, step=len(history))  # history holds every epoch from 1
    tracker.set_tags({T.TAG_STOP_REASON: stop_reason})
    eval_dir = out_dir / T.ART_EVAL_DIR
    if not pruned and dist.is_main:
        preds = write_eval_artifacts(model, eval_set, data.heads, device, cfg.batch_size, _collate, eval_dir,
                                     split_name, history, preds=preds)
        task.error_analysis(eval_set, preds, data.heads, eval_dir)
    model_uri = None
    if tracker.enabled and not pruned:
        tracker.log_artifacts(eval_dir, T.ART_EVAL_DIR)
        if cfg.log_model:
            model_uri = _log_model_once(task, cfg, info, best_state or model.state_dict(), data.input_example,
                                        tracker, continuing)
    return Result(
        run_id=tracker.run_id, monitor=cfg.monitor, best_value=float(best["value"]),
        best_epoch=int(best["epoch"]), history=history, test_metrics=test_metrics,
        output_dir=out_dir, stop_reason=stop_reason, sampling_weights=weights, first_epoch=run_start + 1,
        model_uri=model_uri,
    )


def _log_model_once(task, cfg, info, state_dict, input_example, tracker, continuing: bool) -> str:
    """Log the run's MLflow model; a continued run keeps the one it logged before a kill (READY)
    and deletes those a kill left unfinished (PENDING), which ``runs:/<id>/model`` could pick."""
    from emoexp.serving import log_model

    uri = f"runs:/{tracker.run_id}/{T.MODEL_NAME}"
    if continuing:
        ready = False
        for m in T.logged_models(tracker.run_id):
            if str(m.status) == "READY":
                ready = True
            else:
                log.info("deleting the logged model %s a kill left %s", m.model_id, m.status)
                tracker.client.delete_logged_model(m.model_id)
        if ready:
            log.info("the model of run %s was logged before the kill: kept", tracker.run_id)
            return uri
    log_model(task, cfg, info, state_dict, input_example)
    return uri


def _checkpoint_names(epoch: int, improved: bool, every: int) -> list[str]:
    """The files an epoch writes, in the order it writes (and uploads) them: ``last.pt`` last, so
    that wherever ``last.pt`` is at epoch N (the stage or the artifact store), so are that epoch's
    ``epoch_NNN.pt`` and ``best.pt``, and a kill before it leaves a newer ``epoch_NNN.pt`` or
    ``best.pt`` that a continue starts from (:func:`plan_continue`) and completes the epoch with
    (:func:`_complete_checkpoints`)."""
    names = []
    if every and epoch % every == 0:
        names.append(T.epoch_checkpoint_name(epoch))
    if improved:
        names.append(T.ART_BEST)
    return [*names, T.ART_LAST]


def _write_checkpoints(tracker, ckpt_dir: Path, state, epoch: int, improved: bool, every: int) -> None:
    from emoexp.checkpoints import save_checkpoint

    files = []
    for name in _checkpoint_names(epoch, improved, every):
        files.append(save_checkpoint(state, ckpt_dir / name))
        faults.point("checkpoint_file", epoch)
    faults.point("upload", epoch)
    for f in files:
        tracker.log_artifact(f, T.ART_CKPT_DIR)


def _complete_checkpoints(tracker, ckpt_dir: Path, state: dict[str, Any], every: int) -> None:
    """A continued run first completes the checkpoint set a kill cut short: the files of the epoch
    it continues from (the same state: ``last.pt``, ``epoch_NNN.pt`` on its schedule, ``best.pt``
    when that epoch was the best) where they are missing or older, in the stage and in the
    artifact store; stage files that never reached the store are uploaded; temporary files of
    killed writes are removed."""
    from emoexp.checkpoints import save_checkpoint
    from emoexp.data.io import remove_stale_temp_files

    gone = remove_stale_temp_files(ckpt_dir)
    if gone:
        log.info("removed %d temporary file(s) of killed checkpoint writes: %s", len(gone),
                 ", ".join(p.name for p in gone))
    epoch = int(state["epoch"])
    best_epoch = int((state.get("best") or {}).get("epoch", 0))
    body = {k: v for k, v in state.items() if k not in ("format", "source_uri")}
    written = []
    for name in _checkpoint_names(epoch, best_epoch == epoch, every):
        written.append(name)
        save_checkpoint(body, ckpt_dir / name)
    if not tracker.enabled:
        return
    try:
        stored = {a.path.rsplit("/", 1)[-1] for a in tracker.client.list_artifacts(tracker.run_id, T.ART_CKPT_DIR)}
    except Exception:
        stored = set()
    local = sorted(p.name for p in ckpt_dir.glob("*.pt") if not p.name.startswith("."))
    missing = [n for n in local if n not in stored and n not in written]
    for name in [*missing, *written]:  # last.pt last, as in every epoch
        tracker.log_artifact(ckpt_dir / name, T.ART_CKPT_DIR)
    if missing:
        log.info("uploaded checkpoints a kill kept from the artifact store: %s", ", ".join(missing))


def _relog_missing_epochs(tracker, history: list[dict[str, float]]) -> None:
    """A kill between a checkpoint and its metrics would leave a hole in the curves: fill it."""
    if not tracker.enabled:
        return
    logged = tracker.logged_metric_steps().get(T.M_TRAIN_LOSS, set())
    for epoch, metrics in enumerate(history, start=1):
        if epoch not in logged:
            tracker.log_metrics(metrics, step=epoch)


# ----------------------------------------------------------------------------------------------
# Optimisation, data loading, state


def _optimizer(cfg: TrainConfig, model):
    import torch

    # a model that unfreezes parts of itself later (EEG-LLM) names everything that will train;
    # frozen parameters have no gradient, so the optimizer leaves them alone until then
    if hasattr(model, "optimizer_parameters"):
        params = list(model.optimizer_parameters())
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainConfig, optimizer, total_epochs: int):
    import torch

    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_epochs, 1))
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _restore(resume: Resume, cfg, model, optimizer, scheduler, total_epochs: int) -> None:
    st = resume.state
    model.load_state_dict(st["model"])
    optimizer.load_state_dict(st["optimizer"])
    with contextlib.suppress(Exception):  # a scheduler kind changed on a branch: start it fresh
        scheduler.load_state_dict(st["scheduler"])
    if hasattr(scheduler, "T_max"):
        scheduler.T_max = max(total_epochs, 1)
    parent_lr = st["config"].get("lr")
    if resume.kind == "branch" and parent_lr is not None and float(parent_lr) != cfg.lr:
        # A new learning rate on a branch restarts the schedule's base at that rate.
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] = cfg.lr
        scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]


def _loader(dataset, cfg, gen, targets, weights: dict[str, float], class_names: list[str], task=None,
            dist=D.SINGLE):
    import torch
    from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

    w = np.array([weights[c] for c in class_names], dtype=np.float64)
    custom = task.epoch_sampler(dataset, cfg, gen, targets, weights, class_names) if task is not None else None
    if custom is not None:
        sampler = custom  # e.g. balanced epochs (train_face --balance)
    elif np.allclose(w, 1.0):
        sampler = RandomSampler(dataset, generator=gen)
    else:
        # Per-sample weight = its class's weight: "sadness=5" draws sadness windows 5x as often.
        per_sample = torch.as_tensor(w[np.asarray(targets)], dtype=torch.double)
        sampler = WeightedRandomSampler(per_sample, num_samples=len(dataset), replacement=True, generator=gen)
    # batch_size is the global batch: each of the ranks takes its share of it and of the stream
    batch = max(cfg.batch_size // dist.world, 1)
    if dist.enabled:
        sampler = D.shard_sampler(sampler, dist)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, collate_fn=_collate,
                      num_workers=cfg.num_workers, generator=gen,
                      persistent_workers=False, drop_last=len(sampler) > batch)


def _collate(batch):
    """Datasets with ``__getitems__`` hand over a batched dict already; others a list of dicts."""
    if isinstance(batch, dict):
        return batch
    from torch.utils.data import default_collate

    return default_collate(batch)


def _to_device(batch: dict, device):
    return {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in batch.items()}


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    return torch.device(name)


def _minimize(metric: str) -> bool:
    return "loss" in metric


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    import torch

    st = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"key": st[0], "pos": int(st[2]), "has_gauss": int(st[3]), "cached": float(st[4]),
                  "state": torch.from_numpy(st[1].astype(np.int64))},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore_rng(rng: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


# ----------------------------------------------------------------------------------------------
# Resume entry points


def branch(uri: str, overrides: dict[str, Any] | None = None, **fit_kwargs) -> Result:
    """A new run from a checkpoint, with new settings (sampling weights above all).

    Architecture keys come back from the checkpoint; run-time knobs stay overridable.
    ``epochs`` is how many more epochs to train.
    """
    task, cfg, resume = plan_branch(uri, overrides)
    return fit(task, cfg, resume=resume, **fit_kwargs)


def plan_branch(uri: str, overrides: dict[str, Any] | None = None) -> tuple[Task, TrainConfig, Resume]:
    """What :func:`branch` will run: the checkpoint's task, the merged config, the resume."""
    from emoexp.checkpoints import load_from_uri

    state = load_from_uri(uri)
    task = get_task(state["task"])
    cfg = apply_overrides(task.default_config(), {**(overrides or {}), "resume_from": uri})
    resume, cfg = _branch_from(task, cfg, state)
    return task, cfg, resume


def _branch_from(task: Task, cfg: TrainConfig, state: dict[str, Any] | None = None) -> tuple[Resume, TrainConfig]:
    """``cfg.resume_from`` -> the branch: the checkpoint's state, and its config with the keys the
    user set on ``cfg`` (:func:`~emoexp.config.given_keys`, even where they equal the defaults)."""
    from emoexp.checkpoints import load_from_uri

    uri = cfg.resume_from
    if state is None:
        state = load_from_uri(uri)
    if state.get("task") != task.name:
        raise ConfigError(
            f"{uri}: a {state.get('task')!r} checkpoint cannot resume task {task.name!r} "
            f"(branch it with `emoexp resume {uri}`, which takes the task from the checkpoint)"
        )
    given = {k: getattr(cfg, k) for k in given_keys(cfg)}
    merged = _config_from_state(task, state, {**given, "resume_from": uri})
    # lineage stays in one experiment: the parent's, unless the user named another
    exp_id = None if "experiment_name" in given else T.run_experiment_id(state.get("run_id"))
    return Resume("branch", state, uri, experiment_id=exp_id), merged


def _inherited_tags(state: dict[str, Any]) -> dict[str, str]:
    """What a branch inherits from its parent: where the pretrained weights came from, and how."""
    tags = dict(state.get("inherited_tags") or {})
    if tags or not state.get("run_id"):
        return tags
    try:  # a checkpoint written before checkpoints carried them: ask the parent run
        from mlflow import MlflowClient

        parent = MlflowClient().get_run(state["run_id"]).data.tags
    except Exception:
        return {}
    return {k: v for k, v in parent.items() if k in T.INHERITED_TAGS}


def continue_run(run_id: str, **fit_kwargs) -> Result:
    """The same run, after a crash or kill, from its last checkpoint (local staging or artifact)."""
    task, cfg, resume = plan_continue(run_id)
    return fit(task, cfg, resume=resume, **fit_kwargs)


def plan_continue(run_id: str) -> tuple[Task, TrainConfig, Resume]:
    """What :func:`continue_run` will run: the run's task and config, and its newest readable
    checkpoint. A run whose process is alive is refused (it is still training)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except Exception as e:
        raise ValueError(f"run {run_id}: not found in {_tracking_uri()} ({e})") from None
    if run.info.status == "FINISHED" and run.data.tags.get(T.TAG_STOP_REASON):
        raise ValueError(f"run {run_id} already FINISHED ({run.data.tags[T.TAG_STOP_REASON]}); "
                         "branch from it with `emoexp resume runs:/<id>/checkpoints/last.pt` instead")
    alive = T.run_liveness(run) if not D.under_torchrun() else None  # the launcher checked
    if alive is not None and alive.alive:
        raise ValueError(f"run {run_id} is still running ({alive.why}); continue it once that process "
                         "has stopped")
    state, src, note = _newest_checkpoint(client, run_id)
    task = get_task(state["task"])
    cfg = _config_from_state(task, state, {})
    log.info("continuing run %s from epoch %d (%s)", run_id, state["epoch"], src)
    if note:
        log.warning("%s", note)
    return task, cfg, Resume("continue", state, src, run_id=run_id, note=note)


def _checkpoint_epoch_of(name: str) -> int | None:
    """``epoch_004.pt`` -> 4; None for other names."""
    stem = name[:-3] if name.endswith(".pt") else name
    if stem.startswith("epoch_") and stem[6:].isdigit():
        return int(stem[6:])
    return None


def _newest_checkpoint(client, run_id: str) -> tuple[dict[str, Any], str, str]:
    """The newest readable full checkpoint of a run, from its local stage and its artifacts:
    ``last.pt``, else (unreadable, or older than a file a kill left after it) ``best.pt`` or the
    newest ``epoch_NNN.pt``; says so when it falls back past an unreadable ``last.pt``."""
    from emoexp.checkpoints import CheckpointError, load_checkpoint, load_from_uri

    local_dir = T.local_run_dir(run_id) / T.ART_CKPT_DIR
    try:
        stored = [a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, T.ART_CKPT_DIR)]
    except Exception:
        stored = []
    local = [p.name for p in local_dir.glob("*.pt") if not p.name.startswith(".")] if local_dir.is_dir() else []
    sources: dict[str, list[tuple[str, Any]]] = {}
    for name in local:
        sources.setdefault(name, []).append((str(local_dir / name), lambda n=name: load_checkpoint(local_dir / n)))
    for name in stored:
        uri = f"runs:/{run_id}/{T.ART_CKPT_DIR}/{name}"
        sources.setdefault(name, []).append((uri, lambda u=uri: load_from_uri(u)))

    found: list[tuple[dict[str, Any], str, str]] = []
    broken: list[tuple[str, str]] = []

    def load(name: str) -> None:
        for label, read in sources.get(name, []):
            try:
                found.append((read(), label, name))
            except CheckpointError as e:
                broken.append((label, str(e).split(": ", 1)[-1]))

    load(T.ART_LAST)
    load(T.ART_BEST)
    newest = max((f[0]["epoch"] for f in found), default=0)
    numbered = sorted(((e, n) for n in sources if (e := _checkpoint_epoch_of(n)) is not None), reverse=True)
    for epoch, name in numbered:
        if epoch < newest:
            break
        load(name)
        if any(f[2] == name for f in found):
            break
    if not found:
        tried = "; ".join(f"{label}: {why}" for label, why in broken) or "no checkpoint in the stage or the artifacts"
        raise ValueError(f"run {run_id} has no readable checkpoint to continue from ({tried}); if it died before "
                         f"its first epoch ended, `emoexp runs mark-killed {run_id}` ends it and a new run starts over")
    rank = {T.ART_LAST: 2, T.ART_BEST: 0}  # on a tie: last.pt, then epoch_NNN.pt, then best.pt
    state, src, name = max(found, key=lambda f: (int(f[0]["epoch"]), rank.get(f[2], 1)))
    bad_last = [label for label, _ in broken if label.endswith(T.ART_LAST)]
    note = ""
    if bad_last and name != T.ART_LAST:
        note = (f"{' and '.join(bad_last)} unreadable; continuing from {src} (epoch {int(state['epoch'])}), "
                "the newest readable checkpoint")
    elif name != T.ART_LAST:
        note = f"{src} (epoch {int(state['epoch'])}) is newer than last.pt (a kill came between them): continuing from it"
    return state, src, note


def _config_from_state(task: Task, state: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    saved = saved_values(task.config_cls, state["config"])
    base = apply_overrides(task.default_config(), saved)
    arch = set(task.config_cls.ARCH_KEYS)
    clash = {k for k in overrides if k.replace("-", "_") in arch and str(overrides[k]) != str(saved.get(k.replace("-", "_")))}
    if clash:
        raise ValueError(f"cannot change architecture keys on resume: {', '.join(sorted(clash))} "
                         "(they define the checkpoint's network)")
    return apply_overrides(base, overrides)


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()
