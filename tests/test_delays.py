"""Delay models: pure functions of (seed, worker, iteration)."""

import numpy as np
import pytest

from gdcode import delays
from gdcode.errors import ConfigError


def test_exp_is_reproducible_per_worker_and_iteration():
    a = delays.parse("exp:0.5", seed=1)
    b = delays.parse("exp:0.5", seed=1)
    assert a.draw(2, 7) == b.draw(2, 7)
    assert a.draw(2, 7) != a.draw(3, 7) and a.draw(2, 7) != a.draw(2, 8)
    # order of draws does not matter
    assert a.draw(0, 1) == delays.parse("exp:0.5", seed=1).draw(0, 1)


def test_exp_mean_and_load_scaling():
    model = delays.parse("exp:0.5", seed=0)
    draws = np.array([model.draw(w, t) for w in range(10) for t in range(1, 1001)])
    assert draws.mean() == pytest.approx(0.5, rel=0.05)
    scaled = delays.parse("exp:0.5", seed=0, scale_with_load=True)
    assert scaled.draw(1, 1, load=0.25) == pytest.approx(0.25 * model.draw(1, 1))


def test_none_is_zero():
    assert delays.parse("none").draw(0, 1) == 0.0


@pytest.mark.parametrize("spec", ["exp", "exp:", "exp:a", "exp:0", "exp:1,2", "gamma:1", ""])
def test_bad_specs(spec):
    with pytest.raises(ConfigError):
        delays.parse(spec)
