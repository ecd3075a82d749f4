"""The MLflow project file, generated: every training task's config is an entry point.

``python -m emoexp.mlproject`` (or ``make mlproject``) writes ``MLproject`` in the repository
root; ``tests/test_mlproject.py`` fails when the committed file differs from :func:`render`.
A task's entry point takes every field of its config as a parameter of the same name and runs
``emoexp train <task> --dashed-name {name} ...``; the other entry points (``resume``, ``sweep``,
``cv``, ``baseline``, ``main``, ``promote``, ``dashboard``) come from :data:`COMMANDS` below.

Booleans are declared as quoted strings ("true"/"false"): ``mlflow run`` logs every declared
parameter as ``str(value)``, so a YAML ``true`` would be logged as ``True``, unlike the ``true``
that ``emoexp train`` logs for the same setting.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from emoexp.config import DEFAULT_OPTUNA_STORAGE
from emoexp.data.registry import dataset_dir

# Marks a parameter without a default (mlflow run then requires it).
REQUIRED = object()

# The entry points that are not a training task: name -> (parameters, command prefix). Each
# parameter is (name, type, default); the command passes each as --dashed-name {name}, except
# those named in the prefix (positional arguments).
COMMANDS: dict[str, tuple[list[tuple[str, type, Any]], str]] = {
    "resume": ([("checkpoint", str, REQUIRED), ("epochs", int, 5), ("weights", str, "")],
               "emoexp resume {checkpoint}"),
    "sweep": ([("task", str, "finetune_eav"), ("n_trials", int, 20), ("storage", str, DEFAULT_OPTUNA_STORAGE),
               ("study_name", str, ""), ("space", str, ""), ("pruner", str, "median"),
               ("data_dir", str, dataset_dir("eav")), ("epochs", int, 10), ("options", str, ""), ("folds", str, "")],
              "emoexp sweep {task}"),
    "cv": ([("task", str, "finetune_eav"), ("folds", str, "loso"), ("baseline", bool, False),
            ("data_dir", str, dataset_dir("eav")), ("epochs", int, 10), ("options", str, "")],
           "emoexp cv {task}"),
    "baseline": ([("task", str, "finetune_eav"), ("data_dir", str, dataset_dir("eav")), ("options", str, "")],
                 "emoexp baseline {task}"),
    "main": ([("data_root", str, "data/demo"), ("pretrain_epochs", int, 4), ("finetune_epochs", int, 6),
              ("sweep_trials", int, 3), ("sweep_epochs", int, 3), ("use_audio", bool, True), ("seed", int, 42),
              ("force", bool, False)],
             "emoexp pipeline"),
    "promote": ([("modality", str, REQUIRED), ("metric", str, "val_macro_f1"), ("alias", str, "staging"),
                 ("experiment", str, "")],
                "emoexp promote {modality}"),
    "dashboard": ([("experiment", str, ""), ("out", str, "dashboards")], "emoexp dashboard"),
}

HEADER = """\
# MLflow project: each training task is an entry point; every parameter is also an
# `emoexp train <task> --dashed-option`. Run with: mlflow run . -e <entry point> --env-manager local
# Generated from the task configs by `python -m emoexp.mlproject` (or `make mlproject`); do not edit
# by hand: tests/test_mlproject.py fails when this file differs from the generator's output.
name: emoexp

python_env: python_env.yaml

entry_points:
"""

_PLAIN = re.compile(r"[A-Za-z0-9_./@+-]+")


def _yaml_string(value: str) -> str:
    """``value`` as a YAML scalar that reads back as the same string: plain when that is safe."""
    import yaml

    if _PLAIN.fullmatch(value) and yaml.safe_load(f"x: {value}")["x"] == value:
        return value
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def declaration(typ: type, default: Any) -> str:
    """One parameter's ``{type: ..., default: ...}``."""
    if default is REQUIRED:
        return f"{{type: {({int: 'int', float: 'float'}).get(typ, 'string')}}}"
    if typ is bool:
        return f'{{type: string, default: "{"true" if default else "false"}"}}'
    if typ is int:
        return f"{{type: int, default: {int(default)}}}"
    if typ is float:
        return f"{{type: float, default: {float(default)!r}}}"
    if typ is str:
        return f"{{type: string, default: {_yaml_string(str(default))}}}"
    raise TypeError(f"no MLproject type for {typ!r}")


def _entry_point(name: str, params: list[tuple[str, type, Any]], prefix: str) -> str:
    lines = [f"  {name}:", "    parameters:"]
    lines += [f"      {p}: {declaration(t, d)}" for p, t, d in params]
    options = " ".join(f"--{p.replace('_', '-')} {{{p}}}" for p, _, _ in params if f"{{{p}}}" not in prefix)
    lines.append(f"    command: {json.dumps(f'{prefix} {options}'.strip())}")
    return "\n".join(lines) + "\n"


def task_parameters(task_name: str) -> list[tuple[str, type, Any]]:
    """(name, type, default) of every config field of ``task_name``, in the config's order."""
    from emoexp.config import field_types
    from emoexp.tasks import get_task

    task = get_task(task_name)
    defaults = task.default_config().to_dict()
    return [(name, typ, defaults[name]) for name, typ in field_types(task.config_cls).items()]


def render() -> str:
    """The text of ``MLproject``."""
    from emoexp.tasks import list_tasks

    blocks = [_entry_point(t, task_parameters(t), f"emoexp train {t}") for t in list_tasks()]
    blocks += [_entry_point(name, params, prefix) for name, (params, prefix) in COMMANDS.items()]
    return HEADER + "\n".join(blocks)


def write(path: str | Path | None = None) -> Path:
    """Write :func:`render` to ``path`` (default: ``MLproject`` beside the emoexp package)."""
    out = Path(path) if path else Path(__file__).resolve().parent.parent / "MLproject"
    out.write_text(render())
    return out


if __name__ == "__main__":
    print(f"wrote {write(sys.argv[1] if len(sys.argv) > 1 else None)}")
