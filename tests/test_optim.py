"""Update rules and schedules on a quadratic with a known optimum."""

import numpy as np
import pytest

from gdcode import optim

A = np.diag([1.0, 4.0, 10.0])
b = np.array([1.0, -2.0, 3.0])
w_star = np.linalg.solve(A, b)


def grad(w):
    return A @ w - b


@pytest.mark.parametrize("name, lr, steps", [("gd", 0.1, 300), ("agd", 0.1, 200),
                                             ("momentum", 0.02, 400), ("adam", 0.05, 3000)])
def test_rules_converge_on_quadratic(name, lr, steps):
    opt = optim.make(name, np.zeros(3), optim.Schedule(lr))
    for _ in range(steps):
        opt.step(grad(opt.point()))
    assert np.allclose(opt.params, w_star, atol=1e-4)


def test_nesterov_is_textbook():
    opt = optim.make("agd", np.zeros(3), optim.Schedule(0.1))
    x_prev = x = np.zeros(3)
    for k in range(1, 6):
        y = x + (k - 1) / (k + 2) * (x - x_prev)
        assert np.allclose(opt.point(), y)
        opt.step(grad(opt.point()))
        x_prev, x = x, y - 0.1 * grad(y)
        assert np.allclose(opt.params, x)


def test_state_round_trip_continues_identically():
    a = optim.make("adam", np.ones(3), optim.Schedule(0.05))
    for _ in range(5):
        a.step(grad(a.point()))
    b_ = optim.make("adam", np.zeros(3), optim.Schedule(0.05))
    b_.load_state(a.state())
    for _ in range(5):
        a.step(grad(a.point()))
        b_.step(grad(b_.point()))
    assert np.array_equal(a.params, b_.params)


def test_schedules():
    assert optim.Schedule(1.0)(50) == 1.0
    assert optim.Schedule(1.0, "inv-sqrt")(4) == 0.5
    s = optim.Schedule(1.0, "step", every=10, decay=0.5)
    assert [s(1), s(10), s(11), s(21)] == [1.0, 1.0, 0.5, 0.25]
    with pytest.raises(ValueError):
        optim.Schedule(1.0, "cosine")
    with pytest.raises(ValueError):
        optim.make("sgd", np.zeros(2), optim.Schedule(1.0))


def test_initial_point_is_seeded():
    assert np.array_equal(optim.initial_point(5, 3), optim.initial_point(5, 3))
    assert not np.array_equal(optim.initial_point(5, 3), optim.initial_point(5, 4))


def test_heavy_ball_takes_momentum_by_name_and_run_options_map_onto_it():
    opt = optim.make("momentum", np.zeros(3), optim.Schedule(0.1), momentum=0.5)
    assert opt.momentum == 0.5
    opt.step(np.ones(3))
    opt.step(np.ones(3))
    np.testing.assert_allclose(opt.params, -0.1 * (1 + 1.5) * np.ones(3))
    values = {"momentum": 0.7, "lr": 0.1, "update": "momentum"}
    assert optim.rule_options("momentum", values) == {"momentum": 0.7}
    assert optim.rule_options("adam", values) == {} and optim.rule_options("gd", values) == {}
    with pytest.raises(ValueError, match="takes no option beta"):
        optim.make("momentum", np.zeros(3), optim.Schedule(0.1), beta=0.5)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        optim.make("momentum", np.zeros(3), optim.Schedule(0.1), momentum=1.0)
    assert optim.names() == ["adam", "agd", "gd", "momentum", "nesterov"]
