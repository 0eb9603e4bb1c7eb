"""The registry of gradient codes, :data:`CODES`, and the functions that use it.

A code is a :class:`~gdcode.codes.base.GradientCode` subclass whose constructor takes
``(n_workers, n_stragglers, seed)`` and then its keyword options. Built-in codes register
with ``@CODES.register("name")``; a plug-in is an entry point of the group ``gdcode.codes``
or an import path ``MODULE:CLASS`` (see :mod:`gdcode.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gdcode.registry import Registry

#: every gradient code, by name
CODES: Registry[type] = Registry("code", "gdcode.codes", fixed=("n_workers", "n_stragglers", "seed"))


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make the code available as ``build(name, ...)`` (``CODES.register``)."""
    return CODES.register(name)


def names() -> list[str]:
    """The code names (built-ins and entry-point plug-ins), sorted."""
    return CODES.names()


def get_class(name: str) -> type:
    """The class of the code ``name`` (a name or ``MODULE:CLASS``); ValueError listing the known names otherwise."""
    return CODES.get(name)


def describe(name: str) -> str:
    """The one-line description of the code ``name`` (the first line of its docstring)."""
    return CODES.describe(name)


def accepted_options(name: str) -> set[str]:
    """Keyword options (beyond W, S and seed) that the code ``name`` accepts."""
    return set(CODES.options(name))


def build(name: str, n_workers: int, n_stragglers: int = 0, seed: int = 0, **options: Any):
    """Build the code ``name`` for W workers and S stragglers.

    Parameters
    ----------
    name : str
        A registered code, an entry-point plug-in, or an import path ``MODULE:CLASS``.
    n_workers, n_stragglers, seed : int
        W, S and the seed of the code's randomness.
    **options
        The code's keyword options (:func:`accepted_options`).

    Returns
    -------
    GradientCode
        The code, with ``options`` set to the keyword options it was built with.

    Raises
    ------
    ValueError
        For an unknown name, a bad (W, S), an option the code does not take, or a plug-in
        that does not build a :class:`~gdcode.codes.base.GradientCode`.
    """
    from gdcode.codes.base import GradientCode

    code = CODES.build(name, n_workers, n_stragglers, seed, **options)
    if not isinstance(code, GradientCode):
        raise ValueError(f"the code {name!r} built a {type(code).__name__}, not a gdcode.codes.GradientCode")
    code.options = dict(options)
    return code
