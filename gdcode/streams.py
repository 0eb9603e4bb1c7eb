"""Seeded streams, cheaply: ``numpy.random.default_rng(entropy)``'s numbers from one reused generator.

gdcode gives each per-iteration draw a stream of its own, ``default_rng([seed, tag, worker,
iteration])`` (a worker's pause, a partition's minibatch), so that a run, a resumed run and the
simulator draw the same numbers in any order. numpy takes about 12 µs to build such a generator,
and several times that on a rank whose caches other ranks have just used: with 48 workers on 2
cores that was a third of what each worker did between taking a model and starting its pause.
:class:`Reseeded` keeps one PCG64 generator and sets on it the state numpy's seed sequence gives
the entropy, computed in C (:mod:`gdcode.kernels.streams`). When the extension is not built,
:class:`Reseeded` returns ``numpy.random.default_rng(entropy)`` itself: the same numbers, and
faster than computing the state with numpy (the twin the tests check the extension against,
:func:`gdcode.kernels.reference.pcg64_state`) and setting it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:
    from gdcode.kernels.streams import pcg64_state
except ImportError:  # extension not built: Reseeded returns numpy's generators
    pcg64_state = None


class Reseeded:
    """One generator, reseeded per call to what ``numpy.random.default_rng(entropy)`` would give.

    The generator returned is valid until the next call on the same object: draw from it at once
    (two streams wanted at the same time, or two threads, need two objects).
    """

    def __init__(self) -> None:
        self._bits: np.random.PCG64 | None = None
        self._generator: np.random.Generator | None = None

    def __call__(self, entropy: Sequence[int]) -> np.random.Generator:
        """The generator seeded by ``entropy`` (non-negative integers).

        Entropy the compiled seeding does not take (an integer of 2**64 or more, more than 8
        integers), and any entropy when the extension is not built, gets a generator of its own
        from numpy. Anything but integers raises ``TypeError``, as numpy does.
        """
        if pcg64_state is None:
            return np.random.default_rng(list(entropy))
        try:
            state, inc = pcg64_state(entropy)
        except OverflowError:
            return np.random.default_rng(list(entropy))
        if self._bits is None:
            self._bits = np.random.PCG64(0)
            self._generator = np.random.Generator(self._bits)
        self._bits.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
                            "has_uint32": 0, "uinteger": 0}
        assert self._generator is not None
        return self._generator
