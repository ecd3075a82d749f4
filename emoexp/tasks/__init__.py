"""Task registry: one module per entry point (its config dataclass and its ``@register_task``
Task subclass), registered by the explicit import below; add a new module to that import."""

from emoexp.tasks import eeg, eeg_llm, face, posture, speech  # noqa: F401  (registers every entry point)
from emoexp.tasks.base import Task, get_task, list_tasks, register_task

__all__ = ["Task", "get_task", "list_tasks", "register_task"]
