"""The ``main`` entry point: pretrain_faced -> finetune_eav as MLflow project steps.

One parent run, a child run per step; each step's input is the previous step's run (no
copy-pasted ids). Later steps (sweep, promote, dashboard) hang off the same chain.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from emoexp import tracking as T

log = logging.getLogger(__name__)


def project_dir() -> Path:
    """The folder holding MLproject: the working directory under ``mlflow run``, else the repo."""
    cwd = Path.cwd()
    if (cwd / "MLproject").is_file():
        return cwd
    repo = Path(__file__).resolve().parents[1]
    if (repo / "MLproject").is_file():
        return repo
    raise FileNotFoundError("no MLproject found in the working directory or beside the emoexp package")


def _step(entry_point: str, parameters: dict[str, Any], experiment_id: str) -> str:
    import mlflow

    log.info("step %s: mlflow run . -e %s %s", entry_point, entry_point,
             " ".join(f"-P {k}={v}" for k, v in parameters.items()))
    submitted = mlflow.projects.run(
        str(project_dir()), entry_point=entry_point, parameters={k: str(v) for k, v in parameters.items()},
        env_manager="local", experiment_id=experiment_id, synchronous=True,
    )
    return submitted.run_id


def run_pipeline(*, data_root: str, pretrain_epochs: int, finetune_epochs: int, use_audio: bool,
                 seed: int, experiment_name: str = "emoexp-pipeline") -> dict[str, Any]:
    """Run the chain under one parent run; returns {step: run_id} and prints a summary."""
    from mlflow import MlflowClient

    root = Path(data_root)
    faced, eav = root / "faced", root / "eav"
    for path, name in ((faced, "faced"), (eav, "eav")):
        if not path.exists():
            from emoexp.data.base import MissingDatasetError

            raise MissingDatasetError(path, name)
    with T.mlflow_run(experiment_name=experiment_name, run_name="main") as parent:
        client = MlflowClient()
        exp_id = client.get_run(parent.run_id).info.experiment_id
        parent.log_params({"data_root": data_root, "pretrain_epochs": pretrain_epochs,
                           "finetune_epochs": finetune_epochs, "use_audio": use_audio, "seed": seed})
        steps: dict[str, str] = {}
        steps["pretrain_faced"] = _step("pretrain_faced", {
            "data_dir": faced, "epochs": pretrain_epochs, "seed": seed}, exp_id)
        steps["finetune_eav"] = _step("finetune_eav", {
            "data_dir": eav, "epochs": finetune_epochs, "seed": seed, "use_audio": str(use_audio).lower(),
            "pretrained": f"runs:/{steps['pretrain_faced']}/{T.MODEL_NAME}"}, exp_id)
        parent.set_tags({f"emoexp.step.{k}": v for k, v in steps.items()})
        rows = summary_rows(steps)
        parent.log_text(format_table(rows), "summary.txt")
    print()
    print(format_table(rows))
    print()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    print(f"Open the runs:  mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)")
    return {"parent": parent.run_id, **steps}


def summary_rows(steps: dict[str, str]) -> list[dict[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient()
    rows = []
    for step, run_id in steps.items():
        run = client.get_run(run_id)
        m = run.data.metrics

        def f(key: str, m=m) -> str:
            return f"{m[key]:.3f}" if key in m else "-"

        rows.append({"step": step, "run_id": run_id, "status": run.info.status,
                     "best_epoch": f"{int(m[T.M_BEST_EPOCH])}" if T.M_BEST_EPOCH in m else "-",
                     "best_val_macro_f1": f(T.M_BEST_VAL_F1), "val_accuracy": f(T.M_VAL_ACC),
                     "test_accuracy": f(T.M_TEST_ACC), "test_macro_f1": f(T.M_TEST_F1)})
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
