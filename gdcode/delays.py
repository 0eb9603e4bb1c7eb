"""Straggler delay models: an injected pause per worker per iteration.

``parse(spec)`` turns a delay SPEC (DESIGN section 4) into a model whose
``draw(worker, iteration)`` is a pure function of (seed, worker, iteration): every scheme in a
comparison meets the same delays, whichever iterations a worker skips or a run resumes from.
"""

from __future__ import annotations

import numpy as np

from gdcode.errors import ConfigError


class DelayModel:
    """Base class: :meth:`sample` draws one pause from a worker's generator."""

    spec = "none"

    def __init__(self, seed: int = 0, scale_with_load: bool = False) -> None:
        self.seed = int(seed)
        self.scale_with_load = scale_with_load

    def rng(self, worker: int, iteration: int) -> np.random.Generator:
        """The stream for one (worker, iteration)."""
        return np.random.default_rng([self.seed, 0xDE1A, worker, iteration])

    def sample(self, rng: np.random.Generator, worker: int, iteration: int) -> float:
        raise NotImplementedError

    def draw(self, worker: int, iteration: int, load: float = 1.0) -> float:
        """The pause, in seconds, of worker ``worker`` (0-based) at ``iteration`` (1-based)."""
        pause = self.sample(self.rng(worker, iteration), worker, iteration)
        return pause * load if self.scale_with_load else pause

    def with_seed(self, seed: int, scale_with_load: bool = False) -> DelayModel:
        self.seed, self.scale_with_load = int(seed), scale_with_load
        return self


class NoDelay(DelayModel):
    """``none``: no injected pause."""

    def draw(self, worker, iteration, load=1.0):
        return 0.0


class Exponential(DelayModel):
    """``exp:MEAN``: an exponential pause with mean MEAN seconds (the ErasureHead model)."""

    def __init__(self, mean: float, **kw) -> None:
        super().__init__(**kw)
        self.mean = mean
        self.spec = f"exp:{mean:g}"

    def sample(self, rng, worker, iteration):
        return float(rng.exponential(self.mean))


def _floats(spec: str, body: str, n: int, form: str) -> list[float]:
    try:
        values = [float(x) for x in body.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise ConfigError(f"--delay {spec!r}: write {form}")
    return values


def parse(spec: str, seed: int = 0, scale_with_load: bool = False) -> DelayModel:
    """The delay model of ``spec``: ``none`` or ``exp:MEAN``.

    Raises
    ------
    ConfigError
        For an unknown or malformed spec, naming the allowed forms.
    """
    kind, _, body = spec.partition(":")
    kw = {"seed": seed, "scale_with_load": scale_with_load}
    if spec == "none":
        return NoDelay(**kw)
    if kind == "exp":
        (mean,) = _floats(spec, body, 1, "exp:MEAN with MEAN > 0 seconds")
        if mean <= 0:
            raise ConfigError(f"--delay {spec!r}: MEAN must be positive")
        return Exponential(mean, **kw)
    raise ConfigError(f"--delay {spec!r} is not a known delay model; use none or exp:MEAN")
