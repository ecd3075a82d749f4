"""The ``emoexp`` command line. Every command is a thin call into the modules; no classes here.

Heavy libraries load inside the commands, so ``emoexp --help`` answers at once.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from emoexp.config import (
    DEFAULT_OPTUNA_STORAGE,
    OPTUNA_STORAGE_ENV,
    ConfigError,
    apply_overrides,
    field_help,
    field_types,
    load_preset,
    parse_pairs,
)
from emoexp.tasks import get_task, list_tasks

log = logging.getLogger("emoexp")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("alembic", "mlflow.store", "urllib3", "matplotlib", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Hub lookups that emoexp keeps offline (emoexp.OFFLINE_DEFAULTS) fail as expected: bitsandbytes'
    # optional CPU kernel from the Hub, on every peft import on AVX512-BF16 CPUs.
    for offline in ("kernels", "bitsandbytes.backends.cpu.ops"):
        logging.getLogger(offline).setLevel(logging.DEBUG if verbose else logging.ERROR)


class _Real(click.FloatRange):
    """A finite number within a range (click's FloatRange lets NaN through every bound)."""

    def convert(self, value, param, ctx):
        import math

        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


POSITIVE = _Real(min=0.0, min_open=True)    # seconds, frames per second: > 0
NON_NEGATIVE = _Real(min=0.0)
COUNT = click.IntRange(min=0)               # seeds, counts that may be 0
AT_LEAST_1 = click.IntRange(min=1)


def _user_errors(fn):
    """Bad input ends with one clear line (exit code 1), never a deep traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from emoexp.checkpoints import CheckpointError
        from emoexp.data.base import DataError
        from emoexp.pipeline import StepFailed
        from emoexp.stack import StackError, tracking_error_line

        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, CheckpointError, FileNotFoundError, StackError, StepFailed) as e:
            raise click.ClickException(str(e)) from None
        except ValueError as e:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            raise click.ClickException(str(e)) from None
        except Exception as e:  # a tracking server's refusal (login, permission, outage): one line
            line = tracking_error_line(e)
            if line is None or logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            raise click.ClickException(line) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (and full tracebacks).")
@click.version_option(package_name="emoexp")
def main(verbose: bool) -> None:
    """emoexp: train and compare emotion-recognition models on MLflow + Optuna + PyTorch.

    \b
    Runs are tracked in MLflow: $MLFLOW_TRACKING_URI, or sqlite:///mlflow.db here.
    Look at them with:  mlflow ui --backend-store-uri sqlite:///mlflow.db
    """
    _setup_logging(verbose)


# ------------------------------------------------------------------------------------------------
# train


@main.group()
def train() -> None:
    """Train one task (each is also an MLflow project entry point of the same name).

    \b
    Every MLproject parameter is an option here, dashed: -P data_dir=X is --data-dir X.
    Writes to the run: config.yaml, checkpoints/{last,best,epoch_NNN}.pt, split.json,
    eval/ (confusion matrix, per-class report, ROC, curves) and the MLflow model `model`.
    """


def _task_options(task) -> list[click.Parameter]:
    """One --dashed option per config field, with the real default and the field's *why*."""
    cls = task.config_cls
    types = field_types(cls)
    helps = field_help(cls)
    defaults = task.default_config().to_dict()
    params: list[click.Parameter] = []
    for name, typ in types.items():
        opt = "--" + name.replace("_", "-")
        # Real defaults for --help; only options given on the command line become overrides.
        why = helps[name]
        if name == "batch_size" and "global" not in why:
            why += " (the global batch: with --nproc N each rank takes batch_size/N)"
        kw: dict[str, Any] = {"default": defaults[name], "help": why, "show_default": True}
        if typ is bool:
            kw.update(type=click.BOOL, is_flag=False, flag_value=True)
        else:
            kw["type"] = {int: int, float: float}.get(typ, str)
        # the seeds' spellings users arrive with: seed 001's --workers, seed 002's --dataset-root ...
        names = [opt] + list(getattr(task, "option_aliases", {}).get(name, ()))
        names += ["--workers"] if name == "num_workers" else []
        params.append(click.Option(names, **kw))
    params.append(click.Option(["--preset"], type=click.Path(dir_okay=False),
                               help="YAML file of option: value (only what differs from the defaults)."))
    params.append(click.Option(["--cpu"], is_flag=True, default=False,
                               help="Force CPU training (same as --device cpu; seed 001's flag)."))
    for cls_name in getattr(task, "class_flags", ()):
        params.append(click.Option([f"--{cls_name}"], type=float, default=None, metavar="W",
                                   help=f"Sampling weight of {cls_name} (seed 003's flags; joins --weights)."))
    return params


def _flag_overrides(task, values: dict[str, Any]) -> dict[str, Any]:
    """Fold --cpu and the per-class weight flags into config overrides (pops them from values)."""
    out: dict[str, Any] = {}
    if values.pop("cpu", False):
        out["device"] = "cpu"
    per_class = []
    for cls_name in getattr(task, "class_flags", ()):
        w = values.pop(cls_name.replace("-", "_"), None)
        if w is not None:
            per_class.append(f"{cls_name}={w:g}")
    if per_class:
        given = _given(values).get("weights") or ""
        out["weights"] = ",".join([p for p in given.split(",") if p.strip()] + per_class)
    return out


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The options set on the command line (not left at their defaults).

    Under ``mlflow run`` every declared parameter arrives on the command line, given or not, so
    there an option counts as set when it differs from its default.
    """
    ctx = click.get_current_context()
    given = {k: v for k, v in values.items()
             if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    if _UNDER_MLFLOW_RUN:
        given = {k: v for k, v in given.items() if v != _param_default(ctx, k)}
    return given


def _param_default(ctx: click.Context, name: str) -> Any:
    for p in ctx.command.params:
        if p.name == name:
            return p.default
    return None


# `mlflow run` starts the entry point's command with the run it created in MLFLOW_RUN_ID (read at
# import: the engine consumes the variable once it re-attaches to that run).
_UNDER_MLFLOW_RUN = bool(os.environ.get("MLFLOW_RUN_ID"))


def _task_overrides(task, preset: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """The config overrides of a command's task options, the one reading every command that takes
    them uses (train, sweep, baseline, cv): the preset, then the options given, then --cpu and the
    per-class weight flags folded in."""
    flags = _flag_overrides(task, values)   # pops them: they are no config keys
    overrides: dict[str, Any] = {}
    if preset:
        data = load_preset(preset)
        other = data.pop("task", task.name)
        if other != task.name:
            raise ConfigError(f"{preset}: a preset for task {other!r}, not {task.name!r}")
        overrides.update(data)
    overrides.update(_given(values))
    overrides.update(flags)
    return overrides


def _task_command(task_name: str) -> click.Command:
    task = get_task(task_name)
    params = _task_options(task)

    @_user_errors
    def callback(preset: str | None = None, **values: Any) -> None:
        overrides = _task_overrides(task, preset, values)
        cfg = apply_overrides(task.default_config(), overrides)
        _run_training(task, cfg, overrides)

    more = getattr(task, "help_more", "")   # e.g. a quick setting to try the task
    return click.Command(task_name, params=params, callback=callback,
                         help=task.summary + (f"\n\n{more}" if more else ""), short_help=task.summary)


def _run_training(task, cfg, overrides: dict[str, Any]) -> None:
    from emoexp import engine

    if _launch_ranks(cfg.nproc, ["train", task.name, *_as_options(overrides)]):
        return
    result = engine.fit(task, cfg)  # a cfg with resume_from branches there, as for every caller
    _print_result(task.name, result)


def _as_options(overrides: dict[str, Any]) -> list[str]:
    """Overrides -> the --dashed options that set them again (for the ranks torchrun starts)."""
    out: list[str] = []
    for k, v in overrides.items():
        text = ("true" if v else "false") if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)
        out += [f"--{k.replace('_', '-')}", text]
    return out


def _launch_ranks(nproc: int, args: list[str]) -> bool:
    """nproc > 1 outside torchrun: start this command again as nproc ranks under torchrun (which
    waits for them) and return True; otherwise False (this process trains)."""
    from emoexp import distributed as D

    if nproc <= 1 or D.under_torchrun():
        return False
    click.echo(f"starting {nproc} data-parallel ranks with torchrun", err=True)
    code = D.launch(args, nproc)
    if code:
        raise click.ClickException(f"torchrun: a rank failed (exit code {code}); the run is marked FAILED")
    return True


def _print_result(name: str, result) -> None:
    if os.environ.get("RANK", "0") != "0":  # DDP: rank 0 reports for all
        return
    click.echo("")
    click.echo(f"{name}: run {result.run_id or '(not tracked)'}  stop: {result.stop_reason}")
    click.echo(f"  best {result.monitor} {result.best_value:.4f} at epoch {result.best_epoch}; "
               f"best_val_macro_f1 {result.best_val_macro_f1:.4f}")
    if result.test_metrics:
        click.echo(f"  test_accuracy {result.test_metrics.get('test_accuracy', float('nan')):.4f}  "
                   f"test_macro_f1 {result.test_metrics.get('test_macro_f1', float('nan')):.4f}")
    if result.first_epoch > 1:
        click.echo(f"  a branch: judged on its own epochs {result.first_epoch}-{len(result.history)} "
                   f"(its ancestors' bests are in lineage.json)")
    if result.run_id:
        model = f"   model: {result.model_uri}" if getattr(result, "model_uri", None) else ""
        click.echo(f"  checkpoints: runs:/{result.run_id}/checkpoints/last.pt{model}")


for _name in list_tasks():
    train.add_command(_task_command(_name))


# ------------------------------------------------------------------------------------------------
# sweep


@main.group()
def sweep() -> None:
    """Optuna search over a task's options; each trial a nested MLflow run.

    \b
    emoexp sweep finetune_eav --n-trials 40 --storage sqlite:///optuna.db --data-dir DIR --epochs 10
    The search space is experiments/sweeps/<task>.yaml (--space picks another); the task's
    own options after the sweep options fix what is not searched. --n-trials is the study's
    total: run the same command again to finish an interrupted study, or start it on N
    machines against one storage (PostgreSQL: --storage postgresql://user:pw@host/db).
    The parent run gets the best value and params, tag emoexp.best_run_id and the Optuna
    plots (optuna/*.html).
    """


_SWEEP_OPTIONS = [
    click.Option(["--n-trials"], type=int, default=20, show_default=True, help="Total trials of the study."),
    click.Option(["--storage"], default=DEFAULT_OPTUNA_STORAGE, show_default=True, envvar=OPTUNA_STORAGE_ENV,
                 help=f"Optuna storage URL (sqlite, postgresql, mysql) or journal:PATH [env: {OPTUNA_STORAGE_ENV}; "
                      "an empty value: the variable's, else the default]."),
    click.Option(["--study-name"], default="", help="Study name (default: <task>-sweep); reused if it exists."),
    click.Option(["--space"], default="", help="Search-space YAML (default: experiments/sweeps/<task>.yaml)."),
    click.Option(["--pruner"], type=click.Choice(["median", "hyperband", "wilcoxon", "none"]), default="median",
                 show_default=True, help="Prune trials on the per-epoch validation metric (with --folds: per fold, "
                                         "wilcoxon)."),
    click.Option(["--folds"], default="",
                 help="Cross-validate every trial (loso, kfold:K, ...; see `emoexp cv`): optimise the fold mean."),
    click.Option(["--metric"], default="best_val_macro_f1", show_default=True,
                 help="Objective (maximised; minimised if it is a loss)."),
    click.Option(["--sweep-seed"], type=COUNT, default=0, show_default=True, help="Seed of the TPE sampler."),
    click.Option(["--heartbeat"], type=int, default=60, show_default=True,
                 help="Seconds between trial heartbeats (RDB storages): a killed worker's trial is failed after 2x."),
    click.Option(["--options"], default="",
                 help="More task options as 'key=value;key=value' (the MLproject sweep entry point uses it)."),
]


def _sweep_command(task_name: str) -> click.Command:
    task = get_task(task_name)
    params = [*_SWEEP_OPTIONS, *_task_options(task)]

    @_user_errors
    def callback(n_trials, storage, study_name, space, pruner, folds, metric, sweep_seed, heartbeat, options,
                 preset=None, **values) -> None:
        from emoexp.sweeps import run_sweep, summary_lines

        overrides = {**parse_pairs(options, sep=";", what="--options"),
                     **_task_overrides(task, preset, values)}
        result = run_sweep(task_name, overrides, n_trials=n_trials,
                           storage=storage, study_name=study_name, space=space, pruner=pruner,
                           metric=metric, seed=sweep_seed, heartbeat_interval=heartbeat, folds=folds)
        click.echo("\n" + "\n".join(summary_lines(result, metric)))

    return click.Command(task_name, params=params, callback=callback,
                         help=f"Sweep {task_name}: {task.summary}", short_help=task.summary)


for _name in list_tasks():
    sweep.add_command(_sweep_command(_name))


# ------------------------------------------------------------------------------------------------
# baseline


@main.group()
def baseline() -> None:
    """A classical baseline of a task: scikit-learn on classical features, same data and split.

    \b
    emoexp baseline finetune_eav --data-dir DIR --use-audio true
    Features per task (emoexp/baselines.py): EEG band power and differential entropy, MFCC
    statistics, HOG, sequence statistics, or the feature table as given; StandardScaler +
    LogisticRegression with C picked on the validation split. One MLflow run with the deep
    runs' metric names, tagged emoexp.model_kind=baseline.
    """


def _baseline_command(task_name: str) -> click.Command:
    task = get_task(task_name)
    params = [click.Option(["--options"], default="",
                           help="More task options as 'key=value;key=value' (the MLproject baseline entry point uses it).")]
    if task_name == "train_face":
        params.append(click.Option(["--baseline-features"], type=click.Choice(["hog", "pixels"]), default="hog",
                                   show_default=True, help="HOG, or the grey image downscaled to 24x24."))
    params += _task_options(task)

    @_user_errors
    def callback(options, preset=None, baseline_features="auto", **values) -> None:
        from emoexp.baselines import run_baseline

        overrides = {**parse_pairs(options, sep=";", what="--options"),
                     **_task_overrides(task, preset, values)}
        result = run_baseline(task_name, overrides, features=baseline_features)
        m = result["metrics"]
        click.echo(f"\n{task_name} baseline: run {result['run_id']}")
        click.echo(f"  val_macro_f1 {m['val_macro_f1']:.4f}  val_accuracy {m['val_accuracy']:.4f}")
        if "test_macro_f1" in m:
            click.echo(f"  test_macro_f1 {m['test_macro_f1']:.4f}  test_accuracy {m['test_accuracy']:.4f}")

    return click.Command(task_name, params=params, callback=callback,
                         help=f"Classical baseline of {task_name}: {task.summary}", short_help=task.summary)


for _name in list_tasks():
    baseline.add_command(_baseline_command(_name))


# ------------------------------------------------------------------------------------------------
# cv


@main.group()
def cv() -> None:
    """Cross-validate a task: one parent MLflow run, one nested run per fold.

    \b
    emoexp cv finetune_eav --folds loso --data-dir DIR --epochs 10 [--baseline]
    Schemes: loso, kfold:K, subject_kfold:K, trial_kfold:K, file:folds.json (seeded by --seed).
    The parent gets <metric>_mean and <metric>_std (sample std) of every fold's final metrics,
    cv_folds.csv and cv_subjects.csv. The same command again reuses finished folds and
    continues an interrupted one; several workers on one tracking store share the folds.
    """


_CV_OPTIONS = [
    click.Option(["--folds"], default="loso", show_default=True,
                 help="loso | kfold:K | subject_kfold:K | trial_kfold:K | file:PATH (a JSON list of folds' test subjects)."),
    click.Option(["--baseline"], type=click.BOOL, is_flag=False, flag_value=True, default=False, show_default=True,
                 help="Also fit the classical baseline on every fold (baseline.<metric>_mean on the parent)."),
    click.Option(["--options"], default="",
                 help="More task options as 'key=value;key=value' (the MLproject cv entry point uses it)."),
]


def _cv_command(task_name: str) -> click.Command:
    task = get_task(task_name)
    params = [*_CV_OPTIONS, *_task_options(task)]

    @_user_errors
    def callback(folds, baseline, options, preset=None, **values) -> None:
        from emoexp.cv import run_cv

        overrides = {**parse_pairs(options, sep=";", what="--options"),
                     **_task_overrides(task, preset, values)}
        result = run_cv(task, apply_overrides(task.default_config(), overrides), folds, baseline=baseline)
        click.echo(f"\n{task_name} {result.scheme}: {result.n_folds} folds, parent run {result.parent_run_id}")
        for row in result.folds:
            m = row["metrics"]
            click.echo(f"  fold {row['fold']}: {row.get('status', '?'):9} test_macro_f1 "
                       f"{m.get('test_macro_f1', float('nan')):.4f}  run {row.get('run_id', '-')}")
        a = result.aggregates
        for kind in ("", "baseline."):
            if f"{kind}test_macro_f1_mean" in a:
                click.echo(f"  {kind or 'deep '}test_macro_f1 {a[f'{kind}test_macro_f1_mean']:.4f} "
                           f"+- {a.get(f'{kind}test_macro_f1_std', float('nan')):.4f}  test_accuracy "
                           f"{a[f'{kind}test_accuracy_mean']:.4f} +- {a.get(f'{kind}test_accuracy_std', float('nan')):.4f}")

    return click.Command(task_name, params=params, callback=callback,
                         help=f"Cross-validate {task_name}: {task.summary}", short_help=task.summary)


for _name in list_tasks():
    cv.add_command(_cv_command(_name))


# ------------------------------------------------------------------------------------------------
# resume


@main.command()
@click.argument("checkpoint", required=False)
@click.option("--run", "run_id", help="Continue this run (same run) from its last checkpoint, after a crash or kill.")
@click.option("--epochs", type=int, help="Branch: how many more epochs to train.")
@click.option("--weights", help="Branch: new per-class sampling weights, e.g. 'sadness=5,happiness=0.5'.")
@click.option("--lr", type=float, help="Branch: a new learning rate.")
@click.option("--experiment-name", help="Branch: the experiment of the new run.")
@click.option("--run-name", help="Branch: the new run's name.")
@click.option("--description", help="Branch: why this branch exists (stored on the run).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Branch: any other run-time option.")
@_user_errors
def resume(checkpoint, run_id, epochs, weights, lr, experiment_name, run_name, description, sets) -> None:
    """Branch a new run from CHECKPOINT, or continue a crashed run with --run.

    \b
    Branch (a new run, lineage recorded; epochs continue the parent's numbering):
      emoexp resume runs:/<run_id>/checkpoints/epoch_004.pt --epochs 10 --weights "sadness=5"
    Continue (the same run, from its last checkpoint; same seed, same result):
      emoexp resume --run <run_id>
    """
    from emoexp import engine

    if bool(checkpoint) == bool(run_id):
        raise click.UsageError("give either a CHECKPOINT URI (branch) or --run RUN_ID (continue)")
    if run_id:
        if any(v is not None for v in (epochs, weights, lr, experiment_name, run_name, description)) or sets:
            raise click.UsageError("--run continues a run exactly as it was configured; options are for branches")
        task, cfg, res = engine.plan_continue(run_id)  # logs what it starts from when not last.pt
        if _launch_ranks(cfg.nproc, ["resume", "--run", run_id]):  # a DDP run continues as N ranks
            return
        _print_result("resume", engine.fit(task, cfg, resume=res))
        return
    overrides: dict[str, Any] = {}
    if weights is not None and not weights.strip():
        weights = None  # empty keeps the parent's weights (the MLproject `resume` default)
    for key, value in (("epochs", epochs), ("weights", weights), ("lr", lr),
                       ("experiment_name", experiment_name), ("run_name", run_name),
                       ("description", description)):
        if value is not None:
            overrides[key] = value
    overrides.update(parse_pairs(sets, what="--set", form="KEY=VALUE"))
    task, cfg, res = engine.plan_branch(checkpoint, overrides)
    if _launch_ranks(cfg.nproc, ["resume", checkpoint, *(f"--set={k}={v}" for k, v in overrides.items())]):
        return
    _print_result("resume", engine.fit(task, cfg, resume=res))


# ------------------------------------------------------------------------------------------------
# runs


@main.group()
def runs() -> None:
    """Look at runs: lineage of resumed runs, runs and their checkpoints."""


@runs.command("lineage")
@click.argument("run_id")
@_user_errors
def runs_lineage(run_id: str) -> None:
    """Print the chain of ancestors of RUN_ID with their epochs and sampling weights."""
    from emoexp.lineage import lineage_chain

    chain = lineage_chain(run_id)
    for depth, node in enumerate(chain):
        indent = "  " * depth
        arrow = "" if depth == 0 else "└─ "
        epochs = f"epochs {node['first_epoch']}-{node['last_epoch']}" if node["last_epoch"] else "no epochs"
        start = f" (from {node['resumed_from']})" if node.get("resumed_from") else ""
        click.echo(f"{indent}{arrow}{node['run_id']}  {node['run_name']}  [{node['status']}]  {epochs}{start}")
        click.echo(f"{indent}{'   ' if depth else ''}  weights: {node['weights']}")


@runs.command("list")
@click.option("--task", "task_name", help="Only runs of this task.")
@click.option("--experiment", help="Only this experiment (default: all).")
@click.option("--max", "max_results", type=AT_LEAST_1, default=50, show_default=True)
@_user_errors
def runs_list(task_name, experiment, max_results) -> None:
    """List runs with their experiment, name, kind, key metrics and checkpoints.

    \b
    kind: run (a training), branch (resumed from a checkpoint), sweep parent (holds a study's
    trials; trains nothing itself), trial, pruned trial (stopped early by the pruner), cv parent,
    cv fold, baseline (a classical model).
    """
    from emoexp.lineage import list_runs

    rows = list_runs(task=task_name, experiment=experiment, max_results=max_results)
    if not rows:
        click.echo("no runs")
        return

    def clip(text: str, n: int) -> str:
        return text if len(text) <= n else text[: n - 3] + "..."

    exp_w = min(20, max(len("experiment"), *(len(r["experiment"]) for r in rows)))
    name_w = min(32, max(len("run_name"), *(len(r["run_name"]) for r in rows)))
    click.echo(f"{'run_id':32}  {'experiment':{exp_w}}  {'run_name':{name_w}}  {'kind':12}  {'task':16}  "
               f"{'status':9}  {'epochs':>6}  {'best_f1':>7}  checkpoints")
    dead = []
    for r in rows:
        status = "DEAD" if r.get("liveness") == "dead" else r["status"]
        dead += [r] if status == "DEAD" else []
        click.echo(f"{r['run_id']:32}  {clip(r['experiment'], exp_w):{exp_w}}  {clip(r['run_name'], name_w):{name_w}}  "
                   f"{r['kind']:12}  {r['task']:16}  {status:9}  {r['epochs']:>6}  "
                   f"{r['best_val_macro_f1']:>7}  {', '.join(r['checkpoints'])}")
    for r in dead:
        click.echo(f"DEAD {r['run_id']}: RUNNING, but {r['liveness_why']}; `emoexp resume --run {r['run_id']}` "
                   f"continues it, `emoexp runs mark-killed {r['run_id']}` ends it KILLED")


@runs.command("mark-killed")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Also when its process cannot be shown dead (another host, no heartbeat yet).")
@_user_errors
def runs_mark_killed(run_ids, force) -> None:
    """End RUNNING runs whose process is gone (killed, crashed, lost machine) as KILLED.

    \b
    emoexp runs list                       # dead runs show as DEAD
    emoexp runs mark-killed <run_id>       # KILLED, tagged emoexp.stop_reason=killed
    emoexp resume --run <run_id>           # or continue it instead (also after mark-killed)
    A run whose process is alive is refused; --force ends one that cannot be shown dead.
    """
    from mlflow import MlflowClient

    from emoexp import tracking as T

    client = MlflowClient()
    failed = False
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except Exception as e:
            click.echo(f"{run_id}: not found ({str(e).splitlines()[0] if str(e) else type(e).__name__})", err=True)
            failed = True
            continue
        state = T.run_liveness(run)
        if state is None:
            click.echo(f"{run_id}: already {run.info.status}; nothing to do")
            continue
        if state.alive or (not state.dead and not force):
            hint = "" if state.alive else " (--force ends it anyway)"
            click.echo(f"{run_id}: not marked: {state.why}{hint}", err=True)
            failed = True
            continue
        T.mark_killed(run_id, state.why)
        click.echo(f"{run_id}: KILLED ({state.why})")
    if failed:
        sys.exit(1)


# ------------------------------------------------------------------------------------------------
# data


@main.group()
def data() -> None:
    """Datasets: write small synthetic ones in the real on-disk formats; import posture keypoints."""


@data.command("synth")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(), help="Folder to write into (a .mp4 path for face-video).")
@click.option("--subjects", "--actors", "subjects", type=int, default=None,
              help="Subjects (EEG sets) or actors (RAVDESS) to write; default: the generator's own "
                   "(sized for the tasks' default batch sizes).")
@click.option("--seed", type=COUNT, default=0, show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Generator options, e.g. n_samples=2500 (FACED), trials=20 (EAV), seconds=10 (DEAP), layout=csv (FER2013), "
                   "n_per_class=200 (faces), segments=neutral:2,happy:2 (face-video).")
@_user_errors
def data_synth(dataset: str, out: str, subjects: int | None, seed: int, sets: tuple[str, ...]) -> None:
    """Write a tiny DATASET in its real on-disk format, with a planted, learnable class signal.

    DATASET is any format of the dataset registry (emoexp/data/registry.py): faced, eav, deap,
    ravdess, fer2013, affectnet, face-video, posture, features, ... (an unknown name lists them all)."""
    from emoexp.data.registry import get_dataset, list_datasets, synthesize

    try:
        get_dataset(dataset)
    except ValueError:
        raise click.UsageError(f"unknown dataset {dataset!r}; known: {', '.join(list_datasets())}") from None
    options = {k: _literal(v) for k, v in parse_pairs(sets, what="--set", form="KEY=VALUE").items()}
    path = synthesize(dataset, out, subjects=subjects, seed=seed, **options)
    click.echo(f"wrote synthetic {dataset} to {path}")


@data.command("import")
@click.argument("dataset", type=click.Choice(["multiposture", "bold"]))
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the sequence layout into.")
@click.option("--seq-length", type=AT_LEAST_1, default=30, show_default=True, help="Frames per sequence window.")
@click.option("--stride", "--hop", "stride", type=AT_LEAST_1, default=15, show_default=True,
              help="Frames between window starts (--hop: the older spelling).")
@click.option("--on-bad-file", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@_user_errors
def data_import(dataset: str, source: str, out: str, seq_length: int, stride: int, on_bad_file: str) -> None:
    """Convert MultiPosture (SOURCE = data.csv) or BoLD (SOURCE = BOLD_public root) keypoints into
    the posture sequence layout (DIR/{train,val}/sequences/seq_NNN.npy + labels.json, 15 features
    per frame), so train_posture trains on them with their own label sets."""
    from emoexp.data.base import BadFilePolicy
    from emoexp.data.posture_import import import_bold, import_multiposture

    policy = BadFilePolicy(on_bad_file)
    make = import_multiposture if dataset == "multiposture" else import_bold
    path = make(source, out, seq_length=seq_length, stride=stride, policy=policy)
    click.echo(f"wrote {dataset} sequences to {path}" + (f" ({len(policy.skipped)} bad rows/files skipped)"
                                                         if policy.skipped else ""))


def _literal(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


# ------------------------------------------------------------------------------------------------
# registry: promote, registry list; predict on raw files


@main.command()
@click.argument("modality")
@click.option("--metric", default="val_macro_f1", show_default=True,
              help="Compare on this metric of the logged model (minimised if it is a loss).")
@click.option("--experiment", default="", help="Only runs of this experiment (default: all).")
@click.option("--alias", type=click.Choice(["staging", "production"]), default="staging", show_default=True,
              help="staging: the best run if it beats the holder; production: follow @staging.")
@click.option("--task", "task_name", default=None, help="Only this task of the modality.")
@click.option("--all", "show_all", is_flag=True, help="Also a line for each task that has no run at all.")
@_user_errors
def promote(modality: str, metric: str, experiment: str, alias: str, task_name: str | None,
            show_all: bool) -> None:
    """Register MODALITY's best runs and move an alias when they beat its holder.

    \b
    emoexp promote eeg                      # @staging -> the best run of each EEG task, if better
    emoexp promote eeg --alias production   # @production -> the version holding @staging
    One line per task you trained (--all: every task of the modality); nothing better is not an
    error (exit 0).
    """
    from emoexp.registry import promote as do_promote

    outcomes = do_promote(modality, metric=metric, experiment=experiment or None, alias=alias, task=task_name)
    shown = [o for o in outcomes if o.trained or show_all or task_name]
    for outcome in shown:
        click.echo(outcome.message)
    if not shown:
        click.echo(f"no runs of {', '.join(o.task for o in outcomes)} yet: nothing to promote")


@main.group()
def registry() -> None:
    """The model registry: emoexp-* models, their versions and aliases."""


@registry.command("list")
@_user_errors
def registry_list() -> None:
    """List every version of every emoexp-* registered model."""
    from emoexp.registry import registry_rows

    rows = registry_rows()
    if not rows:
        click.echo("no registered emoexp models")
        return

    def num(v) -> str:
        return "-" if v is None else f"{v:.3f}"

    click.echo(f"{'model':22}  {'ver':>3}  {'aliases':18}  {'run_id':32}  {'promoted on':24}  "
               f"{'best_f1':>7}  {'test_acc':>8}")
    for r in rows:
        promoted = f"{r['promoted_metric']}={float(r['promoted_value']):.4f}" if r["promoted_value"] else "-"
        click.echo(f"{r['model']:22}  {r['version']:>3}  {','.join(r['aliases']) or '-':18}  {r['run_id']:32}  "
                   f"{promoted:24}  {num(r['best_val_macro_f1']):>7}  {num(r['test_accuracy']):>8}")


@main.command()
@click.argument("model_uri")
@click.argument("files", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write every column to this CSV.")
@click.option("--overlap", type=float, default=0.0, show_default=True,
              help="Window overlap in [0, 1): 0 back to back, 0.5 half-overlapping.")
@_user_errors
def predict(model_uri: str, files: tuple[str, ...], out: str | None, overlap: float) -> None:
    """Predict raw FILES (.npy EEG, FACED .pkl, EAV .mat, .wav, .jpg/.png faces) with MODEL_URI, one row per window.

    \b
    emoexp predict models:/emoexp-eeg-encoder@staging rec.npy sub000.pkl --out preds.csv
    .npy holds (C, T) or (B, C, T) EEG at the model's sample rate; .pkl and .mat are resampled.
    A bad file is named (and the exit code is 1) while the good ones are answered. The model is
    rebuilt from its weights (checkpoint.pt, weights_only): its pickled python_model never runs.
    """
    import os

    from emoexp.apps.predict import predict_files

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the table readable
    bad: list[tuple[str, str]] = []
    df = predict_files(model_uri, list(files), overlap=overlap, errors=bad)
    click.echo(df[["file", "segment", "window", "start_s", "label", "prob"]].to_string(
        index=False, float_format=lambda v: f"{v:.3f}"))
    if out:
        df.to_csv(out, index=False)
        click.echo(f"wrote {len(df)} rows to {out}")
    for path, why in bad:  # the good files are answered above; each bad one named, exit 1
        click.echo(f"Error: {path}: {why}", err=True)
    if bad:
        sys.exit(1)


@main.command()
@click.argument("model_uri")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder to evaluate on (the format of the model's task).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--out", "out_dir", default="evaluation", show_default=True, type=click.Path(file_okay=False),
              help="Local folder for the reports.")
@click.option("--new-run", is_flag=True, help="Log to a new evaluation run instead of the model's training run.")
@click.option("--experiment", "experiment_name", default="", help="Experiment of the new evaluation run.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Change a data option of the model's config, e.g. dataset=fer2013.")
@_user_errors
def evaluate(model_uri, data_dir, split, out_dir, new_run, experiment_name, sets) -> None:
    """Evaluate MODEL_URI on a dataset: confusion matrix, per-class precision/recall/F1, ROC and
    the training curves, written to --out and to the run (the model's training run, or a new one).

    \b
    emoexp evaluate models:/emoexp-face@staging --data data/fer2013 --set dataset=fer2013
    emoexp evaluate runs:/<run_id>/checkpoints/best.pt --data data/affectnet --new-run
    """
    from emoexp.apps.evaluate import evaluate_model

    overrides = {k: _literal(v) for k, v in parse_pairs(sets, what="--set", form="KEY=VALUE").items()}
    ev = evaluate_model(model_uri, data_dir, split=split, out_dir=out_dir, overrides=overrides,
                        new_run=new_run, experiment_name=experiment_name)
    m = ev.metrics
    click.echo(f"{ev.task} on {data_dir} ({ev.split}, {ev.n} samples): accuracy {m.get('eval_accuracy', float('nan')):.4f}  "
               f"macro F1 {m.get('eval_macro_f1', float('nan')):.4f}")
    report = Path(out_dir) / "classification_report.txt"
    if report.is_file():
        click.echo(report.read_text())
    click.echo(f"reports in {out_dir}/" + (f"; logged to run {ev.run_id}" if ev.run_id else ""))


@main.command()
@click.argument("model_uri")
@click.option("--input", "input_path", type=click.Path(dir_okay=False),
              help="Audio file to stream (.wav, .flac, ...); without it, the microphone.")
@click.option("--window", type=POSITIVE, default=3.0, show_default=True, help="Window length, seconds.")
@click.option("--stride", "--hop", "stride", type=POSITIVE, default=1.0, show_default=True,
              help="Seconds between window starts (--hop: the older spelling).")
@click.option("--device", "input_device", default=None, help="Microphone device name or index (sounddevice).")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write one CSV row per window.")
@_user_errors
def listen(model_uri, input_path, window, stride, input_device, out) -> None:
    """Emotion per sliding window of speech, printed as it goes, with a speech model.

    \b
    emoexp listen models:/emoexp-speech@staging --input talk.wav --window 3 --stride 1
    emoexp listen models:/emoexp-speech@staging          # microphone (needs sounddevice)
    """
    import os

    from emoexp.apps import listen as L

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if input_path and not Path(input_path).is_file():
        raise click.ClickException(f"{input_path}: no such file")
    predict, classes, rate = L.speech_model(model_uri)
    rows: list[dict] = []
    try:
        blocks = L.file_blocks(input_path, rate) if input_path else L.microphone_blocks(rate, device=input_device)
        if not input_path:
            blocks = iter(blocks)
            first = next(blocks)  # fails now, clearly, when there is no microphone
            import itertools

            blocks = itertools.chain([first], blocks)
            click.echo(f"listening at {rate} Hz; Ctrl-C to stop", err=True)
        for wp in L.listen(predict, classes, rate, blocks, window, stride):
            click.echo(L.format_line(wp))
            rows.append({"start_s": wp.start_s, "end_s": wp.end_s, "label": wp.label, "prob": wp.prob,
                         **{f"prob_{c}": p for c, p in wp.probs.items()}})
    except L.NoMicrophone as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    if out:
        import pandas as pd

        pd.DataFrame(rows).to_csv(out, index=False)
        click.echo(f"wrote {len(rows)} windows to {out}")


@main.group()
def posture() -> None:
    """Body posture: keypoints from video (MediaPipe PoseLandmarker) -> posture-feature sequences."""


@posture.command("extract")
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--pose-model", required=True, type=click.Path(dir_okay=False),
              help="MediaPipe Pose Landmarker .task file (pose_landmarker_lite/full/heavy.task; none ships with mediapipe).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the (T, 15) .npy.")
@click.option("--fps", type=POSITIVE, default=None, help="Frames per second to sample (default: every frame).")
@_user_errors
def posture_extract(video, pose_model, out, fps) -> None:
    """Keypoints of the person in VIDEO, per frame, turned into the 15 posture features (the
    extractor training data goes through), saved as a .npy sequence for train_posture or predict.

    \b
    emoexp posture extract talk.mp4 --pose-model pose_landmarker_full.task --out seq_001.npy
    """
    from emoexp.apps.posture_extract import video_to_features

    feats = video_to_features(video, pose_model, out_npy=out, fps=fps)
    click.echo(f"wrote {out}: {feats.shape[0]} frames x {feats.shape[1]} features")


@main.command("predict-video")
@click.argument("model_uri")
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--fps", type=POSITIVE, default=5.0, show_default=True, help="Frames per second to sample.")
@click.option("--detector", default="auto", show_default=True,
              help="auto (OpenCV Haar cascade when installed, else whole frame) | haar | none | PATH to a "
                   "MediaPipe face detector .task/.tflite file.")
@click.option("--smoothing", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Smoothing window over time, seconds.")
@click.option("--min-duration", type=NON_NEGATIVE, default=0.6, show_default=True,
              help="A new emotion must last this long (s) to count as a transition.")
@click.option("--out", "out_dir", default="predictions", show_default=True, type=click.Path(file_okay=False))
@_user_errors
def predict_video_cmd(model_uri, video, fps, detector, smoothing, min_duration, out_dir) -> None:
    """Emotion over time in VIDEO with a face model: per-frame probabilities, smoothed, and the
    transitions (from, to, time, confidence); writes a CSV per table and a plotly timeline HTML.

    \b
    emoexp predict-video models:/emoexp-face@staging clip.mp4 --fps 5
    """
    import os

    from emoexp.apps.predict_video import predict_video, write_outputs

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from emoexp.serving import face_classifier

    classify, classes = face_classifier(model_uri)
    pred = predict_video(classify, classes, video, fps=fps, detector=detector,
                         smoothing_window_s=smoothing, min_duration_s=min_duration)
    paths = write_outputs(pred, out_dir, Path(video).name)
    tr = pred.transitions
    click.echo(f"{len(pred.frames)} frames at {pred.fps_sampled:g} fps; "
               f"no face found in {pred.n_frames_no_face} (whole frame used)")
    click.echo(tr.to_string(index=False, float_format=lambda v: f"{v:.2f}") if len(tr) else "no transitions")
    for name, p in paths.items():
        click.echo(f"{name}: {p}")


# ------------------------------------------------------------------------------------------------
# dashboard


@main.command()
@click.option("--experiment", default="", help="Only this experiment (default: every active one).")
@click.option("--out", "out_dir", default="dashboards", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write the HTML pages into.")
@click.option("--metric", default="val_macro_f1", show_default=True,
              help="The metric runs are compared on (parallel coordinates, curves).")
@click.option("--optuna-storage", default="", envvar=OPTUNA_STORAGE_ENV,
              help="The sweeps' Optuna storage URL, for Optuna's own plots "
              f"(default: ${OPTUNA_STORAGE_ENV}, else ./optuna.db when it exists).")
@click.option("--max-runs", type=AT_LEAST_1, default=500, show_default=True, help="Read at most this many runs, newest first.")
@click.option("--overwrite", is_flag=True,
              help="Replace the pages of another experiment in --out (refused without it).")
@_user_errors
def dashboard(experiment: str, out_dir: str, metric: str, optuna_storage: str, max_runs: int,
              overwrite: bool) -> None:
    """Write static plotly dashboards of the tracked runs and print the path of index.html.

    \b
    Pages: runs.html (comparison), curves.html (learning curves), class_f1.html (per-class F1
    vs sampling weights), lineage.html (resumed runs), sweeps.html (Optuna studies); they share
    one local plotly.min.js, so the folder opens offline.
    """
    from emoexp.dashboards import build_dashboards

    index = build_dashboards(experiment=experiment or None, out_dir=out_dir, metric=metric,
                             optuna_storage=optuna_storage or None, max_runs=max_runs, overwrite=overwrite)
    click.echo(str(index))


# ------------------------------------------------------------------------------------------------
# stack: a team tracking server on one box (emoexp/stack.py)


@main.group()
def stack() -> None:
    """A team tracking server on one box: PostgreSQL + `mlflow server`, on 127.0.0.1.

    \b
    eval "$(emoexp stack up --dir /srv/emoexp)"   # exports MLFLOW_TRACKING_URI, EMOEXP_OPTUNA_STORAGE
    emoexp stack status --dir /srv/emoexp
    emoexp stack down --dir /srv/emoexp
    """


@stack.command("up")
@click.option("--dir", "dir_", required=True, type=click.Path(file_okay=False),
              help="The stack's folder: pg/ (private cluster), artifacts/, mlflow.log, stack.json.")
@click.option("--port", type=int, default=None, help="MLflow server port on 127.0.0.1 [default: 5000, or the stack's].")
@click.option("--pg-port", type=int, default=None,
              help="Port of the private PostgreSQL [default: a free one, kept in stack.json].")
@click.option("--postgres-url", default="",
              help="Use this PostgreSQL server (postgresql://user:password@host:port/postgres) instead of a private one.")
@click.option("--basic-auth/--no-basic-auth", default=None,
              help="Run MLflow's basic-auth app: clients log in with MLFLOW_TRACKING_USERNAME/PASSWORD.")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds to wait for the MLflow server.")
@_user_errors
def stack_up(dir_, port, pg_port, postgres_url, basic_auth, timeout) -> None:
    """Start the stack in DIR (or what of it is stopped) and print the exports clients need."""
    from emoexp import stack as S

    st = S.up(dir_, port=port, pg_port=pg_port, postgres_url=postgres_url, basic_auth=basic_auth, timeout=timeout)
    click.echo(f"MLflow {st.tracking_uri} on {S.redact(st.mlflow_backend)}, artifacts in {st.dir}/artifacts"
               + (" (basic-auth; admin's login below)" if st.basic_auth else ""), err=True)
    click.echo(f"Optuna: emoexp sweep <task> --storage ${OPTUNA_STORAGE_ENV}; watch with "
               f"optuna-dashboard {S.redact(st.optuna_storage)}", err=True)
    click.echo(S.exports(st))


@stack.command("down")
@click.option("--dir", "dir_", required=True, type=click.Path(file_okay=False))
@click.option("--keep-postgres", is_flag=True, help="Stop only the MLflow server.")
@_user_errors
def stack_down(dir_, keep_postgres) -> None:
    """Stop the stack's MLflow server and its private PostgreSQL (the data stay in DIR)."""
    from emoexp import stack as S

    S.down(dir_, keep_postgres=keep_postgres)
    click.echo(f"stopped the stack in {dir_}" + (" (PostgreSQL left running)" if keep_postgres else ""))


@stack.command("status")
@click.option("--dir", "dir_", required=True, type=click.Path(file_okay=False))
@_user_errors
def stack_status(dir_) -> None:
    """Say whether the stack's MLflow server and PostgreSQL are up (exit 1 if either is down)."""
    from emoexp import stack as S

    st = S.status(dir_)
    click.echo(f"mlflow    {'up' if st['mlflow'] else 'DOWN':4}  {st['tracking_uri']}  pid {st['mlflow_pid']}"
               + ("  basic-auth" if st["basic_auth"] else ""))
    click.echo(f"postgres  {'up' if st['postgres'] else 'DOWN':4}  {st['postgres_url']}"
               + ("  (private cluster)" if st["managed_postgres"] else ""))
    click.echo(f"optuna    {st['optuna_storage']}")
    if not (st["mlflow"] and st["postgres"]):
        sys.exit(1)


# ------------------------------------------------------------------------------------------------
# pipeline (the MLproject `main` entry point)


@main.command()
@click.option("--data-root", default="data/demo", show_default=True,
              help="Folder holding faced/ and eav/ (write them with `emoexp data synth`).")
@click.option("--pretrain-epochs", type=AT_LEAST_1, default=4, show_default=True)
@click.option("--finetune-epochs", type=AT_LEAST_1, default=6, show_default=True)
@click.option("--sweep-trials", type=COUNT, default=3, show_default=True, help="0 skips the sweep step.")
@click.option("--sweep-epochs", type=AT_LEAST_1, default=3, show_default=True)
@click.option("--use-audio", type=click.BOOL, default=True, show_default=True)
@click.option("--seed", type=COUNT, default=42, show_default=True)
@click.option("--force", type=click.BOOL, default=False, show_default=True,
              help="Re-run steps even when a finished identical one exists.")
@click.option("--experiment-name", default="emoexp-pipeline", show_default=True)
@_user_errors
def pipeline(data_root, pretrain_epochs, finetune_epochs, sweep_trials, sweep_epochs, use_audio, seed, force,
             experiment_name) -> None:
    """The `main` entry point: pretrain_faced -> finetune_eav -> sweep -> promote -> dashboard.

    Each step is an MLflow project run under one parent run, fed by the previous step's run.
    Finished training/sweep steps with identical params, code and data are reused (--force re-runs).
    """
    from emoexp.pipeline import run_pipeline

    run_pipeline(data_root=data_root, pretrain_epochs=pretrain_epochs, finetune_epochs=finetune_epochs,
                 sweep_trials=sweep_trials, sweep_epochs=sweep_epochs, use_audio=use_audio, seed=seed,
                 force=force, experiment_name=experiment_name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
