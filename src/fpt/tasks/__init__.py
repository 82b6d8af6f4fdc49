"""Tasks, one module each; importing this package registers them all."""

import inspect

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks import bits, digits, homology, images, listops, ucr  # noqa: F401
from fpt.tasks.base import Task, TaskSpec, collate

__all__ = ["TASKS", "Task", "TaskSpec", "collate", "get_task"]


def get_task(name: str, **task_args) -> Task:
    """Build a registered task, e.g. `get_task("bit-xor")` or `get_task("ucr:GunPoint", patch=4)`.

    `task_args` are the task's own parameters (sizes, files); unknown ones are an error naming the allowed ones.
    """
    entry, _ = TASKS.resolve(name)
    accepted = [p for p in inspect.signature(entry.factory).parameters if p not in ("name", "self")]
    unknown = sorted(set(task_args) - set(accepted))
    if unknown:
        raise FPTError(
            f"task {name!r} has no argument {unknown[0]!r}; its arguments are: {', '.join(accepted) or 'none'}"
        )
    return TASKS.build(name, **task_args)
