"""Task registry: one module per entry point, registered by explicit import below."""

from emoexp.tasks import eeg, face, speech  # noqa: F401  (pretrain_faced, finetune_eav; train_face; train_speech)
from emoexp.tasks.base import Task, get_task, list_tasks, register_task

__all__ = ["Task", "get_task", "list_tasks", "register_task"]
