"""The ``emoexp`` command line. Every command is a thin call into the modules; no classes here.

Heavy libraries load inside the commands, so ``emoexp --help`` answers at once.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import click

from emoexp.config import ConfigError, apply_overrides, field_help, field_types, load_preset
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


def _user_errors(fn):
    """Bad input ends with one clear line (and exit code 2), never a deep traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from emoexp.checkpoints import CheckpointError
        from emoexp.data.base import DataError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, CheckpointError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
        except ValueError as e:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            raise click.ClickException(str(e)) from None

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


def _task_command(task_name: str) -> click.Command:
    task = get_task(task_name)
    cls = task.config_cls
    types = field_types(cls)
    helps = field_help(cls)
    defaults = task.default_config().to_dict()
    params: list[click.Parameter] = []
    for name, typ in types.items():
        opt = "--" + name.replace("_", "-")
        # Real defaults for --help; only options given on the command line become overrides.
        kw: dict[str, Any] = {"default": defaults[name], "help": helps[name], "show_default": True}
        if typ is bool:
            kw.update(type=click.BOOL, is_flag=False, flag_value=True)
        else:
            kw["type"] = {int: int, float: float}.get(typ, str)
        params.append(click.Option([opt], **kw))
    params.append(click.Option(["--preset"], type=click.Path(dir_okay=False),
                               help="YAML file of option: value (only what differs from the defaults)."))

    @_user_errors
    def callback(preset: str | None = None, **values: Any) -> None:
        ctx = click.get_current_context()
        given = {k: v for k, v in values.items()
                 if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
        overrides: dict[str, Any] = {}
        if preset:
            data = load_preset(preset)
            other = data.pop("task", task_name)
            if other != task_name:
                raise ConfigError(f"{preset}: a preset for task {other!r}, not {task_name!r}")
            overrides.update(data)
        overrides.update(given)
        cfg = apply_overrides(task.default_config(), overrides)
        _run_training(task, cfg)

    return click.Command(task_name, params=params, callback=callback, help=task.summary,
                         short_help=task.summary)


def _run_training(task, cfg) -> None:
    from emoexp import engine

    if cfg.resume_from:
        result = engine.branch(cfg.resume_from, _diff(task, cfg))
    else:
        result = engine.fit(task, cfg)
    _print_result(task.name, result)


def _diff(task, cfg) -> dict[str, Any]:
    """The options a user set on a branch resume (those differing from the task's defaults)."""
    d, base = cfg.to_dict(), task.default_config().to_dict()
    return {k: v for k, v in d.items() if v != base[k] and k != "resume_from"}


def _print_result(name: str, result) -> None:
    click.echo("")
    click.echo(f"{name}: run {result.run_id or '(not tracked)'}  stop: {result.stop_reason}")
    click.echo(f"  best {result.monitor} {result.best_value:.4f} at epoch {result.best_epoch}; "
               f"best_val_macro_f1 {result.best_val_macro_f1:.4f}")
    if result.test_metrics:
        click.echo(f"  test_accuracy {result.test_metrics.get('test_accuracy', float('nan')):.4f}  "
                   f"test_macro_f1 {result.test_metrics.get('test_macro_f1', float('nan')):.4f}")
    if result.run_id:
        click.echo(f"  checkpoints: runs:/{result.run_id}/checkpoints/last.pt   model: runs:/{result.run_id}/model")


for _name in list_tasks():
    train.add_command(_task_command(_name))


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
        result = engine.continue_run(run_id)
        _print_result("resume", result)
        return
    overrides: dict[str, Any] = {}
    if weights is not None and not weights.strip():
        weights = None  # empty keeps the parent's weights (the MLproject `resume` default)
    for key, value in (("epochs", epochs), ("weights", weights), ("lr", lr),
                       ("experiment_name", experiment_name), ("run_name", run_name),
                       ("description", description)):
        if value is not None:
            overrides[key] = value
    for item in sets:
        if "=" not in item:
            raise click.UsageError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        overrides[k.strip()] = v
    result = engine.branch(checkpoint, overrides)
    _print_result("resume", result)


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
@click.option("--max", "max_results", default=50, show_default=True)
@_user_errors
def runs_list(task_name, experiment, max_results) -> None:
    """List runs with their key metrics and checkpoints."""
    from emoexp.lineage import list_runs

    rows = list_runs(task=task_name, experiment=experiment, max_results=max_results)
    if not rows:
        click.echo("no runs")
        return
    click.echo(f"{'run_id':32}  {'task':16}  {'status':9}  {'epochs':>6}  {'best_f1':>7}  checkpoints")
    for r in rows:
        click.echo(f"{r['run_id']:32}  {r['task']:16}  {r['status']:9}  {r['epochs']:>6}  "
                   f"{r['best_val_macro_f1']:>7}  {', '.join(r['checkpoints'])}")


# ------------------------------------------------------------------------------------------------
# data


@main.group()
def data() -> None:
    """Datasets: write small synthetic ones in the real on-disk formats."""


@data.command("synth")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
@click.option("--subjects", type=int, default=4, show_default=True, help="Subjects (actors) to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Generator options, e.g. n_samples=2500 (FACED), trials=20 (EAV).")
@_user_errors
def data_synth(dataset: str, out: str, subjects: int, seed: int, sets: tuple[str, ...]) -> None:
    """Write a tiny DATASET (faced, eav, ...) with a planted, learnable class signal."""
    from emoexp.data.synth import SYNTHESIZERS, synth

    if dataset not in SYNTHESIZERS:
        raise click.UsageError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(SYNTHESIZERS))}")
    options: dict[str, Any] = {}
    for item in sets:
        k, _, v = item.partition("=")
        options[k.strip()] = _literal(v)
    path = synth(dataset, out, subjects=subjects, seed=seed, **options)
    click.echo(f"wrote synthetic {dataset} to {path}")


def _literal(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


# ------------------------------------------------------------------------------------------------
# pipeline (the MLproject `main` entry point)


@main.command()
@click.option("--data-root", default="data/demo", show_default=True,
              help="Folder holding faced/ and eav/ (write them with `emoexp data synth`).")
@click.option("--pretrain-epochs", type=int, default=4, show_default=True)
@click.option("--finetune-epochs", type=int, default=6, show_default=True)
@click.option("--use-audio", type=click.BOOL, default=True, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--experiment-name", default="emoexp-pipeline", show_default=True)
@_user_errors
def pipeline(data_root, pretrain_epochs, finetune_epochs, use_audio, seed, experiment_name) -> None:
    """Run pretrain_faced -> finetune_eav as MLflow project steps under one parent run."""
    from emoexp.pipeline import run_pipeline

    run_pipeline(data_root=data_root, pretrain_epochs=pretrain_epochs, finetune_epochs=finetune_epochs,
                 use_audio=use_audio, seed=seed, experiment_name=experiment_name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
