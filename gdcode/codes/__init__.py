"""Gradient codes: encoding matrix and decoder per scheme (numpy only, no MPI).

>>> from gdcode import codes
>>> code = codes.build("uncoded", n_workers=4)
>>> code.decode([0, 1, 2, 3])
array([1., 1., 1., 1.])

Every code is in the registry :data:`CODES` (a :class:`gdcode.registry.Registry`). A built-in
code is one module that decorates its class with ``@CODES.register("name")`` and one import
line below; a plug-in is an entry point of the group ``gdcode.codes`` or an import path
``MODULE:CLASS``, built the same way (``codes.build("mypackage.codes:MyCode", n_workers=4)``).
A code subclasses :class:`GradientCode`: its constructor takes ``(n_workers, n_stragglers,
seed)`` and its keyword options, and it implements ``decode`` (and, for the simulator, may
override ``decode_times`` with a vectorised rule built from :func:`kth_arrival` and
:func:`coverage_time`). :func:`diagnose` reports how well a code decodes over its straggler
patterns, and :func:`check_usable` refuses an exact code that decodes inaccurately.
"""

from gdcode.codes import (  # noqa: F401  (each import registers its codes)
    baselines,  # stale, kbatch
    bcc,  # bcc
    cyclic,  # cyclic, cyclic-mds
    expander,  # expander
    partial,  # partial-frc, partial-cyclic
    repetition,  # frc, approx
    sgc,  # sgc
    uncoded,  # uncoded, ignore
)
from gdcode.codes.base import GradientCode, coverage_time, kth_arrival
from gdcode.codes.diagnostics import Diagnosis, check_usable, diagnose
from gdcode.codes.registry import CODES, accepted_options, build, describe, get_class, names, register

__all__ = ["CODES", "Diagnosis", "GradientCode", "accepted_options", "build", "check_usable", "coverage_time",
           "describe", "diagnose", "get_class", "kth_arrival", "names", "register"]
