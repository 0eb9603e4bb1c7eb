"""The wait of a model between its send and its worker taking it comes off the worker's pauses."""

from __future__ import annotations

import time

import pytest

from gdcode.runtime.worker import QueueWait


def test_the_wait_comes_off_the_pauses_in_order_and_never_below_zero():
    queued = QueueWait(enabled=True)
    queued.took(time.perf_counter() - 0.03)  # a model sent 30 ms ago
    first = queued.serve(0.01)  # shorter than the wait: none of it is served
    second = queued.serve(0.05)  # the rest of the wait (20 ms) comes off the next pause
    assert first == 0.0
    assert 0.03 - 1e-3 < second <= 0.03 + 1e-12
    assert queued.serve(0.05) == 0.05  # the wait is used up


def test_a_new_model_starts_a_new_wait():
    queued = QueueWait(enabled=True)
    queued.took(time.perf_counter() - 1.0)
    queued.took(time.perf_counter() + 1.0)  # a send time ahead of the worker's clock counts as no wait
    assert queued.serve(0.02) == 0.02


def test_off_it_serves_the_pauses_whole():
    queued = QueueWait(enabled=False)
    queued.took(time.perf_counter() - 0.5)
    assert queued.serve(0.1) == 0.1
    assert queued.serve(0.0) == 0.0


@pytest.mark.parametrize("pause", [0.0, -1.0])
def test_no_pause_takes_none_of_the_wait(pause):
    queued = QueueWait(enabled=True)
    queued.took(time.perf_counter() - 0.2)
    assert queued.serve(pause) == pause
    assert queued.serve(0.3) < 0.1 + 1e-3
