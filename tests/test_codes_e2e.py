"""End to end: every gradient code runs in the engine; exact codes follow uncoded's trajectory."""

from __future__ import annotations

import numpy as np
import pytest

from gdcode import codes

pytestmark = pytest.mark.mpi

DATA = ("--dataset", "synthetic:1200x16", "--seed", "5")
EXACT = ["frc", "cyclic", "cyclic-mds", "partial-frc", "partial-cyclic"]


@pytest.fixture(scope="module")
def uncoded_losses(tmp_path_factory):
    from e2e import train_run

    return train_run(tmp_path_factory.mktemp("uncoded"), 4, "--iterations", "12", *DATA, name="u").column("train_loss")


@pytest.mark.parametrize("scheme", EXACT)
def test_exact_codes_reproduce_uncoded_trajectory(train, uncoded_losses, scheme):
    run = train(4, "--scheme", scheme, "--stragglers", "1", "--iterations", "12", *DATA, name=scheme)
    assert run.metadata["code"]["exact"] is True
    np.testing.assert_allclose(run.column("train_loss"), uncoded_losses, rtol=1e-9, atol=0)


@pytest.mark.parametrize("scheme", ["frc", "cyclic-mds"])
def test_persistent_straggler_is_never_waited_for(train, uncoded_losses, scheme):
    run = train(4, "--scheme", scheme, "--stragglers", "1", "--iterations", "12", *DATA,
                "--delay", "persistent:1,10,0.01", name=scheme)
    slow = run.metadata["delay"]["slow_workers"][0]
    statuses = {r["status"] for r in run.workers if r["worker"] == slow}
    assert statuses <= {"cancelled", "late"}, statuses
    np.testing.assert_allclose(run.column("train_loss"), uncoded_losses, rtol=1e-9, atol=0)


@pytest.mark.parametrize("scheme", sorted(set(codes.names()) - {"uncoded"}))
def test_every_code_runs_in_the_engine(train, scheme):
    workers, stragglers = (6, 2) if scheme in ("frc", "approx", "partial-frc") else (5, 1)
    extra = ["--batch-size", "200"] if scheme == "kbatch" else []
    run = train(workers, "--scheme", scheme, "--stragglers", str(stragglers), "--iterations", "4",
                "--delay", "exp:0.01", "--dataset", "synthetic:1200x8", "--track-gradient-error", *extra, name=scheme)
    assert run.summary["status"] == "ok" and run.summary["iterations"] == 4
    errors = run.column("gradient_error")[1:]  # line 0 is the initial model
    if run.metadata["code"]["exact"]:
        assert np.all(errors < 1e-8)
    assert np.all(np.isfinite(run.column("train_loss")))


PROBE = '''
from gdcode.delays import DelayModel


class Probe(DelayModel):
    """A 1 ms pause; each draw appends the compute time it was given to WHERE/w<worker>."""

    def __init__(self, where: str, *, seed=0, scale_with_load=False):
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        self.where = where

    def sample(self, rng, worker, iteration, compute):
        with open(f"{self.where}/w{worker}", "a") as fh:
            fh.write(f"{float(compute)!r}\\n")
        return 1e-3


class Before(Probe):
    uses_compute = False


class After(Probe):
    uses_compute = True
'''


@pytest.mark.parametrize("model", ["Before", "After"])
def test_a_pause_that_does_not_read_the_compute_time_comes_before_it(train, tmp_path, monkeypatch, model):
    """A coded worker draws (and serves) a pause whose model does not read the compute time before it
    computes, so it is given no compute time; one that reads it comes after, given the time measured."""
    import os

    (tmp_path / "pauseprobe.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    seen = tmp_path / "seen"
    seen.mkdir()
    run = train(2, "--iterations", "3", *DATA, "--delay", f"pauseprobe:{model}:{seen}", name=model)
    assert run.summary["status"] == "ok"
    for w in range(2):
        given = [float(x) for x in (seen / f"w{w}").read_text().split()]
        assert len(given) == 3  # one pause per iteration: uncoded waits for every worker
        assert all(c == 0.0 for c in given) if model == "Before" else all(c > 0.0 for c in given), given


HOLD_UP = '''
import time

from gdcode.delays import DelayModel


class HoldUp(DelayModel):
    """Worker 3 is held up for HOLD s in its first draw (without polling), so it takes model 2
    late; at iteration 2 it pauses PAUSE s and the others 1 s; every other pause is 0."""

    uses_compute = False

    def __init__(self, hold: str, pause: str, *, seed=0, scale_with_load=False):
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        self.hold, self.pause = float(hold), float(pause)

    def sample(self, rng, worker, iteration, compute):
        if worker == 2 and iteration == 1:
            time.sleep(self.hold)
        if iteration == 2:
            return self.pause if worker == 2 else 1.0
        return 0.0
'''


def test_a_pause_counts_from_the_send_of_the_model_on_one_host(train, tmp_path, monkeypatch):
    """Ranks sharing a host take a model in turns, which the emulated cluster would not: the time a
    model waited before its worker took it comes off the worker's pause, so that the reply is due
    at the pause after the send -- and never sooner."""
    import os

    (tmp_path / "holdup.py").write_text(HOLD_UP)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    hold, pause = 0.3, 0.5
    # ignore S=1: iteration 1 decodes without worker 3, which takes model 2 about `hold` after its send
    run = train(3, "--scheme", "ignore", "--stragglers", "1", "--iterations", "3", *DATA,
                "--delay", f"holdup:HoldUp:{hold},{pause}", name="holdup")
    assert run.summary["status"] == "ok" and run.summary["waits"] == "doorbell"
    arrival = next(r["arrival"] for r in run.workers if r["iteration"] == 2 and r["worker"] == 3)
    # from the send: `pause`; had the pause started when the worker took the model: `hold + pause`
    assert pause <= arrival < pause + hold / 2, arrival
