"""Gradient codes: encoding matrix and decoder per scheme (numpy only, no MPI).

>>> from gdcode import codes
>>> code = codes.build("uncoded", n_workers=4)
>>> code.decode([0, 1, 2, 3])
array([1., 1., 1., 1.])

Adding a code is one module that decorates its class with ``@register("name")`` and one
import line below.
"""

from gdcode.codes import uncoded  # noqa: F401  (registers uncoded, ignore)
from gdcode.codes.base import GradientCode
from gdcode.codes.registry import accepted_options, build, get_class, names, register

__all__ = ["GradientCode", "accepted_options", "build", "get_class", "names", "register"]
