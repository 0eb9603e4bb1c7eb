"""Gradient kernels: compiled (Cython, built from ``kernels/``) with numpy twins.

``get(name)`` returns the compiled kernel when the extension is built, else its numpy twin
from :mod:`gdcode.kernels.reference`. ``COMPILED`` says which is in use, ``OPENMP`` whether
the compiled kernels run ``n_threads > 1`` in parallel.

Loss-and-gradient sums of a block of rows (module ``gdcode.kernels.linear``; signatures in
its docstring): ``{logistic,least_squares,hinge,softmax}_{dense,csr}``. Lock-free
multi-threaded SGD (module ``gdcode.kernels.hogwild``): ``hogwild_dense``, ``hogwild_csr``.
The multilayer perceptron (module ``gdcode.kernels.mlp``, built on scipy's Cython BLAS):
``mlp_dense``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType

from gdcode.kernels import reference

try:
    from gdcode.kernels import hogwild as _hogwild  # type: ignore[attr-defined]
    from gdcode.kernels import linear as _linear  # type: ignore[attr-defined]
except ImportError:  # extension not built: the numpy twins serve
    _linear = _hogwild = None

# the MLP kernel: its own extension module, so that the linear kernels do not depend on it; it is
# imported on first use (it loads scipy's BLAS, 0.1 s a process that trains a linear model never needs)
_mlp: ModuleType | None = None
#: the kernels of module ``gdcode.kernels.mlp``, and whether it is built
MLP_KERNELS: tuple[str, ...] = ("mlp_dense",)
MLP_COMPILED: bool = importlib.util.find_spec("gdcode.kernels.mlp") is not None

COMPILED: bool = _linear is not None
OPENMP: bool = bool(COMPILED and _linear.OPENMP)

# machine-dependent prefetch distances: this machine's cached calibration, if any, else the
# built-in defaults; never measured at import (gdcode/kernels/tuning.py)
from gdcode.kernels import tuning  # noqa: E402

tuning.apply_cached(_linear)

#: objective (model name) -> kernel name stem
OBJECTIVES = {"logistic": "logistic", "least-squares": "least_squares", "hinge": "hinge",
              "softmax": "softmax"}
LAYOUTS = ("dense", "csr")

KERNEL_NAMES: tuple[str, ...] = tuple(
    f"{stem}_{layout}" for stem in OBJECTIVES.values() for layout in LAYOUTS
) + ("hogwild_dense", "hogwild_csr") + MLP_KERNELS


def _module(name: str) -> ModuleType | None:
    global _mlp
    if name in MLP_KERNELS:
        if _mlp is None and MLP_COMPILED:
            _mlp = importlib.import_module("gdcode.kernels.mlp")
        return _mlp
    return _hogwild if name.startswith("hogwild_") else _linear


def get(name: str, compiled: bool | None = None) -> Callable:
    """Return the kernel ``name``.

    Parameters
    ----------
    name : str
        One of :data:`KERNEL_NAMES`.
    compiled : bool, optional
        ``True`` insists on the compiled kernel, ``False`` asks for the numpy twin,
        ``None`` (default) takes the compiled one when it is built.

    Returns
    -------
    callable
        The kernel; compiled and twin have the same signature.
    """
    if name not in KERNEL_NAMES:
        raise ValueError(f"unknown kernel {name!r}; known: {', '.join(KERNEL_NAMES)}")
    module = _module(name)
    if compiled is False or (compiled is None and module is None):
        return getattr(reference, name)
    if module is None:
        raise RuntimeError("the compiled kernels are not built; run `make install`")
    return getattr(module, name)
