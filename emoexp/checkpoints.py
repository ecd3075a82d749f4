"""Atomic save/load of full training state, and resolution of checkpoint/model URIs.

A checkpoint is a plain dict of tensors and builtins, loaded with ``weights_only=True`` so a
checkpoint from elsewhere never runs code. It carries the resolved config and the data info,
so it rebuilds its model alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emoexp import tracking as T
from emoexp.data.io import atomic_write

FORMAT = "emoexp-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or used; the message names it."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a crash leaves the old file or the new, never half."""
    import torch

    from emoexp import faults

    def write(f) -> None:
        torch.save({"format": FORMAT, **state}, f)
        faults.point("checkpoint_tmp", state.get("epoch"))  # bytes in the temp file, not yet in place

    return atomic_write(path, write)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True``; clear errors for anything else."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: it holds more than tensors and builtins ({e}). "
            "emoexp loads checkpoints with weights_only=True so that a file never runs code."
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an emoexp checkpoint (no '{FORMAT}' marker)")
    return state


def resolve_local(uri: str, dst: str | Path) -> Path:
    """A local path for ``uri``: a path as is; ``runs:/``, ``models:/``, ``mlflow-artifacts:/``
    and other MLflow URIs are downloaded into ``dst`` (the caller's folder, and the caller's to
    remove: :func:`fetched` is the form that cleans up)."""
    if not _in_mlflow(uri):
        p = Path(uri).expanduser()
        if not p.exists():
            raise CheckpointError(f"{uri}: no such file or directory")
        return p
    if uri.startswith("file://"):
        return resolve_local(uri[len("file://"):], dst)
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    except Exception as e:
        raise CheckpointError(f"{uri}: could not fetch it from MLflow ({type(e).__name__}: {e})") from None
    return Path(local)


def _in_mlflow(uri: str) -> bool:
    return "://" in uri or uri.startswith(("runs:/", "models:/"))


@contextlib.contextmanager
def fetched(uri: str) -> Iterator[Path]:
    """``with fetched(uri) as path:`` a local path for ``uri`` (see :func:`resolve_local`) for the
    length of the block. What was downloaded lives in a temporary folder removed at its end, so
    loading a model or a checkpoint from the store leaves no copy behind (MLflow's own default
    would be a new temporary folder per call, never removed)."""
    with tempfile.TemporaryDirectory(prefix="emoexp-fetch-") as tmp:
        yield resolve_local(uri, tmp)


def fetch_text(client, run_id: str, artifact_path: str) -> str:
    """The text of one artifact of a run, read through a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="emoexp-fetch-") as tmp:
        return Path(client.download_artifacts(run_id, artifact_path, tmp)).read_text()


def load_from_uri(uri: str) -> dict[str, Any]:
    """Load a checkpoint from a file path/URI, or from a logged/registered MLflow model.

    ``runs:/ID/checkpoints/best.pt`` and paths to ``.pt`` files are checkpoints; ``runs:/ID/model``
    and ``models:/NAME@ALIAS`` are MLflow models whose weights travel inside them.
    """
    with fetched(uri) as local:
        if local.is_dir():
            hits = sorted(local.rglob(f"{T.MODEL_CHECKPOINT}.pt"))
            if not hits:
                raise CheckpointError(f"{uri}: an MLflow model without emoexp weights ({T.MODEL_CHECKPOINT}.pt)")
            local = hits[0]
        try:
            state = load_checkpoint(local)
        except CheckpointError as e:
            if not _in_mlflow(uri) or uri.startswith("file://"):
                raise
            # the download's temporary path means nothing to the user: name what they gave
            raise CheckpointError(f"{uri}: {str(e).split(': ', 1)[-1]}") from None
    state.setdefault("source_uri", uri)
    return state


def jsonable(x: Any) -> Any:
    """Data info as builtins only (checkpoints load with ``weights_only=True``)."""
    return json.loads(json.dumps(x, default=str))


def resolved_source_tags(tags: dict[str, str]) -> dict[str, str]:
    """Beside ``emoexp.pretrained_from`` (as given; an alias moves), what it pointed to when the
    run started: ``models:/NAME/VERSION`` and the run that trained it, or the run of a
    ``runs:/`` URI or of a local checkpoint."""
    uri = tags.get(T.TAG_PRETRAINED_FROM, "")
    if not uri:
        return {}
    out: dict[str, str] = {}
    try:
        from mlflow import MlflowClient

        client = MlflowClient()
        if uri.startswith("models:/"):
            rest = uri[len("models:/"):]
            if "@" in rest:
                name, alias = rest.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias.split("/")[0])
            else:
                name, ref = rest.split("/", 1)
                mv = client.get_model_version(name, ref.split("/")[0])
            out = {T.TAG_PRETRAINED_RESOLVED: f"models:/{name}/{mv.version}", T.TAG_PRETRAINED_RUN: mv.run_id or ""}
        elif uri.startswith("runs:/"):
            run_id = uri[len("runs:/"):].split("/", 1)[0]
            out = {T.TAG_PRETRAINED_RESOLVED: uri, T.TAG_PRETRAINED_RUN: run_id}
        else:
            run_id = load_from_uri(uri).get("run_id") or ""
            out = {T.TAG_PRETRAINED_RESOLVED: uri, T.TAG_PRETRAINED_RUN: run_id}
    except Exception as e:  # informative, never fatal: the weights were loaded already
        logging.getLogger(__name__).warning("could not resolve %s to a model version or run: %s", uri, e)
    return out
