"""MLproject is generated from the task configs (emoexp/mlproject.py): the committed file is the
generator's output, every config field is a parameter, and the hand-written entry points call
options the command line has."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from emoexp.config import field_types
from emoexp.mlproject import COMMANDS, REQUIRED, render
from emoexp.tasks import get_task, list_tasks

REPO = Path(__file__).resolve().parents[1]
# The parameters scripts and DESIGN.md rely on, in every training entry point.
DESIGN_PARAMS = {"data_dir", "epochs", "batch_size", "lr", "seed", "weights", "resume_from", "experiment_name"}


def _entry_points() -> dict:
    return yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


def test_committed_mlproject_is_the_generators_output():
    assert (REPO / "MLproject").read_text() == render(), (
        "MLproject is out of date with the task configs: run `make mlproject` (python -m emoexp.mlproject)")


def test_yaml_parses_into_the_project():
    project = yaml.safe_load(render())
    assert project["name"] == "emoexp" and project["python_env"] == "python_env.yaml"
    assert (REPO / project["python_env"]).is_file()
    assert set(project["entry_points"]) == set(list_tasks()) | set(COMMANDS)
    assert {"pretrain_faced", "finetune_eav", "main"} <= set(project["entry_points"])


def test_every_config_field_is_a_parameter_of_its_task():
    eps = _entry_points()
    for name in list_tasks():
        ep = eps[name]
        fields = field_types(get_task(name).config_cls)
        assert list(ep["parameters"]) == list(fields), name
        assert DESIGN_PARAMS <= set(fields)
        assert ep["command"].startswith(f"emoexp train {name} ")
        defaults = get_task(name).default_config().to_dict()
        for p, spec in ep["parameters"].items():
            assert f"--{p.replace('_', '-')} {{{p}}}" in ep["command"], (name, p)
            want, got = defaults[p], spec["default"]
            if isinstance(want, bool):
                # quoted: mlflow run logs str(default), which must read "true", not "True"
                assert spec["type"] == "string" and got == str(want).lower(), (name, p, got)
            elif isinstance(want, str):
                assert spec["type"] == "string" and got == want, (name, p, got)
            else:
                assert spec["type"] == type(want).__name__ and type(want)(got) == want, (name, p, got)


def test_hand_written_entry_points_call_real_options():
    from emoexp.cli import main as cli

    eps = _entry_points()
    for name, (params, prefix) in COMMANDS.items():
        words = prefix.split()[1:]                      # emoexp <command> [{positional}]
        cmd: click.Command = cli
        for w in words:
            if isinstance(cmd, click.Group):            # sweep {task}: the default task's command
                w = next(d for p, _, d in params if f"{{{p}}}" == w) if w.startswith("{") else w
                cmd = cmd.commands[w]
        options = {o for p in cmd.params for o in p.opts if o.startswith("--")}
        for p, _, default in params:
            spec = eps[name]["parameters"][p]
            assert ("default" in spec) == (default is not REQUIRED), (name, p)
            if f"{{{p}}}" in prefix:
                continue
            assert f"--{p.replace('_', '-')}" in options, (name, p)
            assert f"--{p.replace('_', '-')} {{{p}}}" in eps[name]["command"], (name, p)
