"""The ``main`` entry point: pretrain_faced -> finetune_eav -> sweep -> promote -> dashboard.

One parent run, a child run per step (each an MLflow project step); each step's input is the
previous step's run (no copy-pasted ids). A finished training or sweep step whose parameters,
code and data are unchanged is reused instead of re-run, unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from emoexp import tracking as T
from emoexp.project import code_fingerprint, project_dir

log = logging.getLogger(__name__)

TAG_STEP_KEY = "emoexp.step_key"      # fingerprint of (entry point, params, code, data)
TAG_STEP_REUSED = "emoexp.step.reused"


def data_fingerprint(path: str | Path) -> str:
    from emoexp.data.base import tree_fingerprint

    return tree_fingerprint(path)


def step_key(entry_point: str, params: dict[str, Any], code: str, data: str = "") -> str:
    blob = json.dumps({"entry_point": entry_point, "params": {k: str(v) for k, v in params.items()},
                       "code": code, "data": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def for_steps(path: str | Path) -> str:
    """``path`` (relative to this shell's folder) as the steps must be given it: they run in the
    project's folder (``mlflow run .``). Inside it, relative to it (the demo's records keep
    ``data/demo/...``); elsewhere, absolute."""
    full = Path(path).resolve()
    try:
        return str(full.relative_to(project_dir().resolve()))
    except ValueError:
        return str(full)


class StepFailed(RuntimeError):
    """A step's `mlflow run` ended with an error (its own output says which)."""


def check_steps_can_start() -> None:
    """The steps run ``emoexp ...`` commands through ``mlflow run``: both must be on PATH."""
    import shutil

    from emoexp.config import ConfigError

    missing = [c for c in ("emoexp", "mlflow") if shutil.which(c) is None]
    if missing:
        raise ConfigError(f"the pipeline's steps run {' and '.join(missing)} from PATH, and PATH has none: "
                          "activate the project's environment (source .venv/bin/activate) or run `make demo`")


class _Steps:
    """Runs project steps under the parent run, reusing finished identical ones."""

    def __init__(self, experiment_id: str, force: bool):
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.experiment_id = experiment_id
        self.force = force
        self.code = code_fingerprint()
        self.reused: dict[str, bool] = {}

    def run(self, name: str, entry_point: str, params: dict[str, Any], *, data: str = "",
            reusable: bool = True) -> str:
        import mlflow

        key = step_key(entry_point, params, self.code, data)
        if reusable and not self.force:
            hits = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_STEP_KEY}` = '{key}' AND attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"], max_results=1,
            )
            if hits:
                log.info("step %s: reusing finished run %s (same params, code and data; force=true re-runs)",
                         name, hits[0].info.run_id)
                self.reused[name] = True
                return hits[0].info.run_id
        log.info("step %s: mlflow run . -e %s %s", name, entry_point,
                 " ".join(f"-P {k}={v}" for k, v in params.items()))
        try:
            submitted = mlflow.projects.run(
                str(project_dir()), entry_point=entry_point,
                parameters={k: str(v) for k, v in params.items()},
                env_manager="local", experiment_id=self.experiment_id, synchronous=True,
            )
        except mlflow.exceptions.ExecutionException as e:
            # the step's own output (above) says why; the pipeline run is marked FAILED on the way out
            raise StepFailed(f"step {name} (mlflow run . -e {entry_point}) failed: {e}; "
                             "its output above says why") from None
        self.client.set_tag(submitted.run_id, TAG_STEP_KEY, key)
        if not reusable:  # steps that do not start a run of their own keep MLflow's random name otherwise
            self.client.update_run(submitted.run_id, name=name)
        self.reused[name] = False
        return submitted.run_id


def run_pipeline(*, data_root: str, pretrain_epochs: int, finetune_epochs: int, use_audio: bool,
                 seed: int, sweep_trials: int = 3, sweep_epochs: int = 3, force: bool = False,
                 experiment_name: str = "emoexp-pipeline", dashboards_dir: str | None = None) -> dict[str, Any]:
    """Run the chain under one parent run; returns {step: run_id} and prints a summary.

    The dashboards go to ``dashboards_dir``, by default ``dashboards/<experiment>``: a folder of
    the pipeline's own, never another experiment's pages."""
    from mlflow import MlflowClient

    root = Path(data_root)
    faced, eav = root / "faced", root / "eav"
    for path, name in ((faced, "faced"), (eav, "eav")):
        if not path.exists():
            from emoexp.data.base import MissingDatasetError

            raise MissingDatasetError(path, name)
    check_steps_can_start()
    faced_fp, eav_fp = data_fingerprint(faced), data_fingerprint(eav)
    faced, eav = for_steps(faced), for_steps(eav)
    params = {"data_root": data_root, "pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs,
              "use_audio": use_audio, "seed": seed, "sweep_trials": sweep_trials, "sweep_epochs": sweep_epochs,
              "force": force}
    with T.mlflow_run(experiment_name=experiment_name, run_name="main",
                      description="pretrain_faced -> finetune_eav -> sweep -> promote -> dashboard") as parent:
        client = MlflowClient()
        exp_id = client.get_run(parent.run_id).info.experiment_id
        exp_name = client.get_experiment(exp_id).name
        dashboards_dir = for_steps(dashboards_dir or Path("dashboards") / _folder_name(exp_name))
        parent.log_params(params)
        steps = _Steps(exp_id, force)
        ids: dict[str, str] = {}
        ids["pretrain_faced"] = steps.run("pretrain_faced", "pretrain_faced", {
            "data_dir": faced, "epochs": pretrain_epochs, "seed": seed}, data=faced_fp)
        pretrained = f"runs:/{ids['pretrain_faced']}/{T.MODEL_NAME}"
        ids["finetune_eav"] = steps.run("finetune_eav", "finetune_eav", {
            "data_dir": eav, "epochs": finetune_epochs, "seed": seed, "use_audio": str(use_audio).lower(),
            "pretrained": pretrained}, data=eav_fp)
        if sweep_trials > 0:
            from emoexp.config import redact
            from emoexp.sweeps import resolve_storage

            # The step gets an empty storage and finds $EMOEXP_OPTUNA_STORAGE (a stack's PostgreSQL)
            # itself, so no password enters the step's params; the study's name, and so the step's
            # reuse key, still tells one storage from another.
            sweep_params = {"task": "finetune_eav", "n_trials": sweep_trials, "storage": "",
                            "pruner": "median", "data_dir": eav, "epochs": sweep_epochs,
                            "options": f"pretrained={pretrained};use_audio={str(use_audio).lower()};seed={seed}"}
            key = step_key("sweep", {**sweep_params, "storage": redact(resolve_storage())}, steps.code, eav_fp)
            ids["sweep"] = steps.run("sweep", "sweep", {**sweep_params, "study_name": f"main-{key[:10]}"},
                                     data=eav_fp)
        # Promotion and dashboards read the whole experiment's state: always run them.
        ids["promote"] = steps.run("promote", "promote", {"modality": "eeg", "experiment": exp_name},
                                   reusable=False)
        ids["dashboard"] = steps.run("dashboard", "dashboard", {"experiment": exp_name, "out": dashboards_dir},
                                     reusable=False)
        parent.set_tags({f"emoexp.step.{k}": v for k, v in ids.items()})
        rows = summary_rows(ids, steps.reused)
        parent.log_text(format_table(rows), "summary.txt")
    print()
    print(format_table(rows))
    print()
    staging = _staging_line()
    if staging:
        print(staging)
    print(f"Dashboards:     {(project_dir() / dashboards_dir).resolve() / 'index.html'}")
    print(next_steps(ids, exp_name, data_root, use_audio))
    return {"parent": parent.run_id, **ids}


def _folder_name(experiment: str) -> str:
    """An experiment name as one folder name."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"


def _bin(tool: str) -> str:
    """How to call ``tool`` of this Python's environment from a fresh shell in the current folder:
    ``.venv/bin/mlflow`` (relative when the venv is under it, else the absolute path)."""
    import sys

    path = Path(sys.executable).parent / tool
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def next_steps(ids: dict[str, str], experiment: str, data_root: str, use_audio: bool) -> str:
    """What to do next, as commands that work in a fresh shell (the venv's own executables)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    mlflow, emoexp = _bin("mlflow"), _bin("emoexp")
    env = f"MLFLOW_TRACKING_URI={uri}"
    finetune = ids.get("finetune_eav", "<run_id>")
    pretrained = f"runs:/{ids.get('pretrain_faced', '<run_id>')}/{T.MODEL_NAME}"
    eav = Path(data_root) / "eav"
    lines = [
        f"Open the runs:  {mlflow} ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)",
        f"Next steps (or `source {Path(mlflow).parent}/activate` once and drop the {Path(mlflow).parent}/):",
        f"  serve the staged model:  {env} {mlflow} models serve -m models:/emoexp-eeg@staging "
        "--env-manager local -h 127.0.0.1 -p 5001",
        f"  branch the fine-tuning:  {env} {emoexp} resume runs:/{finetune}/checkpoints/last.pt --epochs 2 "
        "--weights sadness=5",
        f"  sweep some more:         {env} {emoexp} sweep finetune_eav --n-trials 10 --data-dir {eav} "
        f"--experiment-name {experiment} --options \"pretrained={pretrained};use_audio={str(use_audio).lower()}\"",
        "  the whole chain again:   make demo   (finished steps are reused)",
    ]
    return "\n".join(lines)


def _staging_line() -> str:
    from mlflow import MlflowClient

    parts = []
    client = MlflowClient()
    for name in ("emoexp-eeg-encoder", "emoexp-eeg"):
        try:
            v = client.get_model_version_by_alias(name, "staging")
        except Exception:
            continue
        parts.append(f"models:/{name}@staging = version {v.version} (run {v.run_id[:8]})")
    return ("Registry:       " + "; ".join(parts)) if parts else ""


def summary_rows(steps: dict[str, str], reused: dict[str, bool]) -> list[dict[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient()
    rows = []
    for step, run_id in steps.items():
        run = client.get_run(run_id)
        m = run.data.metrics

        def f(key: str, m=m) -> str:
            return f"{m[key]:.3f}" if key in m else "-"

        rows.append({"step": step, "run_id": run_id, "status": run.info.status,
                     "reused": "yes" if reused.get(step) else "no",
                     "best_epoch": f"{int(m[T.M_BEST_EPOCH])}" if T.M_BEST_EPOCH in m else "-",
                     "best_val_macro_f1": f(T.M_BEST_VAL_F1), "test_accuracy": f(T.M_TEST_ACC),
                     "test_macro_f1": f(T.M_TEST_F1)})
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no steps)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(width[c]) for c in cols)
    out = [line, "  ".join("-" * width[c] for c in cols)]
    out += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(out)
