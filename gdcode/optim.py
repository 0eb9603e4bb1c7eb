"""Update rules and step-size schedules.

An optimiser keeps the iterate ``params``; :meth:`Optimizer.point` is where the next gradient
must be taken (the extrapolated point for Nesterov), and :meth:`Optimizer.step` applies it.
The coordinator sends ``point()`` to the workers, so every rule runs unchanged over any code.

Every rule is in the registry :data:`UPDATES`: an :class:`Optimizer` subclass whose
constructor takes ``(w0, schedule)`` and then its keyword options. A plug-in is an entry
point of the group ``gdcode.updates`` or an import path ``MODULE:CLASS``. A run passes a rule
the run options named like its options (:func:`rule_options`: ``momentum`` for ``momentum``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gdcode.registry import Registry

#: every update rule, by name
UPDATES: Registry[type] = Registry("update rule", "gdcode.updates", fixed=("w0", "schedule"))


class Schedule:
    """Step size at iteration ``t`` (1-based): ``constant``, ``inv-sqrt`` or ``step``.

    ``inv-sqrt`` is ``lr / sqrt(t)``; ``step`` is ``lr * decay ** floor((t - 1) / every)``.
    """

    KINDS = ("constant", "inv-sqrt", "step")

    def __init__(self, lr: float, kind: str = "constant", every: int = 100, decay: float = 0.5) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"schedule kind {kind!r} is not one of: {', '.join(self.KINDS)}")
        _require(_finite(lr) and lr > 0, f"lr must be > 0, got {lr}")
        _require(int(every) == every and every >= 1, f"every must be a whole number >= 1, got {every}")
        _require(_finite(decay) and 0 < decay <= 1, f"decay must be in (0, 1], got {decay}")
        self.lr, self.kind, self.every, self.decay = lr, kind, every, decay

    def __call__(self, t: int) -> float:
        if self.kind == "inv-sqrt":
            return self.lr / math.sqrt(t)
        if self.kind == "step":
            return self.lr * self.decay ** ((t - 1) // self.every)
        return self.lr


class Optimizer:
    """Base class: ``params`` is the iterate, ``t`` the number of steps taken."""

    name = ""

    def __init__(self, w0: np.ndarray, schedule: Schedule) -> None:
        self.params = np.array(w0, dtype=np.float64)
        self.schedule = schedule
        self.t = 0

    def point(self) -> np.ndarray:
        """Where the gradient of the next step is taken."""
        return self.params

    def step(self, grad: np.ndarray) -> None:
        """Apply the gradient taken at :meth:`point`."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this optimiser exactly (for checkpoints)."""
        return {"params": self.params.copy(), "t": np.array(self.t)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.params = np.array(state["params"], dtype=np.float64)
        self.t = int(state["t"])


@UPDATES.register("gd")
class GD(Optimizer):
    """``gd``: ``w <- w - eta_t g``."""

    def step(self, grad):
        self.t += 1
        self.params -= self.schedule(self.t) * grad


@UPDATES.register("agd")
class Nesterov(Optimizer):
    """``agd``: textbook Nesterov acceleration, the gradient taken at the extrapolated point.

    ``y_t = w_t + ((t - 1)/(t + 2)) (w_t - w_{t-1})``, ``w_{t+1} = y_t - eta_t grad f(y_t)``.
    """

    def __init__(self, w0, schedule):
        super().__init__(w0, schedule)
        self.prev = self.params.copy()

    def point(self):
        k = self.t + 1
        return self.params + ((k - 1) / (k + 2)) * (self.params - self.prev)

    def step(self, grad):
        y = self.point()
        self.t += 1
        self.prev = self.params
        self.params = y - self.schedule(self.t) * grad

    def state(self):
        return {**super().state(), "prev": self.prev.copy()}

    def load_state(self, state):
        super().load_state(state)
        self.prev = np.array(state["prev"], dtype=np.float64)


@UPDATES.register("momentum")
class HeavyBall(Optimizer):
    """``momentum``: Polyak's heavy ball, ``v <- momentum v + g``, ``w <- w - eta_t v``.

    Parameters
    ----------
    momentum : float
        The coefficient, in ``[0, 1)`` (default 0.9).
    """

    def __init__(self, w0: np.ndarray, schedule: Schedule, momentum: float = 0.9) -> None:
        super().__init__(w0, schedule)
        _require(_finite(momentum) and 0 <= momentum < 1, f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.velocity = np.zeros_like(self.params)

    def step(self, grad):
        self.t += 1
        self.velocity = self.momentum * self.velocity + grad
        self.params -= self.schedule(self.t) * self.velocity

    def state(self):
        return {**super().state(), "velocity": self.velocity.copy()}

    def load_state(self, state):
        super().load_state(state)
        self.velocity = np.array(state["velocity"], dtype=np.float64)


@UPDATES.register("nesterov")
class NesterovMomentum(HeavyBall):
    """``nesterov``: momentum with Nesterov's correction, as deep-learning frameworks define it.

    ``v <- momentum v + g``, ``w <- w - eta_t (g + momentum v)``, the gradient ``g`` taken at
    ``w`` (PyTorch's ``SGD(nesterov=True)``; the Elastic Gossip thesis trains with it at
    momentum 0.99). ``agd`` is the textbook method with its own momentum schedule.

    Parameters
    ----------
    momentum : float
        The coefficient, in ``[0, 1)`` (default 0.9).
    """

    def step(self, grad):
        self.t += 1
        self.velocity = self.momentum * self.velocity + grad
        self.params -= self.schedule(self.t) * (grad + self.momentum * self.velocity)


@UPDATES.register("adam")
class Adam(Optimizer):
    """``adam``: Kingma and Ba (2015), with bias correction.

    Parameters
    ----------
    beta1, beta2 : float
        Decay rates of the first and second moments, in ``[0, 1)``.
    eps : float
        Added to the root of the second moment, > 0.
    """

    def __init__(self, w0: np.ndarray, schedule: Schedule, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        super().__init__(w0, schedule)
        _require(_finite(beta1) and 0 <= beta1 < 1, f"beta1 must be in [0, 1), got {beta1}")
        _require(_finite(beta2) and 0 <= beta2 < 1, f"beta2 must be in [0, 1), got {beta2}")
        _require(_finite(eps) and eps > 0, f"eps must be > 0, got {eps}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = np.zeros_like(self.params)
        self.v = np.zeros_like(self.params)

    def step(self, grad):
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        m_hat = self.m / (1 - self.beta1 ** self.t)
        v_hat = self.v / (1 - self.beta2 ** self.t)
        self.params -= self.schedule(self.t) * m_hat / (np.sqrt(v_hat) + self.eps)

    def state(self):
        return {**super().state(), "m": self.m.copy(), "v": self.v.copy()}

    def load_state(self, state):
        super().load_state(state)
        self.m = np.array(state["m"], dtype=np.float64)
        self.v = np.array(state["v"], dtype=np.float64)


def names() -> list[str]:
    """The update rule names (built-ins and entry-point plug-ins), sorted."""
    return UPDATES.names()


def make(name: str, w0: np.ndarray, schedule: Schedule, **kwargs: Any) -> Optimizer:
    """The update rule ``name`` (a name or ``MODULE:CLASS``) starting from ``w0``.

    Raises
    ------
    ValueError
        For an unknown rule, an option it does not take or a bad value, or a plug-in that
        does not build an :class:`Optimizer`.
    """
    opt = UPDATES.build(name, w0, schedule, **kwargs)
    if not isinstance(opt, Optimizer):
        raise ValueError(f"the update rule {name!r} built a {type(opt).__name__}, not a gdcode.optim.Optimizer")
    return opt


def rule_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of the rule ``name`` that ``values`` (the run options) hold, by name.

    ``rule_options("momentum", {"momentum": 0.5, "lr": 0.1})`` is ``{"momentum": 0.5}``.
    """
    return {key: values[key] for key in UPDATES.options(name) if values.get(key) is not None}


def initial_point(n_params: int, seed: int, scale: float = 0.01) -> np.ndarray:
    """The seeded starting point shared by every scheme and mode: ``scale * N(0, I)``."""
    return scale * np.random.default_rng([seed, 0x1417]).standard_normal(n_params)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(x)
    except TypeError:
        return False
