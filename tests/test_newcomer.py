"""What a newcomer sees: one line per sweep trial and a readable summary, `runs list` saying what
each run is, dashboards that never overwrite another experiment's pages, `promote` quiet about
tasks never trained, the demo's closing commands, quiet MLflow, and a README that points only
at files of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import tracking as T
from emoexp.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# sweeps


def test_one_line_per_trial_and_a_summary_without_best_best():
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    from emoexp.sweeps import SweepResult, summary_lines, trial_line

    dists = {"lr": FloatDistribution(1e-5, 1e-2, log=True), "batch_size": IntDistribution(8, 32)}
    done = create_trial(value=0.41234, params={"lr": 0.000312345, "batch_size": 16}, distributions=dists)
    pruned = create_trial(state=TrialState.PRUNED, params={"lr": 0.01, "batch_size": 8}, distributions=dists,
                          intermediate_values={1: 0.2, 2: 0.21})
    failed = create_trial(state=TrialState.FAIL, params={"lr": 0.001, "batch_size": 8}, distributions=dists)
    for t, n in ((done, 0), (pruned, 1), (failed, 2)):
        t.number = n
    assert trial_line(done, "best_val_macro_f1") == "trial 0: lr=0.0003123, batch_size=16 -> best_val_macro_f1 0.4123"
    assert trial_line(pruned, "best_val_macro_f1") == "trial 1: lr=0.01, batch_size=8 -> pruned at epoch 2"
    assert trial_line(pruned, "best_val_macro_f1", "fold").endswith("-> pruned at fold 3")
    assert trial_line(failed, "val_loss").endswith("-> fail")
    res = SweepResult(study_name="s", parent_run_id="p", n_trials=3, best_value=0.41234,
                      best_params={"lr": 0.000312345, "batch_size": 16}, best_run_id="r",
                      states={"COMPLETE": 1, "PRUNED": 1, "FAIL": 1})
    text = "\n".join(summary_lines(res, "best_val_macro_f1"))
    assert "best best" not in text and "3 trials (1 complete, 1 fail, 1 pruned)" in text
    assert "best trial: best_val_macro_f1 = 0.4123 with lr=0.0003123, batch_size=16" in text


def test_sweep_prints_each_trial(tmp_path, caplog):
    """A real (tiny) study: each finished trial is one line, pruned ones say at which epoch."""
    import logging

    from emoexp.data.registry import synthesize
    from emoexp.sweeps import run_sweep

    data = synthesize("features", tmp_path / "features", subjects=None, seed=0, n=40)
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.0001, high: 0.1, log: true}\n")
    with caplog.at_level(logging.INFO, logger="emoexp.sweeps"):
        res = run_sweep("train_classifier", {"data_dir": str(data), "epochs": 2, "hidden": "8", "log_model": False,
                                             "checkpoint_every": 0},
                        n_trials=2, storage=f"sqlite:///{tmp_path / 'optuna.db'}", space=str(space),
                        experiment_name="newcomer-sweep")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial ")]
    assert len(lines) == res.n_finished == 2, lines
    assert all(re.fullmatch(r"trial \d: lr=[0-9.e-]+ -> (best_val_macro_f1 [0-9.]+|pruned at epoch \d)", ln)
               for ln in lines), lines


# ------------------------------------------------------------------------------------------------
# runs list


def test_run_kinds_from_tags():
    from emoexp.lineage import run_kind

    assert run_kind({}) == "run"
    assert run_kind({T.TAG_PARENT_RUN: "abc"}) == "branch"
    assert run_kind({T.TAG_SWEEP: T.SWEEP_PARENT}) == "sweep parent"
    assert run_kind({T.TAG_TRIAL: "3"}) == "trial"
    assert run_kind({T.TAG_TRIAL: "3", T.TAG_STOP_REASON: "pruned"}) == "pruned trial"
    assert run_kind({T.TAG_CV_SCHEME: "loso"}) == "cv parent"
    assert run_kind({T.TAG_CV_SCHEME: "loso", T.TAG_FOLD: "2"}) == "cv fold"
    assert run_kind({T.TAG_MODEL_KIND: "baseline"}) == "baseline"
    assert run_kind({T.TAG_MODEL_KIND: "deep"}) == "run"


def test_runs_list_shows_experiment_name_and_kind():
    client = MlflowClient()
    exp = client.create_experiment("newcomer-runs")
    kinds = {"plain": {}, "sweep-x": {T.TAG_SWEEP: T.SWEEP_PARENT},
             "trial-001": {T.TAG_TRIAL: "1", T.TAG_STOP_REASON: "pruned"},
             "cv-x": {T.TAG_CV_SCHEME: "kfold:3"}}
    ids = {}
    for name, tags in kinds.items():
        run = client.create_run(exp, run_name=name, tags={T.TAG_TASK: "train_classifier", **tags})
        client.set_terminated(run.info.run_id)
        ids[name] = run.info.run_id
    res = CliRunner().invoke(cli, ["runs", "list", "--experiment", "newcomer-runs"])
    assert res.exit_code == 0, res.output
    header, *rows = res.output.splitlines()
    assert header.split()[:4] == ["run_id", "experiment", "run_name", "kind"]
    row = {name: next(r for r in rows if r.startswith(rid)) for name, rid in ids.items()}
    assert "newcomer-runs" in row["plain"] and " plain " in row["plain"] and " run " in row["plain"]
    assert "sweep parent" in row["sweep-x"] and "pruned trial" in row["trial-001"] and "cv parent" in row["cv-x"]


# ------------------------------------------------------------------------------------------------
# dashboards


def test_dashboards_never_overwrite_another_experiments_pages(tmp_path):
    from emoexp.dashboards import OWNER, claim_folder

    out = tmp_path / "dashboards"
    claim_folder(out, "mine")                                    # nothing there: fine
    out.mkdir()
    (out / "index.html").write_text("<html>the user's own pages</html>")
    with pytest.raises(ValueError, match="did not mark as its own.*--overwrite"):
        claim_folder(out, "emoexp-demo")                         # unmarked pages are not ours to replace
    claim_folder(out, "emoexp-demo", overwrite=True)
    (out / OWNER).write_text('{"experiment": "mine"}')
    claim_folder(out, "mine")                                    # a rebuild of the same experiment
    with pytest.raises(ValueError, match="experiment 'mine'"):
        claim_folder(out, "emoexp-demo")
    with pytest.raises(ValueError, match="experiment 'mine'"):
        claim_folder(out, "")                                    # every experiment's pages: another set
    res = CliRunner().invoke(cli, ["dashboard", "--experiment", "emoexp-demo", "--out", str(out)])
    assert res.exit_code == 1 and "holds experiment 'mine'" in res.output and "Traceback" not in res.output
    assert (out / "index.html").read_text() == "<html>the user's own pages</html>"


def test_the_pipeline_writes_dashboards_into_a_folder_of_its_own():
    import inspect

    from emoexp.pipeline import _folder_name, run_pipeline

    assert inspect.signature(run_pipeline).parameters["dashboards_dir"].default is None
    assert _folder_name("emoexp-demo") == "emoexp-demo" and _folder_name("my exp/2") == "my_exp_2"


# ------------------------------------------------------------------------------------------------
# promote


def test_promote_says_nothing_about_tasks_never_trained():
    client = MlflowClient()
    exp = client.create_experiment("newcomer-promote")
    run = client.create_run(exp, tags={T.TAG_TASK: "pretrain_faced"})   # trained, but no model logged
    client.set_terminated(run.info.run_id)
    res = CliRunner().invoke(cli, ["promote", "eeg", "--experiment", "newcomer-promote"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pretrain_faced:"), lines
    assert "finetune_eav" not in res.output and "train_eeg_llm" not in res.output
    every = CliRunner().invoke(cli, ["promote", "eeg", "--experiment", "newcomer-promote", "--all"])
    assert "finetune_eav:" in every.output and "train_eeg_llm:" in every.output
    client.create_experiment("newcomer-empty")
    none = CliRunner().invoke(cli, ["promote", "eeg", "--experiment", "newcomer-empty"])
    assert none.exit_code == 0 and "nothing to promote" in none.output and len(none.output.splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# the demo's end, quiet MLflow, the README's links


def test_next_steps_are_commands_for_a_fresh_shell():
    import shlex
    import sys

    from emoexp.pipeline import next_steps

    text = next_steps({"pretrain_faced": "p" * 32, "finetune_eav": "f" * 32}, "emoexp-demo", "data/demo", True)
    bin_dir = Path(sys.executable).parent
    assert "models serve -m models:/emoexp-eeg@staging" in text and "sweep finetune_eav" in text
    assert f"resume runs:/{'f' * 32}/checkpoints/last.pt" in text and "activate" in text
    for line in text.splitlines():
        words = shlex.split(line.split(":", 1)[1]) if ":" in line and "  " in line else []
        exe = next((w for w in words if w.endswith(("/mlflow", "/emoexp"))), None)
        if exe:
            assert (Path(exe) if Path(exe).is_absolute() else Path.cwd() / exe).resolve() == \
                (bin_dir / Path(exe).name).resolve(), line


def test_emoexp_turns_mlflow_artifact_progress_bars_off_by_default():
    import os

    import emoexp

    assert emoexp.QUIET_DEFAULTS["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR") in ("false", "true")


def test_serving_import_warns_nothing():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-W", "always", "-c", "import emoexp.serving"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "type hint" not in out.stderr.lower() and "\x1b[" not in out.stderr, out.stderr


def test_readme_and_mlproject_point_only_at_files_in_the_repository():
    for name in ("README.md", "MLproject"):
        text = (ROOT / name).read_text()
        assert "../" not in text and "/work/" not in text, name
        for ref in re.findall(r"`([\w./-]+\.md)`|\]\(([\w./-]+\.md)[#)]", text):
            path = next(r for r in ref if r)
            assert (ROOT / path).is_file(), f"{name} points at {path}, which is not in the repository"
    assert "docs/datasets.md" in (ROOT / "README.md").read_text()
