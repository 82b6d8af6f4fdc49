"""Name → factory registries for backbones and tasks: adding one is a new file plus a decorator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fpt.errors import FPTError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    description: str
    prefix: bool  # a prefix entry such as "ucr" matches "ucr:<Name>" and receives <Name> as its first argument


class Registry(Generic[T]):
    """A named collection of factories. `kind` ("task", "backbone") is used in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, description: str, prefix: bool = False
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, description, prefix)
            return factory

        return decorator

    def names(self) -> list[str]:
        return [e.name + (":<name>" if e.prefix else "") for e in self._entries.values()]

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def resolve(self, name: str) -> tuple[Entry[T], str | None]:
        """The entry for `name` and, for a prefix entry ("ucr:GunPoint"), the part after the colon."""
        head, sep, tail = name.partition(":")
        entry = self._entries.get(head)
        if entry is not None and entry.prefix == bool(sep) and (tail or not sep):
            return entry, (tail if sep else None)
        raise FPTError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")

    def build(self, name: str, **kwargs) -> T:
        entry, arg = self.resolve(name)
        return entry.factory(arg, **kwargs) if entry.prefix else entry.factory(**kwargs)
