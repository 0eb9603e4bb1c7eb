"""The registry of gradient codes: ``register`` a class, ``build`` one by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make the code available as ``build(name, ...)``."""

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"a code named {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def names() -> list[str]:
    """The registered code names, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type:
    """The class registered as ``name``; ValueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown code {name!r}; known codes: {', '.join(names())}") from None


def describe(name: str) -> str:
    """The one-line description of the code ``name`` (the first line of its docstring)."""
    doc = (get_class(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def accepted_options(name: str) -> set[str]:
    """Keyword options (beyond W, S and seed) that the code ``name`` accepts."""
    params = inspect.signature(get_class(name).__init__).parameters
    return {p for p in params if p not in ("self", "n_workers", "n_stragglers", "seed")}


def build(name: str, n_workers: int, n_stragglers: int = 0, seed: int = 0, **options):
    """Build the code ``name`` for W workers and S stragglers.

    Raises
    ------
    ValueError
        For an unknown name, a bad (W, S) or an option the code does not take.
    """
    cls = get_class(name)
    unknown = set(options) - accepted_options(name)
    if unknown:
        raise ValueError(f"code {name!r} takes no option {', '.join(sorted(unknown))}; "
                         f"it takes: {', '.join(sorted(accepted_options(name))) or 'none'}")
    code = cls(n_workers, n_stragglers, seed, **options)
    code.options = dict(options)
    return code
