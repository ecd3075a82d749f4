"""What a task declares: data, model, heads, defaults, registered name, serving input.

The engine does everything else, once, for every task.
"""

from __future__ import annotations

from typing import Any, ClassVar

from emoexp.config import TrainConfig


class Task:
    """One training entry point. Subclasses fill the class attributes and the builders."""

    name: ClassVar[str]
    modality: ClassVar[str]            # eeg | speech | face | posture | features
    dataset: ClassVar[str]             # dataset name, for the emoexp.dataset tag
    registered_model: ClassVar[str]    # registry name (DESIGN.md)
    config_cls: ClassVar[type[TrainConfig]] = TrainConfig
    summary: ClassVar[str] = ""        # one line for --help

    def default_config(self) -> TrainConfig:
        return self.config_cls()

    def prepare(self, cfg: TrainConfig) -> TrainConfig:
        """Resolve settings that depend on other inputs (e.g. ``encoder=auto``) before data."""
        return cfg

    def build_data(self, cfg: TrainConfig):
        """-> :class:`emoexp.data.base.DataBundle`."""
        raise NotImplementedError

    def build_model(self, cfg: TrainConfig, info: dict[str, Any]):
        """The network, from the config and the data info alone (a checkpoint rebuilds it)."""
        raise NotImplementedError

    def init_from_pretrained(self, model, cfg: TrainConfig, info: dict[str, Any]) -> dict[str, str]:
        """Load pretrained weights into a fresh model; return tags describing what was loaded."""
        return {}

    def head_loss_weights(self, cfg: TrainConfig, info: dict[str, Any]) -> dict[str, float]:
        return {h: 1.0 for h in info["heads"]}

    def serving_batch(self, inputs: dict[str, Any], cfg: TrainConfig, info: dict[str, Any]) -> dict:
        """Raw-ish serving inputs (numpy) -> the model's batch dict (torch tensors)."""
        raise NotImplementedError

    def run_name(self, cfg: TrainConfig) -> str:
        return cfg.run_name or self.name


_TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: add a task to the registry under ``cls.name`` (duplicates are errors)."""
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}") from None


def list_tasks() -> list[str]:
    return sorted(_TASKS)
