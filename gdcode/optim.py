"""Update rules and step-size schedules.

An optimiser keeps the iterate ``params``; :meth:`Optimizer.point` is where the next gradient
must be taken (the extrapolated point for Nesterov), and :meth:`Optimizer.step` applies it.
The coordinator sends ``point()`` to the workers, so every rule runs unchanged over any code.
"""

from __future__ import annotations

import math

import numpy as np

from gdcode.errors import ConfigError


class Schedule:
    """Step size at iteration ``t`` (1-based): ``constant``, ``inv-sqrt`` or ``step``.

    ``inv-sqrt`` is ``lr / sqrt(t)``; ``step`` is ``lr * decay ** floor((t - 1) / every)``.
    """

    KINDS = ("constant", "inv-sqrt", "step")

    def __init__(self, lr: float, kind: str = "constant", every: int = 100, decay: float = 0.5) -> None:
        if kind not in self.KINDS:
            raise ConfigError(f"--lr-schedule {kind!r} is not one of: {', '.join(self.KINDS)}")
        if lr <= 0:
            raise ConfigError(f"--lr {lr} must be positive")
        if every < 1 or not 0 < decay <= 1:
            raise ConfigError("the step schedule needs --lr-step-every >= 1 and 0 < --lr-decay <= 1")
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


class GD(Optimizer):
    """``gd``: ``w <- w - eta_t g``."""

    name = "gd"

    def step(self, grad):
        self.t += 1
        self.params -= self.schedule(self.t) * grad


class Nesterov(Optimizer):
    """``agd``: textbook Nesterov acceleration, the gradient taken at the extrapolated point.

    ``y_t = w_t + ((t - 1)/(t + 2)) (w_t - w_{t-1})``, ``w_{t+1} = y_t - eta_t grad f(y_t)``.
    """

    name = "agd"

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


class HeavyBall(Optimizer):
    """``momentum``: Polyak's heavy ball, ``v <- beta v + g``, ``w <- w - eta_t v``."""

    name = "momentum"

    def __init__(self, w0, schedule, beta: float = 0.9):
        super().__init__(w0, schedule)
        if not 0 <= beta < 1:
            raise ConfigError(f"--momentum {beta} must be in [0, 1)")
        self.beta = beta
        self.velocity = np.zeros_like(self.params)

    def step(self, grad):
        self.t += 1
        self.velocity = self.beta * self.velocity + grad
        self.params -= self.schedule(self.t) * self.velocity

    def state(self):
        return {**super().state(), "velocity": self.velocity.copy()}

    def load_state(self, state):
        super().load_state(state)
        self.velocity = np.array(state["velocity"], dtype=np.float64)


class Adam(Optimizer):
    """``adam``: Kingma and Ba (2015), with bias correction."""

    name = "adam"

    def __init__(self, w0, schedule, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(w0, schedule)
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


UPDATES: dict[str, type[Optimizer]] = {c.name: c for c in (GD, Nesterov, HeavyBall, Adam)}


def make(name: str, w0: np.ndarray, schedule: Schedule, **kwargs) -> Optimizer:
    """The update rule ``name`` (``--update``) starting from ``w0``."""
    try:
        cls = UPDATES[name]
    except KeyError:
        raise ConfigError(f"--update {name!r} is not one of: {', '.join(UPDATES)}") from None
    return cls(w0, schedule, **kwargs)


def initial_point(n_params: int, seed: int, scale: float = 0.01) -> np.ndarray:
    """The seeded starting point shared by every scheme and mode: ``scale * N(0, I)``."""
    return scale * np.random.default_rng([seed, 0x1417]).standard_normal(n_params)
