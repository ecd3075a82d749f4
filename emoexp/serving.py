"""MLflow pyfunc wrapper that carries its own preprocessing, and logging it.

A served model takes raw-ish inputs (an EEG window, a waveform, ...) as a dict of named arrays
and returns one row per sample: ``label`` and ``prob_<class>`` for the primary head, and
``<head>.label`` / ``<head>.prob_<class>`` for the others.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from emoexp import tracking as T

log = logging.getLogger(__name__)


class EmoexpModel(mlflow.pyfunc.PythonModel):
    """Rebuilds the task's network from the checkpoint inside the MLflow model."""

    def load_context(self, context) -> None:
        self._load(context.artifacts[T.MODEL_CHECKPOINT])

    def _load(self, path: str) -> None:
        from emoexp.checkpoints import load_checkpoint

        self._from_state(load_checkpoint(path))

    @classmethod
    def from_uri(cls, uri: str) -> EmoexpModel:
        """A ready model from a checkpoint path/URI, ``runs:/ID/model`` or ``models:/NAME@ALIAS``."""
        from emoexp.checkpoints import load_from_uri

        self = cls()
        self._from_state(load_from_uri(uri))
        return self

    def _from_state(self, st: dict) -> None:
        import torch

        from emoexp.config import apply_overrides
        from emoexp.tasks import get_task

        self.task = get_task(st["task"])
        self.cfg = apply_overrides(self.task.default_config(), st["config"])
        self.info = st["info"]
        self.model = self.task.build_model(self.cfg, self.info)
        self.model.load_state_dict(st["model"])
        self.model.eval()
        self._torch = torch

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        return predict_frame(self.task, self.cfg, self.info, self.model, model_input)


def predict_frame(task, cfg, info, model, model_input):
    """Inputs (dict of arrays, or one array for the task's first input) -> a DataFrame."""
    import pandas as pd
    import torch

    if not isinstance(model_input, dict):
        if isinstance(model_input, pd.DataFrame):
            raise ValueError("send tensors as {'inputs': {name: array}}; dataframe payloads are not supported")
        model_input = {task.serving_inputs[0]: np.asarray(model_input)}
    batch = task.serving_batch(model_input, cfg, info)
    with torch.no_grad():
        out = model(batch)
    heads = info["heads"]
    primary = next(iter(heads))
    cols: dict[str, Any] = {}
    for head, classes in heads.items():
        p = torch.softmax(out[head].float(), dim=-1).cpu().numpy()
        pre = "" if head == primary else f"{head}."
        cols[f"{pre}label"] = [classes[i] for i in p.argmax(axis=1)]
        for k, c in enumerate(classes):
            cols[f"{pre}prob_{c}"] = p[:, k].astype(np.float64)
    return pd.DataFrame(cols)


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    from importlib.metadata import version

    pkgs = ["torch", "torchaudio", "mlflow", "numpy", "pandas", "scipy", "scikit-learn", "soundfile", "pyyaml",
            *extra]
    reqs = []
    for p in pkgs:
        try:
            reqs.append(f"{p}=={version(p).split('+')[0]}")
        except Exception:
            reqs.append(p)
    return reqs


def log_model(task, cfg, info: dict[str, Any], state_dict: dict, input_example: dict[str, np.ndarray]):
    """Log the model as ``model`` in the active run: pyfunc, signature, input example, weights."""
    import warnings

    from mlflow.models import infer_signature

    from emoexp.checkpoints import jsonable, save_checkpoint

    # Our wrapper is a class in an installed package (code_paths carries it too); MLflow's
    # generic advice about cloudpickle and type hints does not apply.
    warnings.filterwarnings("ignore", message="Add type hints to the `predict` method")
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(
            {"task": task.name, "config": cfg.to_dict(), "info": jsonable(info),
             "model": {k: v.detach().cpu() for k, v in state_dict.items()}, "epoch": 0},
            Path(tmp) / f"{T.MODEL_CHECKPOINT}.pt",
        )
        wrapper = EmoexpModel()
        wrapper._load(str(ckpt))
        example = {k: np.asarray(v) for k, v in input_example.items()}
        output = predict_frame(wrapper.task, wrapper.cfg, wrapper.info, wrapper.model, example)
        signature = infer_signature(example, output)
        flexible = set(getattr(task, "flexible_inputs", ()))
        if flexible:
            from mlflow.types.schema import Schema, TensorSpec

            # One image (H, W, 3) or a batch (B, H, W, 3) of any size: MLflow checks a tensor's
            # rank, so these inputs are declared as MLflow's "ragged" tensor and checked by the task.
            signature.inputs = Schema([TensorSpec(np.dtype(object), (-1,), spec.name)
                                       if spec.name in flexible else spec for spec in signature.inputs.inputs])
        # The package travels with the model (served anywhere), without bytecode caches.
        import shutil

        pkg_dir = Path(tmp) / "code" / "emoexp"
        shutil.copytree(Path(__file__).resolve().parent, pkg_dir,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=T.MODEL_NAME,
            python_model=EmoexpModel(),
            artifacts={T.MODEL_CHECKPOINT: str(ckpt)},
            code_paths=[str(pkg_dir)],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(tuple(getattr(task, "extra_requirements", ()))),
        )


def modality_model(model_uri: str, modality: str, task_name: str) -> tuple[EmoexpModel, list[str]]:
    """A loaded model of ``modality`` (else a clear error) and its primary head's class names."""
    m = EmoexpModel.from_uri(model_uri)
    if m.task.modality != modality:
        raise ValueError(f"{model_uri}: a {m.task.name} model, not a {modality} model ({task_name})")
    return m, list(next(iter(m.info["heads"].values())))


def face_classifier(model_uri: str):
    """(classify(crops) -> probs, class names) for a face model given by any emoexp model URI."""
    from emoexp.data.images import resize_batch

    m, classes = modality_model(model_uri, "face", "train_face")
    size = int(m.info["image_size"])

    def classify(crops) -> np.ndarray:
        batch = np.concatenate([resize_batch(np.asarray(c)[None], size) for c in crops])
        df = predict_frame(m.task, m.cfg, m.info, m.model, {"image": batch})
        return df[[f"prob_{c}" for c in classes]].to_numpy()

    return classify, classes
