"""Gradient codes: encoding matrix and decoder per scheme (numpy only, no MPI).

>>> from gdcode import codes
>>> code = codes.build("uncoded", n_workers=4)
>>> code.decode([0, 1, 2, 3])
array([1., 1., 1., 1.])

Adding a code is one module that decorates its class with ``@register("name")`` and one
import line below. :func:`diagnose` reports how well a code decodes over its straggler
patterns, and :func:`check_usable` refuses an exact code that decodes inaccurately.
"""

from gdcode.codes import (  # noqa: F401  (each import registers its codes)
    bcc,  # bcc
    cyclic,  # cyclic, cyclic-mds
    expander,  # expander
    partial,  # partial-frc, partial-cyclic
    repetition,  # frc, approx
    sgc,  # sgc
    uncoded,  # uncoded, ignore
)
from gdcode.codes.base import GradientCode
from gdcode.codes.diagnostics import Diagnosis, check_usable, diagnose
from gdcode.codes.registry import accepted_options, build, describe, get_class, names, register

__all__ = ["Diagnosis", "GradientCode", "accepted_options", "build", "check_usable", "describe",
           "diagnose", "get_class", "names", "register"]
