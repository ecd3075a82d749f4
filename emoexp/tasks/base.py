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

    def epoch_sampler(self, dataset, cfg: TrainConfig, generator, targets, weights: dict[str, float],
                      class_names: list[str]):
        """A torch Sampler for one training epoch, or None for the engine's (uniform, or drawn
        in proportion to the per-class sampling weights)."""
        return None

    def head_loss_weights(self, cfg: TrainConfig, info: dict[str, Any]) -> dict[str, float]:
        return {h: 1.0 for h in info["heads"]}

    def serving_batch(self, inputs: dict[str, Any], cfg: TrainConfig, info: dict[str, Any]) -> dict:
        """Raw-ish serving inputs (numpy) -> the model's batch dict (torch tensors)."""
        raise NotImplementedError

    def evaluation_overrides(self, cfg: TrainConfig, info: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """Config changes for ``emoexp evaluate`` on new data, over the user's ``given`` ones
        (by default: no training augmentation)."""
        return {"augment": False} if "augment" in cfg.to_dict() else {}

    def reuse_fitted(self, data, info: dict[str, Any]):
        """Data built for a model trained elsewhere (``emoexp evaluate``, a resumed run): swap in
        the preprocessing that model's run fitted (kept in its ``info``); by default nothing is fitted."""
        return data

    def extra_metrics(self, preds: dict, heads: dict[str, list[str]], prefix: str) -> dict[str, float]:
        """Metrics across heads, logged beside the per-head ones (``prefix`` is val or test);
        ``preds`` as from :func:`emoexp.evaluation.predict`."""
        return {}

    def error_analysis(self, dataset, preds: dict, heads: dict[str, list[str]], out_dir) -> dict | None:
        """Task-specific error reports written into ``out_dir`` beside the confusion matrix (after
        training and by ``emoexp evaluate``); ``preds`` as from :func:`emoexp.evaluation.predict`."""
        return None

    def cv_pool(self, cfg: TrainConfig, data):
        """Cross-validation (``emoexp cv``): the data built once by :meth:`build_data` (``data``, all
        its sides) as a :class:`emoexp.data.folds.CVPool`: one unit per thing never to be split
        (a trial, a clip, an image), each unit's primary label, subject and trial, and ``views``,
        which makes a fold's train/val/test datasets from unit indices (index views of the one
        copy of the data, training augmentation on the train side only, preprocessing fitted on
        the train side). Tasks without it cannot be cross-validated."""
        from emoexp.config import ConfigError

        raise ConfigError(f"{self.name} does not support cross-validation (it has no cv_pool)")

    def differences(self, cfg: TrainConfig) -> list[str]:
        """What this config changes from the task's defaults, in a few words (run names)."""
        base = self.default_config().to_dict()
        out = []
        for key, value in cfg.to_dict().items():
            if key in _NOT_SALIENT or value == base.get(key):
                continue
            if isinstance(value, bool):
                out.append(key if value else f"no_{key}")
            elif key == "pretrained":
                out.append("pretrained")
            elif key == "weights":
                out.append("w_" + value.replace("=", "").replace(",", "_").replace(" ", ""))
            else:
                out.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
        return out

    def run_name(self, cfg: TrainConfig) -> str:
        """``finetune_eav-use_audio-pretrained``: the task and what differs from its defaults."""
        if cfg.run_name:
            return cfg.run_name
        diff = self.differences(cfg)
        name = "-".join([self.name, *diff[:4]])
        return name if len(name) <= 120 else name[:117] + "..."

    def description(self, cfg: TrainConfig) -> str:
        if cfg.description:
            return cfg.description
        diff = self.differences(cfg)
        return f"{self.summary} " + (f"Differs from the defaults in: {', '.join(diff)}." if diff else "Defaults.")


# Options that say where or how a run executes, not what it trains: left out of run names.
_NOT_SALIENT = {
    "data_dir", "experiment_name", "run_name", "description", "output_dir", "cache_dir", "resume_from",
    "device", "num_workers", "log_model", "on_bad_file", "seed",
}


# The task registry. To add a task: a module in emoexp/tasks/ with its config and a @register_task
# Task subclass, imported in emoexp/tasks/__init__.py (then `make mlproject` for its entry point).
_TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: add a task to the registry under ``cls.name`` (duplicates are errors)."""
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    """The registered task ``name``; ValueError listing the known tasks if there is none."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}") from None


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_TASKS)
