"""Doorbells (gdcode/runtime/doorbell.py) and the waits that sleep on them, without MPI."""

from __future__ import annotations

import secrets
import sys
import threading
import time

import pytest

from gdcode.runtime import transport
from gdcode.runtime.doorbell import RUNG_BURST, RUNG_TIMEOUT, Doorbell

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract Unix sockets are Linux's")


@pytest.fixture
def job():
    return secrets.token_hex(8)


@pytest.fixture
def bells(job):
    made = [Doorbell(job, r, 3) for r in range(2)]  # rank 2 of the job never binds its socket
    yield made
    for b in made:
        b.close()


class Request:
    """A request that completes after ``tests`` calls of ``Test``."""

    def __init__(self, tests: int) -> None:
        self.left = tests

    def Test(self) -> bool:  # noqa: N802 - mpi4py's name
        self.left -= 1
        return self.left < 0


def test_a_ring_wakes_the_waiter_and_is_taken_once(bells):
    a, b = bells
    assert not b.wait(0.0)
    assert a.ring(1)
    a.ring(1)
    assert b.wait(5.0)
    assert not b.wait(0.0)  # both bytes were taken by the first wake-up


def test_an_unbound_rank_is_unreachable_and_not_rung_again(bells):
    a, _ = bells
    assert not a.ring(2)
    assert a.reachable == [False, True, False]
    assert not a.ring(2)
    assert not a.ring(0)  # not itself


def test_a_full_queue_is_not_an_error(bells):
    a, b = bells
    for _ in range(100):  # far past the kernel's queue of datagrams
        assert a.ring(1)
    assert b.wait(0.0)


def test_ring_all_wakes_each_rank_past_an_unreachable_one(job):
    made = [Doorbell(job, r, 5) for r in (0, 1, 3, 4)]  # rank 2 never binds
    try:
        a, b1, b3, b4 = made
        a.ring_all([1, 2, 3, 4])  # the batch stops at rank 2; the rest go one by one
        assert a.reachable == [False, True, False, True, True]
        assert b1.wait(5.0) and b3.wait(5.0) and b4.wait(5.0)
        for _ in range(2):  # again, batched now that rank 2 is known unreachable
            a.ring_all([4, 1, 3])
            assert b1.wait(5.0) and b3.wait(5.0) and b4.wait(5.0)
        assert not (b1.wait(0.0) or b3.wait(0.0) or b4.wait(0.0))
    finally:
        for bell in made:
            bell.close()


def test_ring_all_rings_just_the_ranks_of_each_call(job):
    made = [Doorbell(job, r, 5) for r in range(5)]
    try:
        a, *rest = made
        for ranks in ([1, 2, 3, 4], [3, 1], [2, 4, 1], [4, 3]):  # held messages change the set
            a.ring_all(ranks)
            assert [b.wait(0.5 if r in ranks else 0.0) for r, b in enumerate(rest, 1)] == \
                [int(r in ranks) for r in range(1, 5)]
    finally:
        for bell in made:
            bell.close()


def test_a_blocking_send_rings_first_even_in_rings_together(bells):
    from gdcode.runtime.traffic import CountingComm, Traffic

    a, b = bells
    rung = []

    class Comm:
        def Send(self, buf, dest, tag=0):  # noqa: N802 - mpi4py's name
            rung.append(b.wait(0.5))  # a large Send completes only once its receiver polls

    comm = CountingComm(Comm(), Traffic(3), bell=a)
    with comm.rings_together():
        comm.Send(b"x", dest=1)
    assert rung == [1]


def test_ring_all_goes_on_past_a_full_queue(job):
    made = [Doorbell(job, r, 4) for r in range(4)]
    try:
        a, b1, b2, b3 = made
        while True:  # fill rank 1's queue
            try:
                a.sock.sendto(b"\0", b1._names[1])
            except BlockingIOError:
                break
        a.ring_all([1, 2, 3])  # the batch fails on rank 1 at once; ranks 2 and 3 still rung together
        assert a.reachable == [False, True, True, True]
        assert b2.wait(5.0) == 1 and b3.wait(5.0) == 1
    finally:
        for bell in made:
            bell.close()


def test_sends_in_rings_together_ring_at_its_end(bells):
    from gdcode.runtime.traffic import CountingComm, Traffic

    a, b = bells

    class Comm:
        def Isend(self, buf, dest, tag=0):  # noqa: N802 - mpi4py's name
            return Request(0)

    comm = CountingComm(Comm(), Traffic(3), bell=a)
    with comm.rings_together():
        comm.Isend(b"x", dest=1)
        assert not b.wait(0.0)  # not yet
    assert b.wait(5.0)
    comm.Isend(b"x", dest=1)  # outside the block: at once
    assert b.wait(0.0)


def test_a_rank_of_a_job_binds_once(job, bells):
    with pytest.raises(OSError):
        Doorbell(job, 0, 3)


def test_busy_while_a_request_is_in_flight(bells):
    a, b = bells
    slow = Request(2)
    a.sent(slow, 1)
    a.sent(None, None)  # a collective with no destination to ring adds nothing
    assert b.wait(0.0)
    assert a.busy() and a.busy()
    assert not a.busy()  # completed at the third test, then dropped


def test_backoff_sleeps_until_rung_then_backs_off(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    backoff = transport.Backoff()
    a.ring(1)
    backoff.sleep()
    assert _rung(backoff)  # for RUNG_BURST the wait backs off, still waking at a ring
    start = backoff.current
    backoff.sleep()
    assert backoff.current == min(2 * start, backoff.cap)
    backoff.reset()
    assert not _rung(backoff) and backoff.current == backoff.start


def _rung(backoff: transport.Backoff) -> bool:
    return backoff.rings.bursting()


def test_backoff_sleeps_until_rung_again_once_a_burst_found_nothing(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    backoff = transport.Backoff()
    a.ring(1)  # a byte for a message the rank had found already
    backoff.sleep()
    while _rung(backoff):  # the burst: short sleeps
        backoff.sleep()
    t0 = time.perf_counter()
    backoff.sleep()  # then a sleep on the bell, not a 0.5 ms slice
    assert time.perf_counter() - t0 >= 0.9 * RUNG_TIMEOUT


def test_a_byte_whose_message_came_buys_no_burst(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    backoff = transport.Backoff()
    a.ring(1)  # one reply of several
    backoff.sleep()
    assert _rung(backoff)
    backoff.came()  # the poll after the wake-up took it
    t0 = time.perf_counter()
    backoff.sleep()  # until the next byte: no short sleeps
    assert time.perf_counter() - t0 >= 0.9 * RUNG_TIMEOUT


def test_a_byte_whose_message_is_still_to_be_found_keeps_the_burst(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    backoff = transport.Backoff()
    a.ring(1)
    a.ring(1)  # two replies announced, both bytes taken by one wake-up
    backoff.sleep()
    assert backoff.rings.unmatched == 2
    backoff.came(1)  # one found; the other (a large one, say) still moving
    assert _rung(backoff)
    backoff.came(1)
    assert not _rung(backoff)


def test_a_ring_resets_the_sleep_until_rung(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    backoff = transport.Backoff()
    backoff.sleep()  # no byte: the next sleep is twice as long
    assert backoff.rings.timeout == 2 * RUNG_TIMEOUT
    a.ring(1)
    backoff.sleep()
    assert backoff.rings.timeout == RUNG_TIMEOUT  # 5 ms again, doubling while no byte comes


def test_wait_and_drain_count_the_bytes(bells):
    a, b = bells
    a.ring(1)
    a.ring(1)
    a.ring(1)
    assert b.wait(5.0) == 3
    a.ring(1)
    time.sleep(0.01)
    assert b.drain() == 1 and b.drain() == 0


def test_completed_requests_do_not_pile_up_on_a_rank_that_never_waits(bells):
    a, _ = bells
    for _ in range(1000):
        a.sent(Request(0), None)
    assert len(a._in_flight) <= 65


def test_requests_really_in_flight_are_not_all_tested_at_every_send(bells):
    a, _ = bells
    tests = 0

    class Pending:
        def Test(self) -> bool:  # noqa: N802 - mpi4py's name
            nonlocal tests
            tests += 1
            return False

    for _ in range(1000):
        a.sent(Pending(), None)
    assert len(a._in_flight) == 1000 and tests < 2000  # about 1000 sends x 500 tests without a margin


def test_a_wait_starts_by_taking_the_bytes_of_messages_already_taken(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    a.ring(1)  # its message was found by a test before any wait
    backoff = transport.Backoff()
    assert not b.wait(0.0)
    backoff.sleep()  # no byte: the whole first sleep, and the next one twice as long
    assert not _rung(backoff) and backoff.rings.timeout == 2 * RUNG_TIMEOUT


def test_backoff_polls_while_its_own_send_is_in_flight(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    backoff = transport.Backoff()
    b.sent(Request(10), None)
    a.ring(1)
    backoff.sleep()  # busy: the sleep is the polling one, which leaves the ring waiting
    assert not _rung(backoff)
    assert b.wait(0.0)


def test_a_stale_byte_does_not_hurry_a_pause(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    a.ring(1)
    polls = []
    assert not transport.pause(0.02, lambda: polls.append(1) and False)
    # one test first, then one per sleep of up to RUNG_TIMEOUT: not one per 0.5 ms slice
    assert 2 <= len(polls) <= 2 + int(0.02 / RUNG_TIMEOUT)  # fewer: the sleeps double


def test_a_byte_for_a_message_already_taken_costs_a_pause_one_burst(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    polls = []

    def ring_once():
        time.sleep(0.005)
        a.ring(1)  # after the pause's first test: a byte nothing new came with

    thread = threading.Thread(target=ring_once)
    thread.start()
    assert not transport.pause(0.06, lambda: polls.append(1) and False)
    thread.join()
    # about RUNG_BURST of 0.5 ms slices, then sleeps on the bell again (not 0.5 ms slices to the end)
    slices = RUNG_BURST / transport.PAUSE_SLICE
    assert len(polls) <= 2 + slices + 2 + int(0.06 / RUNG_TIMEOUT)


def test_a_ring_during_a_pause_ends_it_when_poll_says_so(bells, monkeypatch):
    a, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    came = threading.Event()

    def newer_model():
        time.sleep(0.05)
        came.set()
        a.ring(1)

    thread = threading.Thread(target=newer_model)
    thread.start()
    t0 = time.monotonic()
    assert transport.pause(30.0, came.is_set)
    thread.join()
    assert time.monotonic() - t0 < 10.0  # not the pause's 30 s


def test_a_sleep_until_rung_ends_at_the_callers_limit(bells, monkeypatch):
    # rank 0's --wait deadline: no message marks it, so its sleep must not outlast it
    _, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    waits: list[float] = []
    real = b.wait
    monkeypatch.setattr(b, "wait", lambda seconds: waits.append(seconds) or real(seconds))
    backoff = transport.Backoff()
    backoff.sleep(1e-3)
    backoff.sleep()
    assert waits[0] == 1e-3 and waits[1] > 1e-3


def test_a_polling_sleep_ends_at_the_callers_limit(bells, monkeypatch):
    _, b = bells
    monkeypatch.setattr(transport, "_doorbell", b)
    b.sent(Request(10**6), None)  # its own send in flight: it polls
    naps: list[float] = []
    monkeypatch.setattr(transport, "_nap", lambda bell, seconds, rings: naps.append(seconds))
    backoff = transport.Backoff(start=1e-3, cap=1e-3, eager_cap=1e-3)
    backoff.since -= 1.0  # past the yield window
    backoff.sleep(2e-4)
    assert naps == [2e-4]
