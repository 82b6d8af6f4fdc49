"""Name → factory registries for backbones, tasks and models: adding one is a new file plus a decorator.

A registry knows which modules register into it and imports them the first time it is asked for an entry, so code
that only needs to look a name up (config validation, `fpt list`) imports this module and nothing heavier.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fpt.errors import FPTError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    description: str
    prefix: bool  # a prefix entry such as "ucr" matches "ucr:<Name>" and receives <Name> as its first argument
    tags: dict[str, Any] = field(default_factory=dict)  # what else a registry's users need, e.g. trains_all


class Registry(Generic[T]):
    """A named collection of factories. `kind` ("task", "backbone") is used in error messages; `modules` are the
    modules whose import registers the entries (imported on first lookup)."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.modules = modules
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = not modules

    def register(
        self, name: str, description: str, prefix: bool = False, **tags: Any
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, description, prefix, tags)
            return factory

        return decorator

    def load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: a registering module may look an entry up while it loads
            for module in self.modules:
                importlib.import_module(module)

    def names(self) -> list[str]:
        return [e.name + (":<name>" if e.prefix else "") for e in self.entries()]

    def entries(self) -> list[Entry[T]]:
        self.load()
        return list(self._entries.values())

    def resolve(self, name: str) -> tuple[Entry[T], str | None]:
        """The entry for `name` and, for a prefix entry ("ucr:GunPoint"), the part after the colon."""
        self.load()
        head, sep, tail = name.partition(":")
        entry = self._entries.get(head)
        if entry is not None and entry.prefix == bool(sep) and (tail or not sep):
            return entry, (tail if sep else None)
        raise FPTError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")

    def build(self, name: str, **kwargs) -> T:
        entry, arg = self.resolve(name)
        return entry.factory(arg, **kwargs) if entry.prefix else entry.factory(**kwargs)


BACKBONES: Registry[Any] = Registry("backbone", ("fpt.backbones",))
TASKS: Registry[Any] = Registry("task", ("fpt.tasks",))
# Models chosen with --model: "fpt" and the baselines. A factory takes (cfg: TrainConfig, spec: TaskSpec) and returns
# a module with forward(x, mask) -> logits (B, K, C) and parameter_groups() covering fpt.freeze.GROUPS. A model
# registered with trains_all=True (the baselines trained end to end) trains every weight: TrainConfig makes `train`
# "all" for it.
MODELS: Registry[Any] = Registry("model", ("fpt.model", "fpt.baselines"))

# Methods chosen with --method: which small set of the backbone's weights trains besides the input layer and head
# (fpt.methods). A factory takes (cfg: TrainConfig) and returns an fpt.methods.Method; its tags name the TrainConfig
# fields it reads (`options`) and the groups it trains with when --train is not given (`default_train`).
METHODS: Registry[Any] = Registry("method", ("fpt.methods",))


def trains_all(model: str) -> bool:
    return bool(MODELS.resolve(model)[0].tags.get("trains_all"))
