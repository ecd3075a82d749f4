"""MLflow pyfunc wrapper that carries its own preprocessing, and logging it.

A served model takes raw-ish inputs (an EEG window, a waveform, ...) as a dict of named arrays
and returns one row per sample: ``label`` and ``prob_<class>`` for the primary head, and
``<head>.label`` / ``<head>.prob_<class>`` for the others.

Inputs are checked in one place, the task's ``serving_batch``, and a rejected input raises
:class:`InputError`: over HTTP the answer is that reason alone (400), not MLflow's dump of the
request. So the MLflow signature only names the inputs: one column spec per input, none of them
required by MLflow (a tensor spec cannot be optional, and an EEG+audio model takes EEG alone),
each an array of samples of any shape (``Array(Any)``), or ``Any`` for inputs that may be a list
of samples of different lengths (``ragged_inputs``: waveforms, posture sequences). Which inputs
a model needs (``serving_inputs``) and their shapes (saved in the model's metadata under
``emoexp_inputs``) are the task's to say.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd  # already loaded by mlflow.pyfunc
from mlflow.exceptions import MlflowException

from emoexp import tracking as T

log = logging.getLogger(__name__)


class EmoexpModel(mlflow.pyfunc.PythonModel):
    """Rebuilds the task's network from the checkpoint inside the MLflow model."""

    def load_context(self, context) -> None:
        from emoexp import faults

        faults.point("log_model")  # log_model loads the model it logs to check its input example
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

        from emoexp.config import saved_config
        from emoexp.tasks import get_task

        self.task = get_task(st["task"])
        self.cfg = saved_config(self.task.default_config(), st["config"])
        self.info = st["info"]
        self.model = self.task.build_model(self.cfg, self.info)
        self.model.load_state_dict(st["model"])
        self.model.eval()
        self._torch = torch

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        # MLflow hands over a DataFrame (column-spec signature; models logged with tensor specs
        # before get a dict). The hint is one MLflow infers no schema from and does not warn about
        # ("Add type hints ..." at every import); the signature is given when logging.
        try:
            return predict_frame(self.task, self.cfg, self.info, self.model, model_input)
        except InputError:
            raise
        except (ValueError, TypeError) as e:
            raise InputError(f"{self.task.name} model: {e}") from None
        except Exception as e:  # anything else: the traceback stays in the server's log, not the answer
            log.exception("%s model: predict failed", self.task.name)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise InputError(f"{self.task.name} model could not predict this input "
                             f"({type(e).__name__}: {first[:300]})") from None


class InputError(MlflowException, ValueError):
    """An input the model cannot take; the message is the reason.

    MLflow's scoring server rewrites the message of an MlflowException raised by ``predict`` to
    ``Failed to predict data '<the whole input>'. Error: <reason>``; this one keeps its reason
    (HTTP 400, ``INVALID_PARAMETER_VALUE``). A ValueError too, for in-process callers.
    """

    def __init__(self, reason: str):
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        super().__init__(reason, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_reason"):   # set once, by __init__; later rewrites are ignored
            self._reason = value


def as_inputs(model_input, first: str) -> dict[str, Any]:
    """What MLflow hands ``predict`` -> a dict of named inputs.

    A dict passes as is; one array is the ``first`` input; a DataFrame comes from a column-spec
    signature: one row holds each input whole (``{"inputs": {...}}``, or a dict given in-process),
    several rows are one sample each (a list of records, a ``dataframe_split`` payload, or an
    ``Any``-only signature's input split along its first axis).
    """
    if isinstance(model_input, dict):
        return model_input
    if isinstance(model_input, pd.DataFrame):
        if len(model_input) == 1:
            row = {c: model_input[c].iloc[0] for c in model_input.columns}
            return {c: v for c, v in row.items() if not _missing(v)}   # an optional input not sent
        return {c: list(model_input[c]) for c in model_input.columns}
    return {first: np.asarray(model_input)}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def predict_frame(task, cfg, info, model, model_input):
    """Inputs (dict of arrays, a DataFrame from MLflow, or one array for the task's first input)
    -> a DataFrame; a bad input raises ValueError (:class:`InputError` from ``predict``)."""
    import torch

    model_input = as_inputs(model_input, task.serving_inputs[0])
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
    from mlflow.models import infer_signature

    from emoexp.checkpoints import jsonable, save_checkpoint

    # Our wrapper is a class in an installed package (code_paths carries it too); MLflow's
    # generic advice about cloudpickle does not apply.
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
        signature.inputs = input_schema(task, example)
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
            metadata={INPUTS_KEY: input_shapes_of(task, example)},
            pip_requirements=pip_requirements(tuple(getattr(task, "extra_requirements", ()))),
        )


INPUTS_KEY = "emoexp_inputs"   # model metadata: input name -> shape, -1 where it varies


def input_schema(task, example: dict[str, np.ndarray]):
    """The MLflow input schema: one optional column spec per input (see the module docstring)."""
    from mlflow.types.schema import AnyType, Array, ColSpec, Schema

    ragged = set(getattr(task, "ragged_inputs", ()))
    names = list(dict.fromkeys([*getattr(task, "serving_inputs", ()), *example]))
    specs = [ColSpec(AnyType() if n in ragged else Array(AnyType()), n, required=False) for n in names]
    if all(n in ragged for n in names):
        # an Any-only schema hands predict its inputs split along the first axis (as_inputs
        # joins them again); one column, so nothing to align
        assert len(names) == 1, f"{task.name}: several ragged inputs need an array input beside them"
    return Schema(specs)


def input_shapes_of(task, example: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Input name -> shape with a free batch axis; ``(-1,)`` for inputs of any shape."""
    flexible = set(getattr(task, "flexible_inputs", ()))
    return {k: [-1] if k in flexible else [-1, *np.asarray(v).shape[1:]] for k, v in example.items()}


def input_shapes(metadata) -> dict[str, tuple[int, ...]]:
    """Input name -> shape of a logged model (its ``emoexp_inputs``; older models: their tensor
    signature)."""
    saved = (metadata.metadata or {}).get(INPUTS_KEY)
    if saved:
        return {k: tuple(int(d) for d in v) for k, v in saved.items()}
    schema = metadata.get_input_schema()
    return {i.name: tuple(int(d) for d in i.shape) for i in schema.inputs} if schema else {}


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
