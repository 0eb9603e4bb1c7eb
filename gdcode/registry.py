"""One registry per kind of extension: codes, models, update rules and delay models.

A :class:`Registry` maps names to factories (usually classes). A factory is found three ways:

* a built-in, registered in gdcode with ``@REGISTRY.register("name")``;
* a plug-in named by an entry point of the registry's group (``gdcode.codes``,
  ``gdcode.models``, ``gdcode.updates``, ``gdcode.delays``) of an installed distribution,
  read the first time the registry is asked for a name;
* a plug-in given by its import path ``MODULE:CLASS`` (e.g. ``mypackage.codes:MyCode``),
  imported when it is asked for.

>>> from gdcode.registry import Registry
>>> SHAPES = Registry("shape", "example.shapes", fixed=("size",))
>>> @SHAPES.register("square")
... class Square:
...     '''A square of side ``size``.'''
...     def __init__(self, size, filled=False):
...         self.size, self.filled = size, filled
>>> SHAPES.names(), SHAPES.describe("square"), list(SHAPES.options("square"))
(['square'], 'A square of side ``size``.', ['filled'])
>>> SHAPES.build("square", 2, filled=True).filled
True

Errors are ``ValueError`` in library terms (the command layer names its flags).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import importlib.metadata

T = TypeVar("T")

#: how a plug-in is written where a name is expected
PLUGIN_FORM = "MODULE:CLASS"


class Registry(Generic[T]):
    """Names of one kind of extension and the factories that build them.

    Parameters
    ----------
    kind : str
        What the registry holds, in the singular (``"code"``, ``"delay model"``): it names
        them in error messages.
    group : str
        The entry-point group that plug-in distributions declare (``"gdcode.codes"``).
    fixed : sequence of str
        The factory parameters that the kind always passes (for codes ``n_workers``,
        ``n_stragglers``, ``seed``): :meth:`options` leaves them out.
    """

    def __init__(self, kind: str, group: str, *, fixed: Sequence[str] = ()) -> None:
        self.kind = kind
        self.group = group
        self.fixed = tuple(fixed)
        self._builtin: dict[str, T] = {}
        self._entry_points: dict[str, importlib.metadata.EntryPoint] | None = None
        self._loaded: dict[str, T] = {}  # entry points and import paths, once imported

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.group!r})"

    @property
    def plural(self) -> str:
        """The kind in the plural (``"codes"``)."""
        return self.kind + "s"

    # ------------------------------------------------------------------ registering

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that registers its argument.

        A class gets ``obj.name = name``.

        Raises
        ------
        ValueError
            When ``name`` is taken, empty or contains ``:`` (which marks an import path).
        """
        if not name or ":" in name:
            raise ValueError(f"a {self.kind} name must be non-empty and contain no ':', got {name!r}")

        def deco(target: T) -> T:
            if name in self._builtin:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            if isinstance(target, type):
                setattr(target, "name", name)  # noqa: B010 - T is any class
            self._builtin[name] = target
            return target

        return deco if obj is None else deco(obj)

    # ------------------------------------------------------------------ plug-ins

    def _eps(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The group's entry points by name (read once; a built-in name shadows a plug-in's).

        Reading them scans every installed distribution (tens of milliseconds, and the import
        of :mod:`importlib.metadata`), so a lookup of a built-in never calls this.
        """
        if self._entry_points is None:
            import importlib.metadata

            found: dict[str, importlib.metadata.EntryPoint] = {}
            for ep in importlib.metadata.entry_points(group=self.group):
                if ep.name not in self._builtin and ep.name not in found and ":" not in ep.name:
                    found[ep.name] = ep
            self._entry_points = found
        return self._entry_points

    def clear_plugin_cache(self) -> None:
        """Forget the entry points read and the plug-ins imported (they are looked up again)."""
        self._entry_points = None
        self._loaded.clear()

    def is_plugin(self, name: str) -> bool:
        """True for an entry-point name or an import path, False for a built-in."""
        if name in self._builtin:
            return False
        return ":" in name or name in self._eps()

    def plugins(self) -> list[tuple[str, str]]:
        """The plug-ins known so far as ``(name, source)``, sorted by name.

        ``source`` is ``"entry point DIST"`` for every entry point of the group, and
        ``"import path"`` for each import path that this process has imported.
        """
        out = [(name, f"entry point {_dist_name(ep)}") for name, ep in self._eps().items()]
        out += [(name, "import path") for name in self._loaded if ":" in name]
        return sorted(out)

    # ------------------------------------------------------------------ lookup

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a built-in or an entry-point name (import paths are not checked)."""
        return name in self._builtin or (":" not in name and name in self._eps())

    def names(self) -> list[str]:
        """Built-in and entry-point names, sorted (import paths are not listed)."""
        return sorted({*self._builtin, *self._eps()})

    def get(self, name: str) -> T:
        """The factory of ``name``: a built-in, an entry-point name, or an import path ``MODULE:ATTR``.

        A plug-in is imported once. A plug-in class gets ``name`` set to its entry-point
        name, or to its import path when the class does not set a ``name`` of its own.

        Raises
        ------
        ValueError
            For an unknown name, a plug-in that fails to import, or an import path that does
            not resolve.
        """
        if name in self._builtin:
            return self._builtin[name]
        if name in self._loaded:
            return self._loaded[name]
        if ":" in name:
            obj = self._import_path(name)
        elif name in self._eps():
            obj = self._load_entry_point(self._eps()[name])
        else:
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}; "
                             f"a plug-in is given as {PLUGIN_FORM}")
        if isinstance(obj, type) and "name" not in vars(obj):
            setattr(obj, "name", name)  # noqa: B010 - T is any class
        self._loaded[name] = obj
        return obj

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> T:
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure of the plug-in's import
            raise ValueError(f"the {self.kind} plug-in {ep.name!r} (entry point {ep.value} of "
                             f"{_dist_name(ep)}) failed to import: {type(exc).__name__}: {exc}") from exc
        if isinstance(obj, type):
            setattr(obj, "name", ep.name)  # noqa: B010 - T is any class
        return obj

    def _import_path(self, path: str) -> T:
        module_name, _, attr = path.partition(":")
        how = f"a {self.kind} plug-in is given as {PLUGIN_FORM}, e.g. mypackage.module:MyClass"
        if not module_name or not attr or ":" in attr:
            raise ValueError(f"{path!r} is not an import path; {how}")
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any failure of the plug-in's import
            raise ValueError(f"cannot import module {module_name!r} of the {self.kind} plug-in {path!r} "
                             f"({type(exc).__name__}: {exc}); {how}") from exc
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ValueError(f"the {self.kind} plug-in {path!r}: module {module_name!r} has no "
                                 f"attribute {attr!r}; {how}") from None
        return obj

    # ------------------------------------------------------------------ description

    def describe(self, name: str) -> str:
        """The first line of the docstring of ``name`` (empty when it has none)."""
        doc = (getattr(self.get(name), "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword options of the factory ``name``, in declaration order.

        Its parameters (of ``__init__`` for a class) beyond the fixed ones of the kind, ``self``
        and any ``*args`` or ``**kwargs``.
        """
        return {p.name: p for p in _parameters(self.get(name)).values()
                if p.name not in self.fixed
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        """``get(name)(*args, **options)``, refusing options the factory does not take.

        Raises
        ------
        ValueError
            Naming the unknown options and listing the accepted ones (and whatever the
            factory raises for bad values).
        """
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        params = _parameters(factory)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        accepted = self.options(name)
        unknown = [k for k in options if k not in accepted and k not in self.fixed]
        if unknown and not takes_any:
            raise ValueError(f"{self.kind} {name!r} takes no option {', '.join(sorted(unknown))}; "
                             f"it takes: {', '.join(sorted(accepted)) or 'none'}")
        return factory(*args, **options)


def _parameters(factory: Any) -> dict[str, inspect.Parameter]:
    """The parameters of a callable (of its ``__init__`` without ``self`` for a class)."""
    if isinstance(factory, type) and not any("__init__" in vars(c) or "__new__" in vars(c)
                                             for c in factory.__mro__ if c is not object):
        return {}  # what inspect finds too, after parsing object's text signature (tens of ms)
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return {}


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "an unknown distribution"
