"""The model registry: one dict, one decorator, one factory.

Registering a model also puts it under the contract tests in ``tests/test_models.py``, which
parametrize over :func:`list_models`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}

# Names end up in MLflow params, file paths and CLI flags, so keep them to one safe alphabet.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[F], F]:
    """Register a model class (or builder function) under ``name``.

    >>> @register_model("my_net")
    ... class MyNet(nn.Module): ...
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r} must be snake_case ([a-z][a-z0-9_]*)")

    def decorator(fn: F) -> F:
        if name in _MODELS:
            raise ValueError(
                f"model {name!r} is already registered (by {_MODELS[name].__module__}."
                f"{_MODELS[name].__qualname__}); pick another name"
            )
        _MODELS[name] = fn
        return fn

    return decorator


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``None``-valued kwargs fall back to its defaults.

    Dropping ``None`` lets a config pass every optional field through without knowing each
    model's defaults.

    >>> enc = create_model("eeg_cnn", in_channels=28, latent_dim=None)
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name](**{k: v for k, v in kwargs.items() if v is not None})


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)
