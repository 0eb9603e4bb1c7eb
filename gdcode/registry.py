"""Registries of extensions (placeholder until the shared registry lands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named extensions of one kind."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind, self.group = kind, group
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Any:
        def deco(o: T) -> T:
            if name in self._items:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            if isinstance(o, type):
                o.name = name  # type: ignore[attr-defined]
            self._items[name] = o
            return o

        return deco if obj is None else deco(obj)

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def describe(self, name: str) -> str:
        doc = (getattr(self.get(name), "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return factory(*args, **options)
