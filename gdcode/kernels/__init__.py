"""Gradient kernels: compiled (Cython, built from ``kernels/``) with numpy twins.

``get(name)`` returns the compiled kernel when the extension is built, else its numpy twin
from :mod:`gdcode.kernels.reference`. ``COMPILED`` says which is in use.
"""

from __future__ import annotations

from collections.abc import Callable

from gdcode.kernels import reference

try:
    from gdcode.kernels import linear as _linear  # type: ignore[attr-defined]
except ImportError:  # extension not built: the numpy twins serve
    _linear = None

COMPILED: bool = _linear is not None

KERNEL_NAMES = ("logistic_dense", "least_squares_dense")


def get(name: str, compiled: bool | None = None) -> Callable:
    """Return the kernel ``name``.

    Parameters
    ----------
    name : str
        One of :data:`KERNEL_NAMES`.
    compiled : bool, optional
        ``True`` insists on the compiled kernel, ``False`` asks for the numpy twin,
        ``None`` (default) takes the compiled one when it is built.
    """
    if name not in KERNEL_NAMES:
        raise ValueError(f"unknown kernel {name!r}; known: {', '.join(KERNEL_NAMES)}")
    if compiled is False or (compiled is None and _linear is None):
        return getattr(reference, name)
    if _linear is None:
        raise RuntimeError("the compiled kernels are not built; run `make install`")
    return getattr(_linear, name)
