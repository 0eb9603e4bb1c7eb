"""The wake-up round trips ``gdcode bench engine`` prints beside the coordinator's overhead."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from gdcode.bench import wakeup

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU affinity is Linux's")


@pytest.mark.parametrize("same_core", [False, True])
def test_round_trips_are_timed_and_the_echo_process_ends(popens, same_core):
    if not same_core and len(wakeup.cores()) < 2:
        pytest.skip("one CPU: no round trip across cores")
    before = os.sched_getaffinity(0)
    trips = wakeup.round_trips(50, same_core=same_core, warm_up=5)
    assert trips is not None and trips.shape == (50,)
    assert np.all(np.isfinite(trips)) and np.all(trips > 0)
    assert len(popens) == 1 and popens[0].returncode == 0  # it ended on the empty datagram
    assert os.sched_getaffinity(0) == before


def test_one_cpu_has_no_round_trip_across_cores(monkeypatch, popens):
    monkeypatch.setattr(wakeup, "cores", lambda: [0])
    assert wakeup.round_trips(10) is None
    assert popens == []


def test_an_echo_process_that_dies_is_reaped_and_the_timeout_raised(monkeypatch, popens):
    monkeypatch.setattr(wakeup, "_ECHO", "import sys; sys.exit(3)")
    with pytest.raises(TimeoutError):
        wakeup.round_trips(10, same_core=True, timeout=0.5)
    assert len(popens) == 1 and popens[0].returncode == 3


def test_describe_orders_its_percentiles():
    d = wakeup.describe(np.array([3e-4, 1e-4, 2e-4, 5e-4, 4e-4]))
    assert d is not None and d["p10"] <= d["median"] <= d["p90"] and d["n"] == 5
    assert d["median"] == pytest.approx(3e-4)
    assert wakeup.describe(None) is None
