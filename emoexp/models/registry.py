"""The model registry: one dict, one decorator, one factory.

To add a model, decorate its class (or builder function) in its module under ``emoexp/models/``
with ``@register_model(name, family=..., example=...)`` and, for a new module, import it in
``emoexp/models/__init__.py``. The example puts it under the contract tests
(``tests/test_contracts.py`` builds every registered model and runs forward and backward on it).

Families say what a model is for: ``eeg_encoder``, ``audio_encoder``, ``face_encoder``,
``video_encoder`` (a tensor in, ``(B, latent_dim)`` out), ``head`` and ``adapter`` (a tensor in
and out), ``network`` (a whole network: a batch dict in, ``{head: logits}`` out). A config key
that picks a model (``encoder=cnn``, ``backbone=small_cnn``) takes the short ``option`` names of
one family: :func:`model_options`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

# () -> (small constructor kwargs, an input for forward): what the contract tests build and run.
Example = Callable[[], tuple[dict[str, Any], Any]]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: how to build it, what it is, and a tiny example of it."""

    name: str
    build: Callable[..., nn.Module]
    family: str
    example: Example
    option: str = ""     # the value a config key uses for it (encoder=cnn -> eeg_cnn); "" for none


_MODELS: dict[str, ModelEntry] = {}

# Names end up in MLflow params, file paths and CLI flags, so keep them to one safe alphabet.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str, *, family: str, example: Example, option: str = "") -> Callable[[F], F]:
    """Register a model class (or builder function) under ``name``; a duplicate name is an error.

    >>> @register_model("my_net", family="eeg_encoder",
    ...                 example=lambda: (dict(in_channels=4), torch.randn(2, 4, 64)))
    ... class MyNet(nn.Module): ...
    """
    for what, value in (("model name", name), ("family", family), ("option", option or "x")):
        if not _NAME_RE.match(value):
            raise ValueError(f"{what} {value!r} must be snake_case ([a-z][a-z0-9_]*)")

    def decorator(fn: F) -> F:
        if name in _MODELS:
            old = _MODELS[name].build
            raise ValueError(f"model {name!r} is already registered (by {old.__module__}.{old.__qualname__}); "
                             "pick another name")
        if option and option in model_options(family):
            raise ValueError(f"option {option!r} of family {family!r} is taken by {model_options(family)[option]!r}")
        _MODELS[name] = ModelEntry(name, fn, family, example, option)
        return fn

    return decorator


def get_model(name: str) -> ModelEntry:
    """The registry entry of ``name``; ValueError listing the known names if there is none."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``None``-valued kwargs fall back to its defaults.

    Dropping ``None`` lets a config pass every optional field through without knowing each
    model's defaults.

    >>> enc = create_model("eeg_cnn", in_channels=28, latent_dim=None)
    """
    return get_model(name).build(**{k: v for k, v in kwargs.items() if v is not None})


def example_model(name: str) -> tuple[nn.Module, Any]:
    """``name`` built small from its example kwargs, and an input for its forward."""
    kwargs, example_input = get_model(name).example()
    return create_model(name, **kwargs), example_input


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered models (of one ``family``), sorted."""
    return sorted(n for n, e in _MODELS.items() if family is None or e.family == family)


def model_options(family: str) -> dict[str, str]:
    """``{option: model name}`` of one family, e.g. ``{"cnn": "eeg_cnn", "cnn_lstm": "eeg_cnn_lstm"}``:
    the values a config key picking such a model accepts."""
    return {e.option: e.name for e in sorted(_MODELS.values(), key=lambda e: e.option)
            if e.family == family and e.option}
