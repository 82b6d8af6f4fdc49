"""Tasks, one module each; importing this package registers them all."""

import inspect
import typing
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from fpt.config import format_validation_error
from fpt.errors import FPTError
from fpt.placement import available_memory, describe_bytes
from fpt.registry import TASKS
from fpt.tasks import bits, digits, forecast, homology, images, listops, timeseries, ucr  # noqa: F401
from fpt.tasks.base import Task, TaskSpec, collate

__all__ = ["TASKS", "Task", "TaskSpec", "collate", "get_task"]

MIN_EXAMPLE_BYTES = 8  # the least an example costs: its index in the training sampler's permutation (int64)


def get_task(name: str, **task_args) -> Task:
    """Build a registered task, e.g. `get_task("bit-xor")` or `get_task("ucr:GunPoint", patch=4)`.

    `task_args` are the task's own parameters (sizes, files), checked before anything is built: unknown ones are an
    error naming the allowed ones, a value of the wrong type (`n_bits: true`, `mask_prob: inf`) one naming the
    argument, and sizes whose examples could not fit in this machine's free memory one saying how much they need.
    """
    entry, _ = TASKS.resolve(name)
    parameters = {k: p for k, p in inspect.signature(entry.factory).parameters.items() if k not in ("name", "self")}
    unknown = sorted(set(task_args) - set(parameters))
    if unknown:
        raise FPTError(
            f"task {name!r} has no argument {unknown[0]!r}; its arguments are: {', '.join(parameters) or 'none'}"
        )
    required = [k for k, p in parameters.items() if p.default is inspect.Parameter.empty and k not in task_args]
    if required:
        example = ", ".join(f"{k}: ..." for k in required)
        raise FPTError(f"task {name!r} needs the argument{'s' * (len(required) > 1)} {', '.join(required)}: "
                       f"--task-args '{{{example}}}'")  # fmt: skip
    check_types(name, entry.factory, parameters, task_args)
    values = {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty} | task_args
    check_memory(name, values, entry.tags.get("example_bytes"))
    return TASKS.build(name, **task_args)


def check_types(name: str, factory, parameters: dict[str, inspect.Parameter], task_args: dict[str, Any]) -> None:
    """Task arguments must have their parameter's type, strictly: no bool for an int, no string for a number, finite
    floats (an int is taken for a float)."""
    hints = typing.get_type_hints(factory)
    fields = {k: (hints.get(k, Any), ...) for k in task_args if k in parameters}
    model = create_model(f"{name} arguments", __config__=ConfigDict(strict=True, allow_inf_nan=False), **fields)
    try:
        model(**task_args)
    except ValidationError as err:
        raise FPTError(f"task {name!r} argument {format_validation_error(err, None, 'task argument')}") from None


def check_memory(name: str, values: dict[str, Any], example_bytes=None) -> None:
    """Refuse split sizes (the `*_size` arguments) whose examples need more memory than the machine has free: each
    costs at least MIN_EXAMPLE_BYTES, or what the task's `example_bytes(values)` says (a task held in memory)."""
    rows = sum(v for k, v in values.items() if k.endswith("_size") and isinstance(v, int))
    need = rows * (example_bytes(values) if example_bytes else MIN_EXAMPLE_BYTES)
    free = available_memory()
    if free is not None and need > free:
        sizes = ", ".join(f"{k} {v:,}" for k, v in values.items() if k.endswith("_size") and isinstance(v, int))
        raise FPTError(
            f"task {name!r}: {sizes} would need at least {describe_bytes(need)} of memory and this machine has "
            f"{describe_bytes(free)} free; choose smaller sizes"
        )
